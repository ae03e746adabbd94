"""PPO objective pieces (Schulman et al. 2017), each a pure function over batches of any shape.

Sign convention: every function returns a quantity to *minimise*. Every mean takes an optional ``mask`` (same
shape as the per-sample quantities, 1 = counts, 0 = padding): the mean then runs over the masked-in entries only
(:func:`masked_mean`), as token-level LM PPO needs for padded responses. ``mask=None`` is the plain mean.
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
    "masked_mean",
    "normalize_advantages",
]


def masked_mean(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``mean(x)``, or ``sum(x * mask) / max(sum(mask), 1)`` over the entries with ``mask`` != 0."""
    if mask is None:
        return x.mean()
    mask = mask.astype(x.dtype)
    return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def normalize_advantages(adv: jax.Array, eps: float = 1e-8, *, mask: jax.Array | None = None) -> jax.Array:
    """``(adv - mean) / (std + eps)`` over the whole (mini)batch, or over its masked-in entries (masked-out
    entries come back as 0)."""
    if mask is None:
        return (adv - adv.mean()) / (adv.std() + eps)
    mean = masked_mean(adv, mask)
    std = jnp.sqrt(masked_mean(jnp.square(adv - mean), mask))
    return jnp.where(mask.astype(bool), (adv - mean) / (std + eps), 0.0)


def clipped_policy_loss(
    logp: jax.Array, old_logp: jax.Array, adv: jax.Array, clip_eps: float, *, mask: jax.Array | None = None
) -> jax.Array:
    """``-E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)]`` with ``rho = exp(logp - old_logp)`` (PPO eq. 7)."""
    ratio = jnp.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    return -masked_mean(jnp.minimum(unclipped, clipped), mask)


def clipped_value_loss(
    value: jax.Array,
    old_value: jax.Array,
    target: jax.Array,
    clip_eps: float | None,
    *,
    mask: jax.Array | None = None,
) -> jax.Array:
    """``0.5 E[max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)]``; plain ``0.5 E[(V - R)^2]`` when
    ``clip_eps`` is None (the clipped form follows OpenAI baselines' ppo2)."""
    unclipped = jnp.square(value - target)
    if clip_eps is None:
        return 0.5 * masked_mean(unclipped, mask)
    v_clipped = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
    return 0.5 * masked_mean(jnp.maximum(unclipped, jnp.square(v_clipped - target)), mask)


def approx_kl_k1(logp: jax.Array, old_logp: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    """``E_old[log p_old - log p]``: unbiased estimator of KL(old || new), high variance (Schulman 2020, k1)."""
    return masked_mean(old_logp - logp, mask)


def approx_kl_k3(logp: jax.Array, old_logp: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    """``E_old[(r - 1) - log r]`` with ``r = p / p_old``: unbiased, non-negative, low variance (Schulman 2020, k3)."""
    log_ratio = logp - old_logp
    return masked_mean(jnp.expm1(log_ratio) - log_ratio, mask)


def clip_fraction(
    logp: jax.Array, old_logp: jax.Array, clip_eps: float, *, mask: jax.Array | None = None
) -> jax.Array:
    """Fraction of samples whose probability ratio left ``[1 - eps, 1 + eps]``."""
    return masked_mean((jnp.abs(jnp.exp(logp - old_logp) - 1.0) > clip_eps).astype(jnp.float32), mask)
