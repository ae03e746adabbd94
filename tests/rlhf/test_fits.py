"""Gao et al. 2022 forms: the least-squares fit against numpy and planted coefficients; KL of best-of-n against
exact enumeration and Monte Carlo."""

import jax
import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.rlhf import (
    best_of_n_expectation,
    fit_overoptimization,
    kl_best_of_n,
    normalize_gold,
    predict_overoptimization,
)


def _numpy_design(d, form):
    d = np.asarray(d, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        second = d**2 if form == "bon" else np.where(d > 0, d * np.log(d), 0.0)
    return np.stack([d, -second], axis=1)


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_fit_recovers_planted_coefficients(form):
    d = np.linspace(0.0, 4.0, 41)
    alpha, beta = 1.3, 0.4
    r = _numpy_design(d, form) @ np.array([alpha, beta])
    fit = fit_overoptimization(d, r, form)
    np.testing.assert_allclose([fit.alpha, fit.beta], [alpha, beta], rtol=1e-4)
    assert float(fit.r2) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(predict_overoptimization(d, fit.alpha, fit.beta, form), r, atol=1e-4)
    # the forms as stated in the paper
    expected = d * (alpha - beta * d) if form == "bon" else d * (alpha - beta * np.log(np.where(d > 0, d, 1)))
    np.testing.assert_allclose(predict_overoptimization(d, alpha, beta, form), expected, atol=1e-5)


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_fit_matches_numpy_lstsq_on_noisy_data(form):
    rng = np.random.default_rng(0)
    d = rng.uniform(0.05, 3.0, 200)
    r = _numpy_design(d, form) @ np.array([0.8, 0.3]) + 0.1 * rng.normal(size=d.shape)
    w = rng.uniform(0.0, 2.0, d.shape)
    fit = fit_overoptimization(d, r, form, weights=w)
    x = _numpy_design(d, form)
    coef = np.linalg.lstsq(x * np.sqrt(w)[:, None], r * np.sqrt(w), rcond=None)[0]
    np.testing.assert_allclose([fit.alpha, fit.beta], coef, rtol=1e-4)
    mean = np.sum(w * r) / np.sum(w)
    r2 = 1 - np.sum(w * (r - x @ coef) ** 2) / np.sum(w * (r - mean) ** 2)
    assert float(fit.r2) == pytest.approx(r2, abs=1e-4)
    assert 0.0 < float(fit.r2) < 1.0
    # zero weights drop points: the same fit as on the subset alone (padded arrays under jit)
    keep = np.arange(d.size) % 3 != 0
    sub = fit_overoptimization(d[keep], r[keep], form)
    padded = jax.jit(fit_overoptimization, static_argnames="form")(
        d, r, form=form, weights=keep.astype(float)
    )
    np.testing.assert_allclose(
        [padded.alpha, padded.beta, padded.r2], [sub.alpha, sub.beta, sub.r2], rtol=1e-4
    )


def test_fit_rejects_unknown_form():
    with pytest.raises(ConfigError, match="form"):
        fit_overoptimization(np.ones(3), np.ones(3), "ppo")


def _bon_kl_exact(p, n):
    """KL(best-of-n || base) of a discrete base distribution ``p`` over outcomes with distinct rewards, listed in
    increasing reward: P_bon(i) = F_i^n - F_{i-1}^n (the max of n draws is outcome i)."""
    cdf = np.concatenate([[0.0], np.cumsum(p)])
    q = cdf[1:] ** n - cdf[:-1] ** n
    nz = q > 0
    return float(np.sum(q[nz] * np.log(q[nz] / p[nz])))


@pytest.mark.parametrize("n", [1, 2, 4, 16, 64])
def test_kl_best_of_n_matches_exact_enumeration_of_a_fine_discrete_base(n):
    k = 100_000  # K equally likely distinct outcomes: the continuous limit up to O(n / K)
    exact = _bon_kl_exact(np.full(k, 1.0 / k), n)
    assert float(kl_best_of_n(n)) == pytest.approx(exact, abs=2e-3)


def test_kl_best_of_n_is_an_upper_bound_for_coarse_bases():
    # Beirami et al. 2024: for a discrete base the exact best-of-n KL is at most log n - (n - 1) / n
    rng = np.random.default_rng(1)
    for _ in range(20):
        p = rng.dirichlet(np.ones(rng.integers(2, 8)))
        for n in (2, 3, 8, 32):
            assert _bon_kl_exact(p, n) <= float(kl_best_of_n(n)) + 1e-6


def test_kl_best_of_n_matches_monte_carlo():
    # continuous base: reward quantile u of the best of n draws has density n u^(n-1); KL = E[log(n u^(n-1))]
    rng = np.random.default_rng(2)
    for n in (2, 8, 32):
        u = rng.uniform(size=(100_000, n)).max(axis=1)
        logratio = np.log(n) + (n - 1) * np.log(u)
        se = logratio.std() / np.sqrt(u.size)
        assert abs(logratio.mean() - float(kl_best_of_n(n))) < 5 * se
    np.testing.assert_allclose(kl_best_of_n(np.array([1, 2])), [0.0, np.log(2) - 0.5], atol=1e-7)


def test_normalize_gold_makes_the_initial_policy_score_zero():
    init = np.array([0.2, 0.4, 0.9])
    gold = np.array([[1.0, 2.0], [0.5, 0.0]])
    np.testing.assert_allclose(normalize_gold(gold, init), gold - 0.5, atol=1e-6)
    assert float(normalize_gold(init, init).mean()) == pytest.approx(0.0, abs=1e-7)


def test_best_of_n_expectation_matches_enumeration_of_all_subsets():
    import itertools

    rng = np.random.default_rng(3)
    big_n = 7
    proxy = rng.normal(size=(5, big_n))
    gold = rng.normal(size=(5, big_n))
    for n in range(1, big_n + 1):
        brute = [
            np.mean([g[max(s, key=lambda j: p[j])] for s in itertools.combinations(range(big_n), n)])
            for p, g in zip(proxy, gold)
        ]
        np.testing.assert_allclose(best_of_n_expectation(proxy, gold, n), brute, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(best_of_n_expectation(proxy, gold, 1), gold.mean(1), atol=1e-6)
    jitted = jax.jit(best_of_n_expectation)(proxy, gold, 3)  # n traced
    np.testing.assert_allclose(jitted, best_of_n_expectation(proxy, gold, 3), rtol=1e-5, atol=1e-5)
