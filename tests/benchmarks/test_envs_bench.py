"""N-player env benchmark: the timed JAX rollout and the numpy peer play the same game on the same actions (every
step's observations and rewards, and the rollout's sums), and the quick run yields a complete payload (slow)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import envs_nplayer
from envs.tensor_game import TensorGame, TensorGameParams, ipd


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.parametrize("num_players", [3, 4])
def test_tensor_game_transitions_equal_the_numpy_peer_on_the_same_actions(num_players):
    # two auto-resets (every ROUNDS steps) inside the rollout; the action codes are the timed call's in-graph draw
    n, batch, length = num_players, 8, 2 * envs_nplayer.ROUNDS + 7
    key = jax.random.key(n)
    codes = envs_nplayer.action_codes(key, length, batch, n)
    assert codes.shape == (length, batch) and int(codes.max()) < 2**n
    codes_np = np.asarray(codes)
    trace: list = []
    peer_rew_sum = envs_nplayer.NumpyTensorGame(n, batch, length).rollout(codes_np, trace)
    assert len(trace) == length

    # every step of the library env (the one the timed rollout steps) against the peer's step
    env = TensorGame(n, num_rounds=envs_nplayer.ROUNDS)
    params = TensorGameParams(payoffs=ipd(n))
    step = jax.jit(jax.vmap(env.step, in_axes=(None, 0, 0, None)))
    _, state = jax.jit(jax.vmap(lambda _: env.reset(key, params)))(jnp.arange(batch))
    player_bit = np.arange(n)
    starts = 0
    for s, (peer_obs, peer_rew) in enumerate(trace):
        actions = (codes_np[s][:, None] >> player_bit) & 1  # [batch, N]
        obs, state, rew, _, _ = step(key, state, jnp.asarray(actions, jnp.int32), params)
        np.testing.assert_array_equal(np.asarray(obs), peer_obs, err_msg=f"observations, step {s}")
        np.testing.assert_allclose(np.asarray(rew), peer_rew.T, rtol=1e-6, err_msg=f"rewards, step {s}")
        starts += int(peer_obs[:, :, 2**n].sum())
    assert starts == 2 * batch * n  # the "start" observation after each of the two resets, nowhere else

    # the timed rollout on the same codes: observation counts and reward sums
    obs_sum, rew_sum = envs_nplayer.make_tensor_rollout(n, batch, length)(key, codes)
    peer_obs_sum = sum(o for o, _ in trace).sum(0)  # [N, 2^N + 1]
    np.testing.assert_array_equal(np.asarray(obs_sum), peer_obs_sum)
    np.testing.assert_allclose(np.asarray(rew_sum), peer_rew_sum, rtol=1e-5)


def test_random_play_mean_reward_is_the_closed_form():
    # all-random IPD play: the mean reward per player per step is E[2 * cooperating others + own defection]
    # = 2 * (N - 1) / 2 + 1 / 2, for both implementations with their own random streams (the timed calls)
    n, batch, length = 3, 512, 40
    _, rew_sum = envs_nplayer.make_tensor_rollout(n, batch, length)(jax.random.key(0))
    peer = envs_nplayer.NumpyTensorGame(n, batch, length).rollout()
    expected = (n - 1) + 0.5
    np.testing.assert_allclose(np.asarray(rew_sum) / (batch * length), expected, atol=0.05)
    np.testing.assert_allclose(peer / (batch * length), expected, atol=0.05)


@pytest.mark.slow
def test_quick_run_payload_is_complete_and_positive():
    payload = envs_nplayer.run(quick=True)
    budget = envs_nplayer.QUICK
    assert len(payload["tensor_game"]) == len(budget.players) * len(budget.tensor)
    for row in payload["tensor_game"]:
        for side in ("ours", "numpy"):
            assert _positive(row[side]["steps_per_s"])
            assert row[side]["env_steps_per_call"] == row["batch"] * row["length"]
            assert row[side]["timing"]["repeats"] == budget.repeats
        assert _positive(row["ratio_ours_over_numpy"])
    assert {r["env"] for r in payload["references"]} == {
        "cartpole_gymnax",
        "coin_game_n3_3x3",
        "common_pool_n3_k5",
    }
    assert all(_positive(r["steps_per_s"]) for r in payload["references"])
    meta = payload["meta_training"]
    assert {r["method"] for r in meta} == {"mfos_exact", "shaper_sampled_mlp"}
    for r in meta:
        assert _positive(r["inner_episodes_per_s"]) and r["timing"]["repeats"] == budget.meta_repeats
    budget_episodes = budget.meta_generations * (budget.meta_population + 1) * budget.shaper_episodes
    shaper = next(r for r in meta if r["method"] == "shaper_sampled_mlp")
    assert shaper["inner_episodes_per_call"] == budget_episodes
