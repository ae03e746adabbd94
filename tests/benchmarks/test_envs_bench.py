"""N-player env benchmark: the quick run yields a complete payload, and the numpy peer plays the same game."""

from __future__ import annotations

import math

import jax
import numpy as np

from benchmarks import envs_nplayer


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


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


def test_jax_rollout_and_numpy_peer_compute_the_same_game():
    # all-random IPD play: the mean reward per player per step is E[2 * cooperating others + own defection]
    # = 2 * (N - 1) / 2 + 1 / 2 for both implementations
    n, batch, length = 3, 512, 40
    _, rew_sum = envs_nplayer.make_tensor_rollout(n, batch, length)(jax.random.key(0))
    peer = envs_nplayer.NumpyTensorGame(n, batch, length).rollout()
    expected = (n - 1) + 0.5
    np.testing.assert_allclose(np.asarray(rew_sum) / (batch * length), expected, atol=0.05)
    np.testing.assert_allclose(peer / (batch * length), expected, atol=0.05)
