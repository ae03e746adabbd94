"""Multi-process training for real: ``python -m jaxsafety.launch`` starts JAX processes on this machine that join
one job over a localhost coordinator (gloo collectives on CPU), each driving its own forced host devices.

- 2 processes x 2 devices train the same LM as 1 process x 4 devices (FSDP), to 1e-5 in losses and parameters;
- a checkpoint the 2 processes wrote (4-way FSDP) restores in 1 process on 1 device and continues as the
  2-process run did;
- LoRA fine-tuning over 2 processes matches one device;
- a process killed mid-run makes the launcher exit non-zero within seconds, with one line naming it;
- only process 0 writes event files; the pretraining script gives the single-process results under the launcher;
- a script that does not shard runs (the same computation in each process) and resumes from its checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jaxsafety.launch import child_env, launch

WORKER = Path(__file__).with_name("multihost_worker.py")
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300


def _env(devices: int) -> dict[str, str]:
    """This environment with ``devices`` forced host devices (replacing any count already in XLA_FLAGS)."""
    env = child_env(0, 1, "", devices_per_process=devices)
    for k in ("JAXSAFETY_COORDINATOR", "JAXSAFETY_NUM_PROCESSES", "JAXSAFETY_PROCESS_ID"):
        env.pop(k)
    return env


def _launch(num_processes: int, devices: int, script: Path, *args: str, cwd: Path | None = None):
    cmd = [sys.executable, "-m", "jaxsafety.launch", "--num-processes", str(num_processes)]
    cmd += ["--devices-per-process", str(devices), str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_env(1), cwd=cwd)


def _single(devices: int, script: Path, *args: str, cwd: Path | None = None):
    cmd = [sys.executable, str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_env(devices), cwd=cwd)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])


def _max_diff(a: np.lib.npyio.NpzFile, b: np.lib.npyio.NpzFile) -> float:
    assert sorted(a.files) == sorted(b.files)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a.files if k != "losses")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A: 2 processes x 2 devices, FSDP, checkpoints every 3 steps; B: 1 process x 4 devices, FSDP."""
    root = tmp_path_factory.mktemp("multihost")
    a, b = root / "a", root / "b"
    a.mkdir(), b.mkdir()
    _ok(_launch(2, 2, WORKER, "--out", str(a), "--ckpt", str(root / "ckpt")))
    _ok(_single(4, WORKER, "--out", str(b)))
    return root


def test_two_processes_fsdp_match_one_process(runs):
    a, b = np.load(runs / "a" / "result.npz"), np.load(runs / "b" / "result.npz")
    assert len(a["losses"]) == 6 and a["losses"][-1] < a["losses"][0]  # it trained
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=0, atol=1e-5)
    assert _max_diff(a, b) <= 1e-5
    for pid in (0, 1):
        info = json.loads((runs / "a" / f"info_p{pid}.json").read_text())
        assert (info["process_count"], info["device_count"]) == (2, 4)
        assert info["fsdp_max_shard_fraction"] == pytest.approx(0.25)  # each device holds a quarter
        assert info["roundtrip_diff"] == 0.0  # to_host all-gathers the shards back exactly
        assert info["tracker_noop"] == (pid == 1)  # only process 0 gets a writing tracker


def test_checkpoint_of_two_processes_restores_in_one(runs, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(runs / "ckpt", ckpt)
    assert sorted(p.name for p in ckpt.iterdir()) == ["3", "6"]
    shutil.rmtree(ckpt / "6")  # as if the job had stopped after step 3
    out = tmp_path / "c"
    out.mkdir()
    # one process, one device, no sharding: the 4-way FSDP arrays are resharded on restore
    _ok(_single(1, WORKER, "--out", str(out), "--ckpt", str(ckpt), "--sharding", "none"))
    a, c = np.load(runs / "a" / "result.npz"), np.load(out / "result.npz")
    assert len(c["losses"]) == 3  # steps 4..6 ran here
    np.testing.assert_allclose(c["losses"], a["losses"][3:], rtol=0, atol=1e-5)
    assert _max_diff(a, c) <= 1e-5


@pytest.mark.slow  # 2 jobs (5 processes in all), ~25 s
def test_finetune_in_two_processes_matches_one_device(tmp_path):
    """LoRA SFT (chunks of jitted steps drawing their batches on the device) with FSDP over 2 processes x 2
    devices gives the single-device run's losses and merged parameters."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _ok(_launch(2, 2, WORKER, "--task", "finetune", "--out", str(a), "--sharding", "fsdp"))
    _ok(_single(1, WORKER, "--task", "finetune", "--out", str(b), "--sharding", "none"))
    ra, rb = np.load(a / "result.npz"), np.load(b / "result.npz")
    assert ra["losses"][-1] < ra["losses"][0]
    np.testing.assert_allclose(ra["losses"], rb["losses"], rtol=0, atol=1e-5)
    assert _max_diff(ra, rb) <= 1e-5


def test_killed_process_stops_the_launcher(tmp_path):
    proc = _launch(
        2, 1, WORKER, "--out", str(tmp_path), "--steps", "200", "--kill-at", "2", "--sharding", "dp"
    )
    ended = time.time()
    assert proc.returncode != 0
    killed = float((tmp_path / "killed_at").read_text())
    assert ended - killed < 10.0, (
        ended - killed
    )  # the launcher noticed within seconds (200 steps take longer)
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"launch: process 1 \(pid \d+\) was killed by SIGKILL; stopped process 0", last), last
    assert not (tmp_path / "result.npz").exists()


@pytest.mark.slow
def test_pretrain_script_under_the_launcher_matches_one_process(tmp_path):
    """The README's command: 2 processes of ``experiments/pretrain_lm.py --smoke`` (data parallel over 2
    devices) give the single-process run's results; one event file, written by process 0 alone."""
    script = REPO / "experiments" / "pretrain_lm.py"
    _ok(_launch(2, 1, script, "--smoke", "--out-dir", str(tmp_path), "--run-name", "two", cwd=tmp_path))
    _ok(_single(1, script, "--smoke", "--out-dir", str(tmp_path), "--run-name", "one", cwd=tmp_path))
    two, one = (
        json.loads((tmp_path / "pretrain_lm" / r / "results.json").read_text()) for r in ("two", "one")
    )
    assert (two["num_processes"], two["num_devices"], one["num_processes"]) == (2, 2, 1)
    # the same batches; only the gradient's summation order differs (two devices' partial sums)
    for k in ("train_loss", "train_eval_loss", "heldout_loss"):
        assert two[k] == pytest.approx(one[k], abs=1e-4), k
    assert two["checkpoint_steps"] == one["checkpoint_steps"] == [20, 40]
    run = tmp_path / "pretrain_lm" / "two"
    events = list(run.glob("events.out.tfevents.*"))
    assert len(events) == 1, events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(events[0]), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/loss")] == list(range(5, 41, 5))  # once each: one writer
    assert (run / "hf" / "config.json").is_file() and (run / "learning_curve.png").is_file()


@pytest.mark.slow
def test_unsharded_script_runs_and_resumes_under_the_launcher(tmp_path):
    """A script that does not shard (``experiments/smoke.py``) runs the same computation in each process: its
    host-local checkpoints are saved as replicated global arrays, and a rerun resumes from them in 2 processes."""
    script = REPO / "experiments" / "smoke.py"
    common = ("--smoke", "--out-dir", str(tmp_path))
    _ok(_single(1, script, *common, "--run-name", "one", cwd=tmp_path))
    _ok(_launch(2, 1, script, *common, "--run-name", "two", cwd=tmp_path))
    ckpts = tmp_path / "smoke" / "two" / "checkpoints"
    steps = sorted(int(p.name) for p in ckpts.iterdir())
    shutil.rmtree(ckpts / str(steps[-1]))  # resume from the one before
    (tmp_path / "smoke" / "two" / "results.json").unlink()
    resumed = _launch(2, 1, script, *common, "--run-name", "two", cwd=tmp_path)
    _ok(resumed)
    one, two = (json.loads((tmp_path / "smoke" / r / "results.json").read_text()) for r in ("one", "two"))
    assert two["test_accuracy"] == one["test_accuracy"]
    assert two["test_loss"] == pytest.approx(one["test_loss"], abs=1e-6)
    events = sorted(
        (tmp_path / "smoke" / "two").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime
    )
    assert len(events) == 2  # one per run, of process 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(events[-1]), size_guidance={"scalars": 0})
    ea.Reload()
    logged = [e.step for e in ea.Scalars("train/loss")]
    assert logged and min(logged) > steps[-2]  # the rerun trained only past the checkpoint it resumed from


# ---------------------------------------------------------------------------------------------------------------
# the launcher's own behaviour (no JAX job)


def test_launcher_reports_a_failing_process(tmp_path, capfd):
    script = tmp_path / "fail.py"
    script.write_text(
        "import os, sys, time\n"
        "print('hello from', os.environ['JAXSAFETY_PROCESS_ID'], sys.argv[1:])\n"
        "if os.environ['JAXSAFETY_PROCESS_ID'] == '2': sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    t0 = time.time()
    status = launch(str(script), ["x"], num_processes=3)
    assert status == 3 and time.time() - t0 < 30
    out, err = capfd.readouterr()
    assert sorted(line for line in out.splitlines() if "hello" in line) == [
        f"[p{i}] hello from {i} ['x']" for i in range(3)
    ]
    assert err.strip().splitlines()[-1].startswith("launch: process 2 (pid ")
    assert err.strip().endswith("exited with status 3; stopped processes 0, 1")


def test_launcher_rejects_bad_arguments(tmp_path):
    script = tmp_path / "ok.py"
    script.write_text("")
    with pytest.raises(ValueError, match="num_processes=0 is invalid: accepted values are integers >= 1"):
        launch(str(script), num_processes=0)
    with pytest.raises(ValueError, match="platform='tpu' is invalid: accepted values are 'cpu', 'gpu'"):
        launch(str(script), num_processes=1, platform="tpu")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        launch(str(tmp_path / "missing.py"), num_processes=1)
    assert launch(str(script), num_processes=2) == 0


def test_child_env_sets_devices_and_coordinates():
    env = child_env(
        1,
        4,
        "127.0.0.1:1234",
        devices_per_process=3,
        env={"XLA_FLAGS": "--a=1 --xla_force_host_platform_device_count=8"},
    )
    assert env["XLA_FLAGS"] == "--a=1 --xla_force_host_platform_device_count=3"
    assert (env["JAXSAFETY_COORDINATOR"], env["JAXSAFETY_NUM_PROCESSES"], env["JAXSAFETY_PROCESS_ID"]) == (
        "127.0.0.1:1234",
        "4",
        "1",
    )
    assert env["JAX_PLATFORMS"] == "cpu" and env["JAXSAFETY_PROGRESS"] == "0"
    gpu = child_env(1, 2, "h:1", devices_per_process=2, platform="gpu", env={})
    assert gpu["CUDA_VISIBLE_DEVICES"] == "2,3" and "XLA_FLAGS" not in gpu


def test_output_prefix_survives_carriage_returns():
    from jaxsafety.launch import _pump

    r, w = os.pipe()
    sink = type("Sink", (), {})()
    chunks: list[bytes] = []
    sink.write, sink.flush = chunks.append, lambda: None
    t = threading.Thread(target=_pump, args=(os.fdopen(r, "rb"), b"[p1] ", sink, threading.Lock()))
    t.start()
    for piece in (b"a\nb", b"c\r10%\r", b"50%\n", b"end"):
        os.write(w, piece)
        time.sleep(0.02)
    os.close(w)
    t.join(5)
    assert b"".join(chunks) == b"[p1] a\n[p1] bc\r[p1] 10%\r[p1] 50%\n[p1] end"


def test_signal_names():
    from jaxsafety.launch import _describe

    assert _describe(-signal.SIGKILL) == "was killed by SIGKILL"
    assert _describe(2) == "exited with status 2"
