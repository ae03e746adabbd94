"""Layer taps: per-example kernel and bias gradients rebuilt from (inputs, output gradients) equal
``jax.vmap(jax.grad)`` of the per-example loss w.r.t. the model's parameters; linear_layers covers every kernel of
the model's nnx state exactly once."""

import functools
import itertools
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsafety.models import (
    GPT2,
    GPT2Config,
    Llama,
    LlamaConfig,
    ScoreModel,
    layer_taps,
    linear_layers,
    per_example_bias_grads,
    per_example_kernel_grads,
    positions_from_mask,
)

V, T = 50, 8

MODELS = {
    # tied head, biases everywhere, multi-head attention
    "gpt2": lambda: GPT2(
        GPT2Config(vocab_size=V, max_seq_len=16, d_model=32, n_layers=2, n_heads=4), rngs=nnx.Rngs(0)
    ),
    # untied head, grouped-query attention (4 query heads over 2 kv heads), q/k/v biases (Qwen2-style)
    "llama_gqa_untied": lambda: Llama(
        LlamaConfig(
            vocab_size=V, max_seq_len=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
            attention_bias=True,
        ),
        rngs=nnx.Rngs(1),
    ),
    # tied head, 4 query heads over 1 kv head, head_dim != d_model / n_heads, MLP biases
    "llama_gqa_tied": lambda: Llama(
        LlamaConfig(
            vocab_size=V, max_seq_len=16, d_model=16, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=6, d_ff=24,
            mlp_bias=True, tie_embeddings=True,
        ),
        rngs=nnx.Rngs(2),
    ),
}  # fmt: skip


TRACES: list[int] = []  # traces of the jitted taps program (the loss runs once per trace)


def weighted_next_token_loss(logits, batch):
    """Per-example sum of weighted next-token cross-entropies over real (non-padding) target positions [B]."""
    TRACES.append(1)
    tokens, mask = batch["tokens"], batch["attention_mask"].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits[:, :-1], -1)
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    return jnp.sum(nll * batch["weights"][:, 1:] * mask[:, 1:] * mask[:, :-1], -1)


def _batch(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    tokens = jax.random.randint(k1, (4, T), 0, V)
    mask = np.ones((4, T), np.int32)
    mask[1, :3] = 0  # left padding
    mask[2, 5:] = 0  # right padding
    mask[3, :1] = 0
    weights = jax.random.uniform(k2, (4, T), minval=0.5, maxval=1.5)
    return {"tokens": tokens, "attention_mask": jnp.asarray(mask), "weights": weights}


def _flat(tree):
    """{nnx path: array} of an nnx.State (params or a gradient of them)."""
    return {p: np.asarray(v[...] if isinstance(v, nnx.Variable) else v) for p, v in nnx.to_flat_state(tree)}


def _per_example_grads(model, batch):
    """Reference: jax.vmap over examples of jax.grad of one example's loss w.r.t. all parameters, and w.r.t. a
    perturbation ``delta [V, D]`` of the LM head's weights added densely (``logits + hidden @ delta^T``): for a
    tied head that is the head's share of the embedding gradient (the lookup's share is not a dense layer's)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def one(p, delta, ex):
        m = nnx.merge(graphdef, p, rest)
        ex = jax.tree.map(lambda a: a[None], ex)
        out = m.forward(ex["tokens"], ex["attention_mask"])
        logits = out.logits + jnp.einsum(
            "btd,vd->btv", out.hidden, delta, precision=jax.lax.Precision.HIGHEST
        )
        return weighted_next_token_loss(logits, ex)[0]

    grad = jax.jit(jax.vmap(jax.grad(one, argnums=(0, 1)), in_axes=(None, None, 0)))
    g_params, g_head = grad(params, jnp.zeros((V, model.config.d_model)), batch)
    return _flat(g_params), np.asarray(g_head)


@functools.cache
def _full_taps(name):
    model, batch = MODELS[name](), _batch()
    return model, batch, layer_taps(model, weighted_next_token_loss, batch)


@pytest.mark.parametrize("name", list(MODELS))
def test_per_example_grads_from_taps_match_vmapped_grad(name):
    model, batch, taps = _full_taps(name)
    layers = linear_layers(model)
    assert list(taps) == [layer.name for layer in layers]
    ref, ref_head = _per_example_grads(model, batch)
    kernels = per_example_kernel_grads(taps)
    biases = per_example_bias_grads(taps)
    n_bias = 0
    for layer in layers:
        tap = taps[layer.name]
        assert tap.layer == layer
        assert tap.inputs.shape == (4, T, layer.d_in) and tap.output_grads.shape == (4, T, layer.d_out)
        start, stop = layer.columns
        got = np.asarray(kernels[layer.name])
        if layer.transposed:
            want = ref_head[:, start:stop]
            assert got.shape == (4, layer.d_out, layer.d_in)
        else:
            want = ref[layer.kernel_path][:, :, start:stop]
            assert got.shape == (4, layer.d_in, layer.d_out)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4, err_msg=layer.name)
        if layer.bias_path is not None:
            n_bias += 1
            want_b = ref[layer.bias_path][:, start:stop]
            np.testing.assert_allclose(biases[layer.name], want_b, atol=1e-5, rtol=1e-4, err_msg=layer.name)
    assert set(biases) == {layer.name for layer in layers if layer.bias_path is not None}
    assert n_bias == {"gpt2": 12, "llama_gqa_untied": 6, "llama_gqa_tied": 6}[name]
    # the untied head's kernel gradient is also the dense reference's: the two references agree
    if not model.config.tie_embeddings:
        np.testing.assert_allclose(
            ref[("lm_head", "kernel")], ref_head.transpose(0, 2, 1), atol=1e-5, rtol=1e-4
        )
    # padding positions pass no gradient, and the gradients are not trivially zero elsewhere
    pad = ~np.asarray(batch["attention_mask"], bool)
    for tap in taps.values():
        assert np.all(np.asarray(tap.output_grads)[pad] == 0)
    assert np.abs(np.asarray(taps["blocks.0.attn.k"].output_grads)).max() > 1e-6


@pytest.mark.parametrize("name", list(MODELS))
def test_linear_layers_cover_every_kernel_exactly_once(name):
    model = MODELS[name]()
    params = _flat(nnx.state(model, nnx.Param))
    layers = linear_layers(model)
    assert len({layer.name for layer in layers}) == len(layers)
    by_kernel = defaultdict(list)
    for layer in layers:
        assert layer.kernel_path in params, layer.kernel_path
        by_kernel[layer.kernel_path].append(layer)
    # every kernel of the model, plus the embedding when the head is tied to it
    kernels = {p for p in params if p[-1] == "kernel"}
    tied = model.config.tie_embeddings
    assert set(by_kernel) == kernels | ({("embed", "embedding")} if tied else set())
    for path, group in by_kernel.items():
        shape = params[path].shape
        n_in, n_out = shape[::-1] if group[0].transposed else shape
        # the column slices tile [0, n_out) without gaps or overlaps
        cols = sorted(layer.columns for layer in group)
        assert (
            cols[0][0] == 0
            and cols[-1][1] == n_out
            and all(a[1] == b[0] for a, b in itertools.pairwise(cols))
        )
        assert all(layer.d_in == n_in for layer in group)
        for layer in group:
            np.testing.assert_array_equal(
                layer.kernel(model),
                (params[path].T if layer.transposed else params[path])[:, slice(*layer.columns)],
            )
    # biases: exactly the biases of those kernels' modules, sliced with the same columns
    biases = {p for p in params if p[-1] == "bias" and (*p[:-1], "kernel") in params}
    assert {layer.bias_path for layer in layers if layer.bias_path is not None} == biases
    for layer in layers:
        if layer.bias_path is not None:
            assert layer.bias_path[:-1] == layer.kernel_path[:-1]
            assert layer.bias(model).shape == (layer.d_out,)
    # GQA: k and v have n_kv_heads * head_dim columns
    cfg = model.config
    k = next(layer for layer in layers if layer.name == "blocks.1.attn.k")
    assert k.d_out == cfg.n_kv_heads_ * cfg.head_dim_


def _rotate_half_rope(x, positions, inv_freq):
    """HF Llama RoPE of x [B, T, H, Dh] at positions [B, T] (float64 numpy)."""
    ang = positions[..., None] * inv_freq
    cos, sin = (
        np.concatenate([np.cos(ang)] * 2, -1)[:, :, None],
        np.concatenate([np.sin(ang)] * 2, -1)[:, :, None],
    )
    half = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., half:], x[..., :half]], -1) * sin


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa_untied"])
def test_layer_names_follow_the_forward_pass(name):
    """q / k / v / gate / up / o / down / lm_head are what their names say: recompute attention, the MLP and the
    logits densely (float64) from the taps' inputs and the layers' kernel slices, and compare with the inputs the
    taps captured downstream (o's input z, down's input) and with the model's logits."""
    model, batch, taps = _full_taps(name)
    cfg, layers = model.config, {layer.name: layer for layer in linear_layers(model)}
    b, h, hk, dh = 4, cfg.n_heads, cfg.n_kv_heads_, cfg.head_dim_
    mask = np.asarray(batch["attention_mask"], bool)

    def project(n):
        x = np.asarray(taps[n].inputs, np.float64) @ np.asarray(layers[n].kernel(model), np.float64)
        bias = layers[n].bias(model)
        return x if bias is None else x + np.asarray(bias, np.float64)

    q = project("blocks.0.attn.q").reshape(b, T, h, dh)
    k = project("blocks.0.attn.k").reshape(b, T, hk, dh)
    v = project("blocks.0.attn.v").reshape(b, T, hk, dh)
    if cfg.positional == "rope":
        pos = np.asarray(positions_from_mask(batch["attention_mask"]), np.float64)
        inv = np.asarray(cfg.rope_inv_freq, np.float64)
        q, k = _rotate_half_rope(q, pos, inv), _rotate_half_rope(k, pos, inv)
    k, v = (
        np.repeat(k, h // hk, axis=2),
        np.repeat(v, h // hk, axis=2),
    )  # query head j reads kv head j // (h/hk)
    scores = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(dh)
    allowed = mask[:, None, None, :] & np.tril(np.ones((T, T), bool))
    scores = np.where(allowed, scores, -1e30)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    z = np.einsum("bhts,bshd->bthd", probs, v).reshape(b, T, h * dh)
    np.testing.assert_allclose(taps["blocks.0.attn.o"].inputs[mask], z[mask], atol=1e-5)

    act = jax.nn.silu if cfg.mlp == "swiglu" else functools.partial(jax.nn.gelu, approximate=True)
    up = project("blocks.0.mlp.up")
    hidden = act(project("blocks.0.mlp.gate")) * up if cfg.mlp == "swiglu" else act(up)
    np.testing.assert_allclose(taps["blocks.0.mlp.down"].inputs, hidden, atol=1e-5)
    logits = model(batch["tokens"], batch["attention_mask"])
    np.testing.assert_allclose(project("lm_head"), logits, atol=1e-5)


def test_layer_subset_and_one_compilation():
    model, batch, full = _full_taps("llama_gqa_untied")
    n = len(TRACES)
    other = layer_taps(model, weighted_next_token_loss, _batch(1))  # new values, same shapes: no retrace
    assert len(TRACES) == n
    assert not np.allclose(other["lm_head"].output_grads, full["lm_head"].output_grads)
    some = layer_taps(model, weighted_next_token_loss, batch, layers=["lm_head", linear_layers(model)[1]])
    assert list(some) == ["lm_head", "blocks.0.attn.k"]
    for name, tap in some.items():
        np.testing.assert_allclose(tap.inputs, full[name].inputs, atol=1e-6)
        np.testing.assert_allclose(tap.output_grads, full[name].output_grads, atol=1e-6)


def test_bad_inputs_raise():
    model = MODELS["gpt2"]()
    batch = _batch()
    with pytest.raises(
        ValueError, match=r"layers 'blocks.0.attn.qkv' is invalid: accepted values are distinct"
    ):
        layer_taps(model, weighted_next_token_loss, batch, layers=["blocks.0.attn.qkv"])
    with pytest.raises(ValueError, match=r"layers with duplicates is invalid"):
        layer_taps(model, weighted_next_token_loss, batch, layers=["lm_head", "lm_head"])
    with pytest.raises(
        ValueError, match=r"loss_fn output of shape \(\) is invalid: accepted values are per-example"
    ):
        layer_taps(model, lambda lg, b: weighted_next_token_loss(lg, b).sum(), batch)
    with pytest.raises(ValueError, match=r"batch is invalid: accepted values are mappings with 'tokens'"):
        layer_taps(model, weighted_next_token_loss, {"ids": batch["tokens"]})
    with pytest.raises(ValueError, match=r"batch\['attention_mask'\] of shape \(4, 7\) is invalid"):
        layer_taps(
            model, weighted_next_token_loss, {**batch, "attention_mask": batch["attention_mask"][:, 1:]}
        )
    with pytest.raises(ValueError, match=r"model of type ScoreModel is invalid"):
        linear_layers(ScoreModel(model, rngs=nnx.Rngs(0)))
