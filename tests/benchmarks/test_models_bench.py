"""Model-zoo benchmarks (train step, greedy and n-sample generation vs HF torch), end to end at --quick sizes.

Checks the payload, not the speed: every throughput, ratio and timing is present and positive, both sides did the
same work (train losses agree with torch's; greedy generations are token-for-token identical; sampled ones have the
same mean log-probability under the model).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmarks import models_generate, models_train

TIMING_KEYS = ("compile_s", "median_s", "min_s", "mean_s", "std_s", "repeats", "times_s")


def _check_timings(timings: dict, names: tuple[str, ...]) -> None:
    assert set(names) <= set(timings)
    for name in names:
        t = timings[name]
        assert set(TIMING_KEYS) <= set(t)
        assert t["compile_s"] > 0 and t["median_s"] > 0 and t["min_s"] > 0
        assert t["repeats"] == len(t["times_s"]) >= 1


def test_train_step_benchmark_quick():
    payload = models_train.run(quick=True)
    assert payload["rows"]
    for row in payload["rows"]:
        for key in (
            "ours_tokens_per_s",
            "hf_tokens_per_s",
            "ratio_ours_over_hf",
            "ratio_best_calls",
            "ours_gflops",
            "hf_gflops",
            "matmul_peak_gflops",
            "ours_frac_of_peak",
            "hf_frac_of_peak",
            "ours_compile_s",
            "flops_per_token",
        ):
            assert row[key] > 0, key
        # same work: identical FLOP count from both modules, same losses from the same weights and batch
        assert row["hf_flops_per_token"] == pytest.approx(row["flops_per_token"])
        assert row["max_loss_diff"] < 1e-4
        _check_timings(row["timings"], ("ours", "hf_1thread", "hf_2threads", "matmul_jax", "matmul_numpy"))


def test_generate_benchmark_quick():
    payload = models_generate.run(quick=True)
    assert {row["batch"] for row in payload["rows"]} == {1, 4}
    for row in payload["rows"]:
        for key in ("ours_tokens_per_s", "hf_tokens_per_s", "ratio_ours_over_hf", "ratio_best_calls"):
            assert row[key] > 0, key
        assert row["agreement"] == 1.0
        assert row["rows_identical"] == row["batch"]
        _check_timings(row["timings"], ("ours", "hf_1thread", "hf_2threads"))
    assert payload["sample_rows"]
    for row in payload["sample_rows"]:
        for key in ("ours_tokens_per_s", "hf_tokens_per_s", "ratio_ours_over_hf", "ratio_best_calls"):
            assert row[key] > 0, key
        # same distribution: both sides' samples, re-scored by our model, have the same mean log-prob per token
        se = (row["ours_mean_logprob_se"] ** 2 + row["hf_mean_logprob_se"] ** 2) ** 0.5
        assert abs(row["ours_mean_logprob"] - row["hf_mean_logprob"]) < 5 * se
        assert row["distinct_samples_ours"] > 1  # the n samples of a prompt differ
        _check_timings(row["timings"], ("ours", "hf_1thread", "hf_2threads"))
