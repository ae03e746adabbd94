"""DiCE / LOLA-DiCE against exact finite-horizon values and derivatives: every sampled estimate is compared with the
exact quantity within a few of its own standard errors, and each test also checks that the wrong answer (e.g. the
naive direction instead of LOLA's) would be rejected at that tolerance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.tensor_game import ipd, memory_one_return_finite
from jaxsafety.config import ConfigError
from jaxsafety.shaping import (
    LearnerSpec,
    LOLAConfig,
    always,
    dice_lola_grads,
    dice_naive_grads,
    dice_objective,
    lola_grads,
    make_dice_learning,
    naive_grads,
    sample_episodes,
)
from jaxsafety.shaping.dice import episode_log_probs

GAMMA = 0.9


def _thetas(n: int, seed: int = 1) -> jax.Array:
    return 0.7 * jax.random.normal(jax.random.key(seed), (n, 2**n + 1))


def _exact_value_fn(payoffs: jax.Array, horizon: int):
    return lambda th: memory_one_return_finite(payoffs, jax.nn.sigmoid(th), GAMMA, horizon)


def _mean_and_se(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return samples.mean(0), samples.std(0, ddof=1) / np.sqrt(samples.shape[0])


@pytest.mark.parametrize("n", [2, 3])
def test_rollout_matches_exact_finite_return_and_env_states(n: int):
    horizon, batch = 6, 3000
    payoffs, thetas = ipd(n), _thetas(n)
    sample = jax.jit(lambda k: sample_episodes(payoffs, thetas, k, batch=batch, horizon=horizon))
    ep = sample(jax.random.key(0))
    assert ep.rewards.shape == ep.log_probs.shape == ep.states.shape == (horizon, batch, n)
    np.testing.assert_array_equal(np.asarray(sample(jax.random.key(0)).actions), np.asarray(ep.actions))

    # discounted average return: sample mean within 3 standard errors of the exact Markov-chain value
    w = GAMMA ** np.arange(horizon)
    returns = np.einsum("t,tbn->bn", w / w.sum(), np.asarray(ep.rewards, np.float64))
    mean, se = _mean_and_se(returns)
    exact = np.asarray(memory_one_return_finite(payoffs, jax.nn.sigmoid(thetas), GAMMA, horizon))
    assert np.all(np.abs(mean - exact) <= 3 * se), (mean, exact, se)

    # states, rewards and log-probs by brute force: s_i = sum_j a_{(i+j) mod N} 2^(N-1-j), start = 2^N
    states, actions = np.asarray(ep.states), np.asarray(ep.actions)
    assert np.all(states[0] == 2**n)
    rot = (np.arange(n)[:, None] + np.arange(n)[None, :]) % n  # rot[i, j] = (i + j) mod N
    ego = np.einsum("tbij,j->tbi", actions[:-1][:, :, rot], 2 ** (n - 1 - np.arange(n)))
    np.testing.assert_array_equal(states[1:], ego)
    others = actions.sum(-1, keepdims=True) - actions
    np.testing.assert_array_equal(np.asarray(ep.rewards), np.asarray(payoffs)[actions, others])
    coop = 1 / (1 + np.exp(-np.asarray(thetas, np.float64)))[np.arange(n), states]
    np.testing.assert_allclose(
        np.asarray(ep.log_probs), np.log(np.where(actions == 0, coop, 1 - coop)), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("n", [2, 3])
def test_dice_naive_gradient_is_unbiased_and_baseline_reduces_variance(n: int):
    horizon, batch, num_keys = 4, 8, 1500
    payoffs, thetas = ipd(n), _thetas(n)
    keys = jax.random.split(jax.random.key(2), num_keys)

    def both(key):
        with_baseline = dice_naive_grads(payoffs, thetas, key, batch=batch, horizon=horizon, gamma=GAMMA)
        ep = sample_episodes(payoffs, thetas, key, batch=batch, horizon=horizon)
        plain = naive_grads(
            lambda t: dice_objective(
                episode_log_probs(t, ep.states, ep.actions), ep.rewards, GAMMA, baseline=False
            ),
            thetas,
        )
        return with_baseline, plain

    est, plain = (np.asarray(x, np.float64) for x in jax.jit(jax.vmap(both))(keys))
    value_fn = _exact_value_fn(payoffs, horizon)
    exact = np.stack(
        [-np.asarray(jax.jit(jax.grad(lambda th, i=i: value_fn(th)[i]))(thetas))[i] for i in range(n)]
    )  # grad_i L_i, L = -V
    mean, se = _mean_and_se(est)
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-5)
    assert np.max(np.abs(exact) - 4 * se) > 0  # the test has power: a zero gradient would be rejected
    mean_plain, se_plain = _mean_and_se(plain)
    np.testing.assert_array_less(np.abs(mean_plain - exact), 4 * se_plain + 1e-5)
    assert np.sum(se**2) < 0.5 * np.sum(se_plain**2), (np.sum(se**2), np.sum(se_plain**2))


@pytest.mark.parametrize("look_ahead", [False, True])
def test_lola_dice_matches_exact_lola_on_finite_horizon_value(look_ahead: bool):
    n, horizon, batch, num_keys = 3, 3, 16, 4000
    payoffs, thetas = ipd(n), _thetas(n)
    cfg = LOLAConfig(alpha=30.0, look_ahead=look_ahead)
    keys = jax.random.split(jax.random.key(3), num_keys)
    est = jax.jit(
        jax.vmap(
            lambda k: dice_lola_grads(
                payoffs, thetas, k, batch=batch, horizon=horizon, gamma=GAMMA, config=cfg
            )
        )
    )(keys)
    mean, se = _mean_and_se(np.asarray(est, np.float64))
    value_fn = _exact_value_fn(payoffs, horizon)
    exact, naive = (
        np.asarray(x)
        for x in jax.jit(lambda t: (lola_grads(value_fn, t, cfg), naive_grads(value_fn, t)))(thetas)
    )
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-5)
    # power: the exact naive direction (no second-order term) would fail the same check
    assert np.max(np.abs(mean - naive) - 4 * se) > 0


def test_make_dice_learning_naive_ipd_defects_and_exploits_cooperator():
    """Thresholds measured over 8 key sets (this AMD EPYC): the pair's cooperation fell by 0.34-0.42 (> 0.2) and
    its value by 0.45-0.51 (> 0.3); the single learner's value rose by 0.491-0.494 (> 0.4)."""
    horizon, batch = 8, 16
    payoffs = ipd(2)
    inits = 0.5 * jax.random.normal(jax.random.key(4), (4, 2, 5))
    keys = jax.random.split(jax.random.key(5), 4)
    # two naive learners in the IPD drift towards mutual defection (values towards P = 1)
    run = make_dice_learning(
        payoffs, [LearnerSpec("naive", lr=5.0)] * 2, 60, batch=batch, horizon=horizon, gamma=GAMMA
    )
    final, hist = jax.jit(jax.vmap(run))(inits, keys)
    assert hist["values"].shape == (4, 61, 2) and hist["thetas"].shape == (4, 61, 2, 5)
    np.testing.assert_allclose(
        np.asarray(hist["values"][:, 0]),
        np.asarray(jax.vmap(_exact_value_fn(payoffs, horizon))(inits)),
        rtol=1e-6,
    )
    coop = np.asarray(jax.nn.sigmoid(hist["thetas"]))
    assert coop[:, -1].mean() < coop[:, 0].mean() - 0.2, (coop[:, 0].mean(), coop[:, -1].mean())
    assert float(hist["values"][:, -1].mean()) < float(hist["values"][:, 0].mean()) - 0.3
    np.testing.assert_array_equal(np.asarray(final), np.asarray(hist["thetas"][:, -1]))

    # a single naive learner against a fixed all-cooperator learns to defect: its value rises towards T = 3
    allc = np.log(always(2, True) / (1 - always(2, True)))
    thetas0 = jnp.stack([jnp.zeros(5), jnp.asarray(allc, jnp.float32)])
    run = make_dice_learning(
        payoffs,
        [LearnerSpec("naive", lr=5.0), LearnerSpec("fixed")],
        60,
        batch=batch,
        horizon=horizon,
        gamma=GAMMA,
    )
    _, hist = jax.jit(run)(thetas0, jax.random.key(6))
    np.testing.assert_array_equal(np.asarray(hist["thetas"][-1, 1]), np.asarray(thetas0[1]))
    assert float(hist["values"][-1, 0]) > float(hist["values"][0, 0]) + 0.4


def test_make_dice_learning_lola_step_uses_lola_dice_rows():
    """One update of a [LOLA, naive, fixed] trio equals theta - lr * (the matching rows of dice_lola_grads /
    dice_naive_grads) on the same samples."""
    n, horizon, batch = 3, 3, 8
    payoffs, thetas0 = ipd(n), _thetas(n, seed=7)
    cfg = LOLAConfig(alpha=2.0)
    learners = [LearnerSpec("lola", lr=3.0, lola=cfg), LearnerSpec("naive", lr=2.0), LearnerSpec("fixed")]
    run = make_dice_learning(payoffs, learners, 1, batch=batch, horizon=horizon, gamma=GAMMA)
    key = jax.random.key(8)
    final, _ = jax.jit(run)(thetas0, key)
    sub = jax.random.split(key, 1)[0]

    def directions(k):
        kw = dict(batch=batch, horizon=horizon, gamma=GAMMA)
        # alpha = 0: the naive rows of the same split-batch estimate
        return dice_lola_grads(payoffs, thetas0, k, config=cfg, **kw), dice_lola_grads(
            payoffs, thetas0, k, config=LOLAConfig(alpha=0.0), **kw
        )

    lola, zero = jax.jit(directions)(sub)
    expected = np.asarray(thetas0) - np.array([3.0, 2.0, 0.0])[:, None] * np.stack(
        [lola[0], zero[1], zero[2]]
    )
    np.testing.assert_allclose(np.asarray(final), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(lola[0]), np.asarray(zero[0]), atol=1e-4)


def test_config_errors():
    payoffs, thetas, key = ipd(2), _thetas(2), jax.random.key(0)
    with pytest.raises(ConfigError, match=r"^batch=1 is invalid: accepted values are integers >= 2"):
        dice_naive_grads(payoffs, thetas, key, batch=1, horizon=3, gamma=GAMMA)
    with pytest.raises(ConfigError, match=r"^batch=3 is invalid: accepted values are integers >= 4"):
        dice_lola_grads(payoffs, thetas, key, batch=3, horizon=3, gamma=GAMMA)
    with pytest.raises(ConfigError, match=r"^horizon=0 is invalid: accepted values are integers >= 1"):
        sample_episodes(payoffs, thetas, key, batch=4, horizon=0)
    with pytest.raises(
        ConfigError, match=r"^gamma=1.5 is invalid: accepted values are numbers >= 0 and <= 1"
    ):
        make_dice_learning(payoffs, [LearnerSpec()] * 2, 3, batch=4, horizon=3, gamma=1.5)
    with pytest.raises(ConfigError, match=r"^batch=2 is invalid"):
        make_dice_learning(payoffs, [LearnerSpec("lola")] * 2, 3, batch=2, horizon=3, gamma=GAMMA)
    with pytest.raises(
        ConfigError, match=r"^learners=3 is invalid: accepted values are one LearnerSpec per player"
    ):
        make_dice_learning(payoffs, [LearnerSpec()] * 3, 3, batch=4, horizon=3, gamma=GAMMA)
    with pytest.raises(ConfigError, match=r"^num_updates=0 is invalid"):
        make_dice_learning(payoffs, [LearnerSpec()] * 2, 0, batch=4, horizon=3, gamma=GAMMA)
