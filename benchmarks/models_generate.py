"""Greedy LM generation with a KV cache: ours vs HF ``transformers`` ``generate`` in torch, same weights, same prompts.

What is compared. The models of :mod:`benchmarks.models_train` (GPT-2 5.3M and a Llama of the same size, seed-0
weights, exported with ``to_hf`` and loaded by ``AutoModelForCausalLM``) continue the same random prompts of
``P = 32`` tokens (no padding) by ``N = 128`` greedy tokens, at batch 1 and batch 16:

- ours: :func:`jaxsafety.models.generate.generate` with ``SamplingConfig(max_new_tokens=N, temperature=0)``, the
  public entry point as a user calls it (argument checks, ``nnx.split``, then one jitted program: prefill, then a
  ``lax.while_loop`` of one-token decode steps); ``compile_s`` is its first call;
- HF: ``model.generate(do_sample=False, use_cache=True, max_new_tokens=N, min_new_tokens=N)`` with EOS disabled
  (so both produce exactly N tokens per row), ``torch.set_num_threads(1)`` and ``(2)`` timed separately (the faster
  one is the peer); ``compile_s`` is its first call.

Throughput is generated tokens per second (``B * N`` per call, prompt prefill included in the time). Both sides must
produce the same tokens: ``agreement`` is the fraction of identical generated tokens. A random model's logits are
nearly uniform, so a float32 rounding difference could flip a near-tie argmax and send the two continuations apart;
as in the library's own generation tests, the final norm's scale is multiplied by ``SHARPEN`` (on our model, before
export, so both sides hold the same weights) to keep greedy choices far from ties. This changes no cost. Ties can
still occur (one position of 2048 had a top-2 gap of 0.006 in a full-size GPT-2 run), so ``greedy_agreement``
(:func:`greedy_agreement`) checks what must hold on any CPU: both models' logits for the generated tokens agree
within :data:`LOGIT_ATOL`, and each row's tokens agree up to its first near-tie (top-2 gap below
:data:`NEAR_TIE`).

Timing is interleaved round-robin (one call of every contender per round; see
:func:`benchmarks.harness.time_interleaved`), so a shared machine's load hits every contender alike. Full runs
add ``single_core``: the rows re-run pinned to one CPU (per-core efficiency; see
:func:`benchmarks.models_train.single_core`).

``sample_rows``: n samples per prompt (best-of-n, pass@k), ``B = 4`` prompts of 32 tokens x ``n = 16`` samples of
64 tokens, plain temperature-1 sampling (no top-k / top-p on either side):

- ours: ``generate(..., num_samples=n)``: each prompt prefilled ONCE, its cache tiled to its n rows
  (``KVCache.repeat``), then one decode loop over ``B * n`` rows;
- HF: ``model.generate(do_sample=True, num_return_sequences=n, top_k=0, top_p=1.0, ...)`` (HF expands the prompts
  to ``B * n`` rows before the prefill), 1 and 2 torch threads.

Samples cannot match token for token (different random streams), so the row checks that both sides draw from the
same distribution instead: every sample of both sides is re-scored under our model (:func:`sequence_logprobs`,
one uncached forward, no sampling code) and the mean log-probability per generated token is reported for each,
with its standard error over rows; their difference should be within a few standard errors.

``python -m benchmarks.models_generate [--quick]`` writes ``benchmarks/results/models_generate.json``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import cli_main, time_interleaved
from benchmarks.models_train import (
    hf_name,
    load_hf,
    make_model,
    model_configs,
    pinned_prefix,
    single_core,
)
from jaxsafety.models.generate import SamplingConfig, generate, sequence_logprobs

__all__ = [
    "LOGIT_ATOL",
    "NEAR_TIE",
    "SHARPEN",
    "greedy_agreement",
    "greedy_calls",
    "greedy_models",
    "rows",
    "run",
    "sample_rows",
]

SHARPEN = 10.0
# The two sides' logits on the same sequence differ by float32 rounding only (~1e-5 here); where they differ by
# less than LOGIT_ATOL, the argmaxes can differ only where the top-2 gap is below 2 * LOGIT_ATOL. NEAR_TIE (5x
# that) also covers the cached decode's own rounding against the uncached forward used to measure the gap.
LOGIT_ATOL = 1e-3
NEAR_TIE = 1e-2


def greedy_models(cfg: Any, batch: int, prompt_len: int) -> tuple[Any, Any, np.ndarray]:
    """``(ours, hf, prompt [batch, prompt_len] int32)``: our seed-0 model with its final norm's scale multiplied
    by :data:`SHARPEN`, the same weights as a HF torch model in eval mode, and the rows' random prompts."""
    model = make_model(cfg)
    model.final_norm.scale[...] = model.final_norm.scale[...] * SHARPEN
    hf = load_hf(model)
    hf.eval()
    prompt_np = np.random.default_rng(2).integers(0, cfg.vocab_size, (batch, prompt_len), dtype=np.int32)
    return model, hf, prompt_np


def greedy_calls(
    model: Any, hf: Any, prompt_np: np.ndarray, new: int
) -> tuple[Callable[[], jax.Array], Callable[[int], Callable[[], Any]]]:
    """The timed calls: ``ours() -> tokens [B, new]`` (:func:`generate`, greedy) and ``hf_generate(threads)``,
    a call of HF ``generate`` (greedy, EOS off, exactly ``new`` tokens) at ``threads`` torch threads returning the
    prompt followed by the tokens ``[B, P + new]``."""
    import torch

    prompt = jnp.asarray(prompt_np)
    sampling = SamplingConfig(max_new_tokens=new, temperature=0.0)

    def ours() -> jax.Array:
        return generate(model, prompt, None, None, sampling).tokens

    ids = torch.as_tensor(prompt_np, dtype=torch.long)
    attention = torch.ones_like(ids)

    def hf_generate(threads: int) -> Callable[[], Any]:
        def call() -> Any:
            torch.set_num_threads(threads)
            with torch.no_grad():
                return hf.generate(
                    input_ids=ids,
                    attention_mask=attention,
                    do_sample=False,
                    use_cache=True,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    pad_token_id=0,
                    eos_token_id=None,
                )

        return call

    return ours, hf_generate


def greedy_agreement(
    model: Any, hf: Any, prompt_np: np.ndarray, ours_tokens: np.ndarray, hf_tokens: np.ndarray
) -> dict[str, Any]:
    """Do both sides produce the same greedy tokens, wherever the choice is not a near-tie?

    Both models score ``prompt + ours_tokens`` ``[B, P + N]`` in one uncached forward; the logits that chose the
    ``N`` generated tokens (positions ``P - 1 .. P + N - 2``) are compared (``max_logit_diff``), and in each row
    the tokens must agree up to the first position whose top-2 gap (our logits) is below :data:`NEAR_TIE`: there
    a float32 rounding difference may pick the other token, and the continuations legitimately part.
    ``first_near_tie`` / ``first_mismatch`` ``[B]`` (``N`` where none), ``rows_agree_until_near_tie``,
    ``tokens_compared`` (positions before each row's first near-tie), ``min_top2_gap``."""
    import torch

    prompt_len, new = prompt_np.shape[1], ours_tokens.shape[1]
    if hf_tokens.shape != ours_tokens.shape:
        raise RuntimeError(
            f"HF generated {hf_tokens.shape}, ours {ours_tokens.shape}: expected the same shape"
        )
    seq = np.concatenate([prompt_np, ours_tokens], axis=1).astype(np.int32)
    chose = slice(prompt_len - 1, prompt_len + new - 1)
    ours_logits = np.asarray(model(jnp.asarray(seq)), np.float64)[:, chose]
    with torch.no_grad():
        hf_logits = hf(input_ids=torch.as_tensor(seq, dtype=torch.long)).logits.double().numpy()[:, chose]
    top2 = np.sort(ours_logits, axis=-1)[..., -2:]
    gap = top2[..., 1] - top2[..., 0]  # [B, N]

    def first(flags: np.ndarray) -> np.ndarray:
        return np.where(flags.any(-1), flags.argmax(-1), new)

    first_near_tie = first(gap < NEAR_TIE)
    first_mismatch = first(ours_tokens != hf_tokens)
    return {
        "max_logit_diff": float(np.abs(ours_logits - hf_logits).max()),
        "min_top2_gap": float(gap.min()),
        "first_near_tie": first_near_tie.tolist(),
        "first_mismatch": first_mismatch.tolist(),
        "rows_agree_until_near_tie": int((first_mismatch >= first_near_tie).sum()),
        "tokens_compared": int(first_near_tie.sum()),
    }


def _row(
    arch: str, cfg: Any, batch: int, prompt_len: int, new: int, repeats: int, threads: tuple[int, ...]
) -> dict[str, Any]:
    import torch

    model, hf, prompt_np = greedy_models(cfg, batch, prompt_len)
    ours, hf_generate = greedy_calls(model, hf, prompt_np, new)
    threads0 = torch.get_num_threads()
    hf_names = [hf_name(n) for n in threads]
    calls = {"ours": ours, **{hf_name(n): hf_generate(n) for n in threads}}
    t = time_interleaved(calls, repeats=repeats)
    ours_tokens = np.asarray(ours())
    hf_tokens = calls[hf_names[0]]()[:, prompt_len:].numpy()
    torch.set_num_threads(threads0)
    agreement = greedy_agreement(model, hf, prompt_np, ours_tokens, hf_tokens)
    same = ours_tokens == hf_tokens
    hf_best = min(hf_names, key=lambda k: t[k].median_s)
    work = batch * new
    row = {
        "arch": arch,
        "params": model.num_params(),
        "batch": batch,
        "prompt_len": prompt_len,
        "new_tokens": new,
        "hf_class": type(hf).__name__,
        "ours_tokens_per_s": work / t["ours"].median_s,
        "hf_tokens_per_s": work / t[hf_best].median_s,
        "hf_best_threads": threads[hf_names.index(hf_best)],
        "ratio_ours_over_hf": t[hf_best].median_s / t["ours"].median_s,
        # each side's fastest call (HF: either thread count): closest to an idle machine when the load comes and goes
        "ratio_best_calls": min(t[k].min_s for k in hf_names) / t["ours"].min_s,
        "ours_compile_s": t["ours"].compile_s,
        "agreement": float(same.mean()),
        "rows_identical": int(same.all(-1).sum()),
        "greedy_agreement": agreement,
        "timings": {k: v.to_dict() for k, v in t.items()},
    }
    print(
        f"{pinned_prefix()}generate {arch} batch {batch} ({prompt_len} prompt + {new} new, greedy): "
        f"ours {row['ours_tokens_per_s']:.0f} tok/s, HF torch ({row['hf_best_threads']} thr) "
        f"{row['hf_tokens_per_s']:.0f} tok/s; ratio ours/HF {row['ratio_ours_over_hf']:.2f}x (best calls {row['ratio_best_calls']:.2f}x); "
        f"compile+first call {row['ours_compile_s']:.1f} s; identical tokens {row['agreement']:.1%}",
        flush=True,
    )
    return row


def rows(quick: bool, threads: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    """One row per (architecture, batch size); HF timed at each torch thread count in ``threads``."""
    if quick:
        prompt_len, new, batches, repeats = 8, 16, (1, 4), 3
    else:
        prompt_len, new, batches, repeats = 32, 128, (1, 16), 5
    return [
        _row(arch, cfg, b, prompt_len, new, repeats, threads)
        for arch, cfg in model_configs(quick).items()
        for b in batches
    ]


def _mean_logprob(model: Any, prompt: np.ndarray, samples: np.ndarray, n: int) -> tuple[float, float]:
    """Mean log p_model per generated token of ``samples [B*n, N]`` (prompt-major) after their prompts, re-scored
    in one uncached forward; and its standard error over rows."""
    seq = np.concatenate([np.repeat(prompt, n, axis=0), samples], axis=1)
    lp = np.asarray(sequence_logprobs(model, jnp.asarray(seq, jnp.int32)))[:, prompt.shape[1] :]
    per_row = lp.mean(-1)
    return float(per_row.mean()), float(per_row.std(ddof=1) / np.sqrt(len(per_row)))


def _sample_row(
    arch: str,
    cfg: Any,
    prompts: int,
    n: int,
    prompt_len: int,
    new: int,
    repeats: int,
    threads: tuple[int, ...],
) -> dict[str, Any]:
    import torch

    model = make_model(cfg)
    model.final_norm.scale[...] = model.final_norm.scale[...] * SHARPEN
    hf = load_hf(model)
    hf.eval()
    prompt_np = np.random.default_rng(3).integers(0, cfg.vocab_size, (prompts, prompt_len), dtype=np.int32)
    prompt = jnp.asarray(prompt_np)
    sampling = SamplingConfig(max_new_tokens=new, temperature=1.0)
    key = jax.random.key(0)

    def ours() -> jax.Array:
        return generate(model, prompt, None, key, sampling, num_samples=n).tokens

    ids = torch.as_tensor(prompt_np, dtype=torch.long)
    attention = torch.ones_like(ids)

    def hf_generate(threads: int):
        def call() -> Any:
            torch.set_num_threads(threads)
            with torch.no_grad():
                return hf.generate(
                    input_ids=ids,
                    attention_mask=attention,
                    do_sample=True,
                    num_return_sequences=n,
                    temperature=1.0,
                    top_k=0,
                    top_p=1.0,
                    use_cache=True,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    pad_token_id=0,
                    eos_token_id=None,
                )

        return call

    threads0 = torch.get_num_threads()
    hf_names = [hf_name(k) for k in threads]
    calls = {"ours": ours, **{hf_name(k): hf_generate(k) for k in threads}}
    torch.manual_seed(0)
    t = time_interleaved(calls, repeats=repeats)
    ours_tokens = np.asarray(ours())
    hf_tokens = calls[hf_names[0]]()[:, prompt_len:].numpy()
    torch.set_num_threads(threads0)
    rows_out = prompts * n
    if hf_tokens.shape != ours_tokens.shape or ours_tokens.shape != (rows_out, new):
        raise RuntimeError(
            f"HF generated {hf_tokens.shape}, ours {ours_tokens.shape}: expected [{rows_out}, {new}]"
        )
    ours_lp, ours_se = _mean_logprob(model, prompt_np, ours_tokens, n)
    hf_lp, hf_se = _mean_logprob(model, prompt_np, hf_tokens, n)
    hf_best = min(hf_names, key=lambda k: t[k].median_s)
    work = rows_out * new
    row = {
        "arch": arch,
        "params": model.num_params(),
        "prompts": prompts,
        "num_samples": n,
        "prompt_len": prompt_len,
        "new_tokens": new,
        "temperature": 1.0,
        "hf_class": type(hf).__name__,
        "ours_tokens_per_s": work / t["ours"].median_s,
        "hf_tokens_per_s": work / t[hf_best].median_s,
        "hf_best_threads": threads[hf_names.index(hf_best)],
        "ratio_ours_over_hf": t[hf_best].median_s / t["ours"].median_s,
        "ratio_best_calls": min(t[k].min_s for k in hf_names) / t["ours"].min_s,
        "ours_compile_s": t["ours"].compile_s,
        # same distribution: mean log p_model per generated token of each side's samples, re-scored by one
        # uncached forward of our model; standard errors over rows
        "ours_mean_logprob": ours_lp,
        "ours_mean_logprob_se": ours_se,
        "hf_mean_logprob": hf_lp,
        "hf_mean_logprob_se": hf_se,
        "distinct_samples_ours": len({tuple(r) for r in ours_tokens}),
        "timings": {k: v.to_dict() for k, v in t.items()},
    }
    print(
        f"{pinned_prefix()}generate {arch} {prompts} prompts x {n} samples ({prompt_len} prompt + {new} new, "
        f"sampled): ours {row['ours_tokens_per_s']:.0f} tok/s, HF torch num_return_sequences "
        f"({row['hf_best_threads']} thr) {row['hf_tokens_per_s']:.0f} tok/s; ratio ours/HF "
        f"{row['ratio_ours_over_hf']:.2f}x (best calls {row['ratio_best_calls']:.2f}x); compile+first call "
        f"{row['ours_compile_s']:.1f} s; mean log p per token ours {ours_lp:.3f} +- {ours_se:.3f}, "
        f"HF {hf_lp:.3f} +- {hf_se:.3f}",
        flush=True,
    )
    return row


def sample_rows(quick: bool, threads: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    """One row per architecture: ``prompts`` prompts x ``n`` sampled continuations each."""
    if quick:
        prompts, n, prompt_len, new, repeats = 2, 4, 8, 16, 3
    else:
        prompts, n, prompt_len, new, repeats = 4, 16, 32, 64, 5
    return [
        _sample_row(arch, cfg, prompts, n, prompt_len, new, repeats, threads)
        for arch, cfg in model_configs(quick).items()
    ]


def run(quick: bool = False) -> dict[str, Any]:
    load_before = os.getloadavg()
    payload: dict[str, Any] = {
        "rows": rows(quick),
        "sample_rows": sample_rows(quick),
        "peer": "transformers (torch) generate",
        "sharpen_final_norm": SHARPEN,
        "load_avg_before": load_before,
    }
    if not quick:
        payload["single_core"] = single_core("models_generate")
    payload["load_avg_after"] = os.getloadavg()
    return payload


if __name__ == "__main__":
    cli_main("models_generate", run)
