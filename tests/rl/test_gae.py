"""GAE against its definition, computed by brute force in plain Python (float64).

For each env and each step, ``A_t = sum_k (gamma lam)^k delta_{t+k}`` over the rest of the episode inside the
rollout, with ``delta_t = r_t + gamma V(s'_t) - V(s_t)`` where ``V(s'_t)`` is 0 after a termination, the value of
the true final observation after a truncation, and the next row's value otherwise (the last row bootstraps from the
value of the observation the rollout stopped at).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsafety.rl import gae_advantages


def _episode_rollout(rng: np.random.Generator, T: int, N: int) -> dict[str, np.ndarray]:
    """Random rewards and values with terminations and truncations (never both at once: gymnax reports
    terminated, and truncated only when the time limit hits first)."""
    u = rng.random((T, N))
    terminated = u < 0.1
    truncated = (u >= 0.1) & (u < 0.2)
    values = rng.normal(size=(T, N))
    final_values = rng.normal(size=(T, N))  # V(true final observation) at done steps
    last_value = rng.normal(size=N)  # V(observation after the last step)
    return {
        "rewards": rng.normal(size=(T, N)),
        "values": values,
        "terminated": terminated,
        "truncated": truncated,
        "final_values": final_values,
        "last_value": last_value,
    }


def _brute_force(d: dict[str, np.ndarray], gamma: float, lam: float) -> np.ndarray:
    T, N = d["rewards"].shape
    adv = np.zeros((T, N))
    for n in range(N):

        def v_next(t: int, n: int = n) -> float:
            if d["terminated"][t, n]:
                return 0.0
            if d["truncated"][t, n]:
                return float(d["final_values"][t, n])
            return float(d["values"][t + 1, n]) if t + 1 < T else float(d["last_value"][n])

        deltas = [d["rewards"][t, n] + gamma * v_next(t) - d["values"][t, n] for t in range(T)]
        for t in range(T):
            total, k = 0.0, 0
            while t + k < T:
                total += (gamma * lam) ** k * deltas[t + k]
                if d["terminated"][t + k, n] or d["truncated"][t + k, n]:
                    break  # the next row is a new episode
                k += 1
            adv[t, n] = total
    return adv


def _next_values(d: dict[str, np.ndarray]) -> np.ndarray:
    """What PPO feeds in: V(s'_t), i.e. the next row's value, or the final observation's value at done steps."""
    shifted = np.concatenate([d["values"][1:], d["last_value"][None]])
    done = d["terminated"] | d["truncated"]
    return np.where(done, d["final_values"], shifted)


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 1.0), (0.97, 0.0), (1.0, 0.5)])
def test_gae_matches_brute_force_with_terminations_and_truncations(gamma: float, lam: float):
    d = _episode_rollout(np.random.default_rng(0), T=37, N=5)
    assert d["terminated"].any() and d["truncated"].any()
    done = d["terminated"] | d["truncated"]
    adv, ret = jax.jit(gae_advantages, static_argnames=("gamma", "lam"))(
        jnp.asarray(d["rewards"], jnp.float32),
        jnp.asarray(d["values"], jnp.float32),
        jnp.asarray(_next_values(d), jnp.float32),
        jnp.asarray(d["terminated"]),
        jnp.asarray(done),
        gamma=gamma,
        lam=lam,
    )
    expected = _brute_force(d, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), expected + d["values"], rtol=1e-5, atol=1e-5)


def test_truncation_bootstraps_and_termination_does_not():
    """One env, three steps, hand-computed: a truncation at t=0 and a termination at t=1."""
    gamma, lam = 0.5, 1.0
    rewards = jnp.array([[1.0], [2.0], [3.0]])
    values = jnp.array([[10.0], [20.0], [30.0]])
    next_values = jnp.array([[100.0], [999.0], [40.0]])  # V(final obs) at t=0; t=1 terminates (ignored)
    terminated = jnp.array([[False], [True], [False]])
    done = jnp.array([[True], [True], [False]])
    adv, _ = gae_advantages(rewards, values, next_values, terminated, done, gamma=gamma, lam=lam)
    # t=2: 3 + 0.5*40 - 30 = -7 ; t=1: 2 + 0 - 20 = -18 (cut) ; t=0: 1 + 0.5*100 - 10 = 41 (cut)
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [41.0, -18.0, -7.0])


def test_gae_unroll_does_not_change_result():
    d = _episode_rollout(np.random.default_rng(1), T=20, N=3)
    done = d["terminated"] | d["truncated"]
    args = (d["rewards"], d["values"], _next_values(d), d["terminated"], done)
    args = tuple(jnp.asarray(a, jnp.float32) for a in args)
    a1, _ = gae_advantages(*args, gamma=0.99, lam=0.95, unroll=1)
    a16, _ = gae_advantages(*args, gamma=0.99, lam=0.95, unroll=16)
    np.testing.assert_allclose(np.asarray(a1), np.asarray(a16), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "bad,shape",
    [
        ("values", (9, 4)),  # [T + 1, N]: the bootstrap row left in
        ("values", (8, 1)),  # a column: would broadcast to [T, N] silently
        ("done", (8,)),  # one flag per step for all envs: would broadcast over the wrong axis
        ("next_values", (4, 8)),  # transposed
    ],
)
def test_mismatched_shapes_raise_when_traced(bad: str, shape: tuple[int, ...]):
    args = {k: jnp.zeros((8, 4)) for k in ("rewards", "values", "next_values", "terminated", "done")}
    args[bad] = jnp.zeros(shape)
    with pytest.raises(
        AssertionError, match=r"gae_advantages: rewards, values, next_values, terminated, done"
    ):
        jax.jit(gae_advantages, static_argnames=("gamma", "lam"))(**args, gamma=0.99, lam=0.95)
