"""Maximum-likelihood fits of the success-probability distribution, bootstrap intervals, and a sampling budget.

Schaeffer et al. 2025 (arXiv 2502.17578, section 6) estimate the power-law exponent of ``-log pass@k`` by fitting
the distribution of per-problem success probabilities ``p_i`` to per-problem success counts, rather than fitting the
aggregate curve; the exponent is then the fitted left-tail index ``alpha`` (see
:func:`jaxsafety.scaling.predicted_passk_curve`). Here:

- :func:`fit_distribution`: MLE of ``(alpha, beta[, scale])`` for the Beta or Kumaraswamy family, on the binomial
  mixture likelihood (default) or the discretised one, by a damped Newton method in unconstrained coordinates
  ``theta = (log alpha, log beta[, logit scale])`` from a few starting points; jittable and vmappable.
- :func:`bootstrap_fit`: the same fit on ``num_resamples`` resamples of the problems (with replacement), vmapped.
- :func:`exponent_standard_error` / :func:`samples_for_exponent_tolerance`: the asymptotic (Fisher-information)
  standard error of the exponent for ``P`` problems with ``n`` attempts each, and the smallest ``n`` that meets a
  tolerance.

Optimiser. With 2-3 parameters the exact Hessian is cheap (forward-over-reverse ``jax.jacfwd`` of the gradient of
the mean negative log-likelihood), so each step solves ``(|H| + lambda I) d = -g`` with ``|H|`` the Hessian with its
eigenvalues replaced by their absolute values (a saddle-free Newton step; Dauphin et al. 2014) and ``lambda``
adapted Levenberg-Marquardt style: divided by 3 after a step that lowers the objective (or, at float32's noise
floor, keeps it within rounding and shrinks the gradient), multiplied by 10 (and the step rejected) otherwise.
Steps are capped at 3 in each coordinate. Near the optimum (``H`` positive definite, the Newton step ``-H^-1 g``
below 1 in every coordinate, no damping built up) the undamped Newton step is taken, and within 1e-2 of it a step
is accepted when the objective stays within rounding or the gradient shrinks. The loop (a ``lax.while_loop``, so
the fit is jittable and vmappable) stops once the Newton step is below 1e-4 in every coordinate (``H`` positive
definite) or the gradient max-norm is below 1e-5: a test of the point reached, not of the path, so a fit stops at
the same optimum whether run eagerly, jitted, or as one lane of a vmap, on any CPU. It also stops at
``lambda >= 1e5`` (no step helps any more) or after ``num_steps`` steps. The pending Newton step is then added
without a new evaluation when below 1e-2 (Newton's quadratic convergence leaves the result within ~``|step|^2``
of the optimum): measured on beta-binomial bootstrap resamples, ``alpha`` agrees with scipy's float64 optimum to
about 1e-5 (the float32 floor), where a stop at the first stalled step left errors up to 4e-4. Convergence is
reported, not enforced.

Cost. The likelihood of a problem depends only on its ``(n, c)`` pair, so concrete data are first reduced to
distinct pairs with multiplicities (100 attempts per problem give at most 101 pairs however many problems), and a
bootstrap resample is a reweighting of those pairs. The unscaled beta-binomial uses its sufficient statistics
(:func:`_beta_binomial_suffstats`): no special functions, so its fits compile in seconds; the quadrature families
take longer to compile (~10 s on a small CPU) and ``3 num_nodes`` integrand evaluations per distinct pair.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.config import ConfigError, check_choice, check_range, concrete_or_none
from jaxsafety.scaling.distributions import (
    DistributionParams,
    Family,
    LogScaleParams,
    beta_binomial_logpmf_unchecked,
    bin_bounds,
    check_bin_edges,
    check_distribution_params,
    check_family,
    log_bin_mass,
    log_mixture_pmf,
)
from jaxsafety.scaling.passk import check_counts

__all__ = [
    "BootstrapResult",
    "FitResult",
    "SampleBudget",
    "bootstrap_fit",
    "exponent_standard_error",
    "fit_distribution",
    "fit_distribution_unchecked",
    "samples_for_exponent_tolerance",
]

Likelihood = Literal["binomial", "discretized"]
_THETA_BOUND = 12.0  # |log alpha|, |log beta|, |logit scale| stay below this (alpha in [6e-6, 1.6e5])
_GRAD_TOL = 1e-3  # "converged": max |d mean-NLL / d theta| below this
_STOP_TOL = 1e-5  # the Newton loop stops once the gradient is below this
_STEP_TOL = (
    1e-4  # ... or once the Newton step -H^-1 g is below this in every coordinate (H positive definite)
)
_NEWTON_REGION = 1.0  # undamped Newton steps once the Newton step is below this in every coordinate
_LAMBDA0 = 1e-2  # initial Levenberg-Marquardt damping
_POLISH_MAX = 1e-2  # the final Newton step (taken unevaluated) when below this


class FitResult(NamedTuple):
    """One maximum-likelihood fit (fields gain a leading axis when vmapped, e.g. in :class:`BootstrapResult`).

    ``params``: the fitted :class:`DistributionParams` (``scale`` is 1 for an unscaled fit); ``log_likelihood``:
    the total over problems; ``exponent_se``: asymptotic standard error of ``alpha`` (the power-law exponent) from
    the observed information, ``alpha * sqrt([H^-1]_00 / P)`` with ``H`` the Hessian of the mean negative
    log-likelihood in ``theta`` (NaN if ``H`` is not positive definite); ``grad_norm``: max-norm of its gradient at
    the last point evaluated (``log_likelihood``, ``exponent_se`` and ``grad_norm`` are those of that point; the
    returned ``params`` add the final, unevaluated Newton step); ``converged``: ``grad_norm < 1e-3`` and finite;
    ``num_accepted``: Newton steps taken (of the best start).
    """

    params: DistributionParams
    log_likelihood: jax.Array
    exponent_se: jax.Array
    grad_norm: jax.Array
    converged: jax.Array
    num_accepted: jax.Array


def _shape_from_theta(theta: jax.Array, scaled: bool) -> LogScaleParams:
    alpha, beta = jnp.exp(theta[0]), jnp.exp(theta[1])
    if scaled:
        return LogScaleParams(alpha, beta, -jax.nn.softplus(-theta[2]), -jax.nn.softplus(theta[2]))
    zero = jnp.zeros((), theta.dtype)
    return LogScaleParams(alpha, beta, zero, jnp.full((), -jnp.inf, theta.dtype))


def _per_problem_loglik(
    theta: jax.Array,
    n: jax.Array,
    c: jax.Array,
    family: str,
    scaled: bool,
    likelihood: str,
    bin_edges: jax.Array | None,
    num_nodes: int,
) -> jax.Array:
    """``[P]`` log-likelihoods at unconstrained ``theta``."""
    shape = _shape_from_theta(theta, scaled)
    if likelihood == "discretized":
        lo, hi = bin_bounds(n, c, bin_edges)
        return log_bin_mass(lo, hi, shape, family, num_nodes)
    if family == "beta" and not scaled:
        return beta_binomial_logpmf_unchecked(n, c, shape.alpha, shape.beta)  # closed form
    return log_mixture_pmf(n, c, shape, family, num_nodes)


def _count_tails(counts: jax.Array, weights: jax.Array, size: int) -> jax.Array:
    """``T[j] = sum_u weights[u] [counts[u] > j]`` for ``j < size`` (a weighted histogram, summed from the top)."""
    hist = jax.ops.segment_sum(weights, counts.astype(jnp.int32), num_segments=size + 1)
    return jnp.cumsum(hist[::-1])[::-1][1:]


def _beta_binomial_suffstats(
    n: jax.Array, c: jax.Array, weights: jax.Array, max_attempts: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sufficient statistics of the beta-binomial likelihood (Griffiths 1973, "Maximum likelihood estimation for
    the beta-binomial distribution"): ``A[j]``, ``B[j]``, ``C[j]`` = weighted number of problems with more than
    ``j`` successes, failures, attempts. With the rising-factorial identity
    ``log B(c + alpha, n - c + beta) - log B(alpha, beta) = sum_{j<c} log(alpha + j) + sum_{j<n-c} log(beta + j)
    - sum_{j<n} log(alpha + beta + j)``, taken relative to ``alpha = beta = 1`` (where ``C(n, c) B(c+1, n-c+1)
    = 1/(n+1)``), the total log-likelihood is ``-sum_u w_u log(n_u + 1) + sum_j [A_j log(1 + (alpha-1)/(1+j))
    + B_j log(1 + (beta-1)/(1+j)) - C_j log(1 + (alpha+beta-2)/(2+j))]``: exact, ``3 max_attempts`` logs per
    evaluation whatever the number of problems, and no special functions in its derivatives (a small graph:
    fast to compile)."""
    return (
        _count_tails(c, weights, max_attempts),
        _count_tails(n - c, weights, max_attempts),
        _count_tails(n, weights, max_attempts),
    )


def _initial_thetas(n: jax.Array, c: jax.Array, w: jax.Array, scaled: bool) -> jax.Array:
    """Starting points ``[S, d]``: method of moments for a Beta on the rates, and a heavier-tailed variant.

    Rates ``r = c/n`` (weighted by ``w``) have mean ``mu`` and variance ``var_p + E[p(1-p)]/n``;
    ``E[r(1-r)] = E[p(1-p)](1 - 1/n)`` gives ``var_p = var(r) - mean(r(1-r)/(n-1))``, and a Beta with that mean
    and variance has ``alpha + beta = mu(1-mu)/var_p - 1``. The variant lowers ``log alpha`` by 1.5 and
    ``log beta`` by 1 (a heavier left tail, which moments estimate poorly). Scaled fits start each from ``scale``
    just above the largest rate and from 0.95. The Kumaraswamy reuses the Beta values (its ``(a, b)`` play
    similar roles).
    """
    w = w / jnp.sum(w)
    r = c / n
    mu = jnp.clip(jnp.sum(w * r), 1e-3, 1 - 1e-3)
    var_p = jnp.sum(w * (r - mu) ** 2) - jnp.sum(w * r * (1 - r) / jnp.maximum(n - 1.0, 1.0))
    var_p = jnp.clip(var_p, 1e-3 * mu * (1 - mu), 0.99 * mu * (1 - mu))
    kappa = jnp.clip(mu * (1 - mu) / var_p - 1.0, 0.05, 1e3)
    base = jnp.clip(jnp.stack([jnp.log(mu * kappa), jnp.log((1 - mu) * kappa)]), -5.0, 5.0)
    starts = base + jnp.asarray([[0.0, 0.0], [-1.5, -1.0]], dtype=base.dtype)
    if not scaled:
        return starts
    s_max = jnp.clip(1.05 * jnp.max(jnp.where(w > 0, r, 0.0)), 0.05, 0.99)
    etas = jnp.stack([jnp.log(s_max) - jnp.log1p(-s_max), jnp.asarray(np.log(0.95 / 0.05), base.dtype)])
    return jnp.concatenate([jnp.repeat(starts, 2, axis=0), jnp.tile(etas, 2)[:, None]], axis=1)


@functools.partial(
    jax.jit, static_argnames=("family", "scaled", "likelihood", "num_nodes", "num_steps", "max_attempts")
)
def fit_distribution_unchecked(
    n: jax.Array,
    c: jax.Array,
    weights: jax.Array,
    bin_edges: jax.Array | None,
    *,
    family: str,
    scaled: bool,
    likelihood: str,
    num_nodes: int,
    num_steps: int,
    max_attempts: int | None,
    starts: jax.Array | None = None,
) -> FitResult:
    """The jitted fit behind :func:`fit_distribution`, on checked inputs (no validation here; :mod:`.simulate`
    calls it inside its vmapped study). Fit to distinct ``(n, c)`` pairs ``[U]`` with multiplicities ``weights``
    ``[U]`` (the likelihood of a problem depends only on its pair, so ``P`` problems cost ``U <= P`` likelihood
    evaluations). The unscaled beta-binomial uses its sufficient statistics when ``max_attempts`` (a static bound
    on ``n``) is known.
    ``starts`` ``[S, d]``: starting points in ``theta`` (default: :func:`_initial_thetas`)."""
    num_problems = jnp.sum(weights)
    suffstats = family == "beta" and not scaled and likelihood == "binomial" and max_attempts is not None
    if suffstats:
        tails = _beta_binomial_suffstats(n, c, weights, max_attempts)
        j = jnp.arange(max_attempts, dtype=n.dtype)
        log_const = -jnp.sum(jnp.where(weights > 0, weights * jnp.log1p(n), 0.0))  # theta-free part
    else:
        log_const = jnp.zeros((), n.dtype)

    def objective(theta: jax.Array) -> jax.Array:
        if suffstats:
            # Relative to the uniform prior (alpha = beta = 1), so that the sums stay small (sum_j A_j
            # log(alpha + j) alone is ~P n log n and float32 would drown the Newton steps' improvements in it).
            a_tail, b_tail, n_tail = tails
            alpha, beta = jnp.exp(theta[0]), jnp.exp(theta[1])
            ll = a_tail @ jnp.log1p((alpha - 1.0) / (1.0 + j)) + b_tail @ jnp.log1p((beta - 1.0) / (1.0 + j))
            ll = ll - n_tail @ jnp.log1p((alpha + beta - 2.0) / (2.0 + j))
            return -ll / num_problems
        ll = _per_problem_loglik(theta, n, c, family, scaled, likelihood, bin_edges, num_nodes)
        return -jnp.sum(jnp.where(weights > 0, weights * ll, 0.0)) / num_problems

    def value_grad_hess(theta: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        def grad_aux(th: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
            val, g = jax.value_and_grad(objective)(th)
            return g, (val, g)

        hess, (val, g) = jax.jacfwd(grad_aux, has_aux=True)(theta)
        hess = 0.5 * (hess + hess.T)
        ok = jnp.isfinite(val) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(hess))
        eye = jnp.eye(theta.shape[0], dtype=theta.dtype)
        return jnp.where(ok, val, jnp.inf), jnp.where(ok, g, 0.0), jnp.where(ok, hess, eye)

    def newton_step(g: jax.Array, evals: jax.Array, evecs: jax.Array) -> jax.Array:
        """The undamped Newton step ``-H^-1 g`` from ``H``'s eigendecomposition; inf unless ``H`` is positive
        definite."""
        pd = jnp.min(evals) > 0
        d = -evecs @ ((evecs.T @ g) / jnp.where(pd, evals, 1.0))
        return jnp.where(pd & jnp.all(jnp.isfinite(d)), d, jnp.inf)

    def run(theta0: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        # The first iteration evaluates theta0 itself (val = inf, zero gradient: a zero step), so that the graph
        # holds a single value-gradient-Hessian evaluation. The stopping rule is a property of the point reached,
        # not of the path (so a fit stops at the same optimum eager, jitted or as one lane of a vmap, on any CPU):
        # the Newton step -H^-1 g is below _STEP_TOL in every coordinate with H positive definite, or the
        # gradient is below _STOP_TOL; lambda >= 1e5 (no step helps) and num_steps end it too. The carry holds
        # H's eigendecomposition (one eigh per step, shared by the stopping rule and the next step).
        def cond(carry: tuple) -> jax.Array:
            i, _, val, g, (evals, evecs), lam, _, _ = carry
            small_step = jnp.max(jnp.abs(newton_step(g, evals, evecs))) <= _STEP_TOL
            done = jnp.isfinite(val) & (small_step | (jnp.max(jnp.abs(g)) < _STOP_TOL) | (lam >= 1e5))
            return (i <= num_steps) & ~done

        def body(carry: tuple) -> tuple:
            i, theta, val, g, (evals, evecs), lam, accepted, stalled = carry
            newton = newton_step(g, evals, evecs)
            # Near the optimum (a Newton step below _NEWTON_REGION, with the damping at or below its initial
            # value) the undamped Newton step is taken: there the objective's decrease reaches float32's rounding
            # level, and the Levenberg-Marquardt test below would stall at a point set by rounding rather than by
            # the optimum. After a rejected step (lambda x 10) the damped steps take over again.
            local = (jnp.max(jnp.abs(newton)) <= _NEWTON_REGION) & (lam <= _LAMBDA0) & ~stalled
            damped = -evecs @ ((evecs.T @ g) / (jnp.abs(evals) + lam))
            d = jnp.clip(jnp.nan_to_num(jnp.where(local, newton, damped)), -3.0, 3.0)
            cand = jnp.clip(theta + d, -_THETA_BOUND, _THETA_BOUND)
            val_c, g_c, h_c = value_grad_hess(cand)
            # At float32's noise floor a good step can fail to lower the objective visibly; there a step that
            # keeps it within rounding and shrinks the gradient is taken, and so is a local Newton step that does
            # either (the objective's rounding, relative to its terms, can exceed 8 eps |val|): within
            # _POLISH_MAX the quadratic model is accurate and a shrinking gradient is the sign of progress.
            noise = 8.0 * jnp.finfo(val.dtype).eps * jnp.abs(val)
            within, shrinks = val_c <= val + noise, jnp.max(jnp.abs(g_c)) < jnp.max(jnp.abs(g))
            polishing = local & (jnp.max(jnp.abs(newton)) <= _POLISH_MAX)
            closer = jnp.where(polishing, within | shrinks, within & (local | shrinks))
            ok = jnp.isfinite(val_c) & ((val_c < val) | closer)
            first = ~jnp.isfinite(val)
            pick = lambda a, b: jnp.where(ok, a, b)  # noqa: E731
            lam = jnp.where(first, lam, jnp.clip(jnp.where(ok, lam / 3.0, lam * 10.0), 1e-8, 1e8))
            eig_c = tuple(jnp.linalg.eigh(h_c))
            return (
                i + 1,
                pick(cand, theta),
                pick(val_c, val),
                pick(g_c, g),
                jax.tree.map(pick, eig_c, (evals, evecs)),
                lam,
                accepted + (ok & ~first).astype(jnp.int32),
                ~ok & ~first,
            )

        dim = theta0.shape[0]
        init = (
            jnp.zeros((), jnp.int32),
            theta0,
            jnp.asarray(jnp.inf, theta0.dtype),
            jnp.zeros_like(theta0),
            (jnp.ones(dim, theta0.dtype), jnp.eye(dim, dtype=theta0.dtype)),
            jnp.asarray(_LAMBDA0, theta0.dtype),
            jnp.zeros((), jnp.int32),
            jnp.zeros((), bool),
        )
        _, theta, val, g, (evals, evecs), _, accepted, _ = jax.lax.while_loop(cond, body, init)
        # The last Newton step, taken without a new evaluation: near the optimum Newton converges quadratically,
        # so the returned point is within ~|step|^2 of the optimum wherever the loop stopped (val and g stay
        # those of the point before it; they differ by float32 rounding at most).
        newton = newton_step(g, evals, evecs)
        polish = jnp.isfinite(val) & (jnp.max(jnp.abs(newton)) <= _POLISH_MAX)
        theta = jnp.where(
            polish, jnp.clip(theta + jnp.nan_to_num(newton), -_THETA_BOUND, _THETA_BOUND), theta
        )
        h = (evecs * evals) @ evecs.T
        return theta, val, g, h, accepted

    if starts is None:
        starts = _initial_thetas(n, c, weights, scaled)
    thetas, vals, grads, hessians, accepted = jax.vmap(run)(starts)
    best = jnp.argmin(jnp.where(jnp.isfinite(vals), vals, jnp.inf))
    theta, val, g, h = thetas[best], vals[best], grads[best], hessians[best]
    shape = _shape_from_theta(theta, scaled)
    params = DistributionParams(shape.alpha, shape.beta, jnp.exp(shape.log_s))
    evals = jnp.linalg.eigvalsh(h)
    cov = jnp.linalg.inv(h) / num_problems
    se = jnp.where(jnp.min(evals) > 0, shape.alpha * jnp.sqrt(jnp.maximum(cov[0, 0], 0.0)), jnp.nan)
    grad_norm = jnp.max(jnp.abs(g))
    return FitResult(
        params=params,
        log_likelihood=-val * num_problems + log_const,
        exponent_se=se,
        grad_norm=grad_norm,
        converged=jnp.isfinite(val) & (grad_norm < _GRAD_TOL),
        num_accepted=accepted[best],
    )


def _prepare(
    n: jax.Array, c: jax.Array, family: str, likelihood: str, bin_edges: jax.Array | None
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, int | None]:
    """Checked ``(n_u, c_u, weights, inverse)``: the distinct ``(n, c)`` pairs ``[U]`` (padded with zero-weight
    entries), their multiplicities, and each problem's pair index ``[P]``. Concrete data are deduplicated with numpy; traced data are used as they are
    (``U = P``, unit weights). Last, a static bound on ``n`` (a power of two; None for traced data)."""
    check_family(family)
    check_choice("likelihood", likelihood, ("binomial", "discretized"))
    check_bin_edges(bin_edges)
    check_counts(n, c)
    dtype = jnp.result_type(float)
    n_a, c_a = concrete_or_none(n), concrete_or_none(c)
    if c_a is not None and c_a.ndim != 1:
        raise ConfigError("c.shape", c_a.shape, "a 1-D array of per-problem success counts [P]")
    if n_a is None or c_a is None:
        c = jnp.asarray(c, dtype)
        n = jnp.broadcast_to(jnp.asarray(n, dtype), c.shape)
        return n, c, jnp.ones_like(c), jnp.arange(c.shape[0]), None
    n_a = np.broadcast_to(n_a, c_a.shape)
    pairs, inverse, counts = np.unique(
        np.stack([n_a, c_a], axis=1).astype(np.int64), axis=0, return_inverse=True, return_counts=True
    )
    # Pad to a power of two with zero-weight dummies (n = 1, c = 0), so that data sets of similar size share
    # one compilation of the fit.
    size = max(8, 1 << (len(pairs) - 1).bit_length())
    pad = size - len(pairs)
    return (
        jnp.asarray(np.concatenate([pairs[:, 0], np.ones(pad, np.int64)]), dtype),
        jnp.asarray(np.concatenate([pairs[:, 1], np.zeros(pad, np.int64)]), dtype),
        jnp.asarray(np.concatenate([counts, np.zeros(pad, np.int64)]), dtype),
        jnp.asarray(inverse.reshape(-1)),
        1 << int(np.max(n_a) - 1).bit_length(),
    )


def fit_distribution(
    n: jax.Array,
    c: jax.Array,
    family: Family,
    *,
    scaled: bool,
    likelihood: Likelihood = "binomial",
    bin_edges: jax.Array | None = None,
    num_steps: int = 40,
    num_nodes: int = 32,
) -> FitResult:
    """Maximum-likelihood fit of the distribution of per-problem success probabilities.

    ``n``: attempts per problem (``[P]`` or a scalar), ``c``: successes ``[P]``; ``family``: ``"beta"`` or
    ``"kumaraswamy"``; ``scaled``: also fit ``scale`` (``p = scale * x``, Schaeffer et al.'s 3-parameter scaled
    Beta) instead of fixing it at 1. ``likelihood``: ``"binomial"`` (``P(c | n)``, the beta-binomial in closed form
    for the unscaled Beta, quadrature otherwise) or ``"discretized"`` (mass of the bin holding ``c/n``; see
    :func:`jaxsafety.scaling.discretized_log_likelihood` for ``bin_edges``). At most ``num_steps`` damped Newton steps
    from each of 2 (unscaled) or 4 (scaled) starting points; the best is returned (module docstring). Counts are
    checked when concrete; the fit is jittable (with the keyword arguments static) and vmappable over data.
    The power-law exponent of ``-log pass@k`` is ``result.params.alpha``.
    """
    check_range("num_steps", num_steps, ge=1, integer=True)
    check_range("num_nodes", num_nodes, ge=4, integer=True)
    n, c, weights, _, max_attempts = _prepare(n, c, family, likelihood, bin_edges)
    return fit_distribution_unchecked(
        n,
        c,
        weights,
        None if bin_edges is None else jnp.asarray(bin_edges, n.dtype),
        family=family,
        scaled=scaled,
        likelihood=likelihood,
        num_nodes=num_nodes,
        num_steps=num_steps,
        max_attempts=max_attempts,
    )


class BootstrapResult(NamedTuple):
    """``fits``: a :class:`FitResult` per resample (leading axis ``[R]``); ``exponent_se``: standard deviation of
    the fitted ``alpha`` over resamples; ``exponent_ci``: its 2.5 and 97.5 percentiles ``[2]`` (percentile
    interval; only converged fits are used for both); ``point``: the fit to the original data (the same result
    as :func:`fit_distribution`, computed in the same vmapped program, so a fit with intervals compiles once)."""

    fits: FitResult
    exponent_se: jax.Array
    exponent_ci: jax.Array
    point: FitResult


def bootstrap_fit(
    key: jax.Array,
    n: jax.Array,
    c: jax.Array,
    family: Family,
    *,
    scaled: bool,
    num_resamples: int = 200,
    likelihood: Likelihood = "binomial",
    bin_edges: jax.Array | None = None,
    num_steps: int = 40,
    num_nodes: int = 32,
) -> BootstrapResult:
    """Nonparametric bootstrap of :func:`fit_distribution`: resample the ``P`` problems with replacement
    ``num_resamples`` times (indices from ``jax.random.randint`` under ``key``) and fit each resample, vmapped over
    the resamples (memory grows linearly with ``num_resamples``; chunk the keys for very large ones)."""
    check_range("num_resamples", num_resamples, ge=2, integer=True)
    check_range("num_steps", num_steps, ge=1, integer=True)
    check_range("num_nodes", num_nodes, ge=4, integer=True)
    n, c, _, inverse, max_attempts = _prepare(n, c, family, likelihood, bin_edges)
    edges = None if bin_edges is None else jnp.asarray(bin_edges, n.dtype)
    static = dict(
        family=family,
        scaled=scaled,
        likelihood=likelihood,
        num_nodes=num_nodes,
        num_steps=num_steps,
        max_attempts=max_attempts,
    )
    fits, point, weights = _bootstrap_core(key, n, c, inverse, edges, num_resamples=num_resamples, **static)
    failed = np.flatnonzero(~np.asarray(fits.converged))
    if failed.size:
        # refit the few resamples that did not converge from the point estimate, from the default starts
        # (padded to a power of two so that similar counts share a compilation)
        size = 1 << int(failed.size - 1).bit_length()
        rows = np.concatenate([failed, np.full(size - failed.size, failed[0])])
        refit_one = functools.partial(
            fit_distribution_unchecked, **static
        )  # jitted; vmapped over the weights
        refit = jax.vmap(refit_one, in_axes=(None, None, 0, None))(n, c, weights[rows], edges)
        k = failed.size
        better = np.asarray(refit.converged)[:k] | (
            np.asarray(refit.log_likelihood)[:k] > np.asarray(fits.log_likelihood)[failed]
        )
        take = failed[better]
        src = np.flatnonzero(better)
        fits = jax.tree.map(lambda a, b: a.at[take].set(b[src]), fits, refit)
    alphas = jnp.where(fits.converged, fits.params.alpha, jnp.nan)
    return BootstrapResult(
        fits=fits,
        exponent_se=jnp.nanstd(alphas, ddof=1),
        exponent_ci=jnp.nanpercentile(alphas, jnp.asarray([2.5, 97.5])),
        point=point,
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "family",
        "scaled",
        "num_resamples",
        "likelihood",
        "num_nodes",
        "num_steps",
        "max_attempts",
    ),
)
def _bootstrap_core(
    key: jax.Array,
    n: jax.Array,
    c: jax.Array,
    inverse: jax.Array,
    edges: jax.Array | None,
    *,
    family: str,
    scaled: bool,
    num_resamples: int,
    likelihood: str,
    num_nodes: int,
    num_steps: int,
    max_attempts: int | None,
) -> tuple[FitResult, FitResult, jax.Array]:
    """The point fit, the resample fits ``[R]`` (each from the point estimate) and the resample weights."""
    num_problems = inverse.shape[0]

    def multiplicities(idx: jax.Array) -> jax.Array:
        # A resample of the problems, as multiplicities of the distinct (n, c) pairs.
        return jnp.zeros(n.shape, n.dtype).at[inverse[idx]].add(1.0)

    def one(weights: jax.Array, starts: jax.Array | None) -> FitResult:
        return fit_distribution_unchecked(
            n,
            c,
            weights,
            edges,
            family=family,
            scaled=scaled,
            likelihood=likelihood,
            num_nodes=num_nodes,
            num_steps=num_steps,
            max_attempts=max_attempts,
            starts=starts,
        )

    # The point fit first (every problem once, from every default start); then each resample from the point
    # estimate alone: a resample's optimum lies within a few standard errors of it, where Newton converges in a
    # few steps, so one start per resample replaces the 2-4 default ones (and the vmapped while-loop waits for
    # fewer slow lanes). bootstrap_fit refits the rare resample that does not converge from the default starts.
    point = one(multiplicities(jnp.arange(num_problems)), None)
    theta_hat = _theta_from_params(point.params, scaled)
    keys = jax.random.split(key, num_resamples)
    idx = jax.vmap(lambda k: jax.random.randint(k, (num_problems,), 0, num_problems))(keys)
    weights = jax.vmap(multiplicities)(idx)
    fits = jax.vmap(lambda w: one(w, theta_hat[None]))(weights)
    return fits, point, weights


# ----------------------------------------------------------------------------------------------------------------
# sampling budget


def _theta_from_params(params: DistributionParams, scaled: bool) -> jax.Array:
    dtype = jnp.result_type(float)
    parts = [jnp.log(jnp.asarray(params.alpha, dtype)), jnp.log(jnp.asarray(params.beta, dtype))]
    if scaled:
        s = jnp.asarray(params.scale, dtype)
        parts.append(jnp.log(s) - jnp.log1p(-s))
    return jnp.stack(parts)


@functools.partial(jax.jit, static_argnames=("family", "scaled", "max_samples", "num_nodes"))
def _fisher_information(
    theta: jax.Array, n: jax.Array, *, family: str, scaled: bool, max_samples: int, num_nodes: int
) -> jax.Array:
    """Per-problem Fisher information ``[d, d]`` in ``theta`` for ``n <= max_samples`` attempts:
    ``I = sum_{c=0}^{n} P(c | n) s_c s_c^T`` with scores ``s_c = d log P(c | n) / d theta`` (the outer-product form,
    positive semi-definite by construction), summing over a padded ``c = 0..max_samples`` so that ``n`` can be
    traced (one compilation for all ``n``).

    The unscaled Beta has everything in prefix sums (no special functions, a small graph): with
    ``S_f[c] = sum_{j<c} f(j)``, ``log P(c) = log C(n, c) + S_{log(alpha+j)}[c] + S_{log(beta+j)}[n-c]
    - S_{log(alpha+beta+j)}[n]`` (rising factorials) and ``d log P / d log alpha = alpha (S_{1/(alpha+j)}[c]
    - S_{1/(alpha+beta+j)}[n])`` (the digamma differences), likewise for ``beta``. Other families: forward-mode
    Jacobian of the quadrature log-likelihoods."""
    cs = jnp.arange(max_samples + 1, dtype=theta.dtype)
    valid = cs <= n
    cs_safe = jnp.minimum(cs, n)
    if family == "beta" and not scaled:
        alpha, beta = jnp.exp(theta[0]), jnp.exp(theta[1])
        j = jnp.arange(max_samples, dtype=theta.dtype)
        in_n = j < n

        def prefix(f: jax.Array) -> jax.Array:
            return jnp.concatenate([jnp.zeros(1, f.dtype), jnp.cumsum(jnp.where(in_n, f, 0.0))])

        ci = cs_safe.astype(jnp.int32)
        mi = (n - cs_safe).astype(jnp.int32)
        ni = jnp.asarray(n).astype(jnp.int32)
        log_binom = prefix(jnp.log(jnp.maximum(n - j, 1.0)) - jnp.log(j + 1.0))[ci]
        lp = log_binom + prefix(jnp.log(alpha + j))[ci] + prefix(jnp.log(beta + j))[mi]
        lp = lp - prefix(jnp.log(alpha + beta + j))[ni]
        inv_ab = prefix(1.0 / (alpha + beta + j))[ni]
        scores = jnp.stack(
            [
                alpha * (prefix(1.0 / (alpha + j))[ci] - inv_ab),
                beta * (prefix(1.0 / (beta + j))[mi] - inv_ab),
            ],
            axis=1,
        )
    else:
        ns = jnp.full_like(cs, n)

        def logp(th: jax.Array) -> jax.Array:
            return _per_problem_loglik(th, ns, cs_safe, family, scaled, "binomial", None, num_nodes)

        lp = logp(theta)
        scores = jax.jacfwd(logp)(theta)  # [C, d]
    probs = jnp.where(valid, jnp.exp(lp), 0.0)
    return jnp.einsum("c,ci,cj->ij", probs, scores, scores)


def _relative_se(info: jax.Array, num_problems: int) -> float:
    """``sqrt([I^-1]_00 / P)``: the asymptotic SE of ``log alpha``, i.e. the relative SE of ``alpha``."""
    info = np.asarray(info, dtype=np.float64)
    evals = np.linalg.eigvalsh(info)
    # singular up to float32 rounding of the summed information (e.g. one attempt per problem)
    if not np.all(np.isfinite(evals)) or evals.min() <= 1e-5 * max(evals.max(), 1e-300):
        return float("inf")
    return float(np.sqrt(np.linalg.inv(info)[0, 0] / num_problems))


def exponent_standard_error(
    params: DistributionParams,
    family: Family,
    *,
    scaled: bool,
    num_problems: int,
    samples_per_problem: int,
    num_nodes: int = 32,
) -> float:
    """Asymptotic relative standard error ``SE(alpha_hat) / alpha`` of the exponent fitted by
    :func:`fit_distribution` (binomial likelihood) to ``num_problems`` problems with ``samples_per_problem``
    attempts each, when the true distribution is ``params``: ``sqrt([I^-1]_00 / P)`` with ``I`` the per-problem
    Fisher information in ``theta`` (``theta_0 = log alpha``, so its SE is the relative SE of ``alpha``). It is the
    Cramer-Rao bound, attained by the MLE for large ``P``. ``inf`` when ``I`` is singular (e.g. one attempt per
    problem cannot separate ``alpha`` from ``beta``). Not jittable (returns a Python float)."""
    check_family(family)
    check_distribution_params(params)
    check_range("num_problems", num_problems, ge=1, integer=True)
    check_range("samples_per_problem", samples_per_problem, ge=1, integer=True)
    theta = _theta_from_params(params, scaled)
    info = _fisher_information(
        theta,
        jnp.asarray(samples_per_problem, theta.dtype),
        family=family,
        scaled=scaled,
        # padded to a power of two, so that nearby n share one compilation
        max_samples=1 << (samples_per_problem - 1).bit_length(),
        num_nodes=num_nodes,
    )
    return _relative_se(info, num_problems)


class SampleBudget(NamedTuple):
    """``samples_per_problem``: the smallest ``n`` meeting the tolerance (None if even ``max_samples`` does not);
    ``relative_se``: ``SE(alpha_hat)/alpha`` at that ``n`` (or at ``max_samples``)."""

    samples_per_problem: int | None
    relative_se: float


def samples_for_exponent_tolerance(
    params: DistributionParams,
    family: Family,
    *,
    scaled: bool,
    num_problems: int,
    rel_tolerance: float,
    z: float = 1.96,
    max_samples: int = 4096,
    num_nodes: int = 32,
) -> SampleBudget:
    """How many attempts per problem make ``z * SE(alpha_hat) <= rel_tolerance * alpha``.

    Rule: the Fisher-information standard error of :func:`exponent_standard_error` (the asymptotic SE of the
    binomial-likelihood MLE at the assumed ``params``; e.g. a pilot fit). It decreases in ``n`` (``n + 1`` attempts
    are at least as informative as ``n``), so the smallest ``n`` in ``[1, max_samples]`` is found by bisection; it
    levels off at the information of observing each ``p_i`` exactly, so a tolerance below that floor is not
    reachable at any ``n``: then ``samples_per_problem`` is None. With ``z = 1.96`` the tolerance is the
    half-width of a 95% normal interval, relative to ``alpha``. Cost: one compilation for ``max_samples`` and about
    ``log2(max_samples)`` evaluations of ``max_samples + 1`` likelihoods each.
    """
    check_family(family)
    check_distribution_params(params)
    check_range("num_problems", num_problems, ge=1, integer=True)
    check_range("rel_tolerance", rel_tolerance, gt=0)
    check_range("z", z, gt=0)
    check_range("max_samples", max_samples, ge=1, integer=True)
    theta = _theta_from_params(params, scaled)

    def rel_se(n: int) -> float:
        info = _fisher_information(
            theta,
            jnp.asarray(n, theta.dtype),
            family=family,
            scaled=scaled,
            max_samples=max_samples,
            num_nodes=num_nodes,
        )
        return _relative_se(info, num_problems)

    se_max = rel_se(max_samples)
    if z * se_max > rel_tolerance:
        return SampleBudget(None, se_max)
    lo, hi, se_hi = 0, max_samples, se_max  # invariant: n = hi meets the tolerance, n = lo does not (or is 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        se_mid = rel_se(mid)
        if z * se_mid <= rel_tolerance:
            hi, se_hi = mid, se_mid
        else:
            lo = mid
    return SampleBudget(hi, se_hi)
