"""Red-teaming evidence: the time it takes to find a universal jailbreak, fitted from censored attempts.

Clymer et al. 2025 ("An example safety case for safeguards against misuse", arXiv 2505.18003) need, as one input
of their uplift model, the distribution of the effort an attacker spends before finding a universal jailbreak. The
evidence is a log of red-team / bug-bounty attempts: an attempt either found one after ``time`` hours of
effort (an event) or ended, or is still running, after ``time`` hours without one (right-censored: all we know
is ``T > time``).

Model: the discovery time ``T`` (unit: **hours of effort**, > 0) follows one of :data:`FAMILIES`

- ``weibull`` (``shape`` k, ``scale`` lam): ``S(t) = exp(-(t / lam)^k)``;
- ``lognormal`` (``mu``, ``sigma``): ``S(t) = 1 - Phi((log t - mu) / sigma)``.

Fit: maximum likelihood with right-censoring (Klein & Moeschberger, *Survival Analysis*, 2nd ed., eq. 3.5.1),

    log L = sum_i w_i [d_i log f(t_i) + (1 - d_i) log S(t_i)],

``d_i`` = found, ``w_i`` = frequency weights (a row with weight 3 counts as three identical attempts). The
maximiser is found by a damped Newton method in unconstrained coordinates ``theta`` = (log k, log lam) or (mu,
log sigma): the Hessian's eigenvalues are replaced by their absolute values (saddle-free Newton; Dauphin et
al. 2014), steps are capped at length 3 in ``theta`` and halved until the Armijo condition holds (up to
rounding of the objective). It runs in float64 (``jax.enable_x64`` inside the public fitting functions) and
stops once the gradient of the *mean* negative log-likelihood (per unit of weight) w.r.t. ``theta`` has
max-norm ``<= gtol`` (default 1e-9). ``cov`` is the inverse observed information (the Hessian of ``-log L``
w.r.t. the natural parameters at the optimum). The fitting functions require uncensored rows at two or more
distinct times and raise :class:`~jaxsafety.config.ConfigError` otherwise: without any the MLE does not exist
(the scale runs off to infinity), and with a single event time it need not (e.g. a Weibull with every
censoring time below the event has likelihood growing without bound as ``k -> inf``); with two or more the
likelihood tends to -inf at every edge of the parameter space, so a maximiser exists.

Uncertainty: :func:`bootstrap_survival` resamples the ``N`` rows with replacement (Efron & Tibshirani 1993,
ch. 6); a resample is a vector of multiplicities, so every resample is the same weighted problem with other
weights, and all resamples are fitted by one jitted, vmapped Newton run started at the full-data fit. The
Monte Carlo model (:mod:`jaxsafety.uplift.model`) takes one converged bootstrap draw per scenario
(:func:`jaxsafety.uplift.params.draw_scenarios`, hours converted to months by the public's search effort) and
draws discovery times by the same inverse CDFs; :func:`sample_times` is that inverse CDF at given uniforms (pure
``jnp``, differentiable w.r.t. the parameters).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr, ndtri

from jaxsafety.config import ConfigError, check_choice, check_range, first_bad
from jaxsafety.io import read_csv_rows

__all__ = [
    "FAMILIES",
    "PARAM_NAMES",
    "RedTeamData",
    "SurvivalFit",
    "bootstrap_survival",
    "example_redteam_path",
    "fit_survival",
    "log_likelihood",
    "median_time",
    "quantile",
    "read_redteam_csv",
    "sample_times",
    "summary",
    "survival_function",
]

FAMILIES = ("weibull", "lognormal")
#: Names of each family's natural parameters, in the order of array-valued ``params`` and of ``cov``'s axes.
PARAM_NAMES: dict[str, tuple[str, str]] = {"weibull": ("shape", "scale"), "lognormal": ("mu", "sigma")}

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}
_FOUND_ACCEPTED = "1/0, true/false or yes/no (any case)"
_MAX_STEP = 3.0  # longest Newton step in theta (a factor e^3 ~ 20 in k, lam or sigma)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_PI_OVER_SQRT6 = math.pi / math.sqrt(6.0)  # standard deviation of log T for a Weibull with k = 1


class RedTeamData(NamedTuple):
    """Red-team attempts, one row each, all ``[N]``: ``time`` (float64, hours of effort, finite and > 0),
    ``found`` (bool: True = a universal jailbreak was found at ``time``; False = the attempt ended or is still
    running at ``time`` without one, right-censored) and ``weight`` (float64 frequency weights, finite and
    >= 0)."""

    time: np.ndarray
    found: np.ndarray
    weight: np.ndarray


class SurvivalFit(NamedTuple):
    """A censored maximum-likelihood fit (:func:`fit_survival`).

    ``family``: one of :data:`FAMILIES`; ``params``: natural parameters by name (:data:`PARAM_NAMES`);
    ``theta``: the unconstrained vector ``[2]`` the optimiser works in ((log k, log lam) or (mu, log sigma));
    ``loglik``: the maximised weighted log-likelihood; ``converged``: the gradient criterion was met;
    ``num_iterations``: Newton steps taken; ``cov``: ``[2, 2]`` inverse observed information of the natural
    parameters (their asymptotic covariance), axes in :data:`PARAM_NAMES` order.
    """

    family: str
    params: dict[str, float]
    theta: np.ndarray
    loglik: float
    converged: bool
    num_iterations: int
    cov: np.ndarray


# ------------------------------------------------------------------------------------------------------------
# densities, survival, quantiles (pure jnp)


def _check_family(family: str) -> None:
    check_choice("family", family, FAMILIES)


def _split_params(family: str, params: Mapping[str, Any] | Any) -> tuple[jax.Array, jax.Array]:
    """``params`` (a dict keyed by :data:`PARAM_NAMES` or an array whose last axis holds the two parameters in
    that order) as two broadcastable arrays, checked where concrete."""
    _check_family(family)
    names = PARAM_NAMES[family]
    if isinstance(params, Mapping):
        if set(params) != set(names):
            raise ConfigError("params", sorted(params), f"a dict with exactly the keys {', '.join(names)}")
        a, b = (jnp.asarray(params[n]) for n in names)
    else:
        p = jnp.asarray(params)
        if p.ndim == 0 or p.shape[-1] != 2:
            raise ConfigError(
                "params", f"shape {p.shape}", f"an array whose last axis holds ({', '.join(names)})"
            )
        a, b = p[..., 0], p[..., 1]
    positive = names if family == "weibull" else names[1:]
    for name, value in zip(names, (a, b), strict=True):
        if not isinstance(value, jax.core.Tracer):
            v = np.asarray(value, dtype=np.float64)
            ok = np.isfinite(v) & ((v > 0) if name in positive else True)
            first_bad(
                f"params[{name!r}]", ~ok, v, "finite numbers > 0" if name in positive else "finite numbers"
            )
    return a, b


def _log_f_and_log_s(
    family: str, a: jax.Array, b: jax.Array, log_t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(log f(t), log S(t))`` elementwise from ``log t``; ``(a, b)`` = (k, lam) or (mu, sigma)."""
    if family == "weibull":
        u = a * (log_t - jnp.log(b))  # log (t / lam)^k
        cum_hazard = jnp.exp(u)
        return jnp.log(a) - log_t + u - cum_hazard, -cum_hazard
    z = (log_t - a) / b
    return -log_t - jnp.log(b) - _LOG_SQRT_2PI - 0.5 * z * z, log_ndtr(-z)


def _weighted_loglik(family, a, b, log_t, found, weight) -> jax.Array:
    log_f, log_s = _log_f_and_log_s(family, a, b, log_t)
    # rows of weight 0 (bootstrap rows not drawn) contribute 0 even where a trial step overflows their terms
    return jnp.sum(jnp.where(weight > 0, weight * jnp.where(found, log_f, log_s), 0.0))


def log_likelihood(
    family: str,
    params: Mapping[str, Any] | Any,
    time: Any,
    found: Any,
    weight: Any | None = None,
) -> jax.Array:
    """Weighted right-censored log-likelihood ``sum_i w_i [d_i log f(t_i) + (1 - d_i) log S(t_i)]`` (Klein &
    Moeschberger eq. 3.5.1; module docstring), a scalar.

    ``params``: dict keyed by :data:`PARAM_NAMES` ``[family]`` or an array ``[2]`` in that order; ``time``
    ``[N]`` > 0 (hours), ``found`` ``[N]`` bool, ``weight`` ``[N]`` >= 0 (default ones). Pure ``jnp``:
    jittable with ``family`` static and differentiable w.r.t. ``params``; computes in the inputs' dtype
    (float64 needs ``jax.enable_x64``).
    """
    a, b = _split_params(family, params)
    time = jnp.asarray(time)
    if not isinstance(time, jax.core.Tracer):
        t = np.asarray(time, dtype=np.float64)
        first_bad("time", ~(np.isfinite(t) & (t > 0)), t, "finite numbers > 0 (hours)")
    found = jnp.asarray(found, dtype=bool)
    weight = jnp.ones(time.shape) if weight is None else jnp.asarray(weight)
    return _weighted_loglik(family, a, b, jnp.log(time), found, weight)


def survival_function(family: str, params: Mapping[str, Any] | Any, t: Any) -> jax.Array:
    """``S(t) = P(T > t)``, elementwise over ``t`` (> 0, any shape, broadcast against the parameters):
    ``exp(-(t / lam)^k)`` or ``1 - Phi((log t - mu) / sigma)`` (computed as ``Phi(-z)`` for accuracy in the
    tail). Pure ``jnp``, differentiable."""
    a, b = _split_params(family, params)
    t = jnp.asarray(t)
    if family == "weibull":
        return jnp.exp(-((t / b) ** a))
    return ndtr(-(jnp.log(t) - a) / b)


def quantile(family: str, params: Mapping[str, Any] | Any, q: Any) -> jax.Array:
    """The ``q``-quantile ``F^-1(q)`` of the discovery time (hours), elementwise over ``q`` in (0, 1) (any
    shape, broadcast against the parameters): ``lam (-log(1 - q))^(1/k)`` or ``exp(mu + sigma Phi^-1(q))``.
    Pure ``jnp``, differentiable w.r.t. the parameters and ``q``."""
    a, b = _split_params(family, params)
    q = jnp.asarray(q)
    if family == "weibull":
        return b * jnp.exp(jnp.log(-jnp.log1p(-q)) / a)
    return jnp.exp(a + b * ndtri(q))


def sample_times(family: str, params: Mapping[str, Any] | Any, u: Any) -> jax.Array:
    """Discovery times by inverse-CDF sampling: ``quantile(family, params, u)`` for uniforms ``u`` in (0, 1)
    (e.g. ``jax.random.uniform(key, shape, minval=tiny)``); ``u`` broadcasts against the parameters, so a
    bootstrap dict of ``[R]`` arrays with ``u`` ``[R]`` draws one time per parameter draw. Reparameterised:
    gradients w.r.t. the parameters flow through (pathwise derivative)."""
    return quantile(family, params, u)


def median_time(family: str, params: Mapping[str, Any] | Any) -> jax.Array:
    """Median discovery time (hours): ``lam (log 2)^(1/k)`` or ``exp(mu)``; broadcasts over array
    parameters."""
    return quantile(family, params, 0.5)


# ------------------------------------------------------------------------------------------------------------
# input checks and the CSV reader


def _check_data(data: RedTeamData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(time, found, weight)`` as float64 / bool / float64 ``[N]`` arrays, checked: ConfigError
    otherwise."""
    if not isinstance(data, RedTeamData):
        raise ConfigError("data", type(data).__name__, "a RedTeamData (see read_redteam_csv)")
    time = np.asarray(data.time, dtype=np.float64)
    found_raw = np.asarray(data.found)
    weight = np.asarray(data.weight, dtype=np.float64)
    if time.ndim != 1 or time.shape[0] == 0:
        raise ConfigError("time", f"shape {time.shape}", "a non-empty 1-D array [N]")
    for name, arr in (("found", found_raw), ("weight", weight)):
        if arr.shape != time.shape:
            raise ConfigError(name, f"shape {arr.shape}", f"an array of the shape of time {time.shape}")
    first_bad("time", ~(np.isfinite(time) & (time > 0)), time, "finite numbers > 0 (hours)")
    if found_raw.dtype != bool:
        try:
            as_num = np.asarray(found_raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError("found", f"dtype {found_raw.dtype}", "booleans (or 0/1)") from None
        first_bad("found", ~np.isin(as_num, (0.0, 1.0)), as_num, "booleans (or 0/1)")
    found = found_raw.astype(bool)
    first_bad("weight", ~(np.isfinite(weight) & (weight >= 0)), weight, "finite numbers >= 0")
    _check_events(time, found, weight, "found")
    return time, found, weight


def _check_events(time: np.ndarray, found: np.ndarray, weight: np.ndarray, field: str) -> None:
    """Uncensored rows (of weight > 0) at >= 2 distinct times, so that the MLE exists (module docstring)."""
    events = time[found & (weight > 0)]
    if events.size == 0:
        raise ConfigError(
            field,
            "no row found (with weight > 0)",
            "at least one uncensored row: with every attempt censored the MLE does not exist",
        )
    if np.unique(events).size < 2:
        raise ConfigError(
            field,
            f"every found row at time {events[0]:g}",
            "uncensored rows at >= 2 distinct times: with fewer the MLE need not exist "
            "(the fitted spread can collapse to 0)",
        )


def read_redteam_csv(path: str | Path) -> RedTeamData:
    """Red-team attempts from a CSV with the columns ``time`` (hours of effort, finite and > 0), ``found``
    (1/0, true/false or yes/no, any case; false = right-censored) and optionally ``weight`` (finite, >= 0;
    default 1). Other columns are ignored; column names are case-insensitive.

    Every problem raises :class:`~jaxsafety.config.ConfigError` before anything is fitted, naming
    ``<file>:row N:<column>`` (the header is row 1) and the accepted values; also a missing column and a file
    without uncensored rows at two distinct times (the MLE need not exist).
    """
    path = Path(path)
    header, rows = read_csv_rows(path, field="path")
    if "time" not in header or "found" not in header:
        raise ConfigError(
            f"{path.name}:columns", header, "a header with the columns time, found (and optionally weight)"
        )
    has_weight = "weight" in header
    time, found, weight = [], [], []
    for number, row in rows:
        where = f"{path.name}:row {number}"
        time.append(_parse_number(where, "time", row["time"], lambda v: v > 0, "finite numbers > 0 (hours)"))
        label = row["found"].lower()
        if label not in _TRUE | _FALSE:
            raise ConfigError(f"{where}:found", row["found"], _FOUND_ACCEPTED)
        found.append(label in _TRUE)
        weight.append(
            _parse_number(where, "weight", row["weight"], lambda v: v >= 0, "finite numbers >= 0")
            if has_weight
            else 1.0
        )
    data = RedTeamData(np.asarray(time), np.asarray(found, dtype=bool), np.asarray(weight))
    _check_events(data.time, data.found, data.weight, f"{path.name}:found")
    return data


def _parse_number(where: str, column: str, text: str, ok: Callable[[float], bool], accepted: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise ConfigError(f"{where}:{column}", text, accepted)
    return value


def example_redteam_path() -> Path:
    """Path of ``jaxsafety/uplift/data/redteam_example.csv``: 60 simulated attempts (columns ``time``,
    ``found``) for examples and smoke tests; **synthetic**, not real red-team data.

    Provenance (reproduced exactly by the tests): ``rng = np.random.default_rng(2505)``; planted discovery
    times ``T = 120 * rng.weibull(0.7, 60)`` hours (Weibull, shape 0.7, scale 120 h), then effort budgets
    ``C = rng.uniform(10, 300, 60)`` hours (independent censoring); ``found = T <= C``;
    ``time = max(round(min(T, C), 1), 0.1)``; ``found`` written as 1/0.
    """
    return Path(__file__).resolve().parent / "data" / "redteam_example.csv"


# ------------------------------------------------------------------------------------------------------------
# damped Newton


class _NewtonState(NamedTuple):
    theta: jax.Array
    it: jax.Array  # Newton steps taken
    status: jax.Array  # 0 running, 1 converged, 2 stalled (no acceptable step), 3 out of steps
    # mean NLL, gradient, Hessian at the last iterate checked; when the loop ends, ``theta`` is that iterate
    f: jax.Array
    g: jax.Array
    h: jax.Array


def _natural(family: str, theta: jax.Array) -> tuple[jax.Array, jax.Array]:
    if family == "weibull":
        return jnp.exp(theta[0]), jnp.exp(theta[1])
    return theta[0], jnp.exp(theta[1])


def _loglik_derivatives(family: str, theta, log_t, found, weight) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Weighted log-likelihood, its gradient ``[2]`` and Hessian ``[2, 2]`` w.r.t. ``theta``, in closed form
    (a much smaller XLA program than nested autodiff of ``log_ndtr``, so the fits compile in a fraction of the
    time; tested against ``jax.hessian``).

    Weibull, ``theta = (a, b) = (log k, log lam)``, ``u = k (log t - log lam)``:
    ``l = d (log k - log t + u) - e^u``; ``u_a = u, u_b = -k, u_aa = u, u_ab = -k, u_bb = 0``.

    Lognormal, ``theta = (mu, s) = (mu, log sigma)``, ``z = (log t - mu) e^-s``:
    ``l = d (-log t - s - log sqrt(2 pi) - z^2 / 2) + (1 - d) log Phi(-z)``;
    ``z_mu = -e^-s, z_s = -z, z_mumu = 0, z_mus = e^-s, z_ss = z``; for the censored term
    ``l_z = -r, l_zz = -r (r - z)`` with the hazard ``r = phi(z) / Phi(-z)`` (the inverse Mills ratio).
    """
    d = found.astype(log_t.dtype)
    w = jnp.where(weight > 0, weight, 0.0)
    if family == "weibull":
        k, log_lam = jnp.exp(theta[0]), theta[1]
        u = k * (log_t - log_lam)
        eu = jnp.exp(u)
        value = d * (theta[0] - log_t + u) - eu
        l_u, l_uu = d - eu, -eu
        u_a, u_b = u, -k
        g = jnp.stack([d + l_u * u_a, l_u * u_b], axis=-1)
        h_aa = l_uu * u_a * u_a + l_u * u_a
        h_ab = l_uu * u_a * u_b + l_u * u_b
        h_bb = l_uu * u_b * u_b
    else:
        mu, s = theta[0], theta[1]
        inv_sigma = jnp.exp(-s)
        z = (log_t - mu) * inv_sigma
        log_sf = log_ndtr(-z)
        r = jnp.exp(-0.5 * z * z - _LOG_SQRT_2PI - log_sf)
        value = jnp.where(found, -log_t - s - _LOG_SQRT_2PI - 0.5 * z * z, log_sf)
        l_z = jnp.where(found, -z, -r)
        l_zz = jnp.where(found, -1.0, -r * (r - z))
        z_mu, z_s = -inv_sigma, -z
        g = jnp.stack([l_z * z_mu, l_z * z_s - d], axis=-1)
        h_aa = l_zz * z_mu * z_mu
        h_ab = l_zz * z_mu * z_s + l_z * inv_sigma
        h_bb = l_zz * z_s * z_s + l_z * z
    row_h = jnp.stack([jnp.stack([h_aa, h_ab], -1), jnp.stack([h_ab, h_bb], -1)], -2)
    keep = w > 0  # rows of weight 0 (bootstrap rows not drawn) contribute 0 even where their terms overflow
    total = jnp.sum(jnp.where(keep, w * value, 0.0))
    grad = jnp.sum(jnp.where(keep[:, None], w[:, None] * g, 0.0), axis=0)
    hess = jnp.sum(jnp.where(keep[:, None, None], w[:, None, None] * row_h, 0.0), axis=0)
    return total, grad, hess


def _sym_eig2(h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues ``[2]`` and eigenvectors (columns of ``[2, 2]``) of a symmetric 2 x 2 matrix by the Jacobi
    rotation angle ``0.5 atan2(2 b, a - c)`` (closed form; cheaper to compile than LAPACK's ``eigh``)."""
    a, b, c = h[0, 0], h[0, 1], h[1, 1]
    angle = 0.5 * jnp.arctan2(2.0 * b, a - c)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    l1 = a * cos * cos + 2.0 * b * sin * cos + c * sin * sin
    l2 = a * sin * sin - 2.0 * b * sin * cos + c * cos * cos
    return jnp.stack([l1, l2]), jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])


_MIN_STEP_FRACTION = 2.0**-30  # the line search gives up (the solver stalls) below this fraction of a step


def _newton(family: str, theta0, log_t, found, weight, gtol, max_iter) -> _NewtonState:
    """Minimise the mean negative log-likelihood by saddle-free damped Newton (module docstring);
    vmappable."""
    total_weight = jnp.sum(weight)

    def derivatives(theta):
        value, g, h = _loglik_derivatives(family, theta, log_t, found, weight)
        return -value / total_weight, -g / total_weight, -h / total_weight

    def objective(theta):
        a, b = _natural(family, theta)
        return -_weighted_loglik(family, a, b, log_t, found, weight) / total_weight

    def body(s: _NewtonState) -> _NewtonState:
        # derivatives at the top of the body, so the program holds one copy of them (compile time)
        f, g, h = derivatives(s.theta)
        evals, evecs = _sym_eig2(h)
        abs_evals = jnp.maximum(jnp.abs(evals), 1e-8 * jnp.max(jnp.abs(evals)) + 1e-30)
        step = -evecs @ ((evecs.T @ g) / abs_evals)
        step = step * jnp.minimum(1.0, _MAX_STEP / jnp.linalg.norm(step))
        # backtracking (halving) line search: Armijo, plus a rise of a few ulps of f (at the optimum's
        # rounding floor a good step cannot lower f visibly); NaN / inf trial values compare False
        slack = 16 * jnp.finfo(f.dtype).eps * (1.0 + jnp.abs(f))
        slope = g @ step

        def acceptable(alpha, f_new):
            return f_new <= f + 1e-4 * alpha * slope + slack

        def halve(c):
            alpha = 0.5 * c[0]
            return alpha, objective(s.theta + alpha * step)

        done = jnp.max(jnp.abs(g)) <= gtol
        alpha, f_new = jax.lax.while_loop(
            lambda c: ~done & ~acceptable(*c) & (c[0] > _MIN_STEP_FRACTION),
            halve,
            (jnp.ones_like(f), objective(s.theta + step)),
        )
        budget_left = s.it < max_iter
        ok = acceptable(alpha, f_new) & ~done & budget_left
        theta = jnp.where(ok, s.theta + alpha * step, s.theta)
        status = jnp.where(done, 1, jnp.where(ok, 0, jnp.where(budget_left, 2, 3))).astype(jnp.int32)
        return _NewtonState(theta, s.it + ok.astype(jnp.int32), status, f, g, h)

    zero = jnp.zeros((), jnp.int32)
    init = _NewtonState(
        theta0, zero, zero, jnp.zeros_like(theta0[0]), jnp.zeros_like(theta0), jnp.zeros((2, 2))
    )
    return jax.lax.while_loop(lambda s: s.status == 0, body, init)


def _natural_cov(family: str, theta: jax.Array, g: jax.Array, h: jax.Array) -> jax.Array:
    """Inverse Hessian ``[2, 2]`` of ``-log L`` w.r.t. the natural parameters from its ``theta`` gradient
    ``g`` and Hessian ``h``: for ``p_i = e^theta_i``, ``d^2 / dp_i dp_j = (h_ij - delta_ij g_i) / (p_i p_j)``;
    for ``p_i = theta_i`` (mu) the factor is 1 and there is no gradient term."""
    is_log = jnp.array([family == "weibull", True])
    jac = jnp.where(is_log, jnp.exp(-theta), 1.0)  # d theta / d p
    h_nat = (h - jnp.diag(jnp.where(is_log, g, 0.0))) * jac[:, None] * jac[None, :]
    a, b, c = h_nat[0, 0], h_nat[0, 1], h_nat[1, 1]
    return jnp.array([[c, -b], [-b, a]]) / (a * c - b * b)  # 2 x 2 inverse in closed form


@functools.partial(jax.jit, static_argnames=("family",))
def _fit_core(theta0, log_t, found, weight, gtol, max_iter, *, family: str):
    state = _newton(family, theta0, log_t, found, weight, gtol, max_iter)
    total = jnp.sum(weight)  # the solver's f, g, h are per unit of weight
    loglik = -state.f * total
    cov = _natural_cov(family, state.theta, state.g * total, state.h * total)
    natural = jnp.stack(_natural(family, state.theta))
    return state.theta, natural, loglik, state.status == 1, state.it, cov


@functools.partial(jax.jit, static_argnames=("family",))
def _bootstrap_core(counts, theta0, log_t, found, weight, gtol, max_iter, *, family: str):
    def refit(w):
        state = _newton(family, theta0, log_t, found, w, gtol, max_iter)
        # the existence condition of _check_events: without it a vanishing gradient at infinity (e.g. no
        # event: the scale runs off to infinity) would pass the gradient test
        events = found & (w > 0)
        valid = jnp.max(jnp.where(events, log_t, -jnp.inf)) > jnp.min(jnp.where(events, log_t, jnp.inf))
        return jnp.stack(_natural(family, state.theta)), (state.status == 1) & valid

    return jax.vmap(refit)(counts * weight)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _bootstrap_counts(key: jax.Array, num_resamples: int, padded_rows: int, num_rows) -> jax.Array:
    """Row multiplicities ``[R, padded_rows]`` of ``R`` resamples of the first ``num_rows`` rows, each drawn
    ``num_rows`` times uniformly with replacement (the padding rows get 0)."""
    idx = jax.random.randint(key, (num_resamples, padded_rows), 0, num_rows)
    real = (jnp.arange(padded_rows) < num_rows).astype(
        jnp.float64
    )  # draws beyond the first num_rows are void
    return jax.vmap(lambda i: jnp.zeros(padded_rows, jnp.float64).at[i].add(real))(idx)


_MIN_PADDED_ROWS = 256


def _padded(time: np.ndarray, found: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(log time, found, weight)`` padded to ``max(256, next power of two)`` rows with weight-0 rows at time
    1, so that data sets of similar size share one compiled program (XLA:CPU compiles these in seconds)."""
    n = time.shape[0]
    size = max(_MIN_PADDED_ROWS, 1 << (n - 1).bit_length())
    pad = size - n
    return (
        np.concatenate([np.log(time), np.zeros(pad)]),
        np.concatenate([found, np.zeros(pad, bool)]),
        np.concatenate([weight, np.zeros(pad)]),
    )


def _initial_theta(family: str, time: np.ndarray, found: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """A start from the uncensored rows' log-time moments (moment matching; censoring is then left to Newton).
    Weibull: ``k0 = (pi / sqrt 6) / sd(log t)`` and, given ``k0``, the censored MLE of the scale in closed
    form, ``lam0^k0 = sum_i w_i t_i^k0 / sum_i w_i d_i``."""
    keep = found & (weight > 0)
    log_t, w = np.log(time[keep]), weight[keep]
    mean = np.average(log_t, weights=w)
    sd = math.sqrt(max(np.average((log_t - mean) ** 2, weights=w), 1e-12))
    if family == "lognormal":
        return np.array([mean, math.log(sd)])
    k0 = _PI_OVER_SQRT6 / sd
    pos = weight > 0
    log_sum = np.logaddexp.reduce(k0 * np.log(time[pos]) + np.log(weight[pos]))
    log_lam = (log_sum - math.log(w.sum())) / k0
    return np.array([math.log(k0), log_lam])


def _check_solver_options(max_iter: int, gtol: float) -> None:
    check_range("max_iter", max_iter, ge=1, integer=True)
    check_range("gtol", gtol, gt=0)


def fit_survival(data: RedTeamData, family: str, *, max_iter: int = 100, gtol: float = 1e-9) -> SurvivalFit:
    """Right-censored maximum-likelihood fit of the discovery-time distribution (module docstring).

    ``data``: :class:`RedTeamData` (``[N]`` rows); ``family``: one of :data:`FAMILIES`. Damped Newton in
    float64 from a moment-matched start, at most ``max_iter`` steps, converged when the max-norm of the
    gradient of the mean negative log-likelihood w.r.t. ``theta`` is ``<= gtol``. Raises
    :class:`~jaxsafety.config.ConfigError` on bad input (also without uncensored rows at >= 2 distinct times,
    where the MLE need not exist). Compiles once per family and padded size (``N`` rounded up to a power of
    two, at least 256; the padding rows have weight 0).
    """
    _check_family(family)
    _check_solver_options(max_iter, gtol)
    time, found, weight = _check_data(data)
    theta0 = _initial_theta(family, time, found, weight)
    log_t, found_p, weight_p = _padded(time, found, weight)
    with jax.enable_x64():
        theta, natural, loglik, converged, it, cov = _fit_core(
            jnp.asarray(theta0),
            jnp.asarray(log_t),
            jnp.asarray(found_p),
            jnp.asarray(weight_p),
            jnp.asarray(gtol, jnp.float64),
            jnp.asarray(max_iter, jnp.int32),
            family=family,
        )
    natural = np.asarray(natural)
    return SurvivalFit(
        family=family,
        params={name: float(v) for name, v in zip(PARAM_NAMES[family], natural, strict=True)},
        theta=np.asarray(theta),
        loglik=float(loglik),
        converged=bool(converged),
        num_iterations=int(it),
        cov=np.asarray(cov),
    )


def bootstrap_survival(
    data: RedTeamData,
    family: str,
    *,
    num_resamples: int,
    seed: int,
    max_iter: int = 100,
    gtol: float = 1e-9,
) -> dict[str, np.ndarray]:
    """Nonparametric bootstrap of :func:`fit_survival` (module docstring): ``num_resamples`` resamples of the
    ``N`` rows, drawn uniformly with replacement under ``jax.random.key(seed)`` (a drawn row keeps its weight,
    so a resample's weights are ``multiplicity * weight``), all refitted in one jitted, vmapped float64 Newton
    run started at the full-data fit.

    Returns ``{name: [num_resamples] float64}`` for each name in :data:`PARAM_NAMES` ``[family]``, plus
    ``"converged"``: ``[num_resamples]`` bool (False for a resample that drew uncensored rows at fewer than
    two distinct times, where the MLE need not exist, or whose fit did not meet ``gtol`` in ``max_iter``
    steps; its parameters are wherever Newton stopped: use only the converged ones). Memory ~ a few
    ``num_resamples * N_padded`` float64. Raises :class:`~jaxsafety.config.ConfigError` on bad input.
    """
    _check_family(family)
    check_range("num_resamples", num_resamples, ge=1, integer=True)
    check_range("seed", seed, ge=0, integer=True)
    _check_solver_options(max_iter, gtol)
    time, found, weight = _check_data(data)
    full = fit_survival(data, family, max_iter=max_iter, gtol=gtol)
    log_t, found_p, weight_p = _padded(time, found, weight)
    with jax.enable_x64():
        counts = _bootstrap_counts(jax.random.key(seed), num_resamples, log_t.shape[0], time.shape[0])
        natural, converged = _bootstrap_core(
            counts,
            jnp.asarray(full.theta),
            jnp.asarray(log_t),
            jnp.asarray(found_p),
            jnp.asarray(weight_p),
            jnp.asarray(gtol, jnp.float64),
            jnp.asarray(max_iter, jnp.int32),
            family=family,
        )
    natural = np.asarray(natural)
    out = {name: natural[:, i] for i, name in enumerate(PARAM_NAMES[family])}
    out["converged"] = np.asarray(converged)
    return out


def _median_np(family: str, p: Mapping[str, Any]) -> np.ndarray:
    """:func:`median_time` in numpy, for host-side summaries (eager jnp would compile each primitive)."""
    if family == "weibull":
        return np.asarray(p["scale"]) * math.log(2.0) ** (1.0 / np.asarray(p["shape"]))
    return np.exp(np.asarray(p["mu"]))


def _interval(x: np.ndarray) -> list[float] | None:
    return None if x.size == 0 else [float(v) for v in np.percentile(x, [2.5, 97.5])]


def summary(fit: SurvivalFit, boot: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """JSON-ready summary: ``family``, ``time_unit``, ``loglik``, ``converged``, ``num_resamples``,
    ``num_resamples_converged``; ``params[name]`` = ``{"estimate", "se" (from fit.cov), "interval_95"}`` with
    the 95% bootstrap percentile interval over the converged resamples of ``boot`` (None without ``boot``);
    ``median_time`` = ``{"estimate", "interval_95"}`` in hours (the interval from the resamples' medians)."""
    names = PARAM_NAMES[fit.family]
    if boot is not None:
        missing = [n for n in names if n not in boot]
        if missing:
            raise ConfigError("boot", sorted(boot), f"a bootstrap_survival result for {fit.family} ({names})")
        ok = np.asarray(boot.get("converged", np.ones(np.shape(boot[names[0]]), bool)), dtype=bool)
        draws = {n: np.asarray(boot[n], dtype=np.float64)[ok] for n in names}
    out: dict[str, Any] = {
        "family": fit.family,
        "time_unit": "hours",
        "loglik": fit.loglik,
        "converged": fit.converged,
        "num_resamples": None if boot is None else int(ok.size),
        "num_resamples_converged": None if boot is None else int(ok.sum()),
        "params": {},
    }
    for i, name in enumerate(names):
        out["params"][name] = {
            "estimate": fit.params[name],
            "se": float(math.sqrt(fit.cov[i, i])) if fit.cov[i, i] >= 0 else None,
            "interval_95": None if boot is None else _interval(draws[name]),
        }
    out["median_time"] = {
        "estimate": float(_median_np(fit.family, fit.params)),
        "interval_95": None if boot is None else _interval(_median_np(fit.family, draws)),
    }
    return out
