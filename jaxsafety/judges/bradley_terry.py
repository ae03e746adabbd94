"""Bradley-Terry maximum-likelihood fits of pairwise comparisons (LLM-judge tournaments), Elo ratings, bootstrap.

Model (Bradley & Terry 1952). Model ``i`` has a log-strength ``theta_i`` and ``P(i beats j) = sigmoid(theta_i -
theta_j)``. A comparison ``k`` of ``model_a[k]`` against ``model_b[k]`` has an outcome ``y[k]`` in ``[0, 1]``: the
(soft) probability that ``a`` won (1: ``a`` won, 0: ``b`` won, 0.5: a tie, anything between: a soft label such as a
judge's probability) and a weight ``w[k] >= 0``. The fit maximises the penalised log-likelihood

    L(theta) = sum_k w_k [y_k log sigmoid(theta_a - theta_b) + (1 - y_k) log sigmoid(theta_b - theta_a)]
               - (l2 / 2) ||theta||^2,

i.e. the MAP estimate under a ``N(0, 1 / l2)`` prior (``choix.opt_pairwise(alpha=l2 / 2)`` maximises the same
objective). The data enter only through the ``[n, n]`` matrix of weighted (soft) wins ``W[i, j]`` (of ``i`` over
``j``), built in-graph by one scatter-add (``jax.ops.segment_sum``-style) of the comparisons: every fit costs one
pass over the ``M`` comparisons and then works on ``n x n`` arrays only.

Ties (``ties=``):

- ``"half"`` (default): a tie is half a win for each side (``y = 0.5``), as AlpacaEval and LMSYS Chatbot Arena do;
  nothing distinguishes a tie from two half-weighted decisive outcomes.
- ``"davidson"``: Davidson's (1970) tie model, ``P(i beats j) = pi_i / D``, ``P(tie) = nu sqrt(pi_i pi_j) / D``,
  ``D = pi_i + pi_j + nu sqrt(pi_i pi_j)``, ``pi = exp(theta)``, with the tie parameter ``nu > 0`` fitted jointly
  (reported as ``tie_parameter``). Here ``y`` must be a hard outcome (0, 0.5 = tie, 1). ``theta`` keeps its
  meaning: ``P(i beats j | decisive) = sigmoid(theta_i - theta_j)``. Data without a tie fit ``nu = 0`` (plain
  Bradley-Terry).

Solvers (``method=``):

- ``"newton"``: Newton's method on the dense ``n x n`` (``n + 1`` with Davidson's ``nu``) Hessian, Cholesky-solved,
  with Armijo backtracking. ``theta`` is identified only up to a shift when ``l2 = 0``: the Hessian gets ``c 11^T /
  n`` added (``c`` its mean diagonal), which fixes the null direction without moving the optimum (it is centred
  either way, see below). Quadratic convergence, ``O(n^3)`` per step: the choice for small ``n``.
- ``"newman"``: the fixed-point iteration of Newman (2023, JMLR 24(1), eq. 6), ``pi_i <- sum_j W_ij pi_j / (pi_i +
  pi_j) / sum_j W_ji / (pi_i + pi_j)``: ``O(n^2)`` per step, error down ~3x per step on random tournaments, 15x
  fewer steps than Hunter's MM there (evalica iterates it too). Anderson-accelerated (:func:`_fixed_point`): ~10
  steps to ``tol = 1e-9`` on the 500-model benchmark, <= 20 on the hard cases we tried.
- ``"mm"``: Hunter's (2004) minorise-maximise update ``pi_i <- W_i / sum_j N_ij / (pi_i + pi_j)`` (``W_i`` total
  wins, ``N = W + W^T`` comparisons): monotone for ``l2 = 0`` but slow (linear rate close to 1: ~300 plain steps on
  the 500-model benchmark, ~60 accelerated; thousands with spread-out strengths or never-losing models). Kept as a
  reference; ``auto`` never picks it, and its ``max_iter`` may need raising.
- ``"auto"`` (default): ``newton`` for ``n <= 64`` and with Davidson ties, ``newman`` above.

The prior in the fixed-point solvers. Both updates rearrange the stationarity condition ``g_i = 0``, ``g_i = G_i -
L_i - l2 theta_i`` with a "gain" and a "loss" term (Newman: ``G_i = sum_j W_ij pi_j / (pi_i + pi_j)``, ``L_i = pi_i
sum_j W_ji / (pi_i + pi_j)``; Hunter's MM: ``G_i = W_i``, ``L_i = pi_i sum_j N_ij / (pi_i + pi_j)``), into ``theta_i
<- theta_i + log G_i' - log L_i'``. The prior's term is split by sign: ``G_i' = G_i + l2 (max(-theta_i, 0) + 1)``,
``L_i' = L_i + l2 (max(theta_i, 0) + 1)`` (``G' - L' = g``, so the fixed point is the MAP estimate, and neither side
is ever 0). With a negligible prior this is exactly Newman's (Hunter's) update; for a model that never wins (``G =
0``) or never loses it is a contraction towards the finite MAP score (the data-free map ``theta <- log(l2 |theta| /
...)`` is insensitive to ``theta``), where keeping the prior implicit (solving ``G - e^theta B = l2 theta`` with
``G, B`` held) expands by ``|theta|`` for a never-losing model and diverges. With ``l2 = 0`` it is the plain update.

Identifiability and the default prior. Scores are log-strengths centred to mean 0: the likelihood is invariant to a
shift, and with ``l2 > 0`` the optimum is centred anyway (the likelihood's gradient sums to zero, so the stationarity
condition gives ``l2 sum theta = 0``). The maximum-likelihood estimate (``l2 = 0``) exists only if the directed
win graph is strongly connected (Hunter 2004, assumption 1; Zermelo 1929): a model that never wins (or never loses)
would go to -inf (+inf), and disconnected groups have no relative scale. The default ``l2 = 1e-6`` (a ``N(0, 10^6)``
prior, like choix's regularisation ``alpha``) keeps every score finite and the Hessian positive definite while
moving well-posed fits by about ``l2 |theta_i| / I_ii`` (``I_ii = sum_j N_ij p_ij p_ji``, the score's Fisher
information): 2e-7 on the 500-model benchmark (1e-10 from choix's unregularised MLE with ``l2 = 0``), so far below
1e-4 for realistic data. A model that never wins lands near ``log(l2 / (comparisons per model))``, about -15 to
-20 (some -3000 Elo), one that never loses as far above, and a model without comparisons at 0. Increase ``l2``
(e.g. 1e-2 to 1) for shrinkage with few comparisons per model.

Precision: float64 inside (``jax.enable_x64`` in the public functions); scores come back as float64 arrays.

Elo (:func:`to_elo`): ``rating = scale * log_base(e) * theta`` so that ``P(i beats j) = 1 / (1 + base^((R_j -
R_i) / scale))``, shifted so the anchor model (or the mean) sits at ``anchor_rating`` (LMSYS: scale 400, base 10,
anchor 1000 or a reference model). :func:`bootstrap_bradley_terry` resamples the comparisons with replacement
(multinomial multiplicities times the weights), refits every resample (``jax.vmap`` in chunks of ``batch_size``
through ``jax.lax.map``), and reports percentile intervals.
"""

from __future__ import annotations

import functools
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.config import ConfigError, check_choice, check_range, first_bad

__all__ = [
    "AUTO_NEWTON_MAX_MODELS",
    "DEFAULT_L2",
    "BTBootstrap",
    "BTResult",
    "bootstrap_bradley_terry",
    "check_comparisons",
    "fit_bradley_terry",
    "fit_checked_comparisons",
    "resolve_method",
    "to_elo",
    "win_matrix",
    "win_probability",
]

METHODS = ("auto", "newton", "newman", "mm")
TIES = ("half", "davidson")
DEFAULT_L2 = 1e-6
AUTO_NEWTON_MAX_MODELS = 64
_ARMIJO = 1e-4
_FULL_STEP = 0.1
_ANDERSON_MEMORY = 5
_MAX_HALVINGS = 40


class BTResult(NamedTuple):
    """One Bradley-Terry fit (fields gain a leading ``[R]`` axis in :class:`BTBootstrap`).

    ``scores``: ``[n]`` log-strengths ``theta``, centred to mean 0 (float64); ``log_likelihood``: the weighted data
    log-likelihood at ``scores`` (without the prior; Davidson's, tie terms included, for ``ties="davidson"``);
    ``converged``: the last step's max-norm was below ``tol`` (and everything is finite); ``num_iterations``: steps
    taken; ``tie_parameter``: Davidson's ``nu`` (NaN for ``ties="half"``).
    """

    scores: jax.Array
    log_likelihood: jax.Array
    converged: jax.Array
    num_iterations: jax.Array
    tie_parameter: jax.Array


class BTBootstrap(NamedTuple):
    """``scores``: ``[R, n]`` centred log-strengths of the resample fits; ``converged``: ``[R]``; ``lower``,
    ``upper``: ``[n]`` percentile interval at ``confidence`` over the converged resamples; ``estimate``: the
    :class:`BTResult` on the original data."""

    scores: jax.Array
    converged: jax.Array
    lower: jax.Array
    upper: jax.Array
    estimate: BTResult


# ----------------------------------------------------------------------------------------------------------------
# aggregation


def _counts(model_a, model_b, y, weights, num_models: int, ties: str):
    """Weighted win matrix ``W [n, n]`` (``W[i, j]``: wins of ``i`` over ``j``) and tie matrix ``T`` (symmetric,
    zeros for ``ties="half"``) from the comparisons, by one scatter-add of ``M`` rows into ``n^2`` cells
    (``weights=None``: unit weights)."""
    n = num_models
    dtype = y.dtype
    cell = model_a * n + model_b
    w = jnp.ones_like(y) if weights is None else weights
    if ties == "half":
        # wins of a over b and comparisons (a, b) in one scatter with a 2-wide window: W = A + (C - A)^T
        upd = jnp.stack([w * y, w], axis=-1)
        both = jnp.zeros((n * n, 2), dtype).at[cell].add(upd, mode="promise_in_bounds")
        a_wins = both[:, 0].reshape(n, n)
        total = both[:, 1].reshape(n, n)
        return a_wins + (total - a_wins).T, jnp.zeros((n, n), dtype)
    tie = (y == 0.5).astype(dtype)
    a_won = (y == 1.0).astype(dtype)
    upd = jnp.stack([w * a_won, w * tie, w], axis=-1)
    three = jnp.zeros((n * n, 3), dtype).at[cell].add(upd, mode="promise_in_bounds")
    a_wins, t, total = (three[:, k].reshape(n, n) for k in range(3))
    return a_wins + (total - a_wins - t).T, t + t.T


# ----------------------------------------------------------------------------------------------------------------
# objectives


def _strengths(theta):
    """``pi = exp(theta - max theta)`` and the shift: Bradley-Terry ratios are scale-free, and with the largest
    strength at 1 nothing overflows (a strength below ``e^-700`` would underflow: scores 700 apart)."""
    shift = jnp.max(theta)
    return jnp.exp(theta - shift), shift


def _bt_log_likelihood(theta, wins):
    """``sum_ij W_ij log sigmoid(theta_i - theta_j)``, with ``log sigmoid(theta_i - theta_j) = log pi_i - log(pi_i
    + pi_j)``: one ``log`` per cell (a ``log_sigmoid`` costs ~6x more on XLA:CPU in float64)."""
    pi, shift = _strengths(theta)
    log_sums = jnp.log(pi[:, None] + pi[None, :])
    return wins.sum(1) @ (theta - shift) - jnp.sum(wins * log_sums)


def _davidson_log_terms(theta, eta):
    """``log P(i beats j)`` and ``log P(tie)`` ``[n, n]`` under Davidson's model, stably."""
    ti, tj = theta[:, None], theta[None, :]
    tie_logit = eta + 0.5 * (ti + tj)
    log_d = jnp.logaddexp(jnp.logaddexp(ti, tj), tie_logit)
    return ti - log_d, tie_logit - log_d


def _davidson_log_likelihood(theta, eta, wins, ties_m):
    log_win, log_tie = _davidson_log_terms(theta, eta)
    # T is symmetric (each tie counted in both cells), so the tie term is halved; 0 * -inf guarded when nu = 0
    tie_term = jnp.where(ties_m > 0, ties_m * log_tie, 0.0)
    return jnp.sum(jnp.where(wins > 0, wins * log_win, 0.0)) + 0.5 * jnp.sum(tie_term)


# ----------------------------------------------------------------------------------------------------------------
# Newton


def _newton(value_fn, grad_hess_fn, x0, free, tol, max_iter):
    """Damped Newton ascent on a concave ``value_fn``; ``free``: mask of the coordinates that move.

    ``grad_hess_fn(x) -> (g, H)``, ``H`` the *negative* Hessian (positive semidefinite) with its null direction
    already fixed. Armijo backtracking by halving. Stops when the full step's max-norm is ``<= tol`` (converged),
    after ``max_iter`` steps, or when no step length helps (not converged).
    """

    def cond(state):
        _, _, it, done, _ = state
        return (~done) & (it < max_iter)

    def body(state):
        x, f, it, _, _ = state
        g, h = grad_hess_fn(x)
        g = jnp.where(free, g, 0.0)
        h = jnp.where(free[:, None] & free[None, :], h, jnp.eye(x.shape[0], dtype=x.dtype))
        step = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(h), g)
        slope = g @ step
        small = jnp.max(jnp.abs(step)) <= tol

        # Newton decrement slope = g^T H^-1 g (twice the predicted gain): below _FULL_STEP the quadratic model is
        # accurate and the full step is taken unchecked, since there the gain is within the objective's rounding
        # and a line search would only chase noise
        near = slope <= _FULL_STEP

        def ls_cond(ls):
            t, f_new = ls
            return (~(f_new >= f + _ARMIJO * t * slope)) & (t > 2.0**-_MAX_HALVINGS) & ~near

        def ls_body(ls):
            t, _ = ls
            return t / 2, value_fn(x + (t / 2) * step)

        t, f_new = jax.lax.while_loop(ls_cond, ls_body, (jnp.ones((), x.dtype), value_fn(x + step)))
        accepted = (f_new >= f + _ARMIJO * t * slope) | near | small
        x_new = jnp.where(accepted, x + t * step, x)
        f_new = jnp.where(accepted, f_new, f)
        done = small | ~accepted | ~jnp.all(jnp.isfinite(step))
        finite = jnp.all(jnp.isfinite(jnp.where(free, x_new, 0.0)))  # a fixed nu = 0 has eta = -inf
        return x_new, f_new, it + 1, done, small & finite

    init = (x0, value_fn(x0), jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.zeros((), bool))
    x, _, it, _, converged = jax.lax.while_loop(cond, body, init)
    return x, converged, it


def _null_fix(h, n_theta):
    """Add ``c 11^T / n`` on the theta block (``c``: its mean diagonal + 1): removes the shift null direction."""
    c = jnp.mean(jnp.diagonal(h)[:n_theta]) + 1.0
    fix = jnp.zeros_like(h).at[:n_theta, :n_theta].set(c / n_theta)
    return h + fix


def _newton_half(wins, l2, tol, max_iter):
    n = wins.shape[0]
    comps = wins + wins.T
    total_wins = wins.sum(1)

    def value(theta):
        return _bt_log_likelihood(theta, wins) - 0.5 * l2 * theta @ theta

    def grad_hess(theta):
        pi, _ = _strengths(theta)
        p = pi[:, None] / (pi[:, None] + pi[None, :])  # P(i beats j)
        g = total_wins - jnp.sum(comps * p, axis=1) - l2 * theta
        c = comps * p * p.T
        h = jnp.diag(c.sum(1) + l2) - c
        return g, _null_fix(h, n)

    theta, converged, it = _newton(
        value, grad_hess, jnp.zeros(n, wins.dtype), jnp.ones(n, bool), tol, max_iter
    )
    return theta - theta.mean(), converged, it, jnp.full((), jnp.nan, wins.dtype)


def _newton_davidson(wins, ties_m, l2, tol, max_iter):
    """Newton on ``x = (theta, eta = log nu)``. Gradient and negative Hessian per pair are the mean and covariance
    of the features ``(e_i, e_j, (e_i + e_j) / 2 + e_eta)`` under the outcome probabilities ``(p, q, t)`` (the
    pair's ``log D`` is a log-sum-exp of those three linear functions)."""
    n = wins.shape[0]
    comps = wins + wins.T + ties_m
    total_wins = wins.sum(1)
    tie_rows = ties_m.sum(1)
    num_ties = 0.5 * tie_rows.sum()
    has_ties = num_ties > 0
    num_comps = 0.5 * comps.sum()
    # start: equal strengths, nu from the tie rate (P(tie) = nu / (2 + nu) when all strengths are equal)
    rate = num_ties / jnp.maximum(num_comps, 1e-300)
    eta0 = jnp.where(has_ties, jnp.log(2 * rate / jnp.maximum(1 - rate, 1e-12)), -jnp.inf)
    x0 = jnp.concatenate([jnp.zeros(n, wins.dtype), eta0[None]])
    free = jnp.concatenate([jnp.ones(n, bool), has_ties[None]])

    def split(x):
        return x[:n], x[n]

    def value(x):
        theta, eta = split(x)
        return _davidson_log_likelihood(theta, eta, wins, ties_m) - 0.5 * l2 * theta @ theta

    def grad_hess(x):
        theta, eta = split(x)
        log_win, log_tie = _davidson_log_terms(theta, eta)
        p, t = jnp.exp(log_win), jnp.exp(log_tie)
        m = p + 0.5 * t  # expected theta_i-feature of the ordered pair (i, j); m.T is theta_j's
        g_theta = total_wins + 0.5 * tie_rows - jnp.sum(comps * m, axis=1) - l2 * theta
        g_eta = num_ties - 0.5 * jnp.sum(comps * t)
        off = comps * (0.25 * t - m * m.T)
        diag = jnp.sum(comps * (p + 0.25 * t - m * m), axis=1)
        h_theta = jnp.diag(diag + l2) + off - jnp.diag(jnp.diagonal(off))
        h_te = jnp.sum(comps * (0.5 * t - m * t), axis=1)
        h_ee = 0.5 * jnp.sum(comps * (t - t * t))
        h = jnp.block([[h_theta, h_te[:, None]], [h_te[None, :], h_ee[None, None]]])
        return jnp.concatenate([g_theta, g_eta[None]]), _null_fix(h, n)

    x, converged, it = _newton(value, grad_hess, x0, free, tol, max_iter)
    theta, eta = split(x)
    return theta - theta.mean(), converged, it, jnp.exp(eta)


# ----------------------------------------------------------------------------------------------------------------
# fixed-point solvers (Newman 2023, Hunter 2004)


def _fixed_point(wins, l2, tol, max_iter, method: str):
    """Newman's or Hunter's fixed-point map ``T`` (module docstring), Anderson-accelerated.

    Anderson acceleration (type II, memory ``m = 5``; Walker & Ni 2011): from the last ``m + 1`` iterates ``x_k``
    and residuals ``f_k = T(x_k) - x_k``, ``x <- x + f - (dX + dF) gamma`` with ``gamma`` the least-squares
    coefficients of ``f`` on the residual differences ``dF`` (normal equations, ridge ``1e-12 tr``). Safeguard:
    when the residual's max-norm grows, the history restarts (the next step is a plain ``T`` step). It halves the
    number of map evaluations on random tournaments and cuts them 3-10x on spread-out strengths (where the plain
    map's linear rate approaches 1). Stops when Newman's step at ``x`` has max-norm ``<= tol`` (see
    ``fixed_point_map``) and returns ``T(x)``; otherwise (``max_iter``, or NaN) it returns ``T(x)`` at the ``x``
    with the smallest such step seen, since near float64's noise floor an accelerated iteration can wander (seen
    with Hunter's MM and a dominant model at ``tol = 1e-9``).
    """
    n = wins.shape[0]
    m = _ANDERSON_MEMORY
    dtype = wins.dtype
    comps = wins + wins.T
    total_wins = wins.sum(1)

    def log_ratio(theta, pi, gain, loss):
        # the prior's -l2 theta split by sign (plus l2 on both sides, so neither side is ever 0)
        gain = gain + l2 * (jnp.maximum(-theta, 0.0) + 1.0)
        loss = loss + l2 * (jnp.maximum(theta, 0.0) + 1.0)
        step = jnp.log(gain) - jnp.log(loss)
        return step - jnp.mean(step)

    def newman_sides(pi, inv):
        x = wins * inv  # one [n, n] array feeds both sums (the fastest layout on XLA:CPU)
        return x @ pi, pi * jnp.sum(x, axis=0)

    def fixed_point_map(theta):
        """``(T(theta), residual)``. The residual is the max-norm of Newman's step: near the optimum his gain and
        loss terms both approach ``sum_j N_ij p_ij p_ji``, the Hessian's diagonal, so the step is a diagonal
        Newton step and measures the distance to the optimum; Hunter's own step is smaller by a factor up to
        ``W_i / H_ii`` (unbounded for a dominant model) and would stop the MM iteration far from it."""
        pi, _ = _strengths(theta)
        inv = 1.0 / (pi[:, None] + pi[None, :])
        newman = log_ratio(theta, pi, *newman_sides(pi, inv))
        if method == "newman":
            return theta + newman, jnp.max(jnp.abs(newman))
        hunter = log_ratio(theta, pi, total_wins, pi * jnp.sum(comps * inv, axis=1))
        return theta + hunter, jnp.max(jnp.abs(newman))

    def cond(state):
        it, done = state[1], state[6]
        return (~done) & (it < max_iter)

    def body(state):
        theta, it, prev, xs, fs, count, _, best_r, best = state
        mapped, r = fixed_point_map(theta)
        f = mapped - theta
        done = (r <= tol) | ~jnp.isfinite(r)
        f_norm = jnp.max(jnp.abs(f))
        count = jnp.where(f_norm > prev, 0, count)
        xs = jnp.roll(xs, -1, axis=0).at[-1].set(theta)
        fs = jnp.roll(fs, -1, axis=0).at[-1].set(f)
        count = jnp.minimum(count + 1, m + 1)
        valid = (jnp.arange(m) >= m + 1 - count)[:, None]  # differences whose both ends are in the history
        d_f = jnp.where(valid, fs[1:] - fs[:-1], 0.0)
        d_x = jnp.where(valid, xs[1:] - xs[:-1], 0.0)
        gram = d_f @ d_f.T
        ridge = 1e-12 * jnp.trace(gram) + jnp.finfo(dtype).tiny
        gamma = jnp.linalg.solve(gram + ridge * jnp.eye(m, dtype=dtype), d_f @ f)
        accelerated = theta + f - (d_x + d_f).T @ gamma
        new = jnp.where(done, mapped, accelerated)
        better = r < best_r  # NaN is never better
        best_r = jnp.where(better, r, best_r)
        best = jnp.where(better, mapped, best)
        return new, it + 1, f_norm, xs, fs, count, done, best_r, best

    hist = jnp.zeros((m + 1, n), dtype)
    init = (
        jnp.zeros(n, dtype),
        jnp.zeros((), jnp.int32),
        jnp.full((), jnp.inf, dtype),
        hist,
        hist,
        jnp.zeros((), jnp.int32),
        jnp.zeros((), bool),
        jnp.full((), jnp.inf, dtype),
        jnp.zeros(n, dtype),
    )
    _, it, *_, r, theta = jax.lax.while_loop(cond, body, init)
    converged = (r <= tol) & jnp.all(jnp.isfinite(theta))
    return theta, converged, it, jnp.full((), jnp.nan, dtype)


# ----------------------------------------------------------------------------------------------------------------
# core


def resolve_method(method: str, ties: str, num_models: int) -> str:
    """The solver that ``method`` names: itself, or for ``"auto"`` Newton with Davidson ties or up to
    ``AUTO_NEWTON_MAX_MODELS`` models (dense ``[K, K]`` Hessian) and Newman's fixed point above that."""
    if method != "auto":
        return method
    return "newton" if ties == "davidson" or num_models <= AUTO_NEWTON_MAX_MODELS else "newman"


def _fit_counts(wins, ties_m, l2, tol, max_iter, *, method: str, ties: str) -> BTResult:
    if ties == "davidson":
        theta, converged, it, nu = _newton_davidson(wins, ties_m, l2, tol, max_iter)
        ll = _davidson_log_likelihood(theta, jnp.log(nu), wins, ties_m)
    else:
        if method == "newton":
            theta, converged, it, nu = _newton_half(wins, l2, tol, max_iter)
        else:
            theta, converged, it, nu = _fixed_point(wins, l2, tol, max_iter, method)
        ll = _bt_log_likelihood(theta, wins)
    return BTResult(theta, ll, converged, it, nu)


@functools.partial(jax.jit, static_argnames=("num_models", "method", "ties"))
def fit_checked_comparisons(
    model_a, model_b, y, weights, l2, tol, max_iter, *, num_models, method, ties
) -> BTResult:
    """The jitted fit of :func:`fit_bradley_terry` on arrays that :func:`check_comparisons` returned: win (and
    tie) counts ``[K, K]`` aggregated from the ``M`` comparisons, then the solver ``method`` (a resolved one, see
    :func:`resolve_method`); call it inside ``jax.enable_x64()``, as :func:`fit_bradley_terry` does. No validation
    here: it is the program whose time the benchmark separates from the input checks."""
    wins, ties_m = _counts(model_a, model_b, y, weights, num_models, ties)
    return _fit_counts(wins, ties_m, l2, tol, max_iter, method=method, ties=ties)


@functools.partial(
    jax.jit, static_argnames=("num_models", "method", "ties", "num_resamples", "batch_size", "confidence")
)
def _bootstrap_core(
    key,
    model_a,
    model_b,
    y,
    weights,
    l2,
    tol,
    max_iter,
    *,
    num_models,
    method,
    ties,
    num_resamples,
    batch_size,
    confidence,
) -> BTBootstrap:
    size = model_a.shape[0]
    keys = jax.random.split(key, num_resamples)

    def one(k):
        # multiplicities of a resample of the M comparisons with replacement (multinomial), times the weights
        idx = jax.random.randint(k, (size,), 0, size)
        mult = jnp.zeros(size, y.dtype).at[idx].add(1.0, mode="promise_in_bounds")
        wins, ties_m = _counts(
            model_a, model_b, y, mult if weights is None else weights * mult, num_models, ties
        )
        r = _fit_counts(wins, ties_m, l2, tol, max_iter, method=method, ties=ties)
        return r.scores, r.converged

    scores, converged = jax.lax.map(one, keys, batch_size=batch_size)
    kept = jnp.where(converged[:, None], scores, jnp.nan)
    tail = 50.0 * (1.0 - confidence)
    lower = jnp.nanpercentile(kept, tail, axis=0)
    upper = jnp.nanpercentile(kept, 100.0 - tail, axis=0)
    wins, ties_m = _counts(model_a, model_b, y, weights, num_models, ties)
    estimate = _fit_counts(wins, ties_m, l2, tol, max_iter, method=method, ties=ties)
    return BTBootstrap(scores, converged, lower, upper, estimate)


# ----------------------------------------------------------------------------------------------------------------
# validation


def _as_1d(field: str, value: object, size: int | None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1 or (size is not None and arr.shape[0] != size):
        want = "a 1-D array" + ("" if size is None else f" of length {size} (as model_a)")
        raise ConfigError(f"{field}.shape", arr.shape, want)
    return arr


def _index(value: object) -> object:
    """``value`` as a Python int if it is integer-like (numpy integers included), else unchanged (to be rejected
    by the range check that follows, which names the field)."""
    try:
        return operator.index(value)
    except TypeError:
        return value


def _check_options(num_models, l2, method, ties, max_iter, tol) -> int:
    num_models = _index(num_models)
    check_range("num_models", num_models, ge=1, integer=True)
    check_range("l2", l2, ge=0.0)
    check_choice("method", method, METHODS)
    check_choice("ties", ties, TIES)
    if ties == "davidson" and method not in ("auto", "newton"):
        raise ConfigError("method", method, "'auto' or 'newton' with ties='davidson'")
    check_range("max_iter", max_iter, ge=1, integer=True)
    check_range("tol", tol, gt=0.0)
    return num_models


def check_comparisons(model_a, model_b, y, weights, num_models, l2, ties):
    """Validate concrete comparisons (``ConfigError`` naming the field and the first bad entry); return
    ``(model_a, model_b, y, weights)`` as numpy arrays (integer indices as given, float64 outcomes and weights,
    ``None`` for unit weights). Each check is one vectorised pass (``min``/``max``; NaN fails them too); the
    first bad index is located only on failure."""
    a = _as_1d("model_a", model_a, None)
    size = a.shape[0]
    b = _as_1d("model_b", model_b, size)
    yy = _as_1d("y", y, size)
    for field, arr in (("model_a", a), ("model_b", b)):
        if arr.dtype.kind not in "iu":
            raise ConfigError(f"{field}.dtype", str(arr.dtype), "an integer dtype")
        if size and not (arr.min() >= 0 and arr.max() < num_models):
            first_bad(
                field, (arr < 0) | (arr >= num_models), arr, f"integers in [0, num_models={num_models})"
            )
    if np.any(a == b):
        first_bad(
            "model_b", a == b, b, "indices different from model_a at the same position (no self-comparisons)"
        )
    if yy.dtype.kind not in "biuf":
        raise ConfigError("y.dtype", str(yy.dtype), "a real or boolean dtype")
    yy = yy.astype(np.float64, copy=False)
    if size and not (yy.min() >= 0.0 and yy.max() <= 1.0):
        first_bad("y", ~((yy >= 0.0) & (yy <= 1.0)), yy, "probabilities in [0, 1] (1: model_a won), not NaN")
    if ties == "davidson":
        first_bad("y", ~np.isin(yy, (0.0, 0.5, 1.0)), yy, "0, 0.5 (tie) or 1 with ties='davidson'")
    w = None
    if weights is not None:
        w = _as_1d("weights", weights, size)
        if w.dtype.kind not in "biuf":
            raise ConfigError("weights.dtype", str(w.dtype), "a real dtype")
        w = w.astype(np.float64, copy=False)
        if size and not (w.min() >= 0.0 and w.max() < np.inf):
            first_bad("weights", ~(np.isfinite(w) & (w >= 0.0)), w, "finite numbers >= 0")
    if l2 == 0:
        # the MLE exists only for a strongly connected win graph; catch the plain cases (Hunter 2004, assumption 1)
        ww = np.ones(size) if w is None else w
        wins = np.bincount(a, ww * yy, num_models) + np.bincount(b, ww * (1.0 - yy), num_models)
        losses = np.bincount(a, ww * (1.0 - yy), num_models) + np.bincount(b, ww * yy, num_models)
        stuck = (wins <= 0) | (losses <= 0)
        if stuck.any():
            raise ConfigError(
                "l2",
                l2,
                f"numbers > 0 here: model {int(np.argmax(stuck))} never wins or never loses, so the unpenalised "
                f"MLE does not exist (the default is {DEFAULT_L2})",
            )
    a, b = (x if x.dtype in (np.int32, np.int64) else x.astype(np.int64) for x in (a, b))
    return a, b, yy, w


# ----------------------------------------------------------------------------------------------------------------
# public API


def fit_bradley_terry(
    model_a: jax.Array,
    model_b: jax.Array,
    y: jax.Array,
    *,
    num_models: int,
    weights: jax.Array | None = None,
    l2: float = DEFAULT_L2,
    method: str = "auto",
    ties: str = "half",
    max_iter: int = 1000,
    tol: float = 1e-9,
) -> BTResult:
    """Bradley-Terry MAP fit of ``M`` comparisons among ``num_models`` models (module docstring for the model,
    ties, solvers and the prior).

    ``model_a``, ``model_b``: ``[M]`` integer indices in ``[0, num_models)``, never equal at the same position;
    ``y``: ``[M]`` probability that ``model_a`` won (1, 0, 0.5 for a tie, or a soft label; with
    ``ties="davidson"`` only 0, 0.5, 1); ``weights``: ``[M]`` non-negative (default ones); ``l2``: Gaussian prior
    precision (objective ``log-likelihood - l2/2 ||theta||^2``); ``method``: ``"auto"``, ``"newton"``,
    ``"newman"`` or ``"mm"``; ``tol``: stop once the Newton step (``newton``) or Newman's step (``newman``,
    ``mm``) has max-norm ``<= tol``, about the scores' remaining error; ``max_iter``: iteration cap. Returns a
    :class:`BTResult` with centred float64 log-strengths ``[n]``.

    Validates concrete inputs (raises :class:`~jaxsafety.config.ConfigError` naming the field and the first bad
    index), then runs one jitted float64 program: aggregation of the comparisons into the ``[n, n]`` win matrix
    (scatter-add) and the solver. Compiles once per ``(M, num_models, method, ties)`` and weights given or not.
    Not jittable itself (it checks concrete inputs); :func:`bootstrap_bradley_terry` is the batched form.
    """
    num_models = _check_options(num_models, l2, method, ties, max_iter, tol)
    a, b, yy, w = check_comparisons(model_a, model_b, y, weights, num_models, l2, ties)
    method = resolve_method(method, ties, num_models)
    with jax.enable_x64():
        return fit_checked_comparisons(
            a,
            b,
            yy,
            w,
            np.float64(l2),
            np.float64(tol),
            np.int32(max_iter),
            num_models=num_models,
            method=method,
            ties=ties,
        )


def bootstrap_bradley_terry(
    key: jax.Array,
    model_a: jax.Array,
    model_b: jax.Array,
    y: jax.Array,
    *,
    num_models: int,
    num_resamples: int = 1000,
    weights: jax.Array | None = None,
    l2: float = DEFAULT_L2,
    method: str = "auto",
    ties: str = "half",
    max_iter: int = 1000,
    tol: float = 1e-9,
    confidence: float = 0.95,
    batch_size: int | None = 64,
) -> BTBootstrap:
    """Nonparametric bootstrap of :func:`fit_bradley_terry`: ``num_resamples`` resamples of the ``M``
    comparisons with replacement (``jax.random.randint`` under ``key``), each a vector of multiplicities that
    multiplies ``weights``, refitted by the same weighted fit; resamples are ``jax.vmap``-ed ``batch_size`` at a
    time (``jax.lax.map``; ``None``: all at once, memory ``~ num_resamples * (M + n^2)`` floats).

    Returns :class:`BTBootstrap`: the ``[R, n]`` centred scores, per-resample convergence, the percentile
    interval ``[lower, upper]`` at ``confidence`` (over converged resamples), and the fit to the original data.
    Other arguments as in :func:`fit_bradley_terry`.
    """
    num_models = _check_options(num_models, l2, method, ties, max_iter, tol)
    check_range("num_resamples", num_resamples, ge=2, integer=True)
    check_range("confidence", confidence, gt=0.0, lt=1.0)
    if batch_size is not None:
        check_range("batch_size", batch_size, ge=1, integer=True)
    a, b, yy, w = check_comparisons(model_a, model_b, y, weights, num_models, l2, ties)
    if a.shape[0] == 0:
        raise ConfigError("model_a.shape", a.shape, "at least one comparison to resample")
    method = resolve_method(method, ties, num_models)
    with jax.enable_x64():
        return _bootstrap_core(
            key,
            a,
            b,
            yy,
            w,
            np.float64(l2),
            np.float64(tol),
            np.int32(max_iter),
            num_models=num_models,
            method=method,
            ties=ties,
            num_resamples=num_resamples,
            batch_size=None if batch_size is None else min(batch_size, num_resamples),
            confidence=float(confidence),
        )


def win_matrix(
    model_a: jax.Array,
    model_b: jax.Array,
    y: jax.Array,
    *,
    num_models: int,
    weights: jax.Array | None = None,
) -> jax.Array:
    """The ``[n, n]`` float64 matrix of weighted (soft) wins, ``W[i, j] = sum_k w_k (y_k [a_k = i, b_k = j] + (1 -
    y_k) [a_k = j, b_k = i])``: the sufficient statistic every fit starts from (ties as half wins)."""
    num_models = _index(num_models)
    check_range("num_models", num_models, ge=1, integer=True)
    a, b, yy, w = check_comparisons(model_a, model_b, y, weights, num_models, DEFAULT_L2, "half")
    with jax.enable_x64():
        return _win_matrix_core(a, b, yy, w, num_models=num_models)


@functools.partial(jax.jit, static_argnames=("num_models",))
def _win_matrix_core(a, b, y, w, *, num_models):
    return _counts(a, b, y, w, num_models, "half")[0]


def to_elo(
    scores: jax.Array,
    *,
    scale: float = 400.0,
    base: float = 10.0,
    anchor: int | None = None,
    anchor_rating: float = 1000.0,
) -> jax.Array:
    """Elo ratings ``[..., n]`` of log-strengths ``scores [..., n]``: ``R = scale * log_base(e) * theta``, so that
    ``P(i beats j) = 1 / (1 + base^((R_j - R_i) / scale))`` as under Bradley-Terry; shifted so that model
    ``anchor`` has ``anchor_rating`` (``anchor=None``: the mean rating is ``anchor_rating``). Works on bootstrap
    score arrays ``[R, n]`` alike."""
    check_range("scale", scale, gt=0.0)
    check_range("base", base, gt=1.0)
    n = np.shape(scores)[-1]
    if anchor is not None:
        anchor = _index(anchor)
        check_range("anchor", anchor, ge=0, lt=n, integer=True)
    with jax.enable_x64():  # float64 like the fits (float32 would round ratings near 1000 to ~1e-4)
        ratings = jnp.asarray(scores, jnp.float64) * (scale / np.log(base))
        ref = ratings.mean(axis=-1, keepdims=True) if anchor is None else ratings[..., anchor : anchor + 1]
        return ratings - ref + anchor_rating


def win_probability(scores: jax.Array, i: jax.Array | int, j: jax.Array | int) -> jax.Array:
    """``P(i beats j) = sigmoid(scores[i] - scores[j])`` under Bradley-Terry (``i``, ``j`` broadcast; for
    Davidson fits, the probability given a decisive outcome)."""
    with jax.enable_x64():
        scores = jnp.asarray(scores, jnp.float64)
        return jax.nn.sigmoid(scores[..., i] - scores[..., j])
