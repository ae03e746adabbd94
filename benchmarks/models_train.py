"""LM train step (forward + backward + AdamW update): ours vs HF ``transformers`` in torch, same model, same batch.

What is compared. For each row (GPT-2 and a Llama of similar size) one model is built here
(``GPT2`` / ``Llama``, ``nnx.Rngs(0)``), exported with :func:`~jaxsafety.models.to_hf` and loaded by
``transformers.AutoModelForCausalLM`` (``GPT2LMHeadModel`` / ``LlamaForCausalLM``, its default ``sdpa`` attention),
so both sides start from identical float32 weights. Both train on the same random token batch ``[B, T]`` (no
padding) with AdamW at torch's defaults (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01 on every
parameter, no clipping, constant learning rate):

- ours: :func:`jaxsafety.train.lm.make_lm_train_step` (the library's LM step: next-token cross-entropy, gradient,
  ``nnx.Optimizer`` update with :func:`~jaxsafety.train.make_optimizer`), wrapped in an outer ``jax.jit`` that
  donates the train state, as a training loop runs it; compiled ahead of time, so ``compile_s`` is compilation
  alone;
- HF: ``model(input_ids, labels=input_ids).loss.backward(); AdamW.step(); zero_grad(set_to_none=True)``, with
  ``torch.set_num_threads(1)`` and ``(2)`` timed separately (the faster one is the peer); its ``compile_s`` is the
  first call.

The two sides are checked to do the same work: their losses over the first steps must agree (``max_loss_diff``).
Each row also records the page faults per step of ours and of the HF peer (``ru_minflt`` over three calls) and
XLA's temp buffer size: XLA:CPU maps its temp buffer afresh on every call, so each of its 4 KiB pages faults on
first touch (~2 us each on a VM); glibc gives torch's large tensors fresh pages too.

Full runs add ``single_core``: the same rows re-run in a subprocess pinned to one CPU (ours one XLA thread, HF one
torch thread), whose ratio measures per-core efficiency and hardly depends on what else loads the machine.

How it is timed. The machine may be shared, so the calls are interleaved: each round runs one step of every
contender plus a dense fp32 2048^2 matmul (jax and numpy), and statistics are per contender over rounds (median,
after warm-up). Throughput is tokens/s (``B * T`` per step); achieved FLOP/s counts ``6 N + 6 L T H Dh`` per token
(matmul parameters incl. the tied LM head, plus attention scores; ``CausalLM.flops_per_token``, recounted
independently from the torch module) and is quoted as a fraction of the matmul peak measured in the same rounds.
The os load average is recorded before and after.

``python -m benchmarks.models_train [--quick]`` writes ``benchmarks/results/models_train.json``.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import tempfile
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.harness import cli_main, time_interleaved
from jaxsafety.models import GPT2, GPT2Config, Llama, LlamaConfig, to_hf
from jaxsafety.models.hf import param_dict
from jaxsafety.train import OptimizerConfig, make_optimizer
from jaxsafety.train.lm import make_lm_train_step

__all__ = [
    "OursTrainCall",
    "batch_shape",
    "hf_flops_per_token",
    "hf_name",
    "hf_train_call",
    "load_hf",
    "make_model",
    "matmul_calls",
    "model_configs",
    "ours_train_call",
    "pinned_prefix",
    "rows",
    "run",
    "single_core",
    "train_tokens",
]

# torch.optim.AdamW defaults, applied to every parameter (torch decays all of them), no clipping
ADAMW = OptimizerConfig(
    name="adamw", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, decay_only_matrices=False
)


def model_configs(quick: bool) -> dict[str, Any]:
    """The rows: GPT-2 5.3M (TARGETS.md: 256 wide, 4 layers, 4 heads of 64, vocab 8192, context 256) and a Llama
    of the same width/depth/vocab (SwiGLU 688, RoPE, RMSNorm, 4 query heads sharing 2 kv heads, tied embeddings).
    ``quick``: a 1-layer GPT-2 only (seconds, for tests and ``python -m benchmarks --quick``)."""
    if quick:
        return {"gpt2": GPT2Config(vocab_size=512, max_seq_len=64, d_model=64, n_layers=1, n_heads=2)}
    return {
        "gpt2": GPT2Config(vocab_size=8192, max_seq_len=256, d_model=256, n_layers=4, n_heads=4),
        "llama": LlamaConfig(
            vocab_size=8192,
            max_seq_len=256,
            d_model=256,
            n_layers=4,
            n_heads=4,
            n_kv_heads=2,
            d_ff=688,
            tie_embeddings=True,
        ),
    }


def make_model(cfg: GPT2Config | LlamaConfig) -> GPT2 | Llama:
    """Our model for ``cfg`` with seed-0 weights."""
    return (GPT2 if isinstance(cfg, GPT2Config) else Llama)(cfg, rngs=nnx.Rngs(0))


def load_hf(model: GPT2 | Llama) -> Any:
    """The same weights as a ``transformers`` torch model (export with ``to_hf``, load with ``from_pretrained``)."""
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        # no BOS/EOS (GPT-2's default 50256 lies outside a small vocabulary): generation runs to max_new_tokens
        special = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": 0}
        path = to_hf(model, os.path.join(tmp, "ckpt"), extra_config=special)
        hf = AutoModelForCausalLM.from_pretrained(path)
    hf.generation_config.bos_token_id = hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return hf


def hf_flops_per_token(hf: Any, seq_len: int) -> float:
    """Training FLOPs per token of a HF causal LM counted from the torch module, by the same rule as
    ``CausalLM.flops_per_token``: ``6 N + 6 L T H Dh`` with N all parameters except the token (and learned
    position) embeddings, plus the LM head ``V x D`` (tied: the embedding counted once more as a matmul)."""
    cfg = hf.config
    emb = hf.get_input_embeddings().weight
    skip = {id(emb)}
    pos = getattr(getattr(hf, "transformer", None), "wpe", None)
    if pos is not None:
        skip.add(id(pos.weight))
    n = sum(p.numel() for p in hf.parameters() if id(p) not in skip)  # parameters() yields a tied tensor once
    if hf.get_output_embeddings().weight is emb:
        n += emb.numel()
    n_layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    n_heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    return 6.0 * n + 6.0 * n_layers * seq_len * n_heads * head_dim


def matmul_calls(n: int = 2048) -> tuple[dict[str, Callable[[], Any]], float]:
    """Dense fp32 ``n x n`` matmul contenders (jax and numpy) to interleave with a benchmark's own calls, and the
    FLOPs of one call: the same-run reference peak."""
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), dtype=np.float32)
    b_np = rng.standard_normal((n, n), dtype=np.float32)
    a, b = jnp.asarray(a_np), jnp.asarray(b_np)
    mm = jax.jit(jnp.matmul).lower(a, b).compile()
    return {"matmul_jax": lambda: mm(a, b), "matmul_numpy": lambda: np.matmul(a_np, b_np)}, 2.0 * n**3


def pinned_prefix() -> str:
    """Print prefix of rows measured by :func:`single_core`."""
    one = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) == 1
    return "[1 core] " if one else ""


def hf_name(threads: int) -> str:
    """Timing key of the HF peer at ``threads`` torch threads."""
    return f"hf_{threads}thread" + ("s" if threads > 1 else "")


def single_core(module: str) -> dict[str, Any] | None:
    """``benchmarks.<module>.rows(quick=False, threads=(1,))`` re-run in a subprocess pinned to one CPU.

    Pinned before jax is imported, XLA runs one thread, and torch is set to one: both sides then share one core,
    interleaved, so the ratio is per-core efficiency and hardly moves with the load other processes put on the
    machine (the all-core ratio of :func:`run` does: XLA's thread pool suffers more than one torch thread when a
    core is taken). None when this process already has a single CPU.
    """
    import json
    import subprocess
    import sys

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        # the child pins itself before importing jax or torch (no preexec_fn: forking a threaded process)
        code = (
            f"import os; os.sched_setaffinity(0, {{{cpus[-1]}}}); import json, sys; "
            f"from benchmarks import {module} as m; "
            f"json.dump(m.rows(quick=False, threads=(1,)), open(sys.argv[1], 'w'), default=float)"
        )
        subprocess.run(
            [sys.executable, "-c", code, out],
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        with open(out) as f:
            return {"cpu": cpus[-1], "rows": json.load(f)}


def _torch_threads(torch: Any, n: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        torch.set_num_threads(n)
        return fn()

    return call


def batch_shape(quick: bool) -> tuple[int, int]:
    """``(batch, seq_len)`` of the timed steps."""
    return (4, 64) if quick else (8, 256)


def train_tokens(cfg: Any, batch: int, seq: int) -> np.ndarray:
    """The random token batch ``[batch, seq]`` both sides train on."""
    return np.random.default_rng(1).integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32)


class OursTrainCall(NamedTuple):
    """:func:`ours_train_call`'s result: ``call() -> loss`` runs one step; ``params()`` are the current parameters
    (numpy copies, by dotted path as :func:`jaxsafety.models.hf.param_dict`)."""

    call: Callable[[], jax.Array]
    compiled: Any
    compile_s: float
    params: Callable[[], dict[str, np.ndarray]]


def ours_train_call(model: GPT2 | Llama, tokens_np: np.ndarray) -> OursTrainCall:
    """One step of the library's train step per call (state donated from step to step, as in a training loop),
    with the compiled executable, its compile seconds and a reader of the current parameters."""
    optimizer = nnx.Optimizer(model, make_optimizer(ADAMW), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    batch = {"tokens": jnp.asarray(tokens_np), "mask": jnp.ones(tokens_np.shape, jnp.int32)}
    step = jax.jit(make_lm_train_step(graphdef), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def ours() -> jax.Array:
        holder["state"], metrics = compiled(holder["state"], batch)
        return metrics["loss"]

    def params() -> dict[str, np.ndarray]:
        trained, _ = nnx.merge(graphdef, holder["state"])
        return {k: np.array(v) for k, v in param_dict(trained).items()}

    return OursTrainCall(ours, compiled, compile_s, params)


def hf_train_call(hf: Any, tokens_np: np.ndarray) -> Callable[[], float]:
    """One HF torch step per call: forward with labels (HF shifts them), backward, AdamW; returns the loss."""
    import torch

    torch_opt = torch.optim.AdamW(
        hf.parameters(),
        lr=ADAMW.lr,
        betas=(ADAMW.b1, ADAMW.b2),
        eps=ADAMW.eps,
        weight_decay=ADAMW.weight_decay,
    )
    ids = torch.as_tensor(tokens_np, dtype=torch.long)

    def hf_step() -> float:
        loss = hf(input_ids=ids, labels=ids).loss
        loss.backward()
        torch_opt.step()
        torch_opt.zero_grad(set_to_none=True)
        return loss.item()

    return hf_step


def _row(
    arch: str, cfg: Any, batch: int, seq: int, repeats: int, quick: bool, threads: tuple[int, ...]
) -> dict[str, Any]:
    import torch

    model = make_model(cfg)
    hf = load_hf(model)
    hf.train()
    tokens_np = train_tokens(cfg, batch, seq)
    ours, compiled, ours_compile, _ = ours_train_call(model, tokens_np)
    hf_step = hf_train_call(hf, tokens_np)

    threads0 = torch.get_num_threads()
    # same work: the losses of the first steps agree (same weights, same batch, same optimizer)
    t0 = time.perf_counter()
    hf_losses = [hf_step()]
    hf_first = time.perf_counter() - t0
    hf_losses += [hf_step() for _ in range(2)]
    ours_losses = [float(ours()) for _ in range(3)]
    max_loss_diff = max(abs(a - b) for a, b in zip(ours_losses, hf_losses))

    hf_names = [hf_name(n) for n in threads]
    calls = {"ours": ours, **{hf_name(n): _torch_threads(torch, n, hf_step) for n in threads}}
    mm_calls, mm_flops = matmul_calls(1024 if quick else 2048)
    calls.update(mm_calls)
    t = time_interleaved(
        calls, repeats=repeats, compile_s={"ours": ours_compile, **dict.fromkeys(hf_names, hf_first)}
    )

    # page faults per step: XLA:CPU maps its whole temp buffer afresh on every call (and glibc gives torch's
    # large tensors fresh pages too), and each first touch of a 4 KiB page faults; on a VM that is ~2 us a page
    hf_best = min(hf_names, key=lambda k: t[k].median_s)
    faults = {}
    for name in ("ours", hf_best):
        call = calls[name]
        jax.block_until_ready(call())
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            jax.block_until_ready(call())
        faults[name] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 3
    torch.set_num_threads(threads0)

    tokens = batch * seq
    fpt = model.flops_per_token(seq)
    fpt_hf = hf_flops_per_token(hf, seq)
    peak = max(mm_flops / t["matmul_jax"].median_s, mm_flops / t["matmul_numpy"].median_s)
    ours_flops = fpt * tokens / t["ours"].median_s
    hf_flops = fpt_hf * tokens / t[hf_best].median_s
    row = {
        "arch": arch,
        "config": dataclasses.asdict(cfg),
        "params": model.num_params(),
        "batch": batch,
        "seq_len": seq,
        "tokens_per_step": tokens,
        "flops_per_token": fpt,
        "hf_flops_per_token": fpt_hf,
        "hf_class": type(hf).__name__,
        "hf_attn_implementation": hf.config._attn_implementation,
        "loss_first_steps_ours": ours_losses,
        "loss_first_steps_hf": hf_losses,
        "max_loss_diff": max_loss_diff,
        "ours_tokens_per_s": tokens / t["ours"].median_s,
        "hf_tokens_per_s": tokens / t[hf_best].median_s,
        "hf_best_threads": threads[hf_names.index(hf_best)],
        "ratio_ours_over_hf": t[hf_best].median_s / t["ours"].median_s,
        # each side's fastest call (HF: either thread count): closest to an idle machine when the load comes and goes
        "ratio_best_calls": min(t[k].min_s for k in hf_names) / t["ours"].min_s,
        "ours_gflops": ours_flops / 1e9,
        "hf_gflops": hf_flops / 1e9,
        "matmul_peak_gflops": peak / 1e9,
        "ours_frac_of_peak": ours_flops / peak,
        "hf_frac_of_peak": hf_flops / peak,
        "ours_compile_s": ours_compile,
        "ours_xla_temp_mb": compiled.memory_analysis().temp_size_in_bytes / 2**20,
        "ours_page_faults_per_step": faults["ours"],
        "hf_page_faults_per_step": faults[hf_best],
        "timings": {k: v.to_dict() for k, v in t.items()},
    }
    print(
        f"{pinned_prefix()}train step {arch} ({row['params'] / 1e6:.2f}M params, {batch}x{seq}): "
        f"ours {row['ours_tokens_per_s']:.0f} tok/s ({row['ours_gflops']:.1f} GFLOP/s, "
        f"{row['ours_frac_of_peak']:.0%} of matmul peak {row['matmul_peak_gflops']:.0f}), "
        f"HF torch ({row['hf_best_threads']} thr) {row['hf_tokens_per_s']:.0f} tok/s "
        f"({row['hf_gflops']:.1f} GFLOP/s, {row['hf_frac_of_peak']:.0%}); "
        f"ratio ours/HF {row['ratio_ours_over_hf']:.2f}x (best calls {row['ratio_best_calls']:.2f}x); compile {ours_compile:.1f} s; "
        f"loss diff {max_loss_diff:.1e}; page faults/step ours {faults['ours']:.0f}, HF {faults[hf_best]:.0f}",
        flush=True,
    )
    return row


def rows(quick: bool, threads: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    """One row per architecture of :func:`model_configs`; HF timed at each torch thread count in ``threads``."""
    batch, seq = batch_shape(quick)
    repeats = 3 if quick else 7
    return [
        _row(arch, cfg, batch, seq, repeats, quick, threads) for arch, cfg in model_configs(quick).items()
    ]


def run(quick: bool = False) -> dict[str, Any]:
    load_before = os.getloadavg()
    payload: dict[str, Any] = {
        "rows": rows(quick),
        "peer": "transformers (torch) + torch.optim.AdamW",
        "load_avg_before": load_before,
    }
    if not quick:
        payload["single_core"] = single_core("models_train")
    payload["load_avg_after"] = os.getloadavg()
    return payload


if __name__ == "__main__":
    cli_main("models_train", run)
