"""experiments/nplayer_shaping.py end to end (as a user runs it) and its config errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.experiments.script_runner import parse_experiment_cli, run_experiment


def _run(*args: str) -> subprocess.CompletedProcess:
    return run_experiment("nplayer_shaping.py", *args, timeout=600)


def test_smoke_writes_table_plots_and_logs(tmp_path: Path):
    out = _run("--smoke", "--out-dir", str(tmp_path), "--run-name", "s")
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "nplayer_shaping" / "s"
    res = json.loads((run / "results.json").read_text())
    assert set(res["table"]) == {"lola", "mfos", "shaper"}
    for kind in ("lola", "mfos", "shaper"):
        assert set(res["table"][kind]) == {"ipd", "stag_hunt"}
        for game in ("ipd", "stag_hunt"):
            cell = res["table"][kind][game]["3"]
            assert set(cell) == {"all_naive", "1_shaper"}
            assert cell["all_naive"]["shaper_return"] is None
            for pop in cell.values():
                assert len(pop["seat_return"]) == 3 and 0.0 <= pop["cooperation_mean"] <= 1.0
            # the IPD's returns lie between all-defect (1) and all-cooperate (4) for N = 3
            if game == "ipd":
                for pop in cell.values():
                    assert all(1.0 - 1e-4 <= v <= 4.0 + 1e-4 for v in pop["seat_return_mean"])
        assert {"shaper_gain_own_mean", "social_gain_1_shaper_mean"} <= set(
            res["comparisons"][f"{kind}/ipd/N3"]
        )
    # exact methods share the exact naive baseline; naive learners in the 3-player IPD learn to defect
    exact_naive = res["table"]["lola"]["ipd"]["3"]["all_naive"]
    assert exact_naive == res["table"]["mfos"]["ipd"]["3"]["all_naive"]
    assert exact_naive["cooperation"] < exact_naive["cooperation_mean"] < 0.5
    assert len(res["table"]["mfos"]["ipd"]["3"]["1_shaper"]["meta_fitness"]) == 3  # generations
    for png in ("summary.png", "curves.png"):
        assert (run / png).stat().st_size > 5000
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0})
    ea.Reload()
    tags = ea.Tags()["scalars"]
    assert {"lola/ipd/N3/1_shaper/social_return", "shaper/ipd/N3/1_shaper/meta_fitness"} <= set(tags)


def test_bad_flags_exit_with_one_line(tmp_path: Path):
    out = _run("--games", "ipd", "poker", "--out-dir", str(tmp_path))
    assert out.returncode == 2
    assert "games='poker' is invalid: accepted values are one of 'ipd'" in out.stderr
    assert out.stderr.strip().count("\n") == 0
    assert not any(tmp_path.iterdir())
    cases = {  # the script's own parsing, in this process (cheaper than a subprocess each)
        ("--players", "1", "5"): (
            "players=(1, 5) is invalid: accepted values are non-empty tuples of integers in 2..8"
        ),
        ("--shapers", "lola", "mfos-ppo"): "shapers='mfos-ppo' is invalid",
        ("--public-goods-r", "1.5"): "public_goods_r=1.5 is invalid",
        (
            "--players",
            "2",
            "--populations",
            "1_shaper",
            "--public-goods-r",
            "0.4",
        ): "public_goods_r=0.4 is invalid",
        ("--mfos-hidden",): "mfos_hidden",
    }
    for argv, message in cases.items():
        code, _, err = parse_experiment_cli("nplayer_shaping.py", *argv, "--out-dir", str(tmp_path))
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir())
