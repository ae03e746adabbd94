"""Non-transitive judges and tournament rankings (Xu, Ruis, Rocktaschel, Kirk 2025, "Investigating Non-Transitivity
in LLM-as-a-Judge", arXiv 2502.14074), reproduced with simulated judges (:mod:`jaxsafety.judges`).

The simulated judge's non-transitivity strength (the disc-game term of
:func:`~jaxsafety.judges.make_simulated_judge`) is swept over ``strengths``; at every strength ``num_seeds``
judges (the same latent skills, styles and noise draws at every strength, so the sweep is paired) are studied:

(a) **Baseline dependence** of AlpacaEval-style rankings: :func:`~jaxsafety.judges.baseline_tournament` with every
    model in turn as the baseline; the range of each model's rank across baselines (mean and max over models) and
    the spread of Spearman's rho against the true (latent skill) ranking across baselines.
(b) **Non-transitivity of the judge**: PNT and SNTD (:func:`~jaxsafety.judges.non_transitivity`) of the
    position-debiased preference tensor over all instructions (from the round robin's comparisons).
(c) **Ranking quality against cost**: Spearman / Kendall against the true ranking for baseline-anchored rankings
    (mean over baselines), a round robin aggregated with Bradley-Terry, and, at matched judge-call budgets, the
    paper's Swim (Swiss-Wise Iterative Matchmaking: ``ceil(log2 n)`` Swiss rounds on the refitted Bradley-Terry
    ranking, :func:`~jaxsafety.judges.swim_tournament`) with ``repeats`` instructions per match for each of
    ``swim_repeats``, binary-search insertion (:func:`~jaxsafety.judges.insertion_tournament`) at the same
    repeats (at its own cost, and capped at Swim's judge calls: the models left unplaced are guessed), and a
    round robin cut to Swim's judge calls (its first whole instructions, where at least one fits); each
    tournament's judge calls as a fraction of the full round robin's.

    python experiments/judge_tournaments.py --smoke      # < 1 min on CPU
    python experiments/judge_tournaments.py              # full study (about a minute)
    tensorboard --logdir runs

Writes ``runs/judge_tournaments/<run>/``: TensorBoard scalars against the strength index (``strength``,
``nt/*``, ``spearman/*``, ``kendall/*``, ``baseline/*``, ``fraction/*``), ``results.json`` (per-judge values and a
per-strength table), ``spearman_vs_fraction.png`` (the headline figure), ``spearman_vs_strength.png`` and
``nontransitivity.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import Any

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxsafety.config import check, check_range, parse_cli
from jaxsafety.judges import (
    CachedJudge,
    baseline_tournament,
    insertion_tournament,
    make_simulated_judge,
    non_transitivity,
    preference_tensor,
    rank_correlations,
    round_robin_tournament,
    swim_rounds,
    swim_tournament,
)
from jaxsafety.train import progress
from jaxsafety.train.experiment import Run, start_run
from jaxsafety.xla_flags import enable_compilation_cache, prefer_fast_compile


@dataclasses.dataclass(frozen=True)
class JudgeTournamentsConfig:
    """The sweep over non-transitivity strengths; see the module docstring."""

    run_name: str | None = None
    out_dir: str = "runs"
    seed: int = 0
    strengths: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)  # disc-game scale of the simulated judge
    num_seeds: int = 32  # simulated judges per strength
    num_models: int = 12
    num_instructions: int = 32
    skill_scale: float = 1.0  # latent skills ~ skill_scale * N(0, 1): the ground-truth ranking
    style_jitter: float = 0.3  # per-instruction jitter of the style angles (radians)
    position_bias: float = 0.5  # logit bonus of the response shown first
    noise: float = 0.5  # std of the judge's logit noise per (instruction, ordered pair)
    swim_repeats: tuple[int, ...] = (1, 3, 5, 10, 20)  # instructions per Swim (and insertion) match
    headline_strength: float = 1.0  # the strength of the printed headline sentence (one of ``strengths``)

    def __post_init__(self) -> None:
        check(len(self.strengths) >= 2, "strengths", self.strengths, "a list of at least two numbers >= 0")
        for s in self.strengths:
            check_range("strengths", float(s), ge=0.0)
        check(
            list(self.strengths) == sorted(set(self.strengths)),
            "strengths",
            self.strengths,
            "distinct numbers in increasing order",
        )
        check_range("num_seeds", self.num_seeds, ge=1, integer=True)
        check_range("num_models", self.num_models, ge=3, integer=True)
        check_range("num_instructions", self.num_instructions, ge=1, integer=True)
        check_range("skill_scale", self.skill_scale, gt=0.0)
        check_range("style_jitter", self.style_jitter, ge=0.0)
        check_range("position_bias", self.position_bias)
        check_range("noise", self.noise, ge=0.0)
        check(len(self.swim_repeats) >= 1, "swim_repeats", self.swim_repeats, "a non-empty list of integers")
        for r in self.swim_repeats:
            check_range("swim_repeats", r, ge=1, le=self.num_instructions, integer=True)
        check(
            self.headline_strength in self.strengths,
            "headline_strength",
            self.headline_strength,
            f"one of strengths {list(self.strengths)}",
        )


SMOKE = dict(
    strengths=(0.0, 4.0),
    num_seeds=3,
    num_models=8,
    num_instructions=16,
    swim_repeats=(1, 3),
    headline_strength=4.0,
)


def parse_args(argv: list[str]) -> JudgeTournamentsConfig:
    base = JudgeTournamentsConfig()
    presets = {"smoke": dataclasses.replace(base, **SMOKE)}
    return parse_cli(JudgeTournamentsConfig, argv, presets=presets, description=__doc__.splitlines()[0])


def matched_round_robin(cfg: JudgeTournamentsConfig) -> list[int]:
    """The repeats at which Swim's judge calls buy a round robin at least one whole instruction."""
    pairs = cfg.num_models * (cfg.num_models - 1) // 2
    return [r for r in cfg.swim_repeats if swim_rounds(cfg.num_models) * (cfg.num_models // 2) * r >= pairs]


def method_names(cfg: JudgeTournamentsConfig) -> list[str]:
    return [
        "baseline",
        "round_robin",
        *(f"swim_r{r}" for r in cfg.swim_repeats),
        *(f"insertion_r{r}" for r in cfg.swim_repeats),
        *(f"insertion_matched_r{r}" for r in cfg.swim_repeats),
        *(f"rr_matched_r{r}" for r in matched_round_robin(cfg)),
    ]


# ----------------------------------------------------------------------------------------------------------------
# one judge


def study_judge(cfg: JudgeTournamentsConfig, strength: float, judge_seed: int) -> dict[str, Any]:
    """(a), (b), (c) for one simulated judge; all tournaments share one cache, and every count is of judge calls
    requested (cache hits included), the library's budget unit."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), judge_seed)
    k_judge, k_swim = jax.random.split(key)
    # k_judge depends on the seed only, so at every strength the judge has the same skills, styles and noise.
    judge = make_simulated_judge(
        k_judge,
        cfg.num_models,
        cfg.num_instructions,
        nontransitivity=strength,
        skill_scale=cfg.skill_scale,
        style_jitter=cfg.style_jitter,
        position_bias=cfg.position_bias,
        noise=cfg.noise,
    )
    truth = judge.skill
    cached = CachedJudge(judge)
    n, num_i = cfg.num_models, cfg.num_instructions
    out: dict[str, Any] = {"strength": strength, "seed": judge_seed}

    rr = round_robin_tournament(cached, n, num_i)
    nt = non_transitivity(preference_tensor(rr.comparisons, debias=True))
    out["pnt"], out["sntd"] = nt.pnt, nt.sntd
    corr = rank_correlations(rr.scores, truth)
    out["round_robin"] = {"spearman": corr.spearman, "kendall": corr.kendall, "fraction": 1.0}

    # (a) every model as the baseline; position[b, m] = rank of model m (0 = best) with baseline b
    positions = np.empty((n, n), dtype=np.int64)
    rho, tau, calls = [], [], []
    for b in range(n):
        res = baseline_tournament(cached, n, num_i, baseline=b)
        positions[b, res.ranking] = np.arange(n)
        c = rank_correlations(res.scores, truth)
        rho.append(c.spearman)
        tau.append(c.kendall)
        calls.append(res.num_calls)
    rank_range = positions.max(axis=0) - positions.min(axis=0)
    out["baseline"] = {
        "spearman": float(np.mean(rho)),
        "kendall": float(np.mean(tau)),
        "fraction": float(np.mean(calls)) / rr.num_calls,
        "spearman_min": float(np.min(rho)),
        "spearman_max": float(np.max(rho)),
        "spearman_std": float(np.std(rho)),
        "mean_rank_change": float(rank_range.mean()),
        "max_rank_change": int(rank_range.max()),
    }

    def record(name: str, res: Any) -> None:
        c = rank_correlations(res.scores, truth)
        out[name] = {
            "spearman": c.spearman,
            "kendall": c.kendall,
            "fraction": res.num_calls / rr.num_calls,
            "matches": res.num_matches,
            "exhausted": bool(res.exhausted),
        }

    matched = matched_round_robin(cfg)
    for r, k in zip(cfg.swim_repeats, jax.random.split(k_swim, len(cfg.swim_repeats)), strict=True):
        swim = swim_tournament(cached, n, num_i, key=k, repeats=r)
        record(f"swim_r{r}", swim)
        # insertion at the same repeats, at its own cost and capped at Swim's calls; a round robin cut to them
        record(f"insertion_r{r}", insertion_tournament(cached, n, num_i, key=k, repeats=r))
        capped = insertion_tournament(cached, n, num_i, key=k, repeats=r, budget=swim.num_calls)
        record(f"insertion_matched_r{r}", capped)
        if r in matched:
            record(f"rr_matched_r{r}", round_robin_tournament(cached, n, num_i, budget=swim.num_calls))
    out["round_robin_calls"] = rr.num_calls
    out["distinct_judge_calls"] = cached.num_calls
    return out


# ----------------------------------------------------------------------------------------------------------------
# aggregation and figures


def summarise(cfg: JudgeTournamentsConfig, per_judge: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per strength: means (and standard deviations) over the judges."""
    table = []

    def mean_std(rows: list[dict[str, Any]], get: Any) -> tuple[float, float]:
        v = np.asarray([get(r) for r in rows], dtype=np.float64)
        return float(np.mean(v)), float(np.std(v))

    for strength, rows in zip(cfg.strengths, per_judge, strict=True):
        stat = functools.partial(mean_std, rows)
        row: dict[str, Any] = {"strength": strength}
        row["pnt"], row["pnt_std"] = stat(lambda r: r["pnt"])
        row["sntd"], row["sntd_std"] = stat(lambda r: r["sntd"])
        for m in method_names(cfg):
            for field in ("spearman", "kendall", "fraction"):
                row[f"{m}/{field}"], row[f"{m}/{field}_std"] = stat(lambda r, m=m, f=field: r[m][f])
        for field in ("spearman_min", "spearman_max", "spearman_std", "mean_rank_change", "max_rank_change"):
            row[f"baseline/{field}"] = stat(lambda r, f=field: r["baseline"][f])[0]
        table.append(row)
    return table


def nontransitivity_figure(run: Run, cfg: JudgeTournamentsConfig, table: list[dict[str, Any]]) -> None:
    s = np.asarray(cfg.strengths)
    fig, ax1 = plt.subplots(figsize=(6.2, 4.2))
    for i, (name, label) in enumerate((("pnt", "PNT (hard)"), ("sntd", "SNTD (soft, bits)"))):
        mean = np.asarray([row[name] for row in table])
        std = np.asarray([row[f"{name}_std"] for row in table])
        ax1.plot(s, mean, "o-", color=f"C{i}", label=label)
        ax1.fill_between(s, mean - std, mean + std, color=f"C{i}", alpha=0.15)
    ax1.set_xlabel("non-transitivity strength of the simulated judge")
    ax1.set_ylabel("non-transitivity (mean over triplets and instructions)")
    ax1.set_title(
        f"{cfg.num_models} models, {cfg.num_instructions} instructions; mean +- std over {cfg.num_seeds} judges",
        fontsize=9,
    )
    ax1.legend(fontsize=8)
    fig.tight_layout()
    run.save_figure(fig, "nontransitivity")
    plt.close(fig)


def strength_figure(run: Run, cfg: JudgeTournamentsConfig, table: list[dict[str, Any]]) -> None:
    s = np.asarray(cfg.strengths)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    top = max(cfg.swim_repeats)
    main_lines = {"baseline", "round_robin", f"swim_r{top}", f"insertion_r{top}"}
    for i, m in enumerate(method_names(cfg)):
        mean = np.asarray([row[f"{m}/spearman"] for row in table])
        std = np.asarray([row[f"{m}/spearman_std"] for row in table])
        label = "baseline-anchored (mean over baselines)" if m == "baseline" else m
        if m not in main_lines:  # other repeats and matched round robins: thin lines, no band (readability)
            ax1.plot(s, mean, "-", color=f"C{i}", lw=0.8, alpha=0.7, label=label)
            continue
        ax1.plot(s, mean, "o-", color=f"C{i}", label=label)
        ax1.fill_between(s, mean - std, mean + std, color=f"C{i}", alpha=0.12)
    lo = np.asarray([row["baseline/spearman_min"] for row in table])
    hi = np.asarray([row["baseline/spearman_max"] for row in table])
    ax1.plot(s, lo, ":", color="C0", lw=1, label="baseline: worst / best baseline")
    ax1.plot(s, hi, ":", color="C0", lw=1)
    ax1.set_xlabel("non-transitivity strength")
    ax1.set_ylabel("Spearman vs true (latent skill) ranking")
    ax1.set_title(f"mean +- std over {cfg.num_seeds} judges", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.plot(s, [row["baseline/mean_rank_change"] for row in table], "o-", label="mean over models")
    ax2.plot(s, [row["baseline/max_rank_change"] for row in table], "s-", label="max over models")
    ax2.set_xlabel("non-transitivity strength")
    ax2.set_ylabel("rank range of a model across baselines")
    ax2.set_title("baseline dependence of AlpacaEval-style rankings", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    run.save_figure(fig, "spearman_vs_strength")
    plt.close(fig)


def fraction_figure(run: Run, cfg: JudgeTournamentsConfig, table: list[dict[str, Any]]) -> None:
    """Headline: Spearman against the judge calls used (fraction of the full round robin's), at the lowest, the
    headline and the highest strength: Swim, insertion capped at Swim's calls, and a round robin cut to them."""
    picks = sorted({0, list(cfg.strengths).index(cfg.headline_strength), len(table) - 1})
    fig, axes = plt.subplots(1, len(picks), figsize=(4.6 * len(picks), 4.2), sharey=True, squeeze=False)
    matched = matched_round_robin(cfg)
    for ax, j in zip(axes[0], picks, strict=True):
        row = table[j]
        for name, marker, color, reps, label in (
            ("swim", "o-", "C2", cfg.swim_repeats, "Swim (Swiss rounds)"),
            ("insertion", "s-", "C3", cfg.swim_repeats, "insertion (own cost)"),
            ("insertion_matched", "s--", "C4", cfg.swim_repeats, "insertion (capped at Swim's calls)"),
            ("rr_matched", "^:", "C1", matched, "round robin (Swim's calls)"),
        ):
            fx = [row[f"{name}_r{r}/fraction"] for r in reps]
            fy = [row[f"{name}_r{r}/spearman"] for r in reps]
            ax.plot(fx, fy, marker, color=color, label=label, mfc="none" if "matched" in name else None)
        ax.plot([1.0], [row["round_robin/spearman"]], "*", color="C1", ms=12, label="full round robin + BT")
        ax.plot([row["baseline/fraction"]], [row["baseline/spearman"]], "s", color="C0", mfc="none", ms=8,
                label="baseline-anchored")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("judge calls / full round-robin calls")
        ax.set_title(f"non-transitivity {row['strength']:g} (PNT {row['pnt']:.2f})", fontsize=9)
    axes[0, 0].set_ylabel("Spearman vs true ranking (mean over judges)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        f"repeats per match {list(cfg.swim_repeats)}; {cfg.num_seeds} judges per strength", fontsize=9
    )
    fig.tight_layout()
    run.save_figure(fig, "spearman_vs_fraction")
    plt.close(fig)


def format_table(cfg: JudgeTournamentsConfig, table: list[dict[str, Any]]) -> str:
    methods = method_names(cfg)
    width = [
        max(11, len(m)) for m in methods
    ]  # whole names: "insertion_matched_r20" and "insertion_r20" differ late
    head = f"{'strength':>8} {'PNT':>6} {'SNTD':>7} {'dRank':>5} {'dRmax':>5} " + " ".join(
        f"{m:>{w}}" for m, w in zip(methods, width, strict=True)
    )
    lines = [head, " " * 40 + "Spearman (Kendall) vs true ranking; last row: judge calls / round-robin calls"]
    for row in table:
        pairs = [f"{row[f'{m}/spearman']:.2f}({row[f'{m}/kendall']:.2f})" for m in methods]
        cells = " ".join(f"{c:>{w}}" for c, w in zip(pairs, width, strict=True))
        lines.append(
            f"{row['strength']:>8g} {row['pnt']:>6.3f} {row['sntd']:>7.4f} "
            f"{row['baseline/mean_rank_change']:>5.2f} {row['baseline/max_rank_change']:>5.1f} {cells}"
        )
    fractions = " ".join(
        f"{np.mean([row[f'{m}/fraction'] for row in table]):>{w}.3f}"
        for m, w in zip(methods, width, strict=True)
    )
    lines.append(f"{'fraction':>8} {'':>6} {'':>7} {'':>5} {'':>5} {fractions}")
    return "\n".join(lines)


def main(cfg: JudgeTournamentsConfig) -> dict[str, Any]:
    t_start = time.time()
    enable_compilation_cache()
    run = start_run("judge_tournaments", cfg, run_name=cfg.run_name, root=cfg.out_dir)
    print(
        f"[judge_tournaments] {cfg.num_models} models, {cfg.num_instructions} instructions, strengths "
        f"{list(cfg.strengths)}, {cfg.num_seeds} judges each, position bias {cfg.position_bias:g}, "
        f"noise {cfg.noise:g}, Swim repeats {list(cfg.swim_repeats)}",
        flush=True,
    )
    with run:
        per_judge: list[list[dict[str, Any]]] = [[] for _ in cfg.strengths]
        jobs = [(i, s, j) for i, s in enumerate(cfg.strengths) for j in range(cfg.num_seeds)]
        for i, s, j in progress(jobs, desc="strength x judge"):
            per_judge[i].append(study_judge(cfg, float(s), j))
        table = summarise(cfg, per_judge)
        for i, row in enumerate(table):
            scalars = {"strength": row["strength"], "nt/pnt": row["pnt"], "nt/sntd": row["sntd"]}
            for m in method_names(cfg):
                scalars[f"spearman/{m}"] = row[f"{m}/spearman"]
                scalars[f"kendall/{m}"] = row[f"{m}/kendall"]
                scalars[f"fraction/{m}"] = row[f"{m}/fraction"]
            scalars["baseline/mean_rank_change"] = row["baseline/mean_rank_change"]
            scalars["baseline/max_rank_change"] = row["baseline/max_rank_change"]
            scalars["baseline/spearman_spread"] = row["baseline/spearman_max"] - row["baseline/spearman_min"]
            run.tracker.scalars(scalars, i)
        nontransitivity_figure(run, cfg, table)
        strength_figure(run, cfg, table)
        fraction_figure(run, cfg, table)

        head = table[list(cfg.strengths).index(cfg.headline_strength)]
        top = max(cfg.swim_repeats)
        swim = f"swim_r{top}"
        headline = {
            "strength": cfg.headline_strength,
            "method": swim,
            "swim_spearman": head[f"{swim}/spearman"],
            "insertion_spearman": head[f"insertion_r{top}/spearman"],
            "insertion_fraction": head[f"insertion_r{top}/fraction"],
            "insertion_matched_spearman": head[f"insertion_matched_r{top}/spearman"],
            "round_robin_spearman": head["round_robin/spearman"],
            "matched_round_robin_spearman": head.get(f"rr_matched_r{top}/spearman"),
            "swim_fraction": head[f"{swim}/fraction"],
        }
        results: dict[str, Any] = {
            "experiment": "judge_tournaments",
            "run": run.name,
            "methods": method_names(cfg),
            "table": table,
            "per_judge": per_judge,
            "headline": headline,
        }
        print(format_table(cfg, table), flush=True)
        print(
            f"[judge_tournaments] at strength {cfg.headline_strength:g}: Swim (repeats {top}) "
            f"reaches Spearman {headline['swim_spearman']:.3f} vs round-robin's "
            f"{headline['round_robin_spearman']:.3f} at {100 * headline['swim_fraction']:.1f}% of its comparisons "
            f"(insertion: {headline['insertion_spearman']:.3f} at {100 * headline['insertion_fraction']:.1f}%, "
            f"{headline['insertion_matched_spearman']:.3f} capped at Swim's calls)",
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
