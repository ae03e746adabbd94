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

A ground truth to score attribution methods against: :func:`convex_head_problem` builds a convex problem (softmax
regression of the next token on a frozen random zoo Llama's final hidden states, only the LM head trains) whose
retraining on every subset is exact (float64 Newton), with its exact dense influence.

    problem = convex_head_problem(0, n_train=256, num_subsets=48)
    per_query = lds(problem.exact, problem.masks, problem.actual)                 # the first-order ceiling
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.config import check, check_range
from jaxsafety.models import Llama, LlamaConfig

__all__ = [
    "ConvexHeadProblem",
    "convex_head_problem",
    "lds",
    "predicted_losses",
    "retrain_subsets",
    "spearman",
    "subset_masks",
]

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


class ConvexHeadProblem(NamedTuple):
    """One seed's :func:`convex_head_problem`. ``model``: the zoo Llama with the full-data optimal head ``W*``
    loaded (rounded to float32); ``tokens [N, T]`` / ``queries [Q, T]`` (int32) the training documents and the
    queries; ``masks [M, N]`` (bool) the random halves; ``actual [M, Q]`` (float64) the query losses after exact
    retraining on each subset; ``full_losses [Q]`` (float64) the query losses under ``W*``; ``exact [Q, N]``
    (float64) the exact influence ``N grad f_q^T H^-1 grad L_m`` (scale convention in
    :func:`convex_head_problem`); ``retrain_s`` the seconds of the vmapped retraining (compile included);
    ``grad_max`` the max abs gradient of the objective at ``W*`` (Newton converged: ~1e-12) and ``hess_err`` the
    max abs difference of the closed-form Hessian from ``jax.hessian`` at ``W*``."""

    model: Llama
    tokens: np.ndarray
    queries: np.ndarray
    masks: np.ndarray
    actual: np.ndarray
    full_losses: np.ndarray
    exact: np.ndarray
    retrain_s: float
    grad_max: float
    hess_err: float


def convex_head_problem(
    seed: int,
    *,
    vocab: int = 12,
    seq_len: int = 8,
    d_model: int = 8,
    n_train: int = 256,
    n_query: int = 16,
    num_subsets: int = 48,
    l2: float = 1.0,
    newton_steps: int = 10,
) -> ConvexHeadProblem:
    """A ground truth for attribution methods where retraining is EXACT: a convex LM-head problem on the model zoo,
    retrained on the full set and on ``num_subsets`` random halves, with its exact dense influence.

    A random tiny zoo Llama (one block, ``d_model`` wide, 2 heads, ``d_ff = 2 d_model``, ``nnx.Rngs(seed)``) is
    frozen; ``n_train + n_query`` documents of ``seq_len`` random tokens in ``[0, vocab)`` where the next token is
    often (60 %) the current one plus one (keys ``seed + 1``, ``seed + 2``). Only the untied LM head
    ``W [d_model, vocab]`` trains, by softmax regression of the next token on the final hidden states: the
    objective ``sum_m c_m L_m(W) + 0.5 l2 |W|^2`` with ``L_m`` document ``m``'s summed next-token NLL (the last
    position predicts nothing) and ``c_m`` its 0/1 subset weight. It is strictly convex, so ``newton_steps``
    float64 Newton steps from zero (closed-form Hessian ``sum_k c_k (h_k h_k^T) kron (diag p_k - p_k p_k^T) +
    l2 I``, checked against ``jax.hessian``) reach each subset's unique optimum to machine precision: the query
    losses after retraining are a deterministic function of the subset. :func:`retrain_subsets` runs the full set
    (``W*``) and the :func:`subset_masks` (key ``seed + 10``, alpha 0.5) in one vmapped jit.

    Scale convention of ``exact``: ``N grad f_q(W*)^T H^-1 grad L_m(W*)`` (``H`` the Hessian of the full-data
    objective, ``N = n_train``), i.e. the influence through the MEAN GGN damped by ``l2 / N``, since
    ``H = N (mean GGN + l2 / N)``: the scale of :func:`~jaxsafety.influence.pairwise_scores` with
    ``InfluenceConfig(layers=("lm_head",), damping=l2 / n_train)``. Eq. 7's ``H^-1`` influence is ``exact / N``
    (the LDS and any rank correlation ignore the scale). Positive = training on ``m`` lowers the query loss.

    Used by ``tests/influence/test_lds.py`` and ``benchmarks/influence_lds.py`` (ours vs kronfluence). Cost:
    ``num_subsets + 1`` Newton retrainings of a ``d_model vocab`` square system; n_train 256, 48 subsets: ~20 s
    on a busy 2-core CPU. Raises ConfigError naming the field for bad sizes, RuntimeError if the closed-form
    Hessian disagrees with ``jax.hessian`` (> 1e-8).
    """
    check_range("seed", seed, ge=0, integer=True)
    check_range("vocab", vocab, ge=2, integer=True)
    check_range("seq_len", seq_len, ge=2, integer=True)
    check_range("d_model", d_model, ge=2, integer=True)
    check(d_model % 2 == 0, "d_model", d_model, "even numbers (2 heads)")
    check_range("n_train", n_train, ge=4, integer=True)
    check_range("n_query", n_query, ge=1, integer=True)
    check_range("num_subsets", num_subsets, ge=2, integer=True)
    check_range("l2", l2, gt=0)
    check_range("newton_steps", newton_steps, ge=1, integer=True)
    v, t, d, n, q = vocab, seq_len, d_model, n_train, n_query
    model = Llama(
        LlamaConfig(vocab_size=v, max_seq_len=t, d_model=d, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=2 * d),
        rngs=nnx.Rngs(seed),
    )
    tokens = jax.random.randint(jax.random.key(seed + 1), (n + q, t), 0, v)
    shifted = (jnp.roll(tokens, 1, axis=1) + 1) % v  # a learnable signal: next token = current + 1, often
    keep = jax.random.bernoulli(jax.random.key(seed + 2), 0.6, tokens.shape)
    tokens = jnp.where(keep, shifted, tokens).at[:, 0].set(tokens[:, 0]).astype(jnp.int32)
    hidden = np.asarray(model.forward(tokens).hidden, np.float64)  # [N + Q, T, D], frozen features
    targets = np.concatenate([tokens[:, 1:], tokens[:, :1]], axis=1)
    pair_w = np.ones((n + q, t))
    pair_w[:, -1] = 0.0  # the last position predicts nothing
    masks = subset_masks(jax.random.key(seed + 10), num_subsets, n)
    train_rows, query_rows = np.arange(n), np.arange(n, n + q)
    with jax.enable_x64():

        def doc_losses(x, rows):
            """Summed next-token NLL per document ``[len(rows)]`` under the head ``x`` (flat ``[D V]``)."""
            logp = jax.nn.log_softmax(jnp.einsum("ntd,dv->ntv", hidden[rows], x.reshape(d, v)), -1)
            nll = -jnp.take_along_axis(logp, targets[rows][..., None], -1)[..., 0]
            return jnp.sum(nll * pair_w[rows], axis=1)

        def objective(x, example_w):
            return jnp.sum(doc_losses(x, train_rows) * example_w) + 0.5 * l2 * jnp.sum(x * x)

        def hessian(x, example_w):
            """Softmax regression's Hessian in closed form (one matmul instead of ``D V`` passes of
            ``jax.hessian``; checked against ``jax.hessian`` at the optimum below)."""
            hk = hidden[train_rows].reshape(-1, d)
            ck = (pair_w[train_rows] * example_w[:, None]).reshape(-1)
            p = jax.nn.softmax(hk @ x.reshape(d, v), -1)
            diag = jnp.einsum("k,kd,ke,kv,vu->dveu", ck, hk, hk, p, jnp.eye(v)).reshape(d * v, d * v)
            u = (hk[:, :, None] * p[:, None, :]).reshape(-1, d * v)
            return diag - (u * ck[:, None]).T @ u + l2 * jnp.eye(d * v)

        def train_fn(example_w, key):
            # the same init (zero, from ``key``) and the same Newton steps for every subset
            x0 = 0.0 * jax.random.normal(key, (d * v,), jnp.float64)

            def step(x, _):
                return x - jnp.linalg.solve(hessian(x, example_w), jax.grad(objective)(x, example_w)), None

            x = jax.lax.scan(step, x0, None, length=newton_steps)[0]
            return doc_losses(x, query_rows), x

        @jax.jit
        def exact_influence(x_star):
            g_train = jax.jacrev(doc_losses)(x_star, train_rows)  # [N, D V]
            g_query = jax.jacrev(doc_losses)(x_star, query_rows)  # [Q, D V]
            hess = jax.hessian(objective)(x_star, jnp.ones(n))
            grad = jax.grad(objective)(x_star, jnp.ones(n))
            hess_err = jnp.max(jnp.abs(hess - hessian(x_star, jnp.ones(n))))
            return n * g_query @ jnp.linalg.solve(hess, g_train.T), jnp.max(jnp.abs(grad)), hess_err

        t0 = time.perf_counter()
        all_masks = jnp.concatenate([jnp.ones((1, n), bool), masks])
        losses, params = retrain_subsets(train_fn, all_masks, jax.random.key(0), dtype=jnp.float64)
        losses = np.asarray(losses)
        retrain_s = time.perf_counter() - t0
        x_star = params[0]
        exact, grad_max, hess_err = (np.asarray(a) for a in exact_influence(x_star))
    if not hess_err < 1e-8:
        raise RuntimeError(f"closed-form Hessian differs from jax.hessian by {hess_err:.3g}")
    model.lm_head.kernel[...] = jnp.asarray(np.asarray(x_star).reshape(d, v), jnp.float32)
    tokens = np.asarray(tokens)
    return ConvexHeadProblem(
        model=model,
        tokens=tokens[:n],
        queries=tokens[n:],
        masks=np.asarray(masks),
        actual=losses[1:],
        full_losses=losses[0],
        exact=exact,
        retrain_s=retrain_s,
        grad_max=float(grad_max),
        hess_err=float(hess_err),
    )
