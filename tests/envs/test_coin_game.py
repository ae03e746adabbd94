"""N-player coin game: hand-constructed pick-ups give the documented rewards, coins respawn on free cells, the
egocentric view, wrap-around, determinism, auto-reset, bad constructor arguments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.coin_game import CoinGame, CoinGameState
from jaxsafety.config import ConfigError

KEY = jax.random.key(0)
RIGHT, LEFT, UP, DOWN = 0, 1, 2, 3


def _state(agents, coins, t=0):
    return CoinGameState(
        agent_pos=jnp.array(agents, jnp.int32), coin_pos=jnp.array(coins, jnp.int32), t=jnp.int32(t)
    )


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ((RIGHT, DOWN, UP), [1, 1, 1]),  # each takes its own coin
        ((DOWN, LEFT, RIGHT), [0, 0, 0]),  # nobody lands on a coin
        ((DOWN, RIGHT, DOWN), [-2, 0, 1]),  # agent 2 takes coin 0 (agent 0's colour)
        ((RIGHT, LEFT, LEFT), [1, -2, 1]),  # 0 own coin; 2 takes agent 1's coin
    ],
)
def test_pick_ups_give_the_documented_rewards(actions, expected):
    env = CoinGame(num_players=3, grid_size=3)
    # agents at (0,0), (1,1), (2,2); coins: 0 at (0,1), 1 at (2,1), 2 at (1,2)
    state = _state([[0, 0], [1, 1], [2, 2]], [[0, 1], [2, 1], [1, 2]])
    if actions == (DOWN, RIGHT, DOWN):  # agent 2 at (2,2) moves down -> wraps to (0,2); put coin 0 there
        state = state.replace(coin_pos=jnp.array([[0, 2], [2, 1], [2, 0]], jnp.int32))
    _, _, rewards, _, _ = jax.jit(env.step)(KEY, state, jnp.array(actions), env.default_params)
    np.testing.assert_array_equal(np.asarray(rewards), expected)


def test_two_agents_taking_the_same_coin_both_score_and_the_owner_pays_twice():
    env = CoinGame(num_players=3, grid_size=3)
    state = _state([[1, 0], [2, 2], [1, 2]], [[2, 0], [1, 1], [0, 0]])
    _, _, rewards, _, info = env.step(KEY, state, jnp.array([RIGHT, RIGHT, LEFT]), env.default_params)
    # agents 0 and 2 both move onto (1,1), agent 1's coin; agent 1 moves to (2,0), agent 0's coin (wraps)
    np.testing.assert_array_equal(np.asarray(rewards), [1 - 2, 1 - 4, 1])
    np.testing.assert_array_equal(np.asarray(info["picked"]), [[0, 1, 0], [1, 0, 0], [0, 1, 0]])


def test_picked_coins_respawn_on_free_cells_and_others_stay():
    env = CoinGame(num_players=3, grid_size=3)
    state = _state([[0, 0], [1, 1], [2, 2]], [[0, 1], [2, 1], [1, 2]])
    step = jax.jit(env.step)
    seen = set()
    for seed in range(20):
        _, new, _, _, _ = step(
            jax.random.key(seed), state, jnp.array([RIGHT, LEFT, RIGHT]), env.default_params
        )
        agents = {tuple(p) for p in np.asarray(new.agent_pos)}
        coins = [tuple(p) for p in np.asarray(new.coin_pos)]
        assert coins[1] == (2, 1) and coins[2] == (1, 2)  # not picked: unchanged
        assert coins[0] not in agents and coins[0] not in coins[1:]
        seen.add(coins[0])
    assert len(seen) >= 3  # random: agents on (0,1), (1,0), (2,0) and coins 1, 2 leave 4 cells


def test_egocentric_view_and_wrap_around():
    env = CoinGame(num_players=2, grid_size=3)
    state = _state([[0, 0], [2, 1]], [[1, 1], [0, 2]])
    obs = np.asarray(env.observe(state))
    assert obs.shape == (2, 3, 3, 4) == (2, *env.observation_shape)
    # agent 0 at (0,0) is moved to the centre (1,1): offsets +1, +1 (mod 3)
    assert obs[0, 1, 1, 0] == 1 and obs[0, :, :, 0].sum() == 1
    assert obs[0, 0, 2, 1] == 1 and obs[0, :, :, 1].sum() == 1  # agent 1 at (2,1) -> (0,2)
    assert obs[0, 2, 2, 2] == 1 and obs[0, :, :, 2].sum() == 1  # own coin at (1,1) -> (2,2)
    assert obs[0, 1, 0, 3] == 1 and obs[0, :, :, 3].sum() == 1  # other coin at (0,2) -> (1,0)
    # agent 1 at (2,1): offsets -1, 0
    assert obs[1, 1, 1, 0] == 1 and obs[1, 2, 0, 1] == 1 and obs[1, 2, 2, 2] == 1 and obs[1, 0, 1, 3] == 1
    _, new, _, _, _ = env.step(KEY, state, jnp.array([UP, DOWN]), env.default_params)
    np.testing.assert_array_equal(np.asarray(new.agent_pos), [[2, 0], [0, 1]])  # both wrap around


def test_reset_and_step_are_deterministic_and_auto_reset():
    env = CoinGame(num_players=4, num_steps=3)
    assert env.grid_size == 5
    params = env.default_params
    obs_a, state_a = env.reset(KEY, params)
    obs_b, _ = env.reset(KEY, params)
    np.testing.assert_array_equal(np.asarray(obs_a), np.asarray(obs_b))
    cells = np.concatenate([np.asarray(state_a.agent_pos), np.asarray(state_a.coin_pos)])
    assert len({tuple(c) for c in cells}) == 8  # distinct start cells
    _, state_c = env.reset(jax.random.key(1), params)
    assert not np.array_equal(np.asarray(state_a.agent_pos), np.asarray(state_c.agent_pos))
    step = jax.jit(env.step)
    actions = jnp.array([0, 1, 2, 3])
    out1 = step(KEY, state_a, actions, params)
    out2 = step(KEY, state_a, actions, params)
    for x, y in zip(jax.tree.leaves(out1), jax.tree.leaves(out2)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    state, dones = state_a, []
    for t in range(3):
        obs, state, _, done, _ = step(jax.random.key(t), state, actions, params)
        dones.append(bool(done))
    assert dones == [False, False, True] and int(state.t) == 0
    np.testing.assert_array_equal(np.asarray(obs), np.asarray(env.observe(state)))


def test_vmap_over_params_and_bad_constructor_args():
    env = CoinGame(num_players=2, grid_size=3)
    state = _state([[0, 0], [2, 2]], [[1, 1], [0, 1]])
    params = jax.vmap(lambda p: env.default_params.replace(owner_penalty=p))(jnp.array([-2.0, -1.0, 0.0]))
    _, _, rewards, _, _ = jax.vmap(env.step, in_axes=(None, None, None, 0))(
        KEY, state, jnp.array([1, 3]), params
    )
    # agent 0 (0,0) left -> (0,2), agent 1 (2,2) down -> (0,2): no coin there
    np.testing.assert_array_equal(np.asarray(rewards), [[0, 0], [0, 0], [0, 0]])
    _, _, rewards, _, _ = jax.vmap(env.step, in_axes=(None, None, None, 0))(
        KEY, state, jnp.array([0, 2]), params
    )
    # agent 0 right -> (0,1): agent 1's coin; agent 1 up -> (1,2)
    np.testing.assert_array_equal(np.asarray(rewards), [[1, -2], [1, -1], [1, 0]])
    with pytest.raises(
        ConfigError, match=r"^grid_size=2 is invalid: accepted values are integers with grid_size\^2"
    ):
        CoinGame(num_players=3, grid_size=2)
    with pytest.raises(ConfigError, match=r"^num_players=9 is invalid"):
        CoinGame(num_players=9)


@pytest.mark.parametrize("shape", [(2, 1), (1,), (4, 2)])
def test_step_rejects_actions_not_shaped_one_per_player(shape):
    """A [N, 1] column would index MOVES into [N, 1, 2] and broadcast; a batch belongs under vmap: both raise."""
    env = CoinGame(num_players=2)
    _, state = env.reset(jax.random.key(0), env.default_params)
    with pytest.raises(AssertionError, match=r"CoinGame.step: actions must be \[num_players\] = \(2,\)"):
        jax.jit(env.step)(jax.random.key(1), state, jnp.ones(shape, jnp.int32), env.default_params)
