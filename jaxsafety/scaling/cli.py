"""``python -m jaxsafety.scaling``: fit inference-compute (pass@k) and training scaling laws from CSV files.

::

    python -m jaxsafety.scaling fit-passk --input samples.csv --output fit.json [--estimators all] [--bootstrap 200]
    python -m jaxsafety.scaling fit-chinchilla --input runs.csv --output fit.json [--bootstrap 200]
    python -m jaxsafety.scaling fit-power-law --input curve.csv --output fit.json

Each command checks its arguments and its whole CSV first (errors name the file, row and column, e.g.
``samples.csv:row 7:successes='12' is invalid: accepted values are integers in [0, attempts=10]``, exit status 2),
then fits, prints a table, writes the JSON atomically (parameters under the papers' names, with 95% bootstrap
intervals) and a PNG plot beside it (``--plot PATH`` to move it, ``--plot none`` for none). Compiled fits are kept
in JAX's persistent compilation cache (``$JAXSAFETY_CACHE/xla``), so a second run skips most compilation.
The commands are :func:`jaxsafety.config.run_subcommands` over the configs below (``--config FILE`` and
``--print-config`` work as for every config).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxsafety.config import (
    ConfigError,
    Subcommand,
    check_range,
    format_number,
    option,
    print_table,
    run_subcommands,
)
from jaxsafety.io import check_output_path, save_figure, write_json_atomic
from jaxsafety.scaling.io import PassKData, RunsData, read_curve_csv, read_passk_csv, read_runs_csv
from jaxsafety.scaling.simulate import ESTIMATORS as PASSK_ESTIMATORS
from jaxsafety.scaling.simulate import LEAST_SQUARES, lsq_budgets

__all__ = [
    "PASSK_ESTIMATORS",
    "FitChinchillaConfig",
    "FitPassKConfig",
    "FitPowerLawConfig",
    "main",
]

DEFAULT_PASSK_ESTIMATORS = (LEAST_SQUARES, "beta_binomial", "scaled_beta_binomial")
_ALL_ESTIMATORS = (LEAST_SQUARES, *PASSK_ESTIMATORS)


@dataclasses.dataclass(frozen=True)
class _FitConfig:
    """Arguments every command takes."""

    input: Path = option(help="CSV file")
    output: Path = option(help="JSON file to write (atomically)")
    plot: str = option("auto", help="PNG path; auto: the output's path with .png; none: no plot")
    bootstrap: int = option(200, help="bootstrap resamples for 95%% intervals (0: none)")
    seed: int = option(0, help="seed of the bootstrap resamples")

    def __post_init__(self) -> None:
        check_range("bootstrap", self.bootstrap, ge=0, integer=True)
        if self.bootstrap == 1:
            raise ConfigError("bootstrap", 1, "0 (no intervals) or an integer >= 2")
        check_range("seed", self.seed, ge=0, integer=True)
        check_output_path("output", self.output, ".json")
        if self.plot not in ("auto", "none"):
            check_output_path("plot", self.plot, ".png")

    @property
    def plot_path(self) -> Path | None:
        if self.plot == "auto":
            return Path(self.output).with_suffix(".png")
        return None if self.plot == "none" else Path(self.plot)


@dataclasses.dataclass(frozen=True)
class FitPassKConfig(_FitConfig):
    """``fit-passk``: power law of ``-log pass@k`` from per-problem sample counts."""

    input: Path = option(
        help="CSV with columns problem_id,attempts,successes (or problem_id,success: one row per attempt)"
    )
    estimators: str = option(
        ",".join(DEFAULT_PASSK_ESTIMATORS),
        help="'all' or a comma-separated subset of: " + ", ".join(_ALL_ESTIMATORS),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.estimator_names  # noqa: B018 (checks the names)

    @property
    def estimator_names(self) -> list[str]:
        """The estimators to fit, in the order given (``all``: every one)."""
        names = [s.strip() for s in self.estimators.split(",") if s.strip()]
        if names == ["all"]:
            return list(_ALL_ESTIMATORS)
        accepted = "'all' or a comma-separated list of " + ", ".join(_ALL_ESTIMATORS)
        for name in names:
            if name not in _ALL_ESTIMATORS:
                raise ConfigError("estimators", name, accepted)
        if not names:
            raise ConfigError("estimators", self.estimators, accepted)
        return list(dict.fromkeys(names))


@dataclasses.dataclass(frozen=True)
class FitChinchillaConfig(_FitConfig):
    """``fit-chinchilla``: Chinchilla approach 3, ``L(N, D) = E + A/N^alpha + B/D^beta``."""

    input: Path = option(help="CSV with columns params,tokens,loss")


@dataclasses.dataclass(frozen=True)
class FitPowerLawConfig(_FitConfig):
    """``fit-power-law``: power law with offset, ``L(C) = a C^-b + c``."""

    input: Path = option(help="CSV with columns compute,loss")


# ----------------------------------------------------------------------------------------------------------------
# output helpers


def _ci(x: Any, ok: Any = None) -> list[float] | None:
    """95% percentile interval of the finite entries of ``x`` (where ``ok``), None with fewer than 2."""
    x = np.asarray(x, dtype=np.float64)
    if ok is not None:
        x = x[np.asarray(ok, bool)]
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None
    return [float(v) for v in np.percentile(x, [2.5, 97.5])]


def _fmt_ci(ci: list[float] | None) -> str:
    return "-" if ci is None else f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def _bootstrap_info(cfg: _FitConfig) -> dict[str, Any]:
    return {"num_resamples": cfg.bootstrap, "seed": cfg.seed, "interval": "percentile, 95%"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(cfg: _FitConfig, result: dict[str, Any], plot: Callable[[], Any]) -> None:
    """The common end: the figure ``plot()`` draws saved as PNG (unless ``--plot none``), then the JSON."""
    path = cfg.plot_path
    if path is not None:
        save_figure(plot(), path)
        result["plot"] = str(path)
    write_json_atomic(cfg.output, result)
    print(f"wrote {cfg.output}" + (f" and {path}" if path is not None else ""))


def _start_jax() -> Any:
    """JAX with the persistent compilation cache on (imported only once the inputs are checked)."""
    import jax

    from jaxsafety.xla_flags import enable_compilation_cache

    enable_compilation_cache()
    return jax


# ----------------------------------------------------------------------------------------------------------------
# fit-passk


def _lsq_fit(key: Any, n: np.ndarray, c: np.ndarray, ks: np.ndarray, num_resamples: int) -> dict[str, Any]:
    """Least-squares power law of the aggregate ``-log pass@k`` with a bootstrap over problems."""
    from jaxsafety.scaling.passk import bootstrap_power_law_lsq, fit_power_law_lsq, neg_log_pass_at_k

    y = np.asarray(neg_log_pass_at_k(n, c, ks))
    a, b = (float(v) for v in fit_power_law_lsq(ks, y))
    out: dict[str, Any] = {
        "a": a,
        "b": b,
        "exponent": b,
        "ks": ks.tolist(),
        "num_budgets_fitted": int(np.sum(y > 0)),
    }
    if num_resamples:
        aa, bb = bootstrap_power_law_lsq(key, n, c, ks, num_resamples=num_resamples)
        out["ci95"] = {"a": _ci(aa), "b": _ci(bb)}
        out["exponent_ci95"] = out["ci95"]["b"]
    return out


def _distribution_fit(
    key: Any, n: np.ndarray, c: np.ndarray, name: str, num_resamples: int, ks_curve: np.ndarray
) -> dict[str, Any]:
    from jaxsafety.scaling.distributions import predicted_passk_curve
    from jaxsafety.scaling.fit import bootstrap_fit, fit_distribution

    family, scaled, likelihood = PASSK_ESTIMATORS[name]
    if num_resamples:
        boot = bootstrap_fit(
            key, n, c, family, scaled=scaled, likelihood=likelihood, num_resamples=num_resamples
        )
        fit = boot.point
    else:
        boot, fit = None, fit_distribution(n, c, family, scaled=scaled, likelihood=likelihood)
    p = fit.params
    curve = predicted_passk_curve(p, family, ks_curve)
    out: dict[str, Any] = {
        "family": family,
        "scaled": scaled,
        "likelihood": likelihood,
        "alpha": float(p.alpha),
        "beta": float(p.beta),
        "c": float(p.scale),
        "exponent": float(curve.exponent),
        "prefactor": float(curve.prefactor),
        "exponent_se_asymptotic": float(fit.exponent_se),
        "log_likelihood": float(fit.log_likelihood),
        "converged": bool(fit.converged),
        "predicted_neg_log_pass_at_k": np.asarray(curve.neg_log_pass_at_k).tolist(),
    }
    if boot is not None:
        ok = np.asarray(boot.fits.converged)
        bp = boot.fits.params
        out["ci95"] = {"alpha": _ci(bp.alpha, ok), "beta": _ci(bp.beta, ok)}
        if scaled:
            out["ci95"]["c"] = _ci(bp.scale, ok)
        out["exponent_ci95"] = out["ci95"]["alpha"]
        out["bootstrap_converged_fraction"] = float(ok.mean())
    return out


def _passk_figure(result: dict[str, Any], n: np.ndarray, c: np.ndarray) -> Any:
    from scipy import stats

    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ks = np.asarray(result["ks"])
    y = np.asarray(result["neg_log_pass_at_k"])
    pos = y > 0
    ax.loglog(ks[pos], y[pos], "ko", ms=4, label="measured (unbiased estimator)")
    ks_curve = np.asarray(result["ks_curve"])
    for name, est in result["estimators"].items():
        if name == LEAST_SQUARES:
            ax.loglog(
                ks_curve, est["a"] * ks_curve ** (-est["b"]), "--", label=f"least squares: b={est['b']:.3f}"
            )
        else:
            ax.loglog(ks_curve, est["predicted_neg_log_pass_at_k"], label=f"{name}: alpha={est['alpha']:.3f}")
    ax.axvline(ks.max(), color="0.7", lw=0.8)
    ax.set_xlabel("attempts k")
    ax.set_ylabel("-log pass@k")
    ax.set_title("aggregate -log pass@k (right of the grey line: extrapolated)")
    ax.legend(fontsize=7)

    ax2.hist(c / n, bins=40, range=(0, 1), density=True, color="0.8", label="per-problem c/n")
    grid = np.linspace(1e-4, 1 - 1e-4, 400)
    for name, est in result["estimators"].items():
        if name == LEAST_SQUARES:
            continue
        a, b, s = est["alpha"], est["beta"], est["c"]
        x = grid / s
        inside = x < 1
        xc = np.minimum(x, 1 - 1e-12)
        if est["family"] == "beta":
            dens = np.where(inside, stats.beta.pdf(xc, a, b) / s, 0.0)
        else:
            dens = np.where(inside, a * b * xc ** (a - 1) * (1 - xc**a) ** (b - 1) / s, 0.0)
        ax2.plot(grid, dens, lw=1, label=name)
    ax2.set_yscale("log")
    ax2.set_ylim(1e-2, None)
    ax2.set_xlabel("single-attempt success probability p")
    ax2.set_ylabel("density")
    ax2.set_title("distribution of p: data and fits")
    ax2.legend(fontsize=7)
    return fig


def fit_passk(cfg: FitPassKConfig, data: PassKData) -> None:
    """``fit-passk``: every estimator of ``cfg.estimators`` (with bootstrap intervals), a table, the JSON and
    the plot."""
    jax = _start_jax()
    from jaxsafety.scaling.passk import neg_log_pass_at_k

    n, c = data.attempts, data.successes
    max_k = int(n.min())
    ks = np.arange(1, max_k + 1) if max_k <= 256 else lsq_budgets(max_k, 256)
    ks_curve = np.unique(np.round(np.geomspace(1, 100 * max_k, 64)).astype(np.int64))
    key = jax.random.key(cfg.seed)
    result: dict[str, Any] = {
        "command": "fit-passk",
        "input": str(cfg.input),
        "num_problems": len(data.problem_ids),
        "attempts": {"min": int(n.min()), "max": int(n.max()), "total": int(n.sum())},
        "successes_total": int(c.sum()),
        "problems_never_solved": int(np.sum(c == 0)),
        "ks": ks.tolist(),
        "neg_log_pass_at_k": np.asarray(neg_log_pass_at_k(n, c, ks)).tolist(),
        "ks_curve": ks_curve.tolist(),
        "bootstrap": _bootstrap_info(cfg),
        "estimators": {},
    }
    for i, name in enumerate(cfg.estimator_names):
        sub = jax.random.fold_in(key, i)
        print(f"fitting {name} ...", file=sys.stderr, flush=True)
        if name == LEAST_SQUARES:
            result["estimators"][name] = _lsq_fit(sub, n, c, lsq_budgets(max_k), cfg.bootstrap)
        else:
            result["estimators"][name] = _distribution_fit(sub, n, c, name, cfg.bootstrap, ks_curve)

    rows = []
    for name, est in result["estimators"].items():
        if name == LEAST_SQUARES:
            params, conv, ll = f"a={format_number(est['a'])}", "-", "-"
        else:
            params = f"alpha={format_number(est['alpha'])} beta={format_number(est['beta'])}" + (
                f" c={format_number(est['c'])}" if est["scaled"] else ""
            )
            conv, ll = ("yes" if est["converged"] else "NO"), f"{est['log_likelihood']:.2f}"
        rows.append(
            [name, format_number(est["exponent"]), _fmt_ci(est.get("exponent_ci95")), params, ll, conv]
        )
    print(
        f"{result['num_problems']} problems, attempts per problem {n.min()}-{n.max()}, "
        f"{result['problems_never_solved']} never solved; power law -log pass@k ~ a k^-exponent"
    )
    print_table(["estimator", "exponent", "95% CI", "parameters", "log-lik", "converged"], rows)
    _finish(cfg, result, lambda: _passk_figure(result, n, c))


# ----------------------------------------------------------------------------------------------------------------
# fit-chinchilla


def _chinchilla_figure(result: dict[str, Any], data: RunsData) -> Any:
    plt = _pyplot()
    e, a, b, al, be = (result[k] for k in ("E", "A", "B", "alpha", "beta"))
    pred = e + a / data.params**al + b / data.tokens**be
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    sc = ax.scatter(data.loss, pred, c=np.log10(data.tokens / data.params), s=12, cmap="viridis")
    lim = [min(data.loss.min(), pred.min()), max(data.loss.max(), pred.max())]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured loss")
    ax.set_ylabel("fitted loss")
    ax.set_title(f"E={e:.3g} A={a:.3g} B={b:.3g} alpha={al:.3f} beta={be:.3f}", fontsize=9)
    fig.colorbar(sc, ax=ax, label="log10 tokens/param")
    fr = result["compute_optimal"]["frontier"]
    cs = np.asarray([r["C"] for r in fr])
    ax2.loglog(cs, [r["N_opt"] for r in fr], label="N_opt (params)")
    ax2.loglog(cs, [r["D_opt"] for r in fr], label="D_opt (tokens)")
    ax2.scatter(6 * data.params * data.tokens, data.params, s=6, c="C0", alpha=0.4, label="runs (N)")
    ax2.set_xlabel("compute C = 6 N D (FLOP)")
    ax2.set_title("compute-optimal frontier")
    ax2.legend(fontsize=8)
    return fig


def fit_chinchilla_cmd(cfg: FitChinchillaConfig, data: RunsData) -> None:
    """``fit-chinchilla``: the fit, bootstrap intervals, the compute-optimal frontier, the JSON and the plot."""
    jax = _start_jax()
    from jaxsafety.scaling.chinchilla import bootstrap_chinchilla, compute_optimal, fit_chinchilla

    fit = fit_chinchilla(data.params, data.tokens, data.loss)
    names = ("E", "A", "B", "alpha", "beta")
    result: dict[str, Any] = {
        "command": "fit-chinchilla",
        "input": str(cfg.input),
        "num_runs": len(data.loss),
        "form": "L(N, D) = E + A / N^alpha + B / D^beta, fitted as log L = LSE(a - alpha log N, b - beta log D, e) "
        "with a Huber loss (delta 1e-3) summed over runs, L-BFGS from a grid (Besiroglu et al. 2024)",
        **{k: float(getattr(fit.params, k)) for k in names},
        "objective": float(fit.objective),
        "converged": bool(fit.converged),
        "bootstrap": _bootstrap_info(cfg),
    }
    alpha, beta = result["alpha"], result["beta"]
    # N_opt ~ C^a, D_opt ~ C^b with C = 6 N D
    result["compute_optimal"] = {"a": beta / (alpha + beta), "b": alpha / (alpha + beta)}
    if cfg.bootstrap:
        boot = bootstrap_chinchilla(
            jax.random.key(cfg.seed), data.params, data.tokens, data.loss, num_resamples=cfg.bootstrap
        )
        bp = boot.fits.params
        ok = np.asarray(boot.fits.converged)
        result["ci95"] = {k: _ci(getattr(bp, k), ok) for k in names}
        ba, bb = np.asarray(bp.alpha), np.asarray(bp.beta)
        result["compute_optimal"]["ci95"] = {"a": _ci(bb / (ba + bb), ok), "b": _ci(ba / (ba + bb), ok)}
        result["bootstrap_converged_fraction"] = float(ok.mean())
    c_data = 6.0 * data.params * data.tokens
    cs = np.geomspace(c_data.min(), c_data.max() * 1e3, 13)
    n_opt, d_opt, l_opt = (np.asarray(v) for v in compute_optimal(fit.params, cs))
    result["compute_optimal"]["frontier"] = [
        {"C": float(cc), "N_opt": float(nn), "D_opt": float(dd), "loss": float(ll)}
        for cc, nn, dd, ll in zip(cs, n_opt, d_opt, l_opt, strict=True)
    ]
    ci = result.get("ci95", {})
    print_table(
        ["parameter", "estimate", "95% CI"],
        [[k, format_number(result[k]), _fmt_ci(ci.get(k))] for k in names],
    )
    co = result["compute_optimal"]
    print(f"compute-optimal: N_opt ~ C^{co['a']:.3f}, D_opt ~ C^{co['b']:.3f} (C = 6 N D)")
    print_table(
        ["C (FLOP)", "N_opt", "D_opt", "tokens/param", "loss"],
        [
            [f"{r['C']:.3g}", f"{r['N_opt']:.3g}", f"{r['D_opt']:.3g}", f"{r['D_opt'] / r['N_opt']:.1f}",
             f"{r['loss']:.4f}"]
            for r in co["frontier"][::3]
        ],
    )  # fmt: skip
    _finish(cfg, result, lambda: _chinchilla_figure(result, data))


# ----------------------------------------------------------------------------------------------------------------
# fit-power-law


def _power_law_figure(result: dict[str, Any], compute: np.ndarray, loss: np.ndarray) -> Any:
    plt = _pyplot()
    grid = np.geomspace(compute.min(), compute.max() * 100, 200)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.loglog(compute, loss, "ko", ms=4, label="data")
    ax.loglog(grid, result["a"] * grid ** (-result["b"]) + result["c"], label="a C^-b + c")
    ax.axhline(result["c"], color="0.6", ls="--", lw=0.8, label=f"c = {result['c']:.4g}")
    ax.set_xlabel("compute C")
    ax.set_ylabel("loss")
    ax.set_title(f"a={result['a']:.3g} b={result['b']:.3f} c={result['c']:.4g}", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def fit_power_law_cmd(cfg: FitPowerLawConfig, data: tuple[np.ndarray, np.ndarray]) -> None:
    """``fit-power-law``: ``L(C) = a C^-b + c`` with bootstrap intervals, the JSON and the plot."""
    jax = _start_jax()
    from jaxsafety.scaling.chinchilla import bootstrap_power_law_offset, fit_power_law_offset

    compute, loss = data
    params, objective = fit_power_law_offset(compute, loss)
    result: dict[str, Any] = {
        "command": "fit-power-law",
        "input": str(cfg.input),
        "num_points": len(loss),
        "form": "L(C) = a C^-b + c, fitted as log L = LSE(log a - b log C, log c), Huber (delta 1e-3) summed",
        "a": float(params.a),
        "b": float(params.b),
        "c": float(params.c),
        "objective": float(objective),
        "bootstrap": _bootstrap_info(cfg),
    }
    if cfg.bootstrap:
        boot = bootstrap_power_law_offset(
            jax.random.key(cfg.seed), compute, loss, num_resamples=cfg.bootstrap
        )
        ok = np.asarray(boot.identifiable & boot.converged)
        result["ci95"] = {k: _ci(getattr(boot.params, k), ok) for k in "abc"}
        result["bootstrap_used_fraction"] = float(ok.mean())
    ci = result.get("ci95", {})
    print_table(
        ["parameter", "estimate", "95% CI"],
        [[k, format_number(result[k]), _fmt_ci(ci.get(k))] for k in "abc"],
    )
    _finish(cfg, result, lambda: _power_law_figure(result, compute, loss))


# ----------------------------------------------------------------------------------------------------------------

COMMANDS = {
    "fit-passk": Subcommand(
        FitPassKConfig,
        fit_passk,
        load=lambda cfg: read_passk_csv(cfg.input),
        help="power law of -log pass@k from per-problem sample counts",
    ),
    "fit-chinchilla": Subcommand(
        FitChinchillaConfig,
        fit_chinchilla_cmd,
        load=lambda cfg: read_runs_csv(cfg.input),
        help="Chinchilla approach 3: L(N, D) = E + A/N^alpha + B/D^beta",
    ),
    "fit-power-law": Subcommand(
        FitPowerLawConfig,
        fit_power_law_cmd,
        load=lambda cfg: read_curve_csv(cfg.input, min_points=5),  # the fit needs 5
        help="power law with offset: L(C) = a C^-b + c",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input)."""
    return run_subcommands("python -m jaxsafety.scaling", COMMANDS, argv, description=__doc__.split("\n")[0])
