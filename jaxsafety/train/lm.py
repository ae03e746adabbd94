"""Language-model training: next-token loss, a jitted train step with exact in-step gradient accumulation,
held-out evaluation, and :func:`pretrain`, the library entry point that trains a small LM from a config.

Conventions
- ``tokens`` int32 ``[B, T]``; ``mask`` ``[B, T]`` (1 = real token, 0 = padding) is the attention mask; an
  optional ``loss_mask`` ``[B, T]`` (default: ``mask``) selects which tokens are scored as *targets*.
- Position ``t`` predicts token ``t + 1``. Target ``t + 1`` counts iff ``loss_mask[t + 1]`` and ``mask[t]``
  (the position it is predicted from is a real token), so padding is ignored on both sides (also with left
  padding, where the first real token has no real predecessor).
- Losses are in nats per predicted token; batch losses are token-weighted means (every predicted token counts
  the same, however tokens are spread over rows or microbatches).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from jaxsafety.config import ConfigError, check, check_choice, check_range, config_to_dict
from jaxsafety.data.corpus import CorpusConfig, synthetic_corpus, text_file_corpus
from jaxsafety.distributed import to_local
from jaxsafety.models import CausalLM, lean_backward
from jaxsafety.models.gpt2 import GPT2, GPT2Config
from jaxsafety.models.llama import Llama, LlamaConfig
from jaxsafety.train.checkpoint import Checkpointer
from jaxsafety.train.loop import run_loop
from jaxsafety.train.optim import OptimizerConfig, cached_optimizer, make_schedule
from jaxsafety.train.sharding import (
    choose_mesh,
    jit_sharded,
    process_batch,
    process_rows,
    shard_batch,
    shard_state,
)
from jaxsafety.train.tracker import NoOpTracker, Tracker

__all__ = [
    "PretrainConfig",
    "PretrainResult",
    "cross_entropy",
    "evaluate_lm",
    "lm_batches",
    "lm_target_mask",
    "make_lm_train_step",
    "next_token_loss",
    "pretrain",
    "pretrain_documents",
    "unigram_entropy",
]

Batch = Mapping[str, jax.Array]


# ----------------------------------------------------------------------------------------------------------------
# loss


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """``-log softmax(logits)[target]`` ``[...]`` for ``logits [..., V]`` (float32) and integer ``targets [...]``.

    Same values as ``optax.softmax_cross_entropy_with_integer_labels``; the custom VJP writes the logits'
    gradient ``g (softmax - onehot)`` in one elementwise pass from the saved log-normaliser (autodiff of the
    gather would add a scatter-add over ``[..., V]``, and recompute the normaliser's pieces).

    The work runs on the logits flattened to ``[N, V]``, the layout of the LM head's matmul output, and the loss
    is complete before the gradient starts: XLA:CPU then writes the gradient into the logits' own buffer. (It
    had kept both: one more ``[N, V]`` temporary, whose fresh pages cost a page fault each on every step.)
    """
    nll = _cross_entropy_flat(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return nll.reshape(targets.shape)


@jax.custom_vjp
def _cross_entropy_flat(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """:func:`cross_entropy` of ``logits [N, V]``, ``targets [N]``."""
    return _cross_entropy_fwd(logits, targets)[0]


def _cross_entropy_fwd(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, tuple]:
    picked = jnp.take_along_axis(logits, targets[:, None].astype(jnp.int32), axis=-1)[:, 0]
    # the log-normaliser as jax.nn.logsumexp computes it, its shift max(row max, picked) = the row max: the same
    # value, but a data dependence that makes XLA gather the picked logits before the backward pass reads the
    # logits for the last time, so the gradient can overwrite them in place (scheduled freely, the gather ran
    # last and XLA kept a second [N, V] buffer)
    shift = jnp.maximum(logits.max(axis=-1), picked)
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    lse = jnp.log(jnp.sum(jnp.exp(logits - shift[:, None]), axis=-1)) + shift
    return lse - picked, (logits, targets, lse)


def _cross_entropy_bwd(res: tuple, g: jax.Array) -> tuple[jax.Array, None]:
    logits, targets, lse = res
    onehot = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1) == targets[:, None]
    return g[:, None] * (jnp.exp(logits - lse[:, None]) - onehot.astype(logits.dtype)), None


_cross_entropy_flat.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def next_token_loss(
    logits: jax.Array, tokens: jax.Array, loss_mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy of predicting ``tokens[:, t + 1]`` from ``logits[:, t]``, and the number of targets.

    ``logits`` [B, T, V] (any float dtype; computed in float32), ``tokens`` int [B, T], ``loss_mask`` [B, T] or
    None (all ones) weighting the *target* token: target ``t + 1`` counts with weight ``loss_mask[:, t + 1]``;
    ``loss_mask[:, 0]`` is never used (no position predicts the first token). Returns ``(loss, n_tokens)``:
    ``sum(weight * nll) / sum(weight)`` (0 when nothing is scored) and ``sum(weight)`` as float32.

    The targets are shifted, not the logits: the last position gets a dummy target of weight 0, so the
    ``[B, T, V]`` logits (and their gradient) are never sliced or padded, which would copy them.
    """
    if logits.ndim != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(
            f"logits [B, T, V] and tokens [B, T] must agree, got {logits.shape} and {tokens.shape}"
        )
    if loss_mask is not None and loss_mask.shape != tokens.shape:
        raise ValueError(f"loss_mask must have the tokens' shape {tokens.shape}, got {loss_mask.shape}")
    targets, weight = _shifted_targets(tokens, loss_mask)
    nll = cross_entropy(logits.astype(jnp.float32), targets)
    n = weight.sum()
    return (nll * weight).sum() / jnp.where(n > 0, n, 1.0), n


# rows of logits per chunk of the fused head: 2^22 floats (16 MiB) of [rows, V] at a time
_HEAD_CHUNK_FLOATS = 1 << 22


def _head_chunk_rows(n: int, v: int) -> int:
    """Largest divisor of ``n`` whose ``[rows, v]`` logits fit in ``_HEAD_CHUNK_FLOATS``, at least 1."""
    best = 1
    for rows in range(1, n + 1):
        if n % rows == 0 and rows * v <= _HEAD_CHUNK_FLOATS:
            best = rows
    return best


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _fused_head_nll(
    hidden: jax.Array, head: jax.Array, targets: jax.Array, weights: jax.Array, vocab_major: bool
) -> jax.Array:
    """``sum_n weights[n] * cross_entropy(hidden @ head, targets)[n]`` for ``hidden [N, D]``, ``head [D, V]``
    (``vocab_major``: ``head [V, D]``, logits ``hidden @ head.T``: a tied embedding used in place), ``targets
    [N]``, ``weights [N]`` (float32), in row chunks of at most 16 MiB of logits.

    Reverse mode only, for training: each chunk's logits gradient ``w (softmax - onehot)`` is formed and used (for
    ``d hidden`` and ``d head``) right after its loss, in the forward pass, so the ``[N, V]`` logits and their
    gradient never exist whole; the backward pass scales the two saved gradients. In the train steps of
    ``benchmarks/models_train.py`` (2048 tokens, vocabulary 8192): 30 MB less XLA temp memory (each page of
    which faults on every step), 2-3% faster."""
    return _fused_head(hidden, head, targets, weights, vocab_major, need_dh=False, need_dw=False)[0]


def _fused_head(hidden, head, targets, weights, vocab_major, *, need_dh: bool, need_dw: bool):
    """The loss sum and, where needed, ``d hidden`` and ``d head`` (the gradient of what is not differentiated,
    e.g. a frozen embedding, is not formed)."""
    n, d = hidden.shape
    v = head.shape[0 if vocab_major else 1]
    rows = _head_chunk_rows(n, v)
    k = 1 if vocab_major else 0  # the head's D axis
    # [D, N] once, so each chunk's head gradient is the row-major product h_c^T @ p_c (see models._matmul)
    ht = jax.lax.optimization_barrier(hidden.T) if need_dw else None

    def chunk(i, carry):
        total, dh, dw = carry
        h = jax.lax.dynamic_slice_in_dim(hidden, i * rows, rows, 0)
        t = jax.lax.dynamic_slice_in_dim(targets, i * rows, rows, 0)
        w = jax.lax.dynamic_slice_in_dim(weights, i * rows, rows, 0)
        logits = jax.lax.dot_general(h, head, (((1,), (k,)), ((), ())))
        picked = jnp.take_along_axis(logits, t[:, None].astype(jnp.int32), axis=-1)[:, 0]
        shift = jnp.maximum(logits.max(axis=-1), picked)  # = the row max, gathered first (see cross_entropy)
        shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
        e = jnp.exp(logits - shift[:, None])
        s = e.sum(axis=-1)
        total = total + jnp.sum(w * (jnp.log(s) + shift - picked))
        if need_dh or need_dw:
            onehot = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1) == t[:, None]
            p = e * (w / s)[:, None] - jnp.where(onehot, w[:, None], 0.0)  # w (softmax - onehot)
            if need_dh:
                dh_c = jax.lax.dot_general(p, head, (((1,), (1 - k,)), ((), ())))
                dh = jax.lax.dynamic_update_slice_in_dim(dh, dh_c, i * rows, 0)
            if need_dw:
                dw = dw + jax.lax.dynamic_slice_in_dim(ht, i * rows, rows, 1) @ p
        return total, dh, dw

    init = (
        jnp.zeros((), hidden.dtype),
        jnp.zeros((n, d), hidden.dtype) if need_dh else None,
        jnp.zeros((d, v), head.dtype) if need_dw else None,
    )
    return jax.lax.fori_loop(0, n // rows, chunk, init)


def _fused_head_fwd(hidden, head, targets, weights, vocab_major):
    # symbolic zeros: each primal says whether it is differentiated (``perturbed``)
    total, dh, dw = _fused_head(
        hidden.value,
        head.value,
        targets.value,
        weights.value,
        vocab_major,
        need_dh=hidden.perturbed,
        need_dw=head.perturbed,
    )
    return total, (dh, dw)


def _fused_head_bwd(vocab_major, res, g):
    dh, dw = res  # dw is [D, V]: accumulated as row-major h_c^T @ p_c
    if dw is not None:
        dw = g * (dw.T if vocab_major else dw)
    return None if dh is None else g * dh, dw, None, None


_fused_head_nll.defvjp(_fused_head_fwd, _fused_head_bwd, symbolic_zeros=True)


def _shifted_targets(tokens: jax.Array, loss_mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Targets ``tokens[:, t + 1]`` and their weights ``loss_mask[:, t + 1]`` at position ``t`` ([B, T] each),
    the last position a dummy target 0 of weight 0 (see :func:`next_token_loss`)."""
    targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
    weight = jnp.ones(tokens.shape, jnp.float32) if loss_mask is None else loss_mask.astype(jnp.float32)
    return targets, jnp.pad(weight[:, 1:], ((0, 0), (0, 1)))


def lm_target_mask(mask: jax.Array, loss_mask: jax.Array | None = None) -> jax.Array:
    """Target weights ``[B, T]`` for :func:`next_token_loss`: ``loss_mask[t]`` (default ``mask[t]``) where the
    predicting position ``t - 1`` is a real token (``mask[t - 1]``), else 0. Column 0 is never a target."""
    loss_mask = mask if loss_mask is None else loss_mask
    source = jnp.pad(mask[:, :-1], ((0, 0), (1, 0)))
    return loss_mask.astype(jnp.float32) * source.astype(jnp.float32)


def _batch_target_mask(batch: Batch) -> jax.Array:
    return lm_target_mask(batch["mask"], batch.get("loss_mask"))


# ----------------------------------------------------------------------------------------------------------------
# train step and evaluation


def _lm_step(
    graphdef: nnx.GraphDef, accum_steps: int, state: nnx.State, batch: Batch
) -> tuple[nnx.State, dict[str, jax.Array]]:
    """The train step of :func:`make_lm_train_step` (pure; ``graphdef`` and ``accum_steps`` static)."""
    model, optimizer = nnx.merge(graphdef, state)
    # differentiate exactly what the optimizer updates (its ``wrt`` filter): frozen parameters sit in ``rest``,
    # so jax.grad never forms their cotangents
    model_def, params, rest = nnx.split(model, optimizer.wrt, ...)

    def summed_loss(p: nnx.State, tokens: jax.Array, mask: jax.Array, target: jax.Array):
        # the token-loss sum: microbatch sums add up to the full-batch sum
        with lean_backward():  # reverse mode only here: the decoder may keep less for the backward pass
            model = nnx.merge(model_def, p, rest)
            head = model.head_matrix() if isinstance(model, CausalLM) else None
            if head is None:
                loss, n = next_token_loss(model(tokens, mask), tokens, target)
                return loss * n, n
            hidden = model.forward(tokens, mask, compute_logits=False).hidden
        targets, weight = _shifted_targets(tokens, target)
        d = hidden.shape[-1]
        matrix, vocab_major = head
        flat = hidden.reshape(-1, d).astype(jnp.float32)
        total = _fused_head_nll(flat, matrix, targets.reshape(-1), weight.reshape(-1), vocab_major)
        return total, weight.sum()

    grad_fn = jax.value_and_grad(summed_loss, has_aux=True)
    tokens, mask, target = batch["tokens"], batch["mask"], _batch_target_mask(batch)
    if accum_steps == 1:
        (total, n), grads = grad_fn(params, tokens, mask, target)
    else:
        b = tokens.shape[0]
        if b % accum_steps:
            raise ValueError(
                f"batch size {b} is invalid: accepted values are multiples of accum_steps ({accum_steps})"
            )

        def micro(x: jax.Array) -> jax.Array:  # [B, ...] -> [k, B / k, ...], microbatch i = rows i*B/k ...
            return x.reshape(accum_steps, b // accum_steps, *x.shape[1:])

        def body(carry, mb):
            g_acc, total_acc, n_acc = carry
            (total_mb, n_mb), g = grad_fn(params, *mb)
            return (jax.tree.map(jnp.add, g_acc, g), total_acc + total_mb, n_acc + n_mb), None

        init = (jax.tree.map(jnp.zeros_like, params), jnp.float32(0), jnp.float32(0))
        (grads, total, n), _ = jax.lax.scan(body, init, (micro(tokens), micro(mask), micro(target)))
    denom = jnp.where(n > 0, n, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    loss = total / denom
    optimizer.update(model, grads)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "tokens": n, "perplexity": jnp.exp(loss)}
    return nnx.state((model, optimizer)), metrics


# Module-level jits with the graph definition static: equal graphdefs (same architecture, config and optimizer
# object) share one compilation across make_lm_train_step calls, e.g. across pretrain runs in one process.
_lm_step_jit = jax.jit(_lm_step, static_argnums=(0, 1))
_lm_step_jit_donate = jax.jit(_lm_step, static_argnums=(0, 1), donate_argnums=(2,))


def make_lm_train_step(
    graphdef: nnx.GraphDef,
    *,
    accum_steps: int = 1,
    donate: bool = False,
    mesh: Mesh | None = None,
    mode: str = "dp",
    state: nnx.State | None = None,
) -> Callable[[nnx.State, Batch], tuple[nnx.State, dict[str, jax.Array]]]:
    """Jitted ``step(state, batch) -> (state, metrics)`` for ``graphdef, state = nnx.split((model, optimizer))``.

    ``model(tokens, mask) -> logits [B, T, V]``; ``optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)``.
    The step differentiates only the variables the optimizer's ``wrt`` filter selects; everything else is frozen
    (no gradient is computed for it, and it leaves the step bit-identical). This is the one way to freeze
    parameters: ``wrt=trainable_filter(freeze=("embed.*", "blocks.0.*"))`` freezes by path glob,
    ``wrt=nnx.LoRAParam`` trains LoRA adapters only (:func:`~jaxsafety.train.finetune.trainable_filter`).
    ``batch``: ``{"tokens": int [B, T], "mask": [B, T]}`` plus optionally ``"loss_mask": [B, T]`` (module
    docstring). With ``accum_steps = k > 1`` the batch is split into ``k`` consecutive microbatches of ``B / k``
    rows (``B`` must be divisible by ``k``), a ``lax.scan`` sums the microbatches' gradients of their *summed*
    token losses, and one optimizer update applies ``sum_grad / total_tokens``: exactly the full-batch gradient
    of the token-weighted mean loss (up to float summation order) at ``1/k`` of the activation memory. (Averaging
    per-microbatch *mean* gradients instead would weight tokens unequally when microbatches hold different
    numbers of real tokens.)

    Metrics (scalars): ``loss`` (token-weighted mean over the batch), ``grad_norm`` (global L2 norm of that
    gradient, before any clipping in ``tx``), ``tokens`` (number of scored targets), ``perplexity`` (``exp loss``).
    ``donate=True`` donates the input state's buffers (saves memory; the caller must not reuse ``state``).

    With a ``mesh`` (:func:`~jaxsafety.train.sharding.make_mesh`, which may span processes) the step is
    :func:`~jaxsafety.train.sharding.jit_sharded` in ``mode`` ``"dp"`` or ``"fsdp"`` for a state shaped like
    ``state`` (placed by :func:`~jaxsafety.train.sharding.shard_state`), the batch split over the mesh
    (:func:`~jaxsafety.train.sharding.process_batch`); the same updates up to float summation order.
    """
    check_range("accum_steps", accum_steps, ge=1, integer=True)
    if mesh is not None:
        if state is None:
            raise ValueError("state is required with a mesh: its shapes decide the shardings")
        step = functools.partial(_lm_step, graphdef, accum_steps)
        return jit_sharded(step, state, mesh, mode, donate=donate)
    return functools.partial(_lm_step_jit_donate if donate else _lm_step_jit, graphdef, accum_steps)


@functools.partial(jax.jit, static_argnums=0)
def _eval_sums(graphdef: nnx.GraphDef, state: nnx.State, batch: Batch) -> tuple[jax.Array, jax.Array]:
    merged = nnx.merge(graphdef, state)
    model = merged[0] if isinstance(merged, tuple) else merged
    loss, n = next_token_loss(
        model(batch["tokens"], batch["mask"]), batch["tokens"], _batch_target_mask(batch)
    )
    return loss * n, n


def evaluate_lm(graphdef: nnx.GraphDef, state: nnx.State, batches: Iterable[Batch]) -> dict[str, float]:
    """Token-weighted mean next-token loss of the model over ``batches`` (same batch format as the train step).

    ``graphdef, state`` split either ``(model, optimizer)`` (the train state) or the model alone. Returns
    ``{"loss", "perplexity", "tokens"}`` as Python floats (loss NaN when no token is scored).
    """
    total, count = 0.0, 0.0
    for batch in batches:
        s, n = jax.device_get(_eval_sums(graphdef, state, dict(batch)))
        total += float(s)
        count += float(n)
    loss = total / count if count else float("nan")
    return {"loss": loss, "perplexity": float(np.exp(loss)), "tokens": count}


def lm_batches(rows: np.ndarray, batch_size: int) -> list[dict[str, jax.Array]]:
    """Packed rows ``[N, T]`` as consecutive batches of ``batch_size`` rows for :func:`evaluate_lm`.

    The last batch is padded with all-zero rows whose mask is 0, so every batch has one shape (one compilation)
    and the padding scores no token.
    """
    check_range("batch_size", batch_size, ge=1, integer=True)
    out = []
    for start in range(0, rows.shape[0], batch_size):
        chunk = rows[start : start + batch_size]
        pad = batch_size - chunk.shape[0]
        mask = np.ones(chunk.shape, np.int32)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, rows.shape[1]), rows.dtype)])
            mask = np.concatenate([mask, np.zeros((pad, rows.shape[1]), np.int32)])
        out.append({"tokens": jnp.asarray(chunk, jnp.int32), "mask": jnp.asarray(mask)})
    return out


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy (nats) of the empirical token distribution of ``tokens`` (any shape): the loss of the best
    context-free predictor on those tokens, the baseline an LM must beat to have learned any context."""
    counts = np.bincount(np.asarray(tokens).ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# ----------------------------------------------------------------------------------------------------------------
# pretraining from a config


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines a pretrained small LM: architecture and size, corpus, tokenizer, data shape,
    optimizer, steps and seed (a hash of this config keys a trained-model cache).

    ``corpus`` is ``"synthetic"`` (built from ``synthetic``, see :mod:`jaxsafety.data.corpus`) or the path of a
    local text file (documents split as in :func:`~jaxsafety.data.corpus.text_file_corpus`). A byte-level BPE
    tokenizer of (at most) ``vocab_size`` entries is trained on the training split; the model's vocabulary is the
    tokenizer's real size. ``d_ff=None`` means ``4 d_model`` (gpt2) or ``8/3 d_model`` rounded up to a multiple of
    8 (llama, SwiGLU). ``n_kv_heads`` (grouped-query attention) is llama-only. ``batch_size`` rows of ``seq_len``
    tokens per optimizer update, computed in ``accum_steps`` microbatches inside the step.
    """

    arch: Literal["gpt2", "llama"] = "gpt2"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_ff: int | None = None
    max_seq_len: int | None = None  # model context; None: seq_len
    dtype: Literal["float32", "bfloat16"] = "float32"
    vocab_size: int = 1024
    corpus: str = "synthetic"
    synthetic: CorpusConfig = CorpusConfig()
    heldout_fraction: float = 0.05
    seq_len: int = 128
    batch_size: int = 32
    accum_steps: int = 1
    steps: int = 2000
    optim: OptimizerConfig = OptimizerConfig(
        name="adamw",
        lr=1e-3,
        b2=0.95,
        weight_decay=0.1,
        schedule="cosine",
        warmup_steps=100,
        grad_clip_norm=1.0,
    )
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, ("gpt2", "llama"))
        check_choice("dtype", self.dtype, ("float32", "bfloat16"))
        check_range("vocab_size", self.vocab_size, ge=260, integer=True)
        if self.corpus != "synthetic":
            check(
                Path(self.corpus).is_file(), "corpus", self.corpus, "'synthetic' or the path of a text file"
            )
        check_range("heldout_fraction", self.heldout_fraction, gt=0, lt=1)
        check_range("seq_len", self.seq_len, ge=2, integer=True)
        if self.max_seq_len is not None:
            check_range("max_seq_len", self.max_seq_len, ge=self.seq_len, integer=True)
        check_range("batch_size", self.batch_size, ge=1, integer=True)
        check_range("accum_steps", self.accum_steps, ge=1, integer=True)
        check(
            self.batch_size % self.accum_steps == 0,
            "accum_steps",
            self.accum_steps,
            f"divisors of batch_size ({self.batch_size})",
        )
        check_range("steps", self.steps, ge=1, integer=True)
        check_range("seed", self.seed, ge=0, integer=True)
        if self.arch != "llama":
            check(self.n_kv_heads is None, "n_kv_heads", self.n_kv_heads, "none for arch 'gpt2'")
        self.model_config(self.vocab_size)  # raises ConfigError naming the model field
        try:
            self.optim.resolve(self.steps)
            check(
                self.optim.grad_accum_steps == 1,
                "grad_accum_steps",
                self.optim.grad_accum_steps,
                "1 (pretraining accumulates inside the step: set accum_steps)",
            )
        except ConfigError as err:
            raise err.with_prefix("optim") from None

    def model_config(self, vocab_size: int) -> GPT2Config | LlamaConfig:
        """The GPT2Config / LlamaConfig of this run for a tokenizer of ``vocab_size`` entries."""
        common = {
            "vocab_size": vocab_size,
            "max_seq_len": self.max_seq_len or self.seq_len,
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "dtype": self.dtype,
        }
        if self.arch == "gpt2":
            return GPT2Config(d_ff=self.d_ff, **common)
        d_ff = self.d_ff or -(-8 * self.d_model // 3 // 8) * 8
        return LlamaConfig(d_ff=d_ff, n_kv_heads=self.n_kv_heads, **common)


@dataclasses.dataclass
class PretrainResult:
    """What :func:`pretrain` returns. Losses in nats per token; ``train_loss`` is the last logged minibatch loss
    (NaN if the run was already complete on resume), ``train_eval_loss`` the loss on up to
    ``len(heldout)`` training rows, for a like-for-like comparison with ``heldout_loss``."""

    config: PretrainConfig
    model: nnx.Module
    tokenizer: Any
    graphdef: nnx.GraphDef
    state: nnx.State
    train_loss: float
    train_eval_loss: float
    heldout_loss: float
    unigram_entropy: float
    tokens_per_second: float
    num_params: int
    num_train_tokens: int
    history: list[dict[str, float]]


def pretrain_documents(config: PretrainConfig) -> tuple[list[str], list[str]]:
    """The (train, held-out) documents :func:`pretrain` uses for ``config``: the corpus shuffled with the seed, the
    last ``heldout_fraction`` held out (studies of a pretrained model, e.g. influence over its training set, read
    them here)."""
    if config.corpus == "synthetic":
        docs = synthetic_corpus(config.synthetic, config.seed)
    else:
        docs = text_file_corpus(config.corpus)
    if len(docs) < 2:
        raise ValueError(
            f"corpus {config.corpus!r} has {len(docs)} document(s): need at least 2 to hold one out"
        )
    order = np.random.default_rng([config.seed, 2]).permutation(len(docs))
    n_held = min(max(1, round(config.heldout_fraction * len(docs))), len(docs) - 1)
    docs = [docs[i] for i in order]
    return docs[:-n_held], docs[-n_held:]


def _epoch_sampler(num_rows: int, batch_size: int, seed: int) -> Callable[[int], np.ndarray]:
    """Row indices of step ``step``'s batch: rows in a seeded random order per epoch, epochs back to back.

    A pure function of the step (a resumed run sees the batches the uninterrupted run would have seen)."""

    @functools.lru_cache(maxsize=4)
    def perm(epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, 3, epoch]).permutation(num_rows)

    def indices(step: int) -> np.ndarray:
        pos = step * batch_size + np.arange(batch_size)
        return np.array([perm(int(e))[int(r)] for e, r in zip(pos // num_rows, pos % num_rows)])

    return indices


def pretrain(
    config: PretrainConfig,
    *,
    tracker: Tracker | None = None,
    checkpointer: Checkpointer | None = None,
    log_every: int = 10,
    eval_every: int | None = None,
    on_eval: Callable[[int, nnx.Module, Any, dict[str, float]], None] | None = None,
    desc: str = "pretrain",
    sharding: str = "auto",
) -> PretrainResult:
    """Train the small LM that ``config`` describes; return it with its tokenizer and headline numbers.

    Pipeline: documents (synthetic or text file) -> seeded train/held-out split -> byte-level BPE trained on the
    training documents -> packed rows (:func:`~jaxsafety.models.tokenizer.encode_corpus`) -> GPT-2 / Llama ->
    :func:`make_lm_train_step` driven by :func:`~jaxsafety.train.loop.run_loop` (batch of step ``s`` a pure
    function of ``s``; with a ``checkpointer`` holding a checkpoint the run resumes from it, bit-identically on
    CPU, since the tokenizer and data are deterministic in the config).

    Logged to ``tracker``: ``train/{loss,grad_norm,tokens,perplexity}`` (run_loop), ``train/lr``,
    ``train/tokens_per_second`` every ``log_every`` steps; ``heldout/{loss,perplexity}`` every ``eval_every``
    steps (None: at the end only) and at the end, where ``on_eval(step, model, tokenizer, heldout_metrics)`` is
    also called (e.g. to log samples).

    ``sharding``: ``"none"`` (one device), ``"dp"`` or ``"fsdp"`` over a mesh of all devices, of every process
    in a multi-process job (:mod:`jaxsafety.train.sharding`; each process feeds its own rows of every batch), or
    ``"auto"``: ``"dp"`` when there is more than one device, else ``"none"``. The batch of a step is the same
    in every layout, so runs agree up to float summation order. The returned ``model`` and ``state`` are
    copies on this process's first device (gathered from the mesh).
    """
    from jaxsafety.models.tokenizer import encode_corpus, train_bpe_tokenizer  # imports transformers: lazily

    check_range("log_every", log_every, ge=1, integer=True)
    if eval_every is not None:
        check_range("eval_every", eval_every, ge=1, integer=True)
    mesh, mode = choose_mesh(sharding, config.batch_size)
    tracker = tracker or NoOpTracker()

    train_docs, held_docs = pretrain_documents(config)
    tokenizer = train_bpe_tokenizer(train_docs, config.vocab_size)
    train_rows = encode_corpus(tokenizer, train_docs, config.seq_len)
    try:
        held_rows = encode_corpus(tokenizer, held_docs, config.seq_len)
    except ValueError as err:
        raise ValueError(
            f"held-out split ({len(held_docs)} documents) is too small: {err}; raise heldout_fraction or add data"
        ) from None
    held_batches = lm_batches(held_rows, config.batch_size)
    train_eval_batches = lm_batches(train_rows[: held_rows.shape[0]], config.batch_size)
    if mesh is not None:
        held_batches = [shard_batch(b, mesh) for b in held_batches]
        train_eval_batches = [shard_batch(b, mesh) for b in train_eval_batches]
    baseline = unigram_entropy(train_rows[:, 1:])

    model_cfg = config.model_config(len(tokenizer))
    model_cls = GPT2 if config.arch == "gpt2" else Llama
    model = model_cls(model_cfg, rngs=nnx.Rngs(jax.random.key(config.seed)))
    num_params = model.num_params()
    optimizer = nnx.Optimizer(model, cached_optimizer(config.optim, config.steps), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    sample_rows = _epoch_sampler(train_rows.shape[0], config.batch_size, config.seed)
    if mesh is None:
        # commit the fresh state to the device, as a checkpoint restore does: jit caches by committed-ness, so a
        # run resumed in the same process (tests, a model cache) then reuses the compiled step, not recompiling
        state = jax.device_put(state, jax.local_devices()[0])
        train_step = make_lm_train_step(graphdef, accum_steps=config.accum_steps)
        ones = jnp.ones((config.batch_size, config.seq_len), jnp.int32)

        def batch_fn(step: int) -> dict[str, jax.Array]:
            return {"tokens": jnp.asarray(train_rows[sample_rows(step)]), "mask": ones}

    else:
        state = shard_state(state, mesh, mode)
        train_step = make_lm_train_step(
            graphdef, accum_steps=config.accum_steps, mesh=mesh, mode=mode, state=state
        )
        mine = process_rows(config.batch_size, mesh)  # every process draws the global batch, feeds its rows
        local_ones = np.ones((mine.stop - mine.start, config.seq_len), np.int32)

        def batch_fn(step: int) -> dict[str, jax.Array]:
            rows = train_rows[sample_rows(step)[mine]]
            return process_batch({"tokens": rows, "mask": local_ones}, mesh)

    lr_at = jax.jit(make_schedule(config.optim, total_steps=config.steps))  # one compilation, not one per op

    # run_loop hands on_log no state: the step keeps the newest one here (and counts the steps this call ran)
    latest: dict[str, Any] = {"state": state, "steps_run": 0}

    def step_fn(s: nnx.State, batch: Batch) -> tuple[nnx.State, dict[str, jax.Array]]:
        s, metrics = train_step(s, batch)
        latest["state"] = s
        latest["steps_run"] += 1
        return s, metrics

    history: list[dict[str, float]] = []
    rates: list[float] = []
    clock = {"t": None, "step": None}
    tokens_per_step = config.batch_size * config.seq_len

    def evaluate(step: int, s: nnx.State) -> dict[str, float]:
        held = evaluate_lm(graphdef, s, held_batches)
        tracker.scalars({"loss": held["loss"], "perplexity": held["perplexity"]}, step, prefix="heldout/")
        if on_eval is not None:
            on_eval(step, nnx.merge(graphdef, s if mesh is None else to_local(s))[0], tokenizer, held)
        return held

    def on_log(step: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()  # metrics were pulled to the host: the device is synchronised here
        if clock["t"] is not None:  # the first interval holds compilation: not a throughput sample
            rates.append((step - clock["step"]) * tokens_per_step / (now - clock["t"]))
            tracker.scalar("train/tokens_per_second", rates[-1], step)
        tracker.scalar("train/lr", float(lr_at(step - 1)), step)
        row = {"step": float(step), **metrics}
        if eval_every is not None and step % eval_every == 0 and step != config.steps:
            row["heldout_loss"] = evaluate(step, latest["state"])["loss"]
        history.append(row)
        clock["t"], clock["step"] = time.perf_counter(), step

    t_start = time.perf_counter()
    state, last = run_loop(
        state,
        step_fn,
        batch_fn,
        num_steps=config.steps,
        checkpointer=checkpointer,
        tracker=tracker,
        log_every=log_every,
        metadata={"pretrain_config": config_to_dict(config)},
        desc=desc,
        on_log=on_log,
    )
    elapsed = time.perf_counter() - t_start
    held = evaluate(config.steps, state)
    if history and history[-1]["step"] == config.steps:
        history[-1]["heldout_loss"] = held["loss"]
    train_eval = evaluate_lm(graphdef, state, train_eval_batches)
    tracker.scalar("train_eval/loss", train_eval["loss"], config.steps)
    steps_run = latest["steps_run"]
    fallback = steps_run * tokens_per_step / elapsed if steps_run else float("nan")  # includes compilation
    if mesh is not None:
        state = to_local(state)
    return PretrainResult(
        config=config,
        model=nnx.merge(graphdef, state)[0],
        tokenizer=tokenizer,
        graphdef=graphdef,
        state=state,
        train_loss=float(last.get("loss", float("nan"))),
        train_eval_loss=train_eval["loss"],
        heldout_loss=held["loss"],
        unigram_entropy=baseline,
        tokens_per_second=float(np.median(rates)) if rates else fallback,
        num_params=num_params,
        num_train_tokens=int(train_rows.size),
        history=history,
    )
