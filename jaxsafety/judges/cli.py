"""``python -m jaxsafety.judges``: Bradley-Terry ratings from judge comparisons, and simulated-judge tournaments.

::

    python -m jaxsafety.judges fit --input comparisons.csv --output ratings.json [--bootstrap 200] [--seed 0]
        [--ties half|davidson] [--l2 1e-6] [--anchor MODEL] [--method auto|newton|newman|mm]
    python -m jaxsafety.judges tournament --judge simulated|lm --format round_robin|swim|baseline --output result.json
        [--num-models 8] [--num-instructions 32] [--nontransitivity 0] [--position-bias 0] [--noise 0]
        [--baseline 0] [--repeats 3] [--budget N] [--seed 0] [--comparisons-csv comparisons.csv]

``fit`` reads a comparisons CSV (:func:`~jaxsafety.judges.data.read_comparisons_csv`: ``model_a, model_b`` and
``winner`` in {a, b, tie} or ``prob_a``; optional ``instruction``, ``position``), fits Bradley-Terry, prints the
models ranked with Elo ratings (scale 400, base 10, mean 1000 or ``--anchor`` at 1000), 95% percentile bootstrap
intervals of the Elo ratings, BT scores, comparison counts and win rates, and writes them as JSON with the fit's
metadata; when both display orders occur, the judge's position consistency; when the CSV has an ``instruction``
column and >= 3 models, PNT / SNTD non-transitivity (Xu et al. 2025, Sec. 3) of the debiased preference tensor.

``tournament`` builds a simulated judge (:func:`~jaxsafety.judges.judges.make_simulated_judge`), runs one
tournament with it, prints the ranking with its scores, Spearman / Kendall against the judge's latent skills and
the judge calls spent, and writes JSON (and with ``--comparisons-csv`` the comparisons, which ``fit`` reads).
``--judge lm`` instead trains the zoo LM judge (:mod:`jaxsafety.judges.lm_judge`, ``--lm-steps``) and two zoo
arithmetic LMs (``--response-steps``) whose greedy and sampled answers are the six response models; the truth is
their measured accuracy (about 2 minutes on 2 CPU cores at the defaults; the trained models go through the
trained-model cache ``$JAXSAFETY_CACHE``, so a rerun loads them).

Every argument and the whole CSV are checked before anything is computed or written: a bad value prints one line
``error: <field>=<value> is invalid: accepted values are ...`` (CSV errors name the file, row and column) to
stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxsafety.config import (
    ConfigError,
    check,
    check_choice,
    check_range,
    format_number,
    print_table,
)
from jaxsafety.io import check_output_path

__all__ = ["main"]

ELO_SCALE, ELO_BASE, ELO_RATING = 400.0, 10.0, 1000.0
FORMATS = ("round_robin", "swim", "baseline")
JUDGES = ("simulated", "lm")
# --judge lm: response models are two zoo arithmetic LMs decoded greedily and at these temperatures
LM_TEMPERATURES = ((0.0, 1.5, 3.0), (0.0, 1.0, 2.5))  # (stronger LM, weaker LM)
# PNT / SNTD work on [I, T] arrays with T = n(n-1)(n-2)/6 triplets; above this many models they are skipped.
MAX_NONTRANSITIVITY_MODELS = 64


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


# ----------------------------------------------------------------------------------------------------------------
# fit


def _csv_header(path: str | Path) -> list[str]:
    with Path(path).open(newline="") as f:
        return [h.strip().lower() for h in next(csv.reader(f), [])]


def _per_model_counts(c: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(comparisons [n], win rate [n])``: how many records involve each model and its mean (soft) win over them
    (ties count 1/2); NaN for a model without comparisons."""
    n = c.num_models
    count = np.bincount(c.model_a, minlength=n) + np.bincount(c.model_b, minlength=n)
    wins = np.bincount(c.model_a, c.prob_a, minlength=n) + np.bincount(c.model_b, 1.0 - c.prob_a, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, wins / count


def fit_cmd(args: argparse.Namespace) -> dict[str, Any]:
    """The ``fit`` command; returns the JSON payload."""
    from jaxsafety.judges.bradley_terry import METHODS, TIES, _resolve_method

    check_output_path("output", args.output, ".json")
    check_range("bootstrap", args.bootstrap, ge=0, integer=True)
    if args.bootstrap == 1:
        raise ConfigError("bootstrap", 1, "0 (no intervals) or an integer >= 2")
    check_choice("ties", args.ties, TIES)
    check_choice("method", args.method, METHODS)
    check_range("l2", args.l2, ge=0.0)

    from jaxsafety.judges.data import read_comparisons_csv

    c = read_comparisons_csv(args.input)
    anchor = None
    if args.anchor is not None:
        if args.anchor not in c.model_names:
            raise ConfigError("anchor", args.anchor, "a model of the CSV: " + ", ".join(c.model_names))
        anchor = c.model_names.index(args.anchor)

    if args.ties == "davidson":
        soft = np.flatnonzero(~np.isin(c.prob_a, (0.0, 0.5, 1.0)))
        if soft.size:
            raise ConfigError(
                f"{Path(args.input).name}:comparison {soft[0] + 1}:prob_a",
                float(c.prob_a[soft[0]]),
                "0, 0.5 or 1 (hard verdicts) with --ties davidson",
            )

    import jax

    from jaxsafety.judges.bradley_terry import bootstrap_bradley_terry, fit_bradley_terry, to_elo
    from jaxsafety.judges.metrics import non_transitivity, position_consistency, preference_tensor
    from jaxsafety.xla_flags import enable_compilation_cache

    enable_compilation_cache()
    n = c.num_models
    options = dict(num_models=n, l2=args.l2, method=args.method, ties=args.ties)
    if args.bootstrap:
        boot = bootstrap_bradley_terry(
            jax.random.key(args.seed), c.model_a, c.model_b, c.prob_a, num_resamples=args.bootstrap, **options
        )
        fit = boot.estimate
    else:
        boot = None
        fit = fit_bradley_terry(c.model_a, c.model_b, c.prob_a, **options)
    elo_kw = dict(scale=ELO_SCALE, base=ELO_BASE, anchor=anchor, anchor_rating=ELO_RATING)
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
        "input": str(args.input),
        "num_models": n,
        "num_comparisons": c.num_comparisons,
        "num_instructions": c.num_instructions,
        "fit": {
            "model": "Bradley-Terry MAP, P(i beats j) = sigmoid(score_i - score_j), scores centred",
            "ties": args.ties,
            "method": _resolve_method(args.method, args.ties, n),
            "l2": args.l2,
            "converged": bool(fit.converged),
            "num_iterations": int(fit.num_iterations),
            "log_likelihood": float(fit.log_likelihood),
            "tie_parameter": _finite_or_none(float(fit.tie_parameter)),
        },
        "elo": {"scale": ELO_SCALE, "base": ELO_BASE, "anchor": args.anchor, "anchor_rating": ELO_RATING},
        "bootstrap": {"num_resamples": args.bootstrap, "seed": args.seed, "interval": "percentile, 95%, Elo"},
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
    if "instruction" in _csv_header(args.input) and 3 <= n <= MAX_NONTRANSITIVITY_MODELS:
        nt = non_transitivity(preference_tensor(c))
        result["non_transitivity"] = {
            "pnt": _finite_or_none(nt.pnt),
            "sntd": _finite_or_none(nt.sntd),
            "num_triplets": int(nt.triplets.shape[0]),
            "num_observed_cells": int(nt.num_observed.sum()),
        }

    print(
        f"{n} models, {c.num_comparisons} comparisons, {c.num_instructions} instructions; Bradley-Terry "
        f"(ties={args.ties}, {result['fit']['method']}, converged={result['fit']['converged']})"
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
    return result


# ----------------------------------------------------------------------------------------------------------------
# tournament


def _write_csv_atomic(comparisons: Any, path: str | Path) -> None:
    """:func:`~jaxsafety.judges.data.to_csv` through a temp file + rename (like ``write_json_atomic``)."""
    from jaxsafety.judges.data import to_csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        to_csv(comparisons, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _lm_configs(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    """``--judge lm``: the judge's config (``--lm-steps``) and the two response LMs' (``--response-steps``),
    validated before anything trains."""
    import dataclasses

    from jaxsafety.judges.lm_judge import LMJudgeConfig
    from jaxsafety.train.pretrained import ArithmeticLMConfig

    check_range("lm-steps", args.lm_steps, ge=1, integer=True)
    try:
        steps = tuple(int(x) for x in args.response_steps.split(","))
    except ValueError:
        steps = ()
    check(len(steps) == 2, "response-steps", args.response_steps, "two integers STRONG,WEAK (training steps)")
    try:
        judge = dataclasses.replace(LMJudgeConfig(), steps=args.lm_steps)
    except ConfigError as err:
        raise ConfigError(
            "lm-steps", args.lm_steps, f"a value the judge's optimizer accepts ({err})"
        ) from None
    base = ArithmeticLMConfig(d_model=32, n_layers=2, n_heads=4, max_operand=judge.max_operand, ops=judge.ops)
    try:
        lms = [dataclasses.replace(base, steps=s) for s in steps]
    except ConfigError as err:
        raise ConfigError("response-steps", args.response_steps, f"values the LMs accept ({err})") from None
    return judge, lms


def _lm_judge_setup(args: argparse.Namespace, cfg, lm_cfgs, key) -> tuple[Any, np.ndarray, str, list, dict]:
    """``--judge lm``: the arithmetic LM judge (``--lm-steps``) and six response models, two zoo arithmetic LMs
    (``--response-steps``) decoded at :data:`LM_TEMPERATURES`; the truth is each model's measured accuracy."""
    from jaxsafety.judges.judges import CachedJudge
    from jaxsafety.judges.lm_judge import (
        make_generated_responses,
        make_judge_task,
        make_response_models,
        preference_label,
        train_lm_judge,
    )
    from jaxsafety.train.pretrained import arithmetic_lm

    judge = train_lm_judge(cfg, seed=args.seed)
    # the judge's held-out accuracy on fresh one-correct pairs (numpy streams its training table does not use)
    ins, _ = make_judge_task(256, seed=args.seed + 1000, max_operand=cfg.max_operand, ops=cfg.ops)
    pairs = make_response_models(ins, [0.5, 0.5], seed=args.seed + 1001, max_offset=cfg.max_offset)
    truth = [str(a) for a in pairs.answers.tolist()]
    items = [
        (s, a, b) for s, a, b, t in zip(ins, *pairs.responses, truth, strict=True) if (a == t) != (b == t)
    ]
    labels = np.asarray([preference_label(*it) for it in items])
    accuracy = float(np.mean((judge.judge_many(items) < 0.5).astype(int) == labels))
    lms = [arithmetic_lm(c, seed=args.seed + 1 + i) for i, c in enumerate(lm_cfgs)]
    models = [(lm, t) for lm, temps in zip(lms, LM_TEMPERATURES, strict=True) for t in temps]
    steps = [c.steps for c in lm_cfgs]
    names = [f"lm{s}_t{t:g}" for s, temps in zip(steps, LM_TEMPERATURES, strict=True) for t in temps]
    instructions, _ = make_judge_task(
        args.num_instructions, seed=args.seed + 2000, max_operand=cfg.max_operand
    )
    task = make_generated_responses(models, instructions, key=key, max_chars=cfg.max_response_len)
    info = {"judge_steps": cfg.steps, "judge_accuracy": accuracy, "response_steps": steps,
            "temperatures": [list(t) for t in LM_TEMPERATURES]}  # fmt: skip
    return (
        CachedJudge(judge.batched(task.instructions, task.responses)),
        task.accuracy,
        "accuracy",
        names,
        info,
    )


def tournament_cmd(args: argparse.Namespace) -> dict[str, Any]:
    """The ``tournament`` command; returns the JSON payload (``_comparisons``: the records, for the CSV)."""
    check_output_path("output", args.output, ".json")
    if args.comparisons_csv is not None:
        check_output_path("comparisons-csv", args.comparisons_csv, ".csv")
    check_choice("judge", args.judge, JUDGES)
    check_choice("format", args.format, FORMATS)
    check_range("num-models", args.num_models, ge=2, integer=True)
    check_range("num-instructions", args.num_instructions, ge=1, integer=True)
    for field, value in (("nontransitivity", args.nontransitivity), ("noise", args.noise)):
        check_range(field, value, ge=0.0)
    if not math.isfinite(args.position_bias):
        raise ConfigError("position-bias", args.position_bias, "finite numbers")
    if args.format == "baseline":
        check_range("baseline", args.baseline, ge=0, lt=args.num_models, integer=True)
    if args.format == "swim":
        check_range("repeats", args.repeats, ge=1, le=args.num_instructions, integer=True)
    if args.budget is not None:
        check_range("budget", args.budget, ge=1, integer=True)
    if args.judge == "lm":
        check(
            args.num_models == 6, "num-models", args.num_models, "6 with --judge lm (2 LMs x 3 temperatures)"
        )
        judge_cfg, lm_cfgs = _lm_configs(args)

    import jax

    from jaxsafety.judges.judges import CachedJudge, make_simulated_judge
    from jaxsafety.judges.metrics import rank_correlations
    from jaxsafety.judges.tournaments import baseline_tournament, round_robin_tournament, swim_tournament
    from jaxsafety.xla_flags import enable_compilation_cache

    enable_compilation_cache()
    k_judge, k_tournament = jax.random.split(jax.random.key(args.seed))
    n, num_i = args.num_models, args.num_instructions
    if args.judge == "lm":
        cached, truth, truth_name, model_names, lm_info = _lm_judge_setup(args, judge_cfg, lm_cfgs, k_judge)
    else:
        judge = make_simulated_judge(
            k_judge,
            n,
            num_i,
            nontransitivity=args.nontransitivity,
            position_bias=args.position_bias,
            noise=args.noise,
        )
        cached, truth, truth_name, model_names, lm_info = CachedJudge(judge), judge.skill, "skill", None, None
    if args.format == "round_robin":
        res = round_robin_tournament(cached, n, num_i, budget=args.budget)
    elif args.format == "swim":
        res = swim_tournament(cached, n, num_i, key=k_tournament, repeats=args.repeats, budget=args.budget)
    else:
        res = baseline_tournament(cached, n, num_i, baseline=args.baseline, budget=args.budget)
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
            "kind": args.judge,
            "num_models": n,
            "num_instructions": num_i,
            "nontransitivity": args.nontransitivity,
            "position_bias": args.position_bias,
            "noise": args.noise,
            "seed": args.seed,
            **({"lm": lm_info} if lm_info else {}),
        },
        "format": args.format,
        "baseline": names[args.baseline] if args.format == "baseline" else None,
        "repeats": args.repeats if args.format == "swim" else None,
        "budget": args.budget,
        "ranking": ranking,
        "true_ranking": [names[i] for i in true_order.tolist()],
        "spearman": _finite_or_none(corr.spearman),
        "kendall": _finite_or_none(corr.kendall),
        "num_judge_calls": int(res.num_calls),
        "num_distinct_judge_calls": int(cached.num_calls),
        "num_matches": int(res.num_matches),
        "exhausted": bool(res.exhausted),
        "comparisons_csv": args.comparisons_csv,
        "_comparisons": res.comparisons,
    }
    if lm_info:
        print(
            f"{args.format} tournament, LM judge (held-out accuracy {lm_info['judge_accuracy']:.3f}): {n} response "
            f"models generated by zoo arithmetic LMs, {num_i} instructions"
        )
    else:
        print(
            f"{args.format} tournament, simulated judge: {n} models, {num_i} instructions, "
            f"nontransitivity={args.nontransitivity}, position_bias={args.position_bias}, noise={args.noise}"
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
    return result


# ----------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jaxsafety.judges", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    # Choices are checked by the commands (ConfigError, one line naming the accepted values), not by argparse.
    p = sub.add_parser("fit", help="Bradley-Terry / Elo ratings from a comparisons CSV")
    p.add_argument(
        "--input", required=True, help="CSV: model_a,model_b,winner|prob_a[,instruction][,position]"
    )
    p.add_argument("--output", required=True, help="JSON file to write (atomically)")
    p.add_argument(
        "--bootstrap", type=int, default=200, help="bootstrap resamples for 95%% intervals (0: none)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    p.add_argument("--ties", default="half", help="half (a tie is half a win) or davidson (Davidson 1970)")
    p.add_argument("--l2", type=float, default=1e-6, help="Gaussian prior precision on the scores")
    p.add_argument(
        "--anchor", default=None, help="model whose Elo is fixed at 1000 (default: the mean is 1000)"
    )
    p.add_argument("--method", default="auto", help="solver: auto, newton, newman or mm")
    p.set_defaults(run=fit_cmd)

    p = sub.add_parser("tournament", help="rank models with a simulated judge or the zoo LM judge")
    p.add_argument(
        "--judge",
        default="simulated",
        help="simulated, or lm: the zoo LM judge ranking 6 response models that zoo arithmetic LMs generate",
    )
    p.add_argument("--lm-steps", type=int, default=1600, help="--judge lm: training steps of the LM judge")
    p.add_argument(
        "--response-steps", default="300,60", help="--judge lm: training steps of the two response LMs"
    )
    p.add_argument("--format", required=True, help="round_robin, swim or baseline")
    p.add_argument("--num-models", type=int, default=8)
    p.add_argument("--num-instructions", type=int, default=32)
    p.add_argument(
        "--nontransitivity", type=float, default=0.0, help="disc-game (rock-paper-scissors) weight"
    )
    p.add_argument("--position-bias", type=float, default=0.0, help="logit bonus of the first-shown response")
    p.add_argument("--noise", type=float, default=0.0, help="standard deviation of the judge's logit noise")
    p.add_argument("--baseline", type=int, default=0, help="baseline model index (format baseline)")
    p.add_argument("--repeats", type=int, default=3, help="instructions per Swim match")
    p.add_argument("--budget", type=int, default=None, help="judge-call budget (default: unlimited)")
    p.add_argument("--seed", type=int, default=0, help="seed of the judge and the tournament's draws")
    p.add_argument("--output", required=True, help="JSON file to write (atomically)")
    p.add_argument("--comparisons-csv", default=None, help="also write the comparisons (readable by fit)")
    p.set_defaults(run=tournament_cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input)."""
    from jaxsafety.io import write_json_atomic

    args = _parser().parse_args(argv)
    try:
        result = args.run(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    comparisons = result.pop("_comparisons", None)
    if comparisons is not None and args.comparisons_csv is not None:
        _write_csv_atomic(comparisons, args.comparisons_csv)
    write_json_atomic(args.output, result)
    extra = f" and {args.comparisons_csv}" if comparisons is not None and args.comparisons_csv else ""
    print(f"wrote {args.output}{extra}")
    return 0
