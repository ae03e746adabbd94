"""DP and FSDP on 4 fake CPU devices give the same losses and parameters as the unsharded step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import jax
import pytest
from jax.sharding import PartitionSpec

from jaxsafety.config import ConfigError
from jaxsafety.train.sharding import array_spec, make_mesh, state_shardings

WORKER = Path(__file__).with_name("sharding_worker.py")


def test_sharded_training_matches_unsharded():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(WORKER)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert set(res) == {"gpt2-adamw", "llama-adamw", "llama-sgd"}
    for arch in res:
        losses = res[arch]["losses"]
        assert losses[-1] < losses[0]  # it trained (the same batch three times)
        for mode in ("dp", "fsdp"):
            assert res[arch][mode]["loss_diff"] <= 1e-5, (arch, mode, res[arch][mode])
            assert res[arch][mode]["param_diff"] <= 1e-5, (arch, mode, res[arch][mode])
        assert res[arch]["dp"]["sharded_leaves"] == 0
        assert res[arch]["fsdp"]["sharded_leaves"] > 10
        assert res[arch]["fsdp"]["max_shard_fraction"] == pytest.approx(0.25)  # each device holds 1/4


def test_array_spec_rules():
    mesh = make_mesh(1)
    assert array_spec((512, 64), mesh, "fsdp") == PartitionSpec()  # one device: nothing to split

    class FakeMesh:
        shape: ClassVar[dict[str, int]] = {"data": 4}

    assert array_spec((64, 512), FakeMesh, "fsdp") == PartitionSpec(None, "data")
    assert array_spec((512, 64), FakeMesh, "fsdp") == PartitionSpec("data", None)
    assert array_spec((510, 64), FakeMesh, "fsdp") == PartitionSpec(None, "data")  # largest divisible dim
    assert array_spec((64,), FakeMesh, "fsdp") == PartitionSpec()  # small: replicated
    assert array_spec((512, 64), FakeMesh, "dp") == PartitionSpec()
    with pytest.raises(ConfigError, match="mode='zero' is invalid: accepted values are one of 'dp', 'fsdp'"):
        state_shardings({"w": jax.numpy.zeros(3)}, mesh, "zero")
    with pytest.raises(ConfigError, match="num_devices=99 is invalid"):
        make_mesh(99)
