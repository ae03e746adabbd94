"""``python -m jaxsafety.uplift``: the misuse-uplift model, red-team fits and safety-case checks.

::

    python -m jaxsafety.uplift check --case case.yaml [--out reports/case] [--scenarios 100000]
        [--swing-scenarios 20000] [--seed 0] [--compare no_safeguards,refusal_only]
    python -m jaxsafety.uplift run --params params.yaml --output result.json [--scenario NAME|all]
        [--scenarios 100000] [--seed 0]
    python -m jaxsafety.uplift fit-redteam --input attempts.csv --output fit.json [--family weibull|lognormal]
        [--bootstrap 1000] [--seed 0]
    python -m jaxsafety.uplift published --output published.json [--simulations 10000] [--seed 0]

``check`` evaluates a claims-arguments-evidence case (:mod:`jaxsafety.uplift.case`) against the model file it
names, prints the pass/fail tree and writes ``report.html``, ``report.md``, ``check.json`` and the figures into
``--out``; it exits with status 1 when the top claim fails (so CI can gate a deployment on it), 0 when it holds.
``run`` prints expected annual harm with and without safeguards, the share of the uplift removed and the top
sensitivities for one or all scenarios of a parameter file. ``fit-redteam`` fits the time to find a universal
jailbreak to right-censored red-team attempts (:mod:`jaxsafety.uplift.survival`) with bootstrap intervals.
``published`` evaluates the published model of Clymer et al. (2025) (:mod:`jaxsafety.uplift.published`).

Every argument and input file is checked before anything is computed or written: a bad value prints one line
``error: <field>=<value> is invalid: accepted values are ...`` to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxsafety.config import (
    ConfigError,
    check_choice,
    check_range,
    format_number,
    print_table,
)
from jaxsafety.io import check_output_path

__all__ = ["main"]


def _cmd_check(args: argparse.Namespace) -> int:
    from jaxsafety.uplift.check import check_case

    compare = tuple(s for s in (args.compare or "").split(",") if s)
    report = check_case(
        args.case,
        args.out,
        num_scenarios=args.scenarios,
        swing_scenarios=args.swing_scenarios,
        seed=args.seed,
        compare=compare,
    )
    print(report.tree)
    print(f"wrote {report.html}, {report.markdown} and {report.summary}")
    return 0 if report.result.passed else 1


def _scenario_row(name: str, mean: dict[str, float]) -> list[str]:
    return [
        name,
        format_number(mean["harm.safeguarded"]),
        format_number(mean["harm.none"]),
        format_number(mean["harm.no_ai"]),
        f"{100 * mean['uplift_removed']:.1f}%",
        f"{100 * mean['jailbreak_open']:.1f}%",
    ]


def _cmd_run(args: argparse.Namespace) -> int:
    from jaxsafety.io import write_json_atomic
    from jaxsafety.uplift.check import evaluate, sensitivity_rows
    from jaxsafety.uplift.params import load_params

    check_output_path("output", args.output, ".json")
    check_range("scenarios", args.scenarios, ge=2, integer=True)
    params = load_params(args.params)
    names: list[str | None] = (
        ["no_safeguards", *params.scenarios] if args.scenario == "all" else [args.scenario or None]
    )
    for name in names:
        params.safeguards_for(name)
    results: dict[str, Any] = {"params": str(args.params), "num_scenarios": args.scenarios, "seed": args.seed}
    rows, per = [], {}
    last = None
    for name in names:
        last = evaluate(params, scenario=name, num_scenarios=args.scenarios, seed=args.seed)
        harm = last.result.outputs["harm.safeguarded"]
        per[last.label] = {
            "mean": last.result.mean,
            "harm_safeguarded_interval_90": np.percentile(harm, [5, 95]).tolist(),
            "truncated": last.result.truncated,
            "sensitivity": {k: np.asarray(v).tolist() for k, v in (last.result.sensitivity or {}).items()},
        }
        rows.append(_scenario_row(last.label, last.result.mean))
    print_table(
        ["scenario", "E[harm]/yr", "no safeguards", "no AI", "uplift removed", "jailbreak open"], rows
    )
    assert last is not None
    sens = sensitivity_rows(last)
    print(f"\ntop sensitivities of expected annual harm ({last.label}):")
    print_table(sens[0], sens[1:9])
    results["scenarios"] = per
    write_json_atomic(args.output, results)
    print(f"wrote {args.output}")
    return 0


def _cmd_fit_redteam(args: argparse.Namespace) -> int:
    from jaxsafety.io import write_json_atomic
    from jaxsafety.uplift import survival

    check_output_path("output", args.output, ".json")
    check_choice("family", args.family, survival.FAMILIES)
    check_range("bootstrap", args.bootstrap, ge=0, integer=True)
    data = survival.read_redteam_csv(args.input)
    fit = survival.fit_survival(data, args.family)
    boot = (
        survival.bootstrap_survival(data, args.family, num_resamples=args.bootstrap, seed=args.seed)
        if args.bootstrap
        else None
    )
    summary = survival.summary(fit, boot)
    rows = []
    for name, value in fit.params.items():
        ci = summary["params"][name].get("interval_95") if isinstance(summary["params"][name], dict) else None
        rows.append([name, format_number(value), "-" if not ci else f"[{ci[0]:.4g}, {ci[1]:.4g}]"])
    n_found = int(np.sum(data.found))
    print(f"{args.family} fit to {len(data.time)} attempts ({n_found} found a jailbreak, the rest censored)")
    print_table(["parameter", "MLE", "95% bootstrap interval"], rows)
    write_json_atomic(args.output, {"input": str(args.input), "family": args.family, **summary})
    print(f"wrote {args.output}")
    return 0


def _cmd_published(args: argparse.Namespace) -> int:
    import jax

    from jaxsafety.io import write_json_atomic
    from jaxsafety.uplift import published

    check_output_path("output", args.output, ".json")
    check_range("simulations", args.simulations, ge=1, integer=True)
    inputs = published.PublishedInputs()
    u = published.uplift(inputs)
    proj = published.deployment_projection(jax.random.key(args.seed), inputs, args.simulations)
    rows = [[k, format_number(float(v))] for k, v in u._asdict().items()]
    print_table(["quantity", "value (harm / year)"], rows)
    prob = np.asarray(proj.prob_above_threshold)
    print(
        f"deployment projection ({args.simulations} simulations, {inputs.deployment_months} months): "
        f"largest monthly P(uplift > threshold {inputs.risk_threshold:g}) = {prob.max():.3f}"
    )
    out = {
        "inputs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(inputs).items()},
        "uplift": {k: float(v) for k, v in u._asdict().items()},
        "projection": {
            "uplift_mean": np.asarray(proj.uplift_mean).tolist(),
            "uplift_lower": np.asarray(proj.uplift_lower).tolist(),
            "uplift_upper": np.asarray(proj.uplift_upper).tolist(),
            "prob_above_threshold": prob.tolist(),
            "mean_first_crossing": float(np.asarray(proj.mean_first_crossing)),
        },
    }
    write_json_atomic(args.output, out)
    print(f"wrote {args.output}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jaxsafety.uplift", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check a safety case and write its report")
    c.add_argument("--case", required=True)
    c.add_argument("--out", default="reports/uplift_case")
    c.add_argument("--scenarios", type=int, default=100_000)
    c.add_argument("--swing-scenarios", type=int, default=20_000)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument(
        "--compare", default="no_safeguards", help="comma-separated scenarios to draw beside the case's"
    )
    c.set_defaults(run=_cmd_check)
    r = sub.add_parser("run", help="expected harm, uplift removed and sensitivities of a parameter file")
    r.add_argument("--params", required=True)
    r.add_argument("--output", required=True)
    r.add_argument("--scenario", default="all", help="a scenario name of the file, no_safeguards, or all")
    r.add_argument("--scenarios", type=int, default=100_000)
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(run=_cmd_run)
    f = sub.add_parser("fit-redteam", help="fit the time to find a universal jailbreak to red-team attempts")
    f.add_argument("--input", required=True)
    f.add_argument("--output", required=True)
    f.add_argument("--family", default="weibull")
    f.add_argument("--bootstrap", type=int, default=1000)
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(run=_cmd_fit_redteam)
    q = sub.add_parser("published", help="the published model of Clymer et al. (2025) at its default inputs")
    q.add_argument("--output", required=True)
    q.add_argument("--simulations", type=int, default=10_000)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(run=_cmd_published)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok / case holds, 1 case fails, 2 bad input)."""
    from jaxsafety.xla_flags import apply_cpu_workarounds

    # the model's reverse pass is ~7x slower with XLA:CPU's YNNPACK reduction fusions (no effect once jax has
    # started its backend, e.g. when main() is called from a test)
    apply_cpu_workarounds(no_ynn=True)
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
