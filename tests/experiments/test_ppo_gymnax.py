"""experiments/ppo_gymnax.py end to end, as a user runs it (a subprocess), and its checkpoint read back."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxsafety.config import config_from_dict
from jaxsafety.rl import PPOConfig
from jaxsafety.rl.presets import ENV_PRESETS, load_policy, ppo_fields
from tests.experiments.script_runner import parse_experiment_cli, run_experiment


def _run(*args: str) -> subprocess.CompletedProcess:
    return run_experiment("ppo_gymnax.py", *args, timeout=900)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("runs")
    out = _run("--smoke", "--out-dir", str(out_dir), "--run-name", "r1")
    assert out.returncode == 0, out.stderr
    for phase in ("compiling", "compiled in", "trained in", "env steps/s", "final return"):
        assert phase in out.stdout, out.stdout
    return out_dir / "ppo_gymnax" / "r1"


def test_smoke_writes_results_logs_plot_checkpoint(smoke_run: Path):
    res = json.loads((smoke_run / "results.json").read_text())
    cfg = json.loads((smoke_run / "config.json").read_text())
    assert cfg["env"] == res["env"] == "CartPole-v1" and cfg["num_seeds"] == res["num_seeds"] == 2
    steps = res["env_steps_per_seed"]
    assert steps == cfg["total_timesteps"] == 20_480
    # learned, not just ran: a random policy balances ~22 steps. Measured with the smoke config over --seed 0-11
    # (2 seeds each; this AMD EPYC): final return 66-91 (> 45: margin 21), greedy eval 165-414, the logged curve
    # from 20-23 at the first update to 61-98 at the last.
    assert res["final_return_mean"] > 45 and len(res["final_return_per_seed"]) == 2
    assert res["eval_return_mean"] > 45
    assert res["sps"] > 0 and res["compile_seconds"] > 0 and res["train_seconds"] > 0
    assert (smoke_run / "learning_curve.png").stat().st_size > 5000
    assert (smoke_run / "checkpoints" / str(steps)).is_dir()

    ea = EventAccumulator(str(smoke_run), size_guidance={"scalars": 0})
    ea.Reload()
    tags = ea.Tags()["scalars"]
    for tag in (
        "train/episode_return",
        "train/episode_return/min",
        "train/episode_return/max",
        "train/episode_length",
        "train/policy_loss",
        "train/value_loss",
        "train/entropy",
        "train/approx_kl",
        "train/clip_fraction",
        "perf/sps",
        "eval/return_mean",
    ):
        assert tag in tags, tag
    curve = ea.Scalars("train/episode_return")
    assert [e.step for e in curve] == list(range(512, steps + 1, 512))  # x axis: env steps, every update
    assert curve[-1].value > curve[0].value
    assert ea.Scalars("perf/sps")[0].value == pytest.approx(res["sps"], rel=1e-5)


def test_checkpoint_restores_the_evaluated_policy(smoke_run: Path):
    """The policy read back from the orbax checkpoint (with its PPO config) reproduces the run's greedy
    evaluation."""
    import jax

    from jaxsafety.rl import make_evaluate

    cfg, params, obs_rms = load_policy(smoke_run)
    run_cfg = json.loads((smoke_run / "config.json").read_text())
    assert cfg == config_from_dict(PPOConfig, ppo_fields(run_cfg))
    num_seeds = run_cfg["num_seeds"]
    assert jax.tree.leaves(params)[0].shape[0] == obs_rms.count.shape[0] == num_seeds
    evaluate = jax.jit(jax.vmap(make_evaluate(cfg, run_cfg["eval_episodes"])))
    keys = jax.random.split(jax.random.key(run_cfg["seed"] + 1), num_seeds)
    ret = np.asarray(evaluate(params, obs_rms, keys))
    res = json.loads((smoke_run / "results.json").read_text())
    assert ret.mean() == pytest.approx(res["eval_return_mean"], rel=0.02)


def test_bad_flags_exit_with_one_line_before_writing(tmp_path: Path):
    out = _run("--num-seeds", "0", "--out-dir", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip() == "error: num_seeds=0 is invalid: accepted values are integers >= 1"
    assert not any(tmp_path.iterdir())

    cases = {
        ("--env", "Pendulum-v1", "--action-kind", "discrete"): (
            "action_kind='discrete' is invalid: accepted values are 'auto', 'gaussian' or 'tanh' for a continuous "
            "action space"
        ),
        ("--env", "Pendulum-v1", "--seeds-per-call", "3"): (
            "seeds_per_call=3 is invalid: accepted values are 0 or divisors of num_seeds (4)"
        ),
        ("--env", "CartPole-v2"): "env='CartPole-v2' is invalid: accepted values are one of 'CartPole-v1'",
        (
            "--smoke",
            "--final-updates",
            "50",
        ): "final_updates=50 is invalid: accepted values are integers >= 1 and <= 40",
    }
    for argv, message in cases.items():
        code, _, err = parse_experiment_cli("ppo_gymnax.py", *argv, "--out-dir", str(tmp_path))
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir())


def _config(*argv: str) -> dict:
    code, out, err = parse_experiment_cli("ppo_gymnax.py", *argv, "--print-config")
    assert code == 0, err
    return json.loads(out)


def test_env_flag_picks_tuned_preset_and_flags_override():
    """``--env`` starts from jaxsafety.rl.presets.ENV_PRESETS (4 seeds for Pendulum-v1), flags override it."""
    pendulum = ENV_PRESETS["Pendulum-v1"]
    cfg = _config("--env", "Pendulum-v1", "--lr", "3e-4")
    assert config_from_dict(PPOConfig, ppo_fields(cfg)) == dataclasses.replace(pendulum, lr=3e-4)
    assert cfg["num_seeds"] == 4
    smoke = _config("--env=Pendulum-v1", "--smoke")
    assert (smoke["gamma"], smoke["scale_rewards"], smoke["num_seeds"]) == (0.9, True, 2)
    assert smoke["total_timesteps"] < pendulum.total_timesteps
    default = _config("--num-seeds", "3")
    assert config_from_dict(PPOConfig, ppo_fields(default)) == ENV_PRESETS["CartPole-v1"] == PPOConfig()
    assert (default["env"], default["num_seeds"], default["total_timesteps"]) == ("CartPole-v1", 3, 500_000)


@pytest.mark.slow
def test_pendulum_smoke_in_seed_chunks(tmp_path: Path):
    out = _run(
        "--env",
        "Pendulum-v1",
        "--smoke",
        "--seeds-per-call",
        "1",
        "--out-dir",
        str(tmp_path),
        "--run-name",
        "p",
    )
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "ppo_gymnax" / "p" / "results.json").read_text())
    assert res["seeds_per_call"] == 1 and res["num_seeds"] == 2 and res["env"] == "Pendulum-v1"
    assert -1700 < res["final_return_mean"] < 0
