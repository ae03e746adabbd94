"""Judge metrics against hand-built cases and brute force: position debiasing and consistency, PNT / SNTD (a pure
rock-paper-scissors cycle, a transitive Bradley-Terry judge, a loop over triplets with scipy's Jensen-Shannon),
baseline win rates and rank correlations."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from jaxsafety.config import ConfigError
from jaxsafety.judges.data import make_comparisons
from jaxsafety.judges.judges import make_simulated_judge
from jaxsafety.judges.metrics import (
    baseline_win_rates,
    debiased_preference,
    non_transitivity,
    position_consistency,
    preference_tensor,
    rank_correlations,
    ranking_from_scores,
    scores_from_ranking,
    transitive_prediction,
    triplet_indices,
)


def _jsd_bits(p: float, q: float) -> float:
    """Independent truth: the definition, 0.5 KL(p || m) + 0.5 KL(q || m) with m the mixture, in bits (scipy)."""
    pd, qd = np.array([p, 1 - p]), np.array([q, 1 - q])
    m = 0.5 * (pd + qd)
    return float(0.5 * stats.entropy(pd, m, base=2) + 0.5 * stats.entropy(qd, m, base=2))


def _bt_tensor(skills: np.ndarray) -> np.ndarray:
    """``[I, n, n]`` transitive Bradley-Terry preferences, NaN diagonal."""
    prefs = 1.0 / (1.0 + np.exp(-(skills[:, :, None] - skills[:, None, :])))
    n = skills.shape[1]
    prefs[:, np.arange(n), np.arange(n)] = np.nan
    return prefs


def test_debiased_preference_and_tensor_from_records():
    # Pair (0, 1) on instruction 0: p(0 wins | 0 first) = 0.9, p(1 wins | 1 first) = 0.3 (stored as prob_a = 0.7 with
    # position 1). Debiased: (0.9 + 1 - 0.3) / 2 = 0.8. Pair (1, 2) judged once, 2 shown first: p(1 wins) = 0.4.
    comps = make_comparisons([0, 0, 1], [1, 1, 2], [0, 0, 0], [0.9, 0.7, 0.4], [0, 1, 1], num_models=3)
    assert debiased_preference(0.9, 0.3) == pytest.approx(0.8)
    prefs = preference_tensor(comps)
    assert prefs.shape == (1, 3, 3)
    assert prefs[0, 0, 1] == pytest.approx(0.8) and prefs[0, 1, 0] == pytest.approx(0.2)
    assert prefs[0, 1, 2] == pytest.approx(0.4) and prefs[0, 2, 1] == pytest.approx(0.6)
    assert np.isnan(prefs[0, 0, 2]) and np.isnan(prefs[0, 0, 0])
    # Unbalanced orders: three records with 0 first (mean 0.6), one with 1 first -> debiased weighs orders equally,
    # pooled weighs records equally.
    comps = make_comparisons(
        [0, 0, 0, 1], [1, 1, 1, 0], [0] * 4, [0.5, 0.6, 0.7, 0.0], [0, 0, 0, 0], num_models=2
    )
    # The last record shows 1 first and says 1 loses: p(0 wins | 1 first) = 1.
    assert preference_tensor(comps)[0, 0, 1] == pytest.approx(0.5 * (0.6 + 1.0))
    assert preference_tensor(comps, debias=False)[0, 0, 1] == pytest.approx((0.5 + 0.6 + 0.7 + 1.0) / 4)


def test_position_consistency_hand_built():
    comps = make_comparisons(
        model_a=[0, 0, 0, 0, 1, 0, 0],
        model_b=[1, 1, 2, 2, 2, 1, 1],
        instruction=[0, 0, 0, 0, 0, 1, 1],
        # (0,1)@0: 0 wins in both orders (consistent). (0,2)@0: the first-shown wins both times (inconsistent).
        # (1,2)@0: one order only (not counted). (0,1)@1: a tie in both orders (consistent).
        prob_a=[0.8, 0.7, 0.8, 0.3, 0.6, 0.5, 0.5],
        position=[0, 1, 0, 1, 0, 0, 1],
        num_models=3,
    )
    result = position_consistency(comps)
    assert result.num_pairs == 3
    assert result.rate == pytest.approx(2 / 3)
    assert result.first_shown_win_rate == pytest.approx((0.8 + 0.3 + 0.8 + 0.7 + 0.6 + 0.5 + 0.5) / 7)
    # With a tie tolerance of 0.25, 0.7 / 0.3 become ties: (0,1)@0 is win vs tie (inconsistent), (0,2)@0 is
    # win vs tie too.
    assert position_consistency(comps, tie_tol=0.25).rate == pytest.approx(1 / 3)


def test_pure_rock_paper_scissors_cycle():
    prefs = np.full((3, 3), np.nan)
    for x, y in ((0, 1), (1, 2), (2, 0)):  # 0 beats 1 beats 2 beats 0
        prefs[x, y], prefs[y, x] = 0.9, 0.1
    result = non_transitivity(prefs)
    assert result.pnt == 1.0
    np.testing.assert_array_equal(result.triplets, [[0, 1, 2]])
    # Every held-out edge: observed 0.1 vs BT prediction from 0.9 and 0.9.
    expected = _jsd_bits(0.1, 0.81 / (0.81 + 0.01))
    # scipy's Jensen-Shannon *distance* squared is the same divergence.
    assert expected == pytest.approx(jensenshannon([0.1, 0.9], [0.81 / 0.82, 0.01 / 0.82], base=2) ** 2)
    assert result.sntd == pytest.approx(expected, rel=1e-9)
    assert 0.5 < result.sntd <= 1.0


def test_transitive_bradley_terry_judge_has_zero_non_transitivity():
    skills = np.random.default_rng(1).normal(size=(5, 7))
    result = non_transitivity(_bt_tensor(skills))
    assert result.pnt == 0.0
    assert result.sntd == pytest.approx(0.0, abs=1e-12)
    assert result.triplets.shape == (35, 3) and (result.num_observed == 5).all()


def _brute_force(prefs: np.ndarray, tie_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Per (instruction, triplet): is there a weak order (scores in {0,1,2}) reproducing the verdicts; and the mean
    over held-out edges of the JSD between observed and BT-predicted preference."""
    num_i, n = prefs.shape[0], prefs.shape[1]
    hard, soft = [], []
    for i in range(num_i):
        row_h, row_s = [], []
        for a, b, c in itertools.combinations(range(n), 3):
            trip = (a, b, c)
            if not all(np.isfinite(prefs[i, x, y]) for x, y in itertools.permutations(trip, 2)):
                row_h.append(np.nan)
                row_s.append(np.nan)
                continue

            def verdict(x, y, i=i):
                d = prefs[i, x, y] - 0.5
                return 0 if abs(d) <= tie_tol else int(np.sign(d))

            consistent = any(
                all(
                    verdict(x, y) == np.sign(s[trip.index(x)] - s[trip.index(y)])
                    for x, y in itertools.combinations(trip, 2)
                )
                for s in itertools.product(range(3), repeat=3)
            )
            row_h.append(float(not consistent))
            devs = []
            for held in range(
                3
            ):  # predict P(x > z) from P(x > y), P(y > z) for the rotation with y in the middle
                x, y, z = trip[held], trip[(held + 1) % 3], trip[(held + 2) % 3]
                pred = transitive_prediction(prefs[i, x, y], prefs[i, y, z])
                devs.append(_jsd_bits(prefs[i, x, z], pred))
            row_s.append(np.mean(devs))
        hard.append(row_h)
        soft.append(row_s)
    return np.asarray(hard), np.asarray(soft)


@pytest.mark.parametrize("hard_values", [False, True])
def test_non_transitivity_matches_brute_force(hard_values):
    rng = np.random.default_rng(2)
    num_i, n = 4, 6
    if hard_values:  # win / tie / loss verdicts, where ties exercise the weak-order rule
        upper = rng.choice([0.0, 0.5, 1.0], size=(num_i, n, n))
    else:
        upper = rng.uniform(size=(num_i, n, n))
    prefs = np.triu(upper, 1) + np.swapaxes(1.0 - np.triu(upper, 1), 1, 2) * np.tril(np.ones((n, n)), -1)
    prefs[:, np.arange(n), np.arange(n)] = np.nan
    prefs[1, 0, 3] = prefs[1, 3, 0] = np.nan  # one unobserved pair
    hard, soft = _brute_force(prefs, tie_tol=0.0)
    result = non_transitivity(prefs, chunk_cells=25)  # small chunks exercise the chunk loop
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(result.pnt_per_triplet, np.nanmean(hard, axis=0))
        np.testing.assert_allclose(result.sntd_per_triplet, np.nanmean(soft, axis=0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(result.pnt_per_instruction, np.nanmean(hard, axis=1))
    assert result.pnt == pytest.approx(np.nanmean(np.nanmean(hard, axis=1)))
    assert result.sntd == pytest.approx(np.nanmean(np.nanmean(soft, axis=1)), rel=1e-6)
    assert result.num_observed.tolist() == np.isfinite(hard).sum(0).tolist()
    if hard_values:
        assert 0.0 < result.pnt < 1.0


def test_ties_follow_weak_order_rule():
    def tensor(p01, p12, p02):
        prefs = np.full((3, 3), np.nan)
        for (x, y), p in (((0, 1), p01), ((1, 2), p12), ((0, 2), p02)):
            prefs[x, y], prefs[y, x] = p, 1 - p
        return prefs

    assert non_transitivity(tensor(1.0, 1.0, 0.5)).pnt == 1.0  # 0 > 1 > 2 but 0 ~ 2
    assert non_transitivity(tensor(0.5, 0.5, 1.0)).pnt == 1.0  # 0 ~ 1 ~ 2 but 0 > 2
    assert non_transitivity(tensor(1.0, 0.5, 1.0)).pnt == 0.0  # 0 > 1 ~ 2: a weak order
    assert non_transitivity(tensor(0.5, 0.5, 0.5)).pnt == 0.0  # all tied
    assert non_transitivity(tensor(0.6, 0.6, 0.55), tie_tol=0.1).pnt == 0.0  # all within the tie tolerance


def test_simulated_judge_non_transitivity_grows_with_its_parameter():
    key = jax.random.key(0)
    pnts, sntds = [], []
    for strength in (0.0, 1.0, 4.0):
        judge = make_simulated_judge(key, 8, 12, nontransitivity=strength, skill_scale=1.0)
        result = non_transitivity(judge.preference_tensor())
        pnts.append(result.pnt)
        sntds.append(result.sntd)
    assert pnts[0] == 0.0 and sntds[0] == pytest.approx(0.0, abs=1e-9)
    assert pnts[0] < pnts[1] < pnts[2] and sntds[0] < sntds[1] < sntds[2]
    assert pnts[2] > 0.1


def test_position_consistency_of_simulated_judge():
    key = jax.random.key(1)
    n, num_i = 8, 12  # the shape the tournament tests use too: the simulator compiles once per session
    ins, a, b = (
        x.reshape(-1) for x in np.meshgrid(np.arange(num_i), np.arange(n), np.arange(n), indexing="ij")
    )
    keep = a < b
    ins, a, b = ins[keep], a[keep], b[keep]
    for bias, expect_consistent in ((0.0, True), (3.0, False)):
        judge = make_simulated_judge(key, n, num_i, skill_scale=0.5, position_bias=bias)
        p_a_first = judge(ins, a, b)
        p_b_first = judge(ins, b, a)
        comps = make_comparisons(
            np.concatenate([a, a]),
            np.concatenate([b, b]),
            np.concatenate([ins, ins]),
            np.concatenate([p_a_first, 1 - p_b_first]),
            np.concatenate([np.zeros_like(a), np.ones_like(a)]),
            num_models=n,
        )
        result = position_consistency(comps)
        assert result.num_pairs == a.size
        assert (result.rate == 1.0) == expect_consistent
        np.testing.assert_allclose(preference_tensor(comps), judge.preference_tensor(), atol=1e-12)
        assert (result.first_shown_win_rate > 0.6) == (not expect_consistent)


def test_baseline_win_rates_and_rank_correlations():
    skills = np.random.default_rng(3).normal(size=(3, 6))
    prefs = _bt_tensor(skills)
    rates = baseline_win_rates(prefs, 2)
    assert rates[2] == 0.5
    np.testing.assert_allclose(rates[[0, 1, 3, 4, 5]], prefs[:, [0, 1, 3, 4, 5], 2].mean(0))
    hard = baseline_win_rates(prefs, 2, hard=True)
    np.testing.assert_allclose(hard[0], np.mean(prefs[:, 0, 2] > 0.5))
    with pytest.raises(ConfigError, match="baseline=6"):
        baseline_win_rates(prefs, 6)

    scores = np.array([0.3, 2.0, -1.0, 0.5])
    ranking = ranking_from_scores(scores)
    np.testing.assert_array_equal(ranking, [1, 3, 0, 2])
    np.testing.assert_array_equal(ranking_from_scores(scores_from_ranking(ranking)), ranking)
    reference = np.array([0.0, 3.0, 1.0, 2.0])
    corr = rank_correlations(scores, reference)
    assert corr.spearman == pytest.approx(stats.spearmanr(scores, reference).statistic)
    assert corr.kendall == pytest.approx(stats.kendalltau(scores, reference).statistic)
    assert rank_correlations(scores, scores).spearman == pytest.approx(1.0)


def test_triplet_indices_and_bad_input():
    np.testing.assert_array_equal(triplet_indices(4), list(itertools.combinations(range(4), 3)))
    with pytest.raises(ConfigError, match="preferences"):
        non_transitivity(np.zeros((2, 3, 4)))
    with pytest.raises(ConfigError, match="tie_tol"):
        non_transitivity(np.full((3, 3), 0.5), tie_tol=0.5)
