"""Layer taps: every dense layer's inputs and output gradients, per example and per token, in one forward and
backward pass. The raw material of K-FAC / EK-FAC curvature and of influence functions.

A dense layer ``y = x W + b`` (``W [d_in, d_out]``) over tokens ``t`` has the per-example kernel gradient

    dL_n / dW = sum_t x_{n,t}^T g_{n,t},        g_{n,t} = dL_n / dy_{n,t}

(Martens & Grosse 2015, K-FAC, eq. 1; Grosse et al. 2023, "Studying large language model generalization with
influence functions", sec. 2.2 and 3.1, whose EK-FAC factors are ``E[x x^T]`` and ``E[g g^T]`` over tokens). So
the inputs ``x [B, T, d_in]`` and output gradients ``g [B, T, d_out]`` of every layer determine all per-example
(and per-token) kernel gradients and the Kronecker factors, without ever materialising ``[B, d_in, d_out]``.

:func:`linear_layers` lists the dense layers of a zoo model (q, k, v, o, MLP gate / up / down, LM head) with the
hook sites that hold their inputs and outputs and the nnx state paths of their parameters. :func:`layer_taps`
runs one forward pass that captures the input sites and adds a zero at every output site (a zero ``add`` edit of
:mod:`jaxsafety.models.hooks`), and one backward pass w.r.t. those zeros: the gradient of the summed loss w.r.t.
the zero added at a site is the gradient w.r.t. that site's output. Because the loss is a sum of per-example
losses and examples do not interact in a forward pass, ``g[n]`` is the gradient of example ``n``'s own loss.

Where the layers sit (``blocks.{i}`` sites; ``H`` query heads, ``Hkv`` kv heads, ``Dh`` head dim, ``F`` d_ff):

    name                  input site             output site         kernel path (columns)
    blocks.i.attn.q       blocks.i.ln1           blocks.i.attn.qkv   blocks/i/attn/qkv/kernel  [0, H Dh)
    blocks.i.attn.k       blocks.i.ln1           blocks.i.attn.qkv   blocks/i/attn/qkv/kernel  [H Dh, (H+Hkv) Dh)
    blocks.i.attn.v       blocks.i.ln1           blocks.i.attn.qkv   blocks/i/attn/qkv/kernel  [(H+Hkv) Dh, (H+2Hkv) Dh)
    blocks.i.attn.o       blocks.i.attn.z        blocks.i.attn_out   blocks/i/attn/out/kernel  all
    blocks.i.mlp.up       blocks.i.ln2           blocks.i.mlp.pre    blocks/i/mlp/up/kernel    all   (GELU MLP)
    blocks.i.mlp.gate     blocks.i.ln2           blocks.i.mlp.pre    blocks/i/mlp/up/kernel    [0, F)  (SwiGLU)
    blocks.i.mlp.up       blocks.i.ln2           blocks.i.mlp.pre    blocks/i/mlp/up/kernel    [F, 2F) (SwiGLU)
    blocks.i.mlp.down     blocks.i.mlp.hidden    blocks.i.mlp_out    blocks/i/mlp/down/kernel  all
    lm_head               final_hidden           lm_logits           lm_head/kernel, or embed/embedding
                                                                     (tied, stored transposed [V, D])

q and k are taken at ``attn.qkv``, before RoPE: RoPE is a fixed rotation applied after the projection, so the
projection's own output is the pre-RoPE activation. ``attn.z [B, T, H, Dh]`` is flattened to ``[B, T, H Dh]``,
the order of the output projection's kernel rows.

Shapes: ``Tap.inputs [B, T, d_in]`` (in the model's computation dtype), ``Tap.output_grads [B, T, d_out]``
(float32). Per-token gradients are the taps themselves (the outer product of one token's input and output
gradient); per-example kernel gradients are :func:`per_example_kernel_grads` ``[B, d_in, d_out]`` and bias
gradients :func:`per_example_bias_grads` ``[B, d_out]``. At padding positions the inputs are whatever the model
computes there; their output gradients are zero when the loss ignores padding (the attention mask keeps padding
out of every real token's forward pass).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxsafety.models.hooks import Hooks, add
from jaxsafety.models.transformer import CausalLM

__all__ = [
    "LinearLayer",
    "Tap",
    "layer_taps",
    "linear_layers",
    "per_example_bias_grads",
    "per_example_kernel_grads",
]

Path = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class LinearLayer:
    """One dense layer ``y = x W + b`` of a zoo model, located by hook sites and nnx state paths.

    name:         ``blocks.{i}.attn.{q,k,v,o}``, ``blocks.{i}.mlp.{gate,up,down}`` or ``lm_head``
    input_site:   hook site holding ``x`` (trailing axes flattened to ``d_in``)
    output_site:  hook site holding ``y``; this layer is columns ``columns`` of its last axis
    kernel_path:  nnx ``Param`` state path of the kernel, e.g. ``("blocks", 0, "attn", "qkv", "kernel")``
    columns:      ``[start, stop)`` of the kernel's output columns (fused q/k/v and gate/up kernels hold several
                  layers); for a transposed kernel, its rows
    transposed:   the kernel is stored ``[d_out, d_in]`` (the tied LM head reads the embedding ``[V, D]``)
    bias_path:    nnx state path of the bias (same ``columns``), or None
    """

    name: str
    input_site: str
    output_site: str
    kernel_path: Path
    columns: tuple[int, int]
    d_in: int
    transposed: bool = False
    bias_path: Path | None = None

    @property
    def d_out(self) -> int:
        return self.columns[1] - self.columns[0]

    def kernel(self, params: Any) -> jax.Array:
        """This layer's kernel ``[d_in, d_out]`` read from ``params`` (a model, its ``nnx.State`` or a pytree with
        the same nesting, e.g. a gradient of the params), sliced to ``columns`` and transposed back if stored so."""
        w = _lookup(params, self.kernel_path)
        start, stop = self.columns
        return w[start:stop].T if self.transposed else w[:, start:stop]

    def bias(self, params: Any) -> jax.Array | None:
        """This layer's bias ``[d_out]`` read from ``params`` (as :meth:`kernel`), or None without one."""
        if self.bias_path is None:
            return None
        return _lookup(params, self.bias_path)[self.columns[0] : self.columns[1]]


def _lookup(tree: Any, path: Path) -> jax.Array:
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree, nnx.Param)
    for key in path:
        tree = tree[key]
    return tree[...] if isinstance(tree, nnx.Variable) else jnp.asarray(tree)


def linear_layers(model: CausalLM) -> tuple[LinearLayer, ...]:
    """Every dense layer of a zoo decoder (GPT-2, Llama families), in forward order; see the module docstring for
    the table of sites, paths and column slices. Column slices follow ``transformer.Attention`` (q | k | v, with
    ``Hkv Dh`` columns each for k and v under grouped-query attention) and ``transformer.MLP`` (gate | up)."""
    if not isinstance(model, CausalLM):
        raise ValueError(
            f"model of type {type(model).__name__} is invalid: accepted values are zoo decoders (CausalLM: "
            "GPT2, Llama); for a ScoreModel pass its .backbone"
        )
    cfg = model.config
    h, hk, dh, d, f = cfg.n_heads, cfg.n_kv_heads_, cfg.head_dim_, cfg.d_model, cfg.d_ff_
    out: list[LinearLayer] = []
    for i in range(cfg.n_layers):
        p, path = f"blocks.{i}", ("blocks", i)
        qkv, qkv_bias = (
            (*path, "attn", "qkv", "kernel"),
            (*path, "attn", "qkv", "bias") if cfg.qkv_bias else None,
        )
        for name, cols in (
            ("q", (0, h * dh)),
            ("k", (h * dh, (h + hk) * dh)),
            ("v", ((h + hk) * dh, (h + 2 * hk) * dh)),
        ):
            out.append(
                LinearLayer(f"{p}.attn.{name}", f"{p}.ln1", f"{p}.attn.qkv", qkv, cols, d, bias_path=qkv_bias)
            )
        out.append(
            LinearLayer(
                f"{p}.attn.o",
                f"{p}.attn.z",
                f"{p}.attn_out",
                (*path, "attn", "out", "kernel"),
                (0, d),
                h * dh,
                bias_path=(*path, "attn", "out", "bias") if cfg.out_bias else None,
            )
        )
        up, up_bias = (*path, "mlp", "up", "kernel"), (*path, "mlp", "up", "bias") if cfg.mlp_bias else None
        ups = (("gate", (0, f)), ("up", (f, 2 * f))) if cfg.mlp == "swiglu" else (("up", (0, f)),)
        for name, cols in ups:
            out.append(
                LinearLayer(f"{p}.mlp.{name}", f"{p}.ln2", f"{p}.mlp.pre", up, cols, d, bias_path=up_bias)
            )
        out.append(
            LinearLayer(
                f"{p}.mlp.down",
                f"{p}.mlp.hidden",
                f"{p}.mlp_out",
                (*path, "mlp", "down", "kernel"),
                (0, d),
                f,
                bias_path=(*path, "mlp", "down", "bias") if cfg.mlp_bias else None,
            )
        )
    if cfg.tie_embeddings:
        out.append(
            LinearLayer(
                "lm_head", "final_hidden", "lm_logits", ("embed", "embedding"), (0, cfg.vocab_size), d, True
            )
        )
    else:
        out.append(
            LinearLayer("lm_head", "final_hidden", "lm_logits", ("lm_head", "kernel"), (0, cfg.vocab_size), d)
        )
    return tuple(out)


@struct.dataclass
class Tap:
    """One layer's ``inputs [B, T, d_in]`` and loss gradients w.r.t. its outputs ``output_grads [B, T, d_out]``."""

    inputs: jax.Array
    output_grads: jax.Array
    layer: LinearLayer = struct.field(pytree_node=False)


LossFn = Callable[[jax.Array, Mapping[str, Any]], jax.Array]


def layer_taps(
    model: CausalLM,
    loss_fn: LossFn,
    batch: Mapping[str, Any],
    layers: Sequence[str | LinearLayer] | None = None,
) -> dict[str, Tap]:
    """Inputs and output gradients of the dense layers ``layers`` (names or :class:`LinearLayer`; default all of
    :func:`linear_layers`) for the loss ``sum_n loss_fn(logits, batch)[n]``, in one jitted forward + backward.

    batch:    a mapping with ``tokens [B, T]`` int, optionally ``attention_mask [B, T]`` (1 = real token), and
              anything else ``loss_fn`` reads (targets, weights, a PRNG key for sampled labels, ...).
    loss_fn:  ``(logits [B, T, V] float32, batch) -> per-example losses [B]``. Examples must not interact (no
              batch-level normalisation), so that ``output_grads[n]`` is example ``n``'s own gradient. It is a
              static argument of the jitted program: pass the same function object to reuse the compilation.
    Returns ``{layer name: Tap}`` in the order of ``layers``; ``Tap.layer`` is the layer's :class:`LinearLayer`.
    """
    if not isinstance(batch, Mapping) or "tokens" not in batch:
        raise ValueError(
            "batch is invalid: accepted values are mappings with 'tokens' [B, T] (and optionally "
            "'attention_mask' [B, T] and whatever loss_fn reads)"
        )
    tokens = jnp.asarray(batch["tokens"])
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(
            f"batch['tokens'] of shape {tokens.shape} and dtype {tokens.dtype} is invalid: accepted "
            "values are integer arrays [B, T]"
        )
    mask = batch.get("attention_mask")
    if mask is not None and jnp.shape(mask) != tokens.shape:
        raise ValueError(
            f"batch['attention_mask'] of shape {jnp.shape(mask)} is invalid: accepted values are "
            f"arrays of the tokens' shape {tokens.shape}"
        )
    available = {layer.name: layer for layer in linear_layers(model)}
    if layers is None:
        names = tuple(available)
    else:
        names = tuple(x.name if isinstance(x, LinearLayer) else x for x in layers)
        bad = [n for n in names if n not in available]
        if bad or not names or len(set(names)) != len(names):
            what = repr(bad[0]) if bad else ("()" if not names else "with duplicates")
            raise ValueError(
                f"layers {what} is invalid: accepted values are distinct names of "
                f"linear_layers(model): {', '.join(available)}"
            )
    graphdef, state = nnx.split(model)
    taps = _layer_taps(graphdef, state, loss_fn, dict(batch), names)
    return {n: taps[n] for n in names}  # jit returns dicts with sorted keys


@functools.partial(jax.jit, static_argnames=("graphdef", "loss_fn", "names"))
def _layer_taps(graphdef: Any, state: Any, loss_fn: LossFn, batch: dict[str, Any], names: tuple[str, ...]):
    model = nnx.merge(graphdef, state)
    every = linear_layers(model)
    chosen = [next(layer for layer in every if layer.name == n) for n in names]
    tokens = batch["tokens"]
    b, t = tokens.shape
    # an output site's width is the widest column any layer reads from it (q/k/v share attn.qkv, gate/up mlp.pre)
    width: dict[str, int] = {}
    for layer in every:
        width[layer.output_site] = max(width.get(layer.output_site, 0), layer.columns[1])
    out_sites = tuple(dict.fromkeys(layer.output_site for layer in chosen))
    in_sites = tuple(dict.fromkeys(layer.input_site for layer in chosen))
    zeros = {s: jnp.zeros((b, t, width[s]), jnp.float32) for s in out_sites}

    def total_loss(edits: dict[str, jax.Array]):
        hooks = Hooks.make(capture=in_sites, edits=[add(s, edits[s]) for s in out_sites])
        out = model.forward(tokens, batch.get("attention_mask"), hooks=hooks)
        losses = loss_fn(out.logits, batch)
        if jnp.shape(losses) != (b,):
            raise ValueError(
                f"loss_fn output of shape {jnp.shape(losses)} is invalid: accepted values are "
                f"per-example losses of shape ({b},)"
            )
        return jnp.sum(losses), out.activations

    grads, acts = jax.grad(total_loss, has_aux=True)(zeros)
    taps = {}
    for layer in chosen:
        x = acts[layer.input_site]
        g = grads[layer.output_site][..., layer.columns[0] : layer.columns[1]]
        taps[layer.name] = Tap(x.reshape(b, t, -1), g, layer)
    return taps


def per_example_kernel_grads(taps: Mapping[str, Tap]) -> dict[str, jax.Array]:
    """Per-example kernel gradients ``sum_t x_t^T g_t``: ``[B, d_in, d_out]`` for each layer, ``[B, d_out, d_in]``
    (the stored orientation) for a transposed kernel (the tied LM head's share of the embedding gradient; the
    embedding lookup adds its own, which is not a dense layer's). Float32, full precision."""
    out = {}
    for name, tap in taps.items():
        x, g = tap.inputs.astype(jnp.float32), tap.output_grads.astype(jnp.float32)
        hi = jax.lax.Precision.HIGHEST
        if tap.layer.transposed:
            out[name] = jnp.einsum("bto,bti->boi", g, x, precision=hi)
        else:
            out[name] = jnp.einsum("bti,bto->bio", x, g, precision=hi)
    return out


def per_example_bias_grads(taps: Mapping[str, Tap]) -> dict[str, jax.Array]:
    """Per-example bias gradients ``sum_t g_t [B, d_out]`` of the layers in ``taps`` that have a bias."""
    return {n: tap.output_grads.sum(1) for n, tap in taps.items() if tap.layer.bias_path is not None}
