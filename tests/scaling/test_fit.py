"""MLE fits on simulated counts (numpy draws from known distributions), bootstrap, and the Fisher-information
budget against scipy. The quadrature-based fits (scaled Beta, Kumaraswamy, discretised) compile for ~10 s each on
a small CPU and are marked slow; their likelihoods and gradients are tested in test_distributions.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from jaxsafety.config import ConfigError
from jaxsafety.scaling import (
    DistributionParams,
    bootstrap_fit,
    exponent_standard_error,
    fit_distribution,
    predicted_passk_curve,
    samples_for_exponent_tolerance,
)


def _simulate(seed: int, sampler, num_problems: int, attempts: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.binomial(attempts, sampler(rng, num_problems))


def _scipy_beta_binomial_mle(n: int, c: np.ndarray) -> np.ndarray:
    """The beta-binomial MLE ``(alpha, beta)`` by scipy in float64 (independent of the library's likelihood and
    optimiser): Nelder-Mead from a fixed start, then BFGS to a gradient of 1e-10 in ``(log alpha, log beta)``."""
    counts, mult = np.unique(c, return_counts=True)

    def nll(theta: np.ndarray) -> float:
        return -float(mult @ stats.betabinom.logpmf(counts, n, *np.exp(theta))) / len(c)

    res = optimize.minimize(nll, np.log([0.5, 2.0]), method="Nelder-Mead", options={"xatol": 1e-10})
    res = optimize.minimize(nll, res.x, method="BFGS", options={"gtol": 1e-10})
    return np.exp(res.x)


@settings(max_examples=5, deadline=None)
@given(
    alpha=st.floats(0.2, 1.5),
    beta=st.floats(0.5, 5.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_mle_recovers_beta_parameters(alpha, beta, seed):
    num_problems, attempts = 2000, 100
    c = _simulate(seed, lambda rng, size: rng.beta(alpha, beta, size), num_problems, attempts)
    fit = fit_distribution(attempts, c, "beta", scaled=False)
    assert bool(fit.converged)
    assert float(fit.params.scale) == 1.0
    # Tolerance: 5 Cramer-Rao standard errors of alpha at the true parameters (the relative SE is 2-6% over this
    # range; exponent_standard_error is itself checked against scipy below).
    rel_se = exponent_standard_error(
        DistributionParams(alpha, beta, 1.0),
        "beta",
        scaled=False,
        num_problems=num_problems,
        samples_per_problem=attempts,
    )
    assert abs(float(fit.params.alpha) - alpha) <= 5 * rel_se * alpha
    assert float(fit.params.beta) == pytest.approx(beta, rel=0.25)
    # the observed-information SE the fit reports agrees with the expected-information one
    assert float(fit.exponent_se) == pytest.approx(rel_se * alpha, rel=0.3)


def test_bootstrap_se_agrees_with_asymptotic_se_and_is_deterministic():
    num_problems, attempts = 1000, 100  # 100 attempts: shares the compiled fit with the test above
    c = _simulate(0, lambda rng, size: rng.beta(0.5, 2.0, size), num_problems, attempts)
    fit = fit_distribution(attempts, c, "beta", scaled=False)
    key = jax.random.key(0)
    boot = bootstrap_fit(key, attempts, c, "beta", scaled=False, num_resamples=24)
    assert boot.fits.params.alpha.shape == (24,)
    assert bool(jnp.all(boot.fits.converged))
    # 24 resamples estimate an SE to ~15%; the asymptotic SE and the bootstrap SE must agree well within 2x
    assert 0.5 < float(boot.exponent_se) / float(fit.exponent_se) < 2.0
    lo, hi = (float(x) for x in boot.exponent_ci)
    assert lo < float(fit.params.alpha) < hi
    # the point fit computed beside the resamples is the plain fit
    np.testing.assert_allclose(float(boot.point.params.alpha), float(fit.params.alpha), rtol=1e-5)
    np.testing.assert_allclose(float(boot.point.params.beta), float(fit.params.beta), rtol=1e-5)
    again = bootstrap_fit(key, attempts, c, "beta", scaled=False, num_resamples=24)
    np.testing.assert_array_equal(again.fits.params.alpha, boot.fits.params.alpha)
    # Every fit stops at the optimum, not where float32 rounding stalled it: the point fit and the first resamples
    # (their documented draw: randint under each of split(key, R)) against scipy's float64 MLE. Measured |rel
    # diff| <= 1e-5 (float32's floor; the earlier stopping rule left up to 4e-4 on such resamples); 1e-4 allows
    # another CPU's rounding.
    idx = jax.vmap(lambda k: jax.random.randint(k, (num_problems,), 0, num_problems))(
        jax.random.split(key, 24)
    )
    for got, data in [(fit.params, c)] + [
        (jax.tree.map(lambda x, r=r: x[r], boot.fits.params), c[np.asarray(idx[r])]) for r in range(6)
    ]:
        np.testing.assert_allclose([got.alpha, got.beta], _scipy_beta_binomial_mle(attempts, data), rtol=1e-4)


def test_exponent_standard_error_matches_scipy_fisher_information():
    # Fisher information of the beta-binomial in theta = (log alpha, log beta) by exact summation over c with
    # scores from central differences of scipy's logpmf (float64): I = sum_c P(c) s_c s_c^T.
    alpha, beta, n, num_problems = 0.5, 2.0, 20, 300
    cs = np.arange(n + 1)
    h = 1e-5

    def logpmf(theta: np.ndarray) -> np.ndarray:
        return stats.betabinom.logpmf(cs, n, np.exp(theta[0]), np.exp(theta[1]))

    theta = np.log([alpha, beta])
    scores = np.stack([(logpmf(theta + h * e) - logpmf(theta - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
    info = (np.exp(logpmf(theta))[:, None, None] * scores[:, :, None] * scores[:, None, :]).sum(0)
    expected = np.sqrt(np.linalg.inv(info)[0, 0] / num_problems)
    got = exponent_standard_error(
        DistributionParams(alpha, beta, 1.0),
        "beta",
        scaled=False,
        num_problems=num_problems,
        samples_per_problem=n,
    )
    assert got == pytest.approx(expected, rel=1e-3)
    # one attempt per problem cannot separate alpha from beta
    one = exponent_standard_error(
        DistributionParams(alpha, beta, 1.0),
        "beta",
        scaled=False,
        num_problems=num_problems,
        samples_per_problem=1,
    )
    assert one == float("inf")


def test_samples_for_exponent_tolerance_is_the_smallest_sufficient_n():
    params = DistributionParams(0.3, 2.0, 1.0)
    kw = dict(scaled=False, num_problems=400)
    budget = samples_for_exponent_tolerance(params, "beta", rel_tolerance=0.25, max_samples=128, **kw)
    n = budget.samples_per_problem
    assert n is not None and 2 <= n <= 128

    def se(m: int) -> float:
        return exponent_standard_error(params, "beta", samples_per_problem=m, **kw)

    assert 1.96 * se(n) <= 0.25 < 1.96 * se(n - 1)
    assert budget.relative_se == pytest.approx(se(n), rel=1e-4)
    # below the floor set by observing each p_i exactly (and beyond max_samples): unreachable
    none = samples_for_exponent_tolerance(params, "beta", rel_tolerance=1e-3, max_samples=128, **kw)
    assert none.samples_per_problem is None and none.relative_se > 0


def test_malformed_fit_inputs_raise_naming_the_field():
    c = np.array([1, 2, 3])
    with pytest.raises(ConfigError, match=r"^family='gamma'"):
        fit_distribution(10, c, "gamma", scaled=False)
    with pytest.raises(ConfigError, match=r"^likelihood='poisson'"):
        fit_distribution(10, c, "beta", scaled=False, likelihood="poisson")
    with pytest.raises(ConfigError, match=r"^c\[2\]=11"):
        fit_distribution(10, np.array([1, 2, 11]), "beta", scaled=False)
    with pytest.raises(ConfigError, match=r"^n\[0\]=-5"):
        fit_distribution(np.array([-5, 10, 10]), c, "beta", scaled=False)
    with pytest.raises(ConfigError, match=r"^c\.shape"):
        fit_distribution(10, c.reshape(1, 3), "beta", scaled=False)
    with pytest.raises(ConfigError, match=r"^num_resamples=1"):
        bootstrap_fit(jax.random.key(0), 10, c, "beta", scaled=False, num_resamples=1)
    with pytest.raises(ConfigError, match=r"^rel_tolerance=-0\.1"):
        samples_for_exponent_tolerance(
            DistributionParams(0.3, 2.0, 1.0), "beta", scaled=False, num_problems=10, rel_tolerance=-0.1
        )


@pytest.mark.slow
def test_mle_recovers_scaled_beta_parameters():
    num_problems, attempts = 2000, 100
    alpha, beta, scale = 0.3, 3.0, 0.6
    c = _simulate(1, lambda rng, size: scale * rng.beta(alpha, beta, size), num_problems, attempts)
    fit = fit_distribution(attempts, c, "beta", scaled=True)
    assert bool(fit.converged)
    rel_se = exponent_standard_error(
        DistributionParams(alpha, beta, scale),
        "beta",
        scaled=True,
        num_problems=num_problems,
        samples_per_problem=attempts,
    )
    assert abs(float(fit.params.alpha) - alpha) <= 5 * rel_se * alpha
    assert float(fit.params.scale) == pytest.approx(scale, rel=0.15)
    # the unscaled fit to the same data cannot do better
    plain = fit_distribution(attempts, c, "beta", scaled=False)
    assert float(fit.log_likelihood) >= float(plain.log_likelihood) - 1e-2


@pytest.mark.slow
def test_mle_recovers_kumaraswamy_parameters():
    num_problems, attempts = 2000, 100
    a, b = 0.5, 2.0
    # inverse-CDF draws: x = (1 - (1 - u)^(1/b))^(1/a)
    c = _simulate(
        2, lambda rng, size: (1 - (1 - rng.uniform(size=size)) ** (1 / b)) ** (1 / a), num_problems, attempts
    )
    fit = fit_distribution(attempts, c, "kumaraswamy", scaled=False)
    assert bool(fit.converged)
    assert float(fit.params.alpha) == pytest.approx(a, rel=0.15)
    assert float(fit.params.beta) == pytest.approx(b, rel=0.25)


@pytest.mark.slow
def test_discretized_fit_approaches_the_binomial_fit_for_many_attempts():
    # With 2000 attempts per problem the binned rates c/n are close to p, so the discretised likelihood's MLE is
    # close to the truth (with few attempts it is biased: the bins are not the p's).
    num_problems, attempts = 1000, 2000
    c = _simulate(3, lambda rng, size: rng.beta(0.6, 2.0, size), num_problems, attempts)
    fit = fit_distribution(attempts, c, "beta", scaled=False, likelihood="discretized")
    assert bool(fit.converged)
    assert float(fit.params.alpha) == pytest.approx(0.6, rel=0.15)


@pytest.mark.slow
def test_fit_is_jittable_and_vmappable_and_curves_batch():
    # Traced data skip the (numpy) deduplication and the sufficient statistics: the same MLE by the general path.
    # Eager, jitted and vmapped fits each against scipy's float64 optimum (not against each other: the stopping
    # rule is a convergence test per lane, so each must reach the optimum). Measured |rel diff| <= 1e-5 (float32's
    # floor, on this AMD EPYC with its default ISA and with --xla_cpu_max_isa=AVX2 / SSE4_2); rtol 1e-4 leaves 10x.
    # (The earlier stopping rule stopped the eager fit of cs[1] 5e-4 away from the optimum.)
    rng = np.random.default_rng(4)
    cs = rng.binomial(50, rng.beta(0.5, 2.0, (3, 400)))
    truth = np.stack([_scipy_beta_binomial_mle(50, c) for c in cs])  # [3, (alpha, beta)]
    eager = [fit_distribution(50, c, "beta", scaled=False).params for c in cs]
    np.testing.assert_allclose([[float(p.alpha), float(p.beta)] for p in eager], truth, rtol=1e-4)
    jitted = jax.jit(lambda c: fit_distribution(50, c, "beta", scaled=False).params)(jnp.asarray(cs[0]))
    np.testing.assert_allclose([float(jitted.alpha), float(jitted.beta)], truth[0], rtol=1e-4)
    vmapped = jax.vmap(lambda c: fit_distribution(50, c, "beta", scaled=False).params)(jnp.asarray(cs))
    np.testing.assert_allclose(np.stack([vmapped.alpha, vmapped.beta], axis=1), truth, rtol=1e-4)
    # predicted curves of a batch of fits (e.g. bootstrap resamples): params [R] x budgets [K] -> [R, K]
    boot = bootstrap_fit(jax.random.key(1), 50, cs[0], "beta", scaled=False, num_resamples=4)
    curve = predicted_passk_curve(boot.fits.params, "beta", np.array([1, 10, 100]))
    assert curve.pass_at_k.shape == (4, 3) and curve.exponent.shape == (4,)
    one = predicted_passk_curve(
        jax.tree.map(lambda x: x[2], boot.fits.params), "beta", np.array([1, 10, 100])
    )
    np.testing.assert_allclose(curve.pass_at_k[2], one.pass_at_k, rtol=1e-6)
