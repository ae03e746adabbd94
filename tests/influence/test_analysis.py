"""Influence-matrix summaries against direct computations: scipy's Pearson r over explicit query pairs, brute-force
enumeration of random rankings, explicit counting."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from jaxsafety.influence.analysis import (
    influence_per_nat,
    score_correlations,
    top_k_composition,
    top_k_hits,
    top_k_indices,
)


def test_correlations_within_and_across_groups():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 40))
    scores[1] += 2 * scores[0]  # a correlated pair inside group "a"
    groups = ["a", "a", "b", "a", "b", "c", "b"]
    out = score_correlations(scores, groups)
    pairs: dict[str, list[float]] = {}
    for i, j in itertools.combinations(range(7), 2):
        r = stats.pearsonr(scores[i], scores[j])[0]
        assert out["matrix"][i, j] == pytest.approx(r)
        g, h = sorted((groups[i], groups[j]))
        pairs.setdefault(g if g == h else f"{g}|{h}", []).append(r)
    for key, rs in pairs.items():
        got = out["within"][key] if "|" not in key else out["across"][key]
        assert got == pytest.approx(np.mean(rs)) and out["pairs"][key] == len(rs)
    assert math.isnan(out["within"]["c"]) and out["pairs"]["c"] == 0  # one query: no pair
    with pytest.raises(ValueError, match="groups has 2 entries"):
        score_correlations(scores, ["a", "b"])


def test_top_k_hits_and_chance_by_enumeration():
    rng = np.random.default_rng(1)
    n, k = 9, 3
    scores = rng.normal(size=(4, n))
    relevant = rng.random((4, n)) < 0.3
    relevant[0] = False
    hit, chance = top_k_hits(scores, relevant, k)
    for q in range(4):
        order = sorted(range(n), key=lambda i: -scores[q, i])
        assert hit[q] == any(relevant[q, i] for i in order[:k])
        subsets = list(itertools.combinations(range(n), k))  # every top-k set of a uniformly random ranking
        exact = np.mean([any(relevant[q, i] for i in s) for s in subsets])
        assert chance[q] == pytest.approx(exact)
    assert not hit[0] and chance[0] == 0.0
    with pytest.raises(ValueError, match="k=10 is invalid"):
        top_k_hits(scores, relevant, 10)
    with pytest.raises(ValueError, match="relevant of shape"):
        top_k_hits(scores, relevant[:, :3], 2)


def test_composition_indices_and_per_nat():
    scores = np.array([[0.5, 3.0, -1.0, 2.0, 0.0], [1.0, 1.0, 4.0, -2.0, 0.5]])
    assert top_k_indices(scores, 2).tolist() == [[1, 3], [2, 0]]  # ties broken by index
    labels = ["x", "y", "x", "y", "z"]
    comp = top_k_composition(scores, labels, 3, ["x", "y", "z"])
    np.testing.assert_allclose(comp, [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0]])
    nats = np.array([2.0, 4.0])
    np.testing.assert_allclose(influence_per_nat(scores, nats, 2), [(3.0 + 2.0) / 2, (4.0 + 1.0) / 4])
    with pytest.raises(ValueError, match="nats of shape"):
        influence_per_nat(scores, np.array([1.0, 0.0]), 2)
    with pytest.raises(ValueError, match="labels has 2 entries"):
        top_k_composition(scores, ["x", "y"], 1, ["x"])
