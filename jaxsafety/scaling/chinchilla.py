"""Training scaling laws: Chinchilla approach 3, its bootstrap, compute-optimal allocation, and a compute power law.

Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models", approach 3) model the final loss of a run
with ``N`` parameters trained on ``D`` tokens as ``L(N, D) = E + A / N^alpha + B / D^beta``. The fit here follows
the replication of Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt", arXiv 2404.10102,
section 2 and appendix): in ``theta = (a, b, e, alpha, beta)`` with ``A = exp(a)``, ``B = exp(b)``, ``E = exp(e)``,

    log L_hat_i = LSE(a - alpha log N_i, b - beta log D_i, e)
    objective(theta) = sum_i Huber_delta(log L_hat_i - log L_i),   delta = 1e-3   (summed, not averaged)

minimised by L-BFGS from each point of the grid ``alpha, beta in {0, 0.5, 1, 1.5, 2}``, ``e in {-1, -0.5, 0,
0.5, 1}``, ``a, b in {0, 5, 10, 15, 20, 25}`` (4500 starts); the start that ends lowest wins. ``Huber_delta(r)``
is ``r^2 / 2`` for ``|r| <= delta`` and ``delta (|r| - delta / 2)`` beyond (``scipy.special.huber``).

- :func:`fit_chinchilla`: all 4500 starts vmapped in one jitted function (float64: with ``delta = 1e-3`` the
  objective is a sum of terms of size ``1e-6`` and below).
- :func:`bootstrap_chinchilla`: refits on resamples of the data points; per resample the objective is evaluated at
  every grid point first (one matrix product: per-point Huber terms times resample multiplicities) and L-BFGS runs
  from the ``num_starts`` best grid points only (tested to reach the full grid's optimum on the original data).
- :func:`compute_optimal`: ``argmin L(N, D)`` subject to ``6 N D = C``, in closed form.
- :func:`fit_power_law_offset`: ``L(C) = a C^-b + c`` fitted the same way (``log L = LSE(log a - b log C,
  log c)``, summed Huber, multi-start L-BFGS); :func:`bootstrap_power_law_offset` refits it on resamples, all
  resamples and starts in one jitted vmap.

Optimiser (:func:`_lbfgs`). optax's ``lbfgs`` (zoom line search, ``value_and_grad_from_state``) in a
``while_loop``, vmapped over the 4500 starts, took 330 s per fit of 200 points on 2 busy CPU cores: its nested
line-search loops run, batched, until the slowest start is done. This module has a compact L-BFGS instead
(Nocedal & Wright 2006, algorithms 7.4-7.5: two-loop recursion, memory 10, initial Hessian ``s'y / y'y``) whose
line search is folded into the outer loop: every loop trip evaluates the objective and gradient once, at the
trial point ``x + t d``; an Armijo decrease (``c1 = 1e-4``) accepts it and the next direction is tried with ``t =
1``, otherwise ``t`` shrinks (safeguarded quadratic interpolation, to 0.1-0.5 of itself; 0.1 after a non-finite
value, e.g. an overflow). Curvature pairs with ``s'y <= 1e-10 |s| |y|`` are skipped; a non-descent direction
resets the memory. A start stops once ``max|grad| <= gtol * delta * P`` (``P`` data points: the gradient of the
summed Huber loss is of order ``delta * P``; this is also the ``converged`` test), after ``max_iter`` accepted
steps or ``1.5 max_iter`` evaluations, or when a step no longer changes ``x`` in float64. A loop trip costs one
evaluation for all starts, so a fit costs at most ``1.5 max_iter`` evaluations of the ``[starts, points]``
residuals, whatever the starts do.

Coordinates. The optimiser works in ``(a - alpha m_N, b - beta m_D, e, alpha, beta)`` with ``m_N``, ``m_D`` the
means of ``log N``, ``log D`` over the data (residual in ``log N - m_N``, ``log D - m_D``): the same objective
and the same grid points (mapped), but without the strong coupling of ``a`` and ``alpha`` through ``log N ~ 20``,
which roughly halves the L-BFGS steps of the starts that reach the optimum. Results are mapped back.
``grad_norm`` is reported in these coordinates. :func:`fit_power_law_offset` centres ``log C`` the same way.

Cost. The objective and its gradient are written by hand (the residual is an LSE of terms linear in ``theta``)
and summed over points in one variadic reduction: XLA:CPU otherwise fuses every sum with its own copy of the
``exp``/``log`` chain (4-5x slower). Points are padded with zero-weight entries to a multiple of 16, so data sets
of similar size share one compilation. Measured on 2 CPU cores shared with other work (load ~5; 200 points,
defaults): a fit compiles in ~6 s and runs in ~6 s; a 200-resample bootstrap compiles in ~12 s and runs in ~3 s.
:func:`jaxsafety.xla_flags.enable_compilation_cache` saves the compilations across processes.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.config import ConfigError, check_range, first_bad

__all__ = [
    "CHINCHILLA_GRID",
    "POWER_LAW_GRID",
    "ChinchillaBootstrap",
    "ChinchillaFit",
    "ChinchillaParams",
    "PowerLawBootstrap",
    "PowerLawOffset",
    "bootstrap_chinchilla",
    "bootstrap_power_law_offset",
    "compute_optimal",
    "fit_chinchilla",
    "fit_power_law_offset",
    "predict_loss",
]

# Besiroglu et al. 2024, appendix: the initialisation grid of the L-BFGS fits (6 * 6 * 5 * 5 * 5 = 4500 starts).
CHINCHILLA_GRID: dict[str, tuple[float, ...]] = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}
# L(C) = a C^-b + c with C in FLOPs (log C ~ 40-60): exponents of compute laws are small (~0.05-0.3), so the grid
# in b is finer near 0; 11 * 7 * 5 = 385 starts.
POWER_LAW_GRID: dict[str, tuple[float, ...]] = {
    "log_a": tuple(2.5 * i for i in range(11)),
    "b": (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0),
    "log_c": (-1.0, -0.5, 0.0, 0.5, 1.0),
}
_CHINCHILLA_THETA = ("a", "b", "e", "alpha", "beta")  # order of the unconstrained parameter vector
_MEMORY = 10  # L-BFGS history length
_ARMIJO_C1 = 1e-4
_PAD_MULTIPLE = 16
_MIN_POINTS_CHINCHILLA = 6  # one more point than parameters
_MIN_POINTS_POWER_LAW = 5
# The fits run hundreds of loop trips over [starts, points] float64 arrays: at XLA's cheapest backend level (the
# test suite's default, jaxsafety.xla_flags.prefer_fast_compile) they run 4-5x slower, which costs far more than the
# faster compilation saves, so their jits pin the level.
_JIT_OPTIONS = {"xla_backend_optimization_level": 2}


# ----------------------------------------------------------------------------------------------------------------
# results


class ChinchillaParams(NamedTuple):
    """``L(N, D) = E + A / N^alpha + B / D^beta``; fields are arrays (with a leading axis when batched)."""

    E: jax.Array
    A: jax.Array
    B: jax.Array
    alpha: jax.Array
    beta: jax.Array

    def predict_loss(self, N: jax.Array, D: jax.Array) -> jax.Array:
        """Same as :func:`predict_loss`."""
        return predict_loss(self, N, D)


class ChinchillaFit(NamedTuple):
    """One fit (fields gain a leading axis ``[R]`` in :class:`ChinchillaBootstrap`).

    ``params``: the best start's parameters; ``objective``: the summed Huber loss there; ``grad_norm``: max-norm
    of its gradient in the optimiser's coordinates (module docstring); ``converged``: ``grad_norm <= gtol * delta
    * P`` (and finite); ``num_iterations``: accepted L-BFGS steps of the best start.
    """

    params: ChinchillaParams
    objective: jax.Array
    grad_norm: jax.Array
    converged: jax.Array
    num_iterations: jax.Array


class ChinchillaBootstrap(NamedTuple):
    """``fits``: one :class:`ChinchillaFit` per resample (leading axis ``[R]``); ``ci``: percentile intervals as a
    :class:`ChinchillaParams` whose fields have shape ``[2]`` (2.5th and 97.5th percentile); ``se``: standard
    deviations over resamples (a :class:`ChinchillaParams` of scalars). ``ci`` and ``se`` use the converged
    resample fits only. ``original``: the same top-``num_starts`` fit on the original data (unit weights), the
    point estimate that goes with the intervals; it matches :func:`fit_chinchilla`."""

    fits: ChinchillaFit
    ci: ChinchillaParams
    se: ChinchillaParams
    original: ChinchillaFit


class PowerLawOffset(NamedTuple):
    """``L(C) = a C^-b + c``."""

    a: jax.Array
    b: jax.Array
    c: jax.Array

    def predict_loss(self, C: jax.Array) -> jax.Array:
        """``a C^-b + c``, broadcasting ``C`` against the fields."""
        return self.a * jnp.asarray(C) ** -self.b + self.c


class PowerLawBootstrap(NamedTuple):
    """:func:`bootstrap_power_law_offset`: one fit per resample (fields ``[R]``). ``params``: the
    :class:`PowerLawOffset` of the best start; ``objective``: the summed Huber loss there; ``converged``: its
    gradient test (as in :class:`ChinchillaFit`); ``identifiable``: the resample holds at least 3 distinct compute
    values (with fewer the three parameters are not determined; such fits are not to be used); ``counts``
    ``[R, P]``: how often each data point was drawn (the resample, as the objective's point weights)."""

    params: PowerLawOffset
    objective: jax.Array
    converged: jax.Array
    identifiable: jax.Array
    counts: jax.Array


def predict_loss(params: ChinchillaParams, N: jax.Array, D: jax.Array) -> jax.Array:
    """``E + A / N^alpha + B / D^beta``, broadcasting ``N`` and ``D`` against the parameter fields."""
    N, D = jnp.asarray(N), jnp.asarray(D)
    return params.E + params.A * N ** (-params.alpha) + params.B * D ** (-params.beta)


# ----------------------------------------------------------------------------------------------------------------
# input checks


def _check_points(arrays: Mapping[str, object], min_points: int) -> list[np.ndarray]:
    """Concrete, 1-D, equally long, finite, positive float64 arrays with at least ``min_points`` entries."""
    out = []
    length = None
    first = next(iter(arrays))
    for field, x in arrays.items():
        if isinstance(x, jax.core.Tracer):
            raise ConfigError(
                field, "a traced array", "concrete arrays (the fits are not jittable from outside)"
            )
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 1:
            raise ConfigError(f"{field}.shape", a.shape, "a 1-D array [P] of data points")
        if length is None:
            length = a.shape[0]
            if length < min_points:
                raise ConfigError(f"{field}.shape", a.shape, f"at least {min_points} points")
        elif a.shape[0] != length:
            raise ConfigError(f"{field}.shape", a.shape, f"the same length as {first} ({length},)")
        first_bad(field, ~(np.isfinite(a) & (a > 0)), a, "finite numbers > 0")
        out.append(a)
    return out


def _check_grid(grid: Mapping[str, object] | None, default: Mapping[str, tuple[float, ...]]) -> np.ndarray:
    """The Cartesian product of the grid's 1-D value lists ``[G, len(default)]``, columns in ``default``'s order."""
    grid = default if grid is None else grid
    if not isinstance(grid, Mapping) or set(grid) != set(default):
        keys = None if not isinstance(grid, Mapping) else sorted(grid)
        raise ConfigError(
            "grid", keys, f"a dict with keys {sorted(default)}, each a 1-D list of finite numbers"
        )
    values = []
    for name in default:
        v = np.asarray(grid[name], dtype=np.float64)
        if v.ndim != 1 or v.size == 0:
            raise ConfigError(f"grid[{name!r}].shape", v.shape, "a non-empty 1-D list of numbers")
        first_bad(f"grid[{name!r}]", ~np.isfinite(v), v, "finite numbers")
        values.append(v)
    return np.array(list(itertools.product(*values)), dtype=np.float64).reshape(-1, len(default))


def _pad(columns: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Zero-padded columns and the point weights (1 on data, 0 on padding), padded to a multiple of 16."""
    n = columns[0].shape[0]
    size = -(-n // _PAD_MULTIPLE) * _PAD_MULTIPLE
    padded = [np.concatenate([c, np.zeros(size - n)]) for c in columns]
    return padded, np.concatenate([np.ones(n), np.zeros(size - n)])


# ----------------------------------------------------------------------------------------------------------------
# objectives: summed Huber of log-space residuals, value and gradient by hand


def _huber(r: jax.Array, delta: jax.Array) -> jax.Array:
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _sum_points(terms: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    """Each term summed over its last axis, in one variadic reduction (one fusion computes the shared per-point
    ``exp``/``log`` once; separate sums each recompute it on XLA:CPU, 4-5x slower)."""
    zeros = tuple(jnp.zeros((), t.dtype) for t in terms)
    axis = terms[0].ndim - 1
    return jax.lax.reduce(terms, zeros, lambda p, q: tuple(x + y for x, y in zip(p, q)), (axis,))


def _chinchilla_residual(theta: jax.Array, log_n: jax.Array, log_d: jax.Array, log_loss: jax.Array):
    """``r = LSE(a - alpha log N, b - beta log D, e) - log L`` and the pieces of its gradient.

    Written relative to ``e`` (a per-start scalar): ``r = e + log1p(t1 + t2) - log L`` with ``t1 = exp(a - e -
    alpha log N)``, ``t2 = exp(b - e - beta log D)``, so the log never sees 0; an overflow gives ``inf``, which the
    line search rejects. ``dr/da = t1/s``, ``dr/db = t2/s``, ``dr/de = 1/s`` with ``s = 1 + t1 + t2``.
    """
    a, b, e, alpha, beta = theta[0], theta[1], theta[2], theta[3], theta[4]
    t1 = jnp.exp(a - e - alpha * log_n)
    t2 = jnp.exp(b - e - beta * log_d)
    return e + jnp.log1p(t1 + t2) - log_loss, t1, t2, 1.0 + t1 + t2


def _chinchilla_value_and_grad(theta, log_n, log_d, log_loss, weights, delta):
    r, t1, t2, s = _chinchilla_residual(theta, log_n, log_d, log_loss)
    q = weights * jnp.clip(r, -delta, delta) / s  # w Huber'(r) dr/de
    f, ga, gb, ge, g_alpha, g_beta = _sum_points(
        (weights * _huber(r, delta), q * t1, q * t2, q, -q * t1 * log_n, -q * t2 * log_d)
    )
    return f, jnp.stack([ga, gb, ge, g_alpha, g_beta])


def _power_law_residual(theta: jax.Array, log_c: jax.Array, log_loss: jax.Array):
    """``r = LSE(log a - b log C, log c) - log L = log c + log1p(t) - log L``, ``t = exp(log a - log c - b log C)``."""
    t = jnp.exp(theta[0] - theta[2] - theta[1] * log_c)
    return theta[2] + jnp.log1p(t) - log_loss, t, 1.0 + t


def _power_law_value_and_grad(theta, log_c, log_loss, weights, delta):
    r, t, s = _power_law_residual(theta, log_c, log_loss)
    q = weights * jnp.clip(r, -delta, delta) / s
    f, g_a, g_b, g_c = _sum_points((weights * _huber(r, delta), q * t, -q * t * log_c, q))
    return f, jnp.stack([g_a, g_b, g_c])


# ----------------------------------------------------------------------------------------------------------------
# L-BFGS with the line search folded into the loop (module docstring)


class _LBFGSState(NamedTuple):
    x: jax.Array  # accepted iterate [dim]
    f: jax.Array
    g: jax.Array
    d: jax.Array  # search direction
    step: jax.Array  # trial step along d
    s_mem: jax.Array  # [m, dim], newest last
    y_mem: jax.Array
    rho: jax.Array  # [m] 1 / s'y; 0 marks an empty slot (it then drops out of the two-loop recursion)
    gamma: jax.Array  # initial inverse-Hessian scale
    num_iter: jax.Array
    num_eval: jax.Array
    stalled: jax.Array


class _Lanes(NamedTuple):
    x: jax.Array
    f: jax.Array
    grad_norm: jax.Array
    converged: jax.Array
    num_iter: jax.Array
    num_eval: jax.Array


def _dot(u: jax.Array, v: jax.Array) -> jax.Array:
    """``u . v`` for short vectors, written out term by term: under ``vmap`` over thousands of starts, ``@``
    becomes a batch of tiny matrix products and ``sum(u * v)`` a short-row reduction, both 2-3x slower on XLA:CPU
    than these elementwise terms, which fuse."""
    out = u[..., 0] * v[..., 0]
    for k in range(1, u.shape[-1]):
        out = out + u[..., k] * v[..., k]
    return out


def _two_loop(g, s_mem, y_mem, rho, gamma):
    """``-H g`` by the L-BFGS two-loop recursion (Nocedal & Wright 2006, algorithm 7.4); newest pair last.

    ``fori_loop``s rather than unrolled Python loops: the unrolled version runs ~2x faster but adds several seconds
    of XLA compilation per fit, more than it saves."""
    m = s_mem.shape[0]

    def newest_first(j, carry):
        q, coef = carry
        i = m - 1 - j
        c = rho[i] * _dot(s_mem[i], q)
        return q - c * y_mem[i], coef.at[i].set(c)

    q, coef = jax.lax.fori_loop(0, m, newest_first, (g, jnp.zeros_like(rho)))

    def oldest_first(i, r):
        return r + s_mem[i] * (coef[i] - rho[i] * _dot(y_mem[i], r))

    return -jax.lax.fori_loop(0, m, oldest_first, gamma * q)


def _lbfgs(value_and_grad: Callable, x0: jax.Array, *, max_iter: int, gtol: jax.Array) -> _Lanes:
    """Minimise from one start (vmap for many); see the module docstring."""
    dtype = x0.dtype
    f0, g0 = value_and_grad(x0)
    dim = x0.shape[0]
    zero = jnp.zeros((), jnp.int32)

    def steepest(g):
        return -g / jnp.maximum(jnp.sqrt(_dot(g, g)), jnp.finfo(dtype).tiny)

    state = _LBFGSState(
        x=x0,
        f=f0,
        g=g0,
        d=steepest(g0),  # first trial moves x by a unit distance
        step=jnp.ones((), dtype),
        s_mem=jnp.zeros((_MEMORY, dim), dtype),
        y_mem=jnp.zeros((_MEMORY, dim), dtype),
        rho=jnp.zeros((_MEMORY,), dtype),
        gamma=jnp.ones((), dtype),
        num_iter=zero,
        num_eval=zero,
        stalled=~(jnp.isfinite(f0) & jnp.all(jnp.isfinite(g0))),
    )

    def cond(st: _LBFGSState) -> jax.Array:
        return (
            ~st.stalled
            & (st.num_iter < max_iter)
            & (st.num_eval < (3 * max_iter) // 2)
            & (jnp.max(jnp.abs(st.g)) > gtol)
        )

    def body(st: _LBFGSState) -> _LBFGSState:
        x_new = st.x + st.step * st.d
        f_new, g_new = value_and_grad(x_new)
        slope = _dot(st.g, st.d)  # < 0
        finite = jnp.isfinite(f_new) & jnp.all(jnp.isfinite(g_new))
        ok = finite & (f_new <= st.f + _ARMIJO_C1 * st.step * slope)

        s, y = x_new - st.x, g_new - st.g
        sy, yy = _dot(s, y), _dot(y, y)
        new_pair = ok & (sy > 1e-10 * jnp.sqrt(_dot(s, s) * yy))
        s_mem = jnp.where(new_pair, jnp.roll(st.s_mem, -1, axis=0).at[-1].set(s), st.s_mem)
        y_mem = jnp.where(new_pair, jnp.roll(st.y_mem, -1, axis=0).at[-1].set(y), st.y_mem)
        rho = jnp.where(new_pair, jnp.roll(st.rho, -1).at[-1].set(1.0 / sy), st.rho)
        gamma = jnp.where(new_pair, sy / yy, st.gamma)

        x = jnp.where(ok, x_new, st.x)
        f = jnp.where(ok, f_new, st.f)
        g = jnp.where(ok, g_new, st.g)
        d_new = _two_loop(g, s_mem, y_mem, rho, gamma)
        descent = jnp.all(jnp.isfinite(d_new)) & (_dot(g, d_new) < 0)
        reset = ok & ~descent  # a non-descent direction: forget the curvature pairs, restart steepest descent
        rho = jnp.where(reset, 0.0, rho)
        gamma = jnp.where(reset, 1.0, gamma)
        d = jnp.where(ok, jnp.where(descent, d_new, steepest(g)), st.d)

        # backtracking: minimiser of the quadratic through f(x), slope and f(x + step d), kept in [0.1, 0.5] step
        curvature = f_new - st.f - st.step * slope
        t_quad = -slope * st.step**2 / (2.0 * curvature)
        shrunk = jnp.where(
            finite & (curvature > 0), jnp.clip(t_quad, 0.1 * st.step, 0.5 * st.step), 0.1 * st.step
        )
        step = jnp.where(ok, 1.0, shrunk)
        # a step that cannot change x in float64 any more
        stalled = ~ok & (shrunk * jnp.max(jnp.abs(st.d)) <= 1e-16 * (1.0 + jnp.max(jnp.abs(st.x))))
        return _LBFGSState(
            x, f, g, d, step, s_mem, y_mem, rho, gamma, st.num_iter + ok, st.num_eval + 1, stalled
        )

    st = jax.lax.while_loop(cond, body, state)
    grad_norm = jnp.max(jnp.abs(st.g))
    return _Lanes(st.x, st.f, grad_norm, jnp.isfinite(st.f) & (grad_norm <= gtol), st.num_iter, st.num_eval)


def _best(lanes: _Lanes) -> _Lanes:
    """The lane (leading axis) with the lowest finite objective."""
    i = jnp.argmin(jnp.where(jnp.isfinite(lanes.f), lanes.f, jnp.inf))
    return jax.tree.map(lambda v: v[i], lanes)


def _chinchilla_fit_from(lanes: _Lanes, center_n: jax.Array, center_d: jax.Array) -> ChinchillaFit:
    """Back from the optimiser's coordinates ``(a - alpha m_N, b - beta m_D, e, alpha, beta)``."""
    a_c, b_c, e, alpha, beta = (lanes.x[..., i] for i in range(5))
    return ChinchillaFit(
        params=ChinchillaParams(
            E=jnp.exp(e),
            A=jnp.exp(a_c + alpha * center_n),
            B=jnp.exp(b_c + beta * center_d),
            alpha=alpha,
            beta=beta,
        ),
        objective=lanes.f,
        grad_norm=lanes.grad_norm,
        converged=lanes.converged,
        num_iterations=lanes.num_iter,
    )


def _centered_starts(starts: jax.Array, center_n: jax.Array, center_d: jax.Array) -> jax.Array:
    """Grid points ``(a, b, e, alpha, beta)`` in the optimiser's coordinates."""
    return starts.at[:, 0].add(-starts[:, 3] * center_n).at[:, 1].add(-starts[:, 4] * center_d)


class _Data(NamedTuple):
    """Padded data in the optimiser's coordinates: ``log N - m_N``, ``log D - m_D``, ``log L`` ``[P']``, weights
    (0 on padding), the centres ``m_N``, ``m_D`` (means over the data) and the number of data points."""

    log_n: jax.Array
    log_d: jax.Array
    log_loss: jax.Array
    weights: jax.Array
    center_n: jax.Array
    center_d: jax.Array
    num_points: jax.Array


def _lbfgs_from(starts, data: _Data, delta, gtol, max_iter, weights=None) -> _Lanes:
    w = data.weights if weights is None else weights

    def vg(theta):
        return _chinchilla_value_and_grad(theta, data.log_n, data.log_d, data.log_loss, w, delta)

    return jax.vmap(lambda x0: _lbfgs(vg, x0, max_iter=max_iter, gtol=gtol))(starts)


@functools.partial(jax.jit, static_argnames=("max_iter",), compiler_options=_JIT_OPTIONS)
def _fit_chinchilla_core(starts, data: _Data, delta, gtol, *, max_iter):
    starts = _centered_starts(starts, data.center_n, data.center_d)
    best = _best(_lbfgs_from(starts, data, delta, gtol, max_iter))
    return _chinchilla_fit_from(best, data.center_n, data.center_d)


@functools.partial(
    jax.jit, static_argnames=("num_resamples", "num_starts", "max_iter"), compiler_options=_JIT_OPTIONS
)
def _bootstrap_chinchilla_core(key, starts, data: _Data, delta, gtol, *, num_resamples, num_starts, max_iter):
    starts = _centered_starts(starts, data.center_n, data.center_d)
    size = data.log_n.shape[0]
    dtype = data.log_n.dtype

    def multiplicities(k):
        idx = jax.random.randint(k, (size,), 0, data.num_points)  # only the first num_points draws count
        return jnp.zeros(size, dtype).at[idx].add(data.weights)

    weights = jnp.concatenate(
        [data.weights[None], jax.vmap(multiplicities)(jax.random.split(key, num_resamples))]
    )  # [R + 1, P']: the original data first
    # objective at every grid point for every resample: multiplicities times per-point Huber terms [P', G]
    r = jax.vmap(lambda th: _chinchilla_residual(th, data.log_n, data.log_d, data.log_loss)[0])(starts)
    huber = jnp.where(data.weights > 0, _huber(r, delta), 0.0)
    grid_objective = weights @ huber.T  # [R + 1, G]
    grid_objective = jnp.where(jnp.isfinite(grid_objective), grid_objective, jnp.inf)
    _, top = jax.lax.top_k(-grid_objective, num_starts)  # [R + 1, k]

    def refit(top_starts, w):
        return _best(_lbfgs_from(top_starts, data, delta, gtol, max_iter, weights=w))

    fits = _chinchilla_fit_from(jax.vmap(refit)(starts[top], weights), data.center_n, data.center_d)
    original = jax.tree.map(lambda v: v[0], fits)
    fits = jax.tree.map(lambda v: v[1:], fits)

    def summary(fn):
        return ChinchillaParams(*(fn(jnp.where(fits.converged, v, jnp.nan)) for v in fits.params))

    ci = summary(lambda v: jnp.nanpercentile(v, jnp.asarray([2.5, 97.5])))
    se = summary(lambda v: jnp.nanstd(v, ddof=1))
    return ChinchillaBootstrap(fits=fits, ci=ci, se=se, original=original)


# ----------------------------------------------------------------------------------------------------------------
# public API


def _check_fit_options(delta: float, max_iter: int, gtol: float) -> None:
    check_range("delta", delta, gt=0)
    check_range("max_iter", max_iter, ge=1, integer=True)
    check_range("gtol", gtol, gt=0)


def _chinchilla_inputs(N, D, loss, grid) -> tuple[np.ndarray, _Data]:
    """Checked grid ``[G, 5]`` (columns ``a, b, e, alpha, beta``) and padded, centred data (float64, numpy)."""
    n, d, loss_a = _check_points({"N": N, "D": D, "loss": loss}, _MIN_POINTS_CHINCHILLA)
    starts = _check_grid(grid, CHINCHILLA_GRID)[
        :, [list(CHINCHILLA_GRID).index(k) for k in _CHINCHILLA_THETA]
    ]
    log_n, log_d = np.log(n), np.log(d)
    center_n, center_d = log_n.mean(), log_d.mean()
    (log_n, log_d, log_loss), weights = _pad([log_n - center_n, log_d - center_d, np.log(loss_a)])
    return starts, _Data(log_n, log_d, log_loss, weights, center_n, center_d, n.shape[0])


def _gtol_abs(gtol: float, delta: float, num_points: int) -> float:
    """The gradient tolerance in absolute terms: relative to ``delta * P``, the scale of the gradient of the summed
    Huber loss (each point contributes at most ``delta`` times a coordinate of order 1)."""
    return gtol * delta * num_points


def fit_chinchilla(
    N: jax.Array,
    D: jax.Array,
    loss: jax.Array,
    *,
    delta: float = 1e-3,
    max_iter: int = 100,
    gtol: float = 1e-6,
    grid: Mapping[str, object] | None = None,
) -> ChinchillaFit:
    """Fit ``L(N, D) = E + A / N^alpha + B / D^beta`` (Chinchilla approach 3, Besiroglu et al. 2024's procedure).

    ``N``: parameters, ``D``: training tokens, ``loss``: final losses, each ``[P]`` with ``P >= 6`` (more points
    than parameters), finite and ``> 0``. Minimises the summed Huber loss (``delta``) of ``LSE(a - alpha log N, b -
    beta log D, e) - log L`` by L-BFGS from every point of ``grid``, all starts vmapped in one jitted float64
    function, and returns the start that ends lowest. ``grid``: a dict with keys ``alpha``, ``beta``, ``e``,
    ``a``, ``b``, each a 1-D list of starting values, all combinations used (default :data:`CHINCHILLA_GRID`, 4500
    starts). A start stops after ``max_iter`` L-BFGS steps (or ``1.5 max_iter`` objective evaluations), or once
    ``max|grad| <= gtol * delta * P`` (then it counts as converged; module docstring). Raises
    :class:`~jaxsafety.config.ConfigError` on bad input. Not jittable itself (it validates and pads concrete
    inputs); recompiles per padded size (a multiple of 16), grid size and ``max_iter``.
    """
    _check_fit_options(delta, max_iter, gtol)
    starts, data = _chinchilla_inputs(N, D, loss, grid)
    with jax.enable_x64():
        return _fit_chinchilla_core(
            jnp.asarray(starts),
            jax.tree.map(jnp.asarray, data),
            jnp.asarray(delta, jnp.float64),
            jnp.asarray(_gtol_abs(gtol, delta, data.num_points), jnp.float64),
            max_iter=max_iter,
        )


def _check_num_starts(num_starts: int, num_grid: int) -> None:
    """The bootstraps' L-BFGS starts are the best ``num_starts`` of the ``num_grid`` grid points."""
    if num_starts > num_grid:
        raise ConfigError("num_starts", num_starts, f"integers <= the number of grid points ({num_grid})")


def bootstrap_chinchilla(
    key: jax.Array,
    N: jax.Array,
    D: jax.Array,
    loss: jax.Array,
    *,
    num_resamples: int = 200,
    delta: float = 1e-3,
    max_iter: int = 100,
    gtol: float = 1e-6,
    grid: Mapping[str, object] | None = None,
    num_starts: int = 8,
) -> ChinchillaBootstrap:
    """Nonparametric bootstrap of :func:`fit_chinchilla`: resample the ``P`` data points with replacement
    ``num_resamples`` times (``jax.random.randint`` under ``key``) and refit each resample, vmapped.

    A resample is a vector of multiplicities, so its objective at every grid point is one row of a matrix product
    (multiplicities ``[R, P]`` times per-point Huber terms ``[P, G]``); L-BFGS then runs from the ``num_starts``
    grid points with the lowest objective for that resample rather than from all of them (4500 starts for each of
    200 resamples would cost ~200 full fits). The same shortcut on the original data gives ``original``, tested to
    reach :func:`fit_chinchilla`'s optimum. Intervals are percentile intervals over the converged resample fits
    (:class:`ChinchillaBootstrap`). Other arguments as in :func:`fit_chinchilla`; time and memory grow linearly in
    ``num_resamples``.
    """
    _check_fit_options(delta, max_iter, gtol)
    check_range("num_resamples", num_resamples, ge=2, integer=True)
    check_range("num_starts", num_starts, ge=1, integer=True)
    starts, data = _chinchilla_inputs(N, D, loss, grid)
    _check_num_starts(num_starts, starts.shape[0])
    with jax.enable_x64():
        return _bootstrap_chinchilla_core(
            key,
            jnp.asarray(starts),
            jax.tree.map(jnp.asarray, data),
            jnp.asarray(delta, jnp.float64),
            jnp.asarray(_gtol_abs(gtol, delta, data.num_points), jnp.float64),
            num_resamples=num_resamples,
            num_starts=num_starts,
            max_iter=max_iter,
        )


def compute_optimal(params: ChinchillaParams, C: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Compute-optimal ``(N_opt, D_opt, L_opt)`` for budgets ``C = 6 N D`` (Hoffmann et al. 2022, eq. 4).

    Minimising ``E + A N^-alpha + B (C / 6N)^-beta`` over ``N``: ``N_opt = G (C/6)^(beta/(alpha+beta))``,
    ``D_opt = G^-1 (C/6)^(alpha/(alpha+beta))``, ``G = (alpha A / (beta B))^(1/(alpha+beta))``; ``L_opt =
    L(N_opt, D_opt)``. ``C`` (finite, ``> 0``, any shape) broadcasts against the parameter fields; float64.
    """
    if not isinstance(C, jax.core.Tracer):
        c_a = np.asarray(C, dtype=np.float64)
        first_bad("C", ~(np.isfinite(c_a) & (c_a > 0)), c_a, "finite numbers > 0")
    with jax.enable_x64():
        p = ChinchillaParams(*(jnp.asarray(v, jnp.float64) for v in params))
        budget = jnp.asarray(C, jnp.float64) / 6.0
        total = p.alpha + p.beta
        g = (p.alpha * p.A / (p.beta * p.B)) ** (1.0 / total)
        n_opt = g * budget ** (p.beta / total)
        d_opt = budget ** (p.alpha / total) / g
        return n_opt, d_opt, predict_loss(p, n_opt, d_opt)


def _power_law_lanes(starts, log_c, log_loss, weights, delta, gtol, max_iter) -> _Lanes:
    """The best of L-BFGS from every start (already in the optimiser's coordinates) for one weighting."""

    def vg(theta):
        return _power_law_value_and_grad(theta, log_c, log_loss, weights, delta)

    return _best(jax.vmap(lambda x0: _lbfgs(vg, x0, max_iter=max_iter, gtol=gtol))(starts))


def _power_law_from(best: _Lanes, center: jax.Array) -> PowerLawOffset:
    """Back from the optimiser's coordinates ``(log a - b m_C, b, log c)``."""
    b = best.x[..., 1]
    return PowerLawOffset(a=jnp.exp(best.x[..., 0] + b * center), b=b, c=jnp.exp(best.x[..., 2]))


def _centered_power_law_starts(starts: jax.Array, center: jax.Array) -> jax.Array:
    # optimiser coordinates (log a - b m_C, b, log c), as for Chinchilla (module docstring)
    return starts.at[:, 0].add(-starts[:, 1] * center)


@functools.partial(jax.jit, static_argnames=("max_iter",), compiler_options=_JIT_OPTIONS)
def _fit_power_law_core(starts, log_c, log_loss, weights, center, delta, gtol, *, max_iter):
    starts = _centered_power_law_starts(starts, center)
    best = _power_law_lanes(starts, log_c, log_loss, weights, delta, gtol, max_iter)
    return _power_law_from(best, center), best.f


@functools.partial(
    jax.jit, static_argnames=("num_resamples", "num_starts", "max_iter"), compiler_options=_JIT_OPTIONS
)
def _bootstrap_power_law_core(
    key,
    starts,
    log_c,
    log_loss,
    weights,
    num_points,
    center,
    delta,
    gtol,
    *,
    num_resamples,
    num_starts,
    max_iter,
):
    starts = _centered_power_law_starts(starts, center)
    size = log_c.shape[0]

    def multiplicities(k):
        idx = jax.random.randint(k, (size,), 0, num_points)  # only the first num_points draws count
        return jnp.zeros(size, log_c.dtype).at[idx].add(weights)

    w = jax.vmap(multiplicities)(jax.random.split(key, num_resamples))  # [R, P']
    # as in _bootstrap_chinchilla_core: the objective at every grid point for every resample is one matrix
    # product, and L-BFGS runs from each resample's num_starts best grid points only
    r = jax.vmap(lambda th: _power_law_residual(th, log_c, log_loss)[0])(starts)  # [G, P']
    huber = jnp.where(weights > 0, _huber(r, delta), 0.0)
    grid_objective = w @ huber.T  # [R, G]
    grid_objective = jnp.where(jnp.isfinite(grid_objective), grid_objective, jnp.inf)
    _, top = jax.lax.top_k(-grid_objective, num_starts)  # [R, k]

    def refit(top_starts, wr):
        return _power_law_lanes(top_starts, log_c, log_loss, wr, delta, gtol, max_iter)

    best = jax.vmap(refit)(starts[top], w)
    # distinct compute values drawn: point i counts unless an earlier drawn point has the same value
    drawn = w > 0
    same_earlier = (log_c[:, None] == log_c[None, :]) & jnp.tri(size, k=-1, dtype=bool)  # [i, j]: j < i
    repeat = jnp.any(same_earlier[None] & drawn[:, None, :], axis=-1)
    distinct = jnp.sum(drawn & ~repeat, axis=-1)
    return PowerLawBootstrap(
        params=_power_law_from(best, center),
        objective=best.f,
        converged=best.converged,
        identifiable=distinct >= 3,
        counts=w,
    )


def _power_law_inputs(C, loss, grid) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, int]:
    """Checked grid ``[G, 3]`` and padded, centred ``log C``, ``log L``, weights (float64, numpy), the centre
    and the number of data points."""
    c_a, loss_a = _check_points({"C": C, "loss": loss}, _MIN_POINTS_POWER_LAW)
    starts = _check_grid(grid, POWER_LAW_GRID)  # columns (log a, b, log c)
    log_c = np.log(c_a)
    center = float(log_c.mean())
    (log_c, log_loss), weights = _pad([log_c - center, np.log(loss_a)])
    return starts, log_c, log_loss, weights, center, c_a.shape[0]


def fit_power_law_offset(
    C: jax.Array,
    loss: jax.Array,
    *,
    delta: float = 1e-3,
    max_iter: int = 100,
    gtol: float = 1e-6,
    grid: Mapping[str, object] | None = None,
) -> tuple[PowerLawOffset, jax.Array]:
    """Fit ``L(C) = a C^-b + c`` as Chinchilla's approach 3 is fitted (:func:`fit_chinchilla`): summed Huber loss
    of ``LSE(log a - b log C, log c) - log L``, L-BFGS from every point of ``grid`` (default
    :data:`POWER_LAW_GRID`, keys ``log_a``, ``b``, ``log_c``), vmapped, float64; the start that ends lowest wins.

    ``C``, ``loss``: ``[P]``, ``P >= 5``, finite and ``> 0``. Returns the parameters and the objective there.
    """
    _check_fit_options(delta, max_iter, gtol)
    starts, log_c, log_loss, weights, center, num_points = _power_law_inputs(C, loss, grid)
    with jax.enable_x64():
        return _fit_power_law_core(
            jnp.asarray(starts),
            jnp.asarray(log_c),
            jnp.asarray(log_loss),
            jnp.asarray(weights),
            jnp.asarray(center, jnp.float64),
            jnp.asarray(delta, jnp.float64),
            jnp.asarray(_gtol_abs(gtol, delta, num_points), jnp.float64),
            max_iter=max_iter,
        )


def bootstrap_power_law_offset(
    key: jax.Array,
    C: jax.Array,
    loss: jax.Array,
    *,
    num_resamples: int = 200,
    delta: float = 1e-3,
    max_iter: int = 100,
    gtol: float = 1e-6,
    grid: Mapping[str, object] | None = None,
    num_starts: int = 8,
) -> PowerLawBootstrap:
    """Nonparametric bootstrap of :func:`fit_power_law_offset`: resample the ``P`` points with replacement
    ``num_resamples`` times (``jax.random.randint`` under ``jax.random.split(key, num_resamples)``) and refit
    each resample, all resamples in one jitted ``vmap``. A resample is a vector of multiplicities (the points'
    weights in the summed Huber loss), so its objective at every grid point is one row of a matrix product, and
    L-BFGS runs from the ``num_starts`` grid points with the lowest objective for that resample, as in
    :func:`bootstrap_chinchilla` (a vmapped L-BFGS runs until its slowest lane is done: all 385 starts for each
    of 200 resamples took longer than 200 separate fits). Resamples with fewer than 3 distinct ``C`` values are
    flagged (``identifiable`` False); use the fits with ``identifiable & converged`` for intervals. Other
    arguments as in :func:`fit_power_law_offset`; time and memory grow linearly in ``num_resamples``."""
    _check_fit_options(delta, max_iter, gtol)
    check_range("num_resamples", num_resamples, ge=1, integer=True)
    check_range("num_starts", num_starts, ge=1, integer=True)
    starts, log_c, log_loss, weights, center, num_points = _power_law_inputs(C, loss, grid)
    _check_num_starts(num_starts, starts.shape[0])
    with jax.enable_x64():
        boot = _bootstrap_power_law_core(
            key,
            jnp.asarray(starts),
            jnp.asarray(log_c),
            jnp.asarray(log_loss),
            jnp.asarray(weights),
            jnp.asarray(num_points),
            jnp.asarray(center, jnp.float64),
            jnp.asarray(delta, jnp.float64),
            jnp.asarray(_gtol_abs(gtol, delta, num_points), jnp.float64),
            num_resamples=num_resamples,
            num_starts=num_starts,
            max_iter=max_iter,
        )
    return boot._replace(counts=boot.counts[:, :num_points])  # without the padding
