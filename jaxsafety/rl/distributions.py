"""Action distributions for policies: categorical, and Gaussian either clipped at the env or tanh-squashed.

Small and jittable pytrees; each has ``sample(key)``, ``log_prob(action)``, ``entropy()`` and ``mode()`` over a
leading batch shape ``[...]`` (continuous actions carry a trailing action axis ``D``, which ``log_prob`` and
``entropy`` sum over).

Sampling is also split into drawing standard noise (``noise(key, shape)``, a static method: standard Gumbel for
the categorical, standard normal for the Gaussians) and a deterministic transform of it (``sample_from_noise``).
A rollout can then draw the noise of all its steps in one batched call outside its ``lax.scan``: on CPU every
threefry call inside a loop body is a small loop of its own, so this removes per-step latency.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["Categorical", "Gaussian", "TanhGaussian"]

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


@struct.dataclass
class Categorical:
    """Softmax distribution over ``A`` actions given unnormalised ``logits`` ``[..., A]``."""

    logits: jax.Array  # [..., A]

    @staticmethod
    def noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Standard Gumbel noise of ``shape`` (``[..., A]``) for :meth:`sample_from_noise`."""
        return jax.random.gumbel(key, shape)

    def sample_from_noise(self, noise: jax.Array) -> jax.Array:
        """Gumbel-max: ``argmax(logits + noise)`` ``[...]`` is a sample when ``noise`` is standard Gumbel."""
        return (self.logits + noise).argmax(-1)

    def sample(self, key: jax.Array) -> jax.Array:
        """Integer actions ``[...]``."""
        return self.sample_from_noise(self.noise(key, self.logits.shape))

    def log_prob(self, action: jax.Array) -> jax.Array:
        """``log p(action)`` ``[...]`` for integer ``action`` ``[...]``."""
        logp = jax.nn.log_softmax(self.logits)
        return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), -1)[..., 0]

    def entropy(self) -> jax.Array:
        """``-sum_a p(a) log p(a)`` ``[...]``."""
        logp = jax.nn.log_softmax(self.logits)
        return -(jnp.exp(logp) * logp).sum(-1)

    def mode(self) -> jax.Array:
        return self.logits.argmax(-1)


@struct.dataclass
class Gaussian:
    """Diagonal Gaussian ``N(mean, exp(log_std)^2)``; a policy using it lets the env clip the sampled action to
    its bounds, and the log-prob is of the raw (unclipped) sample, as in SB3/CleanRL."""

    mean: jax.Array  # [..., D]
    log_std: jax.Array  # [..., D] or [D]

    @staticmethod
    def noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Standard normal noise of ``shape`` (``[..., D]``) for :meth:`sample_from_noise`."""
        return jax.random.normal(key, shape)

    def sample_from_noise(self, noise: jax.Array) -> jax.Array:
        """``mean + std * noise`` (reparameterised sample)."""
        return self.mean + jnp.exp(self.log_std) * noise

    def sample(self, key: jax.Array) -> jax.Array:
        return self.sample_from_noise(self.noise(key, self.mean.shape))

    def log_prob(self, action: jax.Array) -> jax.Array:
        """``sum_d log N(action_d; mean_d, std_d)`` ``[...]``."""
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return (-0.5 * z * z - self.log_std - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self) -> jax.Array:
        """``sum_d (1/2 + log(2 pi)/2 + log std_d)`` ``[...]``."""
        return jnp.broadcast_to(0.5 + 0.5 * _LOG_2PI + self.log_std, self.mean.shape).sum(-1)

    def mode(self) -> jax.Array:
        return self.mean


@struct.dataclass
class TanhGaussian:
    """``a = low + (high - low) (tanh(u) + 1) / 2`` with ``u ~ N(mean, std)`` (squashing as in SAC, Haarnoja et
    al. 2018, appendix C).

    ``log_prob(a) = log N(u) - sum_d log((high - low)/2 (1 - tanh(u)^2))`` (change of variables). Inverting the
    squash loses precision where ``tanh`` saturates, so a learner should keep the pre-squash sample ``u``
    (``sample_pre_squash``) and score it with ``log_prob_pre_squash``, which is exact; PPO does. ``entropy``
    returns the entropy of the pre-squash Gaussian (the squashed one has no closed form; the usual surrogate for
    an entropy bonus).
    """

    mean: jax.Array  # [..., D]
    log_std: jax.Array  # [..., D] or [D]
    low: jax.Array  # [D]
    high: jax.Array  # [D]

    noise = staticmethod(Gaussian.noise)

    def squash(self, u: jax.Array) -> jax.Array:
        """Pre-squash sample ``u`` ``[..., D]`` -> action in ``[low, high]``."""
        return self.low + (self.high - self.low) * (jnp.tanh(u) + 1.0) / 2.0

    def sample_pre_squash(self, key: jax.Array) -> jax.Array:
        """``u ~ N(mean, std)`` ``[..., D]``; the action is ``squash(u)``."""
        return Gaussian(self.mean, self.log_std).sample(key)

    def sample_pre_squash_from_noise(self, noise: jax.Array) -> jax.Array:
        """``u = mean + std * noise``; the action is ``squash(u)``."""
        return Gaussian(self.mean, self.log_std).sample_from_noise(noise)

    def sample_from_noise(self, noise: jax.Array) -> jax.Array:
        return self.squash(self.sample_pre_squash_from_noise(noise))

    def log_det_jacobian(self, u: jax.Array) -> jax.Array:
        """``sum_d log |d a_d / d u_d|`` ``[...]``, using ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``
        (stable for large ``|u|``)."""
        log_det = jnp.log((self.high - self.low) / 2.0) + 2.0 * (_LOG_2 - u - jax.nn.softplus(-2.0 * u))
        return log_det.sum(-1)

    def log_prob_pre_squash(self, u: jax.Array) -> jax.Array:
        """``log p(squash(u))`` ``[...]`` computed from the pre-squash sample (exact)."""
        return Gaussian(self.mean, self.log_std).log_prob(u) - self.log_det_jacobian(u)

    def sample(self, key: jax.Array) -> jax.Array:
        return self.squash(self.sample_pre_squash(key))

    def log_prob(self, action: jax.Array) -> jax.Array:
        """``log p(action)`` ``[...]`` by inverting the squash (actions at the bounds are pulled inside by 1e-6)."""
        y = jnp.clip(2.0 * (action - self.low) / (self.high - self.low) - 1.0, -1.0 + 1e-6, 1.0 - 1e-6)
        return self.log_prob_pre_squash(jnp.arctanh(y))

    def entropy(self) -> jax.Array:
        return Gaussian(self.mean, self.log_std).entropy()

    def mode(self) -> jax.Array:
        return self.squash(self.mean)
