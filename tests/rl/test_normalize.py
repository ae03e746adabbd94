"""Running statistics and reward scaling against numpy over the whole stream and a plain Python loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.rl import RunningMeanStd, normalize_obs, scale_rewards


def test_running_mean_std_equals_numpy_over_concatenated_stream():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=3.0, scale=2.0, size=(n, 3)) for n in (1, 7, 64, 2, 33)]
    update = jax.jit(RunningMeanStd.update)
    exact = RunningMeanStd.create((3,), count=0.0)
    default = RunningMeanStd.create((3,))
    for b in batches:
        exact = update(exact, jnp.asarray(b, jnp.float32))
        default = update(default, jnp.asarray(b, jnp.float32))
    stream = np.concatenate(batches)
    np.testing.assert_allclose(np.asarray(exact.mean), stream.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(exact.var), stream.var(0), rtol=1e-5)
    assert float(exact.count) == len(stream)
    # SB3's pseudo-count 1e-4 (mean 0, var 1) barely moves the result
    np.testing.assert_allclose(np.asarray(default.mean), stream.mean(0), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(default.var), stream.var(0), rtol=1e-4)


def test_normalize_obs():
    stats = RunningMeanStd(jnp.array([1.0, -2.0]), jnp.array([4.0, 0.25]), jnp.asarray(10.0))
    obs = jnp.array([[3.0, -2.5], [1.0, 100.0]])
    out = np.asarray(normalize_obs(stats, obs, clip=10.0))
    np.testing.assert_allclose(out, [[1.0, -1.0], [0.0, 10.0]], rtol=1e-6)  # 204 clipped to 10


def test_scale_rewards_matches_plain_loop():
    """Plain loop (SB3 VecNormalize semantics): per env G <- gamma G + r; the reward is divided by the std of
    every G seen so far (including this step's); G is reset after a done step."""
    rng = np.random.default_rng(1)
    T, N, gamma = 50, 3, 0.9
    rewards = rng.normal(1.0, 2.0, size=(T, N)).astype(np.float32)
    dones = rng.random((T, N)) < 0.15

    g = np.zeros(N)
    seen: list[np.ndarray] = []
    expected = np.zeros((T, N))
    for t in range(T):
        g = gamma * g + rewards[t]
        seen.append(g.copy())
        expected[t] = np.clip(rewards[t] / np.sqrt(np.var(np.concatenate(seen)) + 1e-8), -10, 10)
        g[dones[t]] = 0.0

    def step(carry, x):
        stats, ret = carry
        r, d = x
        stats, ret, scaled = scale_rewards(stats, ret, r, d, gamma)
        return (stats, ret), scaled

    _, scaled = jax.jit(lambda xs: jax.lax.scan(step, (RunningMeanStd.create(()), jnp.zeros(N)), xs))(
        (jnp.asarray(rewards), jnp.asarray(dones))
    )
    # the first step's variance comes from N samples plus the 1e-4 pseudo-count prior, hence the tolerance
    np.testing.assert_allclose(np.asarray(scaled), expected, rtol=2e-3, atol=1e-4)
