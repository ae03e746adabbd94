"""Quantitative misuse-uplift modelling and misuse-safeguards safety cases.

Clymer, Weinbaum, Kirk, Mai, Zhang, Davies (2025), "An example safety case for safeguards against misuse"
(arXiv 2505.18003): red-teaming results feed an uplift model that estimates how much safeguards reduce the harm
a model's help to novice attackers could cause, and a claims-arguments-evidence case is re-checked as the evidence
changes.

- :mod:`~jaxsafety.uplift.published`: the paper's model (``R(A) = a D integral p_A(t) f_T(t) dt``, the delay
  relation of safeguards, Fritsch-Carlson curves in log-time, the deployment projection), jitted;
- :mod:`~jaxsafety.uplift.params`: uncertain inputs (point / lognormal / beta / normal / logit-normal / uniform)
  read from a YAML / JSON file, scenarios of safeguards, numpy scenario draws;
- :mod:`~jaxsafety.uplift.model`: the generalised model (attack pathway with per-step uplift, refusals, bans and
  re-entry, universal jailbreaks found and patched over time), exact per scenario, jitted Monte Carlo over
  scenarios with autodiff sensitivities and tornado swings;
- :mod:`~jaxsafety.uplift.survival`: time to find a universal jailbreak from right-censored red-team attempts
  (Weibull / lognormal MLE, vmapped bootstrap);
- :mod:`~jaxsafety.uplift.case`, :mod:`~jaxsafety.uplift.report`, :mod:`~jaxsafety.uplift.check`: the safety
  case as a YAML tree bound to model outputs, its pass/fail evaluation and HTML / Markdown report.

CLI: ``python -m jaxsafety.uplift check | run | fit-redteam | published`` (:mod:`~jaxsafety.uplift.cli`). On CPU,
run the model with ``jaxsafety.xla_flags.apply_cpu_workarounds(no_ynn=True)`` set before JAX starts (the CLI and the
experiment do): XLA:CPU's YNNPACK reduction fusions make its reverse pass several times slower.
"""

from jaxsafety.uplift.case import SafetyCase, evaluate_case, format_tree, load_case
from jaxsafety.uplift.check import check_case, evaluate
from jaxsafety.uplift.model import OUTPUTS, SimulationResult, harm_over_time, simulate, swing_analysis
from jaxsafety.uplift.params import DATA_DIR, ModelParams, draw_scenarios, load_params, parse_params
from jaxsafety.uplift.survival import RedTeamData, bootstrap_survival, fit_survival, read_redteam_csv

__all__ = [
    "DATA_DIR",
    "OUTPUTS",
    "ModelParams",
    "RedTeamData",
    "SafetyCase",
    "SimulationResult",
    "bootstrap_survival",
    "check_case",
    "draw_scenarios",
    "evaluate",
    "evaluate_case",
    "fit_survival",
    "format_tree",
    "harm_over_time",
    "load_case",
    "load_params",
    "parse_params",
    "read_redteam_csv",
    "simulate",
    "swing_analysis",
]
