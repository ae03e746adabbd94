"""Bradley-Terry benchmark: a tiny run yields a complete payload in which ours, choix and evalica reach the same
optimum on the same comparisons, and the peers' input/output conversions are right."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest

pytest.importorskip("choix")
pytest.importorskip("evalica")

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


def test_peer_conversions():
    _, a, b, y = bt_fit.synthetic_comparisons(5, 400, seed=3)
    assert np.all(a != b) and set(np.unique(y)) <= {0.0, 1.0}
    data = bt_fit.choix_data(a, b, y)
    assert data[0] == ((a[0], b[0]) if y[0] == 1.0 else (b[0], a[0]))
    inputs = bt_fit.evalica_inputs(a, b, y, 5)
    assert inputs["xs"] == a.tolist() and len(inputs["winners"]) == 400

    import pandas as pd  # evalica's dependency

    # evalica returns strengths sorted by score, indexed by model
    result = types.SimpleNamespace(scores=pd.Series([4.0, 1.0, 0.25, 2.0, 0.5], index=[3, 0, 4, 1, 2]))
    log_s = bt_fit.evalica_scores(result, 5)
    expected = np.log([1.0, 2.0, 0.5, 4.0, 0.25])
    np.testing.assert_allclose(log_s, expected - expected.mean())
