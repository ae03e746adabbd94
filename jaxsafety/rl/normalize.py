"""Running statistics for observation normalisation and reward scaling (as in SB3's VecNormalize / CleanRL).

Functional: the statistics are a pytree carried in the training state and updated from a batch of vectorised
environments at once with the parallel-variance formula (Chan et al. 1979).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["RunningMeanStd", "normalize_obs", "scale_rewards"]


@struct.dataclass
class RunningMeanStd:
    """Mean and (population) variance of every sample seen so far, per feature (shape ``shape``)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @staticmethod
    def create(shape: tuple[int, ...] = (), count: float = 1e-4) -> RunningMeanStd:
        """Empty statistics: mean 0, var 1 with pseudo-count ``count`` (SB3's ``epsilon``; it keeps the first
        normalisation finite). ``count=0`` makes the statistics exactly those of the data merged afterwards."""
        return RunningMeanStd(jnp.zeros(shape), jnp.ones(shape), jnp.asarray(count, jnp.float32))

    def update(self, batch: jax.Array) -> RunningMeanStd:
        """Merge the statistics of ``batch`` ``[B, *shape]`` (leading axis = samples)."""
        b_mean, b_var, b_count = batch.mean(0), batch.var(0), batch.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + jnp.square(delta) * self.count * b_count / total
        return RunningMeanStd(mean, m2 / total, total)


def normalize_obs(stats: RunningMeanStd, obs: jax.Array, clip: float = 10.0) -> jax.Array:
    """``clip((obs - mean) / sqrt(var + 1e-8), -clip, clip)``."""
    return jnp.clip((obs - stats.mean) / jnp.sqrt(stats.var + 1e-8), -clip, clip)


def scale_rewards(
    stats: RunningMeanStd,
    returns: jax.Array,
    rewards: jax.Array,
    done: jax.Array,
    gamma: float,
    clip: float = 10.0,
) -> tuple[RunningMeanStd, jax.Array, jax.Array]:
    """Reward scaling by the std of the discounted return (Engstrom et al. 2020): update the running return
    ``G <- gamma G (1 - done_prev) + r`` per env, its statistics, and return ``r / std(G)``.

    ``returns`` [N] is the per-env running discounted return *before* this step; ``done`` ends it after the step.
    Returns ``(stats, new_returns, scaled_rewards)``.
    """
    g = returns * gamma + rewards
    stats = stats.update(g)
    scaled = jnp.clip(rewards / jnp.sqrt(stats.var + 1e-8), -clip, clip)
    return stats, g * (1.0 - done.astype(g.dtype)), scaled
