"""Chinchilla approach 3 (Besiroglu et al. 2024): planted recovery, scipy on the same objective, the closed-form
compute-optimal allocation against a numeric minimisation, the bootstrap, the offset power law, input checks."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special

from jaxsafety.config import ConfigError
from jaxsafety.scaling.chinchilla import (
    CHINCHILLA_GRID,
    ChinchillaParams,
    bootstrap_chinchilla,
    bootstrap_power_law_offset,
    compute_optimal,
    fit_chinchilla,
    fit_power_law_offset,
    predict_loss,
)

# Besiroglu et al. 2024, table 1 (their refit of Hoffmann et al.'s approach 3)
TRUE = ChinchillaParams(E=1.82, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
NUM_POINTS = 200  # one padded size (208) for every fit below: one compilation
DELTA = 1e-3


def _planted(seed: int, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``N`` log-uniform in [1e7, 1e10], ``D`` in [1e9, 1e12]; losses times lognormal noise ``sigma``."""
    rng = np.random.default_rng(seed)
    n = 10.0 ** rng.uniform(7, 10, NUM_POINTS)
    d = 10.0 ** rng.uniform(9, 12, NUM_POINTS)
    loss = TRUE.E + TRUE.A / n**TRUE.alpha + TRUE.B / d**TRUE.beta
    return n, d, loss * np.exp(sigma * rng.normal(size=NUM_POINTS))


def _params(fit) -> np.ndarray:
    return np.array([float(v) for v in fit.params])


# ---------------------------------------------------------------------------------------------------------------
# an independent numpy implementation of the objective (scipy's logsumexp and huber) with its gradient


def _np_objective(theta, log_n, log_d, log_loss, delta=DELTA, axis=None):
    """Summed Huber loss; ``theta`` may carry leading batch axes (then pass ``axis=-1``)."""
    a, b, e, alpha, beta = theta
    u = np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e + 0.0 * log_n))
    total = np.sum(special.huber(delta, special.logsumexp(u, axis=0) - log_loss), axis=axis)
    return total if axis is not None else float(total)


def _np_gradient(theta, log_n, log_d, log_loss, delta=DELTA):
    a, b, e, alpha, beta = theta
    u = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    lse = special.logsumexp(u, axis=0)
    psi = np.clip(lse - log_loss, -delta, delta)  # Huber'
    p = special.softmax(u, axis=0)  # d LSE / d u_k
    return np.array(
        [
            np.sum(psi * p[0]),
            np.sum(psi * p[1]),
            np.sum(psi * p[2]),
            -np.sum(psi * p[0] * log_n),
            -np.sum(psi * p[1] * log_d),
        ]
    )


def _theta(params) -> np.ndarray:
    p = [float(v) for v in params]
    return np.array([np.log(p[1]), np.log(p[2]), np.log(p[0]), p[3], p[4]])  # (a, b, e, alpha, beta)


def _scipy_minimize(x0, logs):
    res = optimize.minimize(
        _np_objective,
        x0,
        args=logs,
        jac=_np_gradient,
        method="L-BFGS-B",
        options={"maxiter": 20000, "maxfun": 40000, "ftol": 1e-15, "gtol": 1e-13, "maxcor": 20},
    )
    return res.x, res.fun


@pytest.fixture(scope="module")
def noisy():
    n, d, loss = _planted(seed=0, sigma=0.01)
    return n, d, loss, fit_chinchilla(n, d, loss)


# ---------------------------------------------------------------------------------------------------------------
# Chinchilla fits


def test_gradient_matches_numpy():
    """The hand-written value and gradient (in the optimiser's centred coordinates, mapped back) against the
    numpy objective and its gradient above, which check_grad confirms by finite differences."""
    from jaxsafety.scaling.chinchilla import _chinchilla_value_and_grad

    n, d, loss = _planted(seed=3, sigma=0.02)
    logs = (np.log(n), np.log(d), np.log(loss))
    rng = np.random.default_rng(0)
    for theta in [_theta(TRUE), *rng.uniform([0, 0, -1, 0, 0], [25, 25, 1, 2, 2], size=(4, 5))]:
        assert optimize.check_grad(_np_objective, _np_gradient, theta, *logs, epsilon=1e-7) < 1e-5 * (
            1 + np.abs(_np_gradient(theta, *logs)).max()
        )
        with jax.enable_x64():
            f, g = _chinchilla_value_and_grad(
                jnp.asarray(theta), *(jnp.asarray(x) for x in logs), jnp.ones(NUM_POINTS), DELTA
            )
        np.testing.assert_allclose(float(f), _np_objective(theta, *logs), rtol=1e-11)
        np.testing.assert_allclose(np.asarray(g), _np_gradient(theta, *logs), rtol=1e-9, atol=1e-13)


def test_recovers_planted_parameters_without_noise():
    n, d, loss = _planted(seed=1, sigma=0.0)
    fit = fit_chinchilla(n, d, loss)
    assert bool(fit.converged)
    np.testing.assert_allclose(_params(fit), np.array(TRUE), rtol=1e-3)
    assert float(fit.objective) < 1e-15  # the planted law fits exactly


def test_recovers_exponents_with_noise(noisy):
    """Lognormal noise of 1%: the exponents within 8%, about 3 standard errors (their bootstrap SE on such data is
    ~2.5%; over data seeds 0-7 the largest error seen was 6.3%)."""
    _, _, _, fit = noisy
    assert bool(fit.converged)
    np.testing.assert_allclose(float(fit.params.alpha), TRUE.alpha, rtol=0.08)
    np.testing.assert_allclose(float(fit.params.beta), TRUE.beta, rtol=0.08)
    np.testing.assert_allclose(float(fit.params.E), TRUE.E, rtol=0.03)


def test_objective_not_beaten_by_scipy(noisy):
    """scipy's L-BFGS-B on the numpy objective, from our optimum and from the 5 grid points with the lowest
    objective: nothing lower than our objective (beyond float64 noise), and the same optimum."""
    n, d, loss, fit = noisy
    logs = (np.log(n), np.log(d), np.log(loss))
    ours = _theta(fit.params)
    np.testing.assert_allclose(float(fit.objective), _np_objective(ours, *logs), rtol=1e-10)

    order = ["a", "b", "e", "alpha", "beta"]
    grid = np.array(list(itertools.product(*(CHINCHILLA_GRID[k] for k in order))))
    initial = _np_objective(grid.T[..., None], *logs, axis=-1)  # all grid points at once [G]
    results = [_scipy_minimize(x0, logs) for x0 in [ours, *grid[np.argsort(initial)[:5]]]]
    best_x, best_f = min(results, key=lambda r: r[1])
    assert float(fit.objective) <= best_f * (1 + 1e-9)
    assert results[0][1] >= float(fit.objective) * (1 - 1e-9)  # no descent left from our optimum
    np.testing.assert_allclose(ours[3:], best_x[3:], rtol=1e-4)  # alpha, beta
    np.testing.assert_allclose(ours[:3], best_x[:3], atol=1e-3)  # a, b, e (A, B, E to 0.1%)


def test_compute_optimal_matches_numeric_minimisation():
    budgets = np.array([1e18, 1e21, 5.76e23, 1e26])
    n_opt, d_opt, l_opt = compute_optimal(TRUE, budgets)
    assert n_opt.shape == d_opt.shape == l_opt.shape == budgets.shape
    for c, n_, d_, l_ in zip(budgets, np.asarray(n_opt), np.asarray(d_opt), np.asarray(l_opt)):

        def loss_at(log_n, c=c):
            n = np.exp(log_n)
            return TRUE.E + TRUE.A / n**TRUE.alpha + TRUE.B / (c / (6 * n)) ** TRUE.beta

        res = optimize.minimize_scalar(
            loss_at, bounds=(np.log(1e3), np.log(c / 6e3)), method="bounded", options={"xatol": 1e-10}
        )
        np.testing.assert_allclose(n_, np.exp(res.x), rtol=1e-4)
        np.testing.assert_allclose(l_, res.fun, rtol=1e-12)
        np.testing.assert_allclose(6 * n_ * d_, c, rtol=1e-12)
    # batched parameters broadcast against C
    batch = ChinchillaParams(*(np.array([v, v]) for v in TRUE))
    n_b, _, _ = compute_optimal(batch, budgets[:, None])
    np.testing.assert_allclose(np.asarray(n_b), np.repeat(np.asarray(n_opt)[:, None], 2, axis=1), rtol=1e-12)


def test_bootstrap(noisy):
    """The top-8-starts shortcut on the original data reaches fit_chinchilla's optimum (all 4500 starts); every
    resample fit is finite and converged; the 95% interval of alpha holds the truth for most data sets; same key,
    same result."""
    n, d, loss, fit = noisy
    boot = bootstrap_chinchilla(jax.random.key(0), n, d, loss, num_resamples=100)
    np.testing.assert_allclose(float(boot.original.objective), float(fit.objective), rtol=1e-9)
    np.testing.assert_allclose(_params(boot.original), _params(fit), rtol=1e-4)
    assert boot.fits.params.alpha.shape == (100,)
    assert np.all(np.isfinite(np.stack([np.asarray(v) for v in boot.fits.params])))
    assert np.mean(np.asarray(boot.fits.converged)) >= 0.95
    for name in ChinchillaParams._fields:
        lo, hi = np.asarray(getattr(boot.ci, name))
        est = float(getattr(fit.params, name))
        assert lo < est < hi, name
        values = np.asarray(getattr(boot.fits.params, name))[np.asarray(boot.fits.converged)]
        np.testing.assert_allclose(float(getattr(boot.se, name)), np.std(values, ddof=1), rtol=1e-9)
    again = bootstrap_chinchilla(jax.random.key(0), n, d, loss, num_resamples=100)
    np.testing.assert_array_equal(np.asarray(again.fits.params.alpha), np.asarray(boot.fits.params.alpha))

    lo, hi = np.asarray(boot.ci.alpha)
    covered = [bool(lo <= TRUE.alpha <= hi)]
    for seed in (1, 2):
        other = bootstrap_chinchilla(
            jax.random.key(seed), *_planted(seed=seed, sigma=0.01), num_resamples=100
        )
        lo, hi = np.asarray(other.ci.alpha)
        covered.append(bool(lo <= TRUE.alpha <= hi))
    assert sum(covered) >= 2, covered


# ---------------------------------------------------------------------------------------------------------------
# L(C) = a C^-b + c


def _np_power_objective(theta, log_c, log_loss, delta=DELTA):
    log_a, b, log_c0 = theta
    pred = np.logaddexp(log_a - b * log_c, log_c0)
    return float(np.sum(special.huber(delta, pred - log_loss)))


def test_power_law_offset():
    rng = np.random.default_rng(0)
    compute = 10.0 ** rng.uniform(18, 24, 40)
    clean = 500.0 * compute**-0.15 + 1.7
    params, objective = fit_power_law_offset(compute, clean)
    np.testing.assert_allclose(
        [float(params.a), float(params.b), float(params.c)], [500.0, 0.15, 1.7], rtol=1e-4
    )
    assert float(objective) < 1e-15
    # least squares on the clean curve (scipy curve_fit) finds the same law
    popt, _ = optimize.curve_fit(lambda c, a, b, c0: a * c**-b + c0, compute, clean, p0=[300.0, 0.1, 1.0])
    np.testing.assert_allclose([float(params.a), float(params.b), float(params.c)], popt, rtol=1e-4)

    # 1% noise: the same summed-Huber objective minimised by scipy from several starts is no lower
    noisy = clean * np.exp(0.01 * rng.normal(size=40))
    params, objective = fit_power_law_offset(compute, noisy)
    logs = (np.log(compute), np.log(noisy))
    ours = np.array([np.log(float(params.a)), float(params.b), np.log(float(params.c))])
    np.testing.assert_allclose(float(objective), _np_power_objective(ours, *logs), rtol=1e-10)
    best = min(
        (
            optimize.minimize(
                _np_power_objective,
                x0,
                args=logs,
                method="Nelder-Mead",
                options={"xatol": 1e-12, "fatol": 1e-18},
            )
            for x0 in [ours, [5.0, 0.1, 0.5], [10.0, 0.2, 0.5], [2.0, 0.05, 0.0]]
        ),
        key=lambda r: r.fun,
    )
    assert float(objective) <= best.fun * (1 + 1e-9)
    np.testing.assert_allclose(ours, best.x, rtol=1e-4, atol=1e-4)


def _np_weighted_power_objective(theta, log_c, log_loss, weights, delta=DELTA):
    log_a, b, log_c0 = theta
    pred = np.logaddexp(log_a - b * log_c, log_c0)
    return float(np.sum(weights * special.huber(delta, pred - log_loss)))


def test_bootstrap_power_law_offset_matches_scipy_per_resample():
    """Every resample's counts are a draw of P points with replacement; its fit is the minimum of the
    count-weighted summed Huber objective (numpy, minimised by scipy Nelder-Mead from our optimum and from other
    starts: nothing lower, same parameters); ``identifiable`` counts distinct drawn C values as numpy does."""
    rng = np.random.default_rng(1)
    compute = np.geomspace(1e18, 1e23, 10)
    loss = (500.0 * compute**-0.15 + 1.7) * np.exp(0.01 * rng.normal(size=10))
    # 16 resamples of <= 16 points: the program tests/scaling/test_cli.py's fit-power-law compiles too
    boot = bootstrap_power_law_offset(jax.random.key(3), compute, loss, num_resamples=16)
    counts = np.asarray(boot.counts)
    assert (
        counts.shape == (16, 10) and np.all(counts.sum(axis=1) == 10) and np.all(counts == np.round(counts))
    )
    assert len({tuple(row) for row in counts}) == 16  # the resamples differ
    assert np.all(np.asarray(boot.identifiable)) and np.all(np.asarray(boot.converged))
    logs = (np.log(compute), np.log(loss))
    for r in range(6):
        ours = np.array(
            [np.log(float(boot.params.a[r])), float(boot.params.b[r]), np.log(float(boot.params.c[r]))]
        )
        args = (*logs, counts[r])
        np.testing.assert_allclose(
            float(boot.objective[r]), _np_weighted_power_objective(ours, *args), rtol=1e-9
        )
        best = min(
            (optimize.minimize(_np_weighted_power_objective, x0, args=args, method="Nelder-Mead",
                               options={"xatol": 1e-12, "fatol": 1e-18})
             for x0 in [ours, [5.0, 0.1, 0.5], [10.0, 0.2, 0.5]]),
            key=lambda res: res.fun,
        )  # fmt: skip
        assert float(boot.objective[r]) <= best.fun * (1 + 1e-9) + 1e-18
        np.testing.assert_allclose(ours, best.x, rtol=1e-3, atol=1e-3)

    # few distinct compute values: resamples drawing fewer than 3 are flagged (same padded size: no recompile)
    few = np.repeat(compute[[0, 4, 9]], [6, 2, 2])
    flagged = bootstrap_power_law_offset(jax.random.key(4), few, loss, num_resamples=16)
    distinct = [len(np.unique(few[row > 0])) for row in np.asarray(flagged.counts)]
    assert 0 < sum(d >= 3 for d in distinct) < 16  # this key draws both kinds
    np.testing.assert_array_equal(np.asarray(flagged.identifiable), np.asarray(distinct) >= 3)
    with pytest.raises(ConfigError, match="num_resamples=0"):
        bootstrap_power_law_offset(jax.random.key(0), compute, loss, num_resamples=0)


# ---------------------------------------------------------------------------------------------------------------
# input checks


def test_invalid_inputs_raise_config_error():
    n, d, loss = _planted(seed=0, sigma=0.0)
    bad = loss.copy()
    bad[3] = -1.0
    with pytest.raises(
        ConfigError, match=r"^loss\[3\]=-1 is invalid: accepted values are finite numbers > 0"
    ):
        fit_chinchilla(n, d, bad)
    bad = n.copy()
    bad[5] = np.nan
    with pytest.raises(ConfigError, match=r"^N\[5\]=nan"):
        fit_chinchilla(bad, d, loss)
    with pytest.raises(ConfigError, match=r"^D\.shape=\(199,\).*same length as N"):
        fit_chinchilla(n, d[:-1], loss)
    with pytest.raises(ConfigError, match=r"^N\.shape=\(5,\).*at least 6 points"):
        fit_chinchilla(n[:5], d[:5], loss[:5])
    with pytest.raises(ConfigError, match=r"^loss\.shape=\(2, 100\)"):
        fit_chinchilla(n, d, loss.reshape(2, 100))
    with pytest.raises(ConfigError, match=r"^grid="):
        fit_chinchilla(n, d, loss, grid={"alpha": [0.5]})
    with pytest.raises(ConfigError, match=r"^delta=0"):
        fit_chinchilla(n, d, loss, delta=0)
    with pytest.raises(ConfigError, match=r"^num_resamples=1"):
        bootstrap_chinchilla(jax.random.key(0), n, d, loss, num_resamples=1)
    with pytest.raises(ConfigError, match=r"^loss\[0\]=0"):
        fit_power_law_offset(np.arange(1.0, 7.0), np.zeros(6))
    with pytest.raises(ConfigError, match=r"^C\.shape=\(4,\).*at least 5 points"):
        fit_power_law_offset(np.arange(1.0, 5.0), np.ones(4))
    with pytest.raises(ConfigError, match=r"^C\[1\]=-1"):
        compute_optimal(TRUE, np.array([1e20, -1.0]))


def test_predict_loss():
    n, d = np.array([1e8, 3e9]), np.array([2e10, 4e11])
    want = TRUE.E + TRUE.A / n**TRUE.alpha + TRUE.B / d**TRUE.beta
    np.testing.assert_allclose(np.asarray(predict_loss(TRUE, n, d)), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(TRUE.predict_loss(n, d)), want, rtol=1e-5)
