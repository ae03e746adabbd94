"""The multi-host benchmark runs the same computation in every layout (1 x 1, 1 x 4, 2 x 2, 4 x 1 processes x
devices): the same model, data and steps give the same final loss, and its quick payload is complete."""

from __future__ import annotations

import math

import pytest

from benchmarks import multihost


@pytest.mark.slow  # 4 jobs of up to 4 processes: ~60 s on 2 cores
def test_quick_run_is_the_same_work_in_every_layout():
    payload = multihost.run(quick=True)
    rows = {r["layout"]: r for r in payload["rows"]}
    assert list(rows) == ["1x1", "1x4", "2x2", "4x1"]
    assert [(r["processes"], r["devices"]) for r in rows.values()] == [(1, 1), (1, 4), (2, 4), (4, 4)]
    reference = rows["1x1"]["none"]["final_loss"]
    for name, row in rows.items():
        for mode in ("dp", "fsdp") if name != "1x1" else ("none",):
            x = row[mode]
            # 7 steps of the same batch: only float summation order differs between layouts
            assert x["final_loss"] == pytest.approx(reference, abs=1e-4), (name, mode)
            assert math.isfinite(x["tokens_per_s"]) and x["tokens_per_s"] > 0
            assert x["compile_s"] > 0
        if name != "1x1":
            assert set(row["allreduce_ms"]) == {"1000", "100000", "1000000"}
            assert all(v > 0 for v in row["allreduce_ms"].values())
    assert rows["1x4"]["dp"]["ratio_vs_1x4"] == 1.0
