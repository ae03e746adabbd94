"""Bradley-Terry benchmark: ours, choix and evalica reach the same optimum on the same comparisons (the timed
calls at the quick sizes, and in a tiny run's complete payload), and the peers' input/output conversions are
right."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pandas as pd  # evalica's dependency

from benchmarks import bt_fit
from benchmarks.harness import write_result

TINY = bt_fit.Budget(sizes=((12, 1500),), repeats=2, breakdown_repeats=1)


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_tiny_run_payload_is_complete_and_all_reach_the_same_optimum(tmp_path):
    payload = bt_fit.run(budget=TINY)
    (row,) = payload["rows"]
    assert (row["num_models"], row["num_comparisons"]) == TINY.sizes[0]
    for side in ("ours", "choix", "evalica"):
        assert _positive(row[side]["median_ms"]) and row[side]["timing"]["repeats"] == TINY.repeats
    assert _positive(row["ours_compile_s"]) and row["ours_converged"]
    assert _positive(row["ratio_choix_over_ours"]) and _positive(row["ratio_evalica_over_ours"])
    delta = row["max_abs_delta_centred"]
    assert max(delta.values()) <= bt_fit.SAME_OPTIMUM_ATOL, delta
    assert row["same_optimum"] and payload["targets"]["same_optimum"]
    assert row["max_abs_error_vs_truth"] < 0.5  # the fit is of the planted strengths, not of noise
    assert set(row["breakdown"]["methods"]) == {"newton", "newman"}
    assert all(m["converged"] for m in row["breakdown"]["methods"].values())
    targets = payload["targets"]
    assert isinstance(targets["faster_than_choix"], bool) and targets["ge_5x_evalica_at_500"] is None
    path = write_result(bt_fit.NAME, {"quick": True, **payload}, tmp_path)
    assert json.loads(path.read_text())["rows"][0]["num_models"] == 12


def test_ours_choix_and_evalica_reach_the_same_scores_on_the_same_comparisons():
    # the benchmark's timed calls at its quick sizes, each result read back independently of the payload
    for num_models, num_comparisons in bt_fit.QUICK.sizes:
        theta, a, b, y = bt_fit.synthetic_comparisons(num_models, num_comparisons)
        calls = bt_fit.fit_calls(a, b, y, num_models)
        scores = {name: bt_fit.centred_scores(name, call(), num_models) for name, call in calls.items()}
        assert all(s.shape == (num_models,) for s in scores.values())
        for peer in ("choix", "evalica"):
            np.testing.assert_allclose(scores["ours"], scores[peer], rtol=0, atol=bt_fit.SAME_OPTIMUM_ATOL)
        # and the optimum is the planted strengths', up to sampling noise (a fit of noise would be ~1 off)
        assert np.abs(scores["ours"] - (theta - theta.mean())).max() < 0.5


def test_peer_conversions():
    _, a, b, y = bt_fit.synthetic_comparisons(5, 400, seed=3)
    assert np.all(a != b) and set(np.unique(y)) <= {0.0, 1.0}
    data = bt_fit.choix_data(a, b, y)
    assert data[0] == ((a[0], b[0]) if y[0] == 1.0 else (b[0], a[0]))
    inputs = bt_fit.evalica_inputs(a, b, y, 5)
    assert inputs["xs"] == a.tolist() and len(inputs["winners"]) == 400

    # evalica returns strengths sorted by score, indexed by model
    result = types.SimpleNamespace(scores=pd.Series([4.0, 1.0, 0.25, 2.0, 0.5], index=[3, 0, 4, 1, 2]))
    log_s = bt_fit.evalica_scores(result, 5)
    expected = np.log([1.0, 2.0, 0.5, 4.0, 0.25])
    np.testing.assert_allclose(log_s, expected - expected.mean())
