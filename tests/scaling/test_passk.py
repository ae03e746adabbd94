"""pass@k estimator against exact rational arithmetic; aggregate, -log and the least-squares power law against
brute-force numpy; malformed inputs."""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.scaling import aggregate_pass_at_k, fit_power_law_lsq, neg_log_pass_at_k, pass_at_k


def _grid() -> np.ndarray:
    """(n, c, k) rows: random interior points and the edges c = 0, c = n, n - c < k, n - c = k, k = 1, k = n."""
    rng = np.random.default_rng(0)
    rows = []
    for n in (1, 2, 5, 10, 37, 100, 1000, 10_000):
        for _ in range(25):
            rows.append((n, rng.integers(0, n + 1), rng.integers(1, n + 1)))
        for _ in range(10):  # few successes and small k: pass@k small, where cancellation would show
            rows.append((n, rng.integers(0, min(n, 3) + 1), rng.integers(1, min(n, 3) + 1)))
        for c in {0, 1, n // 2, n - 1, n}:
            for k in {1, n // 3 + 1, max(n - c, 1), min(n - c + 1, n), n}:
                rows.append((n, max(c, 0), k))
    return np.asarray(rows, dtype=np.int64)


def _exact_fail(n: int, c: int, k: int) -> Fraction:
    """C(n - c, k) / C(n, k) by exact integer arithmetic (math.comb is 0 when k > n - c)."""
    return Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_exact_combinatorics():
    grid = _grid()
    # n = 10^5 rows (the gammaln form loses ~eps n log n ~ 0.1 there), checked against a float64 sum of logs
    big = np.asarray([(100_000, 1, 1), (100_000, 3, 2), (100_000, 17, 5), (100_000, 500, 40)], dtype=np.int64)
    rows = np.concatenate([grid, big])
    got = np.asarray(pass_at_k(rows[:, 0], rows[:, 1], rows[:, 2]), dtype=np.float64)
    for (n, c, k), p in zip(grid.tolist(), got):
        fail = _exact_fail(n, c, k)
        if n - c < k:
            assert p == 1.0, (n, c, k)
        elif c == 0:
            assert p == 0.0, (n, c, k)
        else:
            exact = 1 - fail
            # relative precision in both pass@k and 1 - pass@k (float32; measured worst case ~1e-6)
            assert abs(p - float(exact)) <= 1e-5 * float(exact), (n, c, k, p, float(exact))
            assert abs((1 - p) - float(fail)) <= 1e-5 * float(fail) + 1e-7, (n, c, k)
    for (n, c, k), p in zip(big.tolist(), got[len(grid) :]):
        u, v = min(c, k), max(c, k)
        log_fail = math.fsum(math.log1p(-v / (n - j)) for j in range(u))
        assert p == pytest.approx(-math.expm1(log_fail), rel=1e-5), (n, c, k)


def test_aggregate_and_neg_log_match_brute_force():
    rng = np.random.default_rng(1)
    n = rng.integers(20, 60, size=30)
    c = rng.binomial(n, rng.beta(0.3, 2.0, size=30))
    ks = np.array([1, 2, 5, 10, 20])
    exact = [sum(1 - _exact_fail(int(ni), int(ci), int(k)) for ni, ci in zip(n, c)) / len(n) for k in ks]
    exact = np.asarray([float(e) for e in exact])
    np.testing.assert_allclose(aggregate_pass_at_k(n, c, ks), exact, rtol=1e-5)
    np.testing.assert_allclose(neg_log_pass_at_k(n, c, ks), -np.log(exact), rtol=1e-5)


def test_neg_log_pass_at_k_near_one_keeps_relative_precision():
    # Almost every problem solved at large k: -log pass@k is tiny and must not round to 0. (30 problems and 5
    # budgets, as above: the same compiled program.)
    n = np.full(30, 1000)
    c = np.tile([1, 500, 900, 1000, 3], 6)
    ks = np.array([600, 700, 800, 900, 999])
    fails = np.array([[float(_exact_fail(1000, int(ci), int(k))) for ci in c] for k in ks])
    expected = -np.log1p(-fails.mean(axis=1))
    np.testing.assert_allclose(neg_log_pass_at_k(n, c, ks), expected, rtol=1e-4)


def test_fit_power_law_lsq_recovers_exact_law_and_matches_polyfit():
    ks = np.array([1, 2, 4, 8, 16, 32, 64, 128], dtype=np.float64)
    a, b = fit_power_law_lsq(ks, 0.7 * ks**-0.35)
    assert float(a) == pytest.approx(0.7, rel=1e-5)
    assert float(b) == pytest.approx(0.35, rel=1e-5)
    rng = np.random.default_rng(2)
    y = 0.7 * ks**-0.35 * np.exp(rng.normal(0, 0.05, ks.shape))
    slope, intercept = np.polyfit(np.log(ks), np.log(y), 1)
    a, b = fit_power_law_lsq(ks, y)
    assert float(b) == pytest.approx(-slope, rel=1e-4)
    assert float(a) == pytest.approx(np.exp(intercept), rel=1e-4)
    # entries with -log pass@k = 0 (pass@k = 1) are left out
    _, b2 = fit_power_law_lsq(np.append(ks, 256.0), np.append(y, 0.0))
    assert float(b2) == pytest.approx(float(b), rel=1e-5)


def test_bootstrap_power_law_lsq_matches_numpy_least_squares_per_resample():
    """Each resample: the problems drawn by the documented scheme (randint under split(key, R)[r]), -log pass@k
    from exact float64 binomial ratios (scipy), and numpy's log-log polyfit; also the point fit's interval."""
    from scipy.special import comb

    from jaxsafety.scaling import bootstrap_power_law_lsq

    rng = np.random.default_rng(5)
    num_problems, n = 40, 20
    c = rng.binomial(n, rng.beta(0.3, 2.0, num_problems))
    attempts = np.full(num_problems, n)
    ks = np.arange(1, n + 1)
    key = jax.random.key(7)
    a, b = bootstrap_power_law_lsq(key, attempts, c, ks, num_resamples=24)
    assert a.shape == b.shape == (24,)
    draws = jax.vmap(lambda k: jax.random.randint(k, (num_problems,), 0, num_problems))
    for r, idx in enumerate(np.asarray(draws(jax.random.split(key, 24)))):
        fail = comb(n - c[idx][None, :], ks[:, None]) / comb(n, ks[:, None])
        y = -np.log1p(-fail.mean(axis=1))
        ok = y > 0
        slope, intercept = np.polyfit(np.log(ks[ok]), np.log(y[ok]), 1)
        np.testing.assert_allclose(float(b[r]), -slope, rtol=2e-4)
        np.testing.assert_allclose(float(a[r]), np.exp(intercept), rtol=2e-4)
    _, b_point = fit_power_law_lsq(ks, neg_log_pass_at_k(attempts, c, ks))
    lo, hi = np.percentile(np.asarray(b), [2.5, 97.5])
    assert lo < float(b_point) < hi and hi - lo > 1e-3  # the resamples differ
    again = bootstrap_power_law_lsq(key, attempts, c, ks, num_resamples=24)
    np.testing.assert_array_equal(np.asarray(again[1]), np.asarray(b))
    with pytest.raises(ConfigError, match="num_resamples=0"):
        bootstrap_power_law_lsq(key, attempts, c, ks, num_resamples=0)
    with pytest.raises(ConfigError, match="ks"):
        bootstrap_power_law_lsq(key, attempts, c, np.arange(1, 30), num_resamples=2)  # k > attempts


def test_pass_at_k_is_jittable_and_vmappable():
    n, c, k = jnp.array([10, 20, 30]), jnp.array([1, 5, 30]), jnp.array([3, 4, 5])
    eager = pass_at_k(n, c, k)
    np.testing.assert_array_equal(jax.jit(pass_at_k)(n, c, k), eager)
    np.testing.assert_array_equal(jax.vmap(pass_at_k)(n, c, k), eager)


@pytest.mark.parametrize(
    ("n", "c", "k", "field"),
    [
        (10, -1, 1, "c"),
        (10, 11, 1, "c"),
        (-3, 0, 1, "n"),
        (10, 2, 11, "k"),
        (10, 2, 0, "k"),
        (10, 2.5, 1, "c"),
        (np.array([10, 5]), np.array([1, 2]), 6, r"k\[1\]"),
    ],
)
def test_malformed_counts_raise_naming_the_field(n, c, k, field):
    with pytest.raises(ConfigError, match=rf"^{field}.*accepted values are"):
        pass_at_k(n, c, k)


def test_aggregate_rejects_budget_above_smallest_n():
    with pytest.raises(ConfigError, match=r"^ks\[1\]=.*k <= n"):
        aggregate_pass_at_k(np.array([10, 5]), np.array([1, 2]), np.array([2, 6]))


def test_traced_invalid_entries_give_nan():
    out = jax.jit(pass_at_k)(jnp.array([10, 10, 10]), jnp.array([1, 11, 1]), jnp.array([2, 2, 11]))
    assert np.isfinite(out[0]) and np.isnan(out[1]) and np.isnan(out[2])
