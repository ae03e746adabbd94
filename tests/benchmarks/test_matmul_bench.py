"""Matmul benchmark: XLA and numpy compute the same product of the same operands (float32, against a float64
product), and the quick run's payload is complete."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import matmul


def test_xla_and_numpy_compute_the_same_product():
    a, b = matmul.operands(512)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    # entries ~ N(0, 512): float32 accumulation over 512 terms errs by ~1e-5 of sqrt(512) ~ 2e-4 (any order)
    for got in (np.asarray(jax.jit(jnp.matmul)(jnp.asarray(a), jnp.asarray(b))), np.matmul(a, b)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, exact, rtol=0, atol=5e-3)


def test_quick_run_payload_is_complete_and_positive():
    payload = matmul.run(quick=True)
    assert [r["n"] for r in payload["rows"]] == [512, 1024]
    for row in payload["rows"]:
        for key in ("jax_gflops", "numpy_gflops", "ratio_jax_over_numpy"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert row["jax"]["repeats"] == row["numpy"]["repeats"] == 5
    assert payload["peak_gflops"] == max(max(r["jax_gflops"], r["numpy_gflops"]) for r in payload["rows"])
