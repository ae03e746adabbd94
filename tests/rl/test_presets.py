"""PPO presets per environment, and trained policies saved to and read back from a run directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from jaxsafety.config import ConfigError
from jaxsafety.rl import PPOConfig, RunningMeanStd, make_policy
from jaxsafety.rl.presets import ENV_PRESETS, load_policy, ppo_fields, save_policy


def test_each_preset_is_for_its_env():
    assert set(ENV_PRESETS) == {"CartPole-v1", "Pendulum-v1"}
    for name, cfg in ENV_PRESETS.items():
        assert type(cfg) is PPOConfig and cfg.env == name


def test_ppo_fields_drop_other_fields():
    @dataclasses.dataclass(frozen=True)
    class Run(PPOConfig):
        num_seeds: int = 8

    run = Run(lr=1e-3, num_seeds=3)
    assert PPOConfig(**ppo_fields(run)) == PPOConfig(lr=1e-3)
    assert ppo_fields({"lr": 1e-3, "num_seeds": 3, "out_dir": "runs"}) == {"lr": 1e-3}


def test_save_then_load_gives_every_seed_back(tmp_path: Path):
    """Random per-seed parameters and statistics round-trip exactly, with the PPO fields of the config saved."""
    seeds = 3
    cfg = dataclasses.replace(ENV_PRESETS["Pendulum-v1"], hidden=(8, 8))
    models = [make_policy(cfg, jax.random.key(s))[0] for s in range(seeds)]
    params = jax.tree.map(lambda *xs: np.stack(xs), *[nnx.state(m, nnx.Param) for m in models])
    rng = np.random.default_rng(0)
    obs_rms = RunningMeanStd(
        rng.normal(size=(seeds, 3)).astype(np.float32),
        rng.uniform(0.5, 2, size=(seeds, 3)).astype(np.float32),
        np.array([10.0, 20.0, 30.0], np.float32),
    )

    @dataclasses.dataclass(frozen=True)
    class Run(PPOConfig):
        out_dir: str = "runs"

    path = save_policy(tmp_path, 1234, Run(**ppo_fields(cfg)), params, obs_rms, metadata={"note": "x"})
    assert path == tmp_path / "checkpoints" / "1234" and path.is_dir()

    got_cfg, got_params, got_rms = load_policy(tmp_path)
    assert got_cfg == cfg and type(got_cfg) is PPOConfig
    want, got = jax.tree.leaves(params), jax.tree.leaves(got_params)
    assert len(want) == len(got) and [x.shape[0] for x in got] == [seeds] * len(got)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(obs_rms), jax.tree.leaves(got_rms), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the restored leaves act: the first seed's policy is the first model's
    merged = nnx.merge(nnx.graphdef(models[0]), jax.tree.map(lambda x: x[0], got_params))
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(np.asarray(merged(x)[1]), np.asarray(models[0](x)[1]))


def test_load_policy_needs_a_saved_policy(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_policy(tmp_path)
    with pytest.raises(ConfigError, match=r"obs_rms=.* is invalid"):
        save_policy(tmp_path, 1, PPOConfig(), {}, RunningMeanStd.create((4,)))
