"""The train step's fused LM head + cross-entropy (chunked, gradient formed in the forward pass) against the plain
``cross_entropy(hidden @ head)`` and its autodiff, and the train step's loss against the model's own logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxsafety.models import GPT2, GPT2Config, Llama, LlamaConfig
from jaxsafety.train import OptimizerConfig, make_optimizer
from jaxsafety.train import lm as lm_module
from jaxsafety.train.lm import make_lm_train_step, next_token_loss


@pytest.mark.parametrize("vocab_major", [False, True])  # head [D, V], or [V, D] as a tied embedding
@pytest.mark.parametrize("chunk_floats", [1 << 22, 3 * 11])  # one chunk; 3-row chunks (4 of them)
def test_fused_head_matches_plain_cross_entropy(chunk_floats, vocab_major, monkeypatch):
    monkeypatch.setattr(lm_module, "_HEAD_CHUNK_FLOATS", chunk_floats)
    rng = np.random.default_rng(0)
    n, d, v = 12, 5, 11
    with jax.enable_x64():
        hidden = jnp.asarray(rng.normal(size=(n, d)))
        head = jnp.asarray(rng.normal(size=(d, v)))
        targets = jnp.asarray(rng.integers(0, v, n), jnp.int32)
        weights = jnp.asarray(rng.uniform(size=n) * (rng.uniform(size=n) > 0.3))  # some zero weights

        def plain(h, w):
            logits = h @ w
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
            return jnp.sum(weights * nll)

        def fused(h, w):
            return lm_module._fused_head_nll(h, w.T if vocab_major else w, targets, weights, vocab_major)

        assert lm_module._head_chunk_rows(n, v) == (n if chunk_floats > n * v else 3)
        np.testing.assert_allclose(
            float(jax.jit(fused)(hidden, head)), float(plain(hidden, head)), rtol=1e-12
        )
        # a cotangent other than 1 scales both gradients
        got = jax.jit(jax.grad(lambda h, w: 2.5 * fused(h, w), argnums=(0, 1)))(hidden, head)
        want = jax.grad(lambda h, w: 2.5 * plain(h, w), argnums=(0, 1))(hidden, head)
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
        # one input differentiated (a frozen head or hidden state: that gradient is not formed)
        for argnum in (0, 1):
            one = jax.jit(jax.grad(fused, argnums=argnum))(hidden, head)
            np.testing.assert_allclose(
                np.asarray(one), np.asarray(want[argnum]) / 2.5, rtol=1e-10, atol=1e-12
            )


@pytest.mark.parametrize("arch", ["gpt2", "llama_untied"])
def test_train_step_loss_and_update_match_the_logits_path(arch):
    """The train step (fused head) reports the loss of the model's logits, and its update equals one plain SGD
    step on the gradient of ``next_token_loss(model(tokens))`` (plain autodiff through the logits). (SGD, not
    Adam: Adam's first step is ``lr * sign(g)`` for the key bias, whose exact gradient is 0, so float noise
    decides it.)"""
    if arch == "gpt2":
        model = GPT2(
            GPT2Config(vocab_size=53, max_seq_len=8, d_model=16, n_layers=1, n_heads=2), rngs=nnx.Rngs(0)
        )
    else:
        cfg = LlamaConfig(vocab_size=53, max_seq_len=8, d_model=16, n_layers=1, n_heads=2, d_ff=24)
        model = Llama(cfg, rngs=nnx.Rngs(0))
        assert not cfg.tie_embeddings
    assert model.head_matrix() is not None  # the fused path is taken
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, 53, (3, 8)), jnp.int32)
    mask = jnp.asarray(np.array([[1] * 8, [0, 0] + [1] * 6, [1] * 5 + [0] * 3]), jnp.int32)
    batch = {"tokens": tokens, "mask": mask}
    opt_cfg = OptimizerConfig(name="sgd", lr=1.0, b1=0.0)

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    target = lm_module.lm_target_mask(mask)

    def loss_fn(p):
        return next_token_loss(nnx.merge(graphdef, p, rest)(tokens, mask), tokens, target)[0]

    want_loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    want_params = jax.tree.map(lambda p, g: p - g, params, grads)

    optimizer = nnx.Optimizer(model, make_optimizer(opt_cfg), wrt=nnx.Param)
    gd, state = nnx.split((model, optimizer))
    state, metrics = make_lm_train_step(gd)(state, batch)
    np.testing.assert_allclose(float(metrics["loss"]), float(want_loss), rtol=1e-5)
    new_model, _ = nnx.merge(gd, state)
    got_params = nnx.state(new_model, nnx.Param)
    for (path, a), b, g in zip(
        jax.tree.leaves_with_path(got_params), jax.tree.leaves(want_params), jax.tree.leaves(grads)
    ):
        scale = float(jnp.abs(g).max()) + 1e-6
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4 * scale, rtol=0, err_msg=str(path))
