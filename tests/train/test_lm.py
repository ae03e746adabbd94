"""LM loss, train step with in-step gradient accumulation, evaluation and pretraining (jaxsafety.train.lm)."""

from __future__ import annotations

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxsafety.config import ConfigError
from jaxsafety.data.corpus import CorpusConfig
from jaxsafety.models import GPT2, GPT2Config, Llama, LlamaConfig
from jaxsafety.train import Checkpointer, OptimizerConfig, make_optimizer, trainable_filter
from jaxsafety.train.lm import (
    PretrainConfig,
    cross_entropy,
    evaluate_lm,
    lm_batches,
    lm_target_mask,
    make_lm_train_step,
    next_token_loss,
    pretrain,
    unigram_entropy,
)


def _np_loss(logits, tokens, mask):
    """Plain loop: mean over targets t+1 with mask[b, t+1] of -log softmax(logits[b, t])[tokens[b, t+1]]."""
    logits = np.asarray(logits, np.float64)
    total, n = 0.0, 0.0
    for b in range(tokens.shape[0]):
        for t in range(tokens.shape[1] - 1):
            w = 1.0 if mask is None else float(mask[b, t + 1])
            row = logits[b, t]
            lse = np.log(np.exp(row - row.max()).sum()) + row.max()
            total += w * (lse - row[tokens[b, t + 1]])
            n += w
    return (total / n if n else 0.0), n


def test_next_token_loss_matches_numpy_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, 11)).astype(np.float32) * 3
    tokens = rng.integers(0, 11, size=(3, 6))
    mask = (rng.random((3, 6)) > 0.3).astype(np.int32)
    for m in (None, mask):
        loss, n = next_token_loss(
            jnp.asarray(logits), jnp.asarray(tokens), None if m is None else jnp.asarray(m)
        )
        ref, ref_n = _np_loss(logits, tokens, m)
        np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
        assert float(n) == ref_n
    loss, n = next_token_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.zeros((3, 6)))
    assert float(loss) == 0.0 and float(n) == 0.0  # nothing scored: no NaN
    with pytest.raises(ValueError, match="must agree"):
        next_token_loss(jnp.asarray(logits), jnp.asarray(tokens[:, :5]))


def test_cross_entropy_gradient_matches_finite_differences_and_autodiff():
    """The custom VJP of ``cross_entropy`` against float64 central differences and against autodiff of the plain
    ``logsumexp - picked`` formula (which has no custom rule), with a nonuniform cotangent."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 7)) * 2
    targets = rng.integers(0, 7, size=(2, 3))
    g = rng.normal(size=(2, 3))
    with jax.enable_x64():
        x, t, gg = jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(g)
        ours = jax.vjp(lambda z: cross_entropy(z, t), x)[1](gg)[0]
        plain = jax.vjp(
            lambda z: jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, t[..., None], -1)[..., 0], x
        )[1](gg)[0]
        np.testing.assert_allclose(np.asarray(ours), np.asarray(plain), rtol=1e-12, atol=1e-12)
        eps, fd = 1e-6, np.zeros_like(logits)
        for idx in np.ndindex(logits.shape):
            e = np.zeros_like(logits)
            e[idx] = eps
            up = np.asarray(cross_entropy(x + e, t))
            down = np.asarray(cross_entropy(x - e, t))
            fd[idx] = ((up - down) * g).sum() / (2 * eps)
        np.testing.assert_allclose(np.asarray(ours), fd, rtol=1e-6, atol=1e-8)
    # values: optax's reference in float32
    np.testing.assert_allclose(
        np.asarray(cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(targets))),
        np.asarray(
            optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits, jnp.float32), targets)
        ),
        rtol=1e-6,
    )


def test_target_mask_ignores_padding_on_both_sides():
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    loss_mask = np.array([[0, 0, 0, 1, 1], [1, 1, 1, 1, 1]])
    out = np.asarray(lm_target_mask(jnp.asarray(mask), jnp.asarray(loss_mask)))
    expected = np.zeros((2, 5))
    for b in range(2):
        for t in range(1, 5):
            expected[b, t] = loss_mask[b, t] * mask[b, t - 1]
    np.testing.assert_array_equal(out, expected)
    # default loss mask = attention mask: left padding's first real token (predicted from padding) is skipped
    np.testing.assert_array_equal(
        np.asarray(lm_target_mask(jnp.asarray(mask))), [[0, 0, 0, 1, 1], [0, 1, 1, 0, 0]]
    )


def _tiny(arch: str):
    if arch == "gpt2":
        return GPT2(
            GPT2Config(vocab_size=37, max_seq_len=12, d_model=16, n_layers=1, n_heads=2), rngs=nnx.Rngs(0)
        )
    cfg = LlamaConfig(vocab_size=37, max_seq_len=12, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=24)
    return Llama(cfg, rngs=nnx.Rngs(0))


def _padded_batch(seed: int = 1):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 37, size=(8, 12)).astype(np.int32)
    lengths = np.array([12, 3, 7, 12, 2, 12, 9, 5])  # microbatches hold different numbers of real tokens
    mask = (np.arange(12)[None] < lengths[:, None]).astype(np.int32)
    return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}


def test_grad_accumulation_equals_full_batch_sgd_step():
    """After one SGD step, params = p0 - lr * grad of the token-weighted full-batch loss, for 1 and 4 microbatches
    (the step is architecture-agnostic: one architecture suffices)."""
    lr, arch = 0.5, "gpt2"
    batch = _padded_batch()
    model = _tiny(arch)
    gd, p0, rest = nnx.split(model, nnx.Param, ...)

    def loss_on(params, tok, msk):  # independent path: plain jax.grad of the mean loss over the given rows
        m = nnx.merge(gd, params, rest)
        return next_token_loss(m(tok, msk), tok, lm_target_mask(msk))[0]

    grad_fn = jax.jit(jax.value_and_grad(loss_on))
    loss_ref, g_ref = jax.device_get(grad_fn(p0, batch["tokens"], batch["mask"]))
    p0_np = jax.device_get(p0)
    expected = jax.tree.map(lambda p, g: p - lr * g, p0_np, g_ref)  # SGD in closed form, in numpy
    results = {}
    for k in (1, 4):
        m = _tiny(arch)
        opt = nnx.Optimizer(m, make_optimizer(OptimizerConfig(name="sgd", lr=lr, b1=0.0)), wrt=nnx.Param)
        graphdef, state = nnx.split((m, opt))
        state, metrics = make_lm_train_step(graphdef, accum_steps=k)(state, batch)
        params = jax.device_get(nnx.state(nnx.merge(graphdef, state)[0], nnx.Param))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0), params, expected)
        assert max(jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), params, p0_np))) > 1e-3
        np.testing.assert_allclose(float(metrics["loss"]), float(loss_ref), rtol=1e-6)
        assert float(metrics["tokens"]) == float(
            np.sum(np.asarray(batch["mask"]).sum(1) - 1)
        )  # right padding
        results[k] = metrics
    np.testing.assert_allclose(float(results[1]["grad_norm"]), float(results[4]["grad_norm"]), rtol=1e-5)
    np.testing.assert_allclose(float(results[4]["perplexity"]), np.exp(float(loss_ref)), rtol=1e-5)

    # the naive average of per-microbatch MEAN gradients differs (so the test above can tell them apart)
    # (microbatch i = rows 2i, 2i+1; the other rows masked out keeps the shape and the compiled function)
    rows = np.arange(8)[:, None] // 2
    naive = [jax.device_get(grad_fn(p0, batch["tokens"], batch["mask"] * (rows == i))[1]) for i in range(4)]
    naive = jax.tree.map(lambda *g: sum(g) / 4, *naive)
    diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), naive, g_ref)))
    assert diff > 1e-3


def test_accumulation_needs_divisible_batch():
    m = _tiny("gpt2")
    graphdef, state = nnx.split(
        (m, nnx.Optimizer(m, make_optimizer(OptimizerConfig(name="sgd", lr=0.1)), wrt=nnx.Param))
    )
    with pytest.raises(ValueError, match="multiples of accum_steps"):
        make_lm_train_step(graphdef, accum_steps=3)(state, _padded_batch())
    with pytest.raises(ConfigError, match="accum_steps=0"):
        make_lm_train_step(graphdef, accum_steps=0)


def _count_dots(jaxpr) -> int:
    """``dot_general`` equations in ``jaxpr`` and every sub-jaxpr (jit, scan, custom rules)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == "dot_general"
        for v in eqn.params.values():
            for sub in v if isinstance(v, tuple | list) else (v,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    n += _count_dots(inner)
    return n


def _flat(state) -> dict[str, np.ndarray]:
    return {".".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(jax.device_get(state))}


def test_train_step_freezes_what_the_optimizer_does_not_update():
    """An optimizer over ``trainable_filter(freeze)``: frozen parameters come out bit-identical, the others take
    the closed-form SGD step of the full model's gradient (freezing changes no other gradient), the optimizer
    holds no state for frozen ones, and no gradient is formed for them: the step has exactly one matmul less
    per frozen matrix (its weight gradient; the tied embedding is also the LM head)."""
    lr, batch = 0.5, _padded_batch()
    freeze = ("embed.*", "blocks.0.attn.*")
    frozen = {"embed.embedding"} | {
        f"blocks.0.attn.{a}.{b}" for a in ("qkv", "out") for b in ("kernel", "bias")
    }
    model = _tiny("gpt2")
    gd, p0, rest = nnx.split(model, nnx.Param, ...)

    def loss_on(params):
        m = nnx.merge(gd, params, rest)
        return next_token_loss(
            m(batch["tokens"], batch["mask"]), batch["tokens"], lm_target_mask(batch["mask"])
        )[0]

    p0_np, g_np = _flat(p0), _flat(jax.jit(jax.grad(loss_on))(p0))
    tx = make_optimizer(OptimizerConfig(name="sgd", lr=lr, b1=0.0))
    graphdef, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=trainable_filter(freeze))))
    step = make_lm_train_step(graphdef)
    params = _flat(nnx.state(nnx.merge(graphdef, step(state, batch)[0])[0], nnx.Param))
    assert params.keys() == p0_np.keys() and frozen < params.keys()
    for name, value in params.items():
        if name in frozen:
            np.testing.assert_array_equal(value, p0_np[name], err_msg=name)
        else:
            np.testing.assert_allclose(value, p0_np[name] - lr * g_np[name], atol=1e-6, rtol=0, err_msg=name)
            assert np.abs(g_np[name]).max() > 0, name
    full_gd, full_state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
    dots_full = _count_dots(jax.make_jaxpr(make_lm_train_step(full_gd))(full_state, batch).jaxpr)
    dots_frozen = _count_dots(jax.make_jaxpr(step)(state, batch).jaxpr)
    assert dots_full - dots_frozen == 3, (dots_full, dots_frozen)  # qkv, out and the tied LM head
    # Adam's moments exist for the trained parameters only
    adam = nnx.Optimizer(model, make_optimizer(OptimizerConfig()), wrt=trainable_filter(freeze))
    slots = [".".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(adam, nnx.OptState))]
    mu = {p.split(".mu.", 1)[1] for p in slots if ".mu." in p}
    assert mu == set(p0_np) - frozen


def test_evaluate_lm_matches_one_big_batch():
    model = _tiny("llama")
    rows = np.random.default_rng(3).integers(0, 37, size=(7, 12)).astype(np.int32)
    batches = lm_batches(rows, 3)  # 3 + 3 + 1 (padded with two masked rows)
    assert len(batches) == 3 and all(b["tokens"].shape == (3, 12) for b in batches)
    graphdef, state = nnx.split(model)
    out = evaluate_lm(graphdef, state, batches)
    logits = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(rows))
    ref, n = _np_loss(np.asarray(logits), rows, None)
    np.testing.assert_allclose(out["loss"], ref, rtol=1e-5)
    assert out["tokens"] == n == 7 * 11
    np.testing.assert_allclose(out["perplexity"], np.exp(ref), rtol=1e-5)


def test_unigram_entropy_closed_form():
    assert unigram_entropy(np.array([[0, 0], [1, 1]])) == pytest.approx(np.log(2))
    assert unigram_entropy(np.arange(10)) == pytest.approx(np.log(10))
    assert unigram_entropy(np.array([5, 5, 5])) == pytest.approx(0.0)
    p = np.array([0.5, 0.25, 0.25])
    assert unigram_entropy(np.array([3, 3, 4, 7])) == pytest.approx(-(p * np.log(p)).sum())


TINY = PretrainConfig(
    d_model=32,
    n_layers=1,
    n_heads=2,
    vocab_size=300,
    synthetic=CorpusConfig(num_documents=300, num_entities=10),
    seq_len=32,
    batch_size=16,
    steps=40,
    optim=OptimizerConfig(name="adamw", lr=1e-2, schedule="cosine", warmup_steps=2, grad_clip_norm=1.0),
)


def test_pretrain_learns_beyond_unigram_and_is_deterministic(tmp_path):
    res = pretrain(TINY, log_every=5, eval_every=20)
    first, last = res.history[0]["loss"], res.history[-1]["loss"]
    assert first > last + 0.8  # the loss falls within a few dozen steps
    assert res.heldout_loss < res.unigram_entropy - 0.25  # context is used, not just token frequencies
    assert [h["step"] for h in res.history] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert "heldout_loss" in res.history[3] and "heldout_loss" in res.history[-1]
    assert res.num_params == res.model.num_params() and res.model.config.vocab_size == len(res.tokenizer)

    # same config, same result, also when resumed from a checkpoint halfway (bit-identical on CPU)
    with Checkpointer(tmp_path / "ckpt", save_every=20, async_save=False) as ckpt:
        again = pretrain(TINY, checkpointer=ckpt, log_every=5)
    shutil.rmtree(tmp_path / "ckpt" / "40")
    with Checkpointer(tmp_path / "ckpt", save_every=20, async_save=False) as ckpt:
        assert ckpt.latest_step() == 20
        resumed = pretrain(TINY, checkpointer=ckpt, log_every=5)
    assert [h["step"] for h in resumed.history] == [25, 30, 35, 40]
    for other in (again, resumed):
        same = jax.tree.map(
            np.array_equal, nnx.state(res.model, nnx.Param), nnx.state(other.model, nnx.Param)
        )
        assert all(jax.tree.leaves(same))
        assert other.heldout_loss == res.heldout_loss


def test_pretrain_config_validation(tmp_path):
    cases = [
        ({"seq_len": 64, "max_seq_len": 32}, "max_seq_len=32 is invalid: accepted values are integers >= 64"),
        (
            {"batch_size": 10, "accum_steps": 4},
            "accum_steps=4 is invalid: accepted values are divisors of batch_size",
        ),
        ({"n_heads": 3}, "n_heads=3 is invalid: accepted values are divisors of d_model"),
        ({"n_kv_heads": 2}, "n_kv_heads=2 is invalid: accepted values are none for arch 'gpt2'"),
        (
            {"arch": "llama", "n_kv_heads": 3},
            "n_kv_heads=3 is invalid: accepted values are divisors of n_heads",
        ),
        (
            {"corpus": str(tmp_path / "missing.txt")},
            "accepted values are 'synthetic' or the path of a text file",
        ),
        ({"optim": OptimizerConfig(grad_accum_steps=2)}, "optim.grad_accum_steps=2 is invalid"),
        ({"steps": 10}, "optim.warmup_steps=100 is invalid: accepted values are integers <= total_steps"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            PretrainConfig(**kwargs)
    assert PretrainConfig(arch="llama", d_model=96, n_heads=4).model_config(500).d_ff_ == 256


def test_pretrain_on_text_file(tmp_path):
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "red",
        "birds",
        "sing",
        "in",
        "tall",
        "green",
        "trees",
    ]
    rng = np.random.default_rng(0)
    p = tmp_path / "corpus.txt"
    p.write_text("\n\n".join(" ".join(rng.choice(words, size=12)) + "." for _ in range(200)))
    # TINY's shapes (a vocabulary of exactly 300 entries here too): the compiled step is reused
    res = pretrain(dataclasses.replace(TINY, corpus=str(p)), log_every=10)
    assert len(res.tokenizer) == 300
    assert res.history[-1]["loss"] < res.history[0]["loss"] and res.heldout_loss < res.unigram_entropy
