"""Inference-compute scaling (Schaeffer et al. 2025, "How Do Large Language Monkeys Get Their Power (Laws)?",
arXiv 2502.17578): per-problem failure falls exponentially in the number of attempts k, the aggregate
``-log pass@k`` follows a power law, and fitting the distribution of single-attempt success probabilities
estimates its exponent with far less inference compute than fitting the aggregate curve.

(a) **Synthetic populations** with known ``p_i ~ scale * Beta(alpha, beta)``: the per-problem exponentials and the
    aggregate power law (exact curves and one simulated population), then the exponent's relative error against
    the sampling budget (attempts per problem) for the least-squares baseline and the distributional estimators,
    over ``num_seeds`` independent populations per budget (one vmapped program per budget).
(b) **A real model**: a small LM of our zoo trained on a synthetic arithmetic task
    (:mod:`jaxsafety.scaling.sampling`) is sampled ``lm_attempts`` times per problem; both estimators are fitted to
    its measured successes and compared with the exact per-problem success probabilities (teacher-forced
    products of token probabilities) and with pass@k measured far beyond the fitting budget.

    python experiments/inference_scaling.py --smoke      # < 1 min on CPU
    python experiments/inference_scaling.py              # full study (minutes)
    tensorboard --logdir runs

Writes ``runs/inference_scaling/<run>/``: TensorBoard scalars (``error/<estimator>/median`` against the budget,
``lm/*``), ``results.json``, ``error_vs_budget.png`` (the headline figure), ``power_law.png`` (panel a) and
``lm_passk.png`` (panel b).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxsafety.config import check, check_choice, check_range, parse_cli
from jaxsafety.data.arithmetic import arithmetic_problems
from jaxsafety.scaling import DistributionParams, fit_distribution, predicted_passk_curve
from jaxsafety.scaling.passk import fit_power_law_lsq, neg_log_pass_at_k
from jaxsafety.scaling.simulate import ESTIMATORS, LEAST_SQUARES, exponent_estimates, lsq_budgets
from jaxsafety.train.experiment import Run, start_run
from jaxsafety.train.pretrained import ArithmeticLMConfig, arithmetic_lm
from jaxsafety.xla_flags import enable_compilation_cache, prefer_fast_compile


@dataclasses.dataclass(frozen=True)
class InferenceScalingConfig:
    """Synthetic study (a) and LM study (b); see the module docstring."""

    run_name: str | None = None
    out_dir: str = "runs"
    seed: int = 0
    # (a) the population: p = scale * x, x ~ family(alpha, beta); true exponent = alpha
    family: str = "beta"
    alpha: float = 0.3
    beta: float = 3.0
    scale: float = 1.0
    num_problems: int = 128
    budgets: tuple[int, ...] = (10, 30, 100, 300, 1000)
    num_seeds: int = 100
    estimators: tuple[str, ...] = (LEAST_SQUARES, "beta_binomial", "scaled_beta_binomial", "discretized_beta")
    demo_attempts: int = 10_000  # attempts per problem of the simulated population in the power-law figure
    # (b) the LM case
    lm: bool = True
    lm_model: ArithmeticLMConfig = ArithmeticLMConfig()  # the arithmetic LM and its training
    lm_num_problems: int = 200
    lm_attempts: int = 100  # attempts per problem the estimators are fitted on
    lm_holdout_attempts: int = 1000  # further attempts per problem: pass@k measured beyond the fitting budget
    lm_temperature: float = 1.0

    def __post_init__(self) -> None:
        check_choice("family", self.family, ("beta", "kumaraswamy"))
        check_range("alpha", self.alpha, gt=0)
        check_range("beta", self.beta, gt=0)
        check_range("scale", self.scale, gt=0, le=1)
        check_range("num_problems", self.num_problems, ge=3, integer=True)
        check_range("num_seeds", self.num_seeds, ge=2, integer=True)
        check(len(self.budgets) >= 1, "budgets", self.budgets, "a non-empty list of integers >= 2")
        for b in self.budgets:
            check_range("budgets", b, ge=2, integer=True)
        check(
            LEAST_SQUARES in self.estimators and len(self.estimators) >= 2,
            "estimators",
            self.estimators,
            f"'{LEAST_SQUARES}' and at least one of " + ", ".join(ESTIMATORS),
        )
        for name in self.estimators:
            check_choice("estimators", name, (LEAST_SQUARES, *ESTIMATORS))
        check_range("demo_attempts", self.demo_attempts, ge=10, integer=True)
        check_range("lm_num_problems", self.lm_num_problems, ge=3, integer=True)
        check_range("lm_attempts", self.lm_attempts, ge=2, integer=True)
        check_range("lm_holdout_attempts", self.lm_holdout_attempts, ge=0, integer=True)
        check_range("lm_temperature", self.lm_temperature, gt=0)

    @property
    def params(self) -> DistributionParams:
        return DistributionParams(self.alpha, self.beta, self.scale)


SMOKE = dict(
    budgets=(10, 100),
    num_seeds=16,
    estimators=(LEAST_SQUARES, "beta_binomial"),
    demo_attempts=1000,
    lm_model=ArithmeticLMConfig(d_model=32, batch_size=64, steps=200, max_operand=12),
    lm_num_problems=64,
    lm_attempts=32,
    lm_holdout_attempts=128,
)


def parse_args(argv: list[str]) -> InferenceScalingConfig:
    base = InferenceScalingConfig()
    presets = {"smoke": dataclasses.replace(base, **SMOKE)}
    return parse_cli(InferenceScalingConfig, argv, presets=presets, description=__doc__.splitlines()[0])


# ----------------------------------------------------------------------------------------------------------------
# (a) synthetic populations


def power_law_figure(run: Run, cfg: InferenceScalingConfig) -> dict[str, Any]:
    """Per-problem exponentials and the aggregate power law: exact curves for the population and one simulated
    population of ``num_problems`` problems with ``demo_attempts`` attempts each."""
    from jaxsafety.scaling.simulate import simulate_counts

    p, c = simulate_counts(
        np.random.default_rng([cfg.seed, 1]), cfg.params, cfg.family, cfg.num_problems, cfg.demo_attempts
    )
    p, c = p[0], c[0]
    n = np.full(cfg.num_problems, cfg.demo_attempts)
    ks = lsq_budgets(cfg.demo_attempts, 64)
    measured = np.asarray(neg_log_pass_at_k(n, c, ks), np.float64)
    exact_sample = -np.log(np.mean(1.0 - (1.0 - p[None, :]) ** ks[:, None], axis=1))  # this population's p_i
    ks_long = lsq_budgets(100 * cfg.demo_attempts, 96)
    theory = predicted_passk_curve(cfg.params, cfg.family, ks_long)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    order = np.argsort(p)
    for i in order[:: max(1, len(order) // 8)]:
        ax1.semilogy(ks, (1.0 - p[i]) ** ks, lw=1)
    ax1.set_ylim(1e-6, 1.5)
    ax1.set_xlim(0, ks.max() / 10)
    ax1.set_xlabel("attempts k")
    ax1.set_ylabel("1 - pass_i@k = (1 - p_i)^k")
    ax1.set_title("per problem: exponential in k (straight lines on a log axis)")
    pos = measured > 0
    ax2.loglog(ks[pos], measured[pos], "ko", ms=3, label="simulated (unbiased estimator)")
    ax2.loglog(ks, exact_sample, "C1-", lw=1, label="exact for these p_i")
    ax2.loglog(ks_long, np.asarray(theory.neg_log_pass_at_k), "C0-", label="population, exact")
    ax2.loglog(
        ks_long,
        float(theory.prefactor) * ks_long ** (-float(theory.exponent)),
        "C0--",
        label=f"asymptote {float(theory.prefactor):.3g} k^-{float(theory.exponent):.3g}",
    )
    ax2.set_xlabel("attempts k")
    ax2.set_ylabel("-log pass@k")
    ax2.set_title(f"aggregate: power law (p ~ {cfg.scale:g} {cfg.family}({cfg.alpha:g}, {cfg.beta:g}))")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    run.save_figure(fig, "power_law")
    plt.close(fig)
    # local slope of the exact population curve at the budgets studied: what least squares converges to
    local = {}
    for b in cfg.budgets:
        kb = lsq_budgets(b)
        yb = np.asarray(predicted_passk_curve(cfg.params, cfg.family, kb).neg_log_pass_at_k, np.float64)
        local[str(b)] = float(-np.polyfit(np.log(kb), np.log(yb), 1)[0])
    return {
        "prefactor": float(theory.prefactor),
        "exponent": float(theory.exponent),
        "least_squares_limit_per_budget": local,
    }


def error_study(run: Run, cfg: InferenceScalingConfig) -> dict[str, Any]:
    """Relative exponent error against the budget, for every estimator, over ``num_seeds`` populations."""
    est = exponent_estimates(
        cfg.seed,
        cfg.params,
        cfg.family,
        budgets=cfg.budgets,
        num_problems=cfg.num_problems,
        num_seeds=cfg.num_seeds,
        estimators=cfg.estimators,
        show_progress=True,
    )
    table: dict[str, Any] = {}
    for name in cfg.estimators:
        values = est[name]  # [budgets, seeds]
        err = np.abs(values / cfg.alpha - 1.0)
        table[name] = {
            "median_relative_error": np.nanmedian(err, axis=1).tolist(),
            "q25": np.nanpercentile(err, 25, axis=1).tolist(),
            "q75": np.nanpercentile(err, 75, axis=1).tolist(),
            "mean_exponent": np.nanmean(values, axis=1).tolist(),
            "not_converged_fraction": np.mean(np.isnan(values), axis=1).tolist(),
        }
        for b, med in zip(cfg.budgets, table[name]["median_relative_error"], strict=True):
            run.tracker.scalars({f"error/{name}/median": med}, int(b))
    lsq = np.asarray(table[LEAST_SQUARES]["median_relative_error"])
    ratios = {
        name: (lsq / np.asarray(table[name]["median_relative_error"])).tolist()
        for name in cfg.estimators
        if name != LEAST_SQUARES
    }
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    budgets = np.asarray(cfg.budgets)
    for i, name in enumerate(cfg.estimators):
        row = table[name]
        ax.loglog(budgets, row["median_relative_error"], "o-", color=f"C{i}", label=name)
        ax.fill_between(budgets, row["q25"], row["q75"], color=f"C{i}", alpha=0.15)
    ax.set_xlabel("sampling budget: attempts per problem")
    ax.set_ylabel("relative error of the exponent |b/alpha - 1|")
    ax.set_title(
        f"{cfg.num_problems} problems, p ~ {cfg.scale:g} {cfg.family}({cfg.alpha:g}, {cfg.beta:g}); "
        f"median and IQR over {cfg.num_seeds} seeds",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    run.save_figure(fig, "error_vs_budget")
    plt.close(fig)
    return {"budgets": list(cfg.budgets), "estimators": table, "median_error_ratio_lsq_over": ratios}


# ----------------------------------------------------------------------------------------------------------------
# (b) the LM case


def lm_study(run: Run, cfg: InferenceScalingConfig) -> dict[str, Any]:
    """Sample the arithmetic LM, fit both estimators on the first ``lm_attempts`` attempts, and compare with the
    exact per-problem success probabilities and with pass@k measured on all attempts."""
    from jaxsafety.scaling import sampling

    t0 = time.perf_counter()
    lm = arithmetic_lm(cfg.lm_model, seed=cfg.seed)  # through the trained-model cache: a rerun loads it
    train_s = time.perf_counter() - t0
    problems = arithmetic_problems(
        cfg.lm_num_problems, seed=cfg.seed + 7, max_operand=cfg.lm_model.max_operand, ops=cfg.lm_model.ops
    )
    total = cfg.lm_attempts + cfg.lm_holdout_attempts
    t0 = time.perf_counter()
    successes = sampling.sample_attempts(
        lm.model,
        lm.tokenizer,
        problems,
        num_attempts=total,
        key=jax.random.key(cfg.seed + 3),
        temperature=cfg.lm_temperature,
    )  # [P, total] bool
    sample_s = time.perf_counter() - t0
    p_true = np.asarray(
        sampling.exact_success_probability(lm.model, lm.tokenizer, problems, temperature=cfg.lm_temperature),
        np.float64,
    )
    fit_part = successes[:, : cfg.lm_attempts]
    n = np.full(cfg.lm_num_problems, cfg.lm_attempts)
    c = fit_part.sum(axis=1).astype(np.int64)
    ks = lsq_budgets(cfg.lm_attempts)
    a_lsq, b_lsq = (float(v) for v in fit_power_law_lsq(ks, neg_log_pass_at_k(n, c, ks)))
    fits = {}
    for name in cfg.estimators:
        if name == LEAST_SQUARES:
            continue
        family, scaled, likelihood = ESTIMATORS[name]
        f = fit_distribution(n, c, family, scaled=scaled, likelihood=likelihood)
        fits[name] = {
            "alpha": float(f.params.alpha),
            "beta": float(f.params.beta),
            "c": float(f.params.scale),
            "converged": bool(f.converged),
            "family": family,
        }
    # references: the exact p_i (pass@k exactly, at any k) and all attempts measured
    k_all = lsq_budgets(total)
    exact_curve = -np.log(np.mean(1.0 - (1.0 - p_true[None, :]) ** k_all[:, None], axis=1))
    measured_all = np.asarray(neg_log_pass_at_k(np.full(cfg.lm_num_problems, total), successes.sum(1), k_all))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    pos = measured_all > 0
    ax1.loglog(k_all[pos], measured_all[pos], "ko", ms=3, label=f"measured, {total} attempts")
    ax1.loglog(k_all, exact_curve, "k-", lw=0.8, label="exact (teacher-forced p_i)")
    ax1.loglog(
        k_all,
        a_lsq * k_all ** (-b_lsq),
        "--",
        label=f"least squares on k <= {cfg.lm_attempts}: b={b_lsq:.3f}",
    )
    for name, f in fits.items():
        curve = predicted_passk_curve(DistributionParams(f["alpha"], f["beta"], f["c"]), f["family"], k_all)
        ax1.loglog(k_all, np.asarray(curve.neg_log_pass_at_k), label=f"{name}: alpha={f['alpha']:.3f}")
    ax1.axvline(cfg.lm_attempts, color="0.7", lw=0.8)
    ax1.set_xlabel("attempts k")
    ax1.set_ylabel("-log pass@k")
    ax1.set_title("arithmetic LM: fitted on the attempts left of the grey line", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.hist(p_true, bins=40, range=(0, 1), color="0.6")
    ax2.set_yscale("log")
    ax2.set_xlabel("exact single-attempt success probability p_i")
    ax2.set_ylabel("problems")
    ax2.set_title(f"{cfg.lm_num_problems} problems; {np.mean(p_true < 0.05):.0%} with p < 0.05", fontsize=9)
    fig.tight_layout()
    run.save_figure(fig, "lm_passk")
    plt.close(fig)
    # the exponent implied by the exact p_i: a distribution fit to the p_i themselves is not available (p_i can be
    # 0 to float precision), so report the local slope of the exact curve between lm_attempts and total
    kk = k_all[(k_all >= cfg.lm_attempts) & (k_all <= total)]
    ek = exact_curve[(k_all >= cfg.lm_attempts) & (k_all <= total)]
    slope_exact = float(-np.polyfit(np.log(kk), np.log(ek), 1)[0]) if len(kk) >= 2 else math.nan
    metrics = {
        "least_squares_exponent": b_lsq,
        "exact_local_exponent_beyond_budget": slope_exact,
        "fraction_p_below_0.05": float(np.mean(p_true < 0.05)),
        "train_seconds": train_s,
        "sample_seconds": sample_s,
    }
    run.tracker.scalars({f"lm/{k}": v for k, v in metrics.items()}, 0)
    return {
        **metrics,
        "least_squares": {"a": a_lsq, "b": b_lsq},
        "fits": fits,
        "ks": k_all.tolist(),
        "measured_neg_log_pass_at_k": measured_all.tolist(),
        "exact_neg_log_pass_at_k": exact_curve.tolist(),
        "p_true_quantiles": dict(
            zip(
                ["q10", "q25", "q50", "q75", "q90"],
                np.quantile(p_true, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist(),
                strict=True,
            )
        ),
        "attempts_fitted": cfg.lm_attempts,
        "attempts_total": total,
        "attempts_per_second": cfg.lm_num_problems * total / sample_s,
    }


def main(cfg: InferenceScalingConfig) -> dict[str, Any]:
    t_start = time.time()
    enable_compilation_cache()
    run = start_run("inference_scaling", cfg, run_name=cfg.run_name, root=cfg.out_dir)
    print(
        f"[inference_scaling] (a) {cfg.num_problems} problems, p ~ {cfg.scale:g} {cfg.family}({cfg.alpha:g}, "
        f"{cfg.beta:g}), budgets {list(cfg.budgets)}, {cfg.num_seeds} seeds, estimators {list(cfg.estimators)}",
        flush=True,
    )
    with run:
        results: dict[str, Any] = {
            "experiment": "inference_scaling",
            "run": run.name,
            "true_exponent": cfg.alpha,
        }
        results["population"] = power_law_figure(run, cfg)
        results["error_vs_budget"] = error_study(run, cfg)
        for name, ratio in results["error_vs_budget"]["median_error_ratio_lsq_over"].items():
            print(
                f"[inference_scaling] median error, least squares / {name}: "
                + ", ".join(f"{r:.2f}x at {b}" for b, r in zip(cfg.budgets, ratio, strict=True)),
                flush=True,
            )
        if cfg.lm:
            print("[inference_scaling] (b) training the arithmetic LM and sampling it ...", flush=True)
            results["lm"] = lm_study(run, cfg)
            lm = results["lm"]
            print(
                f"[inference_scaling] LM: least squares b={lm['least_squares']['b']:.3f}; "
                + ", ".join(f"{k} alpha={v['alpha']:.3f}" for k, v in lm["fits"].items())
                + f"; exact local exponent beyond the budget {lm['exact_local_exponent_beyond_budget']:.3f}",
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
