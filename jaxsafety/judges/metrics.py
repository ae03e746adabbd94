"""Judge-quality metrics: position bias, non-transitivity (PNT, SNTD), baseline win rates, rank agreement.

Xu, Ruis, Rocktäschel, Kirk (ICML 2025, arXiv 2502.14074, "Investigating Non-Transitivity in LLM-as-a-Judge"),
Sec. 3. Everything here reads a *preference tensor* ``P`` of shape ``[I, n, n]``: ``P[i, x, y]`` is the judge's
(position-debiased) probability that model ``x`` beats model ``y`` on instruction ``i``, with
``P[i, y, x] = 1 - P[i, x, y]`` and NaN where the pair was not compared on that instruction (and on the diagonal).
:func:`preference_tensor` builds it from :class:`~jaxsafety.judges.data.Comparisons`.

Position debiasing (the paper's "position switching"): the debiased preference of ``x`` over ``y`` is the mean of
p(x wins | x shown first) and 1 - p(y wins | y shown first) (:func:`debiased_preference`); when only one order was
judged, that order's preference is used as is.

Non-transitivity of a model triplet ``(A, B, C)`` on one instruction, from the three preferences around the cycle
``x = P(A>B)``, ``y = P(B>C)``, ``z = P(C>A)``:

- *hard* (PNT): each preference is turned into a verdict ``sign(P - 1/2)`` (a tie when ``|P - 1/2| <= tie_tol``;
  position switching makes a pair whose two orders disagree a tie). The triplet is non-transitive when no weak
  order of the three models reproduces the verdicts. Because the three score differences around a cycle sum to
  zero, a weak order exists iff all three verdicts are ties or at least one is a win and one a loss around the
  cycle; so the triplet is non-transitive iff the verdicts are all >= 0 with at least one > 0, or all <= 0 with at
  least one < 0. Without ties this is exactly the rock-paper-scissors cycle A>B>C>A (or its reverse); with ties it
  also flags e.g. A>B, B>C, A~C. PNT(A, B, C) is the fraction of instructions on which the triplet is
  non-transitive (paper: ``PNT = 1/|I| sum_i 1_non-trans(m_A, m_B, m_C | m_J, I_i)``).
- *soft* (SNTD): under Bradley-Terry, preferences are transitive in logit space, so P(A>C) is predicted from
  P(A>B), P(B>C) as ``sigmoid(logit P(A>B) + logit P(B>C)) = pq / (pq + (1-p)(1-q))``. The deviation is the
  Jensen-Shannon divergence between the Bernoulli of the observed and of the predicted preference (paper: JSD
  between observed win rate phi and the BT-expected win rate phi-hat). To make the value independent of the
  labelling of the triplet we average the three deviations obtained by holding out each edge of the cycle in
  turn (all three are zero iff ``logit x + logit y + logit z = 0``, i.e. iff the triplet is BT-consistent). JSD is
  in bits by default (``base=2``), so it lies in [0, 1]; it is the divergence, not its square root (scipy's
  ``jensenshannon`` returns the distance).

The aggregate PNT / SNTD average over all fully observed (triplet, instruction) cells, per instruction first and
then over instructions, as the paper reports "averaged over instructions".

Implementation note: these are gathers and elementwise maps over ``[I, T]`` arrays (``T = n(n-1)(n-2)/6``
triplets from index arrays), memory-bound and run once per analysis; numpy in float64 avoids both XLA compile time
per shape and float32 rounding of JSD values near zero, so they are not jitted. Instructions are processed in
chunks to bound memory for large ``n``.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from scipy import stats
from scipy.special import xlogy

from jaxsafety.config import ConfigError, check_range
from jaxsafety.judges.data import Comparisons

__all__ = [
    "NonTransitivity",
    "PositionConsistency",
    "RankCorrelation",
    "baseline_win_rates",
    "debiased_preference",
    "non_transitivity",
    "position_consistency",
    "preference_tensor",
    "rank_correlations",
    "ranking_from_scores",
    "scores_from_ranking",
    "transitive_prediction",
    "triplet_indices",
]


def debiased_preference(p_a_first: np.ndarray | float, p_b_first: np.ndarray | float) -> np.ndarray:
    """p(a beats b) with position bias removed: mean of p(a wins | a shown first) and 1 - p(b wins | b shown
    first). Elementwise."""
    return 0.5 * (np.asarray(p_a_first, dtype=np.float64) + 1.0 - np.asarray(p_b_first, dtype=np.float64))


def _order_means(comparisons: Comparisons) -> np.ndarray:
    """``[I, n, n, 2]``: mean p(x beats y) with ``x`` shown first (last index 0) or ``y`` shown first (1); NaN
    where no record. Each record is entered twice (as x-vs-y and as y-vs-x), so the array is antisymmetric:
    ``M[i, x, y, s] = 1 - M[i, y, x, 1 - s]``."""
    c = comparisons
    num_i, n = c.num_instructions, c.num_models
    rows = np.concatenate([c.model_a, c.model_b])
    cols = np.concatenate([c.model_b, c.model_a])
    prob = np.concatenate([c.prob_a, 1.0 - c.prob_a])
    pos = c.position.astype(np.int64)
    slot = np.concatenate([pos, 1 - pos])  # 0 when the row model's response was shown first
    ins = np.concatenate([c.instruction, c.instruction])
    flat = ((ins * n + rows) * n + cols) * 2 + slot
    size = num_i * n * n * 2
    sums = np.bincount(flat, weights=prob, minlength=size).reshape(num_i, n, n, 2)
    counts = np.bincount(flat, minlength=size).reshape(num_i, n, n, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def preference_tensor(comparisons: Comparisons, *, debias: bool = True) -> np.ndarray:
    """``[I, n, n]`` float64 preference tensor (module docstring): repeated judgements of one (instruction, pair,
    order) are averaged; with ``debias=True`` the two presentation orders are then averaged with equal weight
    (:func:`debiased_preference`), with ``debias=False`` all records of the pair are pooled. NaN where the pair was
    not compared on that instruction and on the diagonal."""
    c = comparisons
    if not debias:
        num_i, n = c.num_instructions, c.num_models
        rows = np.concatenate([c.model_a, c.model_b])
        cols = np.concatenate([c.model_b, c.model_a])
        flat = (np.concatenate([c.instruction, c.instruction]) * n + rows) * n + cols
        prob = np.concatenate([c.prob_a, 1.0 - c.prob_a])
        sums = np.bincount(flat, weights=prob, minlength=num_i * n * n)
        counts = np.bincount(flat, minlength=num_i * n * n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (sums / counts).reshape(num_i, n, n)
    means = _order_means(c)
    both = np.isfinite(means).all(-1)
    return np.where(both, means.mean(-1), np.where(np.isnan(means[..., 0]), means[..., 1], means[..., 0]))


class PositionConsistency(NamedTuple):
    """``rate``: fraction of (instruction, pair) cells judged in both orders whose hard verdict (win / tie / loss)
    is the same in both orders; ``num_pairs``: how many such cells; ``first_shown_win_rate``: mean p(the response
    shown first wins) over all records (0.5 for a position-fair judge)."""

    rate: float
    num_pairs: int
    first_shown_win_rate: float


def position_consistency(comparisons: Comparisons, *, tie_tol: float = 0.0) -> PositionConsistency:
    """Position consistency of a judge (e.g. Zheng et al. 2023 "Judging LLM-as-a-judge", Sec. 3.3). A verdict is
    a tie when ``|p - 1/2| <= tie_tol``; repeated judgements of one order are averaged first. ``rate`` is NaN when
    no pair was judged in both orders."""
    check_range("tie_tol", tie_tol, ge=0.0, lt=0.5)
    means = _order_means(comparisons)
    upper = np.triu(np.ones(means.shape[1:3], dtype=bool), k=1)
    both = np.isfinite(means).all(-1) & upper
    verdict = np.where(np.abs(means - 0.5) <= tie_tol, 0, np.sign(means - 0.5))
    agree = verdict[..., 0] == verdict[..., 1]
    num = int(both.sum())
    rate = float(agree[both].mean()) if num else float("nan")
    c = comparisons
    first = np.where(c.position == 0, c.prob_a, 1.0 - c.prob_a)
    first_rate = float(first.mean()) if first.size else float("nan")
    return PositionConsistency(rate, num, first_rate)


def triplet_indices(num_models: int) -> np.ndarray:
    """``[T, 3]`` int64: all ``i < j < k``, ``T = n(n-1)(n-2)/6``, in lexicographic order."""
    n = num_models
    i, j, k = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    keep = (i < j) & (j < k)
    return np.stack([i[keep], j[keep], k[keep]], axis=-1).astype(np.int64)


def transitive_prediction(p_ab: np.ndarray, p_bc: np.ndarray, *, eps: float = 1e-6) -> np.ndarray:
    """Bradley-Terry prediction of P(A>C) from P(A>B) and P(B>C): ``sigmoid(logit p + logit q) = pq / (pq +
    (1-p)(1-q))``, with inputs clipped to ``[eps, 1 - eps]`` (so p=1, q=0 gives 1/2 rather than 0/0)."""
    p = np.clip(p_ab, eps, 1.0 - eps)
    q = np.clip(p_bc, eps, 1.0 - eps)
    pq = p * q
    return pq / (pq + (1.0 - p) * (1.0 - q))


def _bernoulli_jsd(p: np.ndarray, q: np.ndarray, base: float) -> np.ndarray:
    """Jensen-Shannon divergence between Bernoulli(p) and Bernoulli(q): ``H(m) - (H(p) + H(q)) / 2``."""

    def entropy(x: np.ndarray) -> np.ndarray:
        return -(xlogy(x, x) + xlogy(1.0 - x, 1.0 - x))

    jsd = entropy(0.5 * (p + q)) - 0.5 * (entropy(p) + entropy(q))
    return np.maximum(jsd, 0.0) / np.log(base)


class NonTransitivity(NamedTuple):
    """Non-transitivity of a judge over ``T`` model triplets and ``I`` instructions (module docstring).

    - ``pnt``, ``sntd``: scalars, per-instruction means over fully observed triplets, averaged over instructions.
    - ``pnt_per_triplet``, ``sntd_per_triplet``: ``[T]``, means over the instructions where the triplet is fully
      observed (NaN if none), for ``triplets`` ``[T, 3]``.
    - ``pnt_per_instruction``, ``sntd_per_instruction``: ``[I]`` (NaN where no triplet is fully observed).
    - ``num_observed``: ``[T]`` int, instructions on which the triplet is fully observed.
    """

    pnt: float
    sntd: float
    pnt_per_triplet: np.ndarray
    sntd_per_triplet: np.ndarray
    pnt_per_instruction: np.ndarray
    sntd_per_instruction: np.ndarray
    triplets: np.ndarray
    num_observed: np.ndarray


def non_transitivity(
    preferences: np.ndarray,
    *,
    tie_tol: float = 0.0,
    eps: float = 1e-6,
    base: float = 2.0,
    triplets: np.ndarray | None = None,
    chunk_cells: int = 1 << 22,
) -> NonTransitivity:
    """PNT and SNTD (module docstring) of a preference tensor ``[I, n, n]`` (or ``[n, n]`` for one instruction),
    over ``triplets`` ``[T, 3]`` (default: all of :func:`triplet_indices`). Vectorised over triplets and
    instructions; ``chunk_cells`` bounds the size of each ``[instructions, T]`` work array."""
    prefs = np.asarray(preferences, dtype=np.float64)
    if prefs.ndim == 2:
        prefs = prefs[None]
    if prefs.ndim != 3 or prefs.shape[1] != prefs.shape[2]:
        raise ConfigError("preferences", f"shape {prefs.shape}", "an [I, n, n] or [n, n] array")
    check_range("tie_tol", tie_tol, ge=0.0, lt=0.5)
    check_range("eps", eps, gt=0.0, lt=0.5)
    check_range("base", base, gt=1.0)
    num_i, n = prefs.shape[0], prefs.shape[1]
    tri = triplet_indices(n) if triplets is None else np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
    num_t = tri.shape[0]
    hard = np.full((num_i, num_t), np.nan)
    soft = np.full((num_i, num_t), np.nan)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    step = max(1, chunk_cells // max(num_t, 1))
    for start in range(0, num_i, step):
        block = prefs[start : start + step]
        x, y, z = block[:, a, b], block[:, b, c], block[:, c, a]  # around the cycle A -> B -> C -> A
        observed = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
        verdicts = np.stack([x, y, z], axis=-1) - 0.5
        verdicts = np.where(np.abs(verdicts) <= tie_tol, 0.0, np.sign(verdicts))
        lo, hi = verdicts.min(-1), verdicts.max(-1)
        cyclic = ((lo >= 0) & (hi > 0)) | ((hi <= 0) & (lo < 0))
        # Each edge held out in turn: P(B>A) = 1 - x is predicted from P(B>C) = y and P(C>A) = z, and so on.
        dev = (
            _bernoulli_jsd(1.0 - x, transitive_prediction(y, z, eps=eps), base)
            + _bernoulli_jsd(1.0 - y, transitive_prediction(z, x, eps=eps), base)
            + _bernoulli_jsd(1.0 - z, transitive_prediction(x, y, eps=eps), base)
        ) / 3.0
        hard[start : start + step] = np.where(observed, cyclic.astype(np.float64), np.nan)
        soft[start : start + step] = np.where(observed, dev, np.nan)
    num_observed = np.isfinite(hard).sum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN, on purpose
        pnt_i, sntd_i = np.nanmean(hard, axis=1), np.nanmean(soft, axis=1)
        pnt_t, sntd_t = np.nanmean(hard, axis=0), np.nanmean(soft, axis=0)
        pnt, sntd = float(np.nanmean(pnt_i)), float(np.nanmean(sntd_i))
    return NonTransitivity(pnt, sntd, pnt_t, sntd_t, pnt_i, sntd_i, tri, num_observed)


def baseline_win_rates(preferences: np.ndarray, baseline: int, *, hard: bool = False) -> np.ndarray:
    """AlpacaEval-style win rate of every model against ``baseline``: ``[n]``, the mean over instructions of
    P(model beats baseline) (``hard=True``: of the verdicts 1 / 0.5 / 0). The baseline itself scores 0.5; models
    never compared with it score NaN."""
    prefs = np.asarray(preferences, dtype=np.float64)
    if prefs.ndim == 2:
        prefs = prefs[None]
    n = prefs.shape[1]
    check_range("baseline", baseline, ge=0, lt=n, integer=True)
    col = prefs[:, :, baseline]
    if hard:
        col = np.where(np.isnan(col), np.nan, 0.5 + 0.5 * np.sign(col - 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rates = np.nanmean(col, axis=0)
    rates[baseline] = 0.5
    return rates


def ranking_from_scores(scores: np.ndarray) -> np.ndarray:
    """``[n]`` model indices, best (highest score) first; ties keep index order (stable sort); NaN scores last."""
    s = np.asarray(scores, dtype=np.float64)
    return np.argsort(np.where(np.isnan(s), np.inf, -s), kind="stable")


def scores_from_ranking(ranking: np.ndarray) -> np.ndarray:
    """Inverse of :func:`ranking_from_scores`: ``[n]`` float scores ``n - 1 - position`` (best = n - 1)."""
    order = np.asarray(ranking, dtype=np.int64)
    scores = np.empty(order.shape[0], dtype=np.float64)
    scores[order] = np.arange(order.shape[0] - 1, -1, -1, dtype=np.float64)
    return scores


class RankCorrelation(NamedTuple):
    """Spearman's rho and Kendall's tau-b between two score vectors (scipy.stats)."""

    spearman: float
    kendall: float


def rank_correlations(scores: np.ndarray, reference_scores: np.ndarray) -> RankCorrelation:
    """Rank agreement of ``scores`` ``[n]`` with ``reference_scores`` ``[n]`` (e.g. the latent skills of a
    simulated judge, or :func:`scores_from_ranking` of a ground-truth ranking); higher = better in both.
    Models with a NaN score in either are dropped."""
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(reference_scores, dtype=np.float64)
    if s.shape != r.shape:
        raise ConfigError("reference_scores", f"shape {r.shape}", f"the shape of scores {s.shape}")
    keep = np.isfinite(s) & np.isfinite(r)
    rho = stats.spearmanr(s[keep], r[keep]).statistic
    tau = stats.kendalltau(s[keep], r[keep]).statistic
    return RankCorrelation(float(rho), float(tau))
