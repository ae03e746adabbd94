"""Generalised advantage estimation (Schulman et al. 2016), done- and truncation-aware, as one reverse ``lax.scan``.

For a transition ``s_t -> s'_t`` with reward ``r_t``::

    delta_t = r_t + gamma * (1 - terminated_t) * V(s'_t) - V(s_t)
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},        done_t = terminated_t or truncated_t

On *termination* the future is worth nothing; on *truncation* (a time limit) it is bootstrapped with the value of
the true final observation ``s'_t`` (not the auto-reset one), but the advantage recursion still stops because the
next row of the rollout belongs to a new episode (Pardo et al. 2018, "Time limits in reinforcement learning").
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

__all__ = ["gae_advantages"]


def gae_advantages(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    *,
    gamma: float,
    lam: float,
    unroll: int = 16,
) -> tuple[jax.Array, jax.Array]:
    """Advantages and value targets, each shaped like ``rewards`` (time axis first: ``[T, ...]``).

    ``values[t] = V(s_t)``; ``next_values[t] = V(s'_t)`` (for a non-final step this is ``values[t + 1]``; for a
    final step, the value of the final observation). ``terminated`` / ``done`` are booleans or 0/1 floats.
    Returns ``(advantages, returns = advantages + values)``. ``unroll`` is the scan's unroll factor (the body is a
    handful of tiny ops, so loop overhead dominates unless unrolled; it does not change the result).

    The five arrays must have one shape (checked when traced, ``AssertionError`` listing their shapes): a
    ``values`` of ``[T + 1, ...]`` or a ``[T, 1]`` column would otherwise fail deep in the scan or broadcast silently.
    """
    chex.assert_equal_shape(
        [rewards, values, next_values, terminated, done],
        custom_message="gae_advantages: rewards, values, next_values, terminated, done (shapes listed in this order) "
        "must have one shape [T, ...]",
    )
    term = terminated.astype(jnp.float32)
    cont = 1.0 - done.astype(jnp.float32)
    deltas = rewards + gamma * (1.0 - term) * next_values - values

    def backward(carry: jax.Array, x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        delta, c = x
        adv = delta + gamma * lam * c * carry
        return adv, adv

    _, adv = jax.lax.scan(backward, jnp.zeros_like(deltas[0]), (deltas, cont), reverse=True, unroll=unroll)
    return adv, adv + values
