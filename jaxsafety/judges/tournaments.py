"""Tournaments that rank models with a pairwise judge: baseline-anchored, round-robin and Swim.

Xu, Ruis, Rocktäschel, Kirk (ICML 2025, arXiv 2502.14074): with a non-transitive judge, rankings by win rate
against one fixed baseline (AlpacaEval) depend on the choice of baseline; a round-robin tournament aggregated with
Bradley-Terry is more reliable but needs ``n(n-1)/2`` pairs per instruction. Swim here is *our* cheaper design
(the paper's Swim is Swiss-system matchmaking; this one keeps its goal, far fewer comparisons than a round robin,
with a different mechanism): binary-search insertion of one model at a time into a sorted list, which for a
transitive judge sorts ``n`` models with at most ``sum_{k=1}^{n-1} ceil(log2(k+1)) <= n ceil(log2 n)`` pair
comparisons.

All tournaments call a :class:`~jaxsafety.judges.judges.BatchedJudge` ``judge(instruction, first, second) ->
p(first wins)`` through a :class:`~jaxsafety.judges.judges.CachedJudge` (the one passed in, or a fresh one
wrapped around a plain callable), so comparisons repeated across tournaments cost no judge call.

Counting. One *judge call* is one (instruction, first-shown model, second-shown model) judgement; with
``both_orders=True`` a pair costs two calls per instruction, whose mean is the position-debiased preference. The
``budget`` is in judge calls requested by the tournament (cache hits included, so the result does not depend on
the cache's history). One *match* is one decision about one pair of models: a (pair, instruction) cell for the
baseline and round-robin tournaments, a pivot comparison over ``repeats`` instructions for Swim.

Every tournament returns a :class:`TournamentResult` with the ranking, scores and the
:class:`~jaxsafety.judges.data.Comparisons` it made (records oriented as (model, opponent) with ``position`` 0 or
1 for the order shown), so metrics and further fits can reuse them.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np

from jaxsafety.config import ConfigError, check_range
from jaxsafety.judges.data import Comparisons, concat_comparisons
from jaxsafety.judges.judges import BatchedJudge, CachedJudge
from jaxsafety.judges.metrics import (
    baseline_win_rates,
    preference_tensor,
    ranking_from_scores,
    scores_from_ranking,
)

__all__ = [
    "Aggregate",
    "TournamentResult",
    "baseline_tournament",
    "bradley_terry_aggregate",
    "round_robin_tournament",
    "swim_max_matches",
    "swim_tournament",
]

Aggregate = Callable[[Comparisons, int], np.ndarray]
"""``aggregate(comparisons, num_models) -> scores [n]`` (higher = better), e.g. a Bradley-Terry fit."""


class TournamentResult(NamedTuple):
    """- ``ranking``: ``[n]`` model indices, best first.
    - ``scores``: ``[n]`` float, higher = better (win rate, Bradley-Terry score, or ``n - 1 - position``).
    - ``comparisons``: every judgement the tournament requested.
    - ``num_calls``: judge calls requested (= ``comparisons.num_comparisons``; cache hits included).
    - ``num_matches``: pair-level decisions (module docstring).
    - ``exhausted``: the budget stopped the tournament before it finished.
    - ``unranked``: ``[n]`` bool, models whose place no comparison decided (Swim after exhaustion).
    """

    ranking: np.ndarray
    scores: np.ndarray
    comparisons: Comparisons
    num_calls: int
    num_matches: int
    exhausted: bool
    unranked: np.ndarray


def bradley_terry_aggregate(comparisons: Comparisons, num_models: int) -> np.ndarray:
    """Bradley-Terry scores ``[n]`` of ``comparisons`` (soft labels ``prob_a``) from
    :func:`jaxsafety.judges.bradley_terry.fit_bradley_terry` with its default regularisation. Imported lazily so
    this module does not need it until a tournament aggregates."""
    from jaxsafety.judges.bradley_terry import fit_bradley_terry  # lazy on purpose: see the docstring

    c = comparisons
    result = fit_bradley_terry(c.model_a, c.model_b, c.prob_a, num_models=num_models)
    return np.asarray(result.scores, dtype=np.float64)


def _as_int(name: str, value: int) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise ConfigError(name, value, "an integer") from None


def _setup(
    judge: BatchedJudge | CachedJudge | Callable,
    num_models: int,
    instructions: int | Sequence[int] | np.ndarray,
    model_names: Sequence[str] | None,
    instruction_names: Sequence[str] | None,
) -> tuple[CachedJudge, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """The cached judge, the instruction pool ``[K]`` and the names for the Comparisons."""
    num_models = _as_int("num_models", num_models)
    check_range("num_models", num_models, ge=1, integer=True)
    if isinstance(instructions, int | np.integer):
        check_range("instructions", int(instructions), ge=1, integer=True)
        pool = np.arange(int(instructions), dtype=np.int64)
    else:
        pool = np.asarray(instructions, dtype=np.int64).reshape(-1)
        if pool.size == 0 or (pool < 0).any() or np.unique(pool).size != pool.size:
            raise ConfigError("instructions", pool.tolist(), "distinct non-negative instruction indices")
    if model_names is None:
        model_names = tuple(f"model_{i}" for i in range(num_models))
    if len(model_names) != num_models:
        raise ConfigError("model_names", f"{len(model_names)} names", f"{num_models} names")
    if instruction_names is None:
        instruction_names = tuple(f"instr_{i}" for i in range(int(pool.max()) + 1))
    if len(instruction_names) <= pool.max():
        raise ConfigError(
            "instruction_names", f"{len(instruction_names)} names", f"> {int(pool.max())} names"
        )
    cached = judge if isinstance(judge, CachedJudge) else CachedJudge(judge)
    return cached, pool, tuple(model_names), tuple(instruction_names)


def _judge_pairs(
    judge: CachedJudge,
    instruction: np.ndarray,
    model: np.ndarray,
    opponent: np.ndarray,
    both_orders: bool,
    model_names: tuple[str, ...],
    instruction_names: tuple[str, ...],
) -> Comparisons:
    """Judge each (instruction, model, opponent) with ``model`` shown first, and also second when
    ``both_orders``; records oriented as (model, opponent)."""
    if both_orders:
        ins = np.concatenate([instruction, instruction])
        a, b = np.concatenate([model, model]), np.concatenate([opponent, opponent])
        position = np.repeat(np.asarray([0, 1], dtype=np.int8), instruction.shape[0])
    else:
        ins, a, b = instruction, model, opponent
        position = np.zeros(instruction.shape[0], dtype=np.int8)
    first = np.where(position == 0, a, b)
    second = np.where(position == 0, b, a)
    p_first = judge(ins, first, second)
    prob_a = np.where(position == 0, p_first, 1.0 - p_first)
    return Comparisons(
        a.astype(np.int64),
        b.astype(np.int64),
        ins.astype(np.int64),
        prob_a,
        position,
        model_names,
        instruction_names,
    )


def _instructions_within_budget(pool: np.ndarray, cost_per_instruction: int, budget: int | None) -> int:
    if budget is None:
        return pool.shape[0]
    budget = _as_int("budget", budget)
    check_range(
        "budget", budget, ge=cost_per_instruction, integer=True
    )  # at least one whole instruction, or nothing is ranked
    return min(pool.shape[0], budget // cost_per_instruction)


def baseline_tournament(
    judge: BatchedJudge | CachedJudge | Callable,
    num_models: int,
    instructions: int | Sequence[int] | np.ndarray,
    *,
    baseline: int,
    both_orders: bool = True,
    budget: int | None = None,
    model_names: Sequence[str] | None = None,
    instruction_names: Sequence[str] | None = None,
) -> TournamentResult:
    """Baseline-anchored (AlpacaEval-style) ranking: every model against ``baseline`` on every instruction of the
    pool (``instructions``: a count, meaning ``range(count)``, or indices), ranked by mean (debiased) preference
    over the baseline, which itself scores 0.5. A ``budget`` (judge calls) keeps the first whole instructions of
    the pool that fit, so every model is judged on the same instructions."""
    cached, pool, mnames, inames = _setup(judge, num_models, instructions, model_names, instruction_names)
    baseline = _as_int("baseline", baseline)
    check_range("baseline", baseline, ge=0, lt=num_models, integer=True)
    others = np.asarray([m for m in range(num_models) if m != baseline], dtype=np.int64)
    if others.size == 0:
        raise ConfigError("num_models", num_models, ">= 2 (a baseline and a model to rank)")
    k = _instructions_within_budget(pool, others.size * (2 if both_orders else 1), budget)
    ins = np.repeat(pool[:k], others.size)
    model = np.tile(others, k)
    comps = _judge_pairs(cached, ins, model, np.full_like(model, baseline), both_orders, mnames, inames)
    scores = baseline_win_rates(preference_tensor(comps), baseline)
    return TournamentResult(
        ranking_from_scores(scores),
        scores,
        comps,
        comps.num_comparisons,
        int(ins.shape[0]),
        k < pool.shape[0],
        np.zeros(num_models, dtype=bool),
    )


def round_robin_tournament(
    judge: BatchedJudge | CachedJudge | Callable,
    num_models: int,
    instructions: int | Sequence[int] | np.ndarray,
    *,
    both_orders: bool = True,
    budget: int | None = None,
    aggregate: Aggregate | None = None,
    model_names: Sequence[str] | None = None,
    instruction_names: Sequence[str] | None = None,
) -> TournamentResult:
    """Full round robin: every pair of models on every instruction of the pool, scored by ``aggregate``
    (default :func:`bradley_terry_aggregate`). A ``budget`` keeps the first whole instructions that fit."""
    cached, pool, mnames, inames = _setup(judge, num_models, instructions, model_names, instruction_names)
    if num_models < 2:
        raise ConfigError("num_models", num_models, ">= 2")
    ia, ib = np.triu_indices(num_models, k=1)
    k = _instructions_within_budget(pool, ia.size * (2 if both_orders else 1), budget)
    ins = np.repeat(pool[:k], ia.size)
    comps = _judge_pairs(cached, ins, np.tile(ia, k), np.tile(ib, k), both_orders, mnames, inames)
    scores = np.asarray((aggregate or bradley_terry_aggregate)(comps, num_models), dtype=np.float64)
    return TournamentResult(
        ranking_from_scores(scores),
        scores,
        comps,
        comps.num_comparisons,
        int(ins.shape[0]),
        k < pool.shape[0],
        np.zeros(num_models, dtype=bool),
    )


def swim_max_matches(num_models: int) -> int:
    """Worst-case matches of :func:`swim_tournament`: ``sum_{k=1}^{n-1} ceil(log2(k+1)) <= n ceil(log2 n)``
    (inserting into a sorted list of ``k`` models takes at most ``ceil(log2(k+1))`` pivot comparisons)."""
    return sum(math.ceil(math.log2(k + 1)) for k in range(1, num_models))


@functools.partial(jax.jit, static_argnames=("rows", "cols"))
def _uniforms(key: jax.Array, *, rows: int, cols: int) -> jax.Array:
    return jax.random.uniform(key, (rows, cols))


def _swim_draws(
    key: jax.Array, num_models: int, num_matches: int, pool_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """A random insertion order ``[n]`` and, per potential match, a random permutation ``[num_matches,
    pool_size]`` of the pool's positions (the first ``repeats`` entries sample without replacement). Both are
    argsorts of i.i.d. uniforms drawn in one array whose shape is rounded up to powers of two, so varying ``n``
    or pool sizes reuse a few compiled programs."""
    rows = 1 << num_matches.bit_length()  # >= num_matches + 1
    cols = 1 << (max(num_models, pool_size, 1) - 1).bit_length()
    u = np.asarray(_uniforms(key, rows=rows, cols=cols))
    order = np.argsort(u[0, :num_models], kind="stable")
    return order, np.argsort(u[1 : num_matches + 1, :pool_size], axis=1, kind="stable")


def swim_tournament(
    judge: BatchedJudge | CachedJudge | Callable,
    num_models: int,
    instructions: int | Sequence[int] | np.ndarray,
    *,
    key: jax.Array,
    repeats: int = 1,
    both_orders: bool = True,
    budget: int | None = None,
    insertion_order: Sequence[int] | np.ndarray | None = None,
    aggregate: Aggregate | None = None,
    model_names: Sequence[str] | None = None,
    instruction_names: Sequence[str] | None = None,
) -> TournamentResult:
    """Rank by binary-search insertion (our Swim design, module docstring).

    Models are inserted one at a time (``insertion_order``, default a random permutation from ``key``) into a list
    sorted best first. Each step compares the new model with the pivot in the middle of its remaining interval: a
    match judges the pair on ``repeats`` instructions drawn from the pool without replacement (fresh draws per
    match, from ``key``), in both orders when ``both_orders``; the new model ranks above the pivot when its mean
    (debiased) preference is > 0.5 (a tie ranks it below). A transitive, noiseless judge yields the exact order
    within :func:`swim_max_matches` matches, each costing ``repeats * (2 if both_orders else 1)`` judge calls.

    Budget: before each match the tournament checks that the match fits in what is left of ``budget`` (judge
    calls). When it does not, the tournament stops: the model being inserted is placed in the middle of its
    remaining interval (a guess), the models not yet inserted are appended at the bottom in insertion order, and
    both are flagged in ``unranked``; ``exhausted`` is set. A budget below one match raises ConfigError.

    ``aggregate`` (e.g. :func:`bradley_terry_aggregate`): if given, the scores are its fit over Swim's
    comparisons (NaN for models never compared) and the ranking follows them; otherwise scores are
    ``n - 1 - position`` in the insertion ranking.
    """
    cached, pool, mnames, inames = _setup(judge, num_models, instructions, model_names, instruction_names)
    repeats = _as_int("repeats", repeats)
    check_range("repeats", repeats, ge=1, le=int(pool.shape[0]), integer=True)
    cost = repeats * (2 if both_orders else 1)
    if budget is not None:
        budget = _as_int("budget", budget)
        if num_models > 1:
            check_range("budget", budget, ge=cost, integer=True)
    max_matches = swim_max_matches(num_models)
    permutation, pool_perms = _swim_draws(key, num_models, max_matches, int(pool.shape[0]))
    if insertion_order is None:
        order = permutation.astype(np.int64)
    else:
        order = np.asarray(insertion_order, dtype=np.int64).reshape(-1)
        if sorted(order.tolist()) != list(range(num_models)):
            raise ConfigError("insertion_order", order.tolist(), f"a permutation of range({num_models})")
    picks = pool[pool_perms[:, :repeats]]  # instructions of every potential match, drawn at once

    ranking: list[int] = [int(order[0])] if num_models else []
    parts: list[Comparisons] = []
    unranked = np.zeros(num_models, dtype=bool)
    spent = matches = 0
    exhausted = False
    for step in range(1, num_models):
        model = int(order[step])
        lo, hi = 0, len(ranking)
        while lo < hi:
            if budget is not None and spent + cost > budget:
                exhausted = True
                break
            mid = (lo + hi) // 2
            pivot = ranking[mid]
            comps = _judge_pairs(
                cached,
                picks[matches],
                np.full(repeats, model),
                np.full(repeats, pivot),
                both_orders,
                mnames,
                inames,
            )
            parts.append(comps)
            matches += 1
            spent += cost
            # Each instruction contributes one record per order, so the mean over records is the mean over
            # instructions of the debiased preference.
            if comps.prob_a.mean() > 0.5:
                hi = mid
            else:
                lo = mid + 1
        if exhausted:
            ranking.insert((lo + hi) // 2, model)
            rest = order[step + 1 :].tolist()
            ranking.extend(rest)
            unranked[[model, *rest]] = True
            break
        ranking.insert(lo, model)

    if parts:
        comparisons = concat_comparisons(parts)
    else:
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        comparisons = Comparisons(
            empty_i, empty_i, empty_i, empty_f, np.zeros(0, dtype=np.int8), mnames, inames
        )
    order_arr = np.asarray(ranking, dtype=np.int64)
    if aggregate is None:
        scores = scores_from_ranking(order_arr)
    else:
        scores = np.asarray(aggregate(comparisons, num_models), dtype=np.float64).copy()
        seen = np.zeros(num_models, dtype=bool)
        seen[comparisons.model_a] = seen[comparisons.model_b] = True
        if num_models > 1:
            scores[~seen] = np.nan
        order_arr = ranking_from_scores(scores)
    return TournamentResult(
        order_arr, scores, comparisons, comparisons.num_comparisons, matches, exhausted, unranked
    )
