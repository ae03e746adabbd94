"""experiments/iterated_rlhf.py end to end (as a user runs it) and its config errors."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.experiments.script_runner import parse_experiment_cli, run_experiment


def _run(*args: str) -> subprocess.CompletedProcess:
    return run_experiment("iterated_rlhf.py", *args, timeout=900)


@pytest.mark.slow  # ~60 s on 2 CPU cores with the models cached (~2 min on a cold cache)
def test_smoke_writes_table_plots_and_logs(tmp_path: Path):
    out = _run("--smoke", "--out-dir", str(tmp_path), "--run-name", "s")
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "iterated_rlhf" / "s"
    res = json.loads((run / "results.json").read_text())
    cells = res["cells"]
    assert list(cells) == ["concat/latest/sft", "last/ensemble_mean/continue"]
    for name, cell in cells.items():
        its = cell["iterations"]
        assert [i["iteration"] for i in its] == [0, 1]
        for k, it in enumerate(its):
            rl, bon, f = it["rl"], it["bon"], it["final"]
            assert rl["step"] == [0, 2, 4, 6]
            assert all(x >= 0 for x in rl["kl"])  # k3 summed: nonnegative by construction
            np.testing.assert_allclose(rl["d"], np.sqrt(rl["kl"]))
            n = np.asarray(bon["n"], float)
            np.testing.assert_allclose(bon["kl"], np.log(n) - (n - 1) / n, atol=1e-6)
            assert abs(bon["gold"][0]) < 1e-5 and abs(bon["proxy"][0]) < 1e-5  # best-of-1 = SFT = 0
            assert f["gold"] == rl["gold"][-1] and f["kl"] == rl["kl"][-1]
            assert f["gap"] == pytest.approx(f["proxy"] - f["gold"])
            assert it["num_pairs"] == 32 * (k + 1 if name.startswith("concat") else 1)
            assert 0.5 <= it["label_accuracy"] <= 1.0 and len(it["rm_accuracy"]) == 2 * 2  # runs x members
            for fit in it["fits"].values():
                assert math.isnan(fit["r2"]) or fit["r2"] <= 1.0 + 1e-6  # least squares through 0: r2 <= 1
        # two runs vmapped: the cell's numbers are their means (numpy here), each run has its own curves
        assert cell["seeds"] == [0, 1] and len(cell["per_seed"]) == 2
        for k, it in enumerate(its):
            runs = [r["iterations"][k] for r in cell["per_seed"]]
            for key in ("gold", "proxy", "gap", "kl"):
                vals = [r["final"][key] for r in runs]
                assert it["final"][key] == pytest.approx(np.mean(vals), abs=1e-9)
                assert it["final_sd"][key] == pytest.approx(np.std(vals, ddof=1), abs=1e-9)
            np.testing.assert_allclose(
                it["rl"]["gold"], np.mean([r["rl"]["gold"] for r in runs], 0), atol=1e-9
            )
            at_kl = [
                r["gold_at_kl"] for r in runs
            ]  # each run's own, within its curve; the cell's: their mean
            for g, r in zip(at_kl, runs, strict=True):
                assert math.isnan(g) or min(r["rl"]["gold"]) - 1e-6 <= g <= max(r["rl"]["gold"]) + 1e-6
            kept = [g for g in at_kl if not math.isnan(g)]
            assert it["gold_at_kl_runs"] == len(kept)
            assert (math.isnan(it["gold_at_kl"]) and not kept) or it["gold_at_kl"] == pytest.approx(
                np.mean(kept)
            )
        # round 1 restarts from SFT in every cell: the first evaluation IS the SFT policy (gold 0, KL 0, proxy 0)
        assert (
            its[0]["rl"]["gold"][0] == 0.0
            and its[0]["rl"]["kl"][0] == 0.0
            and its[0]["rl"]["proxy"][0] == 0.0
        )
    # round 1 has the same data and RM in both cells (same seed; one RM: latest = ensemble mean up to float
    # rounding), so the same best-of-n curve (not compared: the PPO runs, chaotic under rounding differences)
    a, b = (cells[c]["iterations"][0] for c in cells)
    assert a["rm_accuracy"] == b["rm_accuracy"] and a["num_pairs"] == b["num_pairs"]
    np.testing.assert_allclose(a["bon"]["proxy"], b["bon"]["proxy"], atol=1e-3)
    # 'continue' starts round 2 from round 1's policy: its KL to SFT is not 0 there
    assert cells["last/ensemble_mean/continue"]["iterations"][1]["rl"]["kl"][0] > 0
    assert cells["concat/latest/sft"]["iterations"][1]["rl"]["kl"][0] == 0.0
    for name, sm in res["summary"].items():
        gaps = [i["final"]["gap"] for i in cells[name]["iterations"]]
        assert sm["gap_first"] == gaps[0] and sm["gap_last"] == gaps[-1]
        assert sm["gap_mean_after_first"] == pytest.approx(np.mean(gaps[1:]))
    assert sorted(res["ranking_by_final_gap"]) == sorted(cells)
    assert [res["summary"][c]["gap_last"] for c in res["ranking_by_final_gap"]] == sorted(
        res["summary"][c]["gap_last"] for c in cells
    )
    for png in ("overoptimisation.png", "iterations.png"):
        assert (run / png).stat().st_size > 5000
    assert "gold@KL" in out.stdout and "concat/latest/sft" in out.stdout
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {
        "concat-latest-sft/iter0/rl/gold",
        "concat-latest-sft/iter1/bon/proxy",
        "concat-latest-sft/seed1/iter0/rl/gold",
    } <= tags
    assert len(ea.Scalars("concat-latest-sft/iter0/rl/kl")) == 4
    _check_merge(tmp_path, res)


def _check_merge(tmp_path: Path, res: dict) -> None:
    """--merge pools runs saved apart (here: the smoke run's two runs, each written as a one-run result) into
    the same means, and refuses the same seed twice."""
    paths = []
    for s in range(2):
        one = {
            "cells": {name: cell["per_seed"][s] for name, cell in res["cells"].items()},
            "config": {**res["config"], "seed": s, "num_seeds": 1},
        }
        path = tmp_path / f"one{s}.json"
        path.write_text(json.dumps(one))
        paths.append(str(path))
    out = _run("--smoke", "--out-dir", str(tmp_path), "--run-name", "m", "--merge", *paths)
    assert out.returncode == 0, out.stderr[-3000:]
    merged = json.loads((tmp_path / "iterated_rlhf" / "m" / "results.json").read_text())
    for name, cell in res["cells"].items():
        got = merged["cells"][name]
        assert got["seeds"] == [0, 1]
        for a, b in zip(got["iterations"], cell["iterations"], strict=True):
            assert a["final"] == pytest.approx(b["final"]) and a["gold_at_kl"] == pytest.approx(
                b["gold_at_kl"], nan_ok=True
            )
            np.testing.assert_allclose(a["rl"]["proxy"], b["rl"]["proxy"])
    assert (tmp_path / "iterated_rlhf" / "m" / "iterations.png").stat().st_size > 5000
    code, _, err = parse_experiment_cli(
        "iterated_rlhf.py", "--smoke", "--merge", paths[0], paths[0], "--out-dir", str(tmp_path / "x")
    )
    assert code == 2 and "distinct seeds" in err, err


def test_bad_flags_exit_with_one_line(tmp_path: Path):
    cases = {
        ("--grid", "concat/latest/sft", "concat/median/sft"): "grid reward_fn='median' is invalid",
        ("--grid", "concat-latest-sft"): "grid='concat-latest-sft' is invalid",
        ("--num-iterations", "0"): "num_iterations=0 is invalid",
        ("--study.bon-ns", "4"): "bon_ns",
        ("--prompts-per-round", "100000"): "prompts_per_round=100000 is invalid",
        ("--num-seeds", "0"): "num_seeds=0 is invalid",
        ("--merge", "no/such/run"): "merge='no/such/run' is invalid",
    }
    for argv, message in cases.items():
        code, _, err = parse_experiment_cli("iterated_rlhf.py", *argv, "--out-dir", str(tmp_path))
        assert code == 2 and err.count("\n") == 1 and message in err, (argv, err)
    assert not any(tmp_path.iterdir())


def test_overopt_preset_is_one_round_of_the_baseline_with_the_stronger_settings():
    code, out, _ = parse_experiment_cli("iterated_rlhf.py", "--overopt", "--print-config")
    _, default, _ = parse_experiment_cli("iterated_rlhf.py", "--print-config")
    cfg, base = json.loads(out), json.loads(default)
    assert code == 0 and cfg["grid"] == ["concat/latest/sft"] and cfg["num_iterations"] == 1
    assert cfg["num_seeds"] == 8 and cfg["study"]["rm_steps"] == 3000 and cfg["study"]["ppo_batch"] == 128
    assert cfg["study"]["ppo"] == {**base["study"]["ppo"], "lr": 3e-5}  # only the learning rate differs
    assert {k: v for k, v in cfg["study"].items() if k not in ("rm_steps", "ppo_batch", "ppo")} == {
        k: v for k, v in base["study"].items() if k not in ("rm_steps", "ppo_batch", "ppo")
    }
