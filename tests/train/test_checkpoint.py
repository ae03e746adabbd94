"""Checkpointing: keep-last-K, intervals, typed keys, atomicity, bit-identical resume after SIGKILL, and resume past
corrupt checkpoints (checksums, fallback to an older step, the one-line error when none restores)."""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.train import Checkpointer, CheckpointError, run_loop
from jaxsafety.train.checkpoint import CorruptCheckpointError
from jaxsafety.train.experiment import start_run

WORKER = Path(__file__).with_name("resume_worker.py")
REPO = Path(__file__).resolve().parents[2]


def _state(v: float):
    return {"w": jnp.full((3, 2), v), "step": jnp.int32(v), "key": jax.random.key(int(v))}


def test_interval_keep_last_and_restore(tmp_path: Path):
    with Checkpointer(tmp_path / "ck", save_every=2, keep_last=2) as ck:
        assert ck.restore_latest(_state(0)) is None
        saved = [s for s in range(1, 8) if ck.save(s, _state(s), metadata={"note": f"s{s}"})]
        assert saved == [2, 4, 6]
        assert ck.save(7, _state(7), force=True)
        ck.wait()
        assert ck.all_steps() == [6, 7]
        step, st = ck.restore_latest(_state(0))
        assert step == 7
        np.testing.assert_array_equal(st["w"], np.full((3, 2), 7.0))
        assert st["step"].dtype == jnp.int32 and int(st["step"]) == 7
        # typed PRNG keys come back as keys with the same data
        assert jax.dtypes.issubdtype(st["key"].dtype, jax.dtypes.prng_key)
        np.testing.assert_array_equal(jax.random.key_data(st["key"]), jax.random.key_data(jax.random.key(7)))
        np.testing.assert_array_equal(ck.restore(_state(0), step=6)["w"], np.full((3, 2), 6.0))
        assert ck.metadata(6) == {"note": "s6"}
        assert ck.metadata() == {}  # step 7 was saved without metadata
    # a new manager over the same directory sees the same checkpoints
    with Checkpointer(tmp_path / "ck", save_every=2) as ck2:
        assert ck2.latest_step() == 7


def test_partial_write_is_ignored(tmp_path: Path):
    d = tmp_path / "ck"
    with Checkpointer(d, save_every=1) as ck:
        ck.save(1, _state(1))
    # a save killed half-way leaves an uncommitted temp directory; it must not be taken for a checkpoint
    tmp = d / "2.orbax-checkpoint-tmp-123"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "garbage").write_text("half written")
    with Checkpointer(d, save_every=1) as ck:
        assert ck.latest_step() == 1
        np.testing.assert_array_equal(ck.restore(_state(0))["w"], np.full((3, 2), 1.0))


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(ConfigError, match="save_every=0 is invalid: accepted values are integers >= 1"):
        Checkpointer(tmp_path, save_every=0)
    with Checkpointer(tmp_path / "empty", save_every=1) as ck, pytest.raises(FileNotFoundError):
        ck.restore(_state(0))


def _worker(
    ckpt: Path, out: Path, steps: int, save_every: int, die_at: int = -1
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(WORKER), "--ckpt", str(ckpt), "--out", str(out), "--steps", str(steps)]
    cmd += ["--save-every", str(save_every), "--die-at", str(die_at)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_resume_after_sigkill_is_bit_identical(tmp_path: Path):
    n = 20
    straight = _worker(tmp_path / "a", tmp_path / "straight.npz", 2 * n, save_every=5)
    assert straight.returncode == 0, straight.stderr

    killed = _worker(tmp_path / "b", tmp_path / "never.npz", 2 * n, save_every=5, die_at=n + 2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "never.npz").exists()

    resumed = _worker(tmp_path / "b", tmp_path / "resumed.npz", 2 * n, save_every=5)
    assert resumed.returncode == 0, resumed.stderr
    start = json.loads((tmp_path / "resumed.npz.json").read_text())["start_step"]
    assert 5 <= start <= n + 2 and start % 5 == 0  # it really resumed, from a committed checkpoint

    a, b = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    assert a.files == b.files and len(a.files) > 5
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])  # bit-identical, not merely close


# --- corrupt checkpoints --------------------------------------------------------------------------------------------
# A 96x96 float32 array of random numbers: zstd stores it as a raw (incompressible) block without a checksum, so
# flipped bytes there pass orbax and TensorStore unnoticed; only the stored SHA-256 catches them.
_BIG = np.random.default_rng(0).standard_normal((96, 96)).astype(np.float32)


def _big_state(n: int):
    return {"w": jnp.asarray(_BIG), "n": jnp.int32(n), "key": jax.random.key(n)}


def _data_file(step_dir: Path) -> Path:
    """The largest array-data file orbax wrote for the ``state`` item: the one holding ``w``'s chunk."""
    return max((step_dir / "state" / "ocdbt.process_0" / "d").iterdir(), key=lambda f: f.stat().st_size)


def _flip(path: Path, n: int = 8) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + n] = bytes(b ^ 0xFF for b in raw[mid : mid + n])
    path.write_bytes(bytes(raw))


def _save_steps(d: Path, steps, keep_last: int = 3) -> None:
    with Checkpointer(d, save_every=1, keep_last=keep_last) as ck:
        for s in steps:
            ck.save(s, _big_state(s), metadata={"step": s})


def test_checksums_are_sha256_of_the_saved_bytes(tmp_path: Path):
    _save_steps(tmp_path / "ck", [1])
    stored = json.loads((tmp_path / "ck" / "1" / "checksums" / "metadata").read_text())
    # independent: hashlib over numpy's bytes of the arrays as built, typed key as its raw key data
    expected = {
        "['key']": np.asarray(jax.random.key_data(jax.random.key(1))),
        "['n']": np.asarray(np.int32(1)),
        "['w']": _BIG,
    }
    assert sorted(stored["arrays"]) == sorted(expected)
    for path, x in expected.items():
        entry = stored["arrays"][path]
        assert entry == {
            "dtype": str(x.dtype),
            "shape": list(x.shape),
            "sha256": hashlib.sha256(x.tobytes()).hexdigest(),
        }
    assert (
        stored["meta_sha256"] == hashlib.sha256(json.dumps({"step": 1}, sort_keys=True).encode()).hexdigest()
    )


def test_flipped_bytes_resume_from_the_previous_step(tmp_path: Path, capfd):
    d = tmp_path / "ck"
    _save_steps(d, [1, 2, 3])
    _flip(_data_file(d / "3"))
    with Checkpointer(d, save_every=1) as ck:
        with pytest.raises(
            CorruptCheckpointError, match=r"step 3 .* is corrupt \(checksum mismatch in \['w'\]"
        ):
            ck.restore(_big_state(0), step=3)  # an explicit step is verified too, and left where it is
        assert ck.all_steps() == [1, 2, 3]
        capfd.readouterr()
        step, st = ck.restore_latest(_big_state(0))
        assert step == 2 and int(st["n"]) == 2
        np.testing.assert_array_equal(st["w"], _BIG)
        np.testing.assert_array_equal(jax.random.key_data(st["key"]), jax.random.key_data(jax.random.key(2)))
        err = capfd.readouterr().err
        assert err.count("\n") == 1, err  # one line, no traceback
        assert err.startswith(
            f"checkpoint step 3 in {d} is corrupt (checksum mismatch in ['w'] (1 of 3 checked)); "
        )
        assert err.endswith(f"moved it to {d}-corrupt/3, resuming from step 2\n")
        assert ck.all_steps() == [1, 2] and (tmp_path / "ck-corrupt" / "3" / "state").is_dir()


# (a deleted state/_METADATA is no damage for this flat dict: orbax rebuilds the tree from the target, and the
# checksums confirm the data; for an NNX state it fails with a pytree structure error, handled like these)
@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest", "meta", "checksums"])
@pytest.mark.filterwarnings(
    "error::pytest.PytestUnraisableExceptionWarning"
)  # no stray "Exception ignored in"
def test_unreadable_step_falls_back_in_one_line(tmp_path: Path, capfd, damage: str):
    d = tmp_path / "ck"
    _save_steps(d, [1, 2])
    step_dir = d / "2"
    if damage == "truncate":
        data = _data_file(step_dir)
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "delete":
        _data_file(step_dir).unlink()
    elif damage == "manifest":  # CRC-32C-checked by TensorStore
        _flip(step_dir / "state" / "manifest.ocdbt", 4)
    else:  # the JSON items: the metadata, or the checksums themselves
        (step_dir / damage / "metadata").write_text('{"step": 7}' if damage == "meta" else "{")
    capfd.readouterr()
    with Checkpointer(d, save_every=1) as ck:
        if damage == "meta":  # valid JSON, other content: only the stored hash tells
            with pytest.raises(
                CorruptCheckpointError, match=r"step 2 .* is corrupt \(checksum mismatch in metadata\)"
            ):
                ck.metadata(2)
            assert ck.metadata(1) == {"step": 1}
        asked, orbax_restore = [], ck._mgr.restore
        ck._mgr.restore = lambda step, **kw: asked.append(step) or orbax_restore(step, **kw)
        step, st = ck.restore_latest(_big_state(0))
    gc.collect()  # what orbax's failed read left behind is finalised here, under the filter above
    assert step == 1 and int(st["n"]) == 1
    # a damaged OCDBT manifest is caught before orbax reads the step: orbax's asyncio restore, failing there, can
    # leave TensorStore callbacks on a closed event loop that print dozens of tracebacks (seen with NNX states)
    assert asked == ([1] if damage == "manifest" else [2, 1])
    err = capfd.readouterr().err
    assert err.count("\n") == 1, err
    verdict = "is corrupt (checksum mismatch in metadata" if damage == "meta" else "is unreadable ("
    assert err.startswith(f"checkpoint step 2 in {d} {verdict}"), err
    assert err.endswith(f"moved it to {d}-corrupt/2, resuming from step 1\n"), err


def test_resumed_run_saves_past_the_corrupt_step(tmp_path: Path, capfd):
    d = tmp_path / "ck"

    def step_fn(state, batch):
        return {**state, "n": state["n"] + 1}, {"n": state["n"]}

    seen: list[int] = []

    def batch_fn(step: int):
        seen.append(step)
        return None

    with Checkpointer(d, save_every=1, keep_last=2) as ck:
        run_loop(_big_state(0), step_fn, batch_fn, num_steps=4, checkpointer=ck)
    assert sorted(int(p.name) for p in d.iterdir()) == [3, 4]
    _flip(_data_file(d / "4"))
    seen.clear()
    with Checkpointer(d, save_every=1, keep_last=2) as ck:
        state, _ = run_loop(_big_state(0), step_fn, batch_fn, num_steps=6, checkpointer=ck)
        assert seen == [3, 4, 5]  # resumed from step 3, re-ran step 4 and saved it again
        assert ck.all_steps() == [5, 6]
        step, st = ck.restore_latest(_big_state(0))
    assert step == 6 and int(st["n"]) == int(state["n"]) == 6
    np.testing.assert_array_equal(st["w"], _BIG)
    assert "checkpoint step 4 in" in capfd.readouterr().err
    assert [p.name for p in (tmp_path / "ck-corrupt").iterdir()] == ["4"]


def test_nothing_restores_one_line_error(tmp_path: Path):
    run = start_run("exp", {"a": 1}, run_name="r", root=tmp_path, tracker="none")
    d = run.dir / "checkpoints"
    _save_steps(d, [1, 2])
    _flip(_data_file(d / "2"))
    _data_file(d / "1").write_bytes(b"")
    with Checkpointer(d, save_every=1) as ck:
        with pytest.raises(CheckpointError) as info:
            ck.restore_latest(_big_state(0))
        assert ck.all_steps() == [1, 2]  # nothing is moved aside when nothing restores
    msg = str(info.value)
    assert "\n" not in msg and not isinstance(info.value, CorruptCheckpointError)
    assert msg.startswith(f"no checkpoint in {d.absolute()} restores (step 2: checksum mismatch in ['w'] ")
    assert "; step 1: ValueError: " in msg
    assert msg.endswith(f"); to start afresh, delete {d.absolute()}")
    assert not (run.dir / "checkpoints-corrupt").exists()
    # an experiment script (inside ``with run``) exits with that line and status 1 instead of a traceback
    with pytest.raises(SystemExit) as exit_info, run, run.checkpointer(save_every=1) as ck:
        ck.restore_latest(_big_state(0))
    assert exit_info.value.code == f"error: {msg} or pass a new --run-name"


def test_checkpoints_without_checksums_still_restore(tmp_path: Path):
    with Checkpointer(tmp_path / "ck", save_every=1, checksums=False) as ck:
        ck.save(1, _big_state(1))
    assert not (tmp_path / "ck" / "1" / "checksums").exists()
    with Checkpointer(tmp_path / "ck", save_every=1) as ck:
        step, st = ck.restore_latest(_big_state(0))
    assert step == 1 and int(st["n"]) == 1
    np.testing.assert_array_equal(st["w"], _BIG)


@pytest.mark.slow
def test_pretrain_lm_resumes_past_a_corrupt_checkpoint(tmp_path: Path):
    """End to end, as a user would: run, flip bytes in the newest checkpoint, rerun the same --run-name."""
    cmd = [sys.executable, str(REPO / "experiments" / "pretrain_lm.py"), "--smoke", "--run-name", "c"]
    cmd += ["--out-dir", str(tmp_path), "--ckpt-every", "10", "--keep-last", "2", "--export-hf", "false"]

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=600, cwd=tmp_path)

    ckpts = tmp_path / "pretrain_lm" / "c" / "checkpoints"
    first = run()
    assert first.returncode == 0, first.stderr
    assert sorted(int(p.name) for p in ckpts.iterdir()) == [30, 40]
    _flip(_data_file(ckpts / "40"))
    resumed = run("--steps", "60")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.startswith(f"checkpoint step 40 in {ckpts} is corrupt (checksum mismatch in ")
    assert resumed.stderr.endswith("resuming from step 30\n") and resumed.stderr.count("\n") == 1, (
        resumed.stderr
    )
    assert sorted(int(p.name) for p in ckpts.iterdir()) == [50, 60]
    assert json.loads((ckpts.parent / "results.json").read_text())["checkpoint_steps"] == [50, 60]

    for step in (50, 60):
        _flip(_data_file(ckpts / str(step)))
    failed = run("--steps", "60")
    assert failed.returncode == 1
    assert failed.stderr.startswith(
        f"error: no checkpoint in {ckpts} restores (step 60: checksum mismatch in "
    )
    assert failed.stderr.endswith(f"to start afresh, delete {ckpts} or pass a new --run-name\n"), (
        failed.stderr
    )
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    shutil.rmtree(ckpts)  # ... as the message says: the same run name then starts afresh
    afresh = run("--steps", "20")
    assert afresh.returncode == 0 and afresh.stderr == "", afresh.stderr
    assert sorted(int(p.name) for p in ckpts.iterdir()) == [10, 20]
