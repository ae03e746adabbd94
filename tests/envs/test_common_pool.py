"""Common-pool resource: stock dynamics and rewards vs hand computation, egocentric observations, collapse and
auto-reset, vmap over params, bad constructor arguments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.common_pool import CommonPool
from jaxsafety.config import ConfigError

KEY = jax.random.key(0)


def test_one_step_matches_the_hand_computed_dynamics():
    env = CommonPool(num_players=3, num_levels=5)
    params = env.default_params  # g 0.5, C 100, S0 50, max extraction 2 * (0.5 * 100 / 4) / 3 = 25 / 3
    obs, state = env.reset(KEY, params)
    np.testing.assert_allclose(np.asarray(obs[:, 0]), [0.5, 0.5, 0.5])
    assert obs.shape == (3, 16) and np.asarray(obs[:, 1:]).sum() == 0
    obs, state, rewards, done, _ = jax.jit(env.step)(KEY, state, jnp.array([1, 2, 4]), params)
    asked = [25 / 3 * 1 / 4, 25 / 3 * 2 / 4, 25 / 3]  # 14.58 in all < 50: no rationing
    left = 50 - sum(asked)
    stock = left + 0.5 * left * (1 - left / 100)
    np.testing.assert_allclose(np.asarray(rewards), asked, rtol=1e-6)
    np.testing.assert_allclose(float(state.stock), stock, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(obs[:, 0]), [stock / 100] * 3, rtol=1e-6)
    assert not bool(done)
    # egocentric one-hot levels: player 1 sees players 1, 2, 0 -> levels 2, 4, 1
    levels = np.asarray(obs[:, 1:]).reshape(3, 3, 5).argmax(-1)
    np.testing.assert_array_equal(levels, [[1, 2, 4], [2, 4, 1], [4, 1, 2]])


def test_requests_beyond_the_stock_are_rationed_and_collapse_resets():
    env = CommonPool(num_players=3, num_levels=5)
    params = env.default_params.replace(initial_stock=jnp.float32(10.0))
    _, state = env.reset(KEY, params)
    obs, state, rewards, done, info = env.step(KEY, state, jnp.array([4, 4, 2]), params)
    # asked 25/3, 25/3, 25/6 = 20.83 > 10: everyone gets 10 / 20.83 of its request, the stock is emptied
    scale = 10 / (25 / 3 + 25 / 3 + 25 / 6)
    np.testing.assert_allclose(np.asarray(rewards), np.array([25 / 3, 25 / 3, 25 / 6]) * scale, rtol=1e-5)
    assert bool(done) and float(info["stock"]) == 0.0
    assert float(state.stock) == 10.0 and int(state.t) == 0 and np.all(np.asarray(state.last_levels) == -1)
    assert np.asarray(obs[:, 1:]).sum() == 0 and np.asarray(info["final_observation"][:, 1:]).sum() == 9


def test_horizon_ends_the_episode_and_vmap_over_params():
    env = CommonPool(num_players=2, num_levels=3, horizon=2)
    base = env.default_params
    rates = jnp.array([0.1, 0.5, 0.9])
    params = jax.vmap(lambda g: base.replace(growth_rate=g))(rates)
    _, state = jax.vmap(env.reset, in_axes=(None, 0))(KEY, params)
    step = jax.jit(jax.vmap(env.step, in_axes=(None, 0, None, 0)))
    _, s1, _, d1, _ = step(KEY, state, jnp.array([1, 0]), params)
    _, _, _, d2, _ = step(KEY, s1, jnp.array([1, 0]), params)
    assert not np.any(np.asarray(d1)) and np.all(np.asarray(d2))
    for b, g in enumerate([0.1, 0.5, 0.9]):
        left = 50 - 12.5 / 2  # level 1 of 3 asks half of max extraction 2 * 12.5 / 2
        np.testing.assert_allclose(float(s1.stock[b]), left + g * left * (1 - left / 100), rtol=1e-6)
        _, single, _, _, _ = env.step(
            KEY,
            env.reset(KEY, base.replace(growth_rate=jnp.float32(g)))[1],
            jnp.array([1, 0]),
            base.replace(growth_rate=jnp.float32(g)),
        )
        np.testing.assert_allclose(float(s1.stock[b]), float(single.stock), rtol=1e-6)


def test_bad_constructor_args_raise_config_error():
    with pytest.raises(ConfigError, match=r"^num_levels=1 is invalid: accepted values are integers >= 2"):
        CommonPool(num_levels=1)
    with pytest.raises(ConfigError, match=r"^num_players=1 is invalid"):
        CommonPool(num_players=1)


@pytest.mark.parametrize("shape", [(3, 1), (2,), (4, 3)])
def test_step_rejects_actions_not_shaped_one_per_player(shape):
    """A [N, 1] column would broadcast silently and a batch [B, N] belongs under vmap: both raise when traced."""
    env = CommonPool(num_players=3, num_levels=5)
    _, state = env.reset(KEY, env.default_params)
    with pytest.raises(AssertionError, match=r"CommonPool.step: actions must be \[num_players\] = \(3,\)"):
        jax.jit(env.step)(KEY, state, jnp.ones(shape, jnp.int32), env.default_params)
