"""PPO objective pieces (Schulman et al. 2017), each a pure function over flat batches.

Sign convention: every function returns a quantity to *minimise*.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "approx_kl_k1",
    "approx_kl_k3",
    "clip_fraction",
    "clipped_policy_loss",
    "clipped_value_loss",
    "normalize_advantages",
]


def normalize_advantages(adv: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``(adv - mean) / (std + eps)`` over the whole (mini)batch."""
    return (adv - adv.mean()) / (adv.std() + eps)


def clipped_policy_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, clip_eps: float) -> jax.Array:
    """``-E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)]`` with ``rho = exp(logp - old_logp)`` (PPO eq. 7)."""
    ratio = jnp.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    return -jnp.minimum(unclipped, clipped).mean()


def clipped_value_loss(
    value: jax.Array, old_value: jax.Array, target: jax.Array, clip_eps: float | None
) -> jax.Array:
    """``0.5 E[max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)]``; plain ``0.5 E[(V - R)^2]`` when
    ``clip_eps`` is None (the clipped form follows OpenAI baselines' ppo2)."""
    unclipped = jnp.square(value - target)
    if clip_eps is None:
        return 0.5 * unclipped.mean()
    v_clipped = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum(unclipped, jnp.square(v_clipped - target)).mean()


def approx_kl_k1(logp: jax.Array, old_logp: jax.Array) -> jax.Array:
    """``E_old[log p_old - log p]``: unbiased estimator of KL(old || new), high variance (Schulman 2020, k1)."""
    return (old_logp - logp).mean()


def approx_kl_k3(logp: jax.Array, old_logp: jax.Array) -> jax.Array:
    """``E_old[(r - 1) - log r]`` with ``r = p / p_old``: unbiased, non-negative, low variance (Schulman 2020, k3)."""
    log_ratio = logp - old_logp
    return (jnp.expm1(log_ratio) - log_ratio).mean()


def clip_fraction(logp: jax.Array, old_logp: jax.Array, clip_eps: float) -> jax.Array:
    """Fraction of samples whose probability ratio left ``[1 - eps, 1 + eps]``."""
    return (jnp.abs(jnp.exp(logp - old_logp) - 1.0) > clip_eps).astype(jnp.float32).mean()
