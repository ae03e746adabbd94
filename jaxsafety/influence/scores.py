"""Influence scores from curvature factors: preconditioned query gradients, pairwise scores, token-wise scores.

Grosse et al. 2023 (arXiv 2308.03296) eq. 7 / sec. 3: the influence of training sequence ``z_m`` on a query's
measurement ``f`` is ``-grad f^T (G + lambda I)^{-1} grad L(z_m)``; with a block-diagonal (per-layer) curvature,

    score[q, m] = sum_layers < H_l^{-1} grad_l f_q , grad_l L(z_m) >          (Frobenius inner product)

(the sign convention of kronfluence: positive = training on ``z_m`` lowers the query loss). Per-layer gradients
are ``sum_t x_t^T g_t`` from the layer taps; a train chunk's ``[B, d_in, d_out]`` gradients are formed once and
contracted with every query. Sec. 3.2.3: a preconditioned query gradient ``P`` may be replaced by its top-k SVD
``P ~ sum_k s_k u_k v_k^T``, so ``<P, sum_t x_t^T g_t> = sum_{t,k} s_k (x_t u_k)(g_t v_k)`` never forms the train
gradient. The token-wise decomposition (sec. 5.3) splits a train sequence's score over its tokens:
``score[q, t] = x_t P_q g_t^T`` summed over layers, whose sum over ``t`` is the sequence's score.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxsafety.influence.factors import (
    HI,
    Batch,
    Batches,
    Factors,
    InfluenceConfig,
    chunks,
    layer_matrices,
    next_token_loss,
    precondition,
)
from jaxsafety.models import CausalLM, layer_taps

__all__ = ["QueryGradients", "pairwise_scores", "query_gradients", "token_influence"]

LossFn = Callable[[jax.Array, Batch], jax.Array]


@struct.dataclass
class QueryGradients:
    """Preconditioned query gradients per layer: whole ``full[name] [Q, d_in, d_out]``, or low-rank
    ``left[name] [Q, d_in, k]`` (singular values folded in) and ``right[name] [Q, d_out, k]`` with
    ``P ~ left @ right^T``."""

    full: dict[str, jax.Array] | None = None
    left: dict[str, jax.Array] | None = None
    right: dict[str, jax.Array] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.full if self.full is not None else self.left)

    @property
    def num_queries(self) -> int:
        first = next(iter((self.full if self.full is not None else self.left).values()))
        return int(first.shape[0])


def _check_factors(factors: Factors, config: InfluenceConfig) -> None:
    if not isinstance(factors, Factors):
        raise ValueError(f"factors of type {type(factors).__name__} is invalid: accepted values are Factors")
    if factors.include_bias != config.include_bias:
        raise ValueError(
            f"config.include_bias={config.include_bias} is invalid: accepted values are the factors' "
            f"include_bias ({factors.include_bias})"
        )


@functools.partial(jax.jit, static_argnames=("graphdef", "names", "include_bias", "loss_fn"))
def _example_grads(graphdef, state, batch, names, include_bias, loss_fn):
    model = nnx.merge(graphdef, state)
    mats = layer_matrices(layer_taps(model, loss_fn, batch, names), batch, include_bias)
    return {n: jnp.einsum("bti,bto->bio", x, g, precision=HI) for n, (x, g) in mats.items()}


@functools.partial(jax.jit, static_argnames=("rank",))
def _compress(p: jax.Array, rank: int) -> tuple[jax.Array, jax.Array]:
    u, s, vt = jnp.linalg.svd(p, full_matrices=False)
    return u[..., :rank] * s[..., None, :rank], jnp.swapaxes(vt[..., :rank, :], -1, -2)


def query_gradients(
    model: CausalLM,
    factors: Factors,
    queries: Batches,
    config: InfluenceConfig,
    loss_fn: LossFn = next_token_loss,
) -> QueryGradients:
    """Per-layer gradients of each query's ``loss_fn`` (default: summed next-token NLL over ``loss_mask``),
    preconditioned with the damped inverse curvature of ``factors``, optionally compressed to rank
    ``config.query_rank``. ``queries``: a mapping ``tokens [Q, T]`` (+ ``attention_mask``, ``loss_mask``) or
    batches of them (:data:`jaxsafety.influence.factors.Batches`)."""
    _check_factors(factors, config)
    names = tuple(factors.layers)
    graphdef, state = nnx.split(model)
    parts: dict[str, list[jax.Array]] = {n: [] for n in names}
    for batch in chunks(queries, config.chunk_size):
        grads = _example_grads(graphdef, state, batch, names, factors.include_bias, loss_fn)
        for n in names:
            parts[n].append(precondition(factors, n, grads[n]))
    if not parts[names[0]]:
        raise ValueError("queries is invalid: accepted values are batches with at least one query")
    full = {n: jnp.concatenate(p, axis=0) for n, p in parts.items()}
    if config.query_rank is None:
        return QueryGradients(full=full)
    left, right = {}, {}
    for n, p in full.items():
        rank = min(config.query_rank, *p.shape[1:])
        left[n], right[n] = _compress(p, rank)
    return QueryGradients(left=left, right=right)


@functools.partial(jax.jit, static_argnames=("graphdef", "names", "include_bias", "loss_fn"))
def _score_chunk(graphdef, state, batch, qg: QueryGradients, names, include_bias, loss_fn):
    """``[Q, B]`` scores of one train chunk against every (preconditioned) query."""
    model = nnx.merge(graphdef, state)
    mats = layer_matrices(layer_taps(model, loss_fn, batch, names), batch, include_bias)
    total = 0.0
    for n, (x, g) in mats.items():
        if qg.full is not None:
            grad = jnp.einsum("bti,bto->bio", x, g, precision=HI)
            total = total + jnp.einsum("qio,bio->qb", qg.full[n], grad, precision=HI)
        else:
            xu = jnp.einsum("bti,qik->qbtk", x, qg.left[n], precision=HI)
            gv = jnp.einsum("bto,qok->qbtk", g, qg.right[n], precision=HI)
            total = total + jnp.sum(xu * gv, axis=(2, 3))
    return total


def _as_query_gradients(model, factors, queries, config, loss_fn) -> QueryGradients:
    if isinstance(queries, QueryGradients):
        if set(queries.names) != set(factors.layers):
            raise ValueError(
                f"queries' layers {queries.names} are invalid: accepted values are the factors' layers "
                f"{tuple(factors.layers)}"
            )
        return queries
    return query_gradients(model, factors, queries, config, loss_fn)


def pairwise_scores(
    model: CausalLM,
    factors: Factors,
    queries: QueryGradients | Batches,
    train_batches: Batches,
    config: InfluenceConfig,
    loss_fn: LossFn = next_token_loss,
) -> jax.Array:
    """Influence scores ``[num_queries, num_train]``: ``sum_layers <H^-1 grad f_q, grad L(z_m)>`` with the
    training loss ``loss_fn`` (default summed next-token NLL) on each train document, streamed in chunks of
    ``config.chunk_size`` (one jitted program per chunk shape). ``queries``: :func:`query_gradients` output, or
    query batches (preconditioned here with the same ``loss_fn``)."""
    _check_factors(factors, config)
    qg = _as_query_gradients(model, factors, queries, config, loss_fn)
    names = tuple(factors.layers)
    graphdef, state = nnx.split(model)
    out = [
        _score_chunk(graphdef, state, batch, qg, names, factors.include_bias, loss_fn)
        for batch in chunks(train_batches, config.chunk_size)
    ]
    if not out:
        raise ValueError("train_batches is invalid: accepted values are a corpus with at least one example")
    return jnp.concatenate(out, axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef", "names", "include_bias", "loss_fn"))
def _token_chunk(graphdef, state, batch, qg: QueryGradients, names, include_bias, loss_fn):
    model = nnx.merge(graphdef, state)
    mats = layer_matrices(layer_taps(model, loss_fn, batch, names), batch, include_bias)
    total = 0.0
    for n, (x, g) in mats.items():
        if qg.full is not None:
            xp = jnp.einsum("bti,qio->qbto", x, qg.full[n], precision=HI)
            total = total + jnp.einsum("qbto,bto->qbt", xp, g, precision=HI)
        else:
            xu = jnp.einsum("bti,qik->qbtk", x, qg.left[n], precision=HI)
            gv = jnp.einsum("bto,qok->qbtk", g, qg.right[n], precision=HI)
            total = total + jnp.sum(xu * gv, axis=3)
    return total


def token_influence(
    model: CausalLM,
    factors: Factors,
    queries: QueryGradients | Batches,
    documents: Mapping[str, Any],
    config: InfluenceConfig,
    loss_fn: LossFn = next_token_loss,
) -> jax.Array:
    """Token-wise decomposition ``[Q, B, T]`` of the influence of train documents ``documents`` (``tokens [B,
    T]``, e.g. ``B = 1``): entry ``[q, b, t] = sum_layers x_t P_q g_t^T``, where ``g_t`` is the gradient of the
    document's loss w.r.t. the layer output at position ``t``; summed over ``t`` it is
    :func:`pairwise_scores`."""
    _check_factors(factors, config)
    if not isinstance(documents, Mapping) or "tokens" not in documents:
        raise ValueError("documents is invalid: accepted values are a mapping with 'tokens' [B, T]")
    qg = _as_query_gradients(model, factors, queries, config, loss_fn)
    graphdef, state = nnx.split(model)
    return _token_chunk(
        graphdef, state, dict(documents), qg, tuple(factors.layers), factors.include_bias, loss_fn
    )
