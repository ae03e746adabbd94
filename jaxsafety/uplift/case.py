"""Safety case as a claims-arguments-evidence tree whose leaves bind to uplift-model outputs.

Clymer et al. 2025, "An example safety case for safeguards against misuse" (arXiv 2505.18003), argue that
safeguards keep misuse risk acceptable by decomposing a top-level claim ("expected annual harm from novice misuse
is below the unacceptable threshold") into sub-claims, each supported by a quantitative estimate from the uplift
model (Sec. 4-5, Fig. 2). This module is that decomposition made checkable:

* a YAML case file is parsed into frozen dataclasses (:class:`SafetyCase`, :class:`Claim`, :class:`Evidence`),
  every bad field raising :class:`~jaxsafety.config.ConfigError` named by its YAML path
  (``claim.children[1].evidence.op``);
* a leaf's :class:`Evidence` names a model output (``outputs[metric]``: Monte Carlo samples over scenarios, shape
  ``[S]``, a scalar ``[]``, or a per-month series ``[S, M]``), a statistic over the scenarios, a comparison and a
  threshold;
* :func:`evaluate_case` computes every leaf and combines children with ``all`` / ``any`` (the argument);
  :func:`format_tree` renders the pass/fail tree for the terminal.

Statistics (reduced over the scenario axis 0):

``mean`` | ``median`` | ``pNN`` (``np.percentile`` at NN in [0, 100], linear interpolation, e.g. ``p95``,
``p99.9``) | ``prob_above:<x>`` (fraction of scenarios with metric > x; its threshold is a probability) | ``max`` |
``min`` | ``max_over_time`` (for ``[S, M]`` series: the largest over months of the mean over scenarios).
A ``[S, M]`` metric needs either ``month: m`` (then it is the ``[S]`` slice ``x[:, m]``) or ``max_over_time``.

Per leaf with samples, besides the statistic (``value``) and ``passed``:

* ``margin`` -- how far the statistic is inside its threshold, signed so that positive means satisfied:
  ``threshold - value`` for ``<``/``<=`` and ``value - threshold`` for ``>``/``>=`` (for strict ops a margin of
  exactly 0 fails). Reported for scalar metrics too.
* ``prob_satisfied`` -- the fraction of scenarios whose own metric satisfies ``op threshold`` (for
  ``max_over_time``: the per-scenario peak over months). A p95 claim can pass while only 95% of scenarios satisfy
  the threshold; this number shows how robust the verdict is to the choice of statistic. Not defined for
  ``prob_above`` (its threshold is a probability, not a metric value) nor for scalar metrics (``None``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from jaxsafety.config import ConfigError, check_choice, first_bad, format_number

__all__ = [
    "OPS",
    "STATISTICS",
    "CaseResult",
    "Claim",
    "ClaimResult",
    "Evidence",
    "SafetyCase",
    "case_from_dict",
    "check_bindings",
    "evaluate_case",
    "format_tree",
    "load_case",
]

OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
STATISTICS = "mean, median, pNN (NN in 0-100, e.g. p95), prob_above:<number>, max, min, max_over_time"
ARGUMENTS = ("all", "any")

_CASE_KEYS = ("title", "model", "scenario", "claim")
_CLAIM_KEYS = ("id", "text", "argument", "children", "evidence")
_EVIDENCE_KEYS = ("metric", "statistic", "op", "threshold", "month", "description")
_PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")


# ----------------------------------------------------------------------------------------------------------------
# data model


@dataclasses.dataclass(frozen=True)
class Evidence:
    """A leaf's binding: ``statistic(outputs[metric][, month]) op threshold``."""

    metric: str
    statistic: str
    op: Literal["<", "<=", ">", ">="]
    threshold: float
    month: int | None = None
    description: str = ""

    def describe(self) -> str:
        """``harm.safeguarded p95`` (with ``[month m]`` for a per-month slice)."""
        month = f"[month {self.month}]" if self.month is not None else ""
        return f"{self.metric}{month} {self.statistic}"


@dataclasses.dataclass(frozen=True)
class Claim:
    """A node of the tree: either ``children`` combined by ``argument`` (all | any), or a leaf with ``evidence``."""

    id: str
    text: str
    argument: Literal["all", "any"] | None = None
    children: tuple[Claim, ...] = ()
    evidence: Evidence | None = None

    def walk(self) -> Iterator[Claim]:
        """This claim and all its descendants, depth first, parents before children."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclasses.dataclass(frozen=True)
class SafetyCase:
    """A parsed case file. ``model`` is the uplift-model parameter file, resolved against the case file's folder."""

    title: str
    claim: Claim
    model: Path | None = None
    scenario: str | None = None
    path: Path | None = None

    def leaves(self) -> list[Claim]:
        """The claims that carry evidence, in tree order."""
        return [c for c in self.claim.walk() if c.evidence is not None]


# ----------------------------------------------------------------------------------------------------------------
# parsing


def _check_keys(data: Any, path: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(path, data, "a mapping with keys " + ", ".join(allowed))
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}" if path else str(key), data[key], "keys " + ", ".join(allowed))


def _string(data: Mapping[str, Any], key: str, path: str, *, required: bool) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}.{key}" if path else key, value, "a non-empty string")
    return value.strip()


def _parse_statistic(value: Any, field: str) -> str:
    """Normalised statistic name; ConfigError naming ``field`` if it is not one of :data:`STATISTICS`."""
    if isinstance(value, str):
        s = value.strip()
        if s in ("mean", "median", "max", "min", "max_over_time"):
            return s
        m = _PERCENTILE.fullmatch(s)
        if m and 0.0 <= float(m.group(1)) <= 100.0:
            return s
        if s.startswith("prob_above:"):
            try:
                x = float(s.split(":", 1)[1])
            except ValueError:
                x = math.nan
            if math.isfinite(x):
                return s
    raise ConfigError(field, value, STATISTICS)


def _parse_number(value: Any, field: str) -> float:
    # PyYAML reads `1e6` (no dot) as the *string* "1e6" (YAML 1.1 float syntax), so numeric strings are accepted.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(field, value, "a finite number")
    return float(value)


def _parse_evidence(data: Any, path: str) -> Evidence:
    _check_keys(data, path, _EVIDENCE_KEYS)
    for key in ("metric", "statistic", "op", "threshold"):
        if key not in data:
            raise ConfigError(
                f"{path}.{key}", None, f"a value (required; evidence keys are {', '.join(_EVIDENCE_KEYS)})"
            )
    metric = _string(data, "metric", path, required=True)
    statistic = _parse_statistic(data["statistic"], f"{path}.statistic")
    check_choice(f"{path}.op", data["op"], tuple(OPS))
    threshold = _parse_number(data["threshold"], f"{path}.threshold")
    if statistic.startswith("prob_above:") and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"{path}.threshold", threshold, "a probability in [0, 1] (statistic is prob_above)")
    month = data.get("month")
    if month is not None and (isinstance(month, bool) or not isinstance(month, int) or month < 0):
        raise ConfigError(f"{path}.month", month, "an integer >= 0 (index into the month axis)")
    if month is not None and statistic == "max_over_time":
        raise ConfigError(
            f"{path}.month", month, "no month with statistic max_over_time (it spans all months)"
        )
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{path}.description", description, "a string")
    return Evidence(metric, statistic, data["op"], threshold, month, description.strip())  # type: ignore[arg-type]


def _parse_claim(data: Any, path: str, seen: dict[str, str]) -> Claim:
    _check_keys(data, path, _CLAIM_KEYS)
    claim_id = _string(data, "id", path, required=True)
    text = _string(data, "text", path, required=True)
    assert claim_id is not None and text is not None
    if claim_id in seen:
        raise ConfigError(f"{path}.id", claim_id, f"an id used only once (already used at {seen[claim_id]})")
    seen[claim_id] = path
    has_children, has_evidence = "children" in data, "evidence" in data
    if has_children == has_evidence:
        raise ConfigError(
            path,
            claim_id,
            "a claim with exactly one of `children` (sub-claims combined by `argument`) or `evidence` (a leaf)"
            f" -- it has {'both' if has_children else 'neither'}",
        )
    if has_evidence:
        if "argument" in data:
            raise ConfigError(f"{path}.argument", data["argument"], "no argument on a leaf (it has evidence)")
        return Claim(claim_id, text, evidence=_parse_evidence(data["evidence"], f"{path}.evidence"))
    argument = data.get("argument", "all")
    check_choice(f"{path}.argument", argument, ARGUMENTS)
    children = data["children"]
    if not isinstance(children, list) or not children:
        raise ConfigError(f"{path}.children", children, "a non-empty list of claims")
    parsed = tuple(_parse_claim(child, f"{path}.children[{i}]", seen) for i, child in enumerate(children))
    return Claim(claim_id, text, argument=argument, children=parsed)


def case_from_dict(
    data: Any, *, base_dir: str | Path | None = None, path: str | Path | None = None
) -> SafetyCase:
    """Parse a case from its YAML data (a mapping). ``model`` is resolved against ``base_dir`` when relative."""
    _check_keys(data, "", _CASE_KEYS)
    title = _string(data, "title", "", required=True)
    if "claim" not in data:
        raise ConfigError("claim", None, "the root claim (a mapping with id, text and children or evidence)")
    claim = _parse_claim(data["claim"], "claim", {})
    model_name = _string(data, "model", "", required=False)
    model = None
    if model_name is not None:
        model = Path(model_name)
        if base_dir is not None and not model.is_absolute():
            model = Path(base_dir) / model
    scenario = _string(data, "scenario", "", required=False)
    assert title is not None
    return SafetyCase(title, claim, model, scenario, Path(path) if path is not None else None)


def load_case(path: str | Path) -> SafetyCase:
    """Read and validate a YAML case file (format: module docstring and ``tests/uplift/test_case.py``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("case", str(path), "the path of an existing YAML case file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError("case", str(path), f"a valid YAML file{where}") from None
    return case_from_dict(data, base_dir=path.parent, path=path)


# ----------------------------------------------------------------------------------------------------------------
# binding and evaluation


def _leaf_paths(claim: Claim, path: str) -> Iterator[tuple[str, Claim]]:
    """``(YAML path, leaf)`` for every evidence-carrying claim below ``claim`` (at ``path``)."""
    if claim.evidence is not None:
        yield path, claim
    for i, child in enumerate(claim.children):
        yield from _leaf_paths(child, f"{path}.children[{i}]")


def check_bindings(case: SafetyCase, outputs: Mapping[str, Any]) -> None:
    """Check, before anything is evaluated, that every leaf's metric exists in ``outputs`` with a usable shape
    (``[]`` or ``[S]``; ``[S, M]`` only with ``month`` < M or ``max_over_time``) and holds no NaN."""
    available = ", ".join(sorted(outputs)) or "(none: the outputs are empty)"
    for path, leaf in _leaf_paths(case.claim, "claim"):
        ev = leaf.evidence
        assert ev is not None
        field = f"{path}.evidence.metric"
        if ev.metric not in outputs:
            raise ConfigError(field, ev.metric, f"a model output: {available}")
        x = np.asarray(outputs[ev.metric])
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise ConfigError(field, ev.metric, f"an output holding real numbers (it has dtype {x.dtype})")
        if x.ndim > 2 or (x.ndim >= 1 and x.shape[0] == 0):
            raise ConfigError(
                field, ev.metric, f"an output of shape [], [S] or [S, M] with S > 0, not {x.shape}"
            )
        if x.ndim == 2:
            if ev.month is None and ev.statistic != "max_over_time":
                raise ConfigError(
                    f"{path}.evidence.month",
                    None,
                    f"a month in 0..{x.shape[1] - 1} or statistic max_over_time ({ev.metric} has shape {x.shape})",
                )
            if ev.month is not None and ev.month >= x.shape[1]:
                raise ConfigError(f"{path}.evidence.month", ev.month, f"a month in 0..{x.shape[1] - 1}")
        else:
            if ev.month is not None:
                raise ConfigError(
                    f"{path}.evidence.month",
                    ev.month,
                    f"no month ({ev.metric} has shape {x.shape}, not [S, M])",
                )
            if ev.statistic == "max_over_time":
                raise ConfigError(
                    f"{path}.evidence.statistic",
                    ev.statistic,
                    f"a statistic other than max_over_time ({ev.metric} has shape {x.shape}, not [S, M])",
                )
        first_bad(f"outputs[{ev.metric!r}]", np.isnan(x), x, "numbers (not NaN)")


def _reduce(statistic: str, x: np.ndarray) -> float:
    """``statistic`` of the samples ``x`` (shape [S], or [S, M] for max_over_time) over axis 0."""
    if statistic == "mean":
        return float(np.mean(x))
    if statistic == "median":
        return float(np.median(x))
    if statistic == "max":
        return float(np.max(x))
    if statistic == "min":
        return float(np.min(x))
    if statistic == "max_over_time":
        return float(np.max(np.mean(x, axis=0)))
    if statistic.startswith("prob_above:"):
        return float(np.mean(x > float(statistic.split(":", 1)[1])))
    return float(np.percentile(x, float(statistic[1:])))


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """Evaluation of one claim. Leaves carry ``value`` and ``margin`` (positive = satisfied with room), and for
    sample metrics ``prob_satisfied`` and ``n_samples``; inner claims only ``passed`` and ``children``."""

    claim: Claim
    passed: bool
    children: tuple[ClaimResult, ...] = ()
    value: float | None = None
    margin: float | None = None
    prob_satisfied: float | None = None
    n_samples: int | None = None

    def walk(self) -> Iterator[ClaimResult]:
        """This result and all below it, parents first."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """The evaluated tree; ``passed`` is the root claim's verdict."""

    case: SafetyCase
    root: ClaimResult

    @property
    def passed(self) -> bool:
        return self.root.passed

    def leaves(self) -> list[ClaimResult]:
        """Results of the evidence-carrying claims, in tree order."""
        return [r for r in self.root.walk() if r.claim.evidence is not None]


def _evaluate_leaf(claim: Claim, outputs: Mapping[str, Any]) -> ClaimResult:
    ev = claim.evidence
    assert ev is not None
    x = np.asarray(outputs[ev.metric], dtype=np.float64)
    if ev.month is not None:
        x = x[:, ev.month]
    compare = OPS[ev.op]
    if x.ndim == 0:  # a scalar output is one sample: every statistic but prob_above is the value itself
        value = _reduce(ev.statistic, x.reshape(1))
        prob, n = None, None
    else:
        value = _reduce(ev.statistic, x)
        n = int(x.shape[0])
        if ev.statistic.startswith("prob_above:"):
            prob = None
        else:
            per_scenario = x.max(axis=1) if x.ndim == 2 else x
            prob = float(np.mean(compare(per_scenario, ev.threshold)))
    margin = ev.threshold - value if ev.op in ("<", "<=") else value - ev.threshold
    return ClaimResult(claim, bool(compare(value, ev.threshold)), (), value, margin, prob, n)


def _evaluate(claim: Claim, outputs: Mapping[str, Any]) -> ClaimResult:
    if claim.evidence is not None:
        return _evaluate_leaf(claim, outputs)
    children = tuple(_evaluate(c, outputs) for c in claim.children)
    combine = all if claim.argument == "all" else any
    return ClaimResult(claim, combine(c.passed for c in children), children)


def evaluate_case(case: SafetyCase, outputs: Mapping[str, Any]) -> CaseResult:
    """Evaluate every claim of ``case`` against the model ``outputs`` (metric name -> samples [S], scalar [] or
    per-month [S, M]); bindings are checked first (:func:`check_bindings`)."""
    check_bindings(case, outputs)
    return CaseResult(case, _evaluate(case.claim, outputs))


def _num(x: float | None) -> str:
    return format_number(x, ".3g")


def format_tree(result: CaseResult, *, indent: str = "  ") -> str:
    """The pass/fail tree, one claim per line (ASCII markers, two-space indent per level), e.g.::

    [FAIL] C0 Expected annual harm is below threshold (all of 2)
      [FAIL] C1 Tail harm is small: harm.safeguarded p95 = 1.3e+06 <= 1e+06 (margin -3e+05, P(sat) 0.82)
    """
    lines = []

    def visit(r: ClaimResult, depth: int) -> None:
        mark = "[PASS]" if r.passed else "[FAIL]"
        c = r.claim
        head = f"{indent * depth}{mark} {c.id} {c.text}"
        ev = c.evidence
        if ev is None:
            lines.append(f"{head} ({c.argument} of {len(c.children)})")
            for child in r.children:
                visit(child, depth + 1)
            return
        detail = f"{ev.describe()} = {_num(r.value)} {ev.op} {_num(ev.threshold)} (margin {_num(r.margin)}"
        if r.prob_satisfied is not None:
            detail += f", P(sat) {r.prob_satisfied:.3g}"
        lines.append(f"{head}: {detail})")

    visit(result.root, 0)
    return "\n".join(lines)
