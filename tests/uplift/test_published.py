"""Tests of :mod:`jaxsafety.uplift.published` (Clymer et al. 2025 uplift model) against independent numpy/scipy
references written here: Fritsch-Carlson slopes by a plain loop over the 1980 paper's steps, the Hermite cubic by
``scipy.interpolate.CubicHermiteSpline`` (and ``PchipInterpolator`` where the two methods coincide), the delay
relation by root finding (``scipy.optimize.brentq``), the harm integral by ``scipy.integrate.quad`` in linear time
against ``scipy.stats.lognorm``, and the deployment projection by a numpy loop over the same random draws plus
closed-form expectations."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, interpolate, optimize, stats

from jaxsafety.config import ConfigError
from jaxsafety.uplift.published import (
    ASSISTANCE,
    PublishedInputs,
    attempt_slots,
    deployment_projection,
    expected_annual_harm,
    fritsch_carlson_slopes,
    monotone_interpolator,
    project_from_draws,
    sample_deployment_draws,
    success_probability,
    uplift,
)

INPUTS = PublishedInputs()
NUM_SIMS = 500

# ----------------------------------------------------------------------------------------------------------------
# independent references


def fc_slopes_reference(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, bool]:
    """Fritsch & Carlson (1980) Sec. 4, steps 1-5, as a plain loop; also whether step 5 (tau) ever fired."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    d = [(y[k + 1] - y[k]) / (x[k + 1] - x[k]) for k in range(n - 1)]
    m = [0.0] * n
    m[0], m[-1] = d[0], d[-1]
    for k in range(1, n - 1):
        m[k] = (d[k - 1] + d[k]) / 2 if d[k - 1] * d[k] > 0 else 0.0
    fired = False
    for k in range(n - 1):
        if d[k] == 0:
            m[k] = m[k + 1] = 0.0
            continue
        a, b = m[k] / d[k], m[k + 1] / d[k]
        if a * a + b * b > 9:
            fired = True
            tau = 3 / math.sqrt(a * a + b * b)
            m[k], m[k + 1] = tau * a * d[k], tau * b * d[k]
    return np.array(m), fired


def hermite_reference(x: np.ndarray, y: np.ndarray):
    """Clamped Fritsch-Carlson interpolant evaluated by scipy's cubic Hermite spline."""
    m, _ = fc_slopes_reference(x, y)
    spline = interpolate.CubicHermiteSpline(x, y, m)
    return lambda q: spline(np.clip(q, x[0], x[-1]))


def curve_reference(months, probs):
    f = hermite_reference(np.log(months), np.asarray(probs, float))
    return lambda t: f(np.log(np.maximum(t, 1e-12)))


def pre_time_by_root(inp: PublishedInputs, t: float) -> float:
    """r/Q solving r/Q + E(r) = t, E(r) = E0 + e1 r, by brentq (0 before any query gets through)."""

    def g(r):
        return r / inp.queries_per_month + inp.evasion_initial_months + inp.evasion_months_per_query * r - t

    if g(0.0) >= 0:
        return 0.0
    return (
        optimize.brentq(g, 0.0, t * inp.queries_per_month + 1.0, xtol=1e-14, rtol=1e-14)
        / inp.queries_per_month
    )


def p_reference(inp: PublishedInputs, assistance: str):
    none = curve_reference(inp.none_months, inp.none_probs)
    pre = curve_reference(inp.pre_months, inp.pre_probs)
    if assistance == "none":
        return none
    if assistance == "pre":
        return pre
    return lambda t: pre(np.vectorize(lambda s: pre_time_by_root(inp, s))(t))


def integral_reference(inp: PublishedInputs, assistance: str) -> float:
    """integral p_A(t) f_T(t) dt by quad in linear time, split at every knot, f_T a truncated scipy log-normal."""
    p = p_reference(inp, assistance)
    dist = stats.lognorm(s=inp.attacker_log_sigma, scale=inp.attacker_median_months)
    lo = inp.min_attempt_months
    slowdown = 1 + inp.queries_per_month * inp.evasion_months_per_query
    knots = [
        *inp.none_months,
        *inp.pre_months,
        *(inp.evasion_initial_months + slowdown * np.array(inp.pre_months)),
    ]
    edges = sorted({lo, *(k for k in knots if k > lo)})
    total = 0.0
    for a, b in itertools.pairwise(edges):
        total += integrate.quad(
            lambda t: float(p(t)) * dist.pdf(t), a, b, epsabs=1e-13, epsrel=1e-11, limit=200
        )[0]
    total += integrate.quad(lambda t: float(p(t)) * dist.pdf(t), edges[-1], np.inf, epsabs=1e-13, limit=200)[
        0
    ]
    return total / dist.sf(lo)


@pytest.fixture(scope="module")
def ref_integrals() -> dict[str, float]:
    return {a: integral_reference(INPUTS, a) for a in ASSISTANCE}


@pytest.fixture(scope="module")
def draws():
    return sample_deployment_draws(jax.random.key(0), INPUTS, NUM_SIMS)


@pytest.fixture(scope="module")
def projection(draws):
    return project_from_draws(INPUTS, draws)


# ----------------------------------------------------------------------------------------------------------------
# Fritsch-Carlson interpolation

_slopes = jax.jit(fritsch_carlson_slopes)
_interp = jax.jit(lambda x, y, q: monotone_interpolator(x, y)(q))
_curves = jax.jit(lambda t: jnp.stack([success_probability(INPUTS, a, t) for a in ASSISTANCE]))


def _datasets():
    rng = np.random.default_rng(0)
    out = []
    for _ in range(6):
        x = np.cumsum(rng.uniform(0.1, 2.0, 9))
        steps = rng.exponential(1.0, 8) * (rng.uniform(size=8) > 0.3)  # some flat intervals
        steps[rng.integers(8)] += 20.0  # a jump that makes step 5 fire
        out.append((x, np.concatenate([[0.0], np.cumsum(steps)])))
    return out


def test_slopes_match_paper_algorithm():
    fired_any = False
    for x, y in _datasets():
        ref, fired = fc_slopes_reference(x, y)
        fired_any |= fired
        np.testing.assert_allclose(
            np.asarray(_slopes(jnp.asarray(x), jnp.asarray(y))), ref, rtol=2e-5, atol=1e-5
        )
    assert fired_any, "the datasets must exercise the tau rescaling (alpha^2 + beta^2 > 9)"


def test_interpolant_exact_monotone_clamped_and_equal_to_scipy_hermite():
    for x, y in _datasets():
        q = np.concatenate([x, np.linspace(x[0] - 1.0, x[-1] + 1.0, 2001)])
        v = np.asarray(_interp(jnp.asarray(x), jnp.asarray(y), jnp.asarray(q)), float)
        np.testing.assert_allclose(v[: len(x)], y, rtol=1e-6, atol=1e-5)
        q, v = q[len(x) :], v[len(x) :]
        assert np.all(np.diff(v) >= -1e-5 * max(1.0, y[-1])), "not monotone"
        k = np.clip(np.searchsorted(x, q, side="right") - 1, 0, len(x) - 2)
        inside = (q >= x[0]) & (q <= x[-1])
        tol = 1e-5 * max(1.0, y[-1])
        assert np.all(v[inside] >= y[k][inside] - tol) and np.all(v[inside] <= y[k + 1][inside] + tol)
        assert np.all(v[q < x[0]] == np.float32(y[0])) and np.allclose(v[q > x[-1]], y[-1], rtol=1e-6)
        np.testing.assert_allclose(v, hermite_reference(x, y)(q), rtol=1e-5, atol=1e-5 * max(1.0, y[-1]))


def test_coincides_with_scipy_pchip_where_the_methods_agree():
    # Collinear and constant data: Fritsch-Carlson and scipy's (Fritsch-Butland) PCHIP both reproduce them
    # exactly. Elsewhere the two choose different interior slopes by design, so only this case is compared.
    # (Same shapes as _datasets so the jitted interpolant is reused.)
    x = np.cumsum(np.random.default_rng(1).uniform(0.1, 2.0, 9))
    q = np.linspace(x[0] - 1.0, x[-1] + 1.0, 2001 + 9)
    for y in (3.0 * x - 1.0, np.full(9, 0.2)):
        ours = np.asarray(_interp(jnp.asarray(x), jnp.asarray(y), jnp.asarray(q)))
        pchip = interpolate.PchipInterpolator(x, y)(np.clip(q, x[0], x[-1]))
        np.testing.assert_allclose(ours, pchip, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# success curves and the deterministic integral


def test_success_curves_match_reference_and_delay_relation():
    # a grid, then the published relation itself at query counts r: p_post(r/Q + E(r)) = p_pre(r/Q)
    r = np.array([1.0, 10.0, 50.0, 300.0, 2000.0])
    q, e0, e1 = INPUTS.queries_per_month, INPUTS.evasion_initial_months, INPUTS.evasion_months_per_query
    t = np.concatenate([np.geomspace(0.01, 200.0, 150), r / q + e0 + e1 * r, r / q])
    all_curves = np.asarray(_curves(jnp.asarray(t)))
    ours, lhs, rhs = all_curves[:, :150], all_curves[2, 150:155], all_curves[1, 155:]
    t = t[:150]
    for i, a in enumerate(ASSISTANCE):
        np.testing.assert_allclose(ours[i], p_reference(INPUTS, a)(t), rtol=2e-5, atol=1e-7, err_msg=a)
    np.testing.assert_allclose(lhs, rhs, rtol=2e-5)
    # safeguards never help an attacker: p_post <= p_pre (p_pre is non-decreasing)
    assert np.all(ours[2] <= ours[1] + 1e-7)


def test_expected_annual_harm_matches_quad(ref_integrals):
    scale = INPUTS.attempts_per_year * INPUTS.damage_per_success
    res = uplift(INPUTS)
    for a, got in zip(ASSISTANCE, (res.harm_none, res.harm_pre, res.harm_post)):
        np.testing.assert_allclose(float(got), scale * ref_integrals[a], rtol=1e-5, err_msg=a)
        np.testing.assert_allclose(float(expected_annual_harm(INPUTS, a)), float(got), rtol=1e-7)
    np.testing.assert_allclose(
        float(res.uplift_post), scale * (ref_integrals["post"] - ref_integrals["none"]), rtol=2e-5
    )
    np.testing.assert_allclose(
        float(res.uplift_pre), scale * (ref_integrals["pre"] - ref_integrals["none"]), rtol=2e-5
    )
    # the illustrative defaults are chosen so that the threshold separates mitigated from unmitigated uplift
    assert float(res.uplift_post) < INPUTS.risk_threshold < float(res.uplift_pre)


def test_closed_form_special_cases():
    # constant p_none = c: R = a D c whatever f_T (checks the truncated density's normalisation); zero evasion
    # time: p_post = p_pre, so R(A_post) = R(A_pre).
    c = 0.3
    special = PublishedInputs(
        none_probs=(c,) * len(INPUTS.none_months),
        evasion_initial_months=0.0,
        evasion_months_per_query=0.0,
        attempts_per_year=7.0,
        damage_per_success=3.0,
        min_attempt_months=1.5,
    )
    res = uplift(special)
    np.testing.assert_allclose(float(res.harm_none), 7.0 * 3.0 * c, rtol=1e-6)
    np.testing.assert_allclose(float(res.harm_post), float(res.harm_pre), rtol=1e-6)
    np.testing.assert_allclose(float(res.harm_pre), 21.0 * integral_reference(special, "pre"), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# deployment projection


def _projection_reference(inp: PublishedInputs, d, integrals: dict[str, float]):
    """Numpy loop over simulations and attempts, from the same draws."""
    jb = np.asarray(d.jailbreak_month, float)
    start, effort, u = (np.asarray(a, float) for a in (d.start_month, d.effort_months, d.uniform))
    n_att = np.asarray(d.num_attempts)
    s_count, months = jb.shape[0], inp.deployment_months
    scale = inp.attempts_per_year * inp.damage_per_success
    pre = curve_reference(inp.pre_months, inp.pre_probs)
    slowdown = 1 + inp.queries_per_month * inp.evasion_months_per_query
    p_pre_all = pre(effort)
    p_post_all = pre(np.maximum(effort - inp.evasion_initial_months, 0) / slowdown)
    risk = np.zeros((s_count, months))
    harm = np.zeros((s_count, months))
    ambiguous = np.zeros((s_count, months), bool)
    for s in range(s_count):
        a, b = jb[s], jb[s] + inp.grace_period_months
        for m in range(months):
            f = max(0.0, min(b, m + 1) - max(a, m))
            risk[s, m] = scale * (f * integrals["pre"] + (1 - f) * integrals["post"])
        for k in range(n_att[s]):
            p = p_pre_all[s, k] if a <= start[s, k] < b else p_post_all[s, k]
            m = math.floor(start[s, k])
            if u[s, k] < p:
                harm[s, m] += inp.damage_per_success
            if abs(u[s, k] - p) < 1e-5:  # float32 vs float64 could decide this one differently
                ambiguous[s, m] = True
    return risk, harm, ambiguous


def test_projection_matches_numpy_loop_on_same_draws(draws, projection, ref_integrals):
    risk, harm, ambiguous = _projection_reference(INPUTS, draws, ref_integrals)
    np.testing.assert_allclose(np.asarray(projection.risk), risk, rtol=2e-5)
    ours_harm = np.asarray(projection.realised_harm)
    assert np.array_equal(ours_harm[~ambiguous], harm[~ambiguous])
    none = INPUTS.attempts_per_year * INPUTS.damage_per_success * ref_integrals["none"]
    up = risk - none
    np.testing.assert_allclose(np.asarray(projection.uplift), up, rtol=5e-5, atol=1e-3)
    lo, hi = (1 - INPUTS.interval) / 2, (1 + INPUTS.interval) / 2
    np.testing.assert_allclose(np.asarray(projection.uplift_mean), up.mean(0), rtol=2e-5)
    np.testing.assert_allclose(np.asarray(projection.uplift_lower), np.quantile(up, lo, axis=0), rtol=5e-5)
    np.testing.assert_allclose(np.asarray(projection.uplift_upper), np.quantile(up, hi, axis=0), rtol=5e-5)
    np.testing.assert_allclose(np.asarray(projection.realised_harm_mean), ours_harm.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(projection.realised_harm_upper), np.quantile(ours_harm, hi, axis=0))
    above = up > INPUTS.risk_threshold
    np.testing.assert_allclose(np.asarray(projection.prob_above_threshold), above.mean(0), atol=1e-6)
    first = np.array([np.flatnonzero(row)[0] if row.any() else -1 for row in above])
    assert np.array_equal(np.asarray(projection.first_crossing), first)
    mean_above = np.flatnonzero(up.mean(0) > INPUTS.risk_threshold)
    assert int(projection.mean_first_crossing) == (mean_above[0] if mean_above.size else -1)
    assert 0 < (first >= 0).mean() < 1  # the illustrative defaults cross in some simulations, not all


def test_projection_statistics_match_closed_forms(draws, projection):
    s_count, months = NUM_SIMS, INPUTS.deployment_months
    # attempts: Poisson(a M / 12) in number, the slot cap never binds, efforts from the truncated log-normal
    n = np.asarray(draws.num_attempts, float)
    lam = INPUTS.attempts_per_year * months / 12
    assert abs(n.mean() - lam) < 5 * math.sqrt(lam / s_count)
    assert n.max() < attempt_slots(INPUTS)
    effort = np.asarray(draws.effort_months, float)[:, :10].ravel()
    dist = stats.lognorm(s=INPUTS.attacker_log_sigma, scale=INPUTS.attacker_median_months)
    lo_cdf = dist.cdf(INPUTS.min_attempt_months)
    trunc_cdf = lambda t: (dist.cdf(t) - lo_cdf) / (1 - lo_cdf)  # noqa: E731
    assert stats.kstest(effort, trunc_cdf).pvalue > 1e-3
    # jailbreak window: E[f_m] = int_m^{m+1} P(J <= s < J + G) ds, J ~ Exp(mean); compared year by year
    res = uplift(INPUTS)
    u_pre, u_post = float(res.uplift_pre), float(res.uplift_post)
    mean_j, g = INPUTS.jailbreak_mean_months, INPUTS.grace_period_months
    cdf = lambda x: 0.0 if x <= 0 else 1 - math.exp(-x / mean_j)  # noqa: E731
    expected_f = np.array(
        [integrate.quad(lambda s: cdf(s) - cdf(s - g), m, m + 1, points=[g])[0] for m in range(months)]
    )
    up = np.asarray(projection.uplift, float)
    for year in range(months // 12):
        sl = slice(12 * year, 12 * year + 12)
        yearly = up[:, sl].sum(1)
        want = (u_post + expected_f[sl] * (u_pre - u_post)).sum()
        assert abs(yearly.mean() - want) < 5 * yearly.std() / math.sqrt(s_count) + 1e-3 * abs(want), year
    # realised harm: E[harm in month m | J] = risk_m / 12 (uniform starts, thinning), summed over the deployment
    diff = np.asarray(projection.realised_harm, float).sum(1) - np.asarray(projection.risk, float).sum(1) / 12
    assert abs(diff.mean()) < 5 * diff.std() / math.sqrt(s_count)


def test_projection_deterministic_in_key():
    a = deployment_projection(jax.random.key(3), INPUTS, NUM_SIMS)
    b = deployment_projection(jax.random.key(3), INPUTS, NUM_SIMS)
    c = deployment_projection(jax.random.key(4), INPUTS, NUM_SIMS)
    assert np.array_equal(np.asarray(a.realised_harm), np.asarray(b.realised_harm))
    assert np.array_equal(np.asarray(a.uplift), np.asarray(b.uplift))
    assert not np.array_equal(np.asarray(a.realised_harm), np.asarray(c.realised_harm))


# ----------------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"attempts_per_year": -1.0}, "attempts_per_year"),
        ({"damage_per_success": 0.0}, "damage_per_success"),
        ({"pre_probs": (0.01, 0.05, 0.1, 0.09, 0.2, 0.3, 0.4)}, "pre_probs[3]"),
        ({"none_probs": (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 1.5)}, "none_probs[6]"),
        ({"none_probs": (0.1, 0.2)}, "none_probs"),
        ({"pre_months": (0.1, 0.5, 0.5, 3.0, 6.0, 12.0, 36.0)}, "pre_months[2]"),
        ({"none_months": (-1.0, 0.5, 1.0, 3.0, 6.0, 12.0, 36.0)}, "none_months[0]"),
        ({"pre_months": (1.0,), "pre_probs": (0.1,)}, "pre_months"),
        ({"pre_probs": ("a",) * 7}, "pre_probs"),
        ({"deployment_months": 96.5}, "deployment_months"),
        ({"interval": 1.0}, "interval"),
        ({"attacker_log_sigma": 0.0}, "attacker_log_sigma"),
        ({"min_attempt_months": 1e6}, "min_attempt_months"),
        ({"evasion_months_per_query": -0.1}, "evasion_months_per_query"),
        ({"grace_period_months": -1.0}, "grace_period_months"),
    ],
)
def test_bad_inputs_raise_config_error(kwargs, field):
    with pytest.raises(ConfigError, match="accepted values are") as err:
        PublishedInputs(**kwargs)
    assert err.value.field == field


def test_bad_call_arguments_raise_before_compute(draws):
    with pytest.raises(ConfigError, match=r"assistance='partial'.*one of 'none', 'pre', 'post'"):
        expected_annual_harm(INPUTS, "partial")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_simulations"):
        deployment_projection(jax.random.key(0), INPUTS, 0)
    other = PublishedInputs(attempts_per_year=50.0)
    with pytest.raises(ConfigError, match=r"draws\.start_month"):
        project_from_draws(other, draws)
