"""The numpy peer of :mod:`benchmarks.uplift_mc`: an independent float64 implementation of the generalised uplift
model, written from the module docstring of :mod:`jaxsafety.uplift.model` (it imports nothing from that module).

What a numpy user would write: every scenario evaluated at once (vectorised over ``[chunk]`` scenarios, ``chunk``
at a time to bound memory), the same 16-node Gauss-Hermite rule over actor skill
(``np.polynomial.hermite_e.hermegauss(16)``), the same outputs, and sensitivities ``d E[target] / d delta`` by
central finite differences of the mean target over every input's shift: ``2 P + 1`` model evaluations on the same
draws (``P`` scalar shifts, 23 for the example's four steps), default step ``h = 1e-6`` (float64: truncation
``O(h^2)``, rounding ~1e-10 relative; a larger step is biased by O(h) where the open fraction has kinks, see
:mod:`benchmarks.uplift_mc`).

Written differently from the model where the docstring allows, so the two check each other:

- attack success under per-step access probabilities ``g_k`` is a sum over the step ``m`` at which the model is
  lost (``m = K + 1``: never), ``S = E_s[sum_m (prod_{k<m} g_k aided_k) (1 - g_m) prod_{k>=m} base_k]``, with
  ``base_k = sigmoid(logit p_k + s)``, ``aided_k = sigmoid(logit p_k + s + u_k)``, instead of the model's forward
  recursion over steps;
- the open fraction ``w`` of the renewal process is summed over the explicit windows ``[F_c, F_c + patch]``,
  ``F_c = J_1 + ... + J_c + (c - 1) patch``, and the time after the last drawn window at the long-run open share
  ``patch / (E[J] + patch)`` (that tail is not in the model's module docstring, only in its ``_open_time``; it
  is in the peer so that both compute the same quantity), with the discovery gaps ``J_c`` from the closed-form
  quantile functions (checked against scipy's ``weibull_min.ppf`` / ``lognorm.ppf`` in the tests; scipy's generic ``ppf``
  would add its argument handling to the peer's time).

Two float32 guards of the model are mirrored so that rare draws do not differ for reasons outside the model's
definition: ``p_success`` is clipped to ``[1e-7, 1 - 1e-7]`` before its logit, and the jailbreak uniforms to the
same range before the quantile function (a float32 uniform can round to exactly 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from scipy import special

from jaxsafety.config import ConfigError, check_choice, check_range
from jaxsafety.uplift.params import SAFEGUARDS, STEP, TOP

__all__ = [
    "OUTPUTS",
    "NumpyResult",
    "access_probability",
    "attack_success",
    "evaluate",
    "input_kinds",
    "open_fraction",
    "shift_input",
    "simulate_numpy",
]

#: the per-scenario outputs, as the model's docstring names them
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
FAMILIES = ("weibull", "lognormal")
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(16)
_WEIGHTS = _WEIGHTS / np.sqrt(2.0 * np.pi)  # probabilists' Hermite weights sum to sqrt(2 pi)
_GUARD = 1e-7


def input_kinds(family: str) -> dict[str, str]:
    """Input name -> shift kind (``positive`` / ``probability`` / ``real``) of every drawn input the expected harm
    depends on: the top-level inputs but ``damage_gsd``, the step inputs, the safeguards, and the jailbreak
    family's parameters ``jb_a``, ``jb_b`` (weibull: shape, scale, both positive; lognormal: mu real, sigma
    positive)."""
    check_choice("family", family, FAMILIES)
    kinds = {k: v for k, v in TOP.items() if k != "damage_gsd"}
    kinds.update(STEP)
    kinds.update(SAFEGUARDS)
    kinds["jb_a"] = "positive" if family == "weibull" else "real"
    kinds["jb_b"] = "positive"
    return kinds


def shift_input(x: np.ndarray, delta: float, kind: str) -> np.ndarray:
    """The sensitivity perturbation (:func:`jaxsafety.uplift.params.shift`, in float64 numpy): ``x e^delta``
    (positive), ``sigmoid(logit x + delta)`` written as ``x e / (1 - x + x e)`` (probability) or ``x + delta``
    (real)."""
    if kind == "positive":
        return x * np.exp(delta)
    if kind == "probability":
        e = np.exp(delta)
        return x * e / (1.0 - x + x * e)
    return x + delta


def access_probability(
    refusal_bypass: np.ndarray, give_up: np.ndarray, detect: np.ndarray, reenter: np.ndarray
) -> np.ndarray:
    """``pi = (1-d) b / ((1-d) b + d (1-r) + (1-d)(1-b) g)`` ``[N]``: one hazardous query answered before the
    model is lost (model docstring, "Safeguards")."""
    answered = (1.0 - detect) * refusal_bypass
    denom = answered + detect * (1.0 - reenter) + (1.0 - detect) * (1.0 - refusal_bypass) * give_up
    return np.divide(answered, denom, out=np.zeros_like(answered), where=denom > 0)


def attack_success(
    p_success: np.ndarray, uplift: np.ndarray, skill_sd: np.ndarray, access: np.ndarray
) -> np.ndarray:
    """P(every step succeeds) ``[V, N]`` for ``p_success``, ``uplift`` ``[N, K]``, ``skill_sd`` ``[N]`` and ``V``
    access patterns ``access`` ``[V, N, K]``: the expectation over skill ``s = skill_sd z``, ``z ~ N(0, 1)``
    (16-node Gauss-Hermite) of the sum over the step ``m`` at which the model is lost (module docstring). The
    sigmoids are computed once for all patterns (what the model does too; ``access = 0``: no model, ``1``: the
    model throughout)."""
    p = np.clip(p_success, _GUARD, 1.0 - _GUARD)
    s = skill_sd[:, None] * _NODES  # [N, J]
    logit = special.logit(p).T[:, :, None]  # [K, N, 1]: steps leading, so every step is one contiguous block
    base = special.expit(logit + s)  # [K, N, J]
    aided = special.expit(logit + uplift.T[:, :, None] + s)
    num_steps = base.shape[0]
    after = [np.ones_like(s)]  # after[i] = prod of base over the last i steps (all unaided)
    for k in range(num_steps - 1, -1, -1):
        after.append(after[-1] * base[k])
    g = np.moveaxis(access, -1, 0)[..., None]  # [K, V, N, 1]
    kept = np.ones(
        (access.shape[0], *s.shape)
    )  # [V, N, J]: every step before m succeeded with the model's help
    total = np.zeros_like(kept)
    for m in range(num_steps):  # the model is lost at step m: steps m.. are done unaided
        total += kept * (1.0 - g[m]) * after[num_steps - m]
        kept = kept * g[m] * aided[m]
    return (total + kept) @ _WEIGHTS  # + never lost


def open_fraction(
    family: str, a: np.ndarray, b: np.ndarray, z: np.ndarray, patch_months: np.ndarray, horizon: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(w, truncated)`` ``[N]``: the fraction of ``[0, horizon]`` with a universal jailbreak open, and whether
    the ``C`` drawn windows (standardised draws ``z`` ``[N, C]``, see
    :func:`jaxsafety.uplift.params.standard_gap_draws`) all ended before the horizon. The time after the last
    drawn window counts as open at the process's long-run share ``patch / (E[J] + patch)`` (renewal-reward
    theorem; the model's ``_open_time``), ``E[J] = b Gamma(1 + 1/a)`` (weibull) or ``exp(a + b^2 / 2)``
    (lognormal)."""
    if family == "weibull":  # a: shape, b: scale; z = log E, E ~ Exp(1): gap = b E^(1/a)
        gaps = b[:, None] * np.exp(z) ** (1.0 / a[:, None])
        mean_gap = b * special.gamma(1.0 + 1.0 / a)
    else:  # a: mu, b: sigma of log months; z ~ N(0, 1): gap = exp(a + b z)
        gaps = np.exp(a[:, None] + b[:, None] * z)
        mean_gap = np.exp(a + 0.5 * b * b)
    c = np.arange(z.shape[1])
    found = np.cumsum(gaps, axis=1) + c * patch_months[:, None]
    patched = found + patch_months[:, None]
    inside = np.sum(np.maximum(np.minimum(patched, horizon) - found, 0.0), axis=1)
    tail = patch_months / (mean_gap + patch_months) * np.maximum(horizon - patched[:, -1], 0.0)
    return (inside + tail) / horizon, patched[:, -1] < horizon


def evaluate(d: Mapping[str, np.ndarray], family: str, horizon: float) -> dict[str, np.ndarray]:
    """Every output of :data:`OUTPUTS` ``[N]`` (and ``_truncated``) for one chunk of float64 draws ``d``."""
    pi = access_probability(d["refusal_bypass"], d["give_up"], d["detect"], d["reenter"])
    pi_jb = access_probability(np.ones_like(pi), d["give_up"], d["jailbreak_detect"], d["reenter"])
    q = d["queries"]
    access = np.stack([np.zeros_like(q), np.ones_like(q), pi[:, None] ** q, pi_jb[:, None] ** q])
    s_no_ai, s_none, s_pre, s_jb = attack_success(d["p_success"], d["uplift"], d["skill_sd"], access)
    w, truncated = open_fraction(family, d["jb_a"], d["jb_b"], d["jb_z"], d["patch_months"], horizon)
    s_safe = (1.0 - w) * s_pre + w * s_jb
    scale = d["actors_per_year"] * d["damage_per_success"]
    no_ai, none, safe = scale * s_no_ai, scale * s_none, scale * s_safe
    return {
        "harm.no_ai": no_ai,
        "harm.none": none,
        "harm.safeguarded": safe,
        "uplift.none": none - no_ai,
        "uplift.safeguarded": safe - no_ai,
        "risk_reduction": none - safe,
        "success.no_ai": s_no_ai,
        "success.none": s_none,
        "success.safeguarded": s_safe,
        "access.pre_jailbreak": pi,
        "jailbreak_open": w,
        "_truncated": truncated.astype(np.float64),
    }


class NumpyResult(NamedTuple):
    """``outputs``: :data:`OUTPUTS` -> ``[N]`` float64; ``mean``: their means; ``sensitivity``: input name ->
    central-difference ``d E[target] / d delta`` (``[K]`` for step inputs), None unless asked; ``evaluations``:
    model evaluations of every scenario (``2 P + 1`` with sensitivities); ``truncated``: share of scenarios
    whose drawn windows ended before the horizon."""

    outputs: dict[str, np.ndarray]
    mean: dict[str, float]
    sensitivity: dict[str, np.ndarray] | None
    target: str
    evaluations: int
    truncated: float


def simulate_numpy(
    draws: Mapping[str, np.ndarray],
    *,
    horizon_months: float,
    family: str,
    target: str = "harm.safeguarded",
    sensitivity: bool = True,
    chunk: int = 16384,
    step: float = 1e-6,
) -> NumpyResult:
    """Evaluate every scenario of ``draws`` (:func:`jaxsafety.uplift.params.draw_scenarios`, cast to float64)
    ``chunk`` at a time; with ``sensitivity`` also the central differences ``(E[target](+h) - E[target](-h)) /
    2h`` of the mean target for every scalar shift (each component of a step input separately)."""
    check_choice("family", family, FAMILIES)
    check_choice("target", target, OUTPUTS)
    check_range("chunk", chunk, ge=1, integer=True)
    check_range("step", step, gt=0.0, le=0.1)
    check_range("horizon_months", horizon_months, gt=0.0)
    kinds = input_kinds(family)
    need = sorted(set(kinds) | {"jb_z"})
    missing = [k for k in need if k not in draws]
    if missing:
        raise ConfigError("draws", missing[0], "a dict of draw_scenarios' arrays: " + ", ".join(need))
    n = int(np.shape(draws["actors_per_year"])[0])
    # every scalar shift: (input, component or None)
    shifts = [(k, i) for k in kinds for i in (range(draws[k].shape[1]) if np.ndim(draws[k]) == 2 else [None])]
    outs: dict[str, list[np.ndarray]] = {k: [] for k in (*OUTPUTS, "_truncated")}
    plus = np.zeros(len(shifts))
    minus = np.zeros(len(shifts))
    for lo in range(0, n, chunk):
        d = {k: np.asarray(draws[k][lo : lo + chunk], np.float64) for k in need}
        out = evaluate(d, family, float(horizon_months))
        for k in outs:
            outs[k].append(out[k])
        if not sensitivity:
            continue
        for j, (name, i) in enumerate(shifts):
            for sign, acc in ((1.0, plus), (-1.0, minus)):
                moved = dict(d)
                x = d[name].copy()
                if i is None:
                    x = shift_input(x, sign * step, kinds[name])
                else:
                    x[:, i] = shift_input(x[:, i], sign * step, kinds[name])
                moved[name] = x
                acc[j] += np.sum(evaluate(moved, family, float(horizon_months))[target])
    full = {k: np.concatenate(v) for k, v in outs.items()}
    truncated = float(np.mean(full.pop("_truncated")))
    mean = {k: float(np.mean(v)) for k, v in full.items()}
    sens = None
    if sensitivity:
        grad = (plus - minus) / (2.0 * step * n)
        sens = {}
        for j, (name, i) in enumerate(shifts):
            if i is None:
                sens[name] = np.float64(grad[j])
            else:
                sens.setdefault(name, np.zeros(draws[name].shape[1]))[i] = grad[j]
    evaluations = 2 * len(shifts) + 1 if sensitivity else 1
    return NumpyResult(full, mean, sens, target, evaluations, truncated)
