"""Model-zoo core: masking, KV cache, activation hooks, score heads, dtypes, config validation.

HF logits parity lives in test_hf.py; here every check is against an independent computation (the unpadded
sequence, weight surgery, a closed-form gradient, a re-run on other inputs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsafety.config import ConfigError
from jaxsafety.models import (
    GPT2,
    GPT2Config,
    Hooks,
    Llama,
    LlamaConfig,
    RopeScaling,
    ScoreModel,
    add,
    project_out,
    replace,
    scale,
)
from jaxsafety.models.hooks import Edit

V = 97


@nnx.jit
def fwd(model, tokens, mask=None, cache=None, hooks=None):
    """Jitted forward (eager op-by-op dispatch would compile every primitive per shape and be slow)."""
    return model.forward(tokens, mask, cache=cache, hooks=hooks)


def run(model, tokens, mask=None):
    return fwd(model, tokens, mask).logits


def _gpt2(**kw):
    return GPT2(
        GPT2Config(vocab_size=V, max_seq_len=64, d_model=32, n_layers=2, n_heads=4, **kw), rngs=nnx.Rngs(0)
    )


def _llama(**kw):
    cfg = dict(vocab_size=V, max_seq_len=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48)
    cfg.update(kw)
    return Llama(LlamaConfig(**cfg), rngs=nnx.Rngs(1))


MODELS = {
    "gpt2": _gpt2,
    "llama_gqa": _llama,
    "llama3_rope_tied_bias": lambda: _llama(
        rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 16), tie_embeddings=True, attention_bias=True
    ),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return MODELS[request.param]()


def _toks(b, t, seed=0):
    return jax.random.randint(jax.random.key(seed), (b, t), 1, V)


def test_left_and_right_padding_match_unpadded(model):
    toks = _toks(2, 9)
    ref = run(model, toks)
    pad = jnp.zeros((2, 4), jnp.int32)
    ones, zeros = jnp.ones((2, 9)), jnp.zeros((2, 4))
    left = run(model, jnp.concatenate([pad, toks], 1), jnp.concatenate([zeros, ones], 1))
    right = run(model, jnp.concatenate([toks, pad], 1), jnp.concatenate([ones, zeros], 1))
    np.testing.assert_allclose(left[:, 4:], ref, atol=1e-5)
    np.testing.assert_allclose(right[:, :9], ref, atol=1e-5)
    assert np.isfinite(np.asarray(left)).all()  # fully-masked pad rows give no NaNs


def test_mixed_padding_in_one_batch(model):
    a, b = _toks(1, 6, 1), _toks(1, 8, 2)
    batch = jnp.concatenate([jnp.concatenate([jnp.zeros((1, 2), jnp.int32), a], 1), b], 0)
    mask = jnp.array([[0, 0] + [1] * 6, [1] * 8])
    out = run(model, batch, mask)
    np.testing.assert_allclose(out[0, 2:], run(model, a)[0], atol=1e-5)
    np.testing.assert_allclose(out[1], run(model, b)[0], atol=1e-5)


def test_kv_cache_prefill_and_decode_match_full_forward(model):
    toks = _toks(2, 10, 3)
    mask = jnp.ones((2, 10)).at[0, :3].set(0)  # row 0 left-padded
    ref = run(model, toks, mask)
    cache = model.init_cache(2, 16)
    out = fwd(model, toks[:, :6], mask[:, :6], cache=cache)
    logits = [out.logits]
    cache = out.cache
    for i in range(6, 10):
        o = fwd(model, toks[:, i : i + 1], mask[:, i : i + 1], cache=cache)
        cache = o.cache
        logits.append(o.logits)
    got = jnp.concatenate(logits, 1)
    np.testing.assert_allclose(got[0, 3:], ref[0, 3:], atol=1e-5)
    np.testing.assert_allclose(got[1], ref[1], atol=1e-5)
    assert int(cache.index) == 10 and cache.lengths().tolist() == [7, 10]


def test_shared_prefix_cache_repeat(model):
    prefix, conts = _toks(1, 5, 4), _toks(3, 4, 5)
    out = fwd(model, prefix, cache=model.init_cache(1, 9))
    scored = fwd(model, conts, cache=out.cache.repeat(3)).logits
    full = model(jnp.concatenate([jnp.repeat(prefix, 3, 0), conts], 1))
    np.testing.assert_allclose(scored, full[:, 5:], atol=1e-5)


def test_capture_matches_outputs(model):
    toks = _toks(2, 7)
    last = f"blocks.{model.config.n_layers - 1}.resid_post"
    out = fwd(model, toks, hooks=Hooks.make(capture=["blocks.*.resid_post", "final_hidden"]))
    assert set(out.activations) == {"blocks.0.resid_post", "blocks.1.resid_post", "final_hidden"}
    np.testing.assert_array_equal(out.activations["final_hidden"], out.hidden)
    np.testing.assert_allclose(model.final_norm(out.activations[last]), out.hidden, atol=1e-6)
    assert out.activations["blocks.0.resid_post"].shape == (2, 7, 32)
    probs = fwd(model, toks, hooks=Hooks.make(capture="blocks.0.attn.probs")).activations[
        "blocks.0.attn.probs"
    ]
    assert probs.shape == (2, 4, 7, 7)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert float(jnp.triu(probs, 1).max()) == 0.0  # causal


def test_add_edit_equals_manual_head_on_shifted_residual(model):
    toks = _toks(2, 7)
    last = f"blocks.{model.config.n_layers - 1}.resid_post"
    v = jax.random.normal(jax.random.key(9), (32,))
    base = fwd(model, toks, hooks=Hooks.make(capture=last)).activations[last]
    got = fwd(model, toks, hooks=Hooks.make(edits=add(last, v))).logits
    np.testing.assert_allclose(got, model.logits(model.final_norm(base + v)), atol=1e-5)


def test_project_out_removes_the_direction_and_masks_apply(model):
    toks = _toks(2, 7)
    site = "blocks.0.resid_post"
    d = jax.random.normal(jax.random.key(3), (32,))
    mask = jnp.array([1, 1, 1, 0, 0, 0, 0], bool)
    out = fwd(model, toks, hooks=Hooks.make(capture=site, edits=project_out(site, d, mask=mask)))
    base = fwd(model, toks, hooks=Hooks.make(capture=site)).activations[site]
    x = out.activations[site]
    u = d / jnp.linalg.norm(d)
    np.testing.assert_allclose(x[:, :3] @ u, 0.0, atol=1e-5)
    np.testing.assert_array_equal(x[:, 3:], base[:, 3:])
    np.testing.assert_allclose(x[:, :3], base[:, :3] - (base[:, :3] @ u)[..., None] * u, atol=1e-5)


def test_replace_is_activation_patching(model):
    """Patching block 0's input with another sequence's embeddings reproduces that sequence's logits."""
    a, b = _toks(1, 6, 11), _toks(1, 6, 12)
    emb_b = fwd(model, b, hooks=Hooks.make(capture="blocks.0.resid_pre")).activations["blocks.0.resid_pre"]
    patched = fwd(model, a, hooks=Hooks.make(edits=replace("blocks.0.resid_pre", emb_b))).logits
    np.testing.assert_allclose(patched, run(model, b), atol=1e-5)


def test_head_ablation_equals_weight_surgery(model):
    toks = _toks(2, 7)
    h, dh = model.config.n_heads, model.config.head_dim_
    factor = jnp.ones((h, 1)).at[2].set(0.0)
    ablated = fwd(model, toks, hooks=Hooks.make(edits=scale("blocks.1.attn.z", factor))).logits
    surgery = nnx.clone(model)
    k = surgery.blocks[1].attn.out.kernel
    k[...] = k[...].at[2 * dh : 3 * dh].set(0.0)
    np.testing.assert_allclose(ablated, run(surgery, toks), atol=1e-5)


def test_gradient_through_a_zero_edit_is_the_closed_form(model):
    """d loss / d delta at final_hidden = (softmax(logits) - onehot) @ W_head^T (closed form for a linear head)."""
    toks = _toks(1, 5)
    target = _toks(1, 5, 7)
    graphdef, state = nnx.split(model)

    def loss(delta):
        m = nnx.merge(graphdef, state)
        logits = m.forward(toks, hooks=Hooks.make(edits=add("final_hidden", delta))).logits
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None], -1).sum()

    g = jax.jit(jax.grad(loss))(jnp.zeros((1, 5, 32)))
    logits = run(model, toks)
    w = model.embed.embedding[...] if model.config.tie_embeddings else model.lm_head.kernel[...].T  # [V, D]
    expected = (jax.nn.softmax(logits) - jax.nn.one_hot(target, V)) @ w
    np.testing.assert_allclose(g, expected, atol=1e-5)


def test_hooks_under_jit_do_not_recompile_for_new_values(model):
    graphdef, state = nnx.split(model)
    traces = []

    @jax.jit
    def steered(state, toks, vec):
        traces.append(1)
        m = nnx.merge(graphdef, state)
        return m.forward(toks, hooks=Hooks.make(edits=add("blocks.0.resid_post", vec))).logits

    toks = _toks(1, 4)
    a = steered(state, toks, jnp.zeros(32))
    b = steered(state, toks, jnp.ones(32))
    assert len(traces) == 1
    np.testing.assert_allclose(a, run(model, toks), atol=1e-5)
    assert not np.allclose(a, b)


def test_unknown_site_and_bad_edit_kind():
    m = _gpt2()
    with pytest.raises(ValueError, match=r"hook site 'blocks.7.resid_post' matches no site of this model"):
        fwd(m, _toks(1, 3), hooks=Hooks.make(edits=add("blocks.7.resid_post", jnp.zeros(32))))
    with pytest.raises(ValueError, match=r"hook site 'nope\*' matches no site"):
        fwd(m, _toks(1, 3), hooks=Hooks.make(capture="nope*"))
    with pytest.raises(ValueError, match=r"Edit.kind='steer' is invalid: accepted values are one of add"):
        Edit(site="final_hidden", kind="steer", value=0.0)
    assert "blocks.1.mlp.hidden" in m.site_names()


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa"])
def test_score_model_pools_last_real_token(name):
    sm = ScoreModel(MODELS[name](), num_labels=2, rngs=nnx.Rngs(5), keep_lm_head=True)
    a = _toks(1, 6, 21)
    ref = fwd(sm, a)
    np.testing.assert_allclose(ref.scores, ref.token_scores[:, -1], atol=0)
    left = fwd(
        sm, jnp.concatenate([jnp.zeros((1, 3), jnp.int32), a], 1), jnp.array([[0, 0, 0] + [1] * 6])
    ).scores
    right = fwd(
        sm, jnp.concatenate([a, jnp.zeros((1, 3), jnp.int32)], 1), jnp.array([[1] * 6 + [0, 0, 0]])
    ).scores
    np.testing.assert_allclose(left, ref.scores, atol=1e-5)
    np.testing.assert_allclose(right, ref.scores, atol=1e-5)
    assert ref.scores.shape == (1, 2) and ref.logits.shape == (1, 6, V)


def test_bfloat16_compute_keeps_float32_params():
    f32 = _llama()
    bf16 = _llama(dtype="bfloat16")
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    toks = _toks(2, 8)
    a, b = run(f32, toks), run(bf16, toks)
    assert b.dtype == jnp.float32  # logits are float32
    np.testing.assert_allclose(b, a, atol=0.1)
    assert float(jnp.abs(a - b).max()) > 0  # really computed in lower precision
    cache = bf16.init_cache(1, 4)
    assert cache.keys[0].dtype == jnp.bfloat16


def test_rope_scaling_frequencies_closed_form():
    from jaxsafety.models.transformer import rope_frequencies

    base = np.asarray(rope_frequencies(16, 10000.0))
    np.testing.assert_allclose(base, 1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16), rtol=1e-6)
    lin = np.asarray(rope_frequencies(16, 10000.0, {"rope_type": "linear", "factor": 4.0}))
    np.testing.assert_allclose(lin, base / 4.0, rtol=1e-6)
    sc = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    l3 = np.asarray(rope_frequencies(16, 10000.0, sc))
    wavelen = 2 * np.pi / base
    hi, lo = wavelen < 64 / 4, wavelen > 64 / 1
    np.testing.assert_allclose(l3[hi], base[hi], rtol=1e-6)  # short wavelengths kept
    np.testing.assert_allclose(l3[lo], base[lo] / 8.0, rtol=1e-6)  # long wavelengths scaled
    mid = ~hi & ~lo
    assert mid.any() and np.all((l3[mid] < base[mid]) & (l3[mid] > base[mid] / 8.0))


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (
            GPT2Config,
            {"d_model": 30, "n_heads": 4},
            r"n_heads=4 is invalid: accepted values are divisors of d_model",
        ),
        (GPT2Config, {"dtype": "float64"}, r"dtype='float64' is invalid: accepted values are one of"),
        (
            LlamaConfig,
            {"n_heads": 8, "n_kv_heads": 3},
            r"n_kv_heads=3 is invalid: accepted values are divisors",
        ),
        (LlamaConfig, {"vocab_size": 0}, r"vocab_size=0 is invalid: accepted values are integers >= 1"),
        (RopeScaling, {"rope_type": "yarn"}, r"rope_scaling.rope_type='yarn' is invalid"),
    ],
)
def test_config_validation(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)
