"""Censored survival fits of jailbreak-discovery times (jaxsafety.uplift.survival) against independent
references: scipy's log-densities / survival functions / quantiles, scipy's censored MLE and a Nelder-Mead
minimisation of a scipy-built negative log-likelihood, finite-difference Hessians and gradients, and planted
parameters."""

from __future__ import annotations

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from jaxsafety.config import ConfigError
from jaxsafety.uplift import survival as sv

PLANTED = {"weibull": {"shape": 0.7, "scale": 50.0}, "lognormal": {"mu": 3.0, "sigma": 1.3}}
FAST_N = 250  # one padded size (256) for all small fits, so each family compiles once


def scipy_dist(family: str, p: dict[str, float]):
    if family == "weibull":
        return scipy.stats.weibull_min(c=p["shape"], scale=p["scale"])
    return scipy.stats.lognorm(s=p["sigma"], scale=math.exp(p["mu"]))


def simulate(family: str, n: int, seed: int, weights: bool = False) -> sv.RedTeamData:
    """Planted discovery times, censored by independent uniform effort budgets on (0, 3 x the median)."""
    rng = np.random.default_rng(seed)
    dist = scipy_dist(family, PLANTED[family])
    t = dist.rvs(size=n, random_state=rng)
    c = rng.uniform(0.0, 3.0 * dist.median(), n)
    w = rng.integers(1, 4, n).astype(float) if weights else np.ones(n)
    return sv.RedTeamData(np.minimum(t, c), t <= c, w)


def reference_nll(family: str, p: dict[str, float], time, found, weight) -> float:
    """-sum w [found logpdf + censored logsf], all from scipy."""
    dist = scipy_dist(family, p)
    terms = np.where(found, dist.logpdf(time), dist.logsf(time))
    return -float(np.sum(weight * terms))


def to_params(family: str, x) -> dict[str, float]:
    """Unconstrained (log k, log lam) / (mu, log sigma) -> natural parameters (the reference's own
    mapping)."""
    if family == "weibull":
        return {"shape": math.exp(x[0]), "scale": math.exp(x[1])}
    return {"mu": float(x[0]), "sigma": math.exp(x[1])}


def scipy_censored_fit(family: str, time, found, weight) -> dict[str, float]:
    """scipy's own censored MLE (``fit(CensoredData, floc=0)``, fmin with xtol 1e-4); integer ``weight`` as
    repeated rows."""
    reps = weight.astype(int)
    assert np.all(reps == weight)
    t, d = np.repeat(time, reps), np.repeat(found, reps)
    censored = scipy.stats.CensoredData(uncensored=t[d], right=t[~d])
    if family == "weibull":
        k, _, lam = scipy.stats.weibull_min.fit(censored, floc=0)
        return {"shape": k, "scale": lam}
    sigma, _, scale = scipy.stats.lognorm.fit(censored, floc=0)
    return {"mu": math.log(scale), "sigma": sigma}


def reference_mle(family: str, time, found, weight) -> dict[str, float]:
    """scipy's censored fit polished by a tight Nelder-Mead on the scipy negative log-likelihood."""
    start = scipy_censored_fit(family, time, found, weight)
    x0 = (
        np.log([start["shape"], start["scale"]])
        if family == "weibull"
        else [start["mu"], math.log(start["sigma"])]
    )
    res = scipy.optimize.minimize(
        lambda x: reference_nll(family, to_params(family, x), time, found, weight),
        x0,
        method="Nelder-Mead",
        options={"xatol": 1e-11, "fatol": 1e-12, "maxiter": 4000},
    )
    assert res.success
    return to_params(family, res.x)


def fd_hessian(fn, x: np.ndarray, h: float) -> np.ndarray:
    """Central finite-difference Hessian with relative steps ``h * |x|``."""
    steps = h * np.abs(x)
    out = np.zeros((x.size, x.size))
    for i in range(x.size):
        for j in range(x.size):
            ei, ej = np.eye(x.size)[i] * steps[i], np.eye(x.size)[j] * steps[j]
            out[i, j] = (fn(x + ei + ej) - fn(x + ei - ej) - fn(x - ei + ej) + fn(x - ei - ej)) / (
                4 * steps[i] * steps[j]
            )
    return out


@pytest.mark.parametrize("family", sv.FAMILIES)
def test_log_likelihood_matches_scipy(family):
    rng = np.random.default_rng(0)
    time = rng.lognormal(2.0, 1.5, 40)
    found = rng.random(40) < 0.6
    weight = rng.uniform(0.0, 3.0, 40)
    p = {"weibull": {"shape": 1.7, "scale": 9.0}, "lognormal": {"mu": 1.5, "sigma": 0.8}}[family]
    expected = -reference_nll(family, p, time, found, weight)
    with jax.enable_x64():  # one jitted program (eager mode would compile every primitive separately)
        got, as_array = jax.jit(
            lambda p, x: (
                sv.log_likelihood(family, p, time, found, weight),
                sv.log_likelihood(family, x, time, found, weight),
            )
        )(p, jnp.array([p[n] for n in sv.PARAM_NAMES[family]]))
    np.testing.assert_allclose(float(got), expected, rtol=1e-11)
    np.testing.assert_allclose(float(as_array), expected, rtol=1e-11)


@pytest.mark.slow  # ~2 s per family of compile; the fast tests check the same derivatives at the optimum
@pytest.mark.parametrize("family", sv.FAMILIES)
def test_closed_form_derivatives_match_autodiff(family):
    """The Newton solver's hand-written gradient / Hessian in theta vs jax autodiff of the plain likelihood
    (the fast tests see them through the fit: the gradient by the optimum matching scipy's, the Hessian by cov
    matching the inverse of a finite-difference Hessian)."""
    rng = np.random.default_rng(1)
    time = rng.lognormal(2.0, 1.5, 30)
    found = rng.random(30) < 0.5
    weight = rng.uniform(0.0, 2.0, 30)
    theta = np.array([0.3, 2.2]) if family == "weibull" else np.array([2.5, -0.2])
    with jax.enable_x64():

        def loglik(th):
            a, b = sv._natural(family, th)
            return sv._weighted_loglik(family, a, b, jnp.log(time), found, weight)

        @jax.jit
        def both(th):
            closed = sv._loglik_derivatives(family, th, jnp.log(time), found, weight)
            return closed, (loglik(th), jax.grad(loglik)(th), jax.hessian(loglik)(th))

        (value, grad, hess), (value_ad, grad_ad, hess_ad) = both(jnp.asarray(theta))
    np.testing.assert_allclose(value, value_ad, rtol=1e-12)
    np.testing.assert_allclose(grad, grad_ad, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hess, hess_ad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("family", sv.FAMILIES)
def test_fit_matches_scipy_reference_mle_and_hessian(family):
    data = simulate(family, FAST_N, seed=2, weights=True)
    fit = sv.fit_survival(data, family)
    assert fit.converged and 0 < fit.num_iterations < 30
    ref = reference_mle(family, data.time, data.found, data.weight)
    names = sv.PARAM_NAMES[family]
    for name in names:
        np.testing.assert_allclose(fit.params[name], ref[name], rtol=1e-6)
    np.testing.assert_allclose(
        fit.loglik, -reference_nll(family, fit.params, data.time, data.found, data.weight), rtol=1e-12
    )
    # frequency weights = repeated rows: scipy's own censored MLE on the expanded data (fmin, xtol 1e-4)
    scipy_fit = scipy_censored_fit(family, data.time, data.found, data.weight)
    for name in names:
        np.testing.assert_allclose(fit.params[name], scipy_fit[name], rtol=1e-3, atol=1e-3)
    # cov = inverse of the finite-difference Hessian of the scipy negative log-likelihood (natural params)
    x = np.array([fit.params[n] for n in names])
    fd = fd_hessian(
        lambda v: reference_nll(family, dict(zip(names, v, strict=True)), data.time, data.found, data.weight),
        x,
        1e-4,
    )
    np.testing.assert_allclose(fit.cov, np.linalg.inv(fd), rtol=1e-4)


def _recovery(family: str, n: int, seed: int) -> np.ndarray:
    data = simulate(family, n, seed)
    fit = sv.fit_survival(data, family)
    assert fit.converged
    se = np.sqrt(np.diag(fit.cov))
    for i, name in enumerate(sv.PARAM_NAMES[family]):
        assert abs(fit.params[name] - PLANTED[family][name]) < 4 * se[i], (name, fit.params[name], se[i])
    # standard errors shrink like 1/sqrt(n): a cov off by a constant factor would fail one of the two sizes
    return se


@pytest.mark.parametrize("family", sv.FAMILIES)
def test_planted_parameters_recovered(family):
    _recovery(family, FAST_N, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("family", sv.FAMILIES)
def test_planted_parameters_recovered_large(family):
    se = _recovery(family, 20000, seed=4)
    assert np.all(se < 0.05 * np.abs([PLANTED[family][n] for n in sv.PARAM_NAMES[family]]))


def _check_bootstrap(family: str, n: int, num_resamples: int, rtol: float) -> None:
    data = simulate(family, n, seed=5)
    fit = sv.fit_survival(data, family)
    boot = sv.bootstrap_survival(data, family, num_resamples=num_resamples, seed=7)
    assert boot["converged"].all()
    names = sv.PARAM_NAMES[family]
    for i, name in enumerate(names):
        draws = boot[name]
        assert draws.shape == (num_resamples,)
        lo, hi = np.percentile(draws, [2.5, 97.5])
        assert lo < fit.params[name] < hi
        # independent check of the spread: the asymptotic standard error from the observed information (at
        # n = 250 the two differ by up to ~20% from one data set to the next; at n = 2000 by a few %)
        se = math.sqrt(fit.cov[i, i])
        np.testing.assert_allclose(draws.std(ddof=1), se, rtol=rtol)
        np.testing.assert_allclose(hi - lo, 2 * 1.96 * se, rtol=rtol)
    # resample r is a weighted refit: reproduce its multiplicities and refit it directly
    with jax.enable_x64():
        padded = max(256, 1 << (n - 1).bit_length())
        counts = np.asarray(sv._bootstrap_counts(jax.random.key(7), num_resamples, padded, n))
    assert np.all(counts[:, n:] == 0) and np.all(counts.sum(axis=1) == n)
    counts = counts[:, :n]
    for r in (0, num_resamples - 1):
        refit = sv.fit_survival(data._replace(weight=counts[r] * data.weight), family)
        for name in names:
            np.testing.assert_allclose(boot[name][r], refit.params[name], rtol=1e-7)
    again = sv.bootstrap_survival(data, family, num_resamples=num_resamples, seed=7)
    np.testing.assert_array_equal(again[names[0]], boot[names[0]])
    # summary: JSON-ready, median time = scipy's median of the fitted distribution
    out = json.loads(json.dumps(sv.summary(fit, boot)))
    np.testing.assert_allclose(
        out["median_time"]["estimate"], scipy_dist(family, fit.params).median(), rtol=1e-10
    )
    lo, hi = out["median_time"]["interval_95"]
    assert lo < out["median_time"]["estimate"] < hi
    assert out["params"][names[1]]["interval_95"] == pytest.approx(
        list(np.percentile(boot[names[1]], [2.5, 97.5]))
    )


def test_bootstrap_weibull():
    _check_bootstrap("weibull", FAST_N, 200, rtol=0.3)


def test_bootstrap_flags_resamples_without_two_event_times():
    """Two events among 20 rows: a resample converges iff it drew both event rows (else the MLE need not
    exist: with no event the scale would run off to infinity while the gradient vanishes)."""
    rng = np.random.default_rng(0)
    time = np.concatenate([[3.0, 7.0], rng.uniform(1.0, 20.0, 18)])
    data = sv.RedTeamData(time, np.arange(20) < 2, np.ones(20))
    boot = sv.bootstrap_survival(data, "weibull", num_resamples=200, seed=3)
    with jax.enable_x64():
        counts = np.asarray(sv._bootstrap_counts(jax.random.key(3), 200, 256, 20))
    drew_both = (counts[:, 0] > 0) & (counts[:, 1] > 0)
    assert 0 < drew_both.sum() < 200
    np.testing.assert_array_equal(boot["converged"], drew_both)
    out = sv.summary(sv.fit_survival(data, "weibull"), boot)
    assert out["num_resamples_converged"] == drew_both.sum()
    lo, hi = out["params"]["shape"]["interval_95"]
    np.testing.assert_allclose([lo, hi], np.percentile(boot["shape"][drew_both], [2.5, 97.5]))


@pytest.mark.slow
@pytest.mark.parametrize("family", sv.FAMILIES)
def test_bootstrap_large(family):
    _check_bootstrap(family, 2000, 400, rtol=0.12)


@pytest.mark.parametrize("family", sv.FAMILIES)
def test_quantiles_survival_and_pathwise_gradient(family):
    p = {"weibull": {"shape": 0.8, "scale": 30.0}, "lognormal": {"mu": 2.0, "sigma": 1.1}}[family]
    dist = scipy_dist(family, p)
    u = np.array([1e-6, 0.01, 0.2, 0.5, 0.77, 0.999])
    names = sv.PARAM_NAMES[family]
    batch = {n: np.full(3, p[n]) * np.array([1.0, 1.1, 0.9]) for n in names}  # bootstrap-style draws

    def smooth(x):
        return jnp.sum(jnp.sqrt(sv.sample_times(family, dict(zip(names, x, strict=True)), u)))

    with jax.enable_x64():  # one jitted program (eager mode would compile every primitive separately)
        times, sf, median, batched, grad = jax.jit(
            lambda p, batch, x: (
                sv.sample_times(family, p, u),
                sv.survival_function(family, p, dist.ppf(u)),
                sv.median_time(family, p),
                sv.sample_times(family, batch, u[1:4]),
                jax.grad(smooth)(x),
            )
        )(p, batch, jnp.array([p[n] for n in names]))
        x = np.array([p[n] for n in names])
    np.testing.assert_allclose(times, dist.ppf(u), rtol=1e-10)
    np.testing.assert_allclose(sf, dist.sf(dist.ppf(u)), rtol=1e-9)
    np.testing.assert_allclose(median, dist.median(), rtol=1e-12)
    want = [scipy_dist(family, {n: batch[n][i] for n in names}).ppf(u[1 + i]) for i in range(3)]
    np.testing.assert_allclose(batched, want, rtol=1e-10)
    # central differences of the scipy quantiles (an independent computation of the same function)
    for i in range(2):
        h = 1e-6 * abs(float(x[i]))
        e = np.eye(2)[i] * h
        up = np.sum(np.sqrt(scipy_dist(family, dict(zip(names, x + e, strict=True))).ppf(u)))
        down = np.sum(np.sqrt(scipy_dist(family, dict(zip(names, x - e, strict=True))).ppf(u)))
        np.testing.assert_allclose(grad[i], (up - down) / (2 * h), rtol=1e-6)


def test_example_csv_matches_documented_provenance_and_fits():
    data = sv.read_redteam_csv(sv.example_redteam_path())
    rng = np.random.default_rng(2505)
    t = 120 * rng.weibull(0.7, 60)
    c = rng.uniform(10, 300, 60)
    np.testing.assert_allclose(data.time, np.maximum(np.round(np.minimum(t, c), 1), 0.1))
    np.testing.assert_array_equal(data.found, t <= c)
    np.testing.assert_array_equal(data.weight, np.ones(60))
    fit = sv.fit_survival(data, "weibull")
    ref = reference_mle("weibull", data.time, data.found, data.weight)
    np.testing.assert_allclose(
        [fit.params["shape"], fit.params["scale"]], [ref["shape"], ref["scale"]], rtol=1e-6
    )


def test_csv_labels_and_weights(tmp_path):
    path = tmp_path / "attempts.csv"
    path.write_text(
        "Time,FOUND,weight,notes\n1.5,Yes,2,a\n3,no,0.5,b\n\n4,TRUE,1,c\n8,false,3,d\n2,1,1,e\n9,0,1,f\n"
    )
    data = sv.read_redteam_csv(path)
    np.testing.assert_array_equal(data.time, [1.5, 3, 4, 8, 2, 9])
    np.testing.assert_array_equal(data.found, [True, False, True, False, True, False])
    np.testing.assert_array_equal(data.weight, [2, 0.5, 1, 3, 1, 1])
    assert data.time.dtype == np.float64 and data.found.dtype == bool


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "time,found\n0,1\n2,1\n",
            "redteam.csv:row 2:time='0' is invalid: accepted values are finite numbers > 0",
        ),
        ("time,found\n1,1\nnan,1\n", "redteam.csv:row 3:time='nan' is invalid: accepted values are finite"),
        ("time,found\n1,1\n-2,0\n", "redteam.csv:row 3:time='-2' is invalid"),
        ("time,found\nabc,1\n", "redteam.csv:row 2:time='abc' is invalid"),
        (
            "time,found\n1,1\n2,maybe\n",
            "row 3:found='maybe' is invalid: accepted values are 1/0, true/false or yes/no",
        ),
        (
            "time,found,weight\n1,1,-1\n",
            "row 2:weight='-1' is invalid: accepted values are finite numbers >= 0",
        ),
        ("time,found,weight\n1,1,inf\n", "redteam.csv:row 2:weight='inf' is invalid"),
        (
            "time,success\n1,1\n",
            "redteam.csv:columns=['time', 'success'] is invalid: accepted values are a header",
        ),
        ("time,found\n1,0\n2,no\n", "redteam.csv:found='no row found (with weight > 0)' is invalid"),
        (
            "time,found,weight\n1,1,0\n2,0,1\n",
            "at least one uncensored row: with every attempt censored the MLE",
        ),
        (
            "time,found\n3,1\n3,yes\n5,0\n",
            "found='every found row at time 3' is invalid: accepted values are",
        ),
        ("time,found\n3,1\n3,yes\n5,0\n", "uncensored rows at >= 2 distinct times"),
        ("time,found\n1,1\n2,1,7\n", "redteam.csv:row 3="),
        ("time,found\n", "path="),
    ],
)
def test_malformed_csv(tmp_path, text, message):
    path = tmp_path / "redteam.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        sv.read_redteam_csv(path)


def test_bad_arguments_raise_before_compute(tmp_path):
    data = simulate("weibull", 20, seed=0)
    with pytest.raises(
        ConfigError, match=re.escape("family='gamma' is invalid: accepted values are one of 'weibull'")
    ):
        sv.fit_survival(data, "gamma")
    with pytest.raises(
        ConfigError, match=re.escape("num_resamples=0 is invalid: accepted values are integers >= 1")
    ):
        sv.bootstrap_survival(data, "weibull", num_resamples=0, seed=0)
    with pytest.raises(
        ConfigError, match=re.escape("time[1]=-1 is invalid: accepted values are finite numbers > 0")
    ):
        sv.fit_survival(data._replace(time=np.array([1.0, -1.0] + [2.0] * 18)), "weibull")
    with pytest.raises(ConfigError, match=re.escape("weight='shape (3,)' is invalid")):
        sv.fit_survival(data._replace(weight=np.ones(3)), "weibull")
    with pytest.raises(ConfigError, match=re.escape("found[0]=2 is invalid: accepted values are booleans")):
        sv.fit_survival(data._replace(found=np.full(20, 2)), "weibull")
    with pytest.raises(
        ConfigError, match=re.escape("params=['mu', 'shape'] is invalid: accepted values are a dict")
    ):
        sv.sample_times("weibull", {"shape": 1.0, "mu": 1.0}, 0.5)
    with pytest.raises(
        ConfigError, match=re.escape("params['sigma']=-1 is invalid: accepted values are finite")
    ):
        sv.quantile("lognormal", {"mu": 1.0, "sigma": -1.0}, 0.5)
    with pytest.raises(ConfigError, match=re.escape("path=")):
        sv.read_redteam_csv(tmp_path / "missing.csv")
