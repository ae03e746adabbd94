"""The smoke experiment end to end, as a user runs it: a subprocess with CLI flags."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.experiments.script_runner import run_experiment


def _run(*args: str) -> subprocess.CompletedProcess:
    return run_experiment("smoke.py", *args, timeout=300)


def test_smoke_runs_end_to_end_and_resumes(tmp_path: Path):
    out = _run("--smoke", "--num-steps", "300", "--out-dir", str(tmp_path), "--run-name", "r1")
    assert out.returncode == 0, out.stderr
    run = tmp_path / "smoke" / "r1"
    res = json.loads((run / "results.json").read_text())
    assert res["test_accuracy"] > 0.9  # two spirals are learned, not just run
    assert res["checkpoint_steps"][-1] == 300
    assert (run / "smoke.png").stat().st_size > 1000
    assert json.loads((run / "config.json").read_text())["num_steps"] == 300
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0})
    ea.Reload()
    loss = ea.Scalars("train/loss")
    assert loss[-1].step == 300 and loss[-1].value < loss[0].value
    assert "test/accuracy" in ea.Tags()["scalars"]

    # same run name, longer run: resumes from step 300 instead of starting over
    out2 = _run("--smoke", "--num-steps", "400", "--out-dir", str(tmp_path), "--run-name", "r1")
    assert out2.returncode == 0, out2.stderr
    res2 = json.loads((run / "results.json").read_text())
    assert res2["checkpoint_steps"][-1] == 400
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0})
    ea.Reload()
    steps = [e.step for e in ea.Scalars("train/loss")]
    assert steps.count(20) == 1 and steps[-1] == 400  # steps 1..300 were not re-run


def test_bad_flag_fails_before_writing_anything(tmp_path: Path):
    out = _run("--optim.lr", "-1", "--out-dir", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip() == "error: optim.lr=-1.0 is invalid: accepted values are numbers > 0"
    out = _run("--optim.warmup-steps", "500", "--num-steps", "100", "--out-dir", str(tmp_path))
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == "error: optim.warmup_steps=500 is invalid: accepted values are integers <= total_steps (100)"
    )
    assert not any(tmp_path.iterdir())
