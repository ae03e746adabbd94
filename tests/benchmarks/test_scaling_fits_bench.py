"""Scaling-fit benchmark: our bootstrap and the scipy loop reach the same optimum on the same resamples (a tiny
timed row), the peer's likelihoods are the library's (so the comparison is fair), and the tiny and quick runs
yield complete payloads (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from benchmarks import scaling_fits
from benchmarks.harness import write_result
from jaxsafety.scaling import beta_binomial_logpmf, scaled_beta_binomial_logpmf


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def _check_bootstrap_row(row: dict, budget: scaling_fits.Budget) -> None:
    scaled = row["family"] == "scaled_beta"
    for side in ("ours", "scipy"):
        assert _positive(row[side]["resamples_per_s"])
        assert row[side]["timing"]["repeats"] == (budget.repeats_scaled if scaled else budget.repeats)
    assert _positive(row["ratio_ours_over_scipy"])
    agreement = row["agreement"]
    assert agreement["resamples_compared"] == budget.agreement_subset
    # the same resamples (ours' index draws reproduced for the peer) reach the same optimum: float32 Newton vs
    # float64 L-BFGS-B; a different resample would move alpha by several percent
    assert agreement["alpha_rel_diff_max"] < 2e-3, agreement
    assert abs(agreement["loglik_gap_ours_minus_scipy_median"]) < 1e-2, agreement
    assert agreement["ours_converged_fraction"] == 1.0


def test_tiny_bootstrap_both_sides_reach_the_same_optimum_on_the_same_resamples():
    budget = scaling_fits.TINY
    row = scaling_fits.bootstrap_row(budget, scaled=False)
    assert row["family"] == "beta" and row["resamples"] == budget.resamples
    assert not row["ours"]["extrapolated"] and not row["scipy"]["extrapolated"]
    _check_bootstrap_row(row, budget)


@pytest.mark.slow
def test_tiny_run_payload_is_complete(tmp_path):
    budget = scaling_fits.TINY
    payload = scaling_fits.run(budget=budget)
    (row,) = payload["bootstrap"]
    _check_bootstrap_row(row, budget)
    rows = payload["efficiency"]["beta"]
    assert [r["attempts_per_problem"] for r in rows] == list(budget.budgets)
    for r in rows:
        assert r["seeds"] == budget.seeds and r["mle_converged_fraction"] == 1.0
        for method in ("lsq_logk", "lsq_allk", "mle"):
            assert _positive(r["median_rel_error"][method])
        assert _positive(r["error_ratio_lsq_logk_over_mle"])
        # noise-free least squares on the population's curve still misses alpha (the local slope, not the tail)
        assert r["lsq_population_slope_rel_error"]["lsq_logk"] > 0.05
    assert set(payload["targets"]) == {"bootstrap_ge_20x", "median_error_ratio_ge_5x_at_100"}
    assert all(isinstance(v, bool) for v in payload["targets"].values())
    path = write_result(scaling_fits.NAME, payload, tmp_path)
    data = json.loads(path.read_text())
    assert data["machine"]["jax"] and data["ratios"]["median_error_lsq_over_mle_at_100"] > 0


def _weighted_pairs(scaled: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = scaling_fits.sample_counts(1, 128, 100, scaled)
    pairs, counts = np.unique(c, return_counts=True)
    return np.full(len(pairs), 100.0), pairs.astype(np.float64), counts.astype(np.float64)


@pytest.mark.parametrize("scaled", [False, True])
def test_peer_likelihoods_match_the_library_and_their_gradients(scaled):
    n, c, w = _weighted_pairs(scaled)
    nll = (scaling_fits.ScaledBetaQuadrature if scaled else scaling_fits.BetaBinomialNLL)(n, c, w)
    for theta in (
        [np.log(0.3), np.log(3.0), 0.0],
        [np.log(0.05), np.log(0.4), 2.0],
        [np.log(2.0), np.log(20), -2],
    ):
        theta = np.asarray(theta[: 3 if scaled else 2])
        value, grad = nll(theta)
        a, b = np.exp(theta[:2])
        if scaled:
            lib = scaled_beta_binomial_logpmf(n, c, a, b, 1.0 / (1.0 + np.exp(-theta[2])))
        else:
            lib = beta_binomial_logpmf(n, c, a, b)
        assert value == pytest.approx(-(w @ np.asarray(lib, np.float64)) / w.sum(), rel=1e-5)
        fd = approx_fprime(theta, lambda t: nll(t)[0], 1e-6)
        np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_quick_run_scaled_rows_agree():
    budget = scaling_fits.QUICK
    payload = scaling_fits.run(quick=True)
    assert [r["family"] for r in payload["bootstrap"]] == ["beta", "scaled_beta"]
    for row in payload["bootstrap"]:
        _check_bootstrap_row(row, budget)
    scaled = payload["bootstrap"][1]
    assert scaled["ours"]["extrapolated"] and scaled["scipy"]["extrapolated"]
    for r in payload["efficiency"]["scaled_beta"]:
        assert r["mle_converged_fraction"] == 1.0
