"""PPO on a gymnax environment, many seeds in one jitted call (PureJaxRL style): ``jit(vmap(train))(keys)``.

Thin script over :mod:`jaxsafety.rl`: config -> library -> TensorBoard logs, checkpoint, plot, results.

    python experiments/ppo_gymnax.py --smoke                       # < 1 min on CPU
    python experiments/ppo_gymnax.py --env CartPole-v1 --num-seeds 8
    python experiments/ppo_gymnax.py --env Pendulum-v1             # starts from the tuned Pendulum-v1 preset
    python experiments/ppo_gymnax.py --env Pendulum-v1 --smoke --lr 3e-4
    tensorboard --logdir runs

``--env NAME`` starts from :data:`jaxsafety.rl.presets.ENV_PRESETS` ``[NAME]`` when there is one (the PureJaxRL
CartPole-v1 defaults otherwise); other flags override it, ``--smoke`` shortens it. Writes
``runs/ppo_gymnax/<run>/``: TensorBoard scalars (``train/*`` per env step: seed mean with ``/min`` and ``/max``;
``eval/*``; ``perf/*``), ``checkpoints/<env steps>/`` (orbax: the final policy parameters and observation statistics
of every seed; :func:`jaxsafety.rl.presets.load_policy` reads them back), ``learning_curve.png`` (episode return against env steps, mean and min-max band over seeds) and
``results.json`` (final return mean/std over seeds, greedy evaluation, steps/s, compile time, config).

Steps/s are measured on the compiled program (compile excluded, ``block_until_ready``). The whole run is one
XLA call per chunk of seeds, so it cannot report per-update progress: the script prints its phases instead
(compiling, training, writing) and shows a bar over seed chunks when ``--seeds-per-call`` splits the seeds.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxsafety.config import check, check_range, config_to_dict, parse_cli
from jaxsafety.rl import PPOConfig, make_evaluate, make_train
from jaxsafety.rl.presets import ENV_PRESETS, ppo_fields, save_policy
from jaxsafety.train import log_history, progress
from jaxsafety.train.experiment import Run, start_run
from jaxsafety.xla_flags import apply_cpu_workarounds

# before jax starts its backend (importing starts nothing): vmapped orthogonal inits can deadlock XLA:CPU's
# default scheduler (see jaxsafety.xla_flags)
apply_cpu_workarounds(single_threaded=True)


@dataclasses.dataclass(frozen=True)
class PPOGymnaxConfig(PPOConfig):
    """PPO on a gymnax env over many seeds (fields above run_name: the PPO hyperparameters, see PPOConfig)."""

    run_name: str | None = None
    out_dir: str = "runs"
    seed: int = 0
    num_seeds: int = 8
    seeds_per_call: int = 0  # seeds per jitted call (0: all at once); smaller chunks show a progress bar
    eval_episodes: int = 16  # greedy-policy episodes per seed after training (0: skip)
    final_updates: int = 10  # "final return": mean training episode return over the last this many updates

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("num_seeds", self.num_seeds, ge=1, integer=True)
        check_range("seeds_per_call", self.seeds_per_call, ge=0, integer=True)
        if self.seeds_per_call:
            check(
                self.num_seeds % self.seeds_per_call == 0,
                "seeds_per_call",
                self.seeds_per_call,
                f"0 or divisors of num_seeds ({self.num_seeds})",
            )
        check_range("eval_episodes", self.eval_episodes, ge=0, integer=True)
        check_range("final_updates", self.final_updates, ge=1, le=self.num_updates, integer=True)

    def ppo_config(self) -> PPOConfig:
        """The part of this config that determines training."""
        return PPOConfig(**ppo_fields(self))


NUM_SEEDS = {"Pendulum-v1": 4}  # the default (num_seeds) otherwise


def tuned(env: str) -> PPOGymnaxConfig:
    """The run of :data:`jaxsafety.rl.presets.ENV_PRESETS` ``[env]`` (CartPole-v1's when there is none)."""
    preset = ENV_PRESETS.get(env, ENV_PRESETS["CartPole-v1"])
    return PPOGymnaxConfig(
        **ppo_fields(preset), num_seeds=NUM_SEEDS.get(preset.env, PPOGymnaxConfig.num_seeds)
    )


def smoke(cfg: PPOGymnaxConfig) -> PPOGymnaxConfig:
    """A run of the same config that finishes in well under a minute on CPU (mostly compile time)."""
    steps = cfg.num_envs * cfg.num_steps * max(3, math.ceil(20_000 / (cfg.num_envs * cfg.num_steps)))
    return dataclasses.replace(
        cfg,
        total_timesteps=min(cfg.total_timesteps, steps),
        num_seeds=2,
        seeds_per_call=0,
        eval_episodes=min(cfg.eval_episodes, 4),
        final_updates=3,
    )


def _env_from_argv(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--env" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--env="):
            return arg.split("=", 1)[1]
    return PPOGymnaxConfig.env


def parse_args(argv: list[str]) -> PPOGymnaxConfig:
    """CLI -> config, starting from the preset of the ``--env`` given (see the module docstring)."""
    base = tuned(_env_from_argv(argv))
    presets = {"smoke": smoke(base), "tuned": base}
    if not any(a in ("--smoke", "--tuned") for a in argv):
        argv = ["--tuned", *argv]
    return parse_cli(PPOGymnaxConfig, argv, presets=presets, description=__doc__.splitlines()[0])


def forward_fill(x: np.ndarray) -> np.ndarray:
    """Carry the last finite value forward along the last axis (an update in which no episode ended reports
    NaN); entries before the first finite one stay NaN."""
    x = np.asarray(x, dtype=np.float64)
    idx = np.where(np.isfinite(x), np.arange(x.shape[-1]), 0)
    np.maximum.accumulate(idx, axis=-1, out=idx)
    return np.take_along_axis(x, idx, axis=-1)


def learning_curve(run: Run, steps: np.ndarray, returns: np.ndarray, cfg: PPOGymnaxConfig) -> Path:
    """Episode return ``[seeds, updates]`` against env steps: seed mean, min-max band and each seed thinly."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in returns:
        ax.plot(steps, r, color="tab:blue", alpha=0.25, linewidth=0.7)
    with np.errstate(all="ignore"):
        ax.fill_between(steps, np.nanmin(returns, 0), np.nanmax(returns, 0), color="tab:blue", alpha=0.2)
        ax.plot(steps, np.nanmean(returns, 0), color="tab:blue", label=f"mean of {len(returns)} seeds")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return (training policy)")
    ax.set_title(f"PPO on {cfg.env}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = run.save_figure(fig, "learning_curve", int(steps[-1]))
    plt.close(fig)
    return path


def main(cfg: PPOGymnaxConfig) -> dict[str, Any]:
    t_start = time.time()
    run = start_run("ppo_gymnax", cfg, run_name=cfg.run_name, root=cfg.out_dir)
    ppo = cfg.ppo_config()
    chunk = cfg.seeds_per_call or cfg.num_seeds
    keys = jax.random.split(jax.random.key(cfg.seed), cfg.num_seeds)
    print(
        f"[ppo_gymnax] {cfg.env}: {cfg.num_seeds} seeds x {ppo.env_steps:,} env steps "
        f"({ppo.num_updates} updates of {ppo.num_envs} envs x {ppo.num_steps} steps) on {jax.default_backend()}",
        flush=True,
    )

    print("[ppo_gymnax] compiling jit(vmap(train)) ...", flush=True)
    t0 = time.perf_counter()
    train = jax.jit(jax.vmap(make_train(ppo))).lower(keys[:chunk]).compile()
    compile_s = time.perf_counter() - t0
    print(f"[ppo_gymnax] compiled in {compile_s:.1f} s; training ...", flush=True)

    outs = []
    t0 = time.perf_counter()
    chunks = range(0, cfg.num_seeds, chunk)
    for i in progress(chunks, desc="seed chunks", enabled=None if len(chunks) > 1 else False):
        runner, metrics = jax.block_until_ready(train(keys[i : i + chunk]))
        outs.append((runner.params, runner.obs_rms, metrics))  # (the runner's PRNG keys are not needed)
    train_s = time.perf_counter() - t0
    params, obs_rms, metrics = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *outs)
    sps = cfg.num_seeds * ppo.env_steps / train_s
    print(f"[ppo_gymnax] trained in {train_s:.1f} s: {sps:,.0f} env steps/s (compile excluded)", flush=True)

    steps = metrics.pop("env_steps")[0]
    returns = forward_fill(metrics["episode_return"])  # [seeds, updates]
    final = np.nanmean(metrics["episode_return"][:, -cfg.final_updates :], axis=1)

    eval_returns = None
    if cfg.eval_episodes:
        evaluate = jax.jit(jax.vmap(make_evaluate(ppo, cfg.eval_episodes)))
        eval_keys = jax.random.split(jax.random.key(cfg.seed + 1), cfg.num_seeds)
        eval_returns = np.asarray(evaluate(params, obs_rms, eval_keys))  # [seeds, episodes]

    print("[ppo_gymnax] writing logs, checkpoint, plot ...", flush=True)
    with run:
        filled = {"episode_return": returns, "episode_length": forward_fill(metrics["episode_length"])}
        log_history(run.tracker, {**metrics, **filled}, steps=steps, seed_axis=0, prefix="train/")
        run.tracker.scalars(
            {"sps": sps, "compile_seconds": compile_s, "train_seconds": train_s}, 0, prefix="perf/"
        )
        if eval_returns is not None:
            run.tracker.scalars(
                {"return_mean": eval_returns.mean(), "return_std_over_seeds": eval_returns.mean(1).std()},
                int(steps[-1]),
                prefix="eval/",
            )
        run.tracker.hparams(
            config_to_dict(ppo), {"hparam/final_return": float(np.nanmean(final)), "hparam/sps": sps}
        )
        save_policy(run.dir, int(steps[-1]), ppo, params, obs_rms, metadata={"experiment": "ppo_gymnax"})
        learning_curve(run, steps, returns, cfg)
        results = {
            "experiment": "ppo_gymnax",
            "run": run.name,
            "env": cfg.env,
            "num_seeds": cfg.num_seeds,
            "env_steps_per_seed": ppo.env_steps,
            "final_return_mean": float(np.nanmean(final)),
            "final_return_std": float(np.nanstd(final)),
            "final_return_per_seed": [None if not math.isfinite(v) else v for v in final.tolist()],
            "final_return_definition": f"mean training episode return over the last {cfg.final_updates} updates",
            "eval_return_mean": None if eval_returns is None else float(eval_returns.mean()),
            "eval_return_std_over_seeds": None if eval_returns is None else float(eval_returns.mean(1).std()),
            "eval_episodes_per_seed": cfg.eval_episodes,
            "sps": sps,
            "compile_seconds": compile_s,
            "train_seconds": train_s,
            "seeds_per_call": chunk,
            "backend": jax.default_backend(),
            "device": jax.devices()[0].device_kind,
        }
        results = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in results.items()
        }
        ev = "" if eval_returns is None else f", greedy eval {eval_returns.mean():.1f}"
        print(
            f"[ppo_gymnax] final return {np.nanmean(final):.1f} +- {np.nanstd(final):.1f} over {cfg.num_seeds} "
            f"seeds{ev}",
            flush=True,
        )
        run.finish(results, t_start)
    return results


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
    sys.exit(0)
