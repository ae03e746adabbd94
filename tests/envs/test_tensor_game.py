"""Tensor game: payoff presets vs hand tables, rewards and egocentric observations by hand, exact memory-one
returns vs a float64 brute force, Monte Carlo rollouts of the env, and finite differences."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.tensor_game import (
    TensorGame,
    TensorGameParams,
    chicken,
    ipd,
    memory_one_return,
    memory_one_return_finite,
    public_goods,
    snowdrift,
    stag_hunt,
    tragedy,
)
from jaxsafety.config import ConfigError

KEY = jax.random.key(0)


def test_presets_match_hand_tables_for_three_players():
    # rows C, D; columns: 0, 1, 2 other defectors (worked out by hand from each docstring's definition)
    expected = {
        "ipd": [[4, 2, 0], [5, 3, 1]],  # Souly et al. 2023
        "stag_hunt": [[3, 3, 0], [2, 2, 2]],  # stag needs >= 2 of 3 hunters
        "snowdrift": [
            [4 - 2 / 3, 3, 2],
            [4, 4, 0],
        ],  # b - c / cooperators; defectors free-ride on >= 1 cooperator
        "tragedy": [[4.5, 3.5, 2.5], [7, 5, 3]],  # x (7.5 - total herd), herd = 2 + k + x
        "public_goods": [[2, 4 / 3, 2 / 3], [1 + 4 / 3, 1 + 2 / 3, 1]],  # r = 2, pot shared by 3
    }
    got = {
        "ipd": ipd(3),
        "stag_hunt": stag_hunt(3),
        "snowdrift": snowdrift(3),
        "tragedy": tragedy(3),
        "public_goods": public_goods(3, 2.0),
    }
    for name, table in expected.items():
        np.testing.assert_allclose(np.asarray(got[name]), np.array(table), rtol=1e-6, err_msg=name)
        assert got[name].shape == (2, 3) and got[name].dtype == jnp.float32
    np.testing.assert_array_equal(chicken(4), snowdrift(4))
    # two players reduce to the classic 2x2 orderings (T > R > P > S for the PD, T > R > S > P for chicken)
    (r, s), (t, p) = np.asarray(ipd(2))
    assert t > r > p > s
    (r, s), (t, p) = np.asarray(snowdrift(2))
    assert t > r > s > p


def test_presets_reject_bad_arguments_naming_the_field():
    with pytest.raises(ConfigError, match=r"^r=3\.0 is invalid: accepted values are numbers > 1 and < 3"):
        public_goods(3, 3.0)
    with pytest.raises(ConfigError, match=r"^num_players=1 is invalid"):
        ipd(1)
    with pytest.raises(ConfigError, match=r"^stag="):
        stag_hunt(3, stag=1.0, hare=2.0)


def test_bad_constructor_args_raise_config_error():
    with pytest.raises(ConfigError, match=r"^num_players=17 is invalid"):
        TensorGame(17)
    with pytest.raises(ConfigError, match=r"^obs_mode='pixels' is invalid: accepted values are one of"):
        TensorGame(3, obs_mode="pixels")
    with pytest.raises(ConfigError, match=r"^history=2 is invalid"):
        TensorGame(3, history=2)
    with pytest.raises(ConfigError, match=r"^num_rounds=0 is invalid"):
        TensorGame(3, num_rounds=0)


def test_step_rewards_match_the_table_for_every_joint_action():
    table = np.array([[4.0, 2.0, 0.0], [5.0, 3.0, 1.0]])
    env = TensorGame(3)
    params = TensorGameParams(payoffs=jnp.asarray(table, jnp.float32))
    _, state = env.reset(KEY, params)
    joint = np.array(list(itertools.product([0, 1], repeat=3)))
    step = jax.jit(jax.vmap(env.step, in_axes=(None, None, 0, None)))
    _, _, rewards, _, _ = step(KEY, state, jnp.asarray(joint), params)
    for a, r in zip(joint, np.asarray(rewards)):
        for i in range(3):
            k = sum(a[j] for j in range(3) if j != i)
            assert r[i] == table[a[i], k], (a, i)


def test_egocentric_observations_by_hand():
    env = TensorGame(3)
    params = env.default_params
    obs, state = env.reset(KEY, params)
    assert obs.shape == (3, 9) and env.observation_shape == (9,)
    np.testing.assert_array_equal(np.asarray(obs).argmax(-1), [8, 8, 8])  # start
    assert np.asarray(obs).sum() == 3
    # (a0, a1, a2) = (1, 0, 0): player 0 sees 100 = 4, player 1 sees (a1 a2 a0) = 001 = 1, player 2 (a2 a0 a1) = 010
    # (0, 1, 1): player 0: 011 = 3, player 1: 110 = 6, player 2: 101 = 5
    for actions, expected in [((1, 0, 0), [4, 1, 2]), ((0, 1, 1), [3, 6, 5]), ((1, 1, 1), [7, 7, 7])]:
        obs, _, _, _, _ = env.step(KEY, state, jnp.array(actions), params)
        np.testing.assert_array_equal(np.asarray(obs).argmax(-1), expected)
        np.testing.assert_array_equal(np.asarray(obs).sum(-1), [1, 1, 1])


def test_history_observations_keep_the_last_rounds_most_recent_first():
    env = TensorGame(3, obs_mode="history", history=3)
    params = env.default_params
    obs, state = env.reset(KEY, params)
    assert obs.shape == (3, 3, 9) == (3, *env.observation_shape)
    obs, state, _, _, _ = env.step(KEY, state, jnp.array([1, 0, 0]), params)
    obs, state, _, _, _ = env.step(KEY, state, jnp.array([0, 1, 1]), params)
    np.testing.assert_array_equal(np.asarray(obs).argmax(-1), [[3, 4, 8], [6, 1, 8], [5, 2, 8]])


def test_auto_reset_at_the_end_of_the_episode():
    env = TensorGame(3, num_rounds=3)
    params = env.default_params
    _, state = env.reset(KEY, params)
    step = jax.jit(env.step)
    dones = []
    for _ in range(3):
        obs, state, _, done, info = step(KEY, state, jnp.array([1, 0, 0]), params)
        dones.append(bool(done))
    assert dones == [False, False, True]
    np.testing.assert_array_equal(np.asarray(obs).argmax(-1), [8, 8, 8])
    np.testing.assert_array_equal(np.asarray(info["final_observation"]).argmax(-1), [4, 1, 2])
    assert int(state.t) == 0


def test_step_is_deterministic_and_vmaps_over_params():
    env = TensorGame(3)
    tables = jnp.stack([ipd(3), stag_hunt(3), snowdrift(3), tragedy(3)])
    actions = jnp.array([[0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 1]])
    _, state = env.reset(KEY, env.default_params)

    def run(table, a):
        return env.step(KEY, state, a, TensorGameParams(payoffs=table))

    batched = jax.jit(jax.vmap(run))(tables, actions)
    again = jax.jit(jax.vmap(run))(tables, actions)
    for b in range(4):
        single = run(tables[b], actions[b])
        for x, y, z in zip(jax.tree.leaves(batched), jax.tree.leaves(single), jax.tree.leaves(again)):
            np.testing.assert_array_equal(np.asarray(x)[b], np.asarray(y))
            np.testing.assert_array_equal(np.asarray(x), np.asarray(z))


@pytest.mark.parametrize("n", [2, 4, 5])
def test_vmapped_step_matches_the_definitions_for_every_joint_action_and_reset(n):
    # the step computes rewards from two lookups by defector count and observations by comparing the global code
    # with a table of inverse rotations; check both against the definitions for all 2^N joint actions, mid-episode
    # and on the auto-reset round, with a random (non-linear) payoff table
    rng = np.random.default_rng(n)
    table = rng.normal(size=(2, n)).astype(np.float32)
    env = TensorGame(n, num_rounds=5)
    params = TensorGameParams(payoffs=jnp.asarray(table))
    joint = np.array(list(itertools.product([0, 1], repeat=n)))
    _, state = env.reset(KEY, params)
    step = jax.jit(jax.vmap(env.step, in_axes=(None, None, 0, None)))
    for t, reset in [(0, False), (env.num_rounds - 1, True)]:
        state_t = state.replace(t=jnp.asarray(t, jnp.int32))
        obs, new_state, rewards, done, info = jax.tree.map(
            np.asarray, step(KEY, state_t, jnp.asarray(joint), params)
        )
        assert obs.shape == (2**n, n, 2**n + 1) and obs.dtype == np.float32
        np.testing.assert_array_equal(done, reset)
        for g, a in enumerate(joint):
            ego = [sum(a[(i + j) % n] << (n - 1 - j) for j in range(n)) for i in range(n)]
            seen = np.eye(2**n + 1, dtype=np.float32)[ego]
            np.testing.assert_array_equal(info["final_observation"][g], seen)
            np.testing.assert_array_equal(obs[g], np.eye(2**n + 1)[[2**n] * n] if reset else seen)
            expected = [table[a[i], a.sum() - a[i]] for i in range(n)]
            np.testing.assert_array_equal(rewards[g], expected)
        np.testing.assert_array_equal(new_state.history[:, 0], 2**n if reset else np.arange(2**n))
        np.testing.assert_array_equal(new_state.t, 0 if reset else 1)


# ----------------------------------------------------------------------------------------------------------------
# exact returns


def _brute_force_chain(payoffs: np.ndarray, coop: np.ndarray):
    """float64 start distribution, transition matrix and rewards over joint actions, enumerated with itertools
    straight from the definitions (egocentric state: own action first, then the next players cyclically)."""
    n = payoffs.shape[1]
    joint = list(itertools.product([0, 1], repeat=n))
    idx = {a: g for g, a in enumerate(joint)}

    def ego_state(a, i):
        return sum(a[(i + j) % n] << (n - 1 - j) for j in range(n))

    def prob(next_a, states):
        return np.prod([coop[i, states[i]] if next_a[i] == 0 else 1 - coop[i, states[i]] for i in range(n)])

    p0 = np.array([prob(b, [2**n] * n) for b in joint])
    trans = np.array([[prob(b, [ego_state(a, i) for i in range(n)]) for b in joint] for a in joint])
    rew = np.array([[payoffs[a[i], sum(a) - a[i]] for i in range(n)] for a in joint])
    assert all(idx[a] == g for g, a in enumerate(joint))
    return p0, trans, rew


def _brute_force_return(payoffs, coop, gamma, horizon=3000):
    p0, trans, rew = _brute_force_chain(np.asarray(payoffs, np.float64), np.asarray(coop, np.float64))
    total, p, w = np.zeros(rew.shape[1]), p0, 1.0
    for _ in range(horizon):
        total += w * (p @ rew)
        p, w = p @ trans, w * gamma
    return (1 - gamma) * total


def test_memory_one_return_matches_a_float64_brute_force_sum():
    rng = np.random.default_rng(0)
    for n, table in [(2, ipd(2)), (3, stag_hunt(3)), (4, public_goods(4, 2.5))]:
        coop = rng.uniform(0.05, 0.95, size=(n, 2**n + 1))
        got = jax.jit(memory_one_return)(table, jnp.asarray(coop, jnp.float32), 0.9)
        assert got.shape == (n,)
        np.testing.assert_allclose(
            np.asarray(got), _brute_force_return(table, coop, 0.9), rtol=2e-5, atol=2e-5
        )
        fin = jax.jit(memory_one_return_finite, static_argnums=3)(
            table, jnp.asarray(coop, jnp.float32), 0.9, 500
        )
        np.testing.assert_allclose(np.asarray(fin), np.asarray(got), rtol=2e-5, atol=2e-5)


def test_memory_one_returns_match_monte_carlo_rollouts_of_the_env():
    n, gamma, horizon, episodes = 3, 0.8, 120, 2048  # gamma^120 ~ 2e-12
    rng = np.random.default_rng(1)
    coop = jnp.asarray(rng.uniform(0.1, 0.9, size=(n, 2**n + 1)), jnp.float32)
    env = TensorGame(n, num_rounds=horizon)
    params = TensorGameParams(payoffs=tragedy(n))

    def episode(key):
        obs, state = env.reset(key, params)

        def body(carry, k):
            obs, state = carry
            s = jnp.argmax(obs, -1)  # each player's egocentric state
            p_coop = coop[jnp.arange(n), s]
            actions = (jax.random.uniform(k, (n,)) >= p_coop).astype(jnp.int32)
            obs, state, r, _, _ = env.step(k, state, actions, params)
            return (obs, state), r

        _, rewards = jax.lax.scan(body, (obs, state), jax.random.split(key, horizon))
        return rewards  # [T, N]

    rewards = np.asarray(jax.jit(jax.vmap(episode))(jax.random.split(KEY, episodes)), np.float64)
    disc = gamma ** np.arange(horizon)
    samples = (1 - gamma) * np.einsum("etn,t->en", rewards, disc)
    exact = np.asarray(memory_one_return(params.payoffs, coop, gamma))
    se = samples.std(0, ddof=1) / np.sqrt(episodes)
    assert np.all(np.abs(samples.mean(0) - exact) < 3 * se + 1e-4), (samples.mean(0), exact, se)
    # finite episode, undiscounted: mean reward per round over the first 20 rounds
    samples = rewards[:, :20].mean(1)
    exact = np.asarray(memory_one_return_finite(params.payoffs, coop, 1.0, 20))
    se = samples.std(0, ddof=1) / np.sqrt(episodes)
    assert np.all(np.abs(samples.mean(0) - exact) < 3 * se + 1e-4), (samples.mean(0), exact, se)


def test_memory_one_return_gradient_matches_finite_differences():
    n, gamma = 3, 0.9
    rng = np.random.default_rng(2)
    coop = rng.uniform(0.1, 0.9, size=(n, 2**n + 1))
    table = np.asarray(ipd(n), np.float64)
    grad = jax.jit(jax.grad(lambda c: memory_one_return(ipd(n), c, gamma)[0]))
    grad = np.asarray(grad(jnp.asarray(coop, jnp.float32)))

    def exact64(c):
        p0, trans, rew = _brute_force_chain(table, c)
        return (1 - gamma) * np.linalg.solve(np.eye(len(p0)) - gamma * trans.T, p0) @ rew[:, 0]

    eps = 1e-5
    for i, s in [(0, 0), (0, 8), (1, 3), (2, 5), (2, 8), (1, 7)]:
        up, down = coop.copy(), coop.copy()
        up[i, s] += eps
        down[i, s] -= eps
        fd = (exact64(up) - exact64(down)) / (2 * eps)
        np.testing.assert_allclose(grad[i, s], fd, rtol=2e-3, atol=2e-4, err_msg=str((i, s)))
    # twice differentiable and vmappable over a batch of policies
    hess = jax.jit(jax.hessian(lambda c: memory_one_return(ipd(n), c, gamma)[0]))(
        jnp.asarray(coop, jnp.float32)
    )
    assert hess.shape == (n, 2**n + 1, n, 2**n + 1) and np.all(np.isfinite(np.asarray(hess)))
    batch = jnp.asarray(rng.uniform(0.1, 0.9, size=(4, n, 2**n + 1)), jnp.float32)
    vm = jax.jit(jax.vmap(memory_one_return, in_axes=(None, 0, None)))(ipd(n), batch, gamma)
    np.testing.assert_allclose(
        np.asarray(vm[2]), np.asarray(memory_one_return(ipd(n), batch[2], gamma)), rtol=1e-6
    )


def test_memory_one_return_checks_shapes():
    with pytest.raises(ValueError, match="accepted shapes are"):
        memory_one_return(ipd(3), jnp.full((3, 8), 0.5), 0.9)


@pytest.mark.parametrize("shape", [(3, 1), (2,), (4, 3)])
def test_step_rejects_actions_not_shaped_one_per_player(shape):
    """A [N, 1] column would shift into an [N, N] code and sum to a wrong joint action silently: it raises."""
    env = TensorGame(num_players=3)
    _, state = env.reset(jax.random.key(0), env.default_params)
    with pytest.raises(AssertionError, match=r"TensorGame.step: actions must be \[num_players\] = \(3,\)"):
        jax.jit(env.step)(jax.random.key(0), state, jnp.ones(shape, jnp.int32), env.default_params)
