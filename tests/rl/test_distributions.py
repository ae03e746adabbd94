"""Action distributions against scipy.stats, the change-of-variables formula and Monte Carlo."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxsafety.rl import Categorical, Gaussian, TanhGaussian


def test_categorical_log_prob_entropy_vs_scipy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    actions = rng.integers(0, 4, size=5)
    dist = Categorical(jnp.asarray(logits))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected_logp = [stats.multinomial.logpmf(np.eye(4)[a], 1, p) for a, p in zip(actions, probs)]
    np.testing.assert_allclose(np.asarray(dist.log_prob(jnp.asarray(actions))), expected_logp, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(dist.entropy()), stats.entropy(probs, axis=-1), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(dist.mode()), probs.argmax(-1))


def test_categorical_samples_follow_probs():
    logits = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
    n = 40_000
    samples = Categorical(jnp.broadcast_to(logits, (n, 4))).sample(jax.random.key(0))
    freq = np.bincount(np.asarray(samples), minlength=4) / n
    # 4 binomial standard errors at most
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=4 * np.sqrt(0.25 / n))
    # sample == sample_from_noise(noise(key)): the split used by rollouts draws the same actions
    noise = Categorical.noise(jax.random.key(0), (n, 4))
    np.testing.assert_array_equal(
        np.asarray(Categorical(jnp.broadcast_to(logits, (n, 4))).sample_from_noise(noise)),
        np.asarray(samples),
    )


def test_gaussian_log_prob_entropy_vs_scipy():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(6, 3)).astype(np.float32)
    log_std = rng.normal(scale=0.5, size=3).astype(np.float32)
    action = rng.normal(size=(6, 3)).astype(np.float32)
    dist = Gaussian(jnp.asarray(mean), jnp.asarray(log_std))
    expected = stats.norm.logpdf(action, mean, np.exp(log_std)).sum(-1)
    np.testing.assert_allclose(np.asarray(dist.log_prob(jnp.asarray(action))), expected, rtol=1e-5)
    ent = stats.norm(mean, np.exp(log_std)).entropy().sum(-1)
    np.testing.assert_allclose(np.asarray(dist.entropy()), ent, rtol=1e-5)
    samples = Gaussian(jnp.zeros((50_000, 3)) + mean[0], jnp.asarray(log_std)).sample(jax.random.key(2))
    np.testing.assert_allclose(np.asarray(samples).mean(0), mean[0], atol=0.03)
    np.testing.assert_allclose(np.asarray(samples).std(0), np.exp(log_std), rtol=0.02)


def _tanh_gaussian(mean: float, log_std: float, low: float, high: float) -> TanhGaussian:
    return TanhGaussian(jnp.array([mean]), jnp.array([log_std]), jnp.array([low]), jnp.array([high]))


def test_tanh_gaussian_log_prob_is_change_of_variables():
    """log p(a) = log N(u) - log |da/du| with u = atanh(...), the derivative taken numerically (float64)."""
    dist = _tanh_gaussian(0.3, -0.2, -2.0, 2.0)
    a = np.linspace(-1.9, 1.9, 15)
    u = np.arctanh(a / 2.0)

    def squash(x: np.ndarray) -> np.ndarray:
        return -2.0 + 4.0 * (np.tanh(x) + 1.0) / 2.0

    h = 1e-6
    dadu = (squash(u + h) - squash(u - h)) / (2 * h)
    expected = stats.norm.logpdf(u, 0.3, np.exp(-0.2)) - np.log(dadu)
    got = np.asarray(dist.log_prob(jnp.asarray(a[:, None], jnp.float32)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # the exact path through the pre-squash sample agrees, also far out where tanh saturates in float32
    np.testing.assert_allclose(
        np.asarray(dist.log_prob_pre_squash(jnp.asarray(u[:, None], jnp.float32))),
        expected,
        rtol=1e-4,
        atol=1e-4,
    )
    u_far = np.array([12.0, -15.0])
    expected_far = stats.norm.logpdf(u_far, 0.3, np.exp(-0.2)) - (
        np.log(2.0) + 2.0 * (np.log(2.0) - np.abs(u_far) - np.log1p(np.exp(-2.0 * np.abs(u_far))))
    )
    np.testing.assert_allclose(
        np.asarray(dist.log_prob_pre_squash(jnp.asarray(u_far[:, None], jnp.float32))),
        expected_far,
        rtol=1e-5,
    )


def test_tanh_gaussian_density_integrates_to_one_and_matches_samples():
    dist = _tanh_gaussian(0.5, 0.1, -1.0, 3.0)
    edges = np.linspace(-1.0, 3.0, 41)
    fine = np.linspace(-1.0, 3.0, 40_001)[1:-1]
    dens = np.exp(np.asarray(dist.log_prob(jnp.asarray(fine[:, None], jnp.float32))))
    assert np.trapezoid(dens, fine) == pytest.approx(1.0, abs=2e-3)
    n = 200_000
    batch = _tanh_gaussian(0.5, 0.1, -1.0, 3.0)
    batch = TanhGaussian(jnp.full((n, 1), 0.5), batch.log_std, batch.low, batch.high)
    samples = np.asarray(batch.sample(jax.random.key(3)))[:, 0]
    assert samples.min() >= -1.0 and samples.max() <= 3.0
    hist = np.histogram(samples, bins=edges)[0] / n
    # exact bin masses from the CDF: P(a <= x) = Phi((atanh(2 (x - low) / (high - low) - 1) - mean) / std)
    with np.errstate(divide="ignore"):
        cdf = stats.norm.cdf(np.arctanh(np.clip(2 * (edges + 1.0) / 4.0 - 1.0, -1, 1)), 0.5, np.exp(0.1))
    np.testing.assert_allclose(hist, np.diff(cdf), atol=3e-3)
    # and the density integrates to those masses
    mass = [
        np.trapezoid(dens[(fine >= lo) & (fine <= hi)], fine[(fine >= lo) & (fine <= hi)])
        for lo, hi in itertools.pairwise(edges)
    ]
    np.testing.assert_allclose(mass, np.diff(cdf), atol=2e-3)
    assert float(dist.mode()[0]) == pytest.approx(-1.0 + 4.0 * (np.tanh(0.5) + 1.0) / 2.0, rel=1e-6)


def test_tanh_gaussian_pre_squash_roundtrip():
    dist = _tanh_gaussian(-0.4, 0.3, -2.0, 2.0)
    u = dist.sample_pre_squash(jax.random.key(4))
    assert jnp.allclose(dist.log_prob(dist.squash(u)), dist.log_prob_pre_squash(u), atol=1e-4)
    assert jnp.allclose(dist.sample(jax.random.key(4)), dist.squash(u))
