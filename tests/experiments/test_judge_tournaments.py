"""experiments/judge_tournaments.py --smoke end to end, as a user runs it (a subprocess)."""

from __future__ import annotations

import json

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.experiments.script_runner import run_experiment


def test_smoke_run_writes_results_plots_and_logs(tmp_path):
    out = run_experiment(
        "judge_tournaments.py", "--smoke", "--out-dir", str(tmp_path), "--run-name", "r1", timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert "Swim (repeats 3) reaches Spearman" in out.stdout
    run = tmp_path / "judge_tournaments" / "r1"
    res = json.loads((run / "results.json").read_text())
    for name in ("spearman_vs_fraction", "spearman_vs_strength", "nontransitivity"):
        assert (run / f"{name}.png").stat().st_size > 10_000, name
    # 8 models: Swim plays 3 rounds of 4 matches; at 3 repeats (x2 orders) that buys a 28-pair round robin one
    # instruction (72 >= 56 calls), at 1 repeat none
    methods = [
        "baseline",
        "round_robin",
        "swim_r1",
        "swim_r3",
        "insertion_r1",
        "insertion_r3",
        "insertion_matched_r1",
        "insertion_matched_r3",
        "rr_matched_r3",
    ]
    assert res["methods"] == methods
    table = res["table"]
    assert [row["strength"] for row in table] == [0.0, 4.0]
    assert [len(rows) for rows in res["per_judge"]] == [3, 3]
    for row in table:
        for m in methods:
            for field in ("spearman", "kendall", "fraction"):
                assert np.isfinite(row[f"{m}/{field}"]), (m, field, row)
    low, high = table
    # a transitive judge (noise only) is almost never cyclic, and a round robin recovers the skill order
    assert low["pnt"] < 0.1 and low["round_robin/spearman"] > 0.9
    # the disc-game term makes the judge non-transitive, hard and soft (3 judges: a large, robust effect)
    assert high["pnt"] > low["pnt"] + 0.1 and high["sntd"] > low["sntd"]
    # ... and baseline-anchored rankings depend on the baseline
    assert high["baseline/mean_rank_change"] > low["baseline/mean_rank_change"]
    # costs, in judge calls relative to the round robin: exact for the baseline (n-1 of n(n-1)/2 pairs)
    for row in table:
        assert row["round_robin/fraction"] == 1.0
        assert abs(row["baseline/fraction"] - 2 / 8) < 1e-12
        assert 0 < row["swim_r1/fraction"] < row["swim_r3/fraction"] < 1
        assert row["swim_r1/fraction"] == 3 * 4 * 2 / (28 * 16 * 2)  # rounds x matches x calls / round robin
        for r in (1, 3):  # matched budgets: never more than Swim's calls
            assert row[f"insertion_matched_r{r}/fraction"] <= row[f"swim_r{r}/fraction"]
        assert row["rr_matched_r3/fraction"] == 56 / (28 * 16 * 2)  # one whole instruction fits
    for judges in res["per_judge"]:
        for j in judges:
            assert j["round_robin_calls"] == 8 * 7 // 2 * 16 * 2
            # every tournament's calls are drawn from the round robin's (one shared cache)
            assert j["distinct_judge_calls"] == j["round_robin_calls"]
    h = res["headline"]
    assert h["method"] == "swim_r3" and 0 < h["swim_fraction"] < 1
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0})
    ea.Reload()
    tags = ea.Tags()["scalars"]
    for tag in ("nt/pnt", "nt/sntd", "spearman/round_robin", "spearman/swim_r3", "baseline/mean_rank_change"):
        assert tag in tags, tag
    assert [e.value for e in ea.Scalars("strength")] == [0.0, 4.0]
