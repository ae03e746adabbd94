"""Evaluate a parameter file and check a safety case against it: the pipeline behind
``python -m jaxsafety.uplift check`` and ``experiments/misuse_safety_case.py``.

:func:`evaluate` draws and simulates one scenario (one set of safeguards) of a parameter file and collects the
per-scenario outputs a case can bind to (:func:`case_outputs`); :func:`check_case` loads a case, evaluates the model
it names, checks every claim, draws the tornado, harm-distribution and risk-over-time figures and writes the
HTML / Markdown report and a JSON summary. Everything is validated (the case, its model file, every metric binding)
before anything is simulated or written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxsafety.config import ConfigError, format_number
from jaxsafety.io import write_json_atomic
from jaxsafety.uplift import model as M
from jaxsafety.uplift.case import (
    CaseResult,
    SafetyCase,
    check_bindings,
    evaluate_case,
    format_tree,
    load_case,
)
from jaxsafety.uplift.params import ModelParams, Scenarios, draw_scenarios, load_params
from jaxsafety.uplift.report import plot_distributions, plot_over_time, plot_tornado, write_report

__all__ = [
    "CheckReport",
    "Evaluation",
    "case_outputs",
    "check_case",
    "evaluate",
    "metric_names",
    "sensitivity_rows",
    "summary_rows",
]


@dataclasses.dataclass
class Evaluation:
    """One scenario of a parameter file, simulated: the draws, :class:`~jaxsafety.uplift.model.SimulationResult`
    (with sensitivities), month-by-month harm ``[S, M]`` and one realised year of harm per scenario."""

    params: ModelParams
    scenario: str | None
    draws: Scenarios
    result: M.SimulationResult
    over_time: dict[str, np.ndarray]
    realised: np.ndarray

    @property
    def label(self) -> str:
        return self.scenario or "base"


def evaluate(
    params: ModelParams, *, scenario: str | None, num_scenarios: int, seed: int, sensitivity: bool = True
) -> Evaluation:
    """Draw ``num_scenarios`` scenarios of ``params`` under ``scenario``'s safeguards and simulate them."""
    draws = draw_scenarios(params, num_scenarios, seed=seed, scenario=scenario)
    family, horizon = params.jailbreak.family, params.horizon_months
    result = M.simulate(draws, horizon_months=horizon, family=family, sensitivity=sensitivity)
    over_time = M.harm_over_time(draws, horizon_months=horizon, family=family)
    gsd = params.scalars["damage_gsd"].a
    realised = M.realised_annual_harm(result.outputs["success.safeguarded"], draws, seed=seed, damage_gsd=gsd)
    return Evaluation(params, scenario, draws, result, over_time, realised)


def case_outputs(ev: Evaluation) -> dict[str, np.ndarray]:
    """Every metric a case can bind to: the per-scenario :data:`~jaxsafety.uplift.model.OUTPUTS` ``[S]``,
    ``realised_harm.safeguarded`` ``[S]``, ``harm_per_month.safeguarded`` and ``jailbreak_open_per_month``
    ``[S, M]``, and the scalars ``uplift_removed`` and ``renewal_truncated``."""
    out = dict(ev.result.outputs)
    out["realised_harm.safeguarded"] = ev.realised
    out["harm_per_month.safeguarded"] = ev.over_time["harm"]
    out["jailbreak_open_per_month"] = ev.over_time["jailbreak_open"]
    out["uplift_removed"] = np.asarray(ev.result.mean["uplift_removed"])
    out["renewal_truncated"] = np.asarray(ev.result.truncated)
    return out


def metric_names() -> list[str]:
    """The names :func:`case_outputs` provides (for error messages before anything runs)."""
    return [*M.OUTPUTS, "realised_harm.safeguarded", "harm_per_month.safeguarded", "jailbreak_open_per_month",
            "uplift_removed", "renewal_truncated"]  # fmt: skip


@dataclasses.dataclass
class CheckReport:
    """What :func:`check_case` produced."""

    case: SafetyCase
    result: CaseResult
    evaluation: Evaluation
    others: list[Evaluation]  # the ``compare`` scenarios, without sensitivities
    swings: list[M.Swing]
    tree: str
    html: Path
    markdown: Path
    summary: Path


def summary_rows(evs: list[Evaluation]) -> list[list[str]]:
    rows = [["scenario", "E[harm]/yr", "MC s.e.", "p5", "p95", "uplift removed", "jailbreak open"]]
    for ev in evs:
        h = ev.result.outputs["harm.safeguarded"]
        p5, p95 = np.percentile(h, [5, 95])
        se = format_number(ev.result.stderr["harm.safeguarded"], ".2g")
        open_ = "-" if ev.scenario == "no_safeguards" else f"{100 * ev.result.mean['jailbreak_open']:.1f}%"
        rows.append([ev.label, format_number(float(h.mean())), se, format_number(p5), format_number(p95),
                     f"{round(100 * ev.result.mean['uplift_removed'], 1) + 0.0:.1f}%", open_])  # fmt: skip
    return rows


def sensitivity_rows(ev: Evaluation) -> list[list[str]]:
    """The autodiff sensitivities as table rows, largest effect first: ``d E[harm] / d delta`` relative to
    ``E[harm]`` (an elasticity for positive inputs, per +1 log-odds for probabilities, per unit for real ones)."""
    sens, mean = ev.result.sensitivity or {}, ev.result.mean[ev.result.target]
    family = ev.params.jailbreak.family
    kinds = M.sensitivity_kinds(family)
    rows = []
    for k, g in sens.items():
        for c, v in enumerate(np.atleast_1d(g)):
            name = M.input_label(k, c if np.ndim(g) else None, family, ev.params.step_names)
            rows.append((abs(v), [name, kinds[k], format_number(float(v)), format_number(float(v) / mean)]))
    rows.sort(key=lambda r: -r[0])
    return [["input", "kind", "dE[harm]/d delta", "relative"], *(r for _, r in rows)]


def check_case(
    case_path: str | Path,
    out_dir: str | Path,
    *,
    num_scenarios: int = 100_000,
    swing_scenarios: int = 20_000,
    seed: int = 0,
    compare: tuple[str, ...] = (),
) -> CheckReport:
    """Check ``case_path``: evaluate its model file (``model:``) under its ``scenario:``, bind every leaf, write
    ``report.html``, ``report.md``, ``check.json`` and the figures into ``out_dir``. ``compare`` names other
    scenarios of the same file to draw beside it (their distributions and risk over time)."""
    case = load_case(case_path)
    if case.model is None:
        raise ConfigError("model", None, "the path of the uplift parameter file in the case (key `model:`)")
    params = load_params(case.model)
    params.safeguards_for(case.scenario)  # an unknown scenario fails here, before anything runs
    for name in compare:
        params.safeguards_for(name)
    for field, n in (("num_scenarios", num_scenarios), ("swing_scenarios", swing_scenarios)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ConfigError(field, n, "an integer >= 2")
    placeholder = {name: np.zeros((2, 2) if "per_month" in name else 2) for name in metric_names()}
    for name in ("uplift_removed", "renewal_truncated"):
        placeholder[name] = np.asarray(0.0)
    check_bindings(case, placeholder)  # metric names and shapes, before simulating

    ev = evaluate(params, scenario=case.scenario, num_scenarios=num_scenarios, seed=seed)
    result = evaluate_case(case, case_outputs(ev))
    others = [
        evaluate(params, scenario=s, num_scenarios=num_scenarios, seed=seed, sensitivity=False)
        for s in compare
    ]
    swing_draws = Scenarios({k: v[:swing_scenarios] for k, v in ev.draws.items()})
    swings = M.swing_analysis(
        swing_draws,
        horizon_months=params.horizon_months,
        family=params.jailbreak.family,
        step_names=params.step_names,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threshold = next((leaf.claim.evidence.threshold for leaf in result.leaves()
                      if leaf.claim.evidence.metric == "harm.safeguarded"), None)  # fmt: skip
    figures = {
        "Tornado: expected annual harm with each input at its 10th / 90th percentile": plot_tornado(
            [s.name for s in swings], [s.low for s in swings], [s.high for s in swings], swings[0].base if swings
            else ev.result.mean["harm.safeguarded"], out_dir / "tornado.png", xlabel="expected annual harm",
        ),
        "Expected annual harm across scenarios": plot_distributions(
            {"no AI": ev.result.outputs["harm.no_ai"],
             **({} if "no_safeguards" in compare else {"no safeguards": ev.result.outputs["harm.none"]}),
             **{o.label: o.result.outputs["harm.safeguarded"] for o in others},
             ev.label: ev.result.outputs["harm.safeguarded"]},
            out_dir / "harm_distributions.png", threshold=threshold, xlabel="expected annual harm",
        ),
        "Expected harm per month over the deployment": plot_over_time(
            {**{o.label: o.over_time["harm"] for o in others}, ev.label: ev.over_time["harm"]},
            out_dir / "harm_over_time.png", ylabel="expected harm per month", band_for=(ev.label,),
        ),
    }  # fmt: skip
    tables = {
        "Scenarios": summary_rows([*others, ev]),
        "Autodiff sensitivities of expected annual harm": sensitivity_rows(ev)[:16],
    }
    html, md = write_report(result, out_dir, figures=figures, tables=tables, title=case.title)
    summary = {
        "case": str(case_path),
        "model": str(case.model),
        "scenario": case.scenario,
        "passed": result.passed,
        "num_scenarios": num_scenarios,
        "seed": seed,
        "claims": [
            {"id": leaf.claim.id, "passed": leaf.passed, "value": leaf.value, "margin": leaf.margin,
             "prob_satisfied": leaf.prob_satisfied} for leaf in result.leaves()
        ],
        "mean": ev.result.mean,
        "stderr": ev.result.stderr,
        "scenarios": {o.label: o.result.mean for o in others},
        "truncated": ev.result.truncated,
        "sensitivity": {k: np.asarray(v).tolist() for k, v in (ev.result.sensitivity or {}).items()},
        "swing": [s._asdict() for s in swings],
    }  # fmt: skip
    path = write_json_atomic(out_dir / "check.json", summary)
    return CheckReport(case, result, ev, others, swings, format_tree(result), html, md, path)
