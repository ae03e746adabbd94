"""Derivatives of the decoder's CPU-tuned pieces against plain autodiff.

``_matmul`` (every projection and the tied LM head on CPU) has a custom JVP that reorders the weight gradient for
XLA:CPU, and LayerNorm a custom JVP that keeps fewer residuals; here their first and second derivatives,
forward and reverse mode, are checked against autodiff of the plain formulas in float64, and the whole model's
loss gradient against the same model with plain ``jax.lax.dot_general`` projections and a plain ``hidden @ E^T``
head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsafety.models import GPT2, GPT2Config, Llama, LlamaConfig, lean_backward, transformer
from jaxsafety.models.transformer import _layer_norm, _lean_mlp, _matmul
from jaxsafety.train.lm import next_token_loss


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "transposed"),
    [
        ((2, 5, 3), (3, 7), False),  # widening: weight gradient through x^T
        ((2, 5, 7), (7, 3), False),  # narrowing: plain 2-D weight product
        ((4, 3), (7, 3), True),  # tied LM head: x @ E^T
    ],
)
def test_matmul_derivatives_match_plain_dot(x_shape, w_shape, transposed):
    rng = np.random.default_rng(0)
    with jax.enable_x64():
        x = jnp.asarray(rng.normal(size=x_shape))
        w = jnp.asarray(rng.normal(size=w_shape))
        c = jnp.asarray(rng.normal(size=(*x_shape[:-1], w_shape[0] if transposed else w_shape[1])))
        t = (jnp.asarray(rng.normal(size=x_shape)), jnp.asarray(rng.normal(size=w_shape)))

        def make(mm):
            def f(x, w):
                return jnp.sum(jnp.tanh(mm(x, w.T if transposed else w)) * c)

            return f

        ours, plain = make(_matmul), make(lambda a, b: jnp.einsum("...k,kn->...n", a, b))
        for fn in (jax.grad, jax.hessian):  # reverse mode, and second derivatives (forward over reverse)
            got = jax.jit(fn(ours, argnums=(0, 1)))(x, w)
            want = fn(plain, argnums=(0, 1))(x, w)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
        got = jax.jit(lambda *p: jax.jvp(ours, p, t))(x, w)
        want = jax.jvp(plain, (x, w), t)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)


def _plain_layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * w + b


def test_layer_norm_derivatives_match_plain_formula():
    rng = np.random.default_rng(2)
    with jax.enable_x64():
        x = jnp.asarray(rng.normal(size=(3, 4, 6)) * 2 + 0.5)
        w = jnp.asarray(rng.normal(size=6))
        b = jnp.asarray(rng.normal(size=6))
        c = jnp.asarray(rng.normal(size=(3, 4, 6)))
        eps = 0.3  # large, so a derivative that dropped it would fail
        ours = lambda x, w, b: jnp.sum(jnp.sin(_layer_norm(x, w, b, eps)) * c)  # noqa: E731
        plain = lambda x, w, b: jnp.sum(jnp.sin(_plain_layer_norm(x, w, b, eps)) * c)  # noqa: E731
        for fn in (jax.grad, jax.hessian):
            got = jax.jit(fn(ours, argnums=(0, 1, 2)))(x, w, b)
            want = fn(plain, argnums=(0, 1, 2))(x, w, b)
            for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-10, atol=1e-12)
        t = tuple(jnp.asarray(rng.normal(size=a.shape)) for a in (x, w, b))
        np.testing.assert_allclose(
            np.asarray(jax.jvp(ours, (x, w, b), t)[1]),
            np.asarray(jax.jvp(plain, (x, w, b), t)[1]),
            rtol=1e-10,
        )


@pytest.mark.parametrize(
    ("act", "gated", "bias"),
    [("gelu_new", False, True), ("gelu", False, False), ("silu", True, False), ("relu", True, True)],
)
def test_lean_mlp_matches_plain_autodiff(act, gated, bias):
    """The lean MLP's custom VJP (recomputing the activation in the backward pass) against autodiff of the plain
    ``act(x @ wu + bu) @ wd + bd`` in float64, every input differentiated."""
    rng = np.random.default_rng(3)
    n, d, f = 6, 4, 5
    with jax.enable_x64():
        x = jnp.asarray(rng.normal(size=(n, d)))
        wu = jnp.asarray(rng.normal(size=(d, 2 * f if gated else f)))
        wd = jnp.asarray(rng.normal(size=(f, d)))
        bu = jnp.asarray(rng.normal(size=wu.shape[1])) if bias else None
        bd = jnp.asarray(rng.normal(size=d)) if bias else None
        c = jnp.asarray(rng.normal(size=(n, d)))
        acts = {
            "gelu_new": lambda z: jax.nn.gelu(z, approximate=True),
            "gelu": lambda z: jax.nn.gelu(z, approximate=False),
            "silu": jax.nn.silu,
            "relu": jax.nn.relu,
        }

        def plain(x, wu, bu, wd, bd):
            pre = x @ wu + (0 if bu is None else bu)
            h = acts[act](pre[:, :f]) * pre[:, f:] if gated else acts[act](pre)
            return jnp.sum(jnp.sin(h @ wd + (0 if bd is None else bd)) * c)

        def ours(x, wu, bu, wd, bd):
            return jnp.sum(jnp.sin(_lean_mlp(act, gated, x, wu, bu, wd, bd)) * c)

        args = (x, wu, bu, wd, bd)
        np.testing.assert_allclose(float(jax.jit(ours)(*args)), float(plain(*args)), rtol=1e-12)
        got = jax.jit(jax.grad(ours, argnums=(0, 1, 2, 3, 4)))(*args)
        want = jax.grad(plain, argnums=(0, 1, 2, 3, 4))(*args)
        assert len(jax.tree.leaves(got)) == (5 if bias else 3)
        for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-10, atol=1e-12)


def _plain_loss(model, tokens):
    """The model's next-token loss with every projection a plain ``dot_general`` and the head ``h @ E^T``."""
    linears = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Linear)]
    # qkv, out, up, down per block, and an untied LM head
    assert len(linears) == 4 * model.config.n_layers + (not model.config.tie_embeddings)
    for module in linears:
        module.dot_general = jax.lax.dot_general
    hidden = model.forward(tokens, compute_logits=False).hidden
    if model.config.tie_embeddings:
        logits = hidden @ model.embed.embedding[...].T
    else:
        logits = hidden @ model.lm_head.kernel[...]
    return next_token_loss(logits, tokens)[0]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_model_loss_gradient_matches_plain_autodiff(arch, monkeypatch):
    """Gradient of the train loss (every custom derivative on the CPU path: projections, tied head, LayerNorm, the
    lean MLP, loss) against plain autodiff of the same model, in float32 on a tiny model; outside
    ``lean_backward`` the model stays forward-mode differentiable."""
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=61, max_seq_len=16, d_model=32, n_layers=2, n_heads=2)
        model = GPT2(cfg, rngs=nnx.Rngs(0))
    else:
        cfg = LlamaConfig(
            vocab_size=61, max_seq_len=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48
        )
        model = Llama(cfg, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (3, 16)), jnp.int32)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def ours(p):  # as the train step traces it
        with lean_backward():
            return next_token_loss(nnx.merge(graphdef, p, rest)(tokens), tokens)[0]

    def plain(p):
        return _plain_loss(nnx.merge(graphdef, p, rest), tokens)

    got = jax.jit(jax.grad(ours))(params)
    # the lean MLP is what ours runs: one custom VJP per block, plus the loss's
    assert str(jax.make_jaxpr(ours)(params)).count("custom_vjp_call") == cfg.n_layers + 1

    # outside lean_backward the model is forward-mode differentiable (the loss, a custom VJP, is not)
    rng = np.random.default_rng(4)
    weights = jnp.asarray(rng.normal(size=(3, 16, cfg.vocab_size)), jnp.float32)

    def readout(p):
        return jnp.sum(nnx.merge(graphdef, p, rest)(tokens) * weights)

    direction = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), params)
    fwd = jax.jit(lambda p, v: jax.jvp(readout, (p,), (v,))[1])(params, direction)
    rev_grad = jax.jit(jax.grad(readout))(params)
    rev = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(rev_grad), jax.tree.leaves(direction)))
    np.testing.assert_allclose(float(fwd), float(rev), rtol=1e-4)
    # the reference: the plain LayerNorm formula too
    monkeypatch.setattr(
        transformer.LayerNorm,
        "__call__",
        lambda self, x: _plain_layer_norm(x, self.scale[...], self.bias[...], self.eps),
    )
    want = jax.jit(jax.grad(plain))(params)
    for (path, a), b in zip(jax.tree.leaves_with_path(got), jax.tree.leaves(want)):
        scale = float(jnp.abs(b).max()) + 1e-12
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5 * scale, rtol=0, err_msg=str(path))
