"""Tuned PPO starting points per gymnax environment, and trained policies saved to / loaded from a run directory.

:data:`ENV_PRESETS` maps an environment name to a :class:`jaxsafety.rl.PPOConfig` known to learn it;
:func:`save_policy` writes the final parameters and observation statistics of every seed of a
``jax.vmap(make_train(config))`` run as an orbax checkpoint (with the config in its metadata) and
:func:`load_policy` reads them back, ready for ``jax.vmap(make_evaluate(config))``::

    runner, _ = jax.jit(jax.vmap(make_train(cfg)))(keys)
    save_policy(run_dir, cfg.env_steps, cfg, runner.params, runner.obs_rms)
    cfg, params, obs_rms = load_policy(run_dir)
    returns = jax.vmap(make_evaluate(cfg, 16))(params, obs_rms, eval_keys)  # [seeds, 16]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.config import check, config_from_dict, config_to_dict
from jaxsafety.rl.normalize import RunningMeanStd
from jaxsafety.rl.ppo import PPOConfig, make_policy
from jaxsafety.train import Checkpointer

__all__ = ["ENV_PRESETS", "load_policy", "ppo_fields", "save_policy"]

# Tuned starting points per environment (experiments/ppo_gymnax.py: ``--env NAME`` picks one, flags override it).
ENV_PRESETS: dict[str, PPOConfig] = {
    # PureJaxRL's CartPole-v1 settings (the PPOConfig defaults): solved (500) within 5e5 steps
    "CartPole-v1": PPOConfig(),
    # Pendulum-v1 (no termination, 200-step time limit): short horizon (gamma 0.9) and many epochs as in
    # rl-baselines3-zoo's tuned SB3 PPO, plus reward scaling and an unclipped value loss (returns reach -1600,
    # far outside a 0.2 value-clip range). Found by a small sweep over 4 seeds at 1e5 steps; see README.
    "Pendulum-v1": PPOConfig(
        env="Pendulum-v1",
        num_envs=16,
        num_steps=256,
        total_timesteps=100_000,
        update_epochs=10,
        num_minibatches=32,
        gamma=0.9,
        gae_lambda=0.95,
        lr=1e-3,
        ent_coef=0.0,
        clip_value=False,
        scale_rewards=True,
    ),
}

_CHECKPOINTS = "checkpoints"


def ppo_fields(config: Any) -> dict[str, Any]:
    """The :class:`PPOConfig` fields of ``config`` (a :class:`PPOConfig`, a subclass of it with fields of its own,
    or a dict such as a run's ``config.json``), as constructor keyword arguments: other fields are dropped."""
    names = [f.name for f in dataclasses.fields(PPOConfig) if f.init]
    if isinstance(config, Mapping):
        return {k: config[k] for k in names if k in config}
    return {k: getattr(config, k) for k in names}


def save_policy(
    run_dir: str | Path,
    step: int,
    config: PPOConfig,
    params: nnx.State,
    obs_rms: RunningMeanStd,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Save the trained policies of a seed-vmapped run to ``<run_dir>/checkpoints/<step>`` (orbax, keeping only
    this step) and return that directory.

    ``params``: the actor-critic's parameters and ``obs_rms`` its observation statistics, every leaf with a
    leading seed axis ``[S, ...]`` (``Runner.params`` / ``Runner.obs_rms`` of ``jax.vmap(make_train(config))``).
    The :class:`PPOConfig` fields of ``config`` and the seed count are stored in the checkpoint's metadata, next
    to ``metadata``.
    """
    num_seeds = int(np.shape(obs_rms.count)[0]) if np.ndim(obs_rms.count) else 0
    check(
        num_seeds >= 1, "obs_rms", f"count of shape {np.shape(obs_rms.count)}", "statistics with a seed axis"
    )
    ppo = PPOConfig(**ppo_fields(config))
    state = {
        "params": nnx.to_pure_dict(params),
        "obs_rms": {"mean": obs_rms.mean, "var": obs_rms.var, "count": obs_rms.count},
    }
    meta = {**dict(metadata or {}), "ppo_config": config_to_dict(ppo), "num_seeds": num_seeds}
    with Checkpointer(Path(run_dir) / _CHECKPOINTS, save_every=1, keep_last=1) as ckpt:
        ckpt.save(int(step), state, metadata=meta, force=True)
    return Path(run_dir) / _CHECKPOINTS / str(int(step))


def load_policy(run_dir: str | Path, step: int | None = None) -> tuple[PPOConfig, nnx.State, RunningMeanStd]:
    """``(config, params, obs_rms)`` saved by :func:`save_policy` in ``<run_dir>/checkpoints`` (``step``: default
    the latest), every leaf of ``params`` and ``obs_rms`` with a leading seed axis; evaluate them with
    ``jax.vmap(make_evaluate(config))(params, obs_rms, keys)``."""
    with Checkpointer(Path(run_dir) / _CHECKPOINTS) as ckpt:
        meta = ckpt.metadata(step)
        check(
            "ppo_config" in meta and "num_seeds" in meta,
            "run_dir",
            str(run_dir),
            "run directories whose checkpoint save_policy wrote (metadata with ppo_config and num_seeds)",
        )
        cfg = config_from_dict(PPOConfig, meta["ppo_config"])
        seeds = int(meta["num_seeds"])
        _, env, env_params = make_policy(cfg)
        obs_dim = int(np.prod(env.observation_space(env_params).shape))
        abstract = nnx.state(nnx.eval_shape(lambda: make_policy(cfg)[0]), nnx.Param)
        seeded = jax.tree.map(lambda x: jax.ShapeDtypeStruct((seeds, *x.shape), x.dtype), abstract)
        target = {
            "params": nnx.to_pure_dict(seeded),
            "obs_rms": {
                "mean": jax.ShapeDtypeStruct((seeds, obs_dim), jnp.float32),
                "var": jax.ShapeDtypeStruct((seeds, obs_dim), jnp.float32),
                "count": jax.ShapeDtypeStruct((seeds,), jnp.float32),
            },
        }
        restored = ckpt.restore(target, step)
    nnx.replace_by_pure_dict(seeded, restored["params"])
    return cfg, seeded, RunningMeanStd(**restored["obs_rms"])
