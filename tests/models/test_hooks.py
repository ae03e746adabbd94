"""Hook edits at absolute positions, shape errors, the jitted capture helper and blockwise attention under hooks.

Every check is against an independent computation: the same edit written out by hand on a captured activation,
the uncached forward over the whole sequence, the eager (op-by-op) forward, the hook-free program's structure.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsafety.models import Hooks, Llama, LlamaConfig, add, capture, replace, scale
from jaxsafety.models.generate import _capture_jit
from jaxsafety.models.hooks import Edit, HookContext, position_axis

V, D = 61, 16


@pytest.fixture(scope="module")
def llama():
    cfg = LlamaConfig(vocab_size=V, max_seq_len=256, d_model=D, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=32)
    return Llama(cfg, rngs=nnx.Rngs(3))


@nnx.jit
def fwd(model, tokens, mask=None, cache=None, hooks=None):
    return model.forward(tokens, mask, cache=cache, hooks=hooks)


def _toks(b, t, seed=0):
    return jax.random.randint(jax.random.key(seed), (b, t), 1, V)


# ----------------------------------------------------------------------------------------------------------------
# absolute positions with a cache


def test_edits_at_absolute_columns_with_cache_equal_uncached_forward(llama):
    """Prefill 5 columns then decode 3 one at a time with a mask [B, 8], a per-position value [8, D] and a per-row
    per-position value [B, 8, D]: the logits equal one uncached forward over all 8 columns with the same edits."""
    b, t, p = 2, 8, 5
    toks = _toks(b, t, 1)
    rng = np.random.default_rng(0)
    mask = jnp.asarray(rng.random((b, t)) < 0.5)
    per_pos = jnp.asarray(rng.normal(size=(t, D)), jnp.float32)
    per_row_pos = jnp.asarray(rng.normal(size=(b, t, D)), jnp.float32)
    factor = jnp.asarray(1.0 + rng.random((b, t, 1)), jnp.float32)
    hooks = Hooks.make(
        edits=[
            add("blocks.0.resid_post", per_pos, mask=mask),
            add("blocks.1.resid_mid", per_row_pos),
            scale("blocks.1.mlp.hidden", factor, mask=mask[0]),
        ]
    )
    full = fwd(llama, toks, hooks=hooks).logits
    out = fwd(llama, toks[:, :p], cache=llama.init_cache(b, t), hooks=hooks)
    got, cache = [out.logits], out.cache
    for i in range(p, t):
        out = fwd(llama, toks[:, i : i + 1], cache=cache, hooks=hooks)
        got.append(out.logits)
        cache = out.cache
    np.testing.assert_allclose(jnp.concatenate(got, 1), full, atol=1e-5)
    plain = fwd(llama, toks).logits
    assert float(jnp.abs(full - plain).max()) > 0.1  # the edits mattered


def test_masked_edit_equals_hand_written_edit():
    """Edit.apply on plain arrays: masks [B, L] (bool) and [L] (float), a per-row value [B, 1, D], a chunk at a
    traced offset, and attn.probs, whose position axis is the query axis 2."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 6, D)), jnp.float32)
    site = "blocks.0.resid_post"
    v = jnp.asarray(rng.normal(size=(D,)), jnp.float32)
    m = jnp.array([[1, 0, 1, 0, 0, 1], [0, 1, 1, 1, 0, 0]], bool)
    np.testing.assert_allclose(add(site, v, mask=m).apply(x), jnp.where(m[..., None], x + v, x), atol=1e-6)
    soft = jnp.linspace(0.0, 1.0, 6)
    np.testing.assert_allclose(add(site, v, mask=soft).apply(x), x + soft[None, :, None] * v, atol=1e-6)
    rows = jnp.asarray(rng.normal(size=(2, 1, D)), jnp.float32)
    np.testing.assert_allclose(scale(site, rows).apply(x), x * rows, atol=1e-6)
    # a 2-token chunk at absolute columns 3, 4 of a 10-column sequence (offset traced, as cache.index)
    long_mask = jnp.asarray(rng.random((2, 10)) < 0.5)
    per_pos = jnp.asarray(rng.normal(size=(10, D)), jnp.float32)
    chunk = x[:, :2]
    got = jax.jit(lambda c, o: add(site, per_pos, mask=long_mask).apply(c, offset=o, slots=10))(chunk, 3)
    want = jnp.where(long_mask[:, 3:5, None], chunk + per_pos[3:5], chunk)
    np.testing.assert_allclose(got, want, atol=1e-6)

    assert position_axis("blocks.0.attn.probs") == 2 and position_axis(site) == 1
    probs = jnp.asarray(rng.random((2, 4, 6, 6)), jnp.float32)  # [B, H, T, S]
    q_rows = jnp.array([0, 0, 0, 1, 1, 0], bool)
    edited = replace("blocks.1.attn.probs", jnp.full((6,), 1.0 / 6), mask=q_rows).apply(probs)
    np.testing.assert_allclose(edited[:, :, 3:5], 1.0 / 6, atol=1e-7)
    np.testing.assert_array_equal(edited[:, :, ~q_rows], probs[:, :, ~q_rows])


# ----------------------------------------------------------------------------------------------------------------
# shape errors


def test_edit_that_would_change_the_shape_raises(llama):
    toks = _toks(2, 4)
    cache = llama.init_cache(2, 8)
    site = "blocks.0.resid_post"
    # the bug this guards: a [B, P] mask in a one-token decode step broadcast [B, 1, D] to [B, P, D]
    with pytest.raises(
        ValueError, match=r"edit add\('blocks.0.resid_post'\).*\(2, 1, 16\).*mask of shape \(2, 4\)"
    ):
        fwd(
            llama,
            toks[:, :1],
            cache=cache,
            hooks=Hooks.make(edits=add(site, jnp.ones(D), mask=jnp.ones((2, 4)))),
        )
    with pytest.raises(ValueError, match=r"value of shape \(3, 16\) has 3 positions"):
        fwd(llama, toks, hooks=Hooks.make(edits=add(site, jnp.ones((3, D)))))
    with pytest.raises(ValueError, match=r"from \(2, 4, 16\) to incompatible: value \(3, 1, 16\) does not"):
        fwd(llama, toks, hooks=Hooks.make(edits=add(site, jnp.ones((3, 1, D)))))
    with pytest.raises(
        ValueError, match=r"edit fn\('blocks.0.resid_post'\) would change .* \(2, 4, 16\) to \(2, 1, 16\)"
    ):
        fwd(llama, toks, hooks=Hooks.make(edits=Edit(site=site, kind="fn", fn=lambda x, v: x[:, :1])))
    with pytest.raises(ValueError, match=r"masks are \[B, L\] or \[L\]"):
        fwd(llama, toks, hooks=Hooks.make(edits=add(site, jnp.ones(D), mask=jnp.ones((2, 4, 1)))))
    with pytest.raises(ValueError, match=r"from \(2, 4, 16\) to incompatible: mask as \(3, 4, 1\)"):
        fwd(llama, toks, hooks=Hooks.make(edits=add(site, jnp.ones(D), mask=jnp.ones((3, 4)))))


# ----------------------------------------------------------------------------------------------------------------
# jitted capture


def test_capture_is_jitted_once_and_equals_the_eager_forward(llama):
    sites = ("blocks.*.resid_post", "blocks.0.attn.z")
    toks = _toks(3, 7, 4)
    mask = jnp.ones((3, 7), jnp.int32).at[0, :2].set(0)
    v = jax.random.normal(jax.random.key(0), (D,))
    before = _capture_jit._cache_size()
    got = capture(llama, toks, mask, sites, edits=[add("blocks.0.resid_pre", v)])
    again = capture(llama, _toks(3, 7, 5), mask, sites, edits=[add("blocks.0.resid_pre", 2 * v)])
    assert _capture_jit._cache_size() - before == 1  # new token and edit values reuse the program
    eager = llama.forward(toks, mask, hooks=Hooks.make(capture=sites, edits=add("blocks.0.resid_pre", v)))
    assert (
        set(got)
        == set(eager.activations)
        == {"blocks.0.resid_post", "blocks.1.resid_post", "blocks.0.attn.z"}
    )
    for site, x in eager.activations.items():
        np.testing.assert_allclose(got[site], x, atol=1e-5)
    assert not np.allclose(again["blocks.1.resid_post"], got["blocks.1.resid_post"])
    with pytest.raises(ValueError, match="hook site 'nope' matches no site"):
        capture(llama, toks, mask, "nope")


# ----------------------------------------------------------------------------------------------------------------
# blockwise causal attention stays on unless attn.probs is hooked


def _dots(model, hooks, t=128):
    graphdef, state = nnx.split(model)
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s).forward(x, hooks=hooks).logits)(
        state, jnp.ones((1, t), jnp.int32)
    )
    return _count(jaxpr.jaxpr, "dot_general")


def _count(jaxpr, name: str) -> int:
    """Equations named ``name`` in ``jaxpr`` and its sub-jaxprs (jnp.einsum, custom_jvp, ... nest them)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == name
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            n += _count(sub, name)
    return n


def test_hooks_off_attn_probs_keep_blockwise_attention(llama):
    ctx = HookContext(Hooks.make(capture="blocks.1.*", edits=add("blocks.0.resid_post", jnp.zeros(D))))
    assert ctx.touches("blocks.1.attn.probs") and ctx.touches("blocks.0.resid_post")
    assert not ctx.touches("blocks.0.attn.probs") and not HookContext(None).touches("final_hidden")
    plain = _dots(llama, None)
    steer = Hooks.make(capture="blocks.*.resid_post", edits=add("blocks.0.resid_post", jnp.zeros(D)))
    assert _dots(llama, steer) == plain  # same program: 2 query blocks per layer at 128 positions
    probs0 = _dots(llama, Hooks.make(capture="blocks.0.attn.probs"))
    # 2 blocks of (scores, probs @ v) per layer -> one pair in layer 0 only
    assert probs0 == plain - 2
    toks = _toks(1, 128, 6)
    np.testing.assert_allclose(
        fwd(llama, toks, hooks=steer).logits, fwd(llama, toks).logits, atol=1e-5
    )  # the blockwise path with hooks computes the same attention
    probs = fwd(llama, toks, hooks=Hooks.make(capture="blocks.0.attn.probs")).activations[
        "blocks.0.attn.probs"
    ]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_per_row_constructors_insert_the_position_axis():
    """``per_row=True`` turns a [B, D] value into the per-row form [B, 1, D] ([B, H, 1, S] at attn.probs); on a
    [B, T, D] activation it equals adding row b's vector at every position of row b (numpy broadcast)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    v = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(add("blocks.0.resid_post", v, per_row=True).apply(x), x + v[:, None], atol=0)
    np.testing.assert_allclose(scale("blocks.0.resid_post", v, per_row=True).apply(x), x * v[:, None], atol=0)
    np.testing.assert_allclose(
        replace("blocks.0.resid_post", v, per_row=True).apply(x), np.broadcast_to(v[:, None], x.shape), atol=0
    )
    probs = jnp.asarray(rng.random(size=(3, 2, 5, 5)), jnp.float32)
    f = rng.random(size=(3, 2, 5)).astype(np.float32)  # [B, H, S]: per row, the same for every query
    np.testing.assert_allclose(
        scale("blocks.0.attn.probs", f, per_row=True).apply(probs), probs * f[:, :, None], atol=0
    )
    with pytest.raises(ValueError, match="per_row=True needs a value with a leading row axis"):
        add("blocks.0.resid_post", 1.0, per_row=True)
