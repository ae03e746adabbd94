"""``python -m jaxsafety.judges``: Bradley-Terry ratings from judge comparisons, and simulated-judge tournaments.

::

    python -m jaxsafety.judges fit --input comparisons.csv --output ratings.json [--bootstrap 200] [--seed 0]
        [--ties half|davidson] [--l2 1e-6] [--anchor MODEL] [--method auto|newton|newman|mm]
    python -m jaxsafety.judges tournament --judge simulated|lm --format round_robin|swim|insertion|baseline
        --output result.json [--num-models 8] [--num-instructions 32] [--nontransitivity 0] [--position-bias 0]
        [--noise 0] [--baseline 0] [--repeats 3] [--rounds N] [--budget N] [--seed 0]
        [--comparisons-csv comparisons.csv]

``fit`` reads a comparisons CSV (:func:`~jaxsafety.judges.data.read_comparisons_csv`: ``model_a, model_b`` and
``winner`` in {a, b, tie} or ``prob_a``; optional ``instruction``, ``position``), fits Bradley-Terry, prints the
models ranked with Elo ratings (scale 400, base 10, mean 1000 or ``--anchor`` at 1000), 95% percentile bootstrap
intervals of the Elo ratings, BT scores, comparison counts and win rates, and writes them as JSON with the fit's
metadata; when both display orders occur, the judge's position consistency; when the CSV has an ``instruction``
column and >= 3 models, PNT / SNTD non-transitivity (Xu et al. 2025, Sec. 3) of the debiased preference tensor.

``tournament`` builds a simulated judge (:func:`~jaxsafety.judges.judges.make_simulated_judge`), runs one
tournament with it, prints the ranking with its scores, Spearman / Kendall against the judge's latent skills and
the judge calls spent, and writes JSON (and with ``--comparisons-csv`` the comparisons, which ``fit`` reads).
``--judge lm`` instead uses :func:`~jaxsafety.judges.lm_judge.lm_judge_tournament`: the zoo LM judge
(``--lm-steps``) and two zoo arithmetic LMs (``--response-steps``) whose greedy and sampled answers are the six
response models; the truth is their measured accuracy (about 2 minutes on 2 CPU cores at the defaults; the trained
models go through the trained-model cache ``$JAXSAFETY_CACHE``, so a rerun loads them).

Every argument and the whole CSV are checked before anything is computed or written: a bad value prints one line
``error: <field>=<value> is invalid: accepted values are ...`` (CSV errors name the file, row and column) to
stderr and exits with status 2. The commands are :func:`jaxsafety.config.run_subcommands` over
:class:`FitConfig` and :class:`TournamentConfig` (``--config FILE`` and ``--print-config`` work as for every
config).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxsafety.config import (
    ConfigError,
    Subcommand,
    check,
    check_choice,
    check_range,
    format_number,
    option,
    print_table,
    run_subcommands,
)
from jaxsafety.io import check_output_path, write_atomic, write_json_atomic

__all__ = ["FitConfig", "TournamentConfig", "main"]

ELO_SCALE, ELO_BASE, ELO_RATING = 400.0, 10.0, 1000.0
FORMATS = ("round_robin", "swim", "insertion", "baseline")
JUDGES = ("simulated", "lm")
# PNT / SNTD work on [I, T] arrays with T = n(n-1)(n-2)/6 triplets; above this many models they are skipped.
MAX_NONTRANSITIVITY_MODELS = 64


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


# ----------------------------------------------------------------------------------------------------------------
# fit


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """``fit``: Bradley-Terry / Elo ratings from a comparisons CSV."""

    input: Path = option(help="CSV: model_a,model_b,winner|prob_a[,instruction][,position]")
    output: Path = option(help="JSON file to write (atomically)")
    bootstrap: int = option(200, help="bootstrap resamples for 95%% intervals (0: none)")
    seed: int = option(0, help="seed of the bootstrap resamples")
    ties: str = option("half", help="half (a tie is half a win) or davidson (Davidson 1970)")
    l2: float = option(1e-6, help="Gaussian prior precision on the scores")
    anchor: str | None = option(None, help="model whose Elo is fixed at 1000 (default: the mean is 1000)")
    method: str = option("auto", help="solver: auto, newton, newman or mm")

    def __post_init__(self) -> None:
        from jaxsafety.judges.bradley_terry import METHODS, TIES

        check_output_path("output", self.output, ".json")
        check_range("bootstrap", self.bootstrap, ge=0, integer=True)
        if self.bootstrap == 1:
            raise ConfigError("bootstrap", 1, "0 (no intervals) or an integer >= 2")
        check_range("seed", self.seed, ge=0, integer=True)
        check_choice("ties", self.ties, TIES)
        check_choice("method", self.method, METHODS)
        check_range("l2", self.l2, ge=0.0)


class _FitInputs(NamedTuple):
    comparisons: Any  # judges.data.Comparisons
    anchor: int | None  # index of --anchor
    has_instructions: bool  # the CSV has an instruction column


def _load_fit(cfg: FitConfig) -> _FitInputs:
    """The comparisons CSV, checked, with ``--anchor`` and ``--ties davidson`` checked against it."""
    from jaxsafety.judges.data import read_comparisons_csv

    c = read_comparisons_csv(cfg.input)
    anchor = None
    if cfg.anchor is not None:
        if cfg.anchor not in c.model_names:
            raise ConfigError("anchor", cfg.anchor, "a model of the CSV: " + ", ".join(c.model_names))
        anchor = c.model_names.index(cfg.anchor)
    if cfg.ties == "davidson":
        soft = np.flatnonzero(~np.isin(c.prob_a, (0.0, 0.5, 1.0)))
        if soft.size:
            raise ConfigError(
                f"{Path(cfg.input).name}:comparison {soft[0] + 1}:prob_a",
                float(c.prob_a[soft[0]]),
                "0, 0.5 or 1 (hard verdicts) with --ties davidson",
            )
    with Path(cfg.input).open(newline="") as f:
        header = [h.strip().lower() for h in next(csv.reader(f), [])]
    return _FitInputs(c, anchor, "instruction" in header)


def _per_model_counts(c: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(comparisons [n], win rate [n])``: how many records involve each model and its mean (soft) win over them
    (ties count 1/2); NaN for a model without comparisons."""
    n = c.num_models
    count = np.bincount(c.model_a, minlength=n) + np.bincount(c.model_b, minlength=n)
    wins = np.bincount(c.model_a, c.prob_a, minlength=n) + np.bincount(c.model_b, 1.0 - c.prob_a, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, wins / count


def fit_cmd(cfg: FitConfig, inputs: _FitInputs) -> None:
    """``fit``: the Bradley-Terry fit with bootstrap Elo intervals, position consistency and non-transitivity;
    prints the ranking and writes the JSON."""
    import jax

    from jaxsafety.judges.bradley_terry import (
        bootstrap_bradley_terry,
        fit_bradley_terry,
        resolve_method,
        to_elo,
    )
    from jaxsafety.judges.metrics import non_transitivity, position_consistency, preference_tensor
    from jaxsafety.xla_flags import enable_compilation_cache

    enable_compilation_cache()
    c = inputs.comparisons
    n = c.num_models
    options = dict(num_models=n, l2=cfg.l2, method=cfg.method, ties=cfg.ties)
    if cfg.bootstrap:
        boot = bootstrap_bradley_terry(
            jax.random.key(cfg.seed), c.model_a, c.model_b, c.prob_a, num_resamples=cfg.bootstrap, **options
        )
        fit = boot.estimate
    else:
        boot = None
        fit = fit_bradley_terry(c.model_a, c.model_b, c.prob_a, **options)
    elo_kw = dict(scale=ELO_SCALE, base=ELO_BASE, anchor=inputs.anchor, anchor_rating=ELO_RATING)
    scores = np.asarray(fit.scores, dtype=np.float64)
    elo = np.asarray(to_elo(scores, **elo_kw))
    ci = [None] * n
    if boot is not None:
        ok = np.asarray(boot.converged, dtype=bool)
        boot_elo = np.asarray(to_elo(boot.scores, **elo_kw))[ok]
        if boot_elo.shape[0] >= 2:
            lo, hi = np.percentile(boot_elo, [2.5, 97.5], axis=0)
            ci = [[float(a), float(b)] for a, b in zip(lo, hi, strict=True)]
    count, win_rate = _per_model_counts(c)
    order = np.argsort(-scores, kind="stable")
    models = [
        {
            "rank": r + 1,
            "name": c.model_names[i],
            "score": float(scores[i]),
            "elo": float(elo[i]),
            "ci95": ci[i],
            "num_comparisons": int(count[i]),
            "win_rate": _finite_or_none(win_rate[i]),
        }
        for r, i in enumerate(order.tolist())
    ]
    result: dict[str, Any] = {
        "command": "fit",
        "input": str(cfg.input),
        "num_models": n,
        "num_comparisons": c.num_comparisons,
        "num_instructions": c.num_instructions,
        "fit": {
            "model": "Bradley-Terry MAP, P(i beats j) = sigmoid(score_i - score_j), scores centred",
            "ties": cfg.ties,
            "method": resolve_method(cfg.method, cfg.ties, n),
            "l2": cfg.l2,
            "converged": bool(fit.converged),
            "num_iterations": int(fit.num_iterations),
            "log_likelihood": float(fit.log_likelihood),
            "tie_parameter": _finite_or_none(float(fit.tie_parameter)),
        },
        "elo": {"scale": ELO_SCALE, "base": ELO_BASE, "anchor": cfg.anchor, "anchor_rating": ELO_RATING},
        "bootstrap": {"num_resamples": cfg.bootstrap, "seed": cfg.seed, "interval": "percentile, 95%, Elo"},
        "models": models,
    }
    if boot is not None:
        result["bootstrap"]["converged_fraction"] = float(np.mean(np.asarray(boot.converged)))
    if set(np.unique(c.position).tolist()) == {0, 1}:
        pc = position_consistency(c)
        result["position_consistency"] = {
            "rate": _finite_or_none(pc.rate),
            "num_pairs": pc.num_pairs,
            "first_shown_win_rate": _finite_or_none(pc.first_shown_win_rate),
        }
    if inputs.has_instructions and 3 <= n <= MAX_NONTRANSITIVITY_MODELS:
        nt = non_transitivity(preference_tensor(c))
        result["non_transitivity"] = {
            "pnt": _finite_or_none(nt.pnt),
            "sntd": _finite_or_none(nt.sntd),
            "num_triplets": int(nt.triplets.shape[0]),
            "num_observed_cells": int(nt.num_observed.sum()),
        }

    print(
        f"{n} models, {c.num_comparisons} comparisons, {c.num_instructions} instructions; Bradley-Terry "
        f"(ties={cfg.ties}, {result['fit']['method']}, converged={result['fit']['converged']})"
    )
    print_table(
        ["rank", "model", "Elo", "95% CI", "BT score", "comparisons", "win rate"],
        [
            [
                str(m["rank"]),
                m["name"],
                format_number(m["elo"], ".1f"),
                "-" if m["ci95"] is None else f"[{m['ci95'][0]:.1f}, {m['ci95'][1]:.1f}]",
                format_number(m["score"], ".4f"),
                str(m["num_comparisons"]),
                format_number(m["win_rate"], ".3f"),
            ]
            for m in models
        ],
    )
    if "position_consistency" in result:
        pc = result["position_consistency"]
        print(
            f"position consistency {format_number(pc['rate'], '.3f')} over {pc['num_pairs']} pairs; first-shown win rate "
            f"{format_number(pc['first_shown_win_rate'], '.3f')}"
        )
    if "non_transitivity" in result:
        nt = result["non_transitivity"]
        print(
            f"non-transitivity: PNT {format_number(nt['pnt'], '.4f')}, SNTD {format_number(nt['sntd'], '.4g')}"
        )
    write_json_atomic(cfg.output, result)
    print(f"wrote {cfg.output}")


# ----------------------------------------------------------------------------------------------------------------
# tournament


@dataclasses.dataclass(frozen=True)
class TournamentConfig:
    """``tournament``: rank models with a simulated judge or the zoo LM judge."""

    format: str = option(
        help="round_robin, swim (Swiss-Wise Iterative Matchmaking), insertion (binary-search insertion) or baseline"
    )
    output: Path = option(help="JSON file to write (atomically)")
    judge: str = option(
        "simulated",
        help="simulated, or lm: the zoo LM judge ranking 6 response models that zoo arithmetic LMs generate",
    )
    lm_steps: int = option(1600, help="--judge lm: training steps of the LM judge")
    response_steps: str = option(
        "300,60", help="--judge lm: training steps STRONG,WEAK of the two response LMs"
    )
    num_models: int = option(8, help="number of models")
    num_instructions: int = option(32, help="number of instructions")
    nontransitivity: float = option(0.0, help="disc-game (rock-paper-scissors) weight")
    position_bias: float = option(0.0, help="logit bonus of the first-shown response")
    noise: float = option(0.0, help="standard deviation of the judge's logit noise")
    baseline: int = option(0, help="baseline model index (format baseline)")
    repeats: int = option(3, help="instructions per match (swim, insertion)")
    rounds: int | None = option(None, help="swim: Swiss rounds (default ceil(log2 num_models))")
    budget: int | None = option(None, help="judge-call budget (default: unlimited)")
    seed: int = option(0, help="seed of the judge and the tournament's draws")
    comparisons_csv: Path | None = option(None, help="also write the comparisons (readable by fit)")

    def __post_init__(self) -> None:
        check_output_path("output", self.output, ".json")
        if self.comparisons_csv is not None:
            check_output_path("comparisons_csv", self.comparisons_csv, ".csv")
        check_choice("judge", self.judge, JUDGES)
        check_choice("format", self.format, FORMATS)
        check_range("num_models", self.num_models, ge=2, integer=True)
        check_range("num_instructions", self.num_instructions, ge=1, integer=True)
        check_range("nontransitivity", self.nontransitivity, ge=0.0)
        check_range("noise", self.noise, ge=0.0)
        check_range("position_bias", self.position_bias)
        check(math.isfinite(self.position_bias), "position_bias", self.position_bias, "finite numbers")
        check_range("seed", self.seed, ge=0, integer=True)
        if self.format == "baseline":
            check_range("baseline", self.baseline, ge=0, lt=self.num_models, integer=True)
        if self.format in ("swim", "insertion"):
            check_range("repeats", self.repeats, ge=1, le=self.num_instructions, integer=True)
        if self.rounds is not None:
            check(self.format == "swim", "rounds", self.rounds, "unset unless --format swim")
            check_range("rounds", self.rounds, ge=1, integer=True)
        if self.budget is not None:
            check_range("budget", self.budget, ge=1, integer=True)
        if self.judge == "lm":
            check(
                self.num_models == 6,
                "num_models",
                self.num_models,
                "6 with --judge lm (2 LMs x 3 temperatures)",
            )
            self.lm_configs()  # the judge's and the response LMs' configs, checked before anything trains

    def lm_configs(self) -> tuple[Any, tuple[int, int]]:
        """``--judge lm``: the judge's :class:`~jaxsafety.judges.lm_judge.LMJudgeConfig` (``lm_steps``) and the
        response LMs' training steps, checked (the LMs' configs too)."""
        from jaxsafety.judges.lm_judge import LMJudgeConfig, response_lm_config

        check_range("lm_steps", self.lm_steps, ge=1, integer=True)
        try:
            judge = dataclasses.replace(LMJudgeConfig(), steps=self.lm_steps)
        except ConfigError as err:
            raise ConfigError(
                "lm_steps", self.lm_steps, f"a value the judge's optimizer accepts ({err})"
            ) from None
        try:
            steps = tuple(int(x) for x in self.response_steps.split(","))
        except ValueError:
            steps = ()
        check(
            len(steps) == 2,
            "response_steps",
            self.response_steps,
            "two integers STRONG,WEAK (training steps)",
        )
        try:
            for s in steps:
                response_lm_config(judge, s)
        except ConfigError as err:
            raise ConfigError(
                "response_steps", self.response_steps, f"values the LMs accept ({err})"
            ) from None
        return judge, steps


def _write_comparisons_csv(comparisons: Any, path: Path) -> None:
    from jaxsafety.judges.data import to_csv

    write_atomic(path, lambda tmp: to_csv(comparisons, tmp))


def tournament_cmd(cfg: TournamentConfig) -> None:
    """``tournament``: one tournament with the simulated or the LM judge; prints the ranking against the truth
    and writes the JSON (and the comparisons CSV)."""
    import jax

    from jaxsafety.judges.judges import CachedJudge, make_simulated_judge
    from jaxsafety.judges.metrics import rank_correlations
    from jaxsafety.judges.tournaments import (
        baseline_tournament,
        insertion_tournament,
        round_robin_tournament,
        swim_rounds,
        swim_tournament,
    )
    from jaxsafety.xla_flags import enable_compilation_cache

    enable_compilation_cache()
    k_judge, k_tournament = jax.random.split(jax.random.key(cfg.seed))
    n, num_i = cfg.num_models, cfg.num_instructions
    if cfg.judge == "lm":
        from jaxsafety.judges.lm_judge import lm_judge_tournament

        judge_cfg, steps = cfg.lm_configs()
        lm = lm_judge_tournament(judge_cfg, steps, num_instructions=num_i, seed=cfg.seed, key=k_judge)
        cached = CachedJudge(lm.judge.batched(lm.task.instructions, lm.task.responses))
        truth, truth_name, model_names, lm_info = lm.task.accuracy, "accuracy", lm.model_names, lm.info
    else:
        judge = make_simulated_judge(
            k_judge,
            n,
            num_i,
            nontransitivity=cfg.nontransitivity,
            position_bias=cfg.position_bias,
            noise=cfg.noise,
        )
        cached, truth, truth_name, model_names, lm_info = CachedJudge(judge), judge.skill, "skill", None, None
    if cfg.format == "round_robin":
        res = round_robin_tournament(cached, n, num_i, budget=cfg.budget)
    elif cfg.format == "swim":
        res = swim_tournament(
            cached, n, num_i, key=k_tournament, rounds=cfg.rounds, repeats=cfg.repeats, budget=cfg.budget
        )
    elif cfg.format == "insertion":
        res = insertion_tournament(cached, n, num_i, key=k_tournament, repeats=cfg.repeats, budget=cfg.budget)
    else:
        res = baseline_tournament(cached, n, num_i, baseline=cfg.baseline, budget=cfg.budget)
    corr = rank_correlations(res.scores, truth)
    names = model_names or res.comparisons.model_names
    true_order = np.argsort(-np.asarray(truth), kind="stable")
    true_rank = np.empty(n, dtype=np.int64)
    true_rank[true_order] = np.arange(1, n + 1)
    ranking = [
        {
            "rank": r + 1,
            "name": names[i],
            "score": _finite_or_none(float(res.scores[i])),
            "true_rank": int(true_rank[i]),
            truth_name: float(truth[i]),
            "unranked": bool(res.unranked[i]),
        }
        for r, i in enumerate(res.ranking.tolist())
    ]
    result: dict[str, Any] = {
        "command": "tournament",
        "judge": {
            "kind": cfg.judge,
            "num_models": n,
            "num_instructions": num_i,
            "nontransitivity": cfg.nontransitivity,
            "position_bias": cfg.position_bias,
            "noise": cfg.noise,
            "seed": cfg.seed,
            **({"lm": lm_info} if lm_info else {}),
        },
        "format": cfg.format,
        "baseline": names[cfg.baseline] if cfg.format == "baseline" else None,
        "repeats": cfg.repeats if cfg.format in ("swim", "insertion") else None,
        "rounds": (cfg.rounds or swim_rounds(n)) if cfg.format == "swim" else None,
        "budget": cfg.budget,
        "ranking": ranking,
        "true_ranking": [names[i] for i in true_order.tolist()],
        "spearman": _finite_or_none(corr.spearman),
        "kendall": _finite_or_none(corr.kendall),
        "num_judge_calls": int(res.num_calls),
        "num_distinct_judge_calls": int(cached.num_calls),
        "num_matches": int(res.num_matches),
        "exhausted": bool(res.exhausted),
        "comparisons_csv": None if cfg.comparisons_csv is None else str(cfg.comparisons_csv),
    }
    if lm_info:
        print(
            f"{cfg.format} tournament, LM judge (held-out accuracy {lm_info['judge_accuracy']:.3f}): {n} response "
            f"models generated by zoo arithmetic LMs, {num_i} instructions"
        )
    else:
        print(
            f"{cfg.format} tournament, simulated judge: {n} models, {num_i} instructions, "
            f"nontransitivity={cfg.nontransitivity}, position_bias={cfg.position_bias}, noise={cfg.noise}"
        )
    print_table(
        ["rank", "model", "score", "true rank", truth_name],
        [
            [
                str(m["rank"]) + ("*" if m["unranked"] else ""),
                m["name"],
                format_number(m["score"], ".4f"),
                str(m["true_rank"]),
                format_number(m[truth_name], ".3f"),
            ]
            for m in ranking
        ],
    )
    print(
        f"Spearman {format_number(result['spearman'], '.4f')}, Kendall {format_number(result['kendall'], '.4f')} vs the true "
        f"ranking; {result['num_judge_calls']} judge calls ({result['num_distinct_judge_calls']} distinct), "
        f"{result['num_matches']} matches" + (", budget exhausted (* = unranked)" if res.exhausted else "")
    )
    if cfg.comparisons_csv is not None:
        _write_comparisons_csv(res.comparisons, cfg.comparisons_csv)
    write_json_atomic(cfg.output, result)
    print(f"wrote {cfg.output}" + (f" and {cfg.comparisons_csv}" if cfg.comparisons_csv is not None else ""))


# ----------------------------------------------------------------------------------------------------------------

COMMANDS = {
    "fit": Subcommand(
        FitConfig, fit_cmd, load=_load_fit, help="Bradley-Terry / Elo ratings from a comparisons CSV"
    ),
    "tournament": Subcommand(
        TournamentConfig, tournament_cmd, help="rank models with a simulated judge or the zoo LM judge"
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input)."""
    return run_subcommands("python -m jaxsafety.judges", COMMANDS, argv, description=__doc__.split("\n")[0])
