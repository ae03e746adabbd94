"""Populations of shapers and naive learners: seats, payoff tables, exact cooperation against a forward iteration of
the joint-action chain (numpy), the exact runner against autodiff naive steps, summaries and comparisons against
hand computations."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import tensor_game
from jaxsafety.config import ConfigError
from jaxsafety.shaping import (
    PopulationConfig,
    compare_populations,
    exact_cooperation,
    make_exact_runner,
    make_mfos_runner,
    payoff_table,
    shaper_seats,
    summarise_population,
)


def test_shaper_seats_for_each_population():
    assert shaper_seats("all_naive", 4) == [False, False, False, False]
    assert shaper_seats("1_shaper", 4) == [True, False, False, False]
    assert shaper_seats("2_shapers", 4) == [True, True, False, False]
    assert shaper_seats("all_shapers", 4) == [True, True, True, True]
    assert shaper_seats("2_shapers", 2) == [True, True]
    with pytest.raises(ConfigError, match="population='3_shapers' is invalid: accepted values are one of"):
        shaper_seats("3_shapers", 4)
    with pytest.raises(ConfigError, match=r"population='2_shapers' is invalid: .* at most N = 1 shapers"):
        shaper_seats("2_shapers", 1)


@pytest.mark.parametrize("n", [3, 5])
def test_payoff_table_public_goods_is_the_closed_form(n: int):
    """Public goods with r = 0.75 N (e = 1): C(k) = r (N - k) / N, D(k) = 1 + r (N - 1 - k) / N (Hauert et al.)."""
    r = 0.75 * n
    k = np.arange(n)
    expected = np.stack([r * (n - k) / n, 1 + r * (n - 1 - k) / n])
    np.testing.assert_allclose(np.asarray(payoff_table("public_goods", n, 0.75)), expected, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(payoff_table("ipd", n)), np.asarray(tensor_game.ipd(n)))
    with pytest.raises(ConfigError, match="game='poker' is invalid"):
        payoff_table("poker", n)


def _forward_cooperation(coop_probs: np.ndarray, gamma: float, rounds: int = 400) -> np.ndarray:
    """``(1 - gamma) sum_t gamma^t P(player i plays C in round t)``, ``[N]``, by pushing the distribution over joint
    actions forward round by round (float64). Player ``i``'s state is the last joint action seen from its seat:
    its own action as the top bit, then the players after it in cyclic order (index ``2^N`` before round 0)."""
    n = coop_probs.shape[0]
    joint = list(itertools.product((0, 1), repeat=n))  # a[i] = 1: player i defects

    def ego(a: tuple[int, ...], i: int) -> int:
        return sum(a[(i + j) % n] << (n - 1 - j) for j in range(n))

    def next_dist(p_coop: np.ndarray) -> np.ndarray:  # p_coop [N]: each player's probability of C
        return np.array(
            [np.prod([p_coop[i] if b == 0 else 1 - p_coop[i] for i, b in enumerate(a)]) for a in joint]
        )

    dist = next_dist(coop_probs[:, 2**n])
    trans = np.stack([next_dist(np.array([coop_probs[i, ego(a, i)] for i in range(n)])) for a in joint])
    is_c = np.array([[b == 0 for b in a] for a in joint], float)  # [2^N, N]
    total = np.zeros(n)
    for t in range(rounds):
        total += gamma**t * dist @ is_c
        dist = dist @ trans
    return (1 - gamma) * total


def test_exact_cooperation_against_forward_iteration():
    rng = np.random.default_rng(0)
    n, gamma = 3, 0.9  # gamma^400 < 1e-18: the truncated sum is exact in float32
    thetas = rng.normal(scale=1.5, size=(2, 2, n, 2**n + 1)).astype(np.float32)
    got = np.asarray(jax.jit(exact_cooperation, static_argnums=1)(jnp.asarray(thetas), gamma))
    assert got.shape == (2, 2, n)
    probs = 1 / (1 + np.exp(-thetas.astype(np.float64)))
    for idx in np.ndindex(2, 2):
        np.testing.assert_allclose(got[idx], _forward_cooperation(probs[idx], gamma), atol=2e-6)


def test_exact_runner_naive_learners_against_autodiff_steps():
    """All-naive population: each episode's returns are those of the policies after plain gradient-ascent steps
    ``theta_i += lr * dV_i / dtheta_i`` (computed here with jax.jacobian of the env's exact return), and the
    cooperation that of the forward iteration above."""
    n, gamma, lr, updates = 3, 0.9, 2.0, 3
    cfg = PopulationConfig(num_updates=updates, gamma=gamma, lr=lr)
    payoffs = jnp.stack([payoff_table(g, n) for g in ("ipd", "stag_hunt")])
    inits = jax.random.normal(jax.random.key(1), (2, n, 2**n + 1))
    values, coop = make_exact_runner(n, "all_naive", "naive", cfg)(payoffs, inits)
    assert values.shape == coop.shape == (2, 2, updates, n)

    def v(table, th):
        return tensor_game.memory_one_return(table, jax.nn.sigmoid(th), gamma)

    @jax.jit
    def value_and_step(table, th):  # V(theta) and theta + lr * dV_i / dtheta_i (each player its own gradient)
        return v(table, th), th + lr * jnp.einsum("iip->ip", jax.jacobian(v, argnums=1)(table, th))

    for g, i in np.ndindex(2, 2):
        th = inits[i]
        for u in range(updates):
            value, next_th = value_and_step(payoffs[g], th)
            np.testing.assert_allclose(values[g, i, u], value, rtol=1e-5, atol=1e-6)
            probs = 1 / (1 + np.exp(-np.asarray(th, np.float64)))
            np.testing.assert_allclose(coop[g, i, u], _forward_cooperation(probs, gamma), atol=1e-5)
            th = next_th


def test_lola_with_zero_step_is_naive():
    """LOLA's shaping term is scaled by its assumed co-player step: with alpha = 0 the 1-shaper population is the
    all-naive one."""
    n = 2
    cfg = PopulationConfig(num_updates=3, lr=5.0, lola_alpha=0.0)
    payoffs = payoff_table("ipd", n)[None]
    inits = jax.random.normal(jax.random.key(2), (2, n, 2**n + 1))
    lola = make_exact_runner(n, "1_shaper", "lola", cfg)(payoffs, inits)
    naive = make_exact_runner(n, "all_naive", "naive", cfg)(payoffs, inits)
    for a, b in zip(lola, naive, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_summarise_population_by_hand():
    values = np.array([[[1, 2, 3], [4, 5, 6]], [[2, 2, 2], [0, 3, 6]]], float)  # [I=2, U=2, N=3]
    coop = np.array([[[1, 0, 1], [0, 0, 1]], [[1, 1, 1], [0, 1, 0]]], float)
    s = summarise_population(values, coop, [True, False, False])
    # last episode: runs [4, 5, 6] and [0, 3, 6]; social 5 and 3
    assert s["seat_return"] == pytest.approx([2, 4, 6])
    assert s["social_return"] == pytest.approx(4) and s["social_return_se"] == pytest.approx(1.0)
    assert s["cooperation"] == pytest.approx(2 / 6)
    assert s["shaper_return"] == pytest.approx(2) and s["naive_return"] == pytest.approx(5)
    # mean over the run: runs [2.5, 3.5, 4.5] and [1, 2.5, 4]; social 3.5 and 2.5
    assert s["seat_return_mean"] == pytest.approx([1.75, 3, 4.25])
    assert s["social_return_mean"] == pytest.approx(3) and s["social_return_mean_se"] == pytest.approx(0.5)
    assert s["cooperation_mean"] == pytest.approx(7 / 12)
    assert s["shaper_return_mean"] == pytest.approx(1.75) and s["naive_return_mean"] == pytest.approx(3.625)

    one = summarise_population(values[:1], coop[:1], [False, False, False])
    assert one["shaper_return"] is None and one["social_return_se"] is None
    assert one["naive_return"] == pytest.approx(5)
    with pytest.raises(ConfigError, match=r"values=.* is invalid"):
        summarise_population(values, coop, [True, False])


def test_compare_populations_by_hand():
    def stats(seat0: float, social: float, shaper: float | None) -> dict:
        return {
            f"{k}{tag}": val
            for tag in ("", "_mean")
            for k, val in (
                ("seat_return", [seat0, 0.0]),
                ("social_return", social),
                ("shaper_return", shaper),
            )
        }

    cell = {
        "all_naive": stats(1.0, 2.0, None),
        "1_shaper": stats(0.0, 2.5, 3.0),
        "all_shapers": stats(0, 1.5, 1.5),
    }
    out = compare_populations(cell, ("1_shaper", "all_shapers"))
    assert out == pytest.approx(
        {
            f"{k}{tag}": v
            for tag in ("", "_mean")
            for k, v in (
                ("shaper_gain_own", 2.0),
                ("social_gain_1_shaper", 0.5),
                ("social_gain_all_shapers", -0.5),
            )
        }
    )
    assert "shaper_gain_own" not in compare_populations({"all_naive": cell["all_naive"]}, ())
    with pytest.raises(ConfigError, match="populations='2_shapers' is invalid"):
        compare_populations(cell, ("2_shapers",))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"public_goods_r=1\.5 is invalid"):
        PopulationConfig(public_goods_r=1.5)
    with pytest.raises(ConfigError, match=r"mfos_hidden=\(\) is invalid"):
        PopulationConfig(mfos_hidden=())
    cfg = PopulationConfig(num_updates=3)
    with pytest.raises(ConfigError, match="kind='mfos' is invalid"):
        make_exact_runner(3, "1_shaper", "mfos", cfg)
    with pytest.raises(ConfigError, match="population='all_naive' is invalid"):
        make_mfos_runner(3, "all_naive", cfg)

    @dataclasses.dataclass(frozen=True)
    class Study(PopulationConfig):
        seed: int = 0

    assert Study(seed=3, lr=2.0).population_config() == PopulationConfig(lr=2.0)
    assert Study().mfos_config().trial_length == PopulationConfig().num_updates
