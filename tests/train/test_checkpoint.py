"""Checkpointing: keep-last-K, intervals, typed keys, atomicity, and bit-identical resume after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.train import Checkpointer

WORKER = Path(__file__).with_name("resume_worker.py")


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
