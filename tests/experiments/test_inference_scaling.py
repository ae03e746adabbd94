"""experiments/inference_scaling.py --smoke end to end, as a user runs it (a subprocess)."""

from __future__ import annotations

import json

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.experiments.script_runner import run_experiment


def test_smoke_run_writes_results_plots_and_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSAFETY_CACHE", str(tmp_path / "cache"))  # the arithmetic LM's trained-model cache
    out = run_experiment(
        "inference_scaling.py", "--smoke", "--out-dir", str(tmp_path), "--run-name", "r1", timeout=600
    )
    assert out.returncode == 0, out.stderr
    run = tmp_path / "inference_scaling" / "r1"
    res = json.loads((run / "results.json").read_text())
    for name in ("error_vs_budget", "power_law", "lm_passk"):
        assert (run / f"{name}.png").stat().st_size > 10_000, name
    table = res["error_vs_budget"]
    assert table["budgets"] == [10, 100]
    for name in ("least_squares", "beta_binomial"):
        errs = table["estimators"][name]["median_relative_error"]
        assert len(errs) == 2 and all(np.isfinite(errs)), (name, errs)
    # the distributional estimator's error falls with the budget (16 seeds: a large, robust effect)
    assert (
        table["estimators"]["beta_binomial"]["median_relative_error"][1]
        < table["estimators"]["beta_binomial"]["median_relative_error"][0]
    )
    assert res["true_exponent"] == 0.3 and abs(res["population"]["exponent"] - 0.3) < 1e-6
    lm = res["lm"]
    assert lm["attempts_total"] == 32 + 128 and lm["fits"]["beta_binomial"]["converged"]
    # the measured curve (all attempts) follows the exact one from teacher-forced probabilities at small k
    measured, exact = np.asarray(lm["measured_neg_log_pass_at_k"]), np.asarray(lm["exact_neg_log_pass_at_k"])
    np.testing.assert_allclose(measured[:5], exact[:5], rtol=0.25)
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0})
    ea.Reload()
    tags = ea.Tags()["scalars"]
    assert (
        "error/least_squares/median" in tags
        and "error/beta_binomial/median" in tags
        and "lm/train_seconds" in tags
    )
