"""The generalised uplift model: expected annual harm of novice misuse with and without safeguards, as a jitted,
vmapped Monte Carlo over uncertain inputs, with autodiff sensitivities.

It generalises the published model of Clymer et al. (2025, arXiv 2505.18003; :mod:`jaxsafety.uplift.published`)
from "safeguards delay attackers" to an explicit attack pathway and explicit safeguard dynamics. One *scenario* is
one joint draw of every input (:func:`jaxsafety.uplift.params.draw_scenarios`); given it, everything below is an
exact expectation over attackers (no attacker-level sampling), so the harm is smooth in every input and
``jax.grad`` gives the sensitivities.

**Attackers.** ``a`` novices per year attempt an attack. Actor skill ``s ~ N(0, skill_sd^2)`` shifts the log-odds of
every step (integrated by 16-point Gauss-Hermite quadrature, exact for the model's smooth integrand to float32).

**Pathway.** Steps ``k = 1..K`` in order; the attack succeeds if every step does. Step ``k`` succeeds with
``sigmoid(logit p_k + s)`` unaided and ``sigmoid(logit p_k + s + u_k)`` with the model's help (``u_k``: the uplift in
log-odds). Help on step ``k`` needs ``Q_k`` hazardous answers from the model.

**Safeguards, per hazardous query** (each try of a query): the account is flagged and banned with probability
``d`` (``detect``), after which the actor returns with a new account with probability ``r`` (``reenter``) or is gone;
an unflagged try is answered with probability ``b`` (``refusal_bypass``), else refused, and after a refusal the
novice gives up on the model with probability ``g`` (``give_up``). Tries repeat until an answer or a loss of the
model, so one query is answered with probability ``pi = (1-d) b / ((1-d) b + d (1-r) + (1-d)(1-b) g)`` and a step's
``Q_k`` queries with ``pi^Q_k``. An actor who loses the model does the remaining steps unaided.
With a universal jailbreak open, ``b = 1`` and ``d`` is ``jailbreak_detect``.

**Deployment dynamics.** Universal jailbreaks are found after times ``J_1, J_2, ...`` (the ``jailbreak`` family,
months; fitted to red-team data by :mod:`jaxsafety.uplift.survival`) and patched ``patch_months`` after each is
found, the next search starting at the patch (an alternating renewal process). Over the ``horizon_months``
deployment, ``w`` is the fraction of time a jailbreak is open; attempts start uniformly in time, so an attempt
meets an open jailbreak with probability ``w``. ``J_c`` are drawn per scenario by the inverse CDF at fixed standardised draws
(pathwise differentiable in the family's parameters).

**Outputs per scenario** (:data:`OUTPUTS`; harm in the units of ``damage_per_success`` per year):
``harm.no_ai = a D S(0)`` (no access to the model), ``harm.none = a D S(1)`` (the model without safeguards),
``harm.safeguarded = a D [(1-w) S(pi^Q) + w S(pi_jb^Q)]``, the uplifts over ``harm.no_ai``, ``risk_reduction =
harm.none - harm.safeguarded``; :class:`SimulationResult` adds ``uplift_removed``, the share of the
unsafeguarded uplift that the safeguards remove (a ratio of means).

**Sensitivity.** Every drawn input ``x`` gets a shift ``delta`` (:func:`jaxsafety.uplift.params.shift`: an
elasticity for positive inputs, a log-odds shift for probabilities, additive for real ones); :func:`simulate`
returns ``d E[target] / d delta`` at ``delta = 0`` for all of them from one reverse pass per chunk of scenarios.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from jaxsafety.config import ConfigError, check_choice
from jaxsafety.uplift.params import SAFEGUARDS, STEP, TOP, Scenarios, shift

__all__ = [
    "OUTPUTS",
    "SimulationResult",
    "access_probability",
    "harm_over_time",
    "input_label",
    "jailbreak_windows",
    "realised_annual_harm",
    "scenario_outputs",
    "sensitivity_kinds",
    "simulate",
    "success_probability",
    "swing_analysis",
]

OUTPUTS = (
    "harm.no_ai",
    "harm.none",
    "harm.safeguarded",
    "uplift.none",
    "uplift.safeguarded",
    "risk_reduction",
    "success.no_ai",
    "success.none",
    "success.safeguarded",
    "access.pre_jailbreak",
    "jailbreak_open",
)
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(16)
_GH_WEIGHTS = _GH_WEIGHTS / np.sqrt(2 * np.pi)  # E[f(z)], z ~ N(0, 1)
_EPS = 1e-7


def sensitivity_kinds(family: str) -> dict[str, str]:
    """Name -> kind (``positive`` / ``probability`` / ``real``) of every drawn input the expected harm depends on
    (``damage_gsd`` only spreads realised harm); ``jb_a``/``jb_b`` are the jailbreak family's two parameters."""
    kinds = {k: v for k, v in TOP.items() if k != "damage_gsd"}
    kinds |= STEP | SAFEGUARDS
    kinds |= (
        {"jb_a": "positive", "jb_b": "positive"}
        if family == "weibull"
        else {"jb_a": "real", "jb_b": "positive"}
    )
    return kinds


def access_probability(refusal_bypass, give_up, detect, reenter):
    """Probability that one hazardous query is answered before the actor loses the model (module docstring)."""
    answered = (1 - detect) * refusal_bypass
    lost = detect * (1 - reenter) + (1 - detect) * (1 - refusal_bypass) * give_up
    return answered / jnp.maximum(answered + lost, 1e-30)


def success_probability(p_success, uplift, skill_sd, access):
    """P(attack succeeds) averaged over skill ``N(0, skill_sd^2)`` for ``[..., K]`` steps: ``[2 + V, ...]``, rows
    ``0``: without the model, ``1``: with it throughout, ``2 + v``: under per-step access probabilities
    ``access[v]`` (``[V, ..., K]``; the actor keeps the model for step ``k`` with probability ``access_k`` given
    it had it for step ``k-1`` and does the rest unaided once it is lost). Broadcasts over leading axes."""
    p = jnp.clip(p_success, _EPS, 1 - _EPS)
    logit = jnp.log(p) - jnp.log1p(-p)
    s = skill_sd[..., None] * jnp.asarray(_GH_NODES, p.dtype)  # [..., N]
    unaided = aided_all = jnp.ones_like(s)
    with_model = jnp.ones(
        (access.shape[0], *s.shape), s.dtype
    )  # P(steps so far succeeded, model still there)
    without = jnp.zeros_like(with_model)  # P(steps so far succeeded, model lost)
    for k in range(p.shape[-1]):  # K is small and static; the sigmoids are shared by all access patterns
        base = jax.nn.sigmoid(logit[..., k, None] + s)
        aided = jax.nn.sigmoid(logit[..., k, None] + s + uplift[..., k, None])
        g = access[..., k, None]
        without = (with_model * (1 - g) + without) * base
        with_model = with_model * g * aided
        unaided, aided_all = unaided * base, aided_all * aided
    paths = jnp.concatenate([unaided[None], aided_all[None], with_model + without])
    return jnp.sum(paths * jnp.asarray(_GH_WEIGHTS, p.dtype), axis=-1)


def _jailbreak_times(family: str, a, b, z):
    """Discovery gaps from standardised draws ``z`` (:func:`~jaxsafety.uplift.params.standard_gap_draws`): one
    ``exp`` per gap, the inverse CDF's other transcendentals being done once when the scenarios are drawn."""
    if family == "weibull":  # a: shape, b: scale; z = log E, E ~ Exp(1): b E^(1/a)
        return b[..., None] * jnp.exp(z / a[..., None])
    return jnp.exp(a[..., None] + b[..., None] * z)  # lognormal: a: mu, b: sigma; z ~ N(0, 1)


def _running_sum(x, block: int = 8):
    """``cumsum`` over the last axis as two small triangular matmuls (within blocks of ``block``, then the block
    offsets): 5-9x faster than XLA:CPU's ``cumsum`` at 64 columns, and half a full 64 x 64 triangular matmul."""
    c = x.shape[-1]
    if c % block:
        return x @ jnp.triu(jnp.ones((c, c), x.dtype))
    xb = x.reshape(*x.shape[:-1], c // block, block)
    within = xb @ jnp.triu(jnp.ones((block, block), x.dtype))
    offsets = within[..., -1] @ jnp.triu(jnp.ones((c // block, c // block), x.dtype), 1)
    return (within + offsets[..., None]).reshape(x.shape)


def jailbreak_windows(family: str, a, b, z, patch_months):
    """``(found, patched)`` ``[..., C]``: the months at which the ``C`` successive universal jailbreaks are found
    and patched (discovery gaps of ``family(a, b)`` from the standardised draws ``z`` ``[..., C]``)."""
    gaps = _jailbreak_times(family, a, b, z)
    c = z.shape[-1]
    found = _running_sum(gaps) + jnp.arange(c, dtype=gaps.dtype) * patch_months[..., None]
    return found, found + patch_months[..., None]


def _mean_gap(family: str, a, b):
    """Mean time to find a universal jailbreak under ``family(a, b)``."""
    if family == "weibull":
        return b * jnp.exp(gammaln(1 + 1 / a))
    return jnp.exp(a + 0.5 * b * b)


def _open_time(found, patched, lo, hi, tail_ratio):
    """Time the windows ``[found, patched]`` overlap ``[lo, hi]``, summed over windows; after the last simulated
    window the renewal process is replaced by its long-run open share ``tail_ratio`` (renewal-reward theorem)."""
    inside = jnp.sum(jnp.clip(jnp.minimum(patched, hi) - jnp.maximum(found, lo), 0.0, None), axis=-1)
    end = patched[..., -1:]  # broadcasts like the windows, [..., 1]
    return inside + tail_ratio * jnp.clip(hi - jnp.maximum(end, lo), 0.0, None)[..., 0]


def _conditional(d: Mapping[str, jax.Array], family: str, horizon: float):
    """Per-scenario pieces: success probabilities and the open fraction (shapes ``[S]``)."""
    pi = access_probability(d["refusal_bypass"], d["give_up"], d["detect"], d["reenter"])
    pi_jb = access_probability(jnp.ones_like(pi), d["give_up"], d["jailbreak_detect"], d["reenter"])
    q = d["queries"]
    access = jnp.stack(
        [pi[:, None] ** q, pi_jb[:, None] ** q]
    )  # [2, S, K]: safeguarded, with a jailbreak open
    succ = success_probability(d["p_success"], d["uplift"], d["skill_sd"], access)
    found, patched = jailbreak_windows(family, d["jb_a"], d["jb_b"], d["jb_z"], d["patch_months"])
    tail = d["patch_months"] / (_mean_gap(family, d["jb_a"], d["jb_b"]) + d["patch_months"])
    w = _open_time(found, patched, 0.0, horizon, tail) / horizon
    return succ, w, pi, found, patched, tail


def scenario_outputs(d: Mapping[str, jax.Array], family: str, horizon: float) -> dict[str, jax.Array]:
    """All :data:`OUTPUTS` ``[S]`` for the drawn inputs ``d`` (module docstring)."""
    succ, w, pi, _, patched, _ = _conditional(d, family, horizon)
    s_none, s_full, s_pre, s_jb = succ
    s_safe = (1 - w) * s_pre + w * s_jb
    scale = d["actors_per_year"] * d["damage_per_success"]
    harm = {"harm.no_ai": scale * s_none, "harm.none": scale * s_full, "harm.safeguarded": scale * s_safe}
    uplift_none = harm["harm.none"] - harm["harm.no_ai"]
    reduction = harm["harm.none"] - harm["harm.safeguarded"]
    return harm | {
        "uplift.none": uplift_none,
        "uplift.safeguarded": harm["harm.safeguarded"] - harm["harm.no_ai"],
        "risk_reduction": reduction,
        "success.no_ai": s_none,
        "success.none": s_full,
        "success.safeguarded": s_safe,
        "access.pre_jailbreak": pi,
        "jailbreak_open": w,
        "_renewal_truncated": (patched[..., -1] < horizon).astype(w.dtype),
    }


def input_label(name: str, column: int | None, family: str, step_names: Sequence[str] | None = None) -> str:
    """Display name of a drawn input: ``steps.<step>.<input>`` for a step column, the jailbreak family's own
    parameter names for ``jb_a`` / ``jb_b`` (months), else ``name``."""
    if column is not None:
        return f"steps.{step_names[column] if step_names else column}.{name}"
    jb = {"weibull": ("shape", "scale_months"), "lognormal": ("mu_months", "sigma")}[family]
    return {"jb_a": f"jailbreak.{jb[0]}", "jb_b": f"jailbreak.{jb[1]}"}.get(name, name)


class SimulationResult(NamedTuple):
    """``outputs``: :data:`OUTPUTS` -> ``[S]`` per-scenario values (numpy); ``mean``: their Monte Carlo means
    (heavy-tailed inputs make them noisy: ``stderr`` holds each mean's Monte Carlo standard error);
    ``sensitivity``: input name -> ``d E[target] / d delta`` (``[K]`` for step inputs), ``None`` unless asked;
    ``target``: the output differentiated; ``truncated``: share of scenarios whose ``cycles`` jailbreak windows
    ended before the horizon (then ``w`` is underestimated: raise ``cycles``)."""

    outputs: dict[str, np.ndarray]
    mean: dict[str, float]
    stderr: dict[str, float]
    sensitivity: dict[str, np.ndarray] | None
    target: str
    truncated: float
    num_scenarios: int


@functools.partial(jax.jit, static_argnames=("family", "horizon", "target", "with_grad"))
def _chunk_jit(d, valid, family: str, horizon: float, target: str, with_grad: bool):
    """One chunk of scenarios: all outputs, and the gradient of the valid scenarios' summed ``target`` with
    respect to every input's shift (at zero)."""
    kinds = sensitivity_kinds(family)
    zero = {k: jnp.zeros(d[k].shape[1:], jnp.float32) for k in kinds}

    def total(deltas):
        shifted = dict(d)
        for k, kind in kinds.items():
            shifted[k] = shift(d[k], deltas[k], kind)
        out = scenario_outputs(shifted, family, horizon)
        return jnp.sum(out[target] * valid), out

    if with_grad:
        (_, out), grads = jax.value_and_grad(total, has_aux=True)(zero)
        return out, grads
    return total(zero)[1], None


def _chunk(arrays: Mapping[str, np.ndarray], start: int, size: int, n: int):
    """Rows ``start:start + size`` of every array (views; the last chunk padded with its final row) and the
    ``[size]`` 0/1 mask of real rows."""
    if start + size <= n:
        return {k: v[start : start + size] for k, v in arrays.items()}, np.ones(size, np.float32)
    rows = np.minimum(np.arange(start, start + size), n - 1)
    return {k: v[rows] for k, v in arrays.items()}, (np.arange(start, start + size) < n).astype(np.float32)


def _chunk_size(n: int, chunk: int) -> int:
    """Two sizes only (small runs and tests: 1024; else ``chunk``), so any ``n`` reuses one compiled program."""
    return 1024 if n <= 1024 else chunk


def simulate(
    draws: Scenarios | Mapping[str, np.ndarray],
    *,
    horizon_months: float,
    family: str | None = None,
    target: str = "harm.safeguarded",
    sensitivity: bool = True,
    chunk: int = 8192,  # fastest of 2k-32k on 2 CPU cores: a chunk's reverse pass stays in cache
) -> SimulationResult:
    """Evaluate every scenario of ``draws`` (:func:`~jaxsafety.uplift.params.draw_scenarios`), ``chunk``
    scenarios per call of one jitted program; with ``sensitivity`` also the gradient of the mean of ``target``
    with respect to every input's shift, summed chunk by chunk (memory stays at one chunk's reverse pass however
    many scenarios there are, and every number of scenarios reuses the same compiled program)."""
    family = family or getattr(draws, "family", "weibull")
    check_choice("family", family, ("weibull", "lognormal"))
    check_choice("target", target, OUTPUTS)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError("chunk", chunk, "an integer >= 1")
    need = set(sensitivity_kinds(family)) | {"jb_z"}
    missing = sorted(need - set(draws))
    if missing:
        raise ConfigError("draws", missing[0], "a dict of draw_scenarios' arrays: " + ", ".join(sorted(need)))
    n = int(np.shape(draws["actors_per_year"])[0])
    size = _chunk_size(n, chunk)
    arrays = {k: np.asarray(draws[k], np.float32) for k in need}
    pieces, grads = [], None
    for start in range(0, n, size):  # one compiled program for every chunk; dispatch is asynchronous
        d, valid = _chunk(arrays, start, size, n)
        out, g = _chunk_jit(d, valid, family, float(horizon_months), target, bool(sensitivity))
        pieces.append(out)
        if g is not None:
            grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    outs = {k: np.concatenate([np.asarray(p[k]) for p in pieces])[:n] for k in pieces[0]}
    truncated = float(outs.pop("_renewal_truncated").mean())
    mean = {k: float(np.mean(v, dtype=np.float64)) for k, v in outs.items()}
    stderr = {k: float(np.std(v, dtype=np.float64) / np.sqrt(n)) for k, v in outs.items()}
    mean["uplift_removed"] = mean["risk_reduction"] / mean["uplift.none"] if mean["uplift.none"] > 0 else 0.0
    sens = {k: np.asarray(v, np.float64) / n for k, v in grads.items()} if grads is not None else None
    return SimulationResult(outs, mean, stderr, sens, target, truncated, n)


@functools.partial(jax.jit, static_argnames=("family", "horizon", "months"))
def _harm_over_time_jit(d, family: str, horizon: float, months: int):
    succ, _, _, found, patched, tail = _conditional(d, family, horizon)
    edges = jnp.arange(months + 1, dtype=jnp.float32)
    lo, hi = edges[:-1], jnp.minimum(edges[1:], horizon)
    w_m = _open_time(found[:, None, :], patched[:, None, :], lo[:, None], hi[:, None], tail[:, None]) / (
        hi - lo
    )
    rate = (d["actors_per_year"] * d["damage_per_success"] / 12.0)[:, None]
    return rate * ((1 - w_m) * succ[2][:, None] + w_m * succ[3][:, None]), w_m


def harm_over_time(
    draws: Mapping[str, np.ndarray], *, horizon_months: float, family: str
) -> dict[str, np.ndarray]:
    """Month by month over the deployment: ``harm`` ``[S, M]`` expected harm in month ``m`` (``M =
    ceil(horizon_months)``; the last month may be partial and is scaled to a full month) and ``jailbreak_open``
    ``[S, M]`` the share of the month with a universal jailbreak open. Runs in chunks of scenarios (the
    month-by-window overlaps are ``[chunk, M, cycles]``)."""
    check_choice("family", family, ("weibull", "lognormal"))
    months = int(np.ceil(horizon_months))
    keys = set(sensitivity_kinds(family)) | {"jb_z"}
    arrays = {k: np.asarray(draws[k], np.float32) for k in keys}
    n = len(arrays["actors_per_year"])
    size = _chunk_size(n, 4096)
    harm, w_m = [], []
    for start in range(0, n, size):
        h, w = _harm_over_time_jit(_chunk(arrays, start, size, n)[0], family, float(horizon_months), months)
        harm.append(h)
        w_m.append(w)
    return {"harm": np.concatenate(harm)[:n], "jailbreak_open": np.concatenate(w_m)[:n]}


def realised_annual_harm(
    success: np.ndarray, draws: Mapping[str, np.ndarray], *, seed: int, damage_gsd: float
) -> np.ndarray:
    """One year's realised harm per scenario: ``N ~ Poisson(a * success)`` successful attacks, each causing a
    lognormal damage with mean ``damage_per_success`` and geometric sd ``damage_gsd`` (numpy; the aleatory spread
    around the expected harm ``a D success``, which it matches in mean)."""
    rng = np.random.default_rng([seed, 101])
    lam = np.asarray(draws["actors_per_year"], np.float64) * np.asarray(success, np.float64)
    counts = rng.poisson(lam)
    total = int(counts.sum())
    if total > 50_000_000:
        raise ConfigError(
            "num_scenarios", len(lam), f"fewer scenarios: {total} successes to draw damages for"
        )
    sigma = np.log(damage_gsd)
    mean = np.asarray(draws["damage_per_success"], np.float64)
    owner = np.repeat(np.arange(len(lam)), counts)
    damages = np.exp(np.log(mean[owner]) - 0.5 * sigma**2 + sigma * rng.standard_normal(total))
    return np.bincount(owner, weights=damages, minlength=len(lam))


class Swing(NamedTuple):
    """One tornado row: the mean ``target`` with input ``name`` pinned at its ``q_low`` / ``q_high`` quantile
    over the scenarios (every other input still drawn), against ``base``, the unpinned mean."""

    name: str
    low_value: float
    high_value: float
    low: float
    high: float
    base: float


def swing_analysis(
    draws: Mapping[str, np.ndarray],
    *,
    horizon_months: float,
    family: str,
    target: str = "harm.safeguarded",
    quantiles: tuple[float, float] = (0.1, 0.9),
    step_names: Sequence[str] | None = None,
) -> list[Swing]:
    """Tornado rows for every drawn input that varies across scenarios (each step column on its own), sorted
    by swing ``|high - low|``, largest first. Pinning an input at a quantile of its draws is the one-at-a-time
    sensitivity of decision analysis; unlike the autodiff gradient of :func:`simulate` it shows non-linear
    response over the input's plausible range."""
    check_choice("target", target, OUTPUTS)
    q_lo, q_hi = quantiles
    if not 0 <= q_lo < q_hi <= 1:
        raise ConfigError("quantiles", quantiles, "two numbers 0 <= low < high <= 1")

    def mean_of(d) -> float:
        return simulate(d, horizon_months=horizon_months, family=family, sensitivity=False).mean[target]

    base = mean_of(draws)
    rows = []
    for k in sensitivity_kinds(family):
        x = np.asarray(draws[k])
        for c in range(x.shape[1]) if x.ndim == 2 else [None]:
            col = x if c is None else x[:, c]
            lo, hi = np.quantile(col, [q_lo, q_hi])
            if hi <= lo:
                continue  # a point input: nothing to swing
            means = []
            for v in (lo, hi):
                d = dict(draws)
                if c is None:
                    d[k] = np.full_like(x, v)
                else:
                    d[k] = x.copy()
                    d[k][:, c] = v
                means.append(mean_of(d))
            label = input_label(k, c, family, step_names)
            rows.append(Swing(label, float(lo), float(hi), means[0], means[1], base))
    return sorted(rows, key=lambda r: -abs(r.high - r.low))
