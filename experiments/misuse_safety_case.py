"""A misuse-safeguards safety case checked with a quantitative uplift model (Clymer, Weinbaum, Kirk, Mai, Zhang,
Davies 2025, "An example safety case for safeguards against misuse", arXiv 2505.18003), on :mod:`jaxsafety.uplift`.

1. **Published model** (:mod:`jaxsafety.uplift.published`): expected annual harm with no model, with the model
   before and after safeguards, and the 96-month deployment projection (a universal jailbreak at a random time,
   a grace period, risk against the threshold). Its inputs are ILLUSTRATIVE: the paper's own numbers were not
   available offline (see that module).
2. **Generalised model** (:mod:`jaxsafety.uplift.model`) on the example parameter file
   (``jaxsafety/uplift/data/example_params.yaml``, every number ILLUSTRATIVE, the jailbreak-discovery time fitted to
   the example red-team CSV with its bootstrap carried into the scenarios), under four safeguard scenarios: none,
   refusal training only, + monitoring and bans, + rapid response (the case's own scenario). Expected annual
   harm per scenario with 90% intervals over the uncertain inputs, the share of the model's uplift removed, and
   the autodiff sensitivities and tornado (10th / 90th percentile swings) of the full safeguard stack.
3. **Safety case** (``jaxsafety/uplift/data/example_case.yaml``): every claim checked against the model's outputs;
   ``report.html`` / ``report.md`` with the pass/fail tree, the tornado plot, harm distributions and risk over time.

    python experiments/misuse_safety_case.py --smoke     # < 1 min on CPU
    python experiments/misuse_safety_case.py             # 200k scenarios per safeguard scenario
    tensorboard --logdir runs

Writes ``runs/misuse_safety_case/<run>/``: TensorBoard scalars per scenario index (``harm/*``,
``uplift_removed``, ``jailbreak_open``), ``results.json``, ``scenario_harm.png`` (the headline figure: expected
annual harm by safeguard scenario), ``published_projection.png`` and ``report/`` (the case report and its figures).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxsafety.config import check_range, parse_cli, print_table
from jaxsafety.train import progress
from jaxsafety.train.experiment import Run, start_run
from jaxsafety.uplift.params import DATA_DIR
from jaxsafety.xla_flags import apply_cpu_workarounds, enable_compilation_cache, prefer_fast_compile

# before jax starts its backend: YNNPACK's reduction fusions make the model's reverse pass ~7x slower on CPU
apply_cpu_workarounds(no_ynn=True)

SCENARIOS = ("no_safeguards", "refusal_only", "monitoring")  # drawn beside the case's own scenario


@dataclasses.dataclass(frozen=True)
class MisuseSafetyCaseConfig:
    """See the module docstring."""

    run_name: str | None = None
    out_dir: str = "runs"
    seed: int = 0
    case: str = str(DATA_DIR / "example_case.yaml")  # names its parameter file and scenario
    num_scenarios: int = 200_000  # Monte Carlo draws of the uncertain inputs, per safeguard scenario
    swing_scenarios: int = 20_000  # draws per tornado evaluation (2 per varying input)
    published_simulations: int = 20_000  # deployments simulated by the published model's projection

    def __post_init__(self) -> None:
        check_range("num_scenarios", self.num_scenarios, ge=100, integer=True)
        check_range("swing_scenarios", self.swing_scenarios, ge=100, le=self.num_scenarios, integer=True)
        check_range("published_simulations", self.published_simulations, ge=10, integer=True)


SMOKE = dict(num_scenarios=20_000, swing_scenarios=2_000, published_simulations=2_000)


def parse_args(argv: list[str]) -> MisuseSafetyCaseConfig:
    base = MisuseSafetyCaseConfig()
    presets = {"smoke": dataclasses.replace(base, **SMOKE)}
    return parse_cli(MisuseSafetyCaseConfig, argv, presets=presets, description=__doc__.splitlines()[0])


def published_study(run: Run, cfg: MisuseSafetyCaseConfig) -> dict[str, Any]:
    """The published model at its (illustrative) defaults: the integrals and the deployment projection."""
    import jax

    from jaxsafety.uplift import published

    inputs = published.PublishedInputs()
    u = {k: float(v) for k, v in published.uplift(inputs)._asdict().items()}
    proj = published.deployment_projection(jax.random.key(cfg.seed), inputs, cfg.published_simulations)
    months = np.arange(1, inputs.deployment_months + 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(months, np.asarray(proj.uplift_mean), label="mean uplift (harm / year)")
    ax.fill_between(months, np.asarray(proj.uplift_lower), np.asarray(proj.uplift_upper), alpha=0.2,
                    label=f"{100 * inputs.interval:.0f}% interval over deployments")  # fmt: skip
    ax.axhline(
        inputs.risk_threshold, color="r", ls="--", label=f"unacceptable risk {inputs.risk_threshold:g}"
    )
    ax.set_xlabel("month of deployment")
    ax.set_ylabel("uplift (expected harm / year)")
    ax.set_title("Published uplift model: deployment projection (illustrative inputs)")
    ax.legend(fontsize="small")
    run.save_figure(fig, "published_projection")
    plt.close(fig)
    prob = np.asarray(proj.prob_above_threshold)
    return {
        "uplift": u,
        "threshold": inputs.risk_threshold,
        "max_prob_above_threshold": float(prob.max()),
        "mean_first_crossing": float(np.asarray(proj.mean_first_crossing)),
        "uplift_mean_by_month": np.asarray(proj.uplift_mean).tolist(),
    }


def scenario_figure(run: Run, evs: list, threshold: float | None) -> None:
    """The headline: expected annual harm (mean and 90% interval over the uncertain inputs) per scenario."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    labels = [ev.label for ev in evs]
    harm = [ev.result.outputs["harm.safeguarded"] for ev in evs]
    means = np.asarray([h.mean() for h in harm])
    lo, hi = np.asarray([np.percentile(h, [5, 95]) for h in harm]).T
    x = np.arange(len(evs))
    ax.bar(x, means, color="tab:blue", alpha=0.7, label="mean over scenarios")
    ax.errorbar(x, np.maximum(means, 1e-12), yerr=[means - lo, hi - means], fmt="none", ecolor="k", capsize=4,
                label="5th-95th percentile")  # fmt: skip
    no_ai = evs[0].result.mean["harm.no_ai"]
    ax.axhline(no_ai, color="gray", ls=":", label=f"no AI model ({no_ai:.3g})")
    if threshold is not None:
        ax.axhline(threshold, color="r", ls="--", label=f"case threshold ({threshold:g})")
    ax.set_xticks(x, [s.replace("_", " ") for s in labels])
    ax.set_yscale("log")
    ax.set_ylabel("expected annual harm")
    ax.set_title("Expected annual harm from novice misuse by safeguards (illustrative inputs)")
    ax.legend(fontsize="small")
    run.save_figure(fig, "scenario_harm")
    plt.close(fig)


def main(cfg: MisuseSafetyCaseConfig) -> dict[str, Any]:
    from jaxsafety.uplift.case import load_case
    from jaxsafety.uplift.check import check_case, sensitivity_rows, summary_rows

    t_start = time.time()
    enable_compilation_cache()
    case = load_case(cfg.case)  # validated before the run directory exists
    run = start_run("misuse_safety_case", cfg, run_name=cfg.run_name, root=cfg.out_dir)
    print(
        f"[misuse_safety_case] case {cfg.case} ({case.scenario}), {cfg.num_scenarios} scenarios", flush=True
    )
    with run:
        steps = progress(total=3, desc="published model, case check, figures")
        published = published_study(run, cfg)
        steps.update()
        report = check_case(
            cfg.case, run.dir / "report", num_scenarios=cfg.num_scenarios, swing_scenarios=cfg.swing_scenarios,
            seed=cfg.seed, compare=SCENARIOS,
        )  # fmt: skip
        steps.update()
        evs = [*report.others, report.evaluation]
        for i, ev in enumerate(evs):
            m = ev.result.mean
            run.tracker.scalars(
                {"harm/safeguarded": m["harm.safeguarded"], "harm/no_safeguards": m["harm.none"],
                 "harm/no_ai": m["harm.no_ai"], "uplift_removed": m["uplift_removed"],
                 "jailbreak_open": m["jailbreak_open"]}, i,
            )  # fmt: skip
        threshold = next((leaf.claim.evidence.threshold for leaf in report.result.leaves()
                          if leaf.claim.evidence.metric == "harm.safeguarded"
                          and leaf.claim.evidence.statistic == "mean"), None)  # fmt: skip
        scenario_figure(run, evs, threshold)
        steps.update()
        steps.close()

        rows = summary_rows(evs)
        print_table(rows[0], rows[1:])
        sens = sensitivity_rows(report.evaluation)
        print(f"\ntop autodiff sensitivities ({report.evaluation.label}):")
        print_table(sens[0], sens[1:9])
        print("\n" + report.tree, flush=True)
        scenarios = {}
        for ev in evs:
            h = ev.result.outputs["harm.safeguarded"]
            scenarios[ev.label] = {
                "mean": ev.result.mean,
                "stderr": ev.result.stderr,
                "harm_safeguarded_interval_90": np.percentile(h, [5, 95]).tolist(),
                "truncated": ev.result.truncated,
            }
        head = scenarios[report.evaluation.label]
        headline = {
            "scenario": report.evaluation.label,
            "harm_safeguarded_mean": head["mean"]["harm.safeguarded"],
            "harm_safeguarded_stderr": head["stderr"]["harm.safeguarded"],
            "harm_safeguarded_interval_90": head["harm_safeguarded_interval_90"],
            "harm_no_safeguards_mean": head["mean"]["harm.none"],
            "harm_no_ai_mean": head["mean"]["harm.no_ai"],
            "uplift_removed": head["mean"]["uplift_removed"],
            "case_passed": report.result.passed,
        }
        results: dict[str, Any] = {
            "experiment": "misuse_safety_case",
            "run": run.name,
            "headline": headline,
            "scenarios": scenarios,
            "claims": [
                {"id": leaf.claim.id, "passed": leaf.passed, "value": leaf.value}
                for leaf in report.result.leaves()
            ],
            "sensitivity": [dict(zip(sens[0], r, strict=True)) for r in sens[1:]],
            "swing": [s._asdict() for s in report.swings],
            "published": published,
            "report": {"html": str(report.html), "markdown": str(report.markdown)},
        }
        print(
            f"[misuse_safety_case] {headline['scenario']}: expected annual harm {headline['harm_safeguarded_mean']:.4g}"
            f" (90% interval {head['harm_safeguarded_interval_90'][0]:.3g}-{head['harm_safeguarded_interval_90'][1]:.3g})"
            f" vs {headline['harm_no_safeguards_mean']:.4g} without safeguards and {headline['harm_no_ai_mean']:.4g}"
            f" without the model: {100 * headline['uplift_removed']:.1f}% of the uplift removed; case "
            f"{'holds' if report.result.passed else 'FAILS'}",
            flush=True,
        )
        run.finish(results, t_start)
    return results


if __name__ == "__main__":
    config = parse_args(sys.argv[1:])
    if "--smoke" in sys.argv[1:]:
        prefer_fast_compile()  # smoke sizes are compile-bound (the backend has not started yet)
    main(config)
    sys.exit(0)
