"""Tournaments with simulated judges: Swim (Swiss rounds) recovers a transitive noiseless judge's order within its
rounds and equals round robin + Bradley-Terry once every pair is played, its pairing repeats no pair until it
must; insertion sorts a transitive noiseless judge exactly within n ceil(log2 n) matches, round robin + Bradley-Terry recovers the latent order, baseline-anchored rankings depend on the baseline
only when the judge is non-transitive; budgets, the cache and the string-judge adapter."""

from __future__ import annotations

import itertools
import math

import jax
import numpy as np
import pytest
from scipy import optimize

from jaxsafety.config import ConfigError
from jaxsafety.judges.data import Comparisons
from jaxsafety.judges.judges import CachedJudge, StringJudgeAdapter, make_simulated_judge
from jaxsafety.judges.metrics import rank_correlations
from jaxsafety.judges.tournaments import (
    baseline_tournament,
    bradley_terry_aggregate,
    insertion_max_matches,
    insertion_tournament,
    round_robin_tournament,
    swim_rounds,
    swim_tournament,
    swiss_pairing,
)

KEY = jax.random.key(0)


def _local_bradley_terry(comparisons: Comparisons, num_models: int, l2: float = 1e-3) -> np.ndarray:
    """Independent Bradley-Terry fit (soft labels, small ridge) by scipy L-BFGS."""
    a, b, y = comparisons.model_a, comparisons.model_b, comparisons.prob_a

    def loss(s):
        d = s[a] - s[b]
        nll = np.sum(np.logaddexp(0.0, -d) * y + np.logaddexp(0.0, d) * (1 - y)) + 0.5 * l2 * s @ s
        g_d = 1.0 / (1.0 + np.exp(-d)) - y
        grad = np.bincount(a, g_d, num_models) - np.bincount(b, g_d, num_models) + l2 * s
        return nll, grad

    return optimize.minimize(loss, np.zeros(num_models), jac=True, method="L-BFGS-B").x


N_MODELS, N_INSTR = 8, 12  # most tests share one judge shape, so the simulator compiles once


@pytest.fixture(scope="module")
def sorted_judge():
    """21 models with distinct skills 0.7 apart in a random order; a strong position bias."""
    skill = np.random.default_rng(0).permutation(21).astype(np.float64) * 0.7
    return make_simulated_judge(KEY, 21, 10, skill=skill, position_bias=2.0)


@pytest.mark.parametrize("num_models", [1, 2, 3, 5, 7, 8, 13, 16, 21])
def test_insertion_sorts_transitive_noiseless_judge_exactly(sorted_judge, num_models):
    # Soft judge with a position bias larger than the skill gaps (a single order would be fooled, both orders
    # cancel it), and a hard judge (verdicts 1 / 0.5 / 0) whose bias is below the gaps (above them every hard
    # verdict would be "first shown wins" and the debiased preference a tie).
    skill = sorted_judge.skill[:num_models]
    for judge in (sorted_judge, sorted_judge._replace(hard=True, position_bias=0.3)):
        for repeats in (1, 3):
            result = insertion_tournament(
                judge, num_models, 10, key=jax.random.key(num_models), repeats=repeats
            )
            np.testing.assert_array_equal(result.ranking, np.argsort(-skill, kind="stable"))
            bound = num_models * math.ceil(math.log2(num_models)) if num_models > 1 else 0
            assert result.num_matches <= insertion_max_matches(num_models) <= bound
            assert result.num_calls == result.num_matches * repeats * 2 == result.comparisons.num_comparisons
            assert not result.exhausted and not result.unranked.any()


def test_insertion_single_order_is_fooled_by_position_bias_and_budget_exhaustion():
    skill = np.linspace(0.0, 0.5, N_MODELS)
    judge = make_simulated_judge(KEY, N_MODELS, N_INSTR, skill=skill, position_bias=3.0)
    one_order = insertion_tournament(judge, N_MODELS, N_INSTR, key=KEY, both_orders=False)
    assert not np.array_equal(one_order.ranking, judge.true_ranking())  # the new model always wins when first

    result = insertion_tournament(
        judge, N_MODELS, N_INSTR, key=KEY, repeats=2, budget=21
    )  # 4 calls per match -> 5 matches
    assert result.exhausted and result.num_matches == 5 and result.num_calls == 20
    assert sorted(result.ranking.tolist()) == list(range(N_MODELS))
    num_unranked = int(result.unranked.sum())
    assert 1 <= num_unranked < N_MODELS
    # Models placed by comparisons are in skill order; the ones never inserted are at the bottom (all unranked but
    # the one whose insertion was cut short, placed at a guess).
    ranked = [m for m in result.ranking.tolist() if not result.unranked[m]]
    assert np.all(np.diff(skill[ranked]) < 0)
    assert result.unranked[result.ranking[N_MODELS - num_unranked + 1 :]].all()
    with pytest.raises(ConfigError, match="budget=3"):
        insertion_tournament(judge, N_MODELS, N_INSTR, key=KEY, repeats=2, budget=3)
    with pytest.raises(ConfigError, match="repeats=13"):
        insertion_tournament(judge, N_MODELS, N_INSTR, key=KEY, repeats=13)


def test_insertion_is_deterministic_and_refits_scores():
    judge = make_simulated_judge(KEY, N_MODELS, N_INSTR, skill_scale=1.5, noise=0.3)
    first = insertion_tournament(judge, N_MODELS, N_INSTR, key=KEY, repeats=3)
    again = insertion_tournament(judge, N_MODELS, N_INSTR, key=KEY, repeats=3)
    np.testing.assert_array_equal(first.ranking, again.ranking)
    np.testing.assert_array_equal(first.comparisons.instruction, again.comparisons.instruction)
    # Instructions within one match are distinct (drawn without replacement).
    per_match = first.comparisons.instruction.reshape(first.num_matches, 2, 3)[:, 0]
    assert all(len(set(row)) == 3 for row in per_match.tolist())
    refit = insertion_tournament(
        judge, N_MODELS, N_INSTR, key=KEY, repeats=3, aggregate=bradley_terry_aggregate
    )
    assert rank_correlations(refit.scores, judge.skill).spearman > 0.9
    assert rank_correlations(first.scores, judge.skill).spearman > 0.9


def test_round_robin_recovers_latent_order_of_transitive_judge():
    skill = np.linspace(-2.0, 2.0, N_MODELS)[np.random.default_rng(0).permutation(N_MODELS)]
    judge = make_simulated_judge(KEY, N_MODELS, N_INSTR, skill=skill, noise=0.5, position_bias=0.5)
    result = round_robin_tournament(judge, N_MODELS, N_INSTR)
    np.testing.assert_array_equal(result.ranking, judge.true_ranking())
    assert result.num_matches == 28 * N_INSTR and result.num_calls == 2 * 28 * N_INSTR
    assert not result.exhausted

    truncated = round_robin_tournament(judge, N_MODELS, N_INSTR, budget=28 * 2 * 4 + 10)
    assert truncated.exhausted and truncated.num_calls == 28 * 2 * 4
    assert set(truncated.comparisons.instruction.tolist()) == {0, 1, 2, 3}
    with pytest.raises(ConfigError, match="budget=55"):
        round_robin_tournament(judge, N_MODELS, N_INSTR, budget=55)


def _baseline_orders(judge, num_models, num_instructions):
    """Ranking of all models under each choice of baseline."""
    return [
        baseline_tournament(judge, num_models, num_instructions, baseline=b).ranking.tolist()
        for b in range(num_models)
    ]


def _relative_orders_agree(orders, b0, b1):
    """Do the rankings with baselines ``b0`` and ``b1`` order the other models the same way?"""
    keep = lambda order: [m for m in order if m not in (b0, b1)]  # noqa: E731
    return keep(orders[b0]) == keep(orders[b1])


def test_baseline_dependence_appears_only_for_non_transitive_judge():
    n, num_i = N_MODELS, N_INSTR
    transitive = make_simulated_judge(KEY, n, num_i, skill_scale=1.0)
    orders = _baseline_orders(transitive, n, num_i)
    assert all(_relative_orders_agree(orders, b0, b1) for b0, b1 in itertools.combinations(range(n), 2))

    cyclic = make_simulated_judge(KEY, n, num_i, skill_scale=0.3, nontransitivity=4.0, style_jitter=0.2)
    orders = _baseline_orders(cyclic, n, num_i)
    disagreements = sum(
        not _relative_orders_agree(orders, b0, b1) for b0, b1 in itertools.combinations(range(n), 2)
    )
    assert disagreements >= 5
    assert len({order[0] for order in orders}) >= 2  # the "best model" itself depends on the baseline
    # Round robin + BT does not depend on any baseline, and still tracks the skills roughly.
    rr = round_robin_tournament(cyclic, n, num_i)
    assert sorted(rr.ranking.tolist()) == list(range(n))


def test_baseline_tournament_win_rates_and_budget():
    judge = make_simulated_judge(KEY, N_MODELS, N_INSTR, skill_scale=1.0, position_bias=1.0)
    result = baseline_tournament(judge, N_MODELS, N_INSTR, baseline=2)
    prefs = judge.preference_tensor()
    others = [m for m in range(N_MODELS) if m != 2]
    np.testing.assert_allclose(result.scores[others], prefs[:, others, 2].mean(0), atol=1e-12)
    assert result.scores[2] == 0.5 and result.num_calls == (N_MODELS - 1) * N_INSTR * 2
    one_order = baseline_tournament(
        judge, N_MODELS, [3, 5], baseline=2, both_orders=False, budget=N_MODELS + 2
    )
    assert one_order.exhausted and one_order.num_calls == N_MODELS - 1
    assert set(one_order.comparisons.instruction.tolist()) == {3}
    with pytest.raises(ConfigError, match=f"baseline={N_MODELS}"):
        baseline_tournament(judge, N_MODELS, N_INSTR, baseline=N_MODELS)
    with pytest.raises(ConfigError, match="instructions"):
        baseline_tournament(judge, N_MODELS, [1, 1], baseline=0)


def test_cache_counts_judge_calls():
    judge = make_simulated_judge(KEY, N_MODELS, N_INSTR, skill_scale=1.0)
    n, num_i = 6, 4  # tournaments over the first 6 models and 4 instructions
    seen = []

    def counting(instruction, first, second):
        seen.extend(zip(instruction.tolist(), first.tolist(), second.tolist(), strict=True))
        return judge(instruction, first, second)

    cached = CachedJudge(counting)
    first = round_robin_tournament(cached, n, num_i)
    assert cached.num_calls == cached.num_requests == 15 * 4 * 2 == len(seen) == len(set(seen))
    second = round_robin_tournament(cached, n, num_i)
    assert cached.num_calls == 120 and cached.num_requests == 240 and cached.num_hits == 120
    np.testing.assert_array_equal(first.ranking, second.ranking)
    baseline_tournament(cached, n, num_i, baseline=0)  # a subset of the round robin's comparisons
    insertion_tournament(cached, n, num_i, key=KEY, repeats=2)
    assert cached.num_calls == 120 and len(seen) == 120
    # Duplicates inside one request reach the judge once; the two orders are different entries.
    cached.clear()
    out = cached(np.array([0, 0, 0]), np.array([1, 1, 2]), np.array([2, 2, 1]))
    assert cached.num_calls == 2 and cached.num_requests == 3 and out[0] == out[1]
    assert CachedJudge.key(0, 2, 1) == (0, 1, 2, 1) and CachedJudge.key(0, 1, 2) == (0, 1, 2, 0)


def test_string_judge_adapter_matches_batched_judge():
    judge = make_simulated_judge(
        KEY, N_MODELS, N_INSTR, skill_scale=1.0, nontransitivity=1.0, position_bias=0.5, noise=0.2
    )
    instructions, responses = judge.string_tables()
    adapter = StringJudgeAdapter(judge, instructions, responses)
    ins, a, b = np.array([0, 1, 2, 2]), np.array([0, 3, 1, 2]), np.array([1, 2, 2, 1])
    np.testing.assert_allclose(adapter(ins, a, b), judge(ins, a, b))
    assert judge.judge("instr_1", "model_3/instr_1", "model_2/instr_1") == pytest.approx(
        float(judge(1, 3, 2))
    )
    with pytest.raises(ConfigError, match="responses"):
        judge.judge("instr_1", "model_3/instr_0", "model_2/instr_1")
    with pytest.raises(ConfigError, match="response_a"):
        judge.judge("instr_1", "gpt", "model_2/instr_1")
    # The cached string judge drives a tournament like the batched one.
    rr_str = round_robin_tournament(CachedJudge(adapter), N_MODELS, 3)
    rr_arr = round_robin_tournament(judge, N_MODELS, 3)
    np.testing.assert_allclose(rr_str.scores, rr_arr.scores)


def test_simulated_judge_structure():
    angles = np.concatenate([[0.0, 2.1, 4.2], np.linspace(0.0, 6.0, N_MODELS - 3)])
    judge = make_simulated_judge(
        KEY,
        N_MODELS,
        N_INSTR,
        skill=np.zeros(N_MODELS),
        style_angle=angles,
        nontransitivity=2.0,
        style_jitter=0.0,
    )
    prefs = judge.preference_tensor()
    # Three styles ~120 degrees apart and equal skills: a pure rock-paper-scissors cycle 0 > 1 > 2 > 0.
    assert (prefs[:, 0, 1] > 0.5).all() and (prefs[:, 1, 2] > 0.5).all() and (prefs[:, 2, 0] > 0.5).all()
    np.testing.assert_allclose(prefs[:, 0, 1], 1.0 / (1.0 + np.exp(-2.0 * np.sin(2.1))), rtol=1e-5)
    off_diagonal = ~np.eye(N_MODELS, dtype=bool)
    np.testing.assert_allclose((prefs + np.swapaxes(prefs, 1, 2))[:, off_diagonal], 1.0, atol=1e-6)
    with pytest.raises(ConfigError, match="skill"):
        make_simulated_judge(KEY, N_MODELS, N_INSTR, skill=[0.0, 1.0])
    with pytest.raises(ConfigError, match=r"nontransitivity=-1\.0"):
        make_simulated_judge(KEY, N_MODELS, N_INSTR, nontransitivity=-1.0)


def test_default_aggregate_agrees_with_independent_fit():
    # The default aggregate (the library's Bradley-Terry fit) against a scipy L-BFGS-B fit written here.
    judge = make_simulated_judge(KEY, N_MODELS, N_INSTR, skill_scale=1.0, noise=0.5)
    result = round_robin_tournament(judge, N_MODELS, N_INSTR)  # default: bradley_terry_aggregate
    local = _local_bradley_terry(result.comparisons, N_MODELS)
    np.testing.assert_allclose(result.scores - result.scores.mean(), local - local.mean(), atol=0.05)


# ---------------------------------------------------------------------------------------------------------------
# Swim: Swiss-system rounds on the Bradley-Terry ranking


@pytest.mark.parametrize("num_models", [2, 3, 5, 8, 13, 16, 21])
def test_swim_recovers_transitive_noiseless_judge(sorted_judge, num_models):
    """A soft judge (preferences from skill gaps, both orders cancelling a large position bias) is ranked exactly
    within the paper's ceil(log2 n) rounds; a hard judge (verdicts 1 / 0.5 / 0) carries no margin for
    Bradley-Terry to use and needs about n rounds, the Swiss system sorting like odd-even transposition."""
    truth = np.argsort(-sorted_judge.skill[:num_models], kind="stable")
    soft = swim_tournament(sorted_judge, num_models, 10, key=jax.random.key(num_models))
    np.testing.assert_array_equal(soft.ranking, truth)
    rounds = swim_rounds(num_models)
    assert rounds == math.ceil(math.log2(num_models))
    assert soft.num_matches == rounds * (num_models // 2)
    assert soft.num_calls == soft.num_matches * 2 == soft.comparisons.num_comparisons
    hard_judge = sorted_judge._replace(hard=True, position_bias=0.3)
    hard = swim_tournament(hard_judge, num_models, 10, key=jax.random.key(num_models), rounds=num_models)
    np.testing.assert_array_equal(hard.ranking, truth)


def _repeat_free_matching_exists(models: list[int], played: np.ndarray) -> bool:
    """Brute force: can ``models`` be split into pairs none of which has played?"""
    if not models:
        return True
    first, rest = models[0], models[1:]
    return any(
        not played[first, m] and _repeat_free_matching_exists([x for x in rest if x != m], played)
        for m in rest
    )


@pytest.mark.parametrize("num_models", [4, 5, 6, 7, 8, 9])
def test_swiss_pairing_repeats_no_pair_until_it_must(num_models):
    rng = np.random.default_rng(num_models)
    played = np.zeros((num_models, num_models), dtype=bool)
    byes = np.zeros(num_models, dtype=bool)
    forced = 0
    for _ in range(2 * num_models):
        ranking = rng.permutation(num_models)
        pairs, bye = swiss_pairing(ranking, played, byes=byes)
        covered = sorted([*pairs.ravel().tolist(), *([bye] if bye is not None else [])])
        assert covered == list(range(num_models))  # everyone plays once (or has the bye)
        assert (bye is None) == (num_models % 2 == 0)
        if bye is not None:
            assert not byes[bye] or byes.all()  # a second bye only once everyone had one
            if not byes.all():
                byes[bye] = True
            else:
                byes[:] = False
                byes[bye] = True
        position = np.argsort(ranking)
        assert (position[pairs[:, 0]] < position[pairs[:, 1]]).all()  # higher-ranked model first
        if played[pairs[:, 0], pairs[:, 1]].any():
            forced += 1
            candidates = [None] if bye is None else [m for m in range(num_models)]
            assert not any(
                _repeat_free_matching_exists([m for m in range(num_models) if m != c], played)
                for c in candidates
            ), "a pair was repeated although a repeat-free pairing existed"
        played[pairs[:, 0], pairs[:, 1]] = played[pairs[:, 1], pairs[:, 0]] = True
    assert forced > 0  # 2n rounds exhaust the pairs: the fallback was exercised


def test_swiss_pairing_pairs_neighbours_when_it_can():
    ranking = np.asarray([3, 0, 2, 1, 5, 4])
    pairs, bye = swiss_pairing(ranking, np.zeros((6, 6), dtype=bool))
    np.testing.assert_array_equal(pairs, [[3, 0], [2, 1], [5, 4]])
    assert bye is None
    played = np.zeros((6, 6), dtype=bool)
    played[3, 0] = played[0, 3] = played[2, 1] = played[1, 2] = True
    pairs, _ = swiss_pairing(ranking, played)
    np.testing.assert_array_equal(pairs, [[3, 2], [0, 1], [5, 4]])  # the closest new opponents
    pairs, bye = swiss_pairing([3, 0, 2, 1, 4], np.zeros((5, 5), dtype=bool))
    assert bye == 4 and pairs.tolist() == [[3, 0], [2, 1]]  # odd: the lowest-ranked sits out
    with pytest.raises(ConfigError, match="ranking"):
        swiss_pairing([0, 1, 1], np.zeros((3, 3), dtype=bool))


def test_swim_with_every_pair_played_equals_round_robin(sorted_judge):
    """4 models, 3 rounds: the Swiss rounds play every pair once; on every instruction of the pool that is the
    round robin's set of judgements, so the Bradley-Terry scores agree (and agree with an independent fit)."""
    judge = sorted_judge._replace(position_bias=0.5)
    swim = swim_tournament(judge, 4, 10, key=KEY, rounds=3, repeats=10)
    pairs = {tuple(sorted(p)) for p in zip(swim.comparisons.model_a, swim.comparisons.model_b)}
    assert pairs == set(itertools.combinations(range(4), 2)) and swim.num_matches == 6
    rr = round_robin_tournament(judge, 4, 10)
    assert swim.num_calls == rr.num_calls
    np.testing.assert_allclose(swim.scores, rr.scores, atol=1e-6)
    independent = _local_bradley_terry(swim.comparisons, 4, l2=1e-6)  # the library's default prior
    np.testing.assert_allclose(swim.scores - swim.scores.mean(), independent - independent.mean(), atol=1e-3)


def test_swim_budget_and_bad_input():
    judge = make_simulated_judge(KEY, N_MODELS, N_INSTR)
    full = swim_tournament(judge, N_MODELS, N_INSTR, key=KEY, repeats=2)
    assert full.num_matches == swim_rounds(N_MODELS) * N_MODELS // 2 and not full.exhausted
    for budget in (4, 17, 40, 999):
        res = swim_tournament(judge, N_MODELS, N_INSTR, key=KEY, repeats=2, budget=budget)
        assert res.num_calls <= budget and res.num_calls == res.num_matches * 4
        assert res.exhausted == (budget < full.num_calls)
        if budget >= full.num_calls:
            np.testing.assert_array_equal(res.ranking, full.ranking)
    again = swim_tournament(judge, N_MODELS, N_INSTR, key=KEY, repeats=2)
    np.testing.assert_array_equal(again.ranking, full.ranking)  # deterministic in the key
    with pytest.raises(ConfigError, match="budget=3 is invalid"):
        swim_tournament(judge, N_MODELS, N_INSTR, key=KEY, repeats=2, budget=3)
    with pytest.raises(ConfigError, match="rounds=0 is invalid"):
        swim_tournament(judge, N_MODELS, N_INSTR, key=KEY, rounds=0)
    with pytest.raises(ConfigError, match="num_models=1 is invalid"):
        swim_tournament(judge, 1, N_INSTR, key=KEY)
