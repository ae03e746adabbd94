"""PPO end to end on gymnax: learning, determinism, vmapped seeds, the vectorised env step, config errors."""

from __future__ import annotations

import re

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.rl import PPOConfig, make_train
from jaxsafety.rl.ppo import make_evaluate, make_vec_env


def final_return(metrics: dict, last: int = 10) -> np.ndarray:
    """Mean training episode return over the last ``last`` updates (per seed when there is a seed axis)."""
    return np.nanmean(np.asarray(metrics["episode_return"])[..., -last:], axis=-1)


# ---------------------------------------------------------------------------------------------------------------
# config validation


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"env": "CartPole-v9"}, "env='CartPole-v9' is invalid: accepted values are one of 'CartPole-v1', "),
        ({"num_envs": 0}, "num_envs=0 is invalid: accepted values are integers >= 1"),
        (
            {"num_minibatches": 3},
            "num_minibatches=3 is invalid: accepted values are divisors of num_envs * num_steps",
        ),
        (
            {"total_timesteps": 100},
            "total_timesteps=100 is invalid: accepted values are integers >= num_envs",
        ),
        ({"gamma": 1.5}, "gamma=1.5 is invalid: accepted values are numbers >= 0 and <= 1"),
        ({"clip_eps": 0.0}, "clip_eps=0.0 is invalid: accepted values are numbers > 0"),
        ({"lr": -1e-3}, "lr=-0.001 is invalid: accepted values are numbers > 0"),
        ({"hidden": ()}, "hidden=() is invalid: accepted values are non-empty tuples of integers >= 1"),
        (
            {"activation": "sigmoid"},
            "activation='sigmoid' is invalid: accepted values are one of 'tanh', 'relu'",
        ),
        (
            {"action_kind": "beta"},
            "action_kind='beta' is invalid: accepted values are one of 'auto', 'discrete'",
        ),
        (
            {"action_kind": "tanh"},
            "action_kind='tanh' is invalid: accepted values are 'auto' or 'discrete' for a discrete action space",
        ),
        (
            {"env": "Pendulum-v1", "action_kind": "discrete"},
            "action_kind='discrete' is invalid: accepted values are 'auto', 'gaussian' or 'tanh' for a continuous",
        ),
    ],
)
def test_config_validation_names_field_and_accepted_values(kwargs: dict, message: str):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        PPOConfig(**kwargs)


def test_config_derived_sizes():
    cfg = PPOConfig(num_envs=8, num_steps=64, total_timesteps=10_000, num_minibatches=8)
    assert (cfg.num_updates, cfg.minibatch_size, cfg.env_steps) == (19, 64, 19 * 512)


# ---------------------------------------------------------------------------------------------------------------
# the vectorised, auto-resetting env step


@pytest.mark.parametrize("name,steps", [("CartPole-v1", 120), ("Pendulum-v1", 450)])
def test_vec_env_matches_gymnax_step(name: str, steps: int):
    """Precomputed reset states (make_vec_env) give exactly what gymnax's own auto-resetting step gives with the
    same per-env keys, through terminations (CartPole) and time-limit truncations (Pendulum, 200 steps)."""
    env, params = gymnax.make(name)
    n = 3
    venv = make_vec_env(env, params, n)
    space = env.action_space(params)
    key_reset, key_steps, key_act = jax.random.split(jax.random.key(0), 3)
    actions = jnp.stack([jax.vmap(space.sample)(k) for k in jax.random.split(key_act, (steps, n))])

    @jax.jit
    def ours():
        obs, state = venv.reset(key_reset)

        def body(state, xs):
            env_xs, action = xs
            out = venv.step(env_xs, state, action)
            return out[1], (out[0], out[2], out[3], out[4], out[5])

        return obs, jax.lax.scan(body, state, (venv.prepare(key_steps, steps), actions))[1]

    @jax.jit
    def reference():
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key_reset, n), params)
        keys = jax.random.split(key_steps, steps * n).reshape(steps, n)

        def body(state, xs):
            k, action = xs
            o, state, r, term, trunc, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                k, state, action, params
            )
            return state, (o.reshape(n, -1), r, term, trunc, info["final_observation"].reshape(n, -1))

        return obs.reshape(n, -1), jax.lax.scan(body, state, (keys, actions))[1]

    (obs0, got), (ref_obs0, ref) = ours(), reference()
    np.testing.assert_array_equal(np.asarray(obs0), np.asarray(ref_obs0))
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    terminated, truncated = np.asarray(got[2]), np.asarray(got[3])
    if name == "CartPole-v1":
        assert terminated.sum() > 3
    else:
        assert truncated.sum() == 2 * n and not terminated.any()
        # at a truncation the next observation is a fresh reset, the final observation is where it stopped
        t = np.argwhere(truncated)[0]
        assert not np.allclose(np.asarray(got[0])[tuple(t)], np.asarray(got[4])[tuple(t)])


# ---------------------------------------------------------------------------------------------------------------
# training


@pytest.fixture(scope="module")
def cartpole():
    """Default hyperparameters, 5e4 env steps, one jitted train function (compiled once for the module)."""
    cfg = PPOConfig(total_timesteps=50_000)
    train = jax.jit(make_train(cfg))
    runner, metrics = train(jax.random.key(0))
    return cfg, train, runner, metrics


def test_cartpole_short_run_clearly_improves(cartpole):
    """Thresholds from 10 seeds (keys 0, 1 and split(key(123), 8); this AMD EPYC with its default ISA and with
    --xla_cpu_max_isa=AVX2 / SSE4_2, which change the float reassociation and so the trajectories): the mean return
    of the first 5 updates was 23-28 (< 40; a random policy balances ~22 steps), of the last 10 updates 167-254
    (> 100: a margin of 67, and 3 x first <= 84). The entropy started at 0.6929-0.6931 and ended at 0.57-0.59."""
    cfg, _, _, metrics = cartpole
    ret = np.asarray(metrics["episode_return"])
    assert ret.shape == (cfg.num_updates,)
    first, last = np.nanmean(ret[:5]), final_return(metrics)
    assert first < 40  # a random policy balances ~22 steps
    assert last > 100 and last > 3 * first, (first, last)
    np.testing.assert_array_equal(np.asarray(metrics["env_steps"]), 512 * (np.arange(cfg.num_updates) + 1))
    for name in (
        "loss",
        "policy_loss",
        "value_loss",
        "entropy",
        "approx_kl",
        "approx_kl_k1",
        "clip_fraction",
    ):
        assert metrics[name].shape == (cfg.num_updates,) and np.isfinite(np.asarray(metrics[name])).all(), (
            name
        )
    assert np.asarray(metrics["approx_kl"]).min() >= 0.0  # k3 is non-negative
    assert (
        np.asarray(metrics["clip_fraction"]).min() >= 0.0
        and np.asarray(metrics["clip_fraction"]).max() <= 1.0
    )
    ent = np.asarray(metrics["entropy"])
    assert (
        ent[0] == pytest.approx(np.log(2.0), abs=0.01) and ent[-1] < ent[0]
    )  # starts uniform over 2 actions


def test_same_key_same_metrics(cartpole):
    _, train, _, metrics = cartpole
    _, again = train(jax.random.key(0))
    for k in metrics:
        np.testing.assert_array_equal(np.asarray(again[k]), np.asarray(metrics[k]), err_msg=k)


def test_evaluate_trained_policy(cartpole):
    """The greedy policy after the 5e4-step run: its mean return over 8 episodes was 225-478 over the 10 seeds of
    the test above (ISAs likewise), so the threshold 100 leaves a margin of 125."""
    cfg, _, runner, _ = cartpole
    evaluate = jax.jit(make_evaluate(cfg, num_episodes=8))
    ret = np.asarray(evaluate(runner.params, runner.obs_rms, jax.random.key(5)))
    assert ret.shape == (8,) and (ret >= 1).all() and (ret <= 500).all()
    assert ret.mean() > 100  # the greedy policy is at least as good as the training curve's end
    np.testing.assert_array_equal(np.asarray(evaluate(runner.params, runner.obs_rms, jax.random.key(5))), ret)


def test_vmapped_seeds_equal_individual_runs(cartpole):
    """jit(vmap(train)) over two keys gives each key's individual run, compared where the computation is not
    chaotic: the first update (rollout of the initial policy, 4 epochs x 4 minibatches of Adam). The batched
    matmuls reassociate float sums differently from the unbatched ones (and differently on each CPU), and PPO
    amplifies such differences from update to update: measured max |batched - single| / (1e-3 + |single|) over
    all metrics was 6e-8 at the first update (1.3e-7 with --xla_cpu_max_isa=SSE4_2), 9e-6 to 4e-5 at the second
    and 1e-4 to 3e-4 by the third (this AMD EPYC); an Intel Xeon differed at 8 of 97 updates in approx_kl by up
    to 2.5x. So later updates are compared only in distribution: the batched seeds learn like single runs."""
    cfg, train, _, metrics0 = cartpole
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    _, batched = jax.jit(jax.vmap(make_train(cfg)))(keys)
    _, metrics1 = train(jax.random.key(1))
    for i, single in enumerate((metrics0, metrics1)):
        for k in single:
            assert batched[k].shape == (2, *single[k].shape), k
            np.testing.assert_allclose(
                np.asarray(batched[k][i, 0]),
                np.asarray(single[k][0]),
                rtol=1e-5,
                atol=1e-7,
                err_msg=f"seed {i}: {k}",
            )
    assert not np.allclose(np.asarray(batched["loss"][0, 0]), np.asarray(batched["loss"][1, 0]))
    # the thresholds of test_cartpole_short_run_clearly_improves, per batched seed
    assert (final_return(batched) > 100).all(), final_return(batched)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action_kind": "gaussian", "normalize_obs": True, "scale_rewards": True},
        {"action_kind": "tanh", "bootstrap_truncation": False},
    ],
)
def test_continuous_control_runs(kwargs: dict):
    cfg = PPOConfig(env="Pendulum-v1", num_envs=4, num_steps=64, total_timesteps=4 * 64 * 4, **kwargs)
    runner, metrics = jax.jit(make_train(cfg))(jax.random.key(0))
    for k, v in metrics.items():
        assert np.isfinite(np.asarray(v)).all() or k in ("episode_return", "episode_length"), k
    assert np.asarray(metrics["action_std"]).shape == (4,)
    assert np.asarray(metrics["episode_length"])[-1] == 200  # Pendulum episodes end only by truncation
    if cfg.normalize_obs:
        assert float(runner.obs_rms.count) == pytest.approx(cfg.env_steps, rel=1e-3)
    ret = np.asarray(
        jax.jit(make_evaluate(cfg, num_episodes=2))(runner.params, runner.obs_rms, jax.random.key(1))
    )
    assert ret.shape == (2,) and (ret <= 0).all() and (ret > -16.3 * 200).all()


# ---------------------------------------------------------------------------------------------------------------
# full-length runs


@pytest.mark.slow
def test_cartpole_solved_with_default_hyperparameters():
    """Issue 5 acceptance: mean final return >= 475 over 4 vmapped seeds within 5e5 env steps. Measured over 16
    seeds (split(key(g), 4) for g = 0-3, this AMD EPYC, default ISA and --xla_cpu_max_isa=SSE4_2): every seed's
    last-10-update return was 500 (the cap)."""
    cfg = PPOConfig()
    assert cfg.env_steps <= 500_000
    _, metrics = jax.jit(jax.vmap(make_train(cfg)))(jax.random.split(jax.random.key(0), 4))
    per_seed = final_return(metrics)
    assert per_seed.mean() >= 475, per_seed


@pytest.mark.slow
def test_pendulum_learned_with_preset():
    """The experiment's Pendulum-v1 preset: mean final training return over 4 seeds above -300 (random: ~-1200;
    rl-baselines3-zoo's tuned SB3 PPO: -172 +- 104 with its deterministic policy). Measured over 12 seeds
    (split(key(g), 4) for g = 0-2, this AMD EPYC): the 4-seed means of the final return were -192 to -172 and of
    the greedy return -190 to -185 (single seeds -224 to -162 and -237 to -129): a margin of over 100."""
    from jaxsafety.rl.presets import ENV_PRESETS

    cfg = ENV_PRESETS["Pendulum-v1"]
    runner, metrics = jax.jit(jax.vmap(make_train(cfg)))(jax.random.split(jax.random.key(0), 4))
    per_seed = final_return(metrics, last=5)
    assert per_seed.mean() >= -300, per_seed
    evaluate = jax.jit(jax.vmap(make_evaluate(cfg, num_episodes=16)))
    greedy = np.asarray(evaluate(runner.params, runner.obs_rms, jax.random.split(jax.random.key(1), 4)))
    assert greedy.mean() >= -300, greedy.mean(1)
