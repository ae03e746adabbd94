"""Optimizer factory vs hand-written update rules (closed forms, not optax's own output)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.train import OptimizerConfig, make_optimizer, make_schedule


def _params():
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(2), jnp.float32),
    }


def _grads(seed):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(2), jnp.float32),
    }


def _run(cfg, steps=2, total_steps=None):
    tx = make_optimizer(cfg, total_steps)
    params = _params()
    state = tx.init(params)
    updates = []
    for t in range(steps):
        u, state = tx.update(_grads(t + 1), state, params)
        updates.append(jax.tree.map(np.asarray, u))
        params = jax.tree.map(lambda p, d: p + d, params, u)
    return updates


def test_cosine_schedule_matches_closed_form():
    cfg = OptimizerConfig(lr=1e-3, schedule="cosine", warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    sched = make_schedule(cfg)
    for t in [0, 1, 5, 10, 11, 40, 60, 100, 110, 200]:
        if t <= 10:
            expected = 1e-3 * t / 10
        else:
            frac = min((t - 10) / 100, 1.0)
            expected = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * frac))
        assert float(sched(t)) == pytest.approx(expected, rel=1e-5, abs=1e-9), t


def test_linear_and_constant_schedules():
    lin = make_schedule(
        OptimizerConfig(lr=2.0, schedule="linear", warmup_steps=0, min_lr_ratio=0.5), total_steps=4
    )
    assert [float(lin(t)) for t in range(6)] == pytest.approx([2.0, 1.75, 1.5, 1.25, 1.0, 1.0])
    const = make_schedule(OptimizerConfig(lr=2.0, warmup_steps=4))
    assert [float(const(t)) for t in range(6)] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])


def test_sgd_momentum_and_l2_decay_by_hand():
    lr, mom, wd = 0.1, 0.9, 0.01
    u1, u2 = _run(OptimizerConfig(name="sgd", lr=lr, b1=mom, weight_decay=wd))
    p = jax.tree.map(np.asarray, _params())
    g1, g2 = (jax.tree.map(np.asarray, _grads(s)) for s in (1, 2))
    # weight decay only on the matrix "w"; trace: v_t = g_t + mom * v_{t-1}
    d1 = {"w": g1["w"] + wd * p["w"], "b": g1["b"]}
    np.testing.assert_allclose(u1["w"], -lr * d1["w"], rtol=1e-6)
    np.testing.assert_allclose(u1["b"], -lr * d1["b"], rtol=1e-6)
    p2w = p["w"] + u1["w"]
    v2w = g2["w"] + wd * p2w + mom * d1["w"]
    np.testing.assert_allclose(u2["w"], -lr * v2w, rtol=1e-5)


def test_adamw_two_steps_by_hand():
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.99, 1e-8, 0.1
    u1, u2 = _run(OptimizerConfig(name="adamw", lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=wd))
    p = jax.tree.map(np.asarray, _params())
    g1, g2 = (jax.tree.map(np.asarray, _grads(s)) for s in (1, 2))
    for k in ("w", "b"):
        decay = wd if k == "w" else 0.0
        m1, v1 = (1 - b1) * g1[k], (1 - b2) * g1[k] ** 2
        exp1 = -lr * (m1 / (1 - b1) / (np.sqrt(v1 / (1 - b2)) + eps) + decay * p[k])
        np.testing.assert_allclose(u1[k], exp1, rtol=1e-5)
        p2 = p[k] + exp1
        m2, v2 = b1 * m1 + (1 - b1) * g2[k], b2 * v1 + (1 - b2) * g2[k] ** 2
        exp2 = -lr * (m2 / (1 - b1**2) / (np.sqrt(v2 / (1 - b2**2)) + eps) + decay * p2)
        np.testing.assert_allclose(u2[k], exp2, rtol=1e-5)


def test_lion_two_steps_by_hand():
    lr, b1, b2, wd = 1e-3, 0.9, 0.99, 0.5
    u1, u2 = _run(OptimizerConfig(name="lion", lr=lr, b1=b1, b2=b2, weight_decay=wd))
    p = jax.tree.map(np.asarray, _params())
    g1, g2 = (jax.tree.map(np.asarray, _grads(s)) for s in (1, 2))
    for k in ("w", "b"):
        decay = wd if k == "w" else 0.0
        exp1 = -lr * (np.sign((1 - b1) * g1[k]) + decay * p[k])
        np.testing.assert_allclose(u1[k], exp1, rtol=1e-6)
        m1 = (1 - b2) * g1[k]
        exp2 = -lr * (np.sign(b1 * m1 + (1 - b1) * g2[k]) + decay * (p[k] + exp1))
        np.testing.assert_allclose(u2[k], exp2, rtol=1e-5)


def test_global_norm_clipping():
    (u,) = _run(OptimizerConfig(name="sgd", lr=1.0, b1=0.0, grad_clip_norm=0.5), steps=1)
    g = jax.tree.map(np.asarray, _grads(1))
    norm = math.sqrt(sum(float((x**2).sum()) for x in g.values()))
    assert norm > 0.5
    for k in g:
        np.testing.assert_allclose(u[k], -g[k] * 0.5 / norm, rtol=1e-5)


def test_grad_accumulation_averages_microbatches():
    cfg = OptimizerConfig(name="sgd", lr=1.0, b1=0.0, grad_accum_steps=2)
    u1, u2 = _run(cfg, steps=2)
    g1, g2 = (jax.tree.map(np.asarray, _grads(s)) for s in (1, 2))
    for k in g1:
        np.testing.assert_array_equal(u1[k], np.zeros_like(g1[k]))
        np.testing.assert_allclose(u2[k], -(g1[k] + g2[k]) / 2, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "adam"}, r"name='adam' is invalid: accepted values are one of 'adamw', 'sgd', 'lion'"),
        ({"lr": 0.0}, r"lr=0.0 is invalid: accepted values are numbers > 0"),
        ({"b2": 1.0}, r"b2=1.0 is invalid: accepted values are numbers >= 0 and < 1"),
        ({"schedule": "cosine", "warmup_steps": 20, "total_steps": 10}, r"warmup_steps=20 is invalid"),
        ({"grad_clip_norm": -1.0}, r"grad_clip_norm=-1.0 is invalid"),
        ({"grad_accum_steps": 0}, r"grad_accum_steps=0 is invalid: accepted values are integers >= 1"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        OptimizerConfig(**kwargs)


def test_decaying_schedule_needs_a_run_length():
    with pytest.raises(
        ConfigError, match=r"total_steps=None is invalid: accepted values are an integer >= 1"
    ):
        make_optimizer(OptimizerConfig(schedule="cosine"))
    assert OptimizerConfig(schedule="cosine").resolve(100).total_steps == 100


def test_cached_optimizer_is_one_object_per_config_and_run_length():
    """Equal configs share one transformation (so one compiled train step); it updates as make_optimizer's."""
    from jaxsafety.train.optim import cached_optimizer

    cfg = OptimizerConfig(name="sgd", lr=0.1, b1=0.9, weight_decay=0.01)
    tx = cached_optimizer(cfg, 10)
    assert cached_optimizer(OptimizerConfig(name="sgd", lr=0.1, b1=0.9, weight_decay=0.01), 10) is tx
    assert cached_optimizer(cfg, 11) is not tx
    params, grads = _params(), _grads(1)
    u, _ = tx.update(grads, tx.init(params), params)
    ref, _ = make_optimizer(cfg, 10).update(grads, make_optimizer(cfg, 10).init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), u, ref)
