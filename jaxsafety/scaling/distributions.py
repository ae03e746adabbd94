"""Distributions of single-attempt success probabilities and the likelihoods of per-problem success counts.

Schaeffer et al. 2025 ("How Do Large Language Monkeys Get Their Power (Laws)?", arXiv 2502.17578, sections 4-6)
explain the aggregate power law ``-log pass@k ~ a k^-b`` by the left tail of the distribution of per-problem
success probabilities ``p_i``: if its density behaves as ``p^(b-1)`` near 0, then
``1 - pass@k = E[(1 - p)^k] ~ k^-b``, and ``-log pass@k ~ 1 - pass@k`` once ``pass@k`` is near 1. Fitting that
distribution to per-problem counts estimates ``b`` with far fewer samples than fitting the aggregate curve.

Families (``p = scale * x``, ``0 < scale <= 1``; ``scale = 1`` is the unscaled family; the paper calls it ``c``):

- ``"beta"``: ``x ~ Beta(alpha, beta)``, density ``x^(alpha-1) (1-x)^(beta-1) / B(alpha, beta)``;
- ``"kumaraswamy"``: ``x ~ Kumaraswamy(a, b)``, density ``a b x^(a-1) (1 - x^a)^(b-1)``, CDF ``1 - (1 - x^a)^b``.

Both have density ``~ const * x^(alpha-1)`` near 0, so both predict the exponent ``b = alpha`` (``a`` for the
Kumaraswamy; :func:`predicted_passk_curve`). :class:`DistributionParams` holds ``(alpha, beta, scale)`` for either
family (``alpha, beta`` are Kumaraswamy's ``a, b``).

Likelihoods of ``c`` successes in ``n`` attempts (per problem, vectorised over problems):

- binomial mixture ``P(c | n) = C(n, c) E_p[p^c (1 - p)^(n-c)]``: closed form for the Beta (the beta-binomial,
  :func:`beta_binomial_logpmf`), one-dimensional quadrature otherwise (below);
- discretised (:func:`discretized_log_likelihood`): the probability mass, under the CDF of ``p``, of the bin that
  holds the observed rate ``c / n`` (by default ``[(c - 1/2)/n, (c + 1/2)/n]``), as in fitting a distribution to
  binned ``pass_i@1`` estimates.

Quadrature. Every integral here is ``int exp(l(t)) dt`` over an interval of ``t = logit x``, where ``l`` is the log
integrand times the Jacobian ``dx/dt = x (1 - x)``. In ``t`` the endpoint singularities ``x^(alpha-1)`` and
``(1-x)^(beta-1)`` become exponential tails ``exp(alpha t)`` (``t -> -inf``) and ``exp(-beta t)``
(``t -> +inf``), and the binomial factor ``x^c (1 - scale x)^(n-c)`` a smooth bump, so ``exp(l)`` is smooth,
unimodal (log-concave for the Beta family) and at most exponentially heavy-tailed. :func:`_log_integral_logit`
finds the mode and the two points where ``l`` has fallen by 3 from its maximum (safeguarded Newton), integrates
that bulk by Gauss-Legendre and each tail beyond it by Gauss-Legendre after the map ``t = t_R + w v / (1 - v)``
with ``w = 1 / |l'(t_R)|`` (the decay length there; a log-concave tail decays at least that fast, and the map
reaches ``~10^3 w`` at the outermost node): ``3 num_nodes`` evaluations per integral. The binomial factor is
evaluated in Loader's saddle-point form (:func:`_log_binom_pmf`), so no term of size ``n`` cancels. The node
placement is held fixed under differentiation (``stop_gradient``): the integral does not depend on it, so
gradients and Hessians are those of the quadrature sum.

Accuracy (float32, ``num_nodes = 32``, against mpmath quadrature at 30 digits on 150 random cases, ``alpha`` in
{0.05, 0.3, 1, 5, 20}, ``beta`` in {0.2, 2, 30, 50}, ``scale`` in {0.1, 0.6, 1}, ``n`` in {1, 20, 1000, 10^4}, ``c``
from 0 to ``n``): relative error of ``log P(c | n)`` below 3e-7, i.e. float32 rounding of the result (absolute
errors of a few 1e-6 where ``|log P| ~ 10``). With 16 nodes heavy tails (``alpha <= 0.3``) lose up to 1e-3. The
Kumaraswamy integrand need not be log-concave; the checked cases are unimodal, and a multimodal one would lose
accuracy rather than fail.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.config import ConfigError, check_choice, concrete_or_none
from jaxsafety.scaling._special import lgamma, lgamma_diff, log_beta, stirling_remainder
from jaxsafety.scaling.passk import check_counts

__all__ = [
    "DistributionParams",
    "LogScaleParams",
    "PassAtKCurve",
    "beta_binomial_logpmf",
    "beta_binomial_logpmf_unchecked",
    "bin_bounds",
    "check_bin_edges",
    "check_distribution_params",
    "check_family",
    "discretized_log_likelihood",
    "kumaraswamy_binomial_logpmf",
    "log_bin_mass",
    "log_mixture_pmf",
    "predicted_passk_curve",
    "scaled_beta_binomial_logpmf",
    "scaled_kumaraswamy_binomial_logpmf",
]

Family = Literal["beta", "kumaraswamy"]
FAMILIES: tuple[str, ...] = ("beta", "kumaraswamy")

_LOG_2PI = float(np.log(2.0 * np.pi))
_T_MAX = 1e4  # the mode search stays within |t| <= _T_MAX (x within e^-10^4 of 0 or 1)
_NEWTON_MAX_STEP = 8.0


class DistributionParams(NamedTuple):
    """Parameters of the distribution of ``p = scale * x``: ``alpha`` (Beta ``alpha`` / Kumaraswamy ``a``, the
    power-law exponent), ``beta`` (Beta ``beta`` / Kumaraswamy ``b``), ``scale`` in ``(0, 1]`` (1 = unscaled).
    Arrays of any common shape (``[]`` for one distribution, ``[R]`` for bootstrap fits)."""

    alpha: jax.Array
    beta: jax.Array
    scale: jax.Array


class LogScaleParams(NamedTuple):
    """:class:`DistributionParams` in the form the likelihoods and fits compute with: ``log_s = log(scale)`` and
    ``log1m_s = log(1 - scale)`` (``-inf`` when unscaled) are kept separately, so that ``1 - scale * x`` never
    rounds to 0 and a fit can parametrise ``scale`` by its logit."""

    alpha: jax.Array
    beta: jax.Array
    log_s: jax.Array
    log1m_s: jax.Array


def _float(x: object) -> jax.Array:
    return jnp.asarray(x, dtype=jnp.result_type(float))


def _shape_from_params(params: DistributionParams) -> LogScaleParams:
    scale = _float(params.scale)
    return LogScaleParams(_float(params.alpha), _float(params.beta), jnp.log(scale), jnp.log1p(-scale))


def check_family(family: str) -> None:
    """Raise ``ConfigError`` naming ``family`` unless it is one of ``FAMILIES``."""
    check_choice("family", family, FAMILIES)


def check_distribution_params(params: DistributionParams) -> None:
    """Raise ``ConfigError`` naming ``params.<field>`` and its first bad value unless the concrete parameters are
    positive with ``0 < scale <= 1``; traced parameters are not checked."""
    for name, lo_ok, accepted in (
        ("alpha", lambda a: a > 0, "numbers > 0"),
        ("beta", lambda a: a > 0, "numbers > 0"),
        ("scale", lambda a: (a > 0) & (a <= 1), "numbers 0 < scale <= 1"),
    ):
        a = concrete_or_none(getattr(params, name))
        if a is not None and not np.all(lo_ok(a)):
            bad = np.asarray(a)[~np.asarray(lo_ok(a))]
            raise ConfigError(f"params.{name}", float(np.ravel(bad)[0]), accepted)


# ----------------------------------------------------------------------------------------------------------------
# quadrature


@functools.lru_cache(maxsize=8)
def _gauss_legendre_01(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on ``(0, 1)`` (float64 numpy; exact for polynomials of degree
    ``2 num_nodes - 1``)."""
    x, w = np.polynomial.legendre.leggauss(num_nodes)
    return 0.5 * (x + 1.0), 0.5 * w


def _rtsafe(
    fn: Callable[[jax.Array], tuple[jax.Array, jax.Array, Any]],
    x0: jax.Array,
    inner: jax.Array,
    outer: jax.Array,
    iters: int,
) -> tuple[jax.Array, jax.Array, Any]:
    """Safeguarded Newton ("rtsafe", Numerical Recipes 9.4) for a root of ``fn(x) = (value, derivative, extra)``
    with ``value > 0`` at ``inner`` and ``<= 0`` at ``outer`` (either order). Newton steps, at most
    ``_NEWTON_MAX_STEP`` long, that leave the shrinking bracket are replaced by bisection. Runs ``iters`` steps
    and returns the last point evaluated with its ``derivative`` and ``extra`` (so callers need not evaluate
    there again)."""

    def body(_: int, carry: tuple) -> tuple:
        x, a, b, _, _, _ = carry  # invariant: value(a) > 0 >= value(b)
        val, der, extra = fn(x)
        a = jnp.where(val > 0, x, a)
        b = jnp.where(val > 0, b, x)
        step = -val / jnp.where(der == 0, 1.0, der)
        step = jnp.where(der == 0, jnp.sign(b - a) * _NEWTON_MAX_STEP, step)
        cand = x + jnp.clip(jnp.nan_to_num(step), -_NEWTON_MAX_STEP, _NEWTON_MAX_STEP)
        inside = (cand - a) * (cand - b) <= 0
        return jnp.where(inside, cand, 0.5 * (a + b)), a, b, x, der, extra

    _, der0, extra0 = jax.eval_shape(fn, x0)
    zeros = lambda s: jnp.zeros(s.shape, s.dtype)  # noqa: E731
    init = (x0, inner + 0.0 * x0, outer + 0.0 * x0, x0, zeros(der0), jax.tree.map(zeros, extra0))
    _, _, _, x_last, der_last, extra_last = jax.lax.fori_loop(0, iters, body, init)
    return x_last, der_last, extra_last


_BULK_DROP = 3.0  # the bulk panel spans the region where log f is within this of its maximum
_FD_STEP = 1e-3  # forward-difference step in t for l'' during the mode search


def _log_integral_logit(
    log_f: Callable[[jax.Array, Any], jax.Array],
    args: Any,
    t_init: jax.Array,
    t_lo: jax.Array,
    t_hi: jax.Array,
    num_nodes: int,
    *,
    finite_bounds: bool,
) -> jax.Array:
    """``log int_{t_lo}^{t_hi} exp(log_f(t, args)) dt``, elementwise over the batch shape of ``t_init``.

    ``log_f(t, args)`` maps ``t`` (the batch shape, or the batch shape plus a trailing node axis) elementwise to
    the log integrand, with parameters in the pytree ``args``; ``t_init`` starts the mode search; ``t_lo``/``t_hi``
    (may be ``-inf``/``+inf``; ``finite_bounds=False`` promises both are infinite) broadcast to the batch. For a
    unimodal integrand:

    1. the mode ``t*`` by safeguarded Newton on ``l'`` (``l''`` by a forward difference of ``l'``);
    2. on each side the point where ``l`` has dropped by ``_BULK_DROP`` from ``l(t*)`` (safeguarded Newton; the
       bound of the interval if ``l`` stays above that level up to it): the bulk ``[t_L, t_R]``;
    3. Gauss-Legendre with ``num_nodes`` nodes on the bulk, which may be wide and flat (heavy tails) or narrow and
       peaked (large ``n``) but holds no steep feature inside;
    4. each tail beyond ``t_R`` (``t_L``) with ``num_nodes`` nodes, mapped to ``(0, V)`` by ``t = t_R + w v/(1-v)``
       with ``w = 1/|l'(t_R)|``: beyond the level point ``l`` falls at least exponentially at rate ``|l'(t_R)|``
       when log-concave, which the map turns into a smooth integrand; ``V = 1`` for an infinite tail.

    The node placement (``t*``, ``t_L``, ``t_R``, ``w``) is held fixed under differentiation, except where a
    panel ends at a bound of the interval, whose gradient flows (Leibniz' rule). An empty interval gives ``-inf``.
    """
    batch = jnp.broadcast_shapes(jnp.shape(t_init), jnp.shape(t_lo), jnp.shape(t_hi))
    t_init, t_lo, t_hi = (jnp.broadcast_to(x, batch) for x in (t_init, t_lo, t_hi))
    sg = jax.lax.stop_gradient
    lo_c = jnp.maximum(sg(t_lo), -_T_MAX)
    hi_c = jnp.minimum(sg(t_hi), _T_MAX)
    args_sg = sg(args)

    def l_sg(t: jax.Array) -> jax.Array:
        return log_f(t, args_sg)

    def l_d1(t: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jax.jvp(l_sg, (t,), (jnp.ones_like(t),))

    ex = lambda x: x[..., None]  # noqa: E731

    # 1. mode: root of l' (positive on the left of the mode, negative on its right); l'' by a forward difference
    # of l' over _FD_STEP (both from one JVP on a trailing axis of size 2, which log_f broadcasts like a node
    # axis): a smaller graph than a second JVP, and only steers the Newton steps and sets the bulk's width scale.
    def mode_fn(t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        val, der = l_d1(ex(t) + jnp.asarray([0.0, _FD_STEP], t.dtype))
        return der[..., 0], (der[..., 1] - der[..., 0]) / _FD_STEP, val[..., 0]

    t_star, h_star, l_star = _rtsafe(mode_fn, jnp.clip(t_init, lo_c, hi_c), lo_c, hi_c, 24)
    w_curv = jax.lax.rsqrt(jnp.clip(-h_star, 1e-8, None))
    level = l_star - _BULK_DROP

    # 2. the bulk's ends: l(t) = level on each side, or the interval's bound if l stays above the level. Both sides
    # in one search, along a trailing axis of size 2 (which log_f broadcasts like a node axis).
    sides = jnp.asarray([-1.0, 1.0], t_star.dtype)
    bound_c = jnp.stack([lo_c, hi_c], axis=-1)
    bound = jnp.stack([t_lo, t_hi], axis=-1)
    # (Over the whole line there is no bound to stop at: skip that evaluation, one log_f less to compile.)
    above = l_sg(bound_c) > ex(level) if finite_bounds else jnp.zeros(bound_c.shape, bool)
    x0 = ex(t_star) + sides * ex(w_curv) * np.sqrt(2.0 * _BULK_DROP)
    x0 = jnp.clip(x0, jnp.minimum(ex(t_star), bound_c), jnp.maximum(ex(t_star), bound_c))

    def crossing(t: jax.Array) -> tuple[jax.Array, jax.Array, tuple[()]]:
        val, der = l_d1(t)
        return val - ex(level), der, ()

    t_end, slopes, _ = _rtsafe(crossing, x0, jnp.broadcast_to(ex(t_star), x0.shape), bound_c, 16)
    closed = above & (bound_c == sg(bound))
    # A panel ending at a (finite) bound of the interval keeps that bound's gradient.
    t_end = jnp.where(closed, jnp.where(jnp.isfinite(bound), bound, 0.0), jnp.where(above, bound_c, t_end))
    # Tail scale: beyond the level point a log-concave l falls at least at rate |l'|; where l' has the wrong sign
    # (a non-concave integrand, or a panel closed at a bound) fall back to the curvature width.
    outward = -sides * slopes
    w_tail = jnp.where(outward > 0, jnp.clip(1.0 / jnp.clip(outward, 1e-30, None), 1e-6, _T_MAX), ex(w_curv))
    t_left, t_right = t_end[..., 0], t_end[..., 1]

    v01, wts01 = _gauss_legendre_01(num_nodes)
    v01 = jnp.asarray(v01, t_star.dtype)
    wts01 = jnp.asarray(wts01, t_star.dtype)

    # 3. bulk panel (affine)
    width = t_right - t_left
    ts = [ex(t_left) + ex(width) * v01]
    wts = [ex(width) * wts01]
    # 4. tails
    for i, side in enumerate((-1.0, 1.0)):
        start, w = t_end[..., i], w_tail[..., i]
        dist = jnp.where(closed[..., i], 0.0, side * (bound[..., i] - start))
        finite = jnp.isfinite(dist)
        dist_f = jnp.where(finite, jnp.maximum(dist, 0.0), 1.0)
        big_v = jnp.where(finite, dist_f / (dist_f + w), 1.0)  # the tail is v in (0, V)
        v = ex(big_v) * v01
        ts.append(ex(start) + side * ex(w) * v / (1.0 - v))
        wts.append(ex(big_v) * wts01 * ex(w) / (1.0 - v) ** 2)
    t_nodes = jnp.concatenate(ts, axis=-1)
    weights = jnp.concatenate(wts, axis=-1)
    vals = log_f(t_nodes, args)
    shift = sg(jnp.max(jnp.where(weights > 0, vals, -jnp.inf), axis=-1, keepdims=True))
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    # Linear (not log) weights: a panel of zero length has weight 0, whose log would give NaN gradients.
    total = jnp.sum(weights * jnp.exp(vals - shift), axis=-1)
    return jnp.log(total) + shift[..., 0]


# ----------------------------------------------------------------------------------------------------------------
# log densities in t = logit(x), including the Jacobian dx/dt = x (1 - x)


def _log1m_exp_neg(y: jax.Array, log_y: jax.Array) -> jax.Array:
    """``log(1 - exp(-y))`` for ``y >= 0`` given also ``log y`` (used when ``y`` underflows): ``log y - y/2`` for
    ``y < 1e-3`` (error ``y^2/24``), ``log(-expm1(-y))`` up to ``log 2``, ``log1p(-exp(-y))`` above (Maechler 2012,
    "Accurately computing log(1 - exp(-|a|))")."""
    tiny = y < 1e-3
    mid = (~tiny) & (y < np.log(2.0))
    y_mid = jnp.where(mid, y, 1.0)
    y_big = jnp.where(tiny | mid, 1.0, y)
    return jnp.where(
        tiny, log_y - 0.5 * y, jnp.where(mid, jnp.log(-jnp.expm1(-y_mid)), jnp.log1p(-jnp.exp(-y_big)))
    )


def _log_softplus_neg(t: jax.Array) -> jax.Array:
    """``log(softplus(-t)) = log(-log sigmoid(t))``, without underflow for large ``t`` (where it is ``-t``)."""
    big = t > 30.0
    return jnp.where(big, -t, jnp.log(jax.nn.softplus(-jnp.where(big, 0.0, t))))


def _log1m_pow_sigmoid(t: jax.Array, a: jax.Array, log_x: jax.Array) -> jax.Array:
    """``log(1 - x^a)`` for ``x = sigmoid(t)``, ``log_x = log x``, stable for all ``t`` (``y = -a log x``)."""
    return _log1m_exp_neg(-a * log_x, jnp.log(a) + _log_softplus_neg(t))


def _log_prior_norm(shape: LogScaleParams, family: str) -> jax.Array:
    """The ``t``-independent part of :func:`_log_prior_logit`: ``-log B(alpha, beta)`` or ``log(a b)``."""
    if family == "beta":
        return -log_beta(shape.alpha, shape.beta)
    return jnp.log(shape.alpha) + jnp.log(shape.beta)


def _log_sigmoids(t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log sigmoid(t), log sigmoid(-t))`` from one ``log1p(exp(-|t|))``: both keep relative precision."""
    sp = jnp.log1p(jnp.exp(-jnp.abs(t)))
    return -(jnp.maximum(-t, 0.0) + sp), -(jnp.maximum(t, 0.0) + sp)


def _log_prior_logit(
    t: jax.Array, shape: LogScaleParams, family: str, log_x: jax.Array, log_1mx: jax.Array
) -> jax.Array:
    """Log density of ``t = logit(x)``, ``log f_x(x) + log x + log(1 - x)``, less :func:`_log_prior_norm`
    (kept out of the integrand so that the quadrature's derivatives do not carry it); ``log_x``, ``log_1mx``
    from :func:`_log_sigmoids`."""
    a, b = shape.alpha, shape.beta
    if family == "beta":
        return a * log_x + b * log_1mx
    # Kumaraswamy: a b x^(a-1) (1 - x^a)^(b-1) * x (1 - x)
    return a * log_x + log_1mx + (b - 1.0) * _log1m_pow_sigmoid(t, a, log_x)


def _log_p_and_q(shape: LogScaleParams, log_x: jax.Array, log_1mx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log p, log(1 - p))`` for ``p = scale * x``: ``log1p(-p)`` for ``p < 1/2`` (where ``1 - p -> 1`` and a
    sum would lose ``eps / p`` relative, which ``n log(1 - p)`` multiplies by ``n``), else
    ``log((1 - scale) + scale (1 - x))``, a sum of two non-negative terms (``scale -> 1``, ``x -> 1``, where
    ``1 - p`` itself is small and ``log1p(-p)`` would lose it)."""
    log_p = shape.log_s + log_x
    p = jnp.exp(log_p)
    small = p < 0.5
    q_big = jnp.exp(shape.log1m_s) + jnp.exp(shape.log_s + log_1mx)
    return log_p, jnp.where(
        small, jnp.log1p(-jnp.where(small, p, 0.0)), jnp.log(jnp.where(small, 1.0, q_big))
    )


def _mode_init(a_eff: jax.Array, b_eff: jax.Array, m: jax.Array, scale: jax.Array) -> jax.Array:
    """Mode in ``t`` of ``A log x + B log(1 - x) + m log(1 - s x)`` (``x = sigmoid t``; exact for the scaled Beta
    integrand, a starting point otherwise): setting the derivative
    ``A (1 - x) - B x - m s x (1 - x)/(1 - s x)`` to 0 gives ``s (A+B+m) x^2 - [A (1+s) + B + m s] x + A = 0``,
    whose smaller root (taken in the cancellation-free form ``2A / (q_b + sqrt(q_b^2 - 4 q_a A))``) lies in
    ``(0, 1]``."""
    qa = scale * (a_eff + b_eff + m)
    qb = a_eff * (1.0 + scale) + b_eff + m * scale
    disc = jnp.clip(qb * qb - 4.0 * qa * a_eff, 0.0, None)
    x = 2.0 * a_eff / (qb + jnp.sqrt(disc))
    return jnp.log(x) - jnp.log1p(-jnp.minimum(x, 1.0 - 1e-7))


def _bd0(x: jax.Array, log_mean: jax.Array) -> jax.Array:
    """Loader's deviance term ``bd0(x, M) = x log(x / M) + M - x >= 0`` for ``x > 0``, ``M = exp(log_mean)``.

    Near ``x = M`` the direct form cancels; with ``v = (x - M)/(x + M)``,
    ``bd0 = (x - M) v + 2 x (v^3/3 + v^5/5 + ...)`` (Loader 2000, "Fast and accurate computation of binomial
    probabilities"), used for ``|v| < 0.1`` and truncated after ``v^9`` (rest below 3e-9 relative).
    """
    mean = jnp.exp(log_mean)
    v = (x - mean) / (x + mean)
    near = jnp.abs(v) < 0.1
    vs = jnp.where(near, v, 0.0)
    v2 = vs * vs
    acc = jnp.zeros_like(vs)
    for j in range(4, 0, -1):  # sum_{j=1}^{4} v^(2j) / (2j + 1), by Horner in v^2
        acc = (acc + 1.0 / (2 * j + 1)) * v2
    series = (x - mean) * vs + 2.0 * x * vs * acc
    direct = x * (jnp.log(x) - log_mean) + mean - x
    return jnp.where(near, series, direct)


def _log_binom_const(n: jax.Array, c: jax.Array) -> jax.Array:
    """The ``p``-independent part of :func:`_log_binom_pmf`:
    ``r(n) - r(c) - r(n-c) + log(n / (2 pi c (n-c))) / 2`` for ``0 < c < n``, else 0."""
    m = n - c
    inner = (c > 0) & (m > 0)
    cs = jnp.where(inner, c, 1.0)
    ms = jnp.where(inner, m, 1.0)
    val = stirling_remainder(n) - stirling_remainder(cs) - stirling_remainder(ms)
    val = val + 0.5 * (jnp.log(n) - _LOG_2PI - jnp.log(cs) - jnp.log(ms))
    return jnp.where(inner, val, 0.0)


def _log_binom_pmf_var(n: jax.Array, c: jax.Array, log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """The ``p``-dependent part of :func:`_log_binom_pmf`: ``-bd0(c, n p) - bd0(n-c, n q)`` for ``0 < c < n``,
    ``n log q`` for ``c = 0`` and ``n log p`` for ``c = n``."""
    m = n - c
    inner = (c > 0) & (m > 0)
    log_n = jnp.log(n)
    val = -_bd0(jnp.where(inner, c, 1.0), log_n + log_p) - _bd0(jnp.where(inner, m, 1.0), log_n + log_q)
    return jnp.where(inner, val, jnp.where(c > 0, n * log_p, n * log_q))


def _log_binom_pmf(n: jax.Array, c: jax.Array, log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """``log[C(n, c) p^c q^(n-c)]`` with ``q = 1 - p`` given as logs, to relative precision in the result.

    The three terms are each of size ``~n`` and cancel to ``O(log n)`` near ``c = n p``, so the textbook sum loses
    ``eps * n`` (4e-3 at ``n = 10^4`` in float32). Loader's saddle-point form is exact and has no such cancellation::

        log dbinom = r(n) - r(c) - r(n-c) - bd0(c, n p) - bd0(n-c, n q) + log(n / (2 pi c (n-c))) / 2

    with ``r(z) = lgamma(z) - [(z - 1/2) log z - z + log(2 pi)/2]`` (= ``log z! - (z + 1/2) log z + z - ...``,
    the Stirling remainder) and :func:`_bd0`; ``c = 0`` gives ``n log q`` and ``c = n`` gives ``n log p``.
    Split into :func:`_log_binom_const` and :func:`_log_binom_pmf_var`.
    """
    return _log_binom_const(n, c) + _log_binom_pmf_var(n, c, log_p, log_q)


@functools.partial(jax.jit, static_argnames=("family", "num_nodes"))
def log_mixture_pmf(
    n: jax.Array, c: jax.Array, shape: LogScaleParams, family: str, num_nodes: int
) -> jax.Array:
    """``log P(c | n) = log int C(n, c) p^c (1 - p)^(n-c) f(x) dx`` (``p = s x``) by quadrature in ``t``, with the
    binomial factor by :func:`_log_binom_pmf` so that no term of size ``n`` is ever formed. Unchecked kernel of the
    public ``*_binomial_logpmf`` functions and of the fits: float counts and ``shape`` of one broadcast shape."""
    n, c = _float(n), _float(c)
    m = n - c
    batch = jnp.broadcast_shapes(n.shape, c.shape, *(jnp.shape(x) for x in shape))
    n, c, m = (jnp.broadcast_to(x, batch) for x in (n, c, m))
    sh = LogScaleParams(*(jnp.broadcast_to(x, batch) for x in shape))

    def log_f(t: jax.Array, sh: LogScaleParams) -> jax.Array:
        e = (lambda x: x[..., None]) if t.ndim > len(batch) else (lambda x: x)
        s_e = LogScaleParams(*(e(x) for x in sh))
        log_x, log_1mx = _log_sigmoids(t)
        log_p, log_q = _log_p_and_q(s_e, log_x, log_1mx)
        return _log_prior_logit(t, s_e, family, log_x, log_1mx) + _log_binom_pmf_var(e(n), e(c), log_p, log_q)

    sg = jax.lax.stop_gradient
    t0 = _mode_init(sg(sh.alpha) + c, sg(sh.beta), m, jnp.exp(sg(sh.log_s)))
    inf = jnp.full(batch, jnp.inf, dtype=n.dtype)
    log_int = _log_integral_logit(log_f, sh, t0, -inf, inf, num_nodes, finite_bounds=False)
    return log_int + _log_binom_const(n, c) + _log_prior_norm(sh, family)


# ----------------------------------------------------------------------------------------------------------------
# public likelihoods


def beta_binomial_logpmf(n: jax.Array, c: jax.Array, alpha: jax.Array, beta: jax.Array) -> jax.Array:
    """Beta-binomial ``log P(c | n) = log C(n, c) + log B(c + alpha, n - c + beta) - log B(alpha, beta)``.

    (``int p^c (1-p)^(n-c) p^(alpha-1) (1-p)^(beta-1) dp / B(alpha, beta)``.) Written as
    ``-log(n+1) + [lgamma(c+alpha) - lgamma(c+1)] + [lgamma(n-c+beta) - lgamma(n-c+1)]
    - [lgamma(n+alpha+beta) - lgamma(n+2)] - log B(alpha, beta)`` with each bracket by a Stirling difference
    (:func:`jaxsafety.scaling._special.lgamma_diff`), so the result keeps relative precision at large ``n``
    (float32 ``betaln`` of arguments ~5000 is off by ~4e-3; here the error is ~``eps * (alpha + beta) log n``).
    Arrays broadcast; concrete counts are checked (``n >= 1``, ``0 <= c <= n``, integers) with a
    :class:`~jaxsafety.config.ConfigError` naming the field.
    """
    check_counts(n, c)
    return beta_binomial_logpmf_unchecked(*(_float(x) for x in (n, c, alpha, beta)))


@jax.jit
def beta_binomial_logpmf_unchecked(
    n: jax.Array, c: jax.Array, alpha: jax.Array, beta: jax.Array
) -> jax.Array:
    """:func:`beta_binomial_logpmf` on float arrays, without its count checks (jittable, for the fits)."""
    # log C(n,c) = -log(n+1) - log B(c+1, n-c+1); the difference of the two large log-betas is taken term by term.
    m = n - c
    big = lgamma_diff(c + 1.0, alpha - 1.0) + lgamma_diff(m + 1.0, beta - 1.0)
    big = big - lgamma_diff(n + 2.0, alpha + beta - 2.0)
    return -jnp.log1p(n) + big - log_beta(alpha, beta)


def _mixture_logpmf(
    n: jax.Array, c: jax.Array, params: DistributionParams, family: str, num_nodes: int
) -> jax.Array:
    check_counts(n, c)
    check_distribution_params(params)
    shape = _shape_from_params(params)
    n, c = _float(n), _float(c)
    # Everything at the batch shape before the jitted call: one compilation per (shape, family), however the
    # arguments were given (scalars or arrays).
    batch = jnp.broadcast_shapes(n.shape, c.shape, *(x.shape for x in shape))
    shape = LogScaleParams(*(jnp.broadcast_to(x, batch) for x in shape))
    return log_mixture_pmf(jnp.broadcast_to(n, batch), jnp.broadcast_to(c, batch), shape, family, num_nodes)


def scaled_beta_binomial_logpmf(
    n: jax.Array, c: jax.Array, alpha: jax.Array, beta: jax.Array, scale: jax.Array, *, num_nodes: int = 32
) -> jax.Array:
    """``log P(c | n)`` when ``p = scale * x``, ``x ~ Beta(alpha, beta)`` (Schaeffer et al.'s 3-parameter scaled
    Beta; ``scale`` is their ``c``): ``log C(n, c) + c log(scale) - log B(alpha, beta)
    + log int_0^1 x^(alpha+c-1) (1-x)^(beta-1) (1 - scale x)^(n-c) dx``, by the quadrature of the module docstring
    (``scale = 1`` reproduces :func:`beta_binomial_logpmf`). Not differentiable in ``scale`` at exactly 1."""
    return _mixture_logpmf(n, c, DistributionParams(alpha, beta, scale), "beta", num_nodes)


def kumaraswamy_binomial_logpmf(
    n: jax.Array, c: jax.Array, a: jax.Array, b: jax.Array, *, num_nodes: int = 32
) -> jax.Array:
    """``log P(c | n) = log C(n, c) + log int_0^1 p^c (1-p)^(n-c) a b p^(a-1) (1 - p^a)^(b-1) dp`` (quadrature)."""
    return _mixture_logpmf(n, c, DistributionParams(a, b, jnp.ones(())), "kumaraswamy", num_nodes)


def scaled_kumaraswamy_binomial_logpmf(
    n: jax.Array, c: jax.Array, a: jax.Array, b: jax.Array, scale: jax.Array, *, num_nodes: int = 32
) -> jax.Array:
    """As :func:`kumaraswamy_binomial_logpmf` with ``p = scale * x``, ``x ~ Kumaraswamy(a, b)``."""
    return _mixture_logpmf(n, c, DistributionParams(a, b, scale), "kumaraswamy", num_nodes)


def bin_bounds(n: jax.Array, c: jax.Array, bin_edges: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """``(lo, hi)`` of the bin of ``p`` holding the rate ``c / n``: ``[(c - 1/2)/n, (c + 1/2)/n]`` clipped to
    ``[0, 1]`` (one bin per attainable rate), or the bin of ``bin_edges`` (``[B + 1]``, from 0 to 1) holding it."""
    n, c = _float(n), _float(c)
    if bin_edges is None:
        return jnp.maximum(c - 0.5, 0.0) / n, jnp.minimum(c + 0.5, n) / n
    edges = _float(bin_edges)
    idx = jnp.clip(jnp.searchsorted(edges, c / n, side="right") - 1, 0, edges.shape[0] - 2)
    return edges[idx], edges[idx + 1]


def check_bin_edges(bin_edges: object) -> None:
    """Raise ``ConfigError`` naming ``bin_edges`` unless concrete edges are a 1-D increasing array from 0 to 1
    (None, the default bins, and traced edges pass)."""
    e = concrete_or_none(bin_edges) if bin_edges is not None else None
    if e is None:
        return
    ok = e.ndim == 1 and e.shape[0] >= 2 and e[0] == 0 and e[-1] == 1 and bool(np.all(np.diff(e) > 0))
    if not ok:
        raise ConfigError("bin_edges", e.tolist(), "a 1-D increasing array from 0 to 1 (at least one bin)")


_LOG_TINY = -200.0  # log-mass floor for bins outside the support of p (e.g. above ``scale``)


@functools.partial(jax.jit, static_argnames=("family", "num_nodes"))
def log_bin_mass(
    lo: jax.Array, hi: jax.Array, shape: LogScaleParams, family: str, num_nodes: int
) -> jax.Array:
    """``log P(lo <= p <= hi)`` for ``p = scale x``; floored at ``_LOG_TINY`` (a bin outside the support)."""
    s = jnp.exp(shape.log_s)
    x_lo = jnp.clip(lo / s, 0.0, 1.0)
    x_hi = jnp.clip(hi / s, 0.0, 1.0)
    empty = x_hi <= x_lo
    if family == "kumaraswamy":
        # Survival S(x) = (1 - x^a)^b: log S = b log(1 - x^a); mass = S(lo) - S(hi) in log space.
        a, b = shape.alpha, shape.beta

        def log_surv(x: jax.Array) -> jax.Array:
            inner = (x > 0) & (x < 1)
            xs = jnp.where(inner, x, 0.5)
            val = b * _log1m_exp_neg(-a * jnp.log(xs), jnp.log(a) + jnp.log(-jnp.log(xs)))
            return jnp.where(inner, val, jnp.where(x <= 0, 0.0, -jnp.inf))

        ls_lo, ls_hi = log_surv(x_lo), log_surv(x_hi)
        diff = jnp.where(empty | ~jnp.isfinite(ls_lo), -1.0, ls_hi - ls_lo)  # <= 0
        gap = jnp.clip(-diff, 1e-30, None)
        out = ls_lo + _log1m_exp_neg(gap, jnp.log(gap))
        return jnp.where(empty, _LOG_TINY, jnp.maximum(out, _LOG_TINY))
    # Beta: integrate the density of t = logit(x) between the logits of the bounds (no incomplete-beta gradients
    # in a and b are available in jax.scipy, and the quadrature is differentiable in everything).
    x_lo_s = jnp.where(empty, 0.25, x_lo)
    x_hi_s = jnp.where(empty, 0.75, x_hi)
    in_lo = x_lo_s > 0
    in_hi = x_hi_s < 1
    lo_safe = jnp.where(in_lo, x_lo_s, 0.5)
    hi_safe = jnp.where(in_hi, x_hi_s, 0.5)
    t_lo = jnp.where(in_lo, jnp.log(lo_safe) - jnp.log1p(-lo_safe), -jnp.inf)
    t_hi = jnp.where(in_hi, jnp.log(hi_safe) - jnp.log1p(-hi_safe), jnp.inf)
    sg = jax.lax.stop_gradient
    t0 = jnp.log(sg(shape.alpha)) - jnp.log(sg(shape.beta))
    batch = jnp.broadcast_shapes(t_lo.shape, t_hi.shape, *(jnp.shape(x) for x in shape))
    sh = LogScaleParams(*(jnp.broadcast_to(x, batch) for x in shape))

    def log_f(t: jax.Array, sh: LogScaleParams) -> jax.Array:
        e = (lambda x: x[..., None]) if t.ndim > len(batch) else (lambda x: x)
        return _log_prior_logit(t, LogScaleParams(*(e(x) for x in sh)), family, *_log_sigmoids(t))

    out = _log_integral_logit(log_f, sh, t0, t_lo, t_hi, num_nodes, finite_bounds=True)
    out = out + _log_prior_norm(sh, family)
    return jnp.where(empty, _LOG_TINY, jnp.maximum(out, _LOG_TINY))


def discretized_log_likelihood(
    params: DistributionParams,
    n: jax.Array,
    c: jax.Array,
    family: Family,
    *,
    bin_edges: jax.Array | None = None,
    num_nodes: int = 32,
) -> jax.Array:
    """Per-problem log probability ``log P(p in bin(c/n))`` ``[P]`` of the binned success rates ``c / n``.

    The bin mass is ``F(hi) - F(lo)`` under the CDF of ``p = scale x``, ``F(p) = F_x(min(p / scale, 1))``:
    closed form ``1 - (1 - x^a)^b`` for the Kumaraswamy (differenced in log space), quadrature of the density for
    the Beta (``jax.scipy.special.betainc`` has no gradient in ``alpha``/``beta``; the quadrature agrees with it
    to float32 precision). Bins: by default ``[(c - 1/2)/n, (c + 1/2)/n] & [0, 1]`` (one per attainable rate);
    or ``bin_edges`` ``[B + 1]`` from 0 to 1. A bin beyond ``scale`` has mass 0; its log is floored at -200 so fits
    stay finite.
    """
    check_family(family)
    check_counts(n, c)
    check_distribution_params(params)
    check_bin_edges(bin_edges)
    lo, hi = bin_bounds(_float(n), _float(c), bin_edges)
    return log_bin_mass(lo, hi, _shape_from_params(params), family, num_nodes)


# ----------------------------------------------------------------------------------------------------------------
# predicted pass@k


class PassAtKCurve(NamedTuple):
    """Predicted aggregate curve at budgets ``ks`` ``[K]``: ``pass_at_k = 1 - E[(1 - p)^k]``,
    ``neg_log_pass_at_k = -log pass_at_k``, and the large-``k`` power law ``-log pass@k ~ prefactor * k^-exponent``."""

    pass_at_k: jax.Array
    neg_log_pass_at_k: jax.Array
    exponent: jax.Array
    prefactor: jax.Array


def predicted_passk_curve(
    params: DistributionParams, family: Family, ks: jax.Array, *, num_nodes: int = 32
) -> PassAtKCurve:
    """The aggregate ``pass@k`` implied by a fitted distribution of ``p``, and its asymptotic power law.

    ``1 - pass@k = E[(1 - p)^k]`` is the probability of ``0`` successes in ``k`` attempts, i.e.
    ``exp(log P(c = 0 | n = k))`` by the quadrature of the likelihoods (for the unscaled Beta this equals the
    closed form ``B(alpha, beta + k) / B(alpha, beta)``). ``-log pass@k = -log(1 - E[(1-p)^k])`` is computed from
    the log, so it keeps relative precision as ``pass@k -> 1``.

    Power law. Near ``x = 0`` the density of ``x`` is ``f(x) ~ C x^(alpha-1)`` with ``C = 1/B(alpha, beta)``
    (Beta) or ``C = a b`` (Kumaraswamy). For large ``k``, ``(1 - s x)^k ~ exp(-k s x)`` confines the expectation
    to small ``x``, so ``E[(1 - p)^k] ~ C int_0^inf exp(-k s x) x^(alpha-1) dx = C Gamma(alpha) (k s)^-alpha``;
    and ``-log pass@k = -log(1 - E) ~ E`` as ``E -> 0``. Hence ``exponent = alpha`` (Kumaraswamy: ``a``) and
    ``prefactor = Gamma(alpha + beta) / (Gamma(beta) s^alpha)`` (Beta; Schaeffer et al. 2025, section 5) or
    ``b Gamma(a + 1) / s^a`` (Kumaraswamy). The relative corrections are ``O(1/k)`` from the density's next term
    and ``O(E)`` from ``-log(1 - E) = E + E^2/2 + ...``, the latter slow when ``alpha`` is small.
    """
    check_family(family)
    check_distribution_params(params)
    ks_a = concrete_or_none(ks)
    if ks_a is not None and not (np.all(ks_a >= 1) and np.all(ks_a == np.round(ks_a))):
        raise ConfigError("ks", ks_a.tolist(), "integers >= 1")
    scale = concrete_or_none(params.scale)
    # The unscaled Beta has the closed form B(alpha, beta + k) / B(alpha, beta): no quadrature to compile.
    closed = family == "beta" and scale is not None and bool(np.all(scale == 1.0))
    ks = _float(ks)
    if ks.ndim == 1 and ks_a is not None:
        # padded to a power-of-two length, so that budgets of similar length share one compilation
        size = max(16, 1 << (len(ks_a) - 1).bit_length())
        padded = jnp.concatenate([ks, jnp.ones(size - len(ks_a), ks.dtype)])
        curve = _predicted_curve(_shape_from_params(params), padded, family, num_nodes, closed)
        return curve._replace(
            pass_at_k=curve.pass_at_k[..., : len(ks_a)],
            neg_log_pass_at_k=curve.neg_log_pass_at_k[..., : len(ks_a)],
        )
    return _predicted_curve(_shape_from_params(params), ks, family, num_nodes, closed)


@functools.partial(jax.jit, static_argnames=("family", "num_nodes", "closed_form"))
def _predicted_curve(
    shape: LogScaleParams, ks: jax.Array, family: str, num_nodes: int, closed_form: bool
) -> PassAtKCurve:
    # Parameters [...] against budgets [K] -> [..., K], everything broadcast to that shape.
    pshape = jnp.broadcast_shapes(*(jnp.shape(x) for x in shape))
    shape = LogScaleParams(*(jnp.broadcast_to(x, pshape) for x in shape))
    batch = (*pshape, *ks.shape)
    b_shape = LogScaleParams(*(jnp.broadcast_to(x[..., None], batch) for x in shape))
    ks_b = jnp.broadcast_to(ks, batch)
    if closed_form:
        log_fail = beta_binomial_logpmf_unchecked(ks_b, jnp.zeros_like(ks_b), b_shape.alpha, b_shape.beta)
    else:
        log_fail = log_mixture_pmf(ks_b, jnp.zeros_like(ks_b), b_shape, family, num_nodes)
    log_fail = jnp.minimum(log_fail, 0.0)
    pass_k = -jnp.expm1(log_fail)
    neg_log = -_log1m_exp_neg(-log_fail, jnp.log(jnp.clip(-log_fail, 1e-38, None)))
    a, b = shape.alpha, shape.beta
    if family == "beta":
        log_pref = lgamma(a + b) - lgamma(b) - a * shape.log_s
    else:
        log_pref = jnp.log(b) + lgamma(a + 1.0) - a * shape.log_s
    return PassAtKCurve(pass_k, neg_log, a, jnp.exp(log_pref))
