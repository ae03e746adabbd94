"""PPO on CartPole-v1, full training throughput (rollout + GAE + update, env steps/s) and final return.

Compared on the same work (4 envs x 128 steps per update, 4 epochs x 4 minibatches of 128, 2x64 tanh actor and
critic, Adam lr 2.5e-4 annealed to 0, gamma 0.99, GAE lambda 0.95, clip 0.2 on policy and value, entropy 0.01,
value 0.5, grad-norm 0.5), all measured in this one run:

- **ours**: ``jax.jit(make_train(PPOConfig()))`` (1 seed) and ``jax.jit(jax.vmap(train))`` over 8 and 64 seeds,
  with its defaults (truncation bootstrapping on, so one extra critic pass over the final observations);
- **ours, same algorithm** (``ours_no_trunc_bootstrap``): ``PPOConfig(bootstrap_truncation=False)``, i.e. exactly
  the reference's algorithm (it treats a time-limit truncation as a termination), so that the ratio to the reference
  compares implementations of the same computation;
- **PureJaxRL-style**: :mod:`benchmarks.purejaxrl_ppo`, a plain PureJaxRL-shaped implementation (no truncation
  bootstrapping), jitted and vmapped the same way. TARGETS.md's floor is ours >= 1.0x this one
  on the same work (``floor_same_algorithm_ge_1`` in ``targets``; the default's ratio is reported next to it);
- **SB3**: Stable-Baselines3 ``PPO("MlpPolicy")`` with the same hyperparameters (``net_arch`` pi=[64,64],
  vf=[64,64], tanh, ``DummyVecEnv`` of 4 gymnasium CartPole-v1, ``n_steps=128``, ``batch_size=128``,
  ``n_epochs=4``, ``clip_range_vf=0.2`` to match the clipped value loss, linear lr schedule), torch on CPU, timed
  with ``torch.set_num_threads(1)`` and ``(2)``; the faster is the reported peer. Skipped (``sb3: null``) when
  stable-baselines3 is not installed (``pip install -e .[bench]``).

Throughput: steps/s counts all seeds' env steps. JAX sides report compile time (``lower().compile()``) apart from
the steady state (median of ``repeats`` calls of the compiled program, after one warm-up, as
``harness.time_jitted`` does), with ours' and the reference's calls alternated so that load from other processes
on a shared machine falls on both alike; ``steps_per_s_best`` (from the fastest call) is recorded too, as the
least load-disturbed figure. The work per call is about the same
across seed counts (total env steps, not per-seed steps, is held near 5e5 in full mode), so a call lasts seconds.
SB3 times ``model.learn(budget)`` on an already-built model (construction excluded; its first call is a warm-up
reported as ``compile_s``).

Final return at equal env steps (full mode only): each side trains for 5e5 env steps per seed. Two measures, per
seed, then averaged over seeds: ``train_last100``, the mean return of the last >= 100 training episodes (ours and
the reference: trailing updates until 100 episodes are covered, episode-weighted; SB3: the ``Monitor`` buffer of
the last 100 episodes), and ``eval_deterministic``, the mean of 32 fresh episodes with the greedy policy (ours:
``make_evaluate``; SB3: ``evaluate_policy(deterministic=True)``; not available for the reference).

XLA:CPU note. Vmapping the in-graph orthogonal initialisers over seeds can deadlock XLA:CPU's default scheduler
(see :mod:`jaxsafety.xla_flags`), so this module applies ``apply_cpu_workarounds()`` when imported before the JAX
backend starts; if the backend is already up without it (e.g. another benchmark ran first in this process),
:func:`run` re-runs itself in a fresh process with the flag. The flag applies to both JAX sides alike.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks.harness import Timing, cli_main, time_fn, time_interleaved
from jaxsafety.rl.ppo import PPOConfig, make_evaluate, make_train
from jaxsafety.xla_flags import apply_cpu_workarounds, with_cpu_workarounds_env

# before the backend starts: importing jax and jaxsafety starts nothing, but the reference's imports (flax.linen,
# gymnax wrappers) do, so benchmarks.purejaxrl_ppo is imported where it is used
_FLAG_ACTIVE = apply_cpu_workarounds()

NAME = "ppo_cartpole"
SAME = "ours_no_trunc_bootstrap"  # ours running the reference's exact algorithm
RETURN_STEPS = 500_000  # env steps per seed for the final-return comparison
EVAL_EPISODES = 32


@dataclasses.dataclass(frozen=True)
class Budget:
    """Sizes of one benchmark run."""

    seeds: tuple[int, ...]
    steps_per_call: int  # total env steps (all seeds) per timed JAX call, rounded to whole updates per seed
    repeats: int
    sb3_steps: int  # env steps per timed ``model.learn`` call
    sb3_repeats: int
    return_seeds: int  # seeds for the final-return comparison (0: skip it)
    sb3_return_seeds: int


FULL = Budget(
    seeds=(1, 8, 64),
    steps_per_call=500_000,
    repeats=5,
    sb3_steps=32_768,
    sb3_repeats=3,
    return_seeds=8,
    sb3_return_seeds=2,
)
QUICK = Budget(
    seeds=(1, 8),
    steps_per_call=16_384,
    repeats=3,
    sb3_steps=2_048,
    sb3_repeats=1,
    return_seeds=0,
    sb3_return_seeds=0,
)


def _per_seed_steps(total: int, seeds: int, batch: int) -> int:
    """Per-seed ``total_timesteps``: ``total / seeds`` rounded down to whole updates, at least one update."""
    return max(total // seeds // batch, 1) * batch


def _rate(t: Timing, steps: int) -> dict[str, Any]:
    return {
        "steps_per_s": t.rate(steps),
        "steps_per_s_best": steps / t.min_s,
        "env_steps_per_call": steps,
        "timing": t.to_dict(),
    }


def _compiled(train: Any, seeds: int) -> tuple[Any, jax.Array, float]:
    """``(executable, keys, compile seconds)`` for ``jit(train)`` (1 seed) or ``jit(vmap(train))``."""
    if seeds == 1:
        fn, arg = jax.jit(train), jax.random.key(0)
    else:
        fn, arg = jax.jit(jax.vmap(train)), jax.random.split(jax.random.key(0), seeds)
    t0 = time.perf_counter()
    compiled = fn.lower(arg).compile()
    return compiled, arg, time.perf_counter() - t0


def _time_programs(trains: dict[str, Any], seeds: int, repeats: int) -> dict[str, Timing]:
    """AOT-compile each ``train`` (compile time reported apart) and time the executables with
    :func:`benchmarks.harness.time_interleaved` (one warm-up call, steady-state calls alternated a, b, a, b, ...,
    so that load from other processes on a shared machine falls on all of them alike)."""
    progs = {name: _compiled(train, seeds) for name, train in trains.items()}
    return time_interleaved(
        {name: (lambda c=compiled, a=arg: c(a)) for name, (compiled, arg, _) in progs.items()},
        repeats=repeats,
        compile_s={name: prog[2] for name, prog in progs.items()},
        settle_s=0.0,
    )


def same_algorithm_trains(total_timesteps: int) -> dict[str, Any]:
    """``{SAME: train, "purejaxrl": train}``: ours with ``bootstrap_truncation=False`` and the PureJaxRL-style
    reference, the same algorithm at the same hyperparameters, each ``train(key) -> (state, metrics)`` with
    ``metrics["episode_return"]`` ``[num_updates]``, for ``total_timesteps`` env steps per seed (whole updates)."""
    from benchmarks import purejaxrl_ppo

    same_cfg = PPOConfig(total_timesteps=total_timesteps, bootstrap_truncation=False)
    ref_cfg = purejaxrl_ppo.RefConfig(total_timesteps=total_timesteps)
    if same_cfg.env_steps != ref_cfg.env_steps:
        raise ValueError(
            f"total_timesteps={total_timesteps}: ours runs {same_cfg.env_steps} env steps, the reference "
            f"{ref_cfg.env_steps}; accepted values are whole updates of both"
        )
    return {SAME: make_train(same_cfg), "purejaxrl": purejaxrl_ppo.make_train(ref_cfg)}


def throughput_jax(budget: Budget) -> list[dict[str, Any]]:
    """Steps/s of ours and the PureJaxRL-style reference at each seed count (same env steps per call)."""
    rows = []
    for seeds in budget.seeds:
        base = PPOConfig()
        per_seed = _per_seed_steps(budget.steps_per_call, seeds, base.num_envs * base.num_steps)
        ours_cfg = PPOConfig(total_timesteps=per_seed)
        steps = seeds * ours_cfg.env_steps
        timings = _time_programs(
            {"ours": make_train(ours_cfg), **same_algorithm_trains(per_seed)}, seeds, budget.repeats
        )
        ours, same, ref = timings["ours"], timings[SAME], timings["purejaxrl"]
        row = {
            "seeds": seeds,
            "env_steps_per_seed": ours_cfg.env_steps,
            "ours": _rate(ours, steps),
            SAME: _rate(same, steps),
            "purejaxrl": _rate(ref, steps),
            "ratio_ours_over_purejaxrl": ref.median_s / ours.median_s,
            f"ratio_{SAME}_over_purejaxrl": ref.median_s / same.median_s,
        }
        rows.append(row)
        print(
            f"PPO CartPole {seeds:>2} seed(s), {steps} env steps/call: ours {row['ours']['steps_per_s']:,.0f} "
            f"steps/s (compile {ours.compile_s:.1f} s), same algorithm {row[SAME]['steps_per_s']:,.0f}, "
            f"PureJaxRL-style {row['purejaxrl']['steps_per_s']:,.0f} steps/s (compile {ref.compile_s:.1f} s); "
            f"over PureJaxRL-style: ours {row['ratio_ours_over_purejaxrl']:.2f}x, "
            f"same algorithm {row[f'ratio_{SAME}_over_purejaxrl']:.2f}x",
            flush=True,
        )
    return rows


def sb3_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("stable_baselines3", "gymnasium", "torch"))


def make_sb3(seed: int) -> Any:
    """SB3 PPO with PPOConfig's default hyperparameters on 4 DummyVecEnv'd gymnasium CartPole-v1 envs."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    cfg = PPOConfig()
    env = make_vec_env("CartPole-v1", n_envs=cfg.num_envs, seed=seed, vec_env_cls=DummyVecEnv)
    return PPO(
        "MlpPolicy",
        env,
        learning_rate=lambda progress_remaining: cfg.lr * progress_remaining,  # linear anneal to 0
        n_steps=cfg.num_steps,
        batch_size=cfg.minibatch_size,
        n_epochs=cfg.update_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_eps,
        clip_range_vf=cfg.clip_eps,
        normalize_advantage=True,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm,
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
        device="cpu",
        seed=seed,
        verbose=0,
    )


def throughput_sb3(budget: Budget) -> dict[str, Any]:
    """Steps/s of ``model.learn(budget.sb3_steps)`` with 1 and 2 torch threads (model built outside the timer)."""
    import torch

    out: dict[str, Any] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        model = make_sb3(seed=0)

        def learn(model: Any = model) -> None:
            model.learn(total_timesteps=budget.sb3_steps)

        t = time_fn(learn, repeats=budget.sb3_repeats, warmup=1)
        out[f"threads_{threads}"] = _rate(t, budget.sb3_steps)
        print(
            f"SB3 PPO CartPole, torch {threads} thread(s): {t.rate(budget.sb3_steps):,.0f} steps/s "
            f"({budget.sb3_steps} steps/call)",
            flush=True,
        )
    best = max((1, 2), key=lambda n: out[f"threads_{n}"]["steps_per_s"])
    out["best_threads"] = best
    out["steps_per_s"] = out[f"threads_{best}"]["steps_per_s"]
    return out


def last_episodes_mean(episode_return: np.ndarray, episodes: np.ndarray, n: int = 100) -> float:
    """Episode-weighted mean return over the trailing updates that together hold >= ``n`` finished episodes.

    ``episode_return``/``episodes`` ``[num_updates]``: per update, the mean return of (NaN if none) and the
    number of episodes that ended in its rollout.
    """
    ret = np.nan_to_num(np.asarray(episode_return, np.float64))
    cnt = np.asarray(episodes, np.float64)
    covered = np.cumsum(cnt[::-1])
    k = int(np.searchsorted(covered, n)) + 1  # trailing updates needed to reach n episodes
    r, c = ret[-k:], cnt[-k:]
    return float((r * c).sum() / max(c.sum(), 1.0))


def final_returns(budget: Budget, sb3_threads: int | None) -> dict[str, Any]:
    """Return after :data:`RETURN_STEPS` env steps per seed: ours, the reference, SB3 (see the module docstring)."""
    seeds = budget.return_seeds
    keys = jax.random.split(jax.random.key(1), seeds)
    cfg = PPOConfig(total_timesteps=RETURN_STEPS)
    t0 = time.perf_counter()
    runner, m = jax.block_until_ready(jax.jit(jax.vmap(make_train(cfg)))(keys))
    ours_wall = time.perf_counter() - t0
    evaluate = jax.jit(jax.vmap(make_evaluate(cfg, EVAL_EPISODES)))
    ours_eval = np.asarray(
        evaluate(runner.params, runner.obs_rms, jax.random.split(jax.random.key(2), seeds))
    ).mean(-1)
    ours_train = [
        last_episodes_mean(np.asarray(m["episode_return"][i]), np.asarray(m["episodes"][i]))
        for i in range(seeds)
    ]
    ours = {
        "seeds": seeds,
        "env_steps_per_seed": cfg.env_steps,
        "train_last100": float(np.mean(ours_train)),
        "train_last100_per_seed": ours_train,
        "eval_deterministic": float(ours_eval.mean()),
        "eval_deterministic_per_seed": ours_eval.tolist(),
        "wall_s_incl_compile": ours_wall,
    }
    print(
        f"final return at {cfg.env_steps} steps: ours ({seeds} seeds) train-last-100 {ours['train_last100']:.1f}, "
        f"greedy eval {ours['eval_deterministic']:.1f}",
        flush=True,
    )

    from benchmarks import purejaxrl_ppo

    ref_cfg = purejaxrl_ppo.RefConfig(total_timesteps=RETURN_STEPS)
    _, rm = jax.block_until_ready(jax.jit(jax.vmap(purejaxrl_ppo.make_train(ref_cfg)))(keys))
    ref_train = [
        last_episodes_mean(np.asarray(rm["episode_return"][i]), np.asarray(rm["episodes"][i]))
        for i in range(seeds)
    ]
    ref = {
        "seeds": seeds,
        "env_steps_per_seed": ref_cfg.env_steps,
        "train_last100": float(np.mean(ref_train)),
        "train_last100_per_seed": ref_train,
    }
    print(f"  PureJaxRL-style ({seeds} seeds) train-last-100 {ref['train_last100']:.1f}", flush=True)

    out: dict[str, Any] = {"ours": ours, "purejaxrl": ref, "sb3": None}
    if sb3_threads is None or budget.sb3_return_seeds == 0:
        return out
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(sb3_threads)
    train_r, eval_r, walls = [], [], []
    for seed in range(budget.sb3_return_seeds):
        model = make_sb3(seed)
        t0 = time.perf_counter()
        model.learn(total_timesteps=cfg.env_steps)
        walls.append(time.perf_counter() - t0)
        train_r.append(float(np.mean([ep["r"] for ep in model.ep_info_buffer])))
        eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=10_000 + seed)
        mean_r, _ = evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True)
        eval_r.append(float(mean_r))
    out["sb3"] = {
        "seeds": budget.sb3_return_seeds,
        "env_steps_per_seed": cfg.env_steps,
        "torch_threads": sb3_threads,
        "train_last100": float(np.mean(train_r)),
        "train_last100_per_seed": train_r,
        "eval_deterministic": float(np.mean(eval_r)),
        "eval_deterministic_per_seed": eval_r,
        "learn_wall_s_per_seed": walls,
    }
    print(
        f"  SB3 ({budget.sb3_return_seeds} seeds) train-last-100 {out['sb3']['train_last100']:.1f}, "
        f"greedy eval {out['sb3']['eval_deterministic']:.1f}",
        flush=True,
    )
    return out


def _run_in_subprocess(quick: bool, sb3: bool) -> dict[str, Any]:
    """Run this benchmark in a fresh process whose XLA_FLAGS carry the scheduler flag; return its payload."""
    env = with_cpu_workarounds_env()
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", f"benchmarks.{NAME}", "--out", out]
        cmd += ["--quick"] if quick else []
        cmd += [] if sb3 else ["--no-sb3"]
        subprocess.run(cmd, check=True, env=env, cwd=Path(__file__).resolve().parent.parent)
        data = json.loads((Path(out) / f"{NAME}.json").read_text())
    for k in ("benchmark", "machine", "quick"):
        data.pop(k, None)
    data["ran_in_subprocess"] = True
    return data


def run(quick: bool = False, *, sb3: bool = True) -> dict[str, Any]:
    """Time ours, the PureJaxRL-style reference and (if installed and ``sb3``) SB3; see the module docstring."""
    if not _FLAG_ACTIVE:
        return _run_in_subprocess(quick, sb3)
    budget = QUICK if quick else FULL
    rows = throughput_jax(budget)
    by_seeds = {r["seeds"]: r for r in rows}
    use_sb3 = sb3 and sb3_available()
    sb3_result = throughput_sb3(budget) if use_sb3 else None
    ref_seeds = 8 if 8 in by_seeds else max(by_seeds)
    ratios: dict[str, Any] = {
        "ours_over_purejaxrl": {str(s): r["ratio_ours_over_purejaxrl"] for s, r in by_seeds.items()},
        f"{SAME}_over_purejaxrl": {str(s): r[f"ratio_{SAME}_over_purejaxrl"] for s, r in by_seeds.items()},
    }
    if sb3_result is not None:
        sb3_rate = sb3_result["steps_per_s"]
        ratios[f"ours_over_sb3_{ref_seeds}_seeds"] = by_seeds[ref_seeds]["ours"]["steps_per_s"] / sb3_rate
        ratios[f"purejaxrl_over_sb3_{ref_seeds}_seeds"] = (
            by_seeds[ref_seeds]["purejaxrl"]["steps_per_s"] / sb3_rate
        )
        ratios["ours_over_sb3_1_seed"] = by_seeds[1]["ours"]["steps_per_s"] / sb3_rate
        print(
            f"ours/SB3 ({ref_seeds} seeds vs SB3 at {sb3_result['best_threads']} thread(s)): "
            f"{ratios[f'ours_over_sb3_{ref_seeds}_seeds']:.1f}x (goal >= 100x); PureJaxRL-style/SB3: "
            f"{ratios[f'purejaxrl_over_sb3_{ref_seeds}_seeds']:.1f}x",
            flush=True,
        )
    for key, label, note in (
        ("ours_over_purejaxrl", "ours", "defaults: also bootstraps truncations"),
        (f"{SAME}_over_purejaxrl", "ours, same algorithm", "floor >= 1.0x on the same work"),
    ):
        print(
            f"{label}/PureJaxRL-style: "
            + ", ".join(f"{s} seed(s) {r:.2f}x" for s, r in ratios[key].items())
            + f" ({note})",
            flush=True,
        )
    targets = {
        "floor_same_algorithm_ge_1": all(r >= 1.0 for r in ratios[f"{SAME}_over_purejaxrl"].values()),
        "default_ours_over_purejaxrl_ge_1": all(r >= 1.0 for r in ratios["ours_over_purejaxrl"].values()),
        "goal_ours_over_sb3_ge_100": (
            None if sb3_result is None else ratios[f"ours_over_sb3_{ref_seeds}_seeds"] >= 100.0
        ),
    }
    returns = None
    if budget.return_seeds:
        returns = final_returns(budget, sb3_result["best_threads"] if sb3_result else None)
    return {
        "env": "CartPole-v1",
        "config": dataclasses.asdict(PPOConfig()),
        "budget": dataclasses.asdict(budget),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": rows,
        "sb3": sb3_result,
        "sb3_skipped": None if use_sb3 else ("disabled" if not sb3 else "stable-baselines3 not installed"),
        "ratios": ratios,
        "targets": targets,
        "final_return": returns,
        "peers": ["PureJaxRL-style (benchmarks/purejaxrl_ppo.py)", "stable-baselines3 PPO (torch CPU)"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    sb3 = "--no-sb3" not in argv
    argv = [a for a in argv if a != "--no-sb3"]
    return cli_main(NAME, lambda quick: run(quick, sb3=sb3), argv)


if __name__ == "__main__":
    main()
