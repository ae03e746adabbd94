"""Power-law exponent fits of Schaeffer et al. 2025 (arXiv 2502.17578): bootstrap speed against a scipy loop, and
statistical efficiency of the distributional fit against the least-squares baseline.

1. **Bootstrap speed** (issue target: >= 20x). ``P`` problems with ``n`` attempts each, ``p_i`` from a known Beta
   (or scaled Beta), then ``R = 1000`` bootstrap resamples of the problems, each refitted by maximum likelihood:

   - **ours**: :func:`jaxsafety.scaling.bootstrap_fit` (one jitted, vmapped damped-Newton fit per resample; the
     first call, which compiles, is ``compile_s``, then the median of ``repeats`` calls).
   - **scipy peer**: a plain Python loop over the *same* resample index sets (:func:`resample_indices`
     reproduces ``bootstrap_fit``'s ``jax.random.randint`` draws) calling ``scipy.optimize.minimize``
     (L-BFGS-B, analytic gradient, ``theta = (log alpha, log beta[, logit scale])``, float64) on the negative
     log-likelihood written with numpy/scipy: the beta-binomial in closed form (``betaln``/``digamma``), and for
     the scaled Beta the binomial mixture by vectorised composite Gauss-Legendre quadrature in ``t = logit x``
     (:class:`ScaledBetaQuadrature`). Each resample is reduced to the weighted distinct ``(n, c)`` pairs first
     (``np.bincount``), as ours does, so both sides evaluate the same number of likelihood terms. The peer starts
     from the method-of-moments point ours starts from (ours also tries a heavier-tailed start and, scaled, two
     scale starts, and keeps the best).

   Both sides are timed interleaved on one core (:func:`benchmarks.envs_nplayer.one_core`: the peer is single-
   threaded). Where the scaled peer (or ours) is too slow for every resample in every repeat, it is timed on the
   first ``R_sub`` resamples and its rate extrapolated to ``R`` (stated in the JSON as ``timed_resamples``). The
   optimum is compared per resample on the first ``agreement_subset`` resamples: ``|alpha_ours / alpha_scipy - 1|``
   (median and max) and the log-likelihood gap (ours' fit evaluated by the peer's likelihood, float64).

2. **Statistical efficiency** (issue target: >= 5x lower median relative error at 100 attempts per problem). For
   ``S`` seeds, ``P`` problems with ``p_i`` from a known Beta (or scaled Beta), binomial counts at each
   budget ``n``:

   - **least squares** (the baseline): ``-log pass@k`` from the unbiased estimator
     (:func:`jaxsafety.scaling.neg_log_pass_at_k`) at ``k`` on a log-spaced integer grid in ``1..n`` (headline),
     and at every ``k = 1..n``, fitted by :func:`jaxsafety.scaling.fit_power_law_lsq` (OLS in log-log over every
     ``k`` it is given where ``0 < -log pass@k < inf``); exponent ``b``.
   - **distributional**: :func:`jaxsafety.scaling.fit_distribution` on the counts (binomial likelihood, the
     generating family); exponent ``alpha``.

   Truth: the asymptotic exponent of the population's ``-log pass@k``, which is ``alpha`` (Schaeffer et al.
   section 5). Least squares over ``k <= n`` measures the curve's *local* slope, which differs from ``alpha`` even
   with infinitely many problems (``-log pass@k = -log(1 - E[(1-p)^k])`` reaches ``E ~ k^-alpha`` only once ``E``
   is small: at ``k <= 1000`` here the slope is ~0.36-0.39, not 0.3), and with finitely many problems the
   unbiased estimator's curve saturates at ``-log(solved fraction)`` as ``k -> n``; that bias is the paper's
   point. Both errors are reported exactly as computed, against ``alpha``, together with the noise-free local
   slope (``lsq_population_slope``: the least-squares fit to the population's exact curve, by QUADPACK, on the same
   ``k`` grid).

   Seeds are vmapped for the Beta; the scaled Beta's fits run one set at a time (``lax.map``), because of a
   batch-size-dependent wrong Hessian in the library (:func:`make_mle`).

The peer's OpenBLAS is limited to one thread while it runs (:func:`single_threaded_blas`); with its default pool it
was ~20x slower on this machine.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
import scipy.optimize
import scipy.special as sp

from benchmarks.harness import Timing, cli_main, one_core, single_threaded_blas, time_interleaved
from jaxsafety.scaling import (
    DistributionParams,
    bootstrap_fit,
    fit_distribution,
    fit_power_law_lsq,
    neg_log_pass_at_k,
    simulate_counts,
)
from jaxsafety.scaling.simulate import lsq_budgets

NAME = "scaling_fits"
# The generating distribution: p = scale * x, x ~ Beta(ALPHA, BETA), a heavy left tail (alpha < 1: most problems
# are rarely solved), the scale only in the scaled rows.
ALPHA, BETA, SCALE = 0.3, 3.0, 0.5
THETA_BOUND = 12.0  # |theta| bound of both sides' parameters (ours: jaxsafety.scaling.fit._THETA_BOUND)


@dataclasses.dataclass(frozen=True)
class Budget:
    """Sizes of one run. Bootstrap: ``num_problems`` problems x ``attempts``; ``resamples`` (unscaled, both sides);
    for the scaled rows ``ours_resamples_scaled`` and ``peer_resamples_scaled`` resamples are timed and the rate
    extrapolated to ``resamples``; ``agreement_subset`` resamples are compared per resample. Efficiency: ``seeds``
    populations of ``num_problems`` problems at each of ``budgets`` attempts per problem (scaled: ``seeds_scaled``,
    ``budgets_scaled``); ``headline_budget`` is the issue's 100."""

    num_problems: int
    attempts: int
    resamples: int
    ours_resamples_scaled: int
    peer_resamples_scaled: int
    agreement_subset: int
    repeats: int
    repeats_scaled: int
    seeds: int
    budgets: tuple[int, ...]
    seeds_scaled: int
    budgets_scaled: tuple[int, ...]
    headline_budget: int = 100
    scaled_rows: bool = True  # the scaled-Beta rows (their quadrature fits compile for ~30-60 s)
    unbatched_check: int = 0  # resamples also fitted one at a time by fit_distribution (its own compilation)
    problem_counts: tuple[int, ...] = ()  # other numbers of problems at the headline budget (Beta)


FULL = Budget(
    num_problems=128,
    attempts=100,
    resamples=1000,
    ours_resamples_scaled=100,
    peer_resamples_scaled=50,
    agreement_subset=50,
    repeats=5,
    repeats_scaled=5,
    seeds=200,
    budgets=(10, 30, 100, 300, 1000),
    seeds_scaled=100,
    budgets_scaled=(30, 100, 300),
    unbatched_check=16,
    problem_counts=(32, 512, 2048),
)
QUICK = Budget(
    num_problems=128,
    attempts=100,
    resamples=1000,
    ours_resamples_scaled=8,
    peer_resamples_scaled=4,
    agreement_subset=4,
    repeats=2,
    repeats_scaled=1,
    seeds=16,
    budgets=(10, 100),
    seeds_scaled=4,
    budgets_scaled=(100,),
)
# The test's budget: a few resamples and seeds, unscaled rows only (compile time dominates).
TINY = dataclasses.replace(QUICK, resamples=16, seeds=8, budgets=(100,), scaled_rows=False)


# ----------------------------------------------------------------------------------------------------------------
# data


def sample_counts(seed: int, num_problems: int, attempts: int, scaled: bool) -> np.ndarray:
    """Success counts ``[P]``: ``p_i = s x_i``, ``x_i ~ Beta(ALPHA, BETA)`` (``s = SCALE`` if ``scaled`` else 1)."""
    rng = np.random.default_rng(seed)
    p = (SCALE if scaled else 1.0) * rng.beta(ALPHA, BETA, num_problems)
    return rng.binomial(attempts, p)


def resample_indices(key: jax.Array, num_problems: int, num_resamples: int) -> np.ndarray:
    """``[R, P]`` problem indices of the resamples that ``bootstrap_fit(key, ...)`` draws (its documented draw:
    ``jax.random.randint(k, (P,), 0, P)`` for each ``k`` of ``jax.random.split(key, R)``)."""
    keys = jax.random.split(key, num_resamples)
    return np.asarray(jax.vmap(lambda k: jax.random.randint(k, (num_problems,), 0, num_problems))(keys))


# ----------------------------------------------------------------------------------------------------------------
# the scipy peer


def _moments_start(n: np.ndarray, c: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Method-of-moments ``(log alpha, log beta)`` of a Beta on the rates ``c/n`` (binomial noise removed): the
    usual starting point, and the first of ours."""
    w = w / w.sum()
    r = c / n
    mu = float(np.clip(w @ r, 1e-3, 1 - 1e-3))
    var_p = w @ (r - mu) ** 2 - w @ (r * (1 - r) / np.maximum(n - 1.0, 1.0))
    var_p = float(np.clip(var_p, 1e-3 * mu * (1 - mu), 0.99 * mu * (1 - mu)))
    kappa = float(np.clip(mu * (1 - mu) / var_p - 1.0, 0.05, 1e3))
    return np.clip(np.log([mu * kappa, (1 - mu) * kappa]), -5.0, 5.0)


class BetaBinomialNLL:
    """Mean beta-binomial negative log-likelihood of weighted distinct pairs ``(n_u, c_u, w_u)`` and its gradient
    in ``theta = (log alpha, log beta)`` (float64): ``log P(c | n) = log C(n, c) + betaln(c + alpha, n - c + beta)
    - betaln(alpha, beta)``, derivatives by digamma."""

    def __init__(self, n: np.ndarray, c: np.ndarray, w: np.ndarray):
        keep = w > 0
        self.n, self.c, self.w = (np.asarray(x, np.float64)[keep] for x in (n, c, w))
        self.total = self.w.sum()
        self.log_binom = sp.gammaln(self.n + 1) - sp.gammaln(self.c + 1) - sp.gammaln(self.n - self.c + 1)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = np.exp(theta)
        n, c, w = self.n, self.c, self.w
        ll = self.log_binom + sp.betaln(c + a, n - c + b) - sp.betaln(a, b)
        dig_nab = sp.digamma(n + a + b)
        dig_ab = sp.digamma(a + b)
        da = sp.digamma(c + a) - dig_nab - sp.digamma(a) + dig_ab
        db = sp.digamma(n - c + b) - dig_nab - sp.digamma(b) + dig_ab
        grad = -np.array([a * (w @ da), b * (w @ db)]) / self.total
        return -(w @ ll) / self.total, grad


class ScaledBetaQuadrature:
    """Mean negative log-likelihood of the scaled-Beta binomial mixture and its gradient in
    ``theta = (log alpha, log beta, logit scale)`` (float64), for weighted distinct pairs ``(n_u, c_u, w_u)``.

    ``P(c | n) = C(n, c) / B(alpha, beta) int exp(g(t)) dt`` over ``t = logit x``, with
    ``g = alpha log x + beta log(1-x) + c log(s x) + (n-c) log(1 - s x)`` (the Jacobian ``x (1-x)`` absorbed).
    Composite Gauss-Legendre, ``panels x nodes`` fixed nodes on ``[t_lo, t_hi]`` (the logit removes the
    ``x^(alpha-1)`` endpoint singularity that defeats Gauss-Legendre in ``p`` for ``alpha < 1``; unit-width panels
    of 8 nodes resolve the narrowest bump, ``sd(t) ~ 1/sqrt(n p (1-p)) >= 0.2`` at ``n = 100``), plus the two tails
    in closed form (``x ~ e^t`` below ``t_lo``: ``s^c e^((alpha+c) t_lo) / (alpha+c)``; ``1 - x ~ e^-t`` above
    ``t_hi``: ``s^c (1-s)^(n-c) e^(-beta t_hi) / beta``), so that no parameter the optimiser visits loses mass.
    One ``[U, Q]`` evaluation per call; the gradient is the posterior mean of the integrand's score (same nodes).
    """

    def __init__(
        self,
        n: np.ndarray,
        c: np.ndarray,
        w: np.ndarray,
        *,
        t_lo: float = -60.0,
        t_hi: float = 30.0,
        nodes_per_panel: int = 8,
    ):
        keep = w > 0
        self.n, self.c, self.w = (np.asarray(x, np.float64)[keep][:, None] for x in (n, c, w))
        self.total = self.w.sum()
        self.log_binom = sp.gammaln(self.n + 1) - sp.gammaln(self.c + 1) - sp.gammaln(self.n - self.c + 1)
        self.t_lo, self.t_hi = t_lo, t_hi
        v, wv = np.polynomial.legendre.leggauss(nodes_per_panel)
        edges = np.arange(t_lo, t_hi, 1.0)
        t = (edges[:, None] + 0.5 * (v + 1.0)).ravel()
        self.log_wq = np.log(np.tile(0.5 * wv, len(edges)))[None, :]
        self.x = sp.expit(t)[None, :]
        self.log_x = -np.logaddexp(0.0, -t)[None, :]
        self.log_1mx = -np.logaddexp(0.0, t)[None, :]

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = np.exp(theta[:2])
        s = sp.expit(theta[2])
        log_s, log_1ms = -np.logaddexp(0.0, -theta[2]), -np.logaddexp(0.0, theta[2])
        n, c, w = self.n, self.c, self.w
        m = n - c
        one_m_sx = 1.0 - s * self.x
        # [U, Q] log integrand at the nodes, and the two closed-form tails [U, 1]
        g = a * self.log_x + b * self.log_1mx + c * (log_s + self.log_x) + m * np.log1p(-s * self.x)
        g_lo = c * log_s + (a + c) * self.t_lo - np.log(a + c)
        g_hi = c * log_s + m * log_1ms - b * self.t_hi - np.log(b)
        terms = np.concatenate([g + self.log_wq, g_lo, g_hi], axis=1)
        shift = terms.max(axis=1, keepdims=True)
        e = np.exp(terms - shift)
        total = e.sum(axis=1, keepdims=True)
        log_int = np.log(total) + shift
        post = e / total  # posterior weight of each node / tail
        pq, p_lo, p_hi = post[:, :-2], post[:, -2:-1], post[:, -1:]
        # d g / d(a, b, s) at the nodes and for the tails
        da = pq @ self.log_x.T + p_lo * (self.t_lo - 1.0 / (a + c))
        db = pq @ self.log_1mx.T + p_hi * (-self.t_hi - 1.0 / b)
        ds = (pq * (c / s - m * self.x / one_m_sx)).sum(axis=1, keepdims=True)
        ds = ds + p_lo * (c / s) + p_hi * (c / s - m / (1.0 - s))
        dig_ab = sp.digamma(a + b)
        ll = self.log_binom - sp.betaln(a, b) + log_int
        wt = w[:, 0]
        grad = np.array(
            [
                a * (wt @ (da[:, 0] - sp.digamma(a) + dig_ab)),
                b * (wt @ (db[:, 0] - sp.digamma(b) + dig_ab)),
                s * (1.0 - s) * (wt @ ds[:, 0]),
            ]
        )
        return -(wt @ ll[:, 0]) / self.total, -grad / self.total


def scipy_fit(n: np.ndarray, c: np.ndarray, w: np.ndarray, scaled: bool) -> tuple[np.ndarray, float]:
    """The peer's fit of one (re)sample given as weighted distinct pairs: L-BFGS-B (scipy defaults, analytic
    gradient) from the method-of-moments point (scaled: with ``scale`` just above the largest rate, as ours).
    Returns ``(theta, mean NLL)``."""
    if scaled:
        nll = ScaledBetaQuadrature(n, c, w)
        s_max = float(np.clip(1.05 * np.max(np.where(w > 0, c / n, 0.0)), 0.05, 0.99))
        x0 = np.append(_moments_start(n, c, w), np.log(s_max / (1.0 - s_max)))
    else:
        nll = BetaBinomialNLL(n, c, w)
        x0 = _moments_start(n, c, w)
    res = scipy.optimize.minimize(
        nll, x0, jac=True, method="L-BFGS-B", bounds=[(-THETA_BOUND, THETA_BOUND)] * len(x0)
    )
    return res.x, float(res.fun)


def scipy_bootstrap(n: int, c: np.ndarray, idx: np.ndarray, scaled: bool) -> np.ndarray:
    """The peer: a Python loop fitting each resample ``idx[r]`` (``[R, P]``); returns ``[R, d]`` fitted ``theta``."""
    pairs, inverse = np.unique(c, return_inverse=True)
    ns = np.full(len(pairs), float(n))
    out = []
    for rows in idx:
        w = np.bincount(inverse[rows], minlength=len(pairs)).astype(np.float64)
        out.append(scipy_fit(ns, pairs.astype(np.float64), w, scaled)[0])
    return np.stack(out)


# ----------------------------------------------------------------------------------------------------------------
# 1. bootstrap timing


def _agreement(n: int, c: np.ndarray, idx: np.ndarray, ours: Any, scaled: bool) -> dict[str, Any]:
    """Per-resample comparison of the optima on ``idx`` (``[R_a, P]``): alphas, and the log-likelihood gap
    ``loglik(ours) - loglik(scipy)`` (total over the problems) under the peer's float64 likelihood (< 0: ours is
    worse)."""
    theta_peer = scipy_bootstrap(n, c, idx, scaled)
    pairs, inverse = np.unique(c, return_inverse=True)
    ns = np.full(len(pairs), float(n))
    r = idx.shape[0]
    a_ours = np.asarray(ours.params.alpha[:r], np.float64)
    theta_ours = [np.log(a_ours), np.log(np.asarray(ours.params.beta[:r], np.float64))]
    if scaled:
        s = np.asarray(ours.params.scale[:r], np.float64)
        theta_ours.append(np.log(s) - np.log1p(-s))
    theta_ours = np.stack(theta_ours, axis=1)
    gaps = []
    for rows, th_o, th_p in zip(idx, theta_ours, theta_peer, strict=True):
        w = np.bincount(inverse[rows], minlength=len(pairs)).astype(np.float64)
        nll = (ScaledBetaQuadrature if scaled else BetaBinomialNLL)(ns, pairs.astype(np.float64), w)
        gaps.append((nll(th_o)[0] - nll(th_p)[0]) * len(rows))  # total log-likelihood units
    rel = np.abs(a_ours / np.exp(theta_peer[:, 0]) - 1.0)
    return {
        "resamples_compared": int(r),
        "alpha_rel_diff_median": float(np.median(rel)),
        "alpha_rel_diff_max": float(np.max(rel)),
        "loglik_gap_ours_minus_scipy_median": float(-np.median(gaps)),
        "loglik_gap_ours_minus_scipy_min": float(-np.max(gaps)),
        "ours_converged_fraction": float(np.mean(np.asarray(ours.converged[:r]))),
    }


def _unbatched_check(
    n: int, c: np.ndarray, idx: np.ndarray, fits: Any, scaled: bool
) -> dict[str, Any] | None:
    """The first resamples refitted one at a time by ``fit_distribution`` on the resampled counts (the same
    objective): alphas and accepted Newton steps against the vmapped bootstrap's (for the scaled Beta a large batch
    gets a wrong Hessian, see :func:`make_mle`, so the bootstrap's Newton steps are not the unbatched fit's)."""
    if len(idx) == 0:
        return None
    single = [fit_distribution(n, c[rows], "beta", scaled=scaled) for rows in idx]
    r = len(idx)
    a_single = np.array([float(f.params.alpha) for f in single])
    rel = np.abs(np.asarray(fits.params.alpha[:r]) / a_single - 1.0)
    return {
        "resamples": r,
        "alpha_rel_diff_median": float(np.median(rel)),
        "alpha_rel_diff_max": float(np.max(rel)),
        "num_accepted_median_unbatched": float(np.median([int(f.num_accepted) for f in single])),
        "num_accepted_median_bootstrap": float(np.median(np.asarray(fits.num_accepted[:r]))),
    }


def _side(t: Timing, timed: int, total: int) -> dict[str, Any]:
    per = t.median_s / timed
    return {
        "timed_resamples": timed,
        "resamples_per_s": timed / t.median_s,
        "resamples_per_s_best": timed / t.min_s,
        "seconds_for_all_resamples": per * total,
        "extrapolated": timed != total,
        "timing": t.to_dict(),
    }


def bootstrap_row(budget: Budget, scaled: bool) -> dict[str, Any]:
    """Time ours and the scipy loop on the same resamples of one synthetic problem set; compare their optima."""
    p, n, total = budget.num_problems, budget.attempts, budget.resamples
    c = sample_counts(1, p, n, scaled)
    key = jax.random.key(2)
    r_ours = budget.ours_resamples_scaled if scaled else total
    r_peer = budget.peer_resamples_scaled if scaled else total
    repeats = budget.repeats_scaled if scaled else budget.repeats
    idx = resample_indices(key, p, max(r_ours, r_peer))

    def ours() -> Any:
        return bootstrap_fit(key, n, c, "beta", scaled=scaled, num_resamples=r_ours).fits

    def peer() -> np.ndarray:
        return scipy_bootstrap(n, c, idx[:r_peer], scaled)

    with one_core(), single_threaded_blas() as limited:
        t = time_interleaved({"ours": ours, "scipy": peer}, repeats=repeats, warmup=1)
        fits = ours()
        agreement = _agreement(n, c, idx[: budget.agreement_subset], fits, scaled)
    ours_side, peer_side = _side(t["ours"], r_ours, total), _side(t["scipy"], r_peer, total)
    ratio = ours_side["resamples_per_s"] / peer_side["resamples_per_s"]
    row = {
        "family": "scaled_beta" if scaled else "beta",
        "num_params": 3 if scaled else 2,
        "num_problems": p,
        "attempts": n,
        "distinct_counts": len(np.unique(c)),
        "resamples": total,
        "ours": ours_side,
        "scipy": peer_side,
        "ratio_ours_over_scipy": ratio,
        "agreement": agreement,
        "openblas_libraries_limited_to_one_thread": limited,
        "ours_alpha_median": float(np.median(np.asarray(fits.params.alpha))),
        "ours_num_accepted_median": float(np.median(np.asarray(fits.num_accepted))),
        "unbatched_check": _unbatched_check(n, c, idx[: budget.unbatched_check], fits, scaled),
    }
    print(
        f"bootstrap {row['family']}: ours {ours_side['resamples_per_s']:.4g} resamples/s "
        f"(first call {t['ours'].compile_s:.1f} s), scipy {peer_side['resamples_per_s']:.4g} resamples/s, "
        f"ratio {ratio:.1f}x; alpha |rel diff| median {agreement['alpha_rel_diff_median']:.1e} "
        f"(max {agreement['alpha_rel_diff_max']:.1e})"
        + (f" [timed {r_ours} (ours) / {r_peer} (scipy) of {total}, extrapolated]" if scaled else ""),
        flush=True,
    )
    return row


# ----------------------------------------------------------------------------------------------------------------
# 2. statistical efficiency


def sample_count_sets(
    seed: tuple[int, ...], seeds: int, num_problems: int, attempts: int, scaled: bool
) -> np.ndarray:
    """Counts ``[S, P]``: ``S`` independent problem sets (``p_i = s x_i``, ``x_i ~ Beta(ALPHA, BETA)``) with
    ``attempts`` binomial draws per problem (numpy, via :func:`jaxsafety.scaling.simulate_counts`: the sampler is
    no part of what is compared, and numpy's compiles nothing)."""
    params = DistributionParams(ALPHA, BETA, SCALE if scaled else 1.0)
    return simulate_counts(np.random.default_rng(seed), params, "beta", num_problems, attempts, seeds)[1]


def make_lsq(attempts: int):
    """``lsq(c)`` over counts ``[S, P]`` -> least-squares exponents ``[S]`` on the log-spaced and on the full
    ``k`` grid (jitted, vmapped over sets; one small compilation per budget)."""
    ks_log = jnp.asarray(lsq_budgets(attempts))
    ks_all = jnp.arange(1, attempts + 1)

    def one(c: jax.Array) -> dict[str, jax.Array]:
        n = jnp.full_like(c, attempts)
        return {
            "lsq_logk": fit_power_law_lsq(ks_log, neg_log_pass_at_k(n, c, ks_log))[1],
            "lsq_allk": fit_power_law_lsq(ks_all, neg_log_pass_at_k(n, c, ks_all))[1],
        }

    return jax.jit(jax.vmap(one))


def make_mle(scaled: bool):
    """``mle(n, c)`` over ``[S, P]`` counts -> fitted ``alpha`` and convergence ``[S]``: ``fit_distribution`` on
    traced counts (each problem one likelihood term; ``n`` is data, not a shape, so all budgets share one
    compilation), vmapped over sets for the Beta.

    The scaled Beta runs the sets one at a time (``lax.map``) instead: ``jax.jacfwd(jax.grad(f))`` of the
    quadrature likelihood, the Hessian ``fit_distribution`` builds its Newton steps from, comes out wrong (off by
    O(1-10) against finite differences, while ``jax.hessian`` and the gradient are right) once the likelihood is
    evaluated on >= 2048 elements at once, e.g. 16 sets x 128 problems vmapped, or 4 sets x 4 starts x 128; the
    fits then crawl to the step cap and most do not converge (measured: 4 of 8 sets unconverged at 40 steps, with
    lower likelihoods than the unbatched fits). One set at a time (4 starts x 128 problems) is below that size."""

    def one(n: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        fit = fit_distribution(n, c, "beta", scaled=scaled)
        return fit.params.alpha, fit.converged

    if scaled:
        return jax.jit(lambda n, c: jax.lax.map(lambda nc: one(*nc), (n, c)))
    return jax.jit(jax.vmap(one))


def population_neg_log_pass_at_k(ks: np.ndarray, scaled: bool) -> np.ndarray:
    """The population's exact ``-log pass@k = -log(1 - E[(1 - p)^k])`` ``[K]`` (infinitely many problems, ``p``
    known), by scipy's QUADPACK with the Beta's algebraic endpoint weight (float64; independent of the library)."""
    s = SCALE if scaled else 1.0
    log_norm = sp.betaln(ALPHA, BETA)
    fail = [
        scipy.integrate.quad(
            lambda x, k=k: (1.0 - s * x) ** k,
            0.0,
            1.0,
            weight="alg",
            wvar=(ALPHA - 1.0, BETA - 1.0),
            limit=200,
        )[0]
        for k in ks
    ]
    return -np.log1p(-np.exp(np.log(fail) - log_norm))


def population_slopes(attempts: int, scaled: bool) -> dict[str, float]:
    """Least-squares exponent of the population's exact curve (:func:`population_neg_log_pass_at_k`) on each
    ``k`` grid: the local slope that least squares estimates without noise."""
    out = {}
    for name, ks in (("lsq_logk", lsq_budgets(attempts)), ("lsq_allk", np.arange(1, attempts + 1))):
        y = population_neg_log_pass_at_k(ks, scaled)
        out[name] = float(fit_power_law_lsq(jnp.asarray(ks), jnp.asarray(y, jnp.float32))[1])
    return out


def _rel_err(x: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(x, np.float64) / ALPHA - 1.0)


def efficiency_rows(
    budget: Budget, scaled: bool, num_problems: int | None = None, budgets: tuple[int, ...] | None = None
) -> list[dict[str, Any]]:
    """Median relative exponent errors of least squares and the MLE at each budget (one row per budget), for
    ``num_problems`` problems per set (default ``budget.num_problems``)."""
    seeds = budget.seeds_scaled if scaled else budget.seeds
    budgets = budgets or (budget.budgets_scaled if scaled else budget.budgets)
    num_problems = num_problems or budget.num_problems
    mle = make_mle(scaled)
    rows = []
    for attempts in budgets:
        t0 = time.perf_counter()
        c = jnp.asarray(
            sample_count_sets((attempts, num_problems, int(scaled)), seeds, num_problems, attempts, scaled),
            jnp.float32,
        )
        est = make_lsq(attempts)(c)
        est["mle"], converged = mle(jnp.full_like(c, attempts), c)
        est = jax.device_get(est)
        err = {m: _rel_err(est[m]) for m in ("lsq_logk", "lsq_allk", "mle")}
        med = {m: float(np.median(e)) for m, e in err.items()}
        pop = population_slopes(attempts, scaled)
        row = {
            "attempts_per_problem": attempts,
            "seeds": seeds,
            "num_problems": num_problems,
            "lsq_grid_points": len(lsq_budgets(attempts)),
            "median_rel_error": med,
            "mean_rel_error": {m: float(np.mean(e)) for m, e in err.items()},
            "median_estimate": {m: float(np.median(est[m])) for m in err},
            "lsq_population_slope": pop,
            "lsq_population_slope_rel_error": {m: abs(v / ALPHA - 1.0) for m, v in pop.items()},
            "mle_converged_fraction": float(np.mean(np.asarray(converged))),
            "solved_fraction_mean": float(np.mean(np.asarray(c) > 0)),
            "error_ratio_lsq_logk_over_mle": med["lsq_logk"] / med["mle"],
            "error_ratio_lsq_allk_over_mle": med["lsq_allk"] / med["mle"],
            "error_ratio_best_lsq_over_mle": min(med["lsq_logk"], med["lsq_allk"]) / med["mle"],
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(
            f"efficiency {'scaled_beta' if scaled else 'beta'} P={num_problems} n={attempts}: median |rel err| lsq(log k) "
            f"{med['lsq_logk']:.3f}, lsq(all k) {med['lsq_allk']:.3f}, mle {med['mle']:.3f}; ratio "
            f"{row['error_ratio_lsq_logk_over_mle']:.1f}x (best lsq {row['error_ratio_best_lsq_over_mle']:.1f}x)"
            f" [{row['seconds']:.1f} s]",
            flush=True,
        )
    return rows


# ----------------------------------------------------------------------------------------------------------------


def _num_problems(row: dict[str, Any]) -> int:
    return row["num_problems"]


def run(quick: bool = False, budget: Budget | None = None) -> dict[str, Any]:
    budget = budget or (QUICK if quick else FULL)
    boot = [bootstrap_row(budget, scaled=False)]
    eff = {"beta": efficiency_rows(budget, scaled=False), "scaled_beta": []}
    # The least-squares error is mostly bias (its median estimate sits at the population's local slope), the MLE's
    # is noise ~ 1/sqrt(P): their ratio grows with the number of problems.
    eff["beta_by_num_problems"] = [
        row
        for p in budget.problem_counts
        for row in efficiency_rows(budget, scaled=False, num_problems=p, budgets=(budget.headline_budget,))
    ]
    if budget.scaled_rows:
        boot.append(bootstrap_row(budget, scaled=True))
        eff["scaled_beta"] = efficiency_rows(budget, scaled=True)
    scaled_ratio = boot[1]["ratio_ours_over_scipy"] if budget.scaled_rows else math.nan
    headline = next((r for r in eff["beta"] if r["attempts_per_problem"] == budget.headline_budget), None)
    ratio_100 = headline["error_ratio_lsq_logk_over_mle"] if headline else math.nan
    payload = {
        "peer": f"scipy {scipy.__version__} optimize.minimize (L-BFGS-B) loop",
        "config": {
            **dataclasses.asdict(budget),
            "true_alpha": ALPHA,
            "true_beta": BETA,
            "true_scale_scaled_rows": SCALE,
            "cores": 1,
        },
        "bootstrap": boot,
        "efficiency": eff,
        "ratios": {
            "bootstrap_beta_ours_over_scipy": boot[0]["ratio_ours_over_scipy"],
            "bootstrap_scaled_beta_ours_over_scipy": scaled_ratio,
            "median_error_lsq_over_mle_at_100": ratio_100,
            "median_error_lsq_over_mle_at_100_by_num_problems": {
                str(r["num_problems"]): r["error_ratio_lsq_logk_over_mle"]
                for r in sorted(
                    eff["beta_by_num_problems"] + ([headline] if headline else []), key=_num_problems
                )
            },
            "median_error_lsq_over_mle_by_budget": {
                str(r["attempts_per_problem"]): r["error_ratio_lsq_logk_over_mle"] for r in eff["beta"]
            },
            "median_error_lsq_over_mle_by_budget_scaled": {
                str(r["attempts_per_problem"]): r["error_ratio_lsq_logk_over_mle"] for r in eff["scaled_beta"]
            },
        },
        "targets": {
            "bootstrap_ge_20x": bool(boot[0]["ratio_ours_over_scipy"] >= 20.0),
            "median_error_ratio_ge_5x_at_100": bool(ratio_100 >= 5.0),
        },
    }
    r = payload["ratios"]

    def table(ratios: dict[str, float]) -> str:
        return ", ".join(f"{k}: {v:.1f}x" for k, v in ratios.items())

    print(
        f"summary: bootstrap {r['bootstrap_beta_ours_over_scipy']:.1f}x scipy (beta), "
        f"{r['bootstrap_scaled_beta_ours_over_scipy']:.2f}x (scaled beta); median exponent error lsq/mle at n=100: "
        f"{ratio_100:.1f}x (P={budget.num_problems}); by n: {table(r['median_error_lsq_over_mle_by_budget'])}; "
        f"by P at n=100: {table(r['median_error_lsq_over_mle_at_100_by_num_problems'])}; "
        f"targets {payload['targets']}",
        flush=True,
    )
    return payload


if __name__ == "__main__":
    cli_main(NAME, run)
