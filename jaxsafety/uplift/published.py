"""The published misuse uplift model of Clymer et al. 2025, in JAX.

Clymer, Weinbaum, Kirk, Mai, Zhang, Davies, "An example safety case for safeguards against misuse" (arXiv
2505.18003, 2025; interactive version at aimisusemodel.com). The model, as the paper states it:

* expected annual harm with assistance ``A``: ``R(A) = a * D * integral_0^inf p_A(t) f_T(t) dt``, with ``a``
  attempts per year, ``D`` damage per successful attempt, ``f_T`` the density of the time (months) an attacker
  invests, and ``p_A(t)`` the probability that an attempt investing ``t`` months succeeds with assistance ``A``
  (``none``: no AI assistant; ``pre``: the assistant without safeguards; ``post``: with safeguards);
* uplift ``U(A_post) = R(A_post) - R(A_none)`` (and likewise ``U(A_pre)``), compared with an unacceptable-risk
  threshold ``T`` (top-level claim C0: safeguards keep uplift below ``T``);
* safeguards delay attackers: an attacker who needs ``r`` hazardous queries, ``Q`` of them per month of work,
  reaches with safeguards at time ``r/Q + E(r)`` what he reached without them at ``r/Q``:
  ``p_post(r/Q + E(r)) = p_pre(r/Q)``, where ``E(r)`` (months to get ``r`` queries past the safeguards:
  jailbreaking, re-jailbreaking after bans) is estimated by red-teaming;
* the success curves are monotone (Fritsch-Carlson) cubic interpolations, in log-time, of expert estimates;
* a Monte Carlo deployment projection (attempts starting at random times over the deployment; a universal
  jailbreak appearing at a random time, after which attempts follow the unmitigated curve ``p_pre`` until the
  developer responds within a one-month grace period) gives risk month by month against the threshold.

What is published and what is not (each field of :class:`PublishedInputs` says which). The paper's full text
was not available to us; the sources are its abstract and equations as reproduced on
sciencestack.ai/paper/2505.18003, and a summary of the paper in Sandoval, "What counts as an adequate threat
model?" (gussand.github.io, 2026):

* published: the equations above; the model's named parameters (expected annual attempts, expected damage per
  success, the distribution of time actors invest, success probability with and without AI, hazardous requests
  per unit time, cumulative time to evade safeguards); the Fritsch-Carlson log-time interpolation (issue 9); a
  misuse attempt being a novice spending more than two weeks (our truncation of ``f_T`` at half a month); the
  developer correcting the deployment within one month (the grace period); the 96-month horizon as given in
  issue 9's summary of the paper (not re-verified);
* ILLUSTRATIVE: every other number (expert points of the curves, ``a``, ``D``, the shape of ``f_T``, ``Q``,
  ``E(r)``, the jailbreak arrival time, ``T``). The paper's numbers live in its interactive model; ours are
  plausible stand-ins chosen so that ``U(A_post) < T < U(A_pre)``. Replace them with the published ones when at
  hand.

Modelling choices where the paper gives the relation but not the functional form (stated in the code too):

* ``E(r) = evasion_initial_months + evasion_months_per_query * r`` (affine: a first jailbreak, then a constant
  cost per query for re-jailbreaking after bans), so the delay relation inverts in closed form:
  ``p_post(t) = p_pre(max(t - E0, 0) / (1 + Q * e1))``;
* ``f_T`` is log-normal (median ``attacker_median_months``, log-sd ``attacker_log_sigma``), truncated below at
  ``min_attempt_months`` (an attempt is at least two weeks of effort);
* outside the experts' time range a curve is clamped to its first / last expert value (no extrapolation);
* one universal jailbreak per simulated deployment, arriving after an exponential time; attempts that start in
  ``[J, J + grace)`` follow ``p_pre``, those before and after it ``p_post`` (the developer has responded); an
  attempt is counted in the month it starts.

Public API: :class:`PublishedInputs`, :func:`fritsch_carlson_slopes`, :func:`monotone_interpolator`,
:func:`success_curve`, :func:`success_probability`, :func:`expected_annual_harm`, :func:`uplift`,
:func:`sample_deployment_draws`, :func:`project_from_draws`, :func:`deployment_projection`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.config import ConfigError, check, check_choice, check_range, first_bad

__all__ = [
    "ASSISTANCE",
    "DeploymentDraws",
    "DeploymentProjection",
    "PublishedInputs",
    "UpliftResult",
    "attempt_slots",
    "deployment_projection",
    "expected_annual_harm",
    "fritsch_carlson_slopes",
    "monotone_interpolator",
    "project_from_draws",
    "sample_deployment_draws",
    "success_curve",
    "success_probability",
    "uplift",
]

Assistance = Literal["none", "pre", "post"]
ASSISTANCE: tuple[str, ...] = ("none", "pre", "post")

_TINY_MONTHS = 1e-12  # log-time of t <= 0 is taken at this t (then clamped to the first expert point)


def _check_curve(name: str, months: tuple[float, ...], probs: tuple[float, ...]) -> None:
    """Expert points of one success curve: >= 2 points, times > 0 strictly increasing, probabilities in [0, 1]
    and non-decreasing (a success curve is monotone in the time invested)."""
    check(len(months) >= 2, f"{name}_months", months, "a tuple of at least 2 times (months)")
    check(
        len(probs) == len(months),
        f"{name}_probs",
        probs,
        f"a tuple of {len(months)} probabilities (one per entry of {name}_months)",
    )
    t, p = np.asarray(months, dtype=float), np.asarray(probs, dtype=float)
    first_bad(f"{name}_months", ~np.isfinite(t) | (t <= 0), t, "finite times > 0 (months)")
    first_bad(f"{name}_months", np.r_[False, np.diff(t) <= 0], t, "strictly increasing times")
    first_bad(f"{name}_probs", ~np.isfinite(p) | (p < 0) | (p > 1), p, "probabilities in [0, 1]")
    first_bad(f"{name}_probs", np.r_[False, np.diff(p) < 0], p, "non-decreasing probabilities")


def _as_float_tuple(field: str, value: object) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(field, value, "a tuple of numbers") from None


@dataclasses.dataclass(frozen=True)
class PublishedInputs:
    """Inputs of the Clymer et al. (2025) uplift model and deployment projection (frozen, hashable: static
    under ``jax.jit``). Times are in months, rates per year, harm in the units of ``damage_per_success``.

    Sources: (P) published in the paper; (I) issue 9's summary of the paper; (ILLUSTRATIVE) our plausible
    stand-in where the paper's number was not available to us (see the module docstring).
    """

    #: ``a``: misuse attempts per year (ILLUSTRATIVE).
    attempts_per_year: float = 10.0
    #: ``D``: harm per successful attempt (ILLUSTRATIVE; e.g. expected fatalities).
    damage_per_success: float = 1000.0
    #: Expert points of ``p_none`` (no AI assistant): times invested (months) and success probabilities
    #: (ILLUSTRATIVE).
    none_months: tuple[float, ...] = (0.1, 0.5, 1.0, 3.0, 6.0, 12.0, 36.0)
    none_probs: tuple[float, ...] = (0.0005, 0.002, 0.005, 0.015, 0.03, 0.05, 0.08)
    #: Expert points of ``p_pre`` (assistant without safeguards) (ILLUSTRATIVE).
    pre_months: tuple[float, ...] = (0.1, 0.5, 1.0, 3.0, 6.0, 12.0, 36.0)
    pre_probs: tuple[float, ...] = (0.005, 0.03, 0.07, 0.15, 0.25, 0.35, 0.45)
    #: ``f_T``: log-normal time attackers invest, median (months) and sd of log-time (ILLUSTRATIVE) ...
    attacker_median_months: float = 2.0
    attacker_log_sigma: float = 1.2
    #: ... truncated below at this effort (P, via the summary in Sandoval 2026, "What counts as an adequate
    #: threat model?": a misuse attempt is a novice spending more than two weeks); 0: no truncation.
    min_attempt_months: float = 0.5
    #: ``Q``: hazardous queries an attacker needs per month of work (ILLUSTRATIVE).
    queries_per_month: float = 30.0
    #: ``E(r) = evasion_initial_months + evasion_months_per_query * r``: months to get ``r`` hazardous queries
    #: past the safeguards, from red-teaming (ILLUSTRATIVE: a month to find a first jailbreak, then 0.02 month
    #: per query for re-jailbreaking after bans; slowdown factor ``1 + Q * 0.02 = 1.6``).
    evasion_initial_months: float = 1.0
    evasion_months_per_query: float = 0.02
    #: Deployment length of the projection, months (I: 96).
    deployment_months: int = 96
    #: Months from a universal jailbreak's appearance to the developer's response (P: the developer corrects
    #: the deployment within one month; sciencestack summary: "a one-month grace period").
    grace_period_months: float = 1.0
    #: Mean months until a universal jailbreak appears (exponential) (ILLUSTRATIVE).
    jailbreak_mean_months: float = 24.0
    #: ``T``: unacceptable annual uplift (harm units per year) (ILLUSTRATIVE; between U_post and U_pre).
    risk_threshold: float = 1000.0
    #: Central probability of the reported Monte Carlo intervals (e.g. 0.9: 5th to 95th percentile).
    interval: float = 0.9

    def __post_init__(self) -> None:
        for name in ("none", "pre"):
            for kind in ("months", "probs"):
                field = f"{name}_{kind}"
                object.__setattr__(self, field, _as_float_tuple(field, getattr(self, field)))
            _check_curve(name, getattr(self, f"{name}_months"), getattr(self, f"{name}_probs"))
        check_range("attempts_per_year", self.attempts_per_year, gt=0)
        check_range("damage_per_success", self.damage_per_success, gt=0)
        check_range("attacker_median_months", self.attacker_median_months, gt=0)
        check_range("attacker_log_sigma", self.attacker_log_sigma, gt=0, le=10)
        check_range("min_attempt_months", self.min_attempt_months, ge=0)
        if self.min_attempt_months > 0:
            z = (
                math.log(self.min_attempt_months) - math.log(self.attacker_median_months)
            ) / self.attacker_log_sigma
            check(
                z < 6.0,
                "min_attempt_months",
                self.min_attempt_months,
                "times below attacker_median_months * exp(6 * attacker_log_sigma) (else f_T has no mass)",
            )
        check_range("queries_per_month", self.queries_per_month, gt=0)
        check_range("evasion_initial_months", self.evasion_initial_months, ge=0)
        check_range("evasion_months_per_query", self.evasion_months_per_query, ge=0)
        check_range("deployment_months", self.deployment_months, ge=1, le=1200, integer=True)
        check_range("grace_period_months", self.grace_period_months, ge=0)
        check_range("jailbreak_mean_months", self.jailbreak_mean_months, gt=0)
        check_range("risk_threshold", self.risk_threshold, ge=0)
        check_range("interval", self.interval, gt=0, lt=1)


# ----------------------------------------------------------------------------------------------------------------
# Fritsch-Carlson monotone cubic interpolation


def fritsch_carlson_slopes(x: jax.Array, y: jax.Array) -> jax.Array:
    """Knot derivatives ``m`` [n] of the Fritsch-Carlson monotone cubic Hermite interpolant of ``(x, y)`` [n].

    Fritsch & Carlson, "Monotone piecewise cubic interpolation", SIAM J. Numer. Anal. 17 (1980), Sec. 4:
    secants ``d_k = (y_{k+1} - y_k) / (x_{k+1} - x_k)``; initial slopes the three-point average
    ``(d_{k-1} + d_k) / 2`` inside (0 where the secants differ in sign), one-sided ``d_0`` / ``d_{n-2}`` at the
    ends; then, interval by interval in order, ``m_k = m_{k+1} = 0`` where ``d_k = 0``, and where
    ``alpha^2 + beta^2 > 9`` (``alpha = m_k / d_k``, ``beta = m_{k+1} / d_k``) both are scaled by
    ``tau = 3 / sqrt(alpha^2 + beta^2)`` (the circle inside the monotonicity region, eq. 4.2-4.4).
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    delta = jnp.diff(y) / jnp.diff(x)
    inner = jnp.where(delta[:-1] * delta[1:] > 0, 0.5 * (delta[:-1] + delta[1:]), 0.0)
    m0 = jnp.concatenate([delta[:1], inner, delta[-1:]])

    def per_interval(m: jax.Array, k: jax.Array) -> tuple[jax.Array, None]:
        d = delta[k]
        flat = d == 0
        safe_d = jnp.where(flat, 1.0, d)
        alpha, beta = m[k] / safe_d, m[k + 1] / safe_d
        r2 = alpha * alpha + beta * beta
        tau = jnp.where(r2 > 9.0, 3.0 / jnp.sqrt(jnp.where(r2 > 9.0, r2, 1.0)), 1.0)
        m = m.at[k].set(jnp.where(flat, 0.0, tau * alpha * d))
        m = m.at[k + 1].set(jnp.where(flat, 0.0, tau * beta * d))
        return m, None

    m, _ = jax.lax.scan(per_interval, m0, jnp.arange(x.shape[0] - 1))
    return m


def monotone_interpolator(x: jax.Array, y: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """The Fritsch-Carlson cubic Hermite interpolant of knots ``(x, y)`` [n] (``x`` strictly increasing), as a
    jittable function of query points of any shape. Exact at the knots, monotone between them where the data
    are; outside ``[x_0, x_{n-1}]`` it is clamped to ``y_0`` / ``y_{n-1}`` (no extrapolation)."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    m = fritsch_carlson_slopes(x, y)
    n = x.shape[0]

    def interp(xq: jax.Array) -> jax.Array:
        xc = jnp.clip(jnp.asarray(xq, dtype=x.dtype), x[0], x[-1])
        # knots are few: compare against all of them (cheaper to compile than a binary search loop)
        k = jnp.clip(jnp.searchsorted(x, xc, side="right", method="compare_all") - 1, 0, n - 2)
        h = x[k + 1] - x[k]
        s = (xc - x[k]) / h
        s2, s3 = s * s, s * s * s
        h00, h10 = 2 * s3 - 3 * s2 + 1, s3 - 2 * s2 + s
        h01, h11 = -2 * s3 + 3 * s2, s3 - s2
        return h00 * y[k] + h10 * h * m[k] + h01 * y[k + 1] + h11 * h * m[k + 1]

    return interp


def success_curve(months: tuple[float, ...], probs: tuple[float, ...]) -> Callable[[jax.Array], jax.Array]:
    """``p(t)``: the experts' success probabilities ``probs`` at ``months``, interpolated monotonically
    (:func:`monotone_interpolator`) in log-time, as in the paper; clamped outside the experts' range."""
    f = monotone_interpolator(jnp.log(jnp.asarray(months)), jnp.asarray(probs))
    return lambda t: f(jnp.log(jnp.maximum(t, _TINY_MONTHS)))


def _pre_time(inputs: PublishedInputs, t: jax.Array) -> jax.Array:
    """The unmitigated time ``r/Q`` that an attacker facing safeguards has reached by time ``t``: solving
    ``t = r/Q + E(r)`` with ``E(r) = E0 + e1 r`` gives ``r/Q = (t - E0) / (1 + Q e1)`` (0 before ``E0``)."""
    slowdown = 1.0 + inputs.queries_per_month * inputs.evasion_months_per_query
    return jnp.maximum(t - inputs.evasion_initial_months, 0.0) / slowdown


def success_probability(inputs: PublishedInputs, assistance: Assistance, t: jax.Array) -> jax.Array:
    """``p_A(t)`` for ``assistance`` in ``none`` / ``pre`` / ``post`` at times ``t`` (months, any shape).
    ``post`` is the delay relation ``p_post(r/Q + E(r)) = p_pre(r/Q)`` solved for ``p_post(t)``."""
    check_choice("assistance", assistance, ASSISTANCE)
    if assistance == "none":
        return success_curve(inputs.none_months, inputs.none_probs)(t)
    pre = success_curve(inputs.pre_months, inputs.pre_probs)
    return pre(t) if assistance == "pre" else pre(_pre_time(inputs, t))


# ----------------------------------------------------------------------------------------------------------------
# The deterministic integral


_GL_ORDER = 8
_TAIL_SIGMAS = 12.0  # log-normal mass beyond 12 sd is ~1e-33
_PANELS_PER_SIGMA = 4


def _truncation_z(inputs: PublishedInputs) -> float:
    """Standardised log-time below which ``f_T`` is truncated (``-inf`` without truncation)."""
    if inputs.min_attempt_months <= 0:
        return -math.inf
    mu, sigma = math.log(inputs.attacker_median_months), inputs.attacker_log_sigma
    return (math.log(inputs.min_attempt_months) - mu) / sigma


def _log_time_quadrature(inputs: PublishedInputs) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``u`` (log-months) and weights ``w`` with ``sum w g(u) ~ integral g(log t) f_T(t) dt``.

    With ``u = log t`` the (truncated) log-normal ``f_T(t) dt`` is the (truncated) normal density
    ``phi((u - mu)/sigma) / (sigma Z) du`` on ``u >= log(min_attempt_months)``, ``Z`` the kept mass. The integrand
    is smooth except where a curve has a knot (a jump in the cubic's second derivative), so the range (from the
    truncation point or ``mu - 12 sigma`` to ``mu + 12 sigma``) is cut at every knot of ``p_none``, ``p_pre``
    and of ``p_post`` (the ``p_pre`` knots mapped by the delay relation) and each piece is split into panels of
    at most ``sigma/4`` carrying 8-point Gauss-Legendre rules (about 1e-13 relative in float64). Built in numpy
    at trace time (the inputs are static)."""
    mu, sigma = math.log(inputs.attacker_median_months), inputs.attacker_log_sigma
    z_lo = max(_truncation_z(inputs), -_TAIL_SIGMAS)
    lo, hi = mu + z_lo * sigma, mu + _TAIL_SIGMAS * sigma
    kept_mass = 0.5 * math.erfc(_truncation_z(inputs) / math.sqrt(2.0))
    slowdown = 1.0 + inputs.queries_per_month * inputs.evasion_months_per_query
    post_knots = inputs.evasion_initial_months + slowdown * np.asarray(inputs.pre_months)
    cuts = np.log(np.concatenate([inputs.none_months, inputs.pre_months, post_knots]))
    edges = np.unique(np.concatenate([[lo, hi], cuts[(cuts > lo) & (cuts < hi)]]))
    gx, gw = np.polynomial.legendre.leggauss(_GL_ORDER)
    nodes, weights = [], []
    for a, b in itertools.pairwise(edges):
        panels = max(1, math.ceil((b - a) * _PANELS_PER_SIGMA / sigma))
        for j in range(panels):
            pa, pb = a + (b - a) * j / panels, a + (b - a) * (j + 1) / panels
            u = 0.5 * (pb - pa) * gx + 0.5 * (pa + pb)
            nodes.append(u)
            weights.append(0.5 * (pb - pa) * gw * np.exp(-0.5 * ((u - mu) / sigma) ** 2))
    return np.concatenate(nodes), np.concatenate(weights) / (sigma * math.sqrt(2.0 * math.pi) * kept_mass)


@functools.partial(jax.jit, static_argnames=("inputs",))
def _success_integrals(inputs: PublishedInputs) -> jax.Array:
    """``(I_none, I_pre, I_post)`` [3] with ``I_A = integral p_A(t) f_T(t) dt`` (one compiled graph)."""
    u, w = _log_time_quadrature(inputs)
    t, w = jnp.exp(jnp.asarray(u)), jnp.asarray(w)
    return jnp.stack([jnp.sum(w * success_probability(inputs, a, t)) for a in ASSISTANCE])


def expected_annual_harm(inputs: PublishedInputs, assistance: Assistance) -> jax.Array:
    """``R(A) = a D integral_0^inf p_A(t) f_T(t) dt`` (scalar, harm units per year; paper, uplift-model
    equations), by the fixed log-time quadrature of :func:`_log_time_quadrature` (jitted)."""
    check_choice("assistance", assistance, ASSISTANCE)
    scale = inputs.attempts_per_year * inputs.damage_per_success
    return scale * _success_integrals(inputs)[ASSISTANCE.index(assistance)]


class UpliftResult(NamedTuple):
    """Expected annual harm with each assistance and the uplifts ``U(A) = R(A) - R(A_none)`` (scalars)."""

    harm_none: jax.Array
    harm_pre: jax.Array
    harm_post: jax.Array
    uplift_pre: jax.Array
    uplift_post: jax.Array


def uplift(inputs: PublishedInputs) -> UpliftResult:
    """``R(A_none)``, ``R(A_pre)``, ``R(A_post)`` and the uplifts ``U(A_pre)``, ``U(A_post) = R(A_post) -
    R(A_none)`` (the paper's risk measure, compared with ``inputs.risk_threshold``)."""
    none, pre, post = (expected_annual_harm(inputs, a) for a in ASSISTANCE)
    return UpliftResult(none, pre, post, pre - none, post - none)


# ----------------------------------------------------------------------------------------------------------------
# Monte Carlo deployment projection


class DeploymentDraws(NamedTuple):
    """The random draws of ``S`` simulated deployments (``K`` attempt slots each, see :func:`attempt_slots`).

    ``jailbreak_month`` [S]: when the universal jailbreak appears (exponential; may exceed the deployment);
    ``num_attempts`` [S] int: attempts in the deployment (Poisson with mean ``a * months / 12``, capped at K);
    ``start_month`` [S, K]: increasing start times of a Poisson process of rate ``a / 12`` per month (the first
    ``num_attempts`` fall in ``[0, months)``); ``effort_months`` [S, K]: time invested,
    from ``f_T``; ``uniform`` [S, K]: U(0, 1) draws deciding success (``uniform < p``). Slots ``>= num_attempts``
    are unused."""

    jailbreak_month: jax.Array
    num_attempts: jax.Array
    start_month: jax.Array
    effort_months: jax.Array
    uniform: jax.Array


class DeploymentProjection(NamedTuple):
    """Month-by-month output of :func:`deployment_projection` (``S`` simulations, ``M`` months).

    ``risk`` [S, M]: expected annual harm rate during each month given the simulation's jailbreak time,
    ``a D (f_m I_pre + (1 - f_m) I_post)`` with ``f_m`` the fraction of month ``m`` inside the jailbreak window
    ``[J, J + grace)`` and ``I_A = integral p_A f_T``; ``uplift`` [S, M]: ``risk - R(A_none)``;
    ``realised_harm`` [S, M]: ``D`` times the successful attempts that started in the month;
    ``*_mean`` / ``*_lower`` / ``*_upper`` [M]: mean and central ``interval`` quantiles over simulations;
    ``prob_above_threshold`` [M]: fraction of simulations whose uplift exceeds ``T`` in the month;
    ``first_crossing`` [S] int: first month a simulation's uplift exceeds ``T`` (-1: never);
    ``mean_first_crossing``: first month the mean uplift exceeds ``T`` (-1: never)."""

    risk: jax.Array
    uplift: jax.Array
    realised_harm: jax.Array
    uplift_mean: jax.Array
    uplift_lower: jax.Array
    uplift_upper: jax.Array
    realised_harm_mean: jax.Array
    realised_harm_lower: jax.Array
    realised_harm_upper: jax.Array
    prob_above_threshold: jax.Array
    first_crossing: jax.Array
    mean_first_crossing: jax.Array


def attempt_slots(inputs: PublishedInputs) -> int:
    """Static number ``K`` of attempt slots per simulation: the Poisson mean ``lam = a * months / 12`` plus
    ``10 sqrt(lam) + 20``, so that more attempts than slots has probability below about 1e-15."""
    lam = inputs.attempts_per_year * inputs.deployment_months / 12.0
    return math.ceil(lam + 10.0 * math.sqrt(lam) + 20.0)


@functools.partial(jax.jit, static_argnames=("inputs", "num_simulations"))
def _draws(key: jax.Array, inputs: PublishedInputs, num_simulations: int) -> DeploymentDraws:
    # One uniform block, transformed by inverse CDFs (one random-bit graph to compile instead of four).
    # Attempts are a Poisson process of rate a/12 per month: start times are cumulative sums of exponential
    # gaps, and those inside the deployment are its attempts (uniform given their number, Poisson in number).
    slots = attempt_slots(inputs)
    u = jax.random.uniform(key, (num_simulations, 3 * slots + 1), minval=1e-12, maxval=1.0)
    gaps, u_effort, u_success = u[:, :slots], u[:, slots : 2 * slots], u[:, 2 * slots : 3 * slots]
    start = jnp.cumsum((12.0 / inputs.attempts_per_year) * -jnp.log(gaps), axis=1)
    # truncated normal by inversion: Phi^-1(Phi(z_lo) + u (1 - Phi(z_lo))), computed on the upper tail side
    tail_lo = 0.5 * math.erfc(_truncation_z(inputs) / math.sqrt(2.0))  # 1 - Phi(z_lo)
    z = -jax.scipy.special.ndtri(u_effort * tail_lo)
    return DeploymentDraws(
        jailbreak_month=inputs.jailbreak_mean_months * -jnp.log(u[:, -1]),
        num_attempts=jnp.sum(start < inputs.deployment_months, axis=1).astype(jnp.int32),
        start_month=start,
        effort_months=inputs.attacker_median_months * jnp.exp(inputs.attacker_log_sigma * z),
        uniform=u_success,
    )


def sample_deployment_draws(key: jax.Array, inputs: PublishedInputs, num_simulations: int) -> DeploymentDraws:
    """The random draws of ``num_simulations`` deployments (:class:`DeploymentDraws`), jitted."""
    check_range("num_simulations", num_simulations, ge=1, integer=True)
    return _draws(key, inputs, num_simulations)


def _project_one(
    inputs: PublishedInputs, integrals: jax.Array, draws: DeploymentDraws
) -> tuple[jax.Array, ...]:
    """One deployment: (risk [M], realised harm [M]) from its draws; ``integrals = (I_none, I_pre, I_post)``."""
    months = inputs.deployment_months
    jb_start = draws.jailbreak_month
    jb_end = jb_start + inputs.grace_period_months
    m = jnp.arange(months, dtype=integrals.dtype)
    frac = jnp.clip(jnp.minimum(jb_end, m + 1.0) - jnp.maximum(jb_start, m), 0.0, 1.0)
    scale = inputs.attempts_per_year * inputs.damage_per_success
    risk = scale * (frac * integrals[1] + (1.0 - frac) * integrals[2])

    # attempts during the jailbreak window follow the unmitigated curve, the others the mitigated one
    jailbroken = (draws.start_month >= jb_start) & (draws.start_month < jb_end)
    pre_time = jnp.where(jailbroken, draws.effort_months, _pre_time(inputs, draws.effort_months))
    p = success_curve(inputs.pre_months, inputs.pre_probs)(pre_time)
    used = jnp.arange(draws.start_month.shape[0]) < draws.num_attempts
    success = used & (draws.uniform < p)
    month_of = jnp.clip(jnp.floor(draws.start_month).astype(jnp.int32), 0, months - 1)
    harm = jnp.zeros(months, risk.dtype).at[month_of].add(inputs.damage_per_success * success)
    return risk, harm


def _first_true(mask: jax.Array) -> jax.Array:
    """Index of the first True along the last axis, -1 where there is none."""
    return jnp.where(jnp.any(mask, axis=-1), jnp.argmax(mask, axis=-1), -1)


@functools.partial(jax.jit, static_argnames=("inputs",))
def _project(inputs: PublishedInputs, integrals: jax.Array, draws: DeploymentDraws) -> DeploymentProjection:
    risk, harm = jax.vmap(functools.partial(_project_one, inputs, integrals))(draws)
    harm_none = inputs.attempts_per_year * inputs.damage_per_success * integrals[0]
    up = risk - harm_none
    q = jnp.array([(1.0 - inputs.interval) / 2.0, (1.0 + inputs.interval) / 2.0])
    up_q, harm_q = jnp.quantile(up, q, axis=0), jnp.quantile(harm, q, axis=0)
    above = up > inputs.risk_threshold
    up_mean = up.mean(axis=0)
    return DeploymentProjection(
        risk=risk,
        uplift=up,
        realised_harm=harm,
        uplift_mean=up_mean,
        uplift_lower=up_q[0],
        uplift_upper=up_q[1],
        realised_harm_mean=harm.mean(axis=0),
        realised_harm_lower=harm_q[0],
        realised_harm_upper=harm_q[1],
        prob_above_threshold=above.mean(axis=0),
        first_crossing=_first_true(above),
        mean_first_crossing=_first_true(up_mean > inputs.risk_threshold),
    )


def project_from_draws(inputs: PublishedInputs, draws: DeploymentDraws) -> DeploymentProjection:
    """The deployment projection (:class:`DeploymentProjection`) of given draws (jitted, vmapped over
    simulations); :func:`deployment_projection` is this after :func:`sample_deployment_draws`."""
    slots = attempt_slots(inputs)
    shape = np.shape(draws.start_month)
    check(
        len(shape) == 2 and shape[1] == slots,
        "draws.start_month",
        f"shape {shape}",
        f"shape [S, {slots}] (attempt_slots(inputs))",
    )
    return _project(inputs, _success_integrals(inputs), draws)


def deployment_projection(
    key: jax.Array, inputs: PublishedInputs, num_simulations: int
) -> DeploymentProjection:
    """Monte Carlo deployment projection of the paper: ``num_simulations`` deployments of
    ``inputs.deployment_months`` months, each with Poisson(``a``/year) attempts at uniform random start times,
    efforts from ``f_T``, and one universal jailbreak at an exponential time after which attempts follow
    ``p_pre`` for the grace period (the developer's response), ``p_post`` otherwise. Returns per-month risk,
    uplift and realised harm (per simulation, mean, intervals) and the months the uplift crosses
    ``inputs.risk_threshold`` (:class:`DeploymentProjection`)."""
    return project_from_draws(inputs, sample_deployment_draws(key, inputs, num_simulations))
