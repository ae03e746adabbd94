"""Action distributions for policies: categorical, and Gaussian either clipped at the env or tanh-squashed.

Small and jittable; each has ``sample(key)``, ``log_prob(action)`` and ``entropy()`` over a leading batch shape.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["Categorical", "Gaussian", "TanhGaussian"]

_LOG_2PI = math.log(2.0 * math.pi)


@struct.dataclass
class Categorical:
    logits: jax.Array  # [..., A]

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.categorical(key, self.logits)

    def log_prob(self, action: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), -1)[..., 0]

    def entropy(self) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        return -(jnp.exp(logp) * logp).sum(-1)

    def mode(self) -> jax.Array:
        return self.logits.argmax(-1)


@struct.dataclass
class Gaussian:
    """Diagonal Gaussian; the env clips the sampled action to its bounds (the log-prob is of the raw sample)."""

    mean: jax.Array  # [..., D]
    log_std: jax.Array  # [..., D] or [D]

    def sample(self, key: jax.Array) -> jax.Array:
        return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape)

    def log_prob(self, action: jax.Array) -> jax.Array:
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return (-0.5 * z * z - self.log_std - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self) -> jax.Array:
        return jnp.broadcast_to(0.5 + 0.5 * _LOG_2PI + self.log_std, self.mean.shape).sum(-1)

    def mode(self) -> jax.Array:
        return self.mean


@struct.dataclass
class TanhGaussian:
    """``a = low + (high - low) (tanh(u) + 1) / 2`` with ``u ~ N(mean, std)`` (SAC-style squashing).

    ``log_prob`` includes the change-of-variables term; ``entropy`` returns the entropy of the pre-squash
    Gaussian (the squashed one has no closed form; it is the usual surrogate for an entropy bonus).
    """

    mean: jax.Array
    log_std: jax.Array
    low: jax.Array
    high: jax.Array

    def _squash(self, u: jax.Array) -> jax.Array:
        return self.low + (self.high - self.low) * (jnp.tanh(u) + 1.0) / 2.0

    def sample(self, key: jax.Array) -> jax.Array:
        return self._squash(Gaussian(self.mean, self.log_std).sample(key))

    def log_prob(self, action: jax.Array) -> jax.Array:
        y = jnp.clip(2.0 * (action - self.low) / (self.high - self.low) - 1.0, -1.0 + 1e-6, 1.0 - 1e-6)
        u = jnp.arctanh(y)
        # d a / d u = (high - low) / 2 * (1 - tanh(u)^2)
        log_det = jnp.log((self.high - self.low) / 2.0) + jnp.log1p(-y * y)
        return Gaussian(self.mean, self.log_std).log_prob(u) - jnp.broadcast_to(log_det, u.shape).sum(-1)

    def entropy(self) -> jax.Array:
        return Gaussian(self.mean, self.log_std).entropy()

    def mode(self) -> jax.Array:
        return self._squash(self.mean)
