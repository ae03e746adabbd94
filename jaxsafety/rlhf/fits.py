"""Gao et al. 2022 ("Scaling laws for reward model overoptimization", arXiv 2210.10760): the gold reward as a
function of ``d = sqrt(KL(pi || pi_init))``.

- best-of-n: ``R_bon(d) = d (alpha - beta d)``, with ``KL_bon(n) = log n - (n - 1) / n`` (the KL of the best of
  ``n`` i.i.d. draws from the base policy, exact for a continuous reward distribution: the best-of-n density over
  reward quantiles ``u`` is ``n u^(n-1)``, whose KL to the uniform is ``log n - (n - 1) / n``);
- RL: ``R_RL(d) = d (alpha - beta log d)``.

Both forms are linear in ``(alpha, beta)`` and pass through ``R(0) = 0``, so the least-squares fit is one linear
solve (no intercept): the design matrix is ``[d, -d^2]`` (best-of-n) or ``[d, -d log d]`` (RL, with
``0 log 0 = 0``). The gold reward is normalised first so the initial policy scores 0 (:func:`normalize_gold`),
which is what makes the forms' zero intercept right. All functions are jittable; shapes ``[N]``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxsafety.config import check_choice
from jaxsafety.rl.lm_ppo import best_of_n_kl

__all__ = [
    "FORMS",
    "OverOptFit",
    "best_of_n_expectation",
    "design_matrix",
    "fit_overoptimization",
    "kl_best_of_n",
    "normalize_gold",
    "predict_overoptimization",
]

FORMS = ("bon", "rl")
Form = Literal["bon", "rl"]


class OverOptFit(NamedTuple):
    """A least-squares fit of ``R(d)``: coefficients ``alpha``, ``beta`` and the coefficient of determination
    ``r2 = 1 - SS_res / SS_tot`` (``SS_tot`` about the mean of ``R``; NaN when all ``R`` are equal)."""

    alpha: jax.Array
    beta: jax.Array
    r2: jax.Array


def kl_best_of_n(n: jax.Array | int) -> jax.Array:
    """``KL(best-of-n || base) = log n - (n - 1) / n`` nats (Gao et al. 2022; exact for a continuous reward, an
    upper bound for a discrete one). ``n >= 1`` (``n = 1`` gives 0); elementwise. The one implementation is
    :func:`jaxsafety.rl.lm_ppo.best_of_n_kl`; this name is the study's."""
    return best_of_n_kl(n)


def best_of_n_expectation(proxy: jax.Array, values: jax.Array, n: int | jax.Array) -> jax.Array:
    """Unbiased estimate of ``E[values of the best-of-n response by proxy]`` from ``N >= n`` samples per prompt
    (Gao et al. 2022, appendix: average over all ``n``-subsets of the ``N`` samples, in closed form).

    ``proxy``, ``values`` ``[..., N]`` (proxy scores pick the best; ``values``: gold or proxy rewards of the same
    samples). Sorting by proxy ascending, the ``i``-th smallest (1-based) is the best of a uniform random
    ``n``-subset with probability ``C(i - 1, n - 1) / C(N, n)``. Returns ``[...]``. Ties in ``proxy`` are broken by
    position. ``n`` may be traced (``1 <= n <= N``)."""
    proxy = jnp.asarray(proxy, jnp.float32)
    values = jnp.asarray(values, jnp.float32)
    big_n = proxy.shape[-1]
    order = jnp.argsort(proxy, axis=-1, stable=True)
    sorted_values = jnp.take_along_axis(values, order, axis=-1)
    i = jnp.arange(1, big_n + 1, dtype=jnp.float32)
    n = jnp.asarray(n, jnp.float32)
    lg = jax.scipy.special.gammaln
    log_w = (
        lg(i)
        - lg(n)
        - lg(jnp.maximum(i - n + 1, 1.0))
        - (lg(big_n + 1.0) - lg(n + 1.0) - lg(big_n - n + 1.0))
    )
    w = jnp.where(i >= n, jnp.exp(log_w), 0.0)
    return jnp.sum(w * sorted_values, axis=-1)


def normalize_gold(gold: jax.Array, gold_init: jax.Array) -> jax.Array:
    """Gold rewards shifted so the initial policy scores 0: ``gold - mean(gold_init)`` (``gold_init``: the gold
    rewards of the initial policy's samples, any shape; ``gold`` any shape)."""
    return jnp.asarray(gold, jnp.float32) - jnp.mean(jnp.asarray(gold_init, jnp.float32))


def _xlogx(d: jax.Array) -> jax.Array:
    safe = jnp.where(d > 0, d, 1.0)
    return jnp.where(d > 0, d * jnp.log(safe), 0.0)


def design_matrix(d: jax.Array, form: Form) -> jax.Array:
    """``[N, 2]`` columns multiplying ``(alpha, beta)``: ``[d, -d^2]`` for ``"bon"``, ``[d, -d log d]`` for
    ``"rl"`` (``0 log 0 = 0``). ``d`` ``[N]`` >= 0."""
    check_choice("form", form, FORMS)
    d = jnp.asarray(d, jnp.float32)
    second = d * d if form == "bon" else _xlogx(d)
    return jnp.stack([d, -second], axis=-1)


def predict_overoptimization(d: jax.Array, alpha: jax.Array, beta: jax.Array, form: Form) -> jax.Array:
    """``R(d)`` of the form (``"bon"``: ``d (alpha - beta d)``; ``"rl"``: ``d (alpha - beta log d)``)."""
    return design_matrix(d, form) @ jnp.stack(
        [jnp.asarray(alpha, jnp.float32), jnp.asarray(beta, jnp.float32)]
    )


def fit_overoptimization(
    d: jax.Array, reward: jax.Array, form: Form, weights: jax.Array | None = None
) -> OverOptFit:
    """Least-squares ``(alpha, beta)`` of ``reward ~ R(d)`` for the form (``"bon"`` or ``"rl"``), and ``r2``.

    ``d`` ``[N]`` = ``sqrt(KL)`` >= 0, ``reward`` ``[N]`` (gold or proxy, normalised so the initial policy
    scores 0). ``weights`` ``[N]`` >= 0 (None: all 1; 0 drops a point, so padded arrays fit under jit).
    Solved with ``jnp.linalg.lstsq`` on the weighted design (a closed form: the model is linear in alpha, beta).
    """
    x = design_matrix(d, form)
    y = jnp.asarray(reward, jnp.float32)
    w = jnp.ones_like(y) if weights is None else jnp.asarray(weights, jnp.float32)
    sw = jnp.sqrt(w)
    coef = jnp.linalg.lstsq(x * sw[:, None], y * sw)[0]
    resid = y - x @ coef
    ss_res = jnp.sum(w * resid**2)
    mean = jnp.sum(w * y) / jnp.sum(w)
    ss_tot = jnp.sum(w * (y - mean) ** 2)
    r2 = jnp.where(ss_tot > 0, 1.0 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0), jnp.nan)
    return OverOptFit(coef[0], coef[1], r2)
