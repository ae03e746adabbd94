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
``error: <field>=<value> is invalid: accepted values are ...`` to stderr and exits with status 2. The commands
are :func:`jaxsafety.config.run_subcommands` over the configs below (``--config FILE`` and ``--print-config``
work as for every config).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxsafety.config import (
    Subcommand,
    check,
    check_choice,
    check_range,
    format_number,
    option,
    print_table,
    run_subcommands,
)
from jaxsafety.io import check_output_path, write_json_atomic

__all__ = ["CheckConfig", "FitRedteamConfig", "PublishedConfig", "RunConfig", "main"]


def _check_seed(seed: int) -> None:
    check_range("seed", seed, ge=0, integer=True)


# ----------------------------------------------------------------------------------------------------------------
# check


@dataclasses.dataclass(frozen=True)
class CheckConfig:
    """``check``: check a safety case and write its report."""

    case: Path = option(help="the safety case (YAML); its model file is the path under `model:`")
    out: Path = option(Path("reports/uplift_case"), help="folder of the report (created)")
    scenarios: int = option(100_000, help="draws of the uncertain inputs per safeguard scenario")
    swing_scenarios: int = option(20_000, help="draws for the tornado swings")
    seed: int = option(0, help="seed of the draws")
    compare: str = option("no_safeguards", help="comma-separated scenarios to draw beside the case's")

    def __post_init__(self) -> None:
        check_range("scenarios", self.scenarios, ge=2, integer=True)
        check_range("swing_scenarios", self.swing_scenarios, ge=2, integer=True)
        _check_seed(self.seed)
        check(not Path(self.out).is_file(), "out", str(self.out), "a folder path (it is a file)")


def check_cmd(cfg: CheckConfig) -> int:
    """``check``: the case's pass/fail tree and report; exit status 1 when the top claim fails. The case, its
    model file and every metric binding are checked by :func:`~jaxsafety.uplift.check.check_case` before it
    simulates (a :class:`~jaxsafety.config.ConfigError`: status 2)."""
    from jaxsafety.uplift.check import check_case

    report = check_case(
        cfg.case,
        cfg.out,
        num_scenarios=cfg.scenarios,
        swing_scenarios=cfg.swing_scenarios,
        seed=cfg.seed,
        compare=tuple(s for s in cfg.compare.split(",") if s),
    )
    print(report.tree)
    print(f"wrote {report.html}, {report.markdown} and {report.summary}")
    return 0 if report.result.passed else 1


# ----------------------------------------------------------------------------------------------------------------
# run


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """``run``: expected harm, uplift removed and sensitivities of a parameter file."""

    params: Path = option(help="uplift parameter file (.yaml, .yml or .json)")
    output: Path = option(help="JSON file to write (atomically)")
    scenario: str = option("all", help="a scenario name of the file, no_safeguards, or all")
    scenarios: int = option(100_000, help="draws of the uncertain inputs per safeguard scenario")
    seed: int = option(0, help="seed of the draws")

    def __post_init__(self) -> None:
        check_output_path("output", self.output, ".json")
        check_range("scenarios", self.scenarios, ge=2, integer=True)
        _check_seed(self.seed)


def _load_run(cfg: RunConfig) -> tuple[Any, list[str | None]]:
    """The parameter file and the safeguard scenarios to evaluate, each checked."""
    from jaxsafety.uplift.params import load_params

    params = load_params(cfg.params)
    names: list[str | None] = (
        ["no_safeguards", *params.scenarios] if cfg.scenario == "all" else [cfg.scenario or None]
    )
    for name in names:
        params.safeguards_for(name)
    return params, names


def _scenario_row(name: str, mean: dict[str, float]) -> list[str]:
    return [
        name,
        format_number(mean["harm.safeguarded"]),
        format_number(mean["harm.none"]),
        format_number(mean["harm.no_ai"]),
        f"{100 * mean['uplift_removed']:.1f}%",
        f"{100 * mean['jailbreak_open']:.1f}%",
    ]


def run_cmd(cfg: RunConfig, inputs: tuple[Any, list[str | None]]) -> None:
    """``run``: every scenario's expected harm (table and JSON) and the last one's top sensitivities."""
    from jaxsafety.uplift.check import evaluate, sensitivity_rows

    params, names = inputs
    results: dict[str, Any] = {"params": str(cfg.params), "num_scenarios": cfg.scenarios, "seed": cfg.seed}
    rows, per = [], {}
    for name in names:
        last = evaluate(params, scenario=name, num_scenarios=cfg.scenarios, seed=cfg.seed)
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
    sens = sensitivity_rows(last)
    print(f"\ntop sensitivities of expected annual harm ({last.label}):")
    print_table(sens[0], sens[1:9])
    results["scenarios"] = per
    write_json_atomic(cfg.output, results)
    print(f"wrote {cfg.output}")


# ----------------------------------------------------------------------------------------------------------------
# fit-redteam


@dataclasses.dataclass(frozen=True)
class FitRedteamConfig:
    """``fit-redteam``: fit the time to find a universal jailbreak to red-team attempts."""

    input: Path = option(help="CSV with columns time (hours), found (1/0) and optionally weight")
    output: Path = option(help="JSON file to write (atomically)")
    family: str = option("weibull", help="weibull or lognormal")
    bootstrap: int = option(1000, help="bootstrap resamples for 95%% intervals (0: none)")
    seed: int = option(0, help="seed of the bootstrap resamples")

    def __post_init__(self) -> None:
        from jaxsafety.uplift.survival import FAMILIES

        check_output_path("output", self.output, ".json")
        check_choice("family", self.family, FAMILIES)
        check_range("bootstrap", self.bootstrap, ge=0, integer=True)
        _check_seed(self.seed)


def _load_redteam(cfg: FitRedteamConfig) -> Any:
    from jaxsafety.uplift.survival import read_redteam_csv

    return read_redteam_csv(cfg.input)


def fit_redteam_cmd(cfg: FitRedteamConfig, data: Any) -> None:
    """``fit-redteam``: the censored MLE with bootstrap intervals (table and JSON)."""
    from jaxsafety.uplift import survival

    fit = survival.fit_survival(data, cfg.family)
    boot = (
        survival.bootstrap_survival(data, cfg.family, num_resamples=cfg.bootstrap, seed=cfg.seed)
        if cfg.bootstrap
        else None
    )
    summary = survival.summary(fit, boot)
    rows = []
    for name, value in fit.params.items():
        ci = summary["params"][name].get("interval_95") if isinstance(summary["params"][name], dict) else None
        rows.append([name, format_number(value), "-" if not ci else f"[{ci[0]:.4g}, {ci[1]:.4g}]"])
    n_found = int(np.sum(data.found))
    print(f"{cfg.family} fit to {len(data.time)} attempts ({n_found} found a jailbreak, the rest censored)")
    print_table(["parameter", "MLE", "95% bootstrap interval"], rows)
    write_json_atomic(cfg.output, {"input": str(cfg.input), "family": cfg.family, **summary})
    print(f"wrote {cfg.output}")


# ----------------------------------------------------------------------------------------------------------------
# published


@dataclasses.dataclass(frozen=True)
class PublishedConfig:
    """``published``: the published model of Clymer et al. (2025) at its default inputs."""

    output: Path = option(help="JSON file to write (atomically)")
    simulations: int = option(10_000, help="simulations of the deployment projection")
    seed: int = option(0, help="seed of the simulations")

    def __post_init__(self) -> None:
        check_output_path("output", self.output, ".json")
        check_range("simulations", self.simulations, ge=1, integer=True)
        _check_seed(self.seed)


def published_cmd(cfg: PublishedConfig) -> None:
    """``published``: uplift at the published inputs and the deployment projection (table and JSON)."""
    import jax

    from jaxsafety.uplift import published

    inputs = published.PublishedInputs()
    u = published.uplift(inputs)
    proj = published.deployment_projection(jax.random.key(cfg.seed), inputs, cfg.simulations)
    print_table(
        ["quantity", "value (harm / year)"], [[k, format_number(float(v))] for k, v in u._asdict().items()]
    )
    prob = np.asarray(proj.prob_above_threshold)
    print(
        f"deployment projection ({cfg.simulations} simulations, {inputs.deployment_months} months): "
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
    write_json_atomic(cfg.output, out)
    print(f"wrote {cfg.output}")


# ----------------------------------------------------------------------------------------------------------------

COMMANDS = {
    "check": Subcommand(CheckConfig, check_cmd, help="check a safety case and write its report"),
    "run": Subcommand(
        RunConfig,
        run_cmd,
        load=_load_run,
        help="expected harm, uplift removed and sensitivities of a parameter file",
    ),
    "fit-redteam": Subcommand(
        FitRedteamConfig,
        fit_redteam_cmd,
        load=_load_redteam,
        help="fit the time to find a universal jailbreak to red-team attempts",
    ),
    "published": Subcommand(
        PublishedConfig,
        published_cmd,
        help="the published model of Clymer et al. (2025) at its default inputs",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok / case holds, 1 case fails, 2 bad input)."""
    from jaxsafety.xla_flags import apply_cpu_workarounds

    # the model's reverse pass is ~7x slower with XLA:CPU's YNNPACK reduction fusions (no effect once jax has
    # started its backend, e.g. when main() is called from a test)
    apply_cpu_workarounds(no_ynn=True)
    return run_subcommands("python -m jaxsafety.uplift", COMMANDS, argv, description=__doc__.split("\n\n")[0])
