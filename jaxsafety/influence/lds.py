"""Linear datamodeling score (LDS): how well influence scores predict retraining on random subsets.

Park et al. 2023 ("TRAK: Attributing model behavior at scale", arXiv 2303.14186, sec. 2.2 / eq. 5), used by
Grosse et al. 2023 and kronfluence to compare attribution methods. Draw ``M`` random subsets ``S_j`` of the
training set, each holding a fraction ``alpha`` (0.5) of it; retrain the model on each subset (same init, same
optimiser schedule: only the subset changes); measure each query's loss ``f_q(theta_{S_j})``. The attribution
scores predict the subset's outcome additively, ``g_q(S) = sum_{m in S} tau(q, m)``, and

    LDS(q) = Spearman_j( g_q(S_j), f_q(theta_{S_j}) )      (one rank correlation per query over the M subsets)

Sign: :func:`jaxsafety.influence.pairwise_scores` follows kronfluence, ``score[q, m] > 0`` means training on
``z_m`` LOWERS the query loss, so the predicted query loss of subset ``S`` is ``-sum_{m in S} score[q, m]``
(:func:`predicted_losses`); the constant ``sum_{all m}`` term of the leave-the-complement-out prediction drops out
of a rank correlation, and so does the ``1/N`` scale of eq. 7.

Retraining: :func:`retrain_subsets` runs a user's ``train_fn(weights [N], key) -> measurements`` on every subset
mask in ONE ``jit(vmap(...))`` program, the subset entering as a 0/1 weight on the per-example losses.

    masks = subset_masks(jax.random.key(0), num_subsets=64, num_train=N)          # [M, N] bool, alpha = 0.5
    actual = retrain_subsets(train_and_measure, masks, jax.random.key(1))         # [M, Q] query losses
    per_query = lds(scores, masks, actual)                                        # [Q]; report its mean
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.config import check, check_range

__all__ = ["lds", "predicted_losses", "retrain_subsets", "spearman", "subset_masks"]

HI = jax.lax.Precision.HIGHEST


def subset_masks(key: jax.Array, num_subsets: int, num_train: int, alpha: float = 0.5) -> jax.Array:
    """``[num_subsets, num_train]`` boolean masks, each with exactly ``round(alpha * num_train)`` members drawn
    uniformly without replacement (TRAK's fixed-size random subsets), one independent key per subset."""
    check_range("num_subsets", num_subsets, ge=2, integer=True)
    check_range("num_train", num_train, ge=2, integer=True)
    check_range("alpha", alpha, gt=0, lt=1)
    size = round(alpha * num_train)
    check(
        0 < size < num_train,
        "alpha",
        alpha,
        f"numbers with 0 < round(alpha * num_train) < {num_train} members",
    )
    return _subset_masks(key, num_subsets, num_train, size)


@functools.partial(jax.jit, static_argnames=("num_subsets", "num_train", "size"))
def _subset_masks(key, num_subsets, num_train, size):
    def one(k):
        return jnp.argsort(jax.random.permutation(k, num_train)) < size

    return jax.vmap(one)(jax.random.split(key, num_subsets))


def retrain_subsets(
    train_fn: Callable[..., Any], masks: jax.Array, key: jax.Array, *args: Any, dtype: Any = jnp.float32
) -> Any:
    """Retrain once per subset: ``jit(vmap(train_fn))`` over the rows of ``masks`` ``[M, N]`` as 0/1 example
    weights (cast to ``dtype``), with the SAME ``key`` and ``args`` for every subset (same init and schedule, so
    the subset is the only difference). ``train_fn(weights [N], key, *args)`` trains with per-example losses
    multiplied by ``weights`` and returns its measurements (e.g. the query losses ``[Q]``); the result has a
    leading ``[M]`` axis. Keep the outputs small (measurements rather than parameters) to bound memory."""
    masks = jnp.asarray(masks)
    check(masks.ndim == 2 and masks.shape[0] >= 1, "masks", masks.shape, "a [num_subsets, num_train] array")
    run = jax.jit(jax.vmap(train_fn, in_axes=(0, None) + (None,) * len(args)))
    return run(masks.astype(dtype), key, *args)


def _average_ranks(x: jax.Array) -> jax.Array:
    """1-based ranks of a vector, ties given their average rank (as scipy.stats.rankdata's default)."""
    s = jnp.sort(x)
    below = jnp.searchsorted(s, x, side="left")
    upto = jnp.searchsorted(s, x, side="right")
    return (below + upto + 1) / 2.0


@jax.jit
def spearman(x: jax.Array, y: jax.Array) -> jax.Array:
    """Spearman rank correlation of the COLUMNS of ``x`` and ``y`` (both ``[M, Q]``): ``[Q]``, the Pearson
    correlation of average ranks (ties averaged, as scipy.stats.spearmanr); NaN where a column is constant."""
    rx = jax.vmap(_average_ranks, in_axes=1, out_axes=1)(x)
    ry = jax.vmap(_average_ranks, in_axes=1, out_axes=1)(y)
    rx, ry = rx - rx.mean(0), ry - ry.mean(0)
    return jnp.sum(rx * ry, 0) / jnp.sqrt(jnp.sum(rx * rx, 0) * jnp.sum(ry * ry, 0))


@jax.jit
def predicted_losses(scores: jax.Array, masks: jax.Array) -> jax.Array:
    """Group-additive prediction of each subset's query losses, ``[M, Q]``: ``-masks @ scores^T`` for
    ``scores [Q, N]`` (positive = lowers the query loss, :func:`~jaxsafety.influence.pairwise_scores`) and
    ``masks [M, N]``, up to a per-query constant and scale (irrelevant to the rank correlation)."""
    return -jnp.einsum("mn,qn->mq", jnp.asarray(masks, float), scores, precision=HI)


def lds(scores: jax.Array, masks: jax.Array, actual: jax.Array) -> jax.Array:
    """Linear datamodeling score per query, ``[Q]`` (Park et al. 2023 eq. 5): Spearman over the ``M`` subsets
    between :func:`predicted_losses` of ``scores [Q, N]`` on ``masks [M, N]`` and the ``actual [M, Q]`` query
    losses after retraining on each subset. Report the mean over queries. ``actual`` must be a loss (or any
    measurement that training on helpful examples LOWERS); for a measurement that helpful examples raise, pass
    its negation."""
    q, n = np.shape(scores) if np.ndim(scores) == 2 else (None, None)
    check(q is not None, "scores", np.shape(scores), "a [num_queries, num_train] array")
    check(np.shape(masks)[1:] == (n,) and np.ndim(masks) == 2, "masks", np.shape(masks), f"a [M, {n}] array")
    m = np.shape(masks)[0]
    check(m >= 2, "masks", np.shape(masks), "at least 2 subsets (rows)")
    check(np.shape(actual) == (m, q), "actual", np.shape(actual), f"a [{m}, {q}] array (subsets x queries)")
    # numpy float64 inputs become the default float without a warning when x64 is off
    scores, actual = (
        jnp.asarray(a, jax.dtypes.canonicalize_dtype(np.asarray(a).dtype)) for a in (scores, actual)
    )
    return spearman(predicted_losses(scores, jnp.asarray(masks)), actual)
