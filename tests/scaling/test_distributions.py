"""Likelihoods of per-problem counts and the predicted pass@k curve, against scipy (closed forms in float64 and
adaptive quadrature with the endpoint singularities as quad's algebraic weights)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from jaxsafety.config import ConfigError
from jaxsafety.scaling import (
    DistributionParams,
    beta_binomial_logpmf,
    discretized_log_likelihood,
    kumaraswamy_binomial_logpmf,
    predicted_passk_curve,
    scaled_beta_binomial_logpmf,
    scaled_kumaraswamy_binomial_logpmf,
)

_WIDTH = 64  # every batch below is padded to this length, so each jitted likelihood compiles once per family


def _pad(*cols: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Pad equal-length columns to ``_WIDTH`` by repeating their first entry."""
    size = len(cols[0])
    assert size <= _WIDTH
    return [np.concatenate([np.asarray(c), np.repeat(np.asarray(c)[:1], _WIDTH - size)]) for c in cols], size


def _mixture(family: str, n, c, a, b, s) -> np.ndarray:
    (n, c, a, b, s), size = _pad(n, c, a, b, s)
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    fn = scaled_beta_binomial_logpmf if family == "beta" else scaled_kumaraswamy_binomial_logpmf
    return np.asarray(fn(n, c, f32(a), f32(b), f32(s)), np.float64)[:size]


def _reference_logpmf(family: str, n: int, c: int, a: float, b: float, s: float) -> float:
    """``log C(n,c) int_0^1 (s x)^c (1 - s x)^(n-c) f(x) dx`` in float64 by scipy.integrate.quad, with the density's
    endpoint behaviour ``x^(a-1) (1-x)^(b-1)`` as quad's algebraic weight (so the integrand left is smooth)."""
    if family == "beta":
        smooth = lambda x: 1.0 / special.beta(a, b)  # noqa: E731
    else:  # a b x^(a-1) (1 - x^a)^(b-1) = a b x^(a-1) (1-x)^(b-1) [(1 - x^a)/(1 - x)]^(b-1)
        smooth = lambda x: a * b * (((1 - x**a) / (1 - x)) if x < 1 else a) ** (b - 1)  # noqa: E731
    # the binomial factor divided by its maximum over p = s x in (0, s], so that quad sees values of order one
    p_max = min(c / n, s)
    log_max = (c * math.log(p_max) if c else 0.0) + ((n - c) * math.log1p(-p_max) if n > c else 0.0)

    def integrand(x: float) -> float:
        p = s * x
        if (c and p <= 0.0) or (n > c and p >= 1.0):
            return 0.0
        log_binom = (c * math.log(p) if c else 0.0) + ((n - c) * math.log1p(-p) if n > c else 0.0)
        return math.exp(log_binom - log_max) * smooth(x)

    val, _ = integrate.quad(
        integrand, 0, 1, weight="alg", wvar=(a - 1, b - 1), epsabs=0, epsrel=1e-11, limit=200
    )
    return math.log(math.comb(n, c)) + math.log(val) + log_max


def test_beta_binomial_matches_scipy():
    rows = [
        (n, c, a, b)
        for n in (1, 7, 100, 10_000)
        for c in sorted({0, 1, n // 3, n})
        for a, b in ((0.05, 0.3), (0.4, 2.0), (3.0, 20.0))
    ]
    n, c, a, b = (np.asarray(x) for x in zip(*rows))
    got = beta_binomial_logpmf(n, c, a.astype(np.float32), b.astype(np.float32))
    ref = stats.betabinom.logpmf(c, n, a, b)
    # float32 with the large-n cancellation avoided (betaln of ~5000 would be off by ~4e-3)
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=3e-5)


def test_scaled_beta_binomial_at_scale_one_equals_beta_binomial():
    rows = [
        (n, c, a, b)
        for n in (1, 20, 1000, 10_000)
        for c in sorted({0, 1, n // 2, n})
        for a, b in ((0.05, 0.2), (0.5, 3.0), (8.0, 40.0))
    ]
    n, c, a, b = (np.asarray(x) for x in zip(*rows))
    quad = _mixture("beta", n, c, a, b, np.ones(len(rows)))
    ref = stats.betabinom.logpmf(c, n, a, b)
    np.testing.assert_allclose(quad, ref, rtol=2e-6, atol=2e-5)


def test_scaled_and_kumaraswamy_binomial_match_scipy_quad():
    rows = [
        (fam, n, c, a, b, s)
        for fam in ("beta", "kumaraswamy")
        for (n, c) in ((1, 0), (10, 0), (10, 3), (50, 50), (50, 7))
        for (a, b, s) in ((0.2, 0.5, 1.0), (1.5, 4.0, 0.4), (0.3, 3.0, 0.7))
        if not (c == n and s < 1 and fam == "kumaraswamy" and a > 1)  # below float32 range, nothing to test
    ]
    for fam in ("beta", "kumaraswamy"):
        sel = [r[1:] for r in rows if r[0] == fam]
        n, c, a, b, s = (np.asarray(x) for x in zip(*sel))
        got = _mixture(fam, n, c, a, b, s)
        ref = np.asarray([_reference_logpmf(fam, *r) for r in sel])
        np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-5, err_msg=fam)
    # the unscaled Kumaraswamy entry point is the same integral at scale 1
    (n, c, a, b), size = _pad(
        np.array([10, 10]), np.array([3, 0]), np.array([0.2, 1.5]), np.array([0.5, 4.0])
    )
    got = kumaraswamy_binomial_logpmf(n, c, a.astype(np.float32), b.astype(np.float32))[:size]
    ref = [
        _reference_logpmf("kumaraswamy", 10, 3, 0.2, 0.5, 1.0),
        _reference_logpmf("kumaraswamy", 10, 0, 1.5, 4.0, 1.0),
    ]
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-5)


def test_quadrature_gradients_match_scipy_finite_differences():
    # d/d(alpha, beta, scale) of the scaled beta-binomial quadrature vs central differences of the scipy quad
    # reference (float64). Forward mode (jacfwd): the derivatives the fits' Hessians are built from.
    n, c, a, b, s = 30, 4, 0.4, 2.5, 0.7
    got = jax.jacfwd(lambda th: scaled_beta_binomial_logpmf(n, c, th[0], th[1], th[2]))(
        jnp.asarray([a, b, s])
    )
    h = 1e-5
    point = np.array([a, b, s])
    fd = [
        (
            _reference_logpmf("beta", n, c, *(point + h * e))
            - _reference_logpmf("beta", n, c, *(point - h * e))
        )
        / (2 * h)
        for e in np.eye(3)
    ]
    np.testing.assert_allclose(got, fd, rtol=1e-4)


def test_discretized_likelihood_matches_cdf_differences():
    n = np.array([10, 10, 10, 10, 100, 100, 100, 7])
    c = np.array([0, 3, 9, 10, 0, 57, 100, 6])
    lo, hi = np.maximum(c - 0.5, 0) / n, np.minimum(c + 0.5, n) / n
    a, b, s = 0.4, 3.0, 0.95

    def kuma_cdf(x):
        return 1 - (1 - x**a) ** b

    for fam, cdf in (("beta", lambda x: stats.beta.cdf(x, a, b)), ("kumaraswamy", kuma_cdf)):
        for scale in (1.0, s):
            params = DistributionParams(jnp.float32(a), jnp.float32(b), jnp.float32(scale))
            got = np.asarray(discretized_log_likelihood(params, n, c, fam), np.float64)
            mass = cdf(np.minimum(hi / scale, 1)) - cdf(np.minimum(lo / scale, 1))
            ref = np.log(np.maximum(mass, np.exp(-200.0)))  # bins beyond the scale: floored at -200
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=f"{fam} {scale}")
    # custom bins: [0, 0.1), [0.1, 0.5), [0.5, 1]
    edges = np.array([0.0, 0.1, 0.5, 1.0])
    params = DistributionParams(jnp.float32(a), jnp.float32(b), jnp.float32(1.0))
    got = discretized_log_likelihood(params, n, c, "kumaraswamy", bin_edges=edges)
    mass = np.diff(kuma_cdf(edges))
    ref = np.log(mass[np.clip(np.searchsorted(edges, c / n, side="right") - 1, 0, 2)])
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def _geom_ks() -> np.ndarray:
    return np.unique(np.round(np.geomspace(1, 1e6, 70)))[:_WIDTH]


def test_predicted_curve_matches_closed_form_and_quadrature():
    ks = _geom_ks()
    a, b = 0.35, 1.7
    curve = predicted_passk_curve(DistributionParams(a, b, 1.0), "beta", ks)
    # E[(1-p)^k] = B(alpha, beta + k) / B(alpha, beta) for p ~ Beta(alpha, beta)
    fail = np.exp(special.betaln(a, b + ks) - special.betaln(a, b))
    # float32: the log-gamma normaliser carries ~1e-6 absolute error
    np.testing.assert_allclose(curve.pass_at_k, 1 - fail, rtol=3e-5)
    np.testing.assert_allclose(curve.neg_log_pass_at_k, -np.log1p(-fail), rtol=3e-5)
    # scaled Beta and Kumaraswamy: E[(1 - s x)^k] by quad, = the probability of 0 successes in k attempts
    for fam, (a, b, s) in (("beta", (0.5, 2.0, 0.6)), ("kumaraswamy", (0.6, 2.5, 0.8))):
        curve = predicted_passk_curve(DistributionParams(a, b, s), fam, ks)
        for i in (0, 20, 40):
            ref = math.exp(_reference_logpmf(fam, int(ks[i]), 0, a, b, s))
            assert float(curve.pass_at_k[i]) == pytest.approx(1 - ref, rel=3e-5), (fam, ks[i])


def test_exact_beta_curve_has_log_log_slope_minus_alpha():
    # Independent of our code: for p ~ Beta(alpha, beta), -log pass@k = -log(1 - B(alpha, beta+k)/B(alpha, beta)),
    # whose log-log slope between k = 1e4 and 1e5 approaches -alpha (Schaeffer et al. 2025, section 5).
    for alpha, beta in ((0.3, 1.0), (0.6, 3.0), (1.2, 0.8)):
        ks = np.array([1e4, 1e5])
        y = -np.log1p(-np.exp(special.betaln(alpha, beta + ks) - special.betaln(alpha, beta)))
        slope = np.diff(np.log(y))[0] / np.diff(np.log(ks))[0]
        assert slope == pytest.approx(-alpha, rel=0.05), (alpha, beta)


@pytest.mark.parametrize("family", ["beta", "kumaraswamy"])
def test_predicted_curve_approaches_its_power_law(family):
    # The implied exponent is alpha (Beta) / a (Kumaraswamy: density ~ a b x^(a-1) near 0) and the prefactor
    # Gamma(a+b)/(Gamma(b) s^a) / b Gamma(a+1) / s^a: the curve's local slope and ratio at k ~ 1e6 must agree.
    a, b, s = 0.5, 2.0, 0.7
    curve = predicted_passk_curve(DistributionParams(a, b, s), family, _geom_ks())
    y, ks = np.asarray(curve.neg_log_pass_at_k, np.float64), _geom_ks()
    slope = (math.log(y[-1]) - math.log(y[-6])) / (math.log(ks[-1]) - math.log(ks[-6]))
    assert float(curve.exponent) == a
    assert slope == pytest.approx(-a, rel=0.02)
    assert y[-1] / (float(curve.prefactor) * ks[-1] ** -a) == pytest.approx(1.0, rel=0.02)
    expected = math.gamma(a + b) / math.gamma(b) if family == "beta" else b * math.gamma(a + 1)
    assert float(curve.prefactor) == pytest.approx(expected / s**a, rel=1e-5)


def test_malformed_inputs_raise_naming_the_field():
    good = DistributionParams(0.5, 2.0, 1.0)
    with pytest.raises(ConfigError, match=r"^params\.alpha=-1\.0"):
        predicted_passk_curve(DistributionParams(-1.0, 2.0, 1.0), "beta", np.array([1, 2]))
    with pytest.raises(ConfigError, match=r"^params\.scale=1\.5"):
        discretized_log_likelihood(DistributionParams(0.5, 2.0, 1.5), np.array([5]), np.array([1]), "beta")
    with pytest.raises(ConfigError, match=r"^family='gamma'.*'beta', 'kumaraswamy'"):
        predicted_passk_curve(good, "gamma", np.array([1, 2]))
    with pytest.raises(ConfigError, match=r"^ks="):
        predicted_passk_curve(good, "beta", np.array([0, 2]))
    with pytest.raises(ConfigError, match=r"^c\[1\]=7.*0 <= c <= n \(here n=5\)"):
        beta_binomial_logpmf(np.array([5, 5]), np.array([1, 7]), 0.5, 2.0)
    with pytest.raises(ConfigError, match=r"^c=-1"):
        scaled_beta_binomial_logpmf(5, -1, 0.5, 2.0, 0.5)
    with pytest.raises(ConfigError, match=r"^bin_edges="):
        discretized_log_likelihood(
            good, np.array([5]), np.array([1]), "beta", bin_edges=np.array([0.0, 0.7, 0.5])
        )
