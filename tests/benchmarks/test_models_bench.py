"""Model-zoo benchmarks (train step, greedy and n-sample generation vs HF torch).

Default: at the --quick model size, the functions the benchmarks time do the same work on both sides: the train
step's first loss, its one-step parameter change (AdamW) and the next loss equal HF torch's from the same weights
and batch; greedy generation gives the same tokens wherever the choice is not a near-tie, from logits that agree.
Slow: the whole --quick runs produce complete payloads.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import models_generate, models_train
from jaxsafety.models.hf import from_hf, param_dict

TIMING_KEYS = ("compile_s", "median_s", "min_s", "mean_s", "std_s", "repeats", "times_s")


def test_train_step_first_loss_and_one_step_update_equal_hf_torch():
    cfg = models_train.model_configs(quick=True)["gpt2"]
    model = models_train.make_model(cfg)
    before = {k: np.array(v) for k, v in param_dict(model).items()}  # copies: our step donates the weights
    hf = models_train.load_hf(model)
    hf.train()
    tokens = models_train.train_tokens(cfg, *models_train.batch_shape(quick=True))
    ours = models_train.ours_train_call(model, tokens)
    hf_step = models_train.hf_train_call(hf, tokens)

    losses = [(float(ours.call()), hf_step())]
    after_ours = ours.params()
    after_hf = {k: np.asarray(v) for k, v in param_dict(from_hf(hf)).items()}
    losses.append((float(ours.call()), hf_step()))
    # float32 rounding only (measured 5e-7 and 1e-6 on losses of 6.27 and 6.09)
    for step, (loss_ours, loss_hf) in enumerate(losses):
        assert abs(loss_ours - loss_hf) < 1e-5, (step, losses)
    assert losses[1][0] < losses[0][0] - 0.05  # the step learned something

    # AdamW's first step moves each weight by about lr * sign(gradient) (plus lr * wd * weight): every weight
    # moves by ~1e-3, and a wrong sign is off by 2e-3. Weights whose exact gradient is zero (GPT-2's key bias)
    # move by lr * rounding noise / eps on either side: measured up to 4e-6, allowed 5e-5.
    assert set(after_ours) == set(after_hf) == set(before)
    lr = models_train.ADAMW.lr
    for k, p0 in before.items():
        d_ours, d_hf = after_ours[k] - p0, after_hf[k] - p0
        np.testing.assert_allclose(d_ours, d_hf, rtol=0, atol=0.05 * lr, err_msg=k)
        assert np.abs(d_hf).max() > 0.5 * lr, k


def test_greedy_tokens_equal_hf_torch_until_a_near_tie():
    cfg = models_train.model_configs(quick=True)["gpt2"]
    batch, prompt_len, new = 4, 8, 16  # the --quick rows' sizes
    model, hf, prompt = models_generate.greedy_models(cfg, batch, prompt_len)
    ours, hf_generate = models_generate.greedy_calls(model, hf, prompt, new)
    ours_tokens = np.asarray(ours())
    hf_out = hf_generate(1)().numpy()
    np.testing.assert_array_equal(hf_out[:, :prompt_len], prompt)
    agreement = models_generate.greedy_agreement(model, hf, prompt, ours_tokens, hf_out[:, prompt_len:])
    # the logits that chose the tokens agree (measured 4e-6; top-2 gaps >= 0.8 at this seed)
    assert agreement["max_logit_diff"] < models_generate.LOGIT_ATOL, agreement
    assert agreement["rows_agree_until_near_tie"] == batch, agreement
    assert agreement["tokens_compared"] >= 0.75 * batch * new, agreement  # not vacuous: few near-ties


def _check_timings(timings: dict, names: tuple[str, ...]) -> None:
    assert set(names) <= set(timings)
    for name in names:
        t = timings[name]
        assert set(TIMING_KEYS) <= set(t)
        assert t["compile_s"] > 0 and t["median_s"] > 0 and t["min_s"] > 0
        assert t["repeats"] == len(t["times_s"]) >= 1


@pytest.mark.slow
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


@pytest.mark.slow
def test_generate_benchmark_quick():
    payload = models_generate.run(quick=True)
    assert {row["batch"] for row in payload["rows"]} == {1, 4}
    for row in payload["rows"]:
        for key in ("ours_tokens_per_s", "hf_tokens_per_s", "ratio_ours_over_hf", "ratio_best_calls"):
            assert row[key] > 0, key
        agreement = row["greedy_agreement"]
        assert agreement["max_logit_diff"] < models_generate.LOGIT_ATOL, agreement
        assert agreement["rows_agree_until_near_tie"] == row["batch"], agreement
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
