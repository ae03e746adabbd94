"""The decoder-only transformer that every architecture in the zoo instantiates.

GPT-2 and Llama (and Mistral / Qwen2, which are Llama with options) differ only in a few switches, carried by their
config classes (``gpt2.py``, ``llama.py``): LayerNorm vs RMSNorm, learned positions vs RoPE, GELU MLP vs SwiGLU,
q/k/v biases, tied embeddings, grouped-query attention. Writing the block once keeps the activation sites, the KV
cache and the masking rules identical across architectures, which is what the studies built on top rely on.

Conventions
- ``tokens`` int [B, T]; ``attention_mask`` [B, T] (1 = real token, 0 = padding; left or right padding).
- Positions default to ``cumsum(mask) - 1`` per row, so a left-padded sequence gets the same positions (and the
  same outputs at its real tokens) as the unpadded one.
- Parameters are ``param_dtype`` (float32 by default); activations run in ``dtype`` (e.g. bfloat16 on GPU/TPU);
  attention softmax, norms and logits are computed in float32.
- Linear kernels are [in, out]; q/k/v (and gate/up) projections are fused into one matmul each.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from flax import nnx
from jax.custom_derivatives import SymbolicZero

from jaxsafety.models.hooks import HookContext, Hooks

__all__ = [
    "CausalLM",
    "KVCache",
    "ModelOutput",
    "TransformerSpec",
    "lean_backward",
    "positions_from_mask",
    "rope_frequencies",
]

_NEG = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: fully-masked (padding) query rows give no NaNs


class TransformerSpec(Protocol):
    """What the decoder reads from an architecture config (GPT2Config, LlamaConfig)."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    max_seq_len: int
    dtype: str
    param_dtype: str

    @property
    def n_kv_heads_(self) -> int: ...
    @property
    def head_dim_(self) -> int: ...
    @property
    def d_ff_(self) -> int: ...
    @property
    def norm(self) -> str: ...  # "layernorm" | "rmsnorm"
    @property
    def norm_eps(self) -> float: ...
    @property
    def positional(self) -> str: ...  # "learned" | "rope"
    @property
    def mlp(self) -> str: ...  # "gelu" | "swiglu"
    @property
    def activation(self) -> str: ...  # "gelu_new" | "gelu" | "silu" | "relu"
    @property
    def qkv_bias(self) -> bool: ...
    @property
    def out_bias(self) -> bool: ...
    @property
    def mlp_bias(self) -> bool: ...
    @property
    def tie_embeddings(self) -> bool: ...
    @property
    def rope_inv_freq(self) -> tuple[float, ...]: ...


class KVCache(NamedTuple):
    """Per-layer keys/values ``[B, Hkv, S, Dh]`` (head-major, so attention reads them without a transposed copy)
    over ``S`` slots, which slots hold tokens ``mask [B, S]``, and the next slot to write ``index`` (shared by the
    batch: prompts are left-padded to a common length)."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    mask: jax.Array
    index: jax.Array

    @property
    def max_len(self) -> int:
        return self.mask.shape[1]

    def lengths(self) -> jax.Array:
        """Number of real tokens held per row ``[B]`` (= the position of the next token)."""
        return self.mask.sum(-1).astype(jnp.int32)

    def repeat(self, n: int) -> KVCache:
        """Repeat each row ``n`` times: batch ``B`` becomes ``B * n``, row ``i * n + j`` a copy of row ``i``
        (shared-prefix scoring and n-sample generation: prefill each prefix once, then decode n rows from it)."""
        rep = lambda a: jnp.repeat(a, n, axis=0)  # noqa: E731
        return KVCache(tuple(map(rep, self.keys)), tuple(map(rep, self.values)), rep(self.mask), self.index)


class ModelOutput(NamedTuple):
    logits: jax.Array | None  # [B, T, V] float32 (None when the LM head is skipped)
    hidden: jax.Array  # [B, T, D] after the final norm
    cache: KVCache | None
    activations: dict[str, jax.Array]  # captured by Hooks


def positions_from_mask(mask: jax.Array, offset: jax.Array | int = 0) -> jax.Array:
    """``offset + cumsum(mask) - 1`` clipped at ``offset``: positions that ignore padding ([B, T] int32)."""
    mask = mask.astype(jnp.int32)
    pos = jnp.cumsum(mask, axis=-1) - 1
    return (jnp.maximum(pos, 0) + jnp.asarray(offset, jnp.int32)[..., None]).astype(jnp.int32)


def rope_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None = None) -> tuple[float, ...]:
    """RoPE inverse frequencies ``theta^(-2i/d)``, with HF's ``linear`` or ``llama3`` scaling applied.

    llama3 (Meta, Llama 3.1): wavelengths longer than ``original_max_position_embeddings / low_freq_factor`` are
    divided by ``factor``, shorter than ``.../high_freq_factor`` kept, and the band between interpolated smoothly.
    """
    import numpy as np

    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        factor = float(scaling["factor"])
        if kind == "linear":
            inv = inv / factor
        elif kind == "llama3":
            low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
            old = float(scaling["original_max_position_embeddings"])
            wavelen = 2 * math.pi / inv
            scaled = np.where(wavelen > old / low, inv / factor, inv)
            smooth = (old / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < old / high) & ~(wavelen > old / low)
            inv = np.where(medium, smoothed, scaled)
        else:
            raise ValueError(f"rope_scaling type {kind!r} is invalid: accepted values are 'linear', 'llama3'")
    return tuple(float(f) for f in inv.astype(np.float32))


def _apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotate-half RoPE (the HF Llama convention): x [B, T, H, Dh], positions [B, T]."""
    ang = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, Dh/2]
    cos = jnp.concatenate([jnp.cos(ang)] * 2, -1)[:, :, None, :]
    sin = jnp.concatenate([jnp.sin(ang)] * 2, -1)[:, :, None, :]
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rot = jnp.concatenate([-xf[..., half:], xf[..., :half]], -1)
    return (xf * cos + rot * sin).astype(x.dtype)


def _activation(name: str):
    if name == "gelu_new":
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "silu":
        return jax.nn.silu
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"activation {name!r} is invalid: accepted values are gelu_new, gelu, silu, relu")


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _layer_norm(x: jax.Array, w: jax.Array, b: jax.Array, eps: float) -> jax.Array:
    """``(x - mean) / sqrt(var + eps) * w + b`` over the last axis; its derivative keeps ``xhat`` and ``rstd``
    only (autodiff kept three ``x``-sized intermediates: 18 MB less XLA temp memory and 1-2% off the GPT-2 train
    step of benchmarks/models_train.py; the same rewrite of RMSNorm changed neither)."""
    mean = x.mean(-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * w + b


@_layer_norm.defjvp
def _layer_norm_jvp(eps, primals, tangents):
    x, w, b = primals
    tx, tw, tb = tangents
    mean = x.mean(-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
    rstd = jax.lax.rsqrt(var + eps)
    xhat = (x - mean) * rstd
    # d xhat = rstd (dx - mean(dx) - xhat mean(xhat dx)), exact (eps included)
    txhat = rstd * (tx - tx.mean(-1, keepdims=True) - xhat * (xhat * tx).mean(-1, keepdims=True))
    return xhat * w + b, txhat * w + xhat * tw + tb


class RMSNorm(nnx.Module):
    """``w * x / sqrt(mean(x^2) + eps)`` computed in float32 (Zhang & Sennrich 2019; HF LlamaRMSNorm)."""

    def __init__(self, dim: int, eps: float, *, param_dtype: Any):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (self.scale[...].astype(jnp.float32) * xf).astype(x.dtype)


class LayerNorm(nnx.Module):
    """LayerNorm in float32 with scale and bias (GPT-2)."""

    def __init__(self, dim: int, eps: float, *, param_dtype: Any):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        w, b = self.scale[...].astype(jnp.float32), self.bias[...].astype(jnp.float32)
        return _layer_norm(x.astype(jnp.float32), w, b, self.eps).astype(x.dtype)


def _norm(cfg: TransformerSpec, param_dtype: Any) -> nnx.Module:
    cls = RMSNorm if cfg.norm == "rmsnorm" else LayerNorm
    return cls(cfg.d_model, cfg.norm_eps, param_dtype=param_dtype)


@jax.custom_jvp
def _matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [..., K] @ w [K, N]``; its derivative (:func:`_matmul_jvp`) makes the weight gradient a plain matmul."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _matmul_jvp(primals, tangents):
    """Same derivative as the plain product, arranged for XLA:CPU (profiled on the train step of
    ``benchmarks/models_train.py``). Forward mode and higher derivatives work as for ``jnp.dot`` (this is a
    ``custom_jvp``, not a ``custom_vjp``).

    The weight gradient ``x^T dy`` contracts the token axis, the leading axis of both operands. XLA:CPU's fast
    matmul library (YNNPACK) takes no transposed left operand, so that product runs in Eigen at about 2/3 of
    the speed.

    - Widening (``K <= N``: qkv, MLP up, the LM head): the weight tangent goes through ``x^T``, materialised once
      in the forward pass (the barrier keeps XLA from folding the transpose back into the dot), so its
      reverse-mode transpose is the row-major product ``x^T @ dy`` in YNNPACK; the copy costs ``K / N`` of a pass
      over the output.
    - Narrowing (``K > N``: MLP down): the copy of ``x`` would cost more than Eigen loses, so the weight tangent
      is the plain 2-D product ``x [tokens, K] @ tw``, whose transpose is one Eigen matmul reading ``x`` and
      ``dy`` in place. (Through nnx.Linear's own ``[B, T, K]`` contraction XLA instead computed ``dy^T``, fusing
      the transpose into the residual gradient's whole chain of elementwise producers, recomputed in transposed
      order.)

    The barrier on the weight tangent is one on the weight's cotangent in reverse mode: a transpose applied to
    the weight gradient after the product (the tied LM head's ``emb.T``) is then a copy of the small ``[K, N]``
    result instead of being folded into the product as a transposed-operand (Eigen) matmul.
    """
    x, w = primals
    tx, tw = tangents
    y = _matmul(x, w)
    parts = []
    if not isinstance(tx, SymbolicZero):
        parts.append(_matmul(tx, w))
    if not isinstance(tw, SymbolicZero):
        tw = jax.lax.optimization_barrier(tw)
        k, n = w.shape
        x2 = x.reshape(-1, k)  # [tokens, K]
        if k <= n:
            xt = jax.lax.optimization_barrier(x2.T)  # [K, tokens]
            parts.append(jax.lax.dot_general(xt, tw, (((0,), (0,)), ((), ()))).reshape(y.shape))
        else:
            parts.append(jax.lax.dot_general(x2, tw, (((1,), (0,)), ((), ()))).reshape(y.shape))
    if not parts:  # not reached (JAX calls the rule only with a nonzero tangent); kept for completeness
        return y, jnp.zeros_like(y)
    return y, parts[0] if len(parts) == 1 else parts[0] + parts[1]


_matmul.defjvp(_matmul_jvp, symbolic_zeros=True)


def _weight_grad_friendly_dot(
    lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any, precision: Any = None, **kwargs: Any
) -> jax.Array:
    """``dot_general`` for :class:`nnx.Linear`: its ``x @ kernel`` goes through :func:`_matmul`, anything else
    (other contractions, explicit precision or output type or sharding) through ``jax.lax.dot_general``."""
    (lc, rc), (lb, rb) = dimension_numbers
    plain = precision is None and all(v is None for v in kwargs.values())
    if plain and tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb and rhs.ndim == 2:
        return _matmul(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, **kwargs)


def _linear(
    n_in: int, n_out: int, bias: bool, cfg: TransformerSpec, rngs: nnx.Rngs, std: float
) -> nnx.Linear:
    # every projection's x @ kernel goes through _matmul, whose derivative suits XLA:CPU's matmul library
    return nnx.Linear(
        n_in,
        n_out,
        use_bias=bias,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=nnx.initializers.normal(std),
        # the weight-gradient rewrite targets XLA:CPU's matmul library; GPU/TPU keep XLA's own choice
        dot_general=_weight_grad_friendly_dot if jax.default_backend() == "cpu" else jax.lax.dot_general,
        rngs=rngs,
    )


def _causal_chunks(t: int) -> int:
    """Query blocks for blockwise-causal attention over ``t`` positions: 4 from 256 positions, 2 from 128 (smaller
    blocks cost more in per-op overhead than they save)."""
    for n, at_least in ((4, 256), (2, 128)):
        if t >= at_least and t % n == 0:
            return n
    return 1


def _attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, kv: str, hook: Any) -> jax.Array:
    """Softmax attention of ``q [B, T, H, Dh]`` (already scaled) over ``k, v`` (layout ``kv``: ``"bskd"`` as
    projected, ``"bksd"`` as cached), ``allowed [B, T, S]``; ``hook`` sees (and may edit) ``probs [B, H, T, S]``.
    Returns ``z [B, T, H, Dh]``.

    Masking is a ``where`` (not an additive bias), so masked scores, and fully masked padding rows, pass no
    gradient to q and k. Multi-head attention uses 4-d contractions (no singleton group axis in XLA's batched
    matmuls); grouped-query attention contracts each kv head with its group of query heads.
    """
    b, t, h, dh = q.shape
    hk = k.shape[kv.index("k")]
    s = allowed.shape[-1]
    g = h // hk
    if g == 1:
        kv4 = kv.replace("k", "h")
        scores = jnp.einsum(f"bthd,{kv4}->bhts", q, k).astype(jnp.float32)
        probs = hook(jax.nn.softmax(jnp.where(allowed[:, None], scores, _NEG), axis=-1))
        return jnp.einsum(f"bhts,{kv4}->bthd", probs.astype(v.dtype), v)
    scores = jnp.einsum(f"btkgd,{kv}->bkgts", q.reshape(b, t, hk, g, dh), k).astype(jnp.float32)
    probs = jax.nn.softmax(jnp.where(allowed[:, None, None], scores, _NEG), axis=-1)
    probs = hook(probs.reshape(b, h, t, s)).reshape(b, hk, g, t, s)
    return jnp.einsum(f"bkgts,{kv}->btkgd", probs.astype(v.dtype), v).reshape(b, t, h, dh)


class Attention(nnx.Module):
    """Multi-head / grouped-query causal self-attention with a fused qkv projection and an optional KV cache."""

    def __init__(self, cfg: TransformerSpec, *, rngs: nnx.Rngs):
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads_, cfg.head_dim_
        std = 0.02
        out_std = 0.02 / math.sqrt(2 * cfg.n_layers)  # GPT-2's scaled init of residual projections
        self.qkv = _linear(
            cfg.d_model, (self.n_heads + 2 * self.n_kv) * self.head_dim, cfg.qkv_bias, cfg, rngs, std
        )
        self.out = _linear(self.n_heads * self.head_dim, cfg.d_model, cfg.out_bias, cfg, rngs, out_std)
        self.rope = cfg.positional == "rope"
        self.inv_freq = cfg.rope_inv_freq if self.rope else ()  # static: folded into the graph as a constant

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        key_mask: jax.Array,
        cache_kv: tuple[jax.Array, jax.Array] | None,
        index: jax.Array,
        ctx: HookContext,
        site: str,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        b, t, _ = x.shape
        h, hk, dh = self.n_heads, self.n_kv, self.head_dim
        qkv = ctx(f"{site}.qkv", self.qkv(x))
        q = qkv[..., : h * dh].reshape(b, t, h, dh)
        k = qkv[..., h * dh : (h + hk) * dh].reshape(b, t, hk, dh)
        v = qkv[..., (h + hk) * dh :].reshape(b, t, hk, dh)
        if self.rope:
            inv = jnp.asarray(self.inv_freq, jnp.float32)
            q, k = _apply_rope(q, positions, inv), _apply_rope(k, positions, inv)
        if cache_kv is not None:
            # the cache is head-major [B, Hkv, S, Dh]: the batched matmuls below then read it in place (with slots
            # before heads, XLA copied the whole transposed cache for every layer at every decoding step)
            ck, cv = cache_kv
            k = jax.lax.dynamic_update_slice(ck, k.transpose(0, 2, 1, 3).astype(ck.dtype), (0, 0, index, 0))
            v = jax.lax.dynamic_update_slice(cv, v.transpose(0, 2, 1, 3).astype(cv.dtype), (0, 0, index, 0))
            new_cache = (k, v)
            kv, s = "bksd", k.shape[2]
        else:
            new_cache = None
            kv, s = "bskd", k.shape[1]
        # slot j is visible to query i (written at slot index + i) iff it holds a token and j <= index + i
        q_slot = index + jnp.arange(t)
        allowed = key_mask[:, None, :] & (jnp.arange(s)[None, None, :] <= q_slot[None, :, None])  # [B, T, S]
        # the 1/sqrt(Dh) scale is folded into q ([T, Dh] per head, not [T, S]): one pass less over the scores
        q = q * jnp.asarray(1.0 / math.sqrt(dh), q.dtype)
        k, v = k.astype(q.dtype), v.astype(x.dtype)
        hook = functools.partial(ctx, f"{site}.probs")
        n = _causal_chunks(t) if cache_kv is None and not ctx.touches(f"{site}.probs") else 1
        if n == 1:
            z = _attention(q, k, v, allowed, kv, hook)
        else:
            # causal attention without a cache: query block i sees key blocks 0..i only, so the scores above the
            # diagonal (3/8 of them with 4 blocks) are never computed; the skipped keys are masked for every query
            # of the block, so this is the same attention. Hooks on attn.probs keep the full [B, H, T, S] probs.
            c = t // n
            blocks = [
                _attention(
                    q[:, i * c : (i + 1) * c],
                    k[:, : (i + 1) * c],
                    v[:, : (i + 1) * c],
                    allowed[:, i * c : (i + 1) * c, : (i + 1) * c],
                    kv,
                    hook,
                )
                for i in range(n)
            ]
            z = jnp.concatenate(blocks, axis=1)
        z = ctx(f"{site}.z", z)
        return self.out(z.reshape(b, t, h * dh)), new_cache


_LEAN_BACKWARD = contextvars.ContextVar("jaxsafety_lean_backward", default=False)


@contextlib.contextmanager
def lean_backward():
    """Trace-time switch for training steps: inside it, on CPU, the decoder's float32 MLPs without hooks use a
    custom VJP that keeps only the (transposed) input and the up-projection's output for the backward pass and
    recomputes the activation there (:func:`_lean_mlp`). XLA:CPU maps the whole temp memory of a step afresh on
    every call, one page fault per 4 KiB page (~2 us each on a VM), so activations the backward pass does not
    keep are time saved: 64 MB (16k page faults) less and 2-3% off each train step of
    ``benchmarks/models_train.py`` (GPT-2 and Llama rows, AMD EPYC, one core).

    Reverse mode only: ``jax.jvp`` (forward mode) of a model traced inside raises. Outside it the model is the
    plain, forward-mode-differentiable computation. :func:`jaxsafety.train.lm.make_lm_train_step` traces its loss
    inside."""
    token = _LEAN_BACKWARD.set(True)
    try:
        yield
    finally:
        _LEAN_BACKWARD.reset(token)


def _activation_and_slope(name: str, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``act(x)`` (the formula of :func:`_activation`, so the same values) and its derivative ``act'(x)``."""
    if name == "relu":
        return jax.nn.relu(x), (x > 0).astype(x.dtype)
    y = _activation(name)(x)
    if name == "gelu_new":
        c = math.sqrt(2 / math.pi)
        th = jnp.tanh(c * (x + 0.044715 * (x**3)))
        return y, 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * c * (1.0 + 3 * 0.044715 * x * x)
    if name == "gelu":
        cdf = 0.5 * jax.lax.erfc(-x * math.sqrt(0.5))
        return y, cdf + x * jnp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
    sig = jax.nn.sigmoid(x)  # silu
    return y, sig * (1.0 + x * (1.0 - sig))


def _mlp_hidden(act: str, gated: bool, pre: jax.Array) -> jax.Array:
    if gated:
        gate, up = jnp.split(pre, 2, axis=-1)
        return _activation(act)(gate) * up
    return _activation(act)(pre)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _lean_mlp(act: str, gated: bool, x, wu, bu, wd, bd):
    """``down(act(up x))`` (gated: ``down(act(gate x) * up x)``) for ``x [N, D]``, float32, biases None or
    ``[width]``: the values of :class:`MLP`'s plain path, with a backward pass that recomputes the activation.

    Residuals: ``x^T [D, N]`` (materialised, the barrier keeps XLA from folding the transpose into the weight
    gradient: a row-major YNNPACK matmul, as :func:`_matmul` does) and the pre-activation ``[N, width]``. Plain
    autodiff kept the pre-activation, the activation's intermediates (GELU's tanh) and the hidden layer for the
    down projection's weight gradient: 24 MB a GPT-2 layer at the benchmark's 2048 tokens, 8 here."""
    return _lean_mlp_fwd(act, gated, x, wu, bu, wd, bd)[0]


def _lean_mlp_fwd(act, gated, x, wu, bu, wd, bd):
    pre = _matmul(x, wu)
    if bu is not None:
        pre = pre + bu
    out = _matmul(_mlp_hidden(act, gated, pre), wd)
    if bd is not None:
        out = out + bd
    return out, (jax.lax.optimization_barrier(x.T), pre, wu, wd, bu, bd)


def _lean_mlp_bwd(act, gated, res, g):
    xt, pre, wu, wd, bu, bd = res
    # 0 * g[0, 0] (not folded for floats) makes the recomputation depend on the cotangent, so XLA schedules it
    # in the backward pass; a dependence-free recomputation (jax.checkpoint) was hoisted into the forward pass
    pre = pre + 0.0 * g[0, 0]
    dh = jax.lax.dot_general(g, wd, (((1,), (1,)), ((), ())))  # g @ wd^T  [N, F]
    if gated:
        gate, up = jnp.split(pre, 2, axis=-1)
        a, slope = _activation_and_slope(act, gate)
        hidden = a * up
        dpre = jnp.concatenate([dh * slope * up, dh * a], axis=-1)
    else:
        hidden, slope = _activation_and_slope(act, pre)
        dpre = dh * slope
    # the down projection's weight gradient reads hidden and g in place (a transposed copy of the recomputed
    # hidden layer, fused with the activation, cost more than Eigen's transposed-operand matmul loses)
    dwd = jax.lax.dot_general(hidden, g, (((0,), (0,)), ((), ())))
    dwu = xt @ dpre
    dx = jax.lax.dot_general(dpre, wu, (((1,), (1,)), ((), ())))
    return dx, dwu, None if bu is None else dpre.sum(0), dwd, None if bd is None else g.sum(0)


_lean_mlp.defvjp(_lean_mlp_fwd, _lean_mlp_bwd)


def _plain_float32_linear(m: Any) -> bool:
    """An unmodified zoo projection in float32 (not LoRA, no other dot_general, precision or dtype)."""
    return (
        type(m) is nnx.Linear
        and m.dot_general is _weight_grad_friendly_dot
        and m.precision is None
        and m.preferred_element_type is None
        and m.dtype in (None, jnp.float32)
        and m.kernel[...].dtype == jnp.float32
    )


class MLP(nnx.Module):
    """GELU MLP (GPT-2) or SwiGLU (Llama: ``down(silu(gate x) * up x)``, gate and up fused)."""

    def __init__(self, cfg: TransformerSpec, *, rngs: nnx.Rngs):
        self.gated = cfg.mlp == "swiglu"
        self.act = cfg.activation
        width = cfg.d_ff_ * (2 if self.gated else 1)
        self.up = _linear(cfg.d_model, width, cfg.mlp_bias, cfg, rngs, 0.02)
        self.down = _linear(
            cfg.d_ff_, cfg.d_model, cfg.mlp_bias, cfg, rngs, 0.02 / math.sqrt(2 * cfg.n_layers)
        )

    def __call__(self, x: jax.Array, ctx: HookContext, site: str) -> jax.Array:
        if (
            _LEAN_BACKWARD.get()
            and ctx.hooks is None
            and x.dtype == jnp.float32
            and _plain_float32_linear(self.up)
            and _plain_float32_linear(self.down)
        ):
            bu = self.up.bias[...] if self.up.use_bias else None
            bd = self.down.bias[...] if self.down.use_bias else None
            wu, wd = self.up.kernel[...], self.down.kernel[...]
            out = _lean_mlp(self.act, self.gated, x.reshape(-1, x.shape[-1]), wu, bu, wd, bd)
            return out.reshape(*x.shape[:-1], out.shape[-1])
        pre = ctx(f"{site}.pre", self.up(x))
        return self.down(ctx(f"{site}.hidden", _mlp_hidden(self.act, self.gated, pre)))


class Block(nnx.Module):
    """Pre-norm block: ``x + attn(ln1 x)``, then ``+ mlp(ln2 x)``."""

    def __init__(self, cfg: TransformerSpec, *, rngs: nnx.Rngs):
        pd = jnp.dtype(cfg.param_dtype)
        self.ln1 = _norm(cfg, pd)
        self.attn = Attention(cfg, rngs=rngs)
        self.ln2 = _norm(cfg, pd)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, positions, key_mask, cache_kv, index, ctx: HookContext, i: int):
        p = f"blocks.{i}"
        x = ctx(f"{p}.resid_pre", x)
        a, new_kv = self.attn(
            ctx(f"{p}.ln1", self.ln1(x)), positions, key_mask, cache_kv, index, ctx, f"{p}.attn"
        )
        x = ctx(f"{p}.resid_mid", x + ctx(f"{p}.attn_out", a))
        m = self.mlp(ctx(f"{p}.ln2", self.ln2(x)), ctx, f"{p}.mlp")
        x = ctx(f"{p}.resid_post", x + ctx(f"{p}.mlp_out", m))
        return x, new_kv


class CausalLM(nnx.Module):
    """Decoder-only LM: ``model(tokens, attention_mask) -> logits [B, T, V]``; :meth:`forward` for the rest."""

    def __init__(self, config: Any, *, rngs: nnx.Rngs):
        self.config = config
        pd = jnp.dtype(config.param_dtype)
        self.embed = nnx.Embed(
            config.vocab_size,
            config.d_model,
            dtype=jnp.dtype(config.dtype),
            param_dtype=pd,
            embedding_init=nnx.initializers.normal(0.02),
            rngs=rngs,
        )
        if config.positional == "learned":
            self.pos_embed = nnx.Embed(
                config.max_seq_len,
                config.d_model,
                dtype=jnp.dtype(config.dtype),
                param_dtype=pd,
                embedding_init=nnx.initializers.normal(0.01),
                rngs=rngs,
            )
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.n_layers)])
        self.final_norm = _norm(config, pd)
        if not config.tie_embeddings:
            self.lm_head = _linear(config.d_model, config.vocab_size, False, config, rngs, 0.02)

    # ------------------------------------------------------------------------------------------------------------
    def __call__(
        self, tokens: jax.Array, attention_mask: jax.Array | None = None, **kwargs: Any
    ) -> jax.Array:
        return self.forward(tokens, attention_mask, **kwargs).logits

    def forward(
        self,
        tokens: jax.Array,
        attention_mask: jax.Array | None = None,
        *,
        positions: jax.Array | None = None,
        cache: KVCache | None = None,
        hooks: Hooks | None = None,
        compute_logits: bool = True,
        logits_last_only: bool = False,
    ) -> ModelOutput:
        """Full forward pass.

        With ``cache``, ``tokens`` are written at slots ``cache.index ...`` and attend to everything cached before
        (prefill: the whole left-padded prompt; decode: one token per row). ``logits_last_only`` computes logits
        for the last position only ([B, 1, V]), which is all sampling needs.
        """
        b, t = tokens.shape
        mask = jnp.ones((b, t), jnp.bool_) if attention_mask is None else attention_mask.astype(jnp.bool_)
        if cache is not None:
            index = cache.index
            key_mask = jax.lax.dynamic_update_slice(cache.mask, mask, (0, index))
            if positions is None:
                positions = positions_from_mask(mask, cache.lengths())
        else:
            index = jnp.int32(0)
            key_mask = mask
            if positions is None:
                positions = positions_from_mask(mask)
        # hooks index absolute columns: this chunk starts at slot `index` of `slots` (see hooks.Edit)
        cached = cache is not None
        ctx = HookContext(hooks, offset=index if cached else 0, slots=cache.max_len if cached else t)
        x = self.embed(tokens)
        if self.config.positional == "learned":
            x = x + self.pos_embed(positions)
        new_keys, new_values = [], []
        for i, block in enumerate(self.blocks):
            kv = (cache.keys[i], cache.values[i]) if cache is not None else None
            x, new_kv = block(x, positions, key_mask, kv, index, ctx, i)
            if new_kv is not None:
                new_keys.append(new_kv[0])
                new_values.append(new_kv[1])
        hidden = ctx("final_hidden", self.final_norm(x))
        logits = None
        if compute_logits:
            h = hidden[:, -1:] if logits_last_only else hidden
            # site lm_logits [B, T, V] float32: the LM head's output (upcast when dtype is lower), the output
            # site of the LM head's linear layer (jaxsafety.models.taps); absent when logits are not computed
            logits = ctx("lm_logits", self.logits(h), shift=t - 1 if logits_last_only else 0)
        ctx.check()
        new_cache = None
        if cache is not None:
            new_cache = KVCache(tuple(new_keys), tuple(new_values), key_mask, index + t)
        return ModelOutput(logits, hidden, new_cache, ctx.captured)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """LM head on final hidden states, in float32."""
        if self.config.tie_embeddings:
            if jax.default_backend() != "cpu":
                return self.embed.attend(hidden).astype(jnp.float32)
            # hidden @ E^T through _matmul: the embedding's gradient is then the row-major (h^T) @ dlogits,
            # transposed at [D, V] cost, instead of dlogits^T @ h, whose transposed [tokens, V] operand XLA:CPU
            # would copy first (profiled: a full pass over the [tokens, V] gradient)
            dt = jnp.dtype(self.config.dtype)
            emb = self.embed.embedding[...].astype(dt)
            return _matmul(hidden.astype(dt), emb.T).astype(jnp.float32)
        return self.lm_head(hidden).astype(jnp.float32)

    def head_matrix(self) -> tuple[jax.Array, bool] | None:
        """The LM head as one float32 matrix as stored, for losses that fuse the head with the softmax:
        ``(matrix, vocab_major)`` with ``logits(h) == h @ matrix.T`` when ``vocab_major`` (the tied embedding
        ``[V, D]``) else ``h @ matrix`` (the untied head's kernel ``[D, V]``). None when the head is not a plain
        float32 projection (a LoRA-wrapped head, lower-precision computation): use :meth:`logits` then."""
        if jnp.dtype(self.config.dtype) != jnp.float32:
            return None
        if self.config.tie_embeddings:
            emb = self.embed.embedding[...]
            return (emb, True) if emb.dtype == jnp.float32 else None
        head = self.lm_head
        if type(head) is nnx.Linear and not head.use_bias and head.kernel[...].dtype == jnp.float32:
            return head.kernel[...], False
        return None

    def init_cache(self, batch: int, max_len: int, dtype: Any = None) -> KVCache:
        """An empty cache of ``max_len`` slots (in the computation dtype unless ``dtype`` is given)."""
        cfg = self.config
        if cfg.positional == "learned" and max_len > cfg.max_seq_len:
            raise ValueError(
                f"max_len={max_len} is invalid: accepted values are <= max_seq_len ({cfg.max_seq_len})"
            )
        dt = jnp.dtype(dtype or cfg.dtype)
        shape = (batch, cfg.n_kv_heads_, max_len, cfg.head_dim_)
        zeros = tuple(jnp.zeros(shape, dt) for _ in range(cfg.n_layers))
        return KVCache(
            zeros,
            tuple(jnp.zeros(shape, dt) for _ in range(cfg.n_layers)),
            jnp.zeros((batch, max_len), jnp.bool_),
            jnp.int32(0),
        )

    def site_names(self) -> list[str]:
        """All activation sites of this model, in forward order (for :class:`~jaxsafety.models.hooks.Hooks`);
        ``lm_logits`` is seen only by forward passes that compute logits."""
        per_block = [
            "resid_pre",
            "ln1",
            "attn.qkv",
            "attn.probs",
            "attn.z",
            "attn_out",
            "resid_mid",
            "ln2",
            "mlp.pre",
            "mlp.hidden",
            "mlp_out",
            "resid_post",
        ]
        blocks = [f"blocks.{i}.{s}" for i in range(self.config.n_layers) for s in per_block]
        return [*blocks, "final_hidden", "lm_logits"]

    def num_params(self, include_embeddings: bool = True) -> int:
        params = nnx.state(self, nnx.Param)
        n = sum(x.size for x in jax.tree.leaves(params))
        if not include_embeddings:
            n -= self.embed.embedding[...].size
            if self.config.positional == "learned":
                n -= self.pos_embed.embedding[...].size
        return int(n)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward), counting matmuls and attention scores:
        ``6 N + 6 L T D`` with N the non-embedding matmul parameters plus the LM head (Kaplan et al. 2020)."""
        cfg = self.config
        n = self.num_params(include_embeddings=False) + cfg.vocab_size * cfg.d_model
        return 6.0 * n + 6.0 * cfg.n_layers * seq_len * cfg.n_heads * cfg.head_dim_
