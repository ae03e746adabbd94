"""Summaries of a pairwise influence matrix ``scores [Q, N]`` (queries x training documents), as in Ruis et al. 2024
("Procedural knowledge in pretraining drives reasoning in large language models", arXiv 2411.12580):

- :func:`score_correlations`: Pearson correlation of two queries' influence over the whole corpus, averaged
  within and across query groups (e.g. reasoning tasks): do queries of one task draw on the same documents?
- :func:`top_k_hits`: does a *relevant* document (e.g. one that states the answer) rank in a query's top k, next to
  the chance of that under a random ranking (hypergeometric), so a frequent answer does not pass for a hit;
- :func:`top_k_composition`: which document labels (kinds) fill a query's top k;
- :func:`influence_per_nat`: the summed influence of the top-k documents per nat of the query's completion
  (how much single documents explain per unit of information generated).

Plain numpy on host arrays: the matrix is computed once (:func:`jaxsafety.influence.pairwise_scores`) and these
are cheap reductions over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["influence_per_nat", "score_correlations", "top_k_composition", "top_k_hits", "top_k_indices"]


def _scores(scores: Any) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
        raise ValueError(
            f"scores of shape {s.shape} is invalid: accepted values are [num_queries, num_documents]"
        )
    return s


def _check_k(k: int, n: int) -> None:
    if not (isinstance(k, int | np.integer) and 1 <= k <= n):
        raise ValueError(
            f"k={k} is invalid: accepted values are integers in [1, {n}] (the number of documents)"
        )


def top_k_indices(scores: Any, k: int) -> np.ndarray:
    """``[Q, k]`` document indices of each query's ``k`` most positively influential documents, best first
    (ties broken by index)."""
    s = _scores(scores)
    _check_k(k, s.shape[1])
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def score_correlations(scores: Any, groups: Sequence[str]) -> dict[str, Any]:
    """Pearson correlations between queries' influence vectors: ``matrix [Q, Q]``, and the mean off-diagonal
    correlation ``within[g]`` over pairs of queries of group ``g``, ``across[(g, h)]`` over pairs from groups
    ``g != h`` (keys ``"g|h"``, ``g < h``), with the pair counts. A group with one query has no within pair (NaN)."""
    s = _scores(scores)
    if len(groups) != s.shape[0]:
        raise ValueError(
            f"groups has {len(groups)} entries: accepted values are one per query ({s.shape[0]})"
        )
    corr = np.corrcoef(s) if s.shape[0] > 1 else np.ones((1, 1))
    g = np.asarray(groups)
    names = sorted(set(groups))
    upper = np.triu(np.ones_like(corr, bool), k=1)
    within, across, counts = {}, {}, {}
    for i, a in enumerate(names):
        sel = upper & (g[:, None] == a) & (g[None, :] == a)
        within[a] = float(corr[sel].mean()) if sel.any() else float("nan")
        counts[a] = int(sel.sum())
        for b in names[i + 1 :]:
            sel = ((g[:, None] == a) & (g[None, :] == b)) | ((g[:, None] == b) & (g[None, :] == a))
            sel &= upper
            across[f"{a}|{b}"] = float(corr[sel].mean()) if sel.any() else float("nan")
            counts[f"{a}|{b}"] = int(sel.sum())
    return {"matrix": corr, "within": within, "across": across, "pairs": counts}


def top_k_hits(scores: Any, relevant: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hit [Q] bool, chance [Q])``: whether at least one ``relevant[q]`` document ranks in query ``q``'s top
    ``k``, and the probability of that for a ranking drawn uniformly at random,
    ``1 - C(N - r, k) / C(N, k)`` with ``r`` relevant documents (hypergeometric)."""
    s = _scores(scores)
    rel = np.asarray(relevant, bool)
    if rel.shape != s.shape:
        raise ValueError(
            f"relevant of shape {rel.shape} is invalid: accepted values are scores' shape {s.shape}"
        )
    top = top_k_indices(s, k)
    hit = np.take_along_axis(rel, top, axis=1).any(axis=1)
    n, r = s.shape[1], rel.sum(axis=1)
    chance = stats.hypergeom(n, r, k).sf(0)
    return hit, np.asarray(chance, np.float64)


def top_k_composition(scores: Any, labels: Sequence[str], k: int, names: Sequence[str]) -> np.ndarray:
    """``[Q, len(names)]``: the fraction of each query's top ``k`` documents whose label is ``names[j]``
    (``labels``: one per document)."""
    s = _scores(scores)
    if len(labels) != s.shape[1]:
        raise ValueError(
            f"labels has {len(labels)} entries: accepted values are one per document ({s.shape[1]})"
        )
    lab = np.asarray(labels)[top_k_indices(s, k)]  # [Q, k]
    return np.stack([(lab == name).mean(axis=1) for name in names], axis=1)


def influence_per_nat(scores: Any, nats: Any, k: int) -> np.ndarray:
    """``[Q]``: the summed influence of each query's top ``k`` documents divided by the query's loss in nats
    (``nats [Q]``, e.g. the completion's summed NLL)."""
    s = _scores(scores)
    nats = np.asarray(nats, np.float64)
    if nats.shape != (s.shape[0],) or not np.all(nats > 0):
        raise ValueError(
            f"nats of shape {nats.shape} is invalid: accepted values are [{s.shape[0]}], all > 0"
        )
    top = np.take_along_axis(s, top_k_indices(s, k), axis=1)
    return top.sum(axis=1) / nats
