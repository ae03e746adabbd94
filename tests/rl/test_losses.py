"""PPO loss pieces against values computed by hand on tiny arrays, and the KL estimators against exact KL."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsafety.rl import (
    approx_kl_k1,
    approx_kl_k3,
    clip_fraction,
    clipped_policy_loss,
    clipped_value_loss,
    normalize_advantages,
)

RATIOS = np.array([0.5, 1.0, 1.5, 1.3])
ADV = np.array([1.0, -1.0, 2.0, -2.0])
OLD_LOGP = np.array([-1.0, -0.5, -2.0, -0.1])
LOGP = OLD_LOGP + np.log(RATIOS)


def test_clipped_policy_loss_value_and_gradient():
    # min(r A, clip(r, 0.8, 1.2) A) per sample: 0.5 | -1 | min(3, 2.4) = 2.4 | min(-2.6, -2.4) = -2.6
    expected = -(0.5 - 1.0 + 2.4 - 2.6) / 4
    loss, grad = jax.value_and_grad(clipped_policy_loss)(
        jnp.asarray(LOGP, jnp.float32), jnp.asarray(OLD_LOGP, jnp.float32), jnp.asarray(ADV, jnp.float32), 0.2
    )
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    # d/dlogp of r A is r A where the unclipped term is the minimum; the clipped one (sample 2) passes no gradient
    np.testing.assert_allclose(np.asarray(grad), [-0.5 / 4, 1.0 / 4, 0.0, 2.6 / 4], atol=1e-6)


def test_clipped_value_loss():
    value = jnp.array([1.0, 2.0, 0.0])
    old = jnp.array([0.5, 2.5, 0.0])
    target = jnp.array([2.0, 1.0, 1.0])
    # clipped predictions 0.7, 2.3, 0.0 -> max((v - R)^2, (v_clip - R)^2) = 1.69, 1.69, 1
    assert float(clipped_value_loss(value, old, target, 0.2)) == pytest.approx(0.5 * (1.69 + 1.69 + 1.0) / 3)
    assert float(clipped_value_loss(value, old, target, None)) == pytest.approx(0.5 * (1.0 + 1.0 + 1.0) / 3)
    # the clipped branch is the max at sample 0, so its gradient there is 0 (prediction moved past the clip)
    g = jax.grad(clipped_value_loss)(value, old, target, 0.2)
    np.testing.assert_allclose(np.asarray(g), [0.0, 0.0, (0.0 - 1.0) / 3], atol=1e-6)


def test_kl_estimators_and_clip_fraction_by_hand():
    logp, old = jnp.asarray(LOGP, jnp.float32), jnp.asarray(OLD_LOGP, jnp.float32)
    k1 = np.mean(-np.log(RATIOS))
    k3 = np.mean([(r - 1.0) - math.log(r) for r in RATIOS])
    assert float(approx_kl_k1(logp, old)) == pytest.approx(k1, abs=1e-6)
    assert float(approx_kl_k3(logp, old)) == pytest.approx(k3, abs=1e-6)
    # |r - 1| > 0.2 for r = 0.5, 1.5, 1.3
    assert float(clip_fraction(logp, old, 0.2)) == pytest.approx(0.75)
    assert float(clip_fraction(logp, old, 0.6)) == pytest.approx(0.0)


def test_kl_estimators_are_unbiased_for_exact_kl():
    """Weighted by the old policy's probabilities (the exact expectation over its samples), k1 and k3 both give
    KL(old || new) of two categoricals."""
    rng = np.random.default_rng(0)
    p_old = rng.dirichlet(np.ones(6))
    p_new = rng.dirichlet(np.ones(6))
    kl = float(np.sum(p_old * np.log(p_old / p_new)))
    logp, old = jnp.log(jnp.asarray(p_new)), jnp.log(jnp.asarray(p_old))
    # E_old[f] = sum_a p_old(a) f(a): the estimators average over samples, so feed each action weighted
    n = 6 * 10_000
    counts = np.round(p_old * n).astype(int)
    idx = np.repeat(np.arange(6), counts)
    k1 = float(approx_kl_k1(logp[idx], old[idx]))
    k3 = float(approx_kl_k3(logp[idx], old[idx]))
    assert k1 == pytest.approx(kl, rel=1e-3)
    assert k3 == pytest.approx(kl, rel=1e-3)
    assert float(approx_kl_k3(logp, old)) >= 0.0  # k3 is non-negative sample by sample


def test_normalize_advantages():
    adv = np.random.default_rng(0).normal(3.0, 2.0, size=100).astype(np.float32)
    out = np.asarray(normalize_advantages(jnp.asarray(adv)))
    np.testing.assert_allclose(out, (adv - adv.mean()) / (adv.std() + 1e-8), rtol=1e-5, atol=1e-6)
