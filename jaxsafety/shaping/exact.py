"""Exact-gradient learners for N-player differentiable games: naive gradient ascent and N-player LOLA.

A *differentiable game* here is ``value_fn(thetas [N, P]) -> values [N]``: player ``i`` controls row ``thetas[i]``
and wants to maximise ``values[i]``. For the iterated matrix games of :mod:`envs.tensor_game`, ``thetas`` are the
logits of memory-one cooperation probabilities and ``value_fn`` the exact discounted return
(:func:`memory_one_value_fn`), so every gradient below is exact (no sampling).

Learning rules, written with losses ``L_i = -values[i]`` and gradients ``grad_j L_i = dL_i / dtheta_j``:

- naive learner (simultaneous gradient descent): ``theta_i <- theta_i - lr * grad_i L_i``;
- N-player LOLA (Foerster et al. 2018, "Learning with Opponent-Learning Awareness", eq. 4, extended to N players
  as in Souly et al. 2023, "Leading the Pack: N-player Opponent Shaping"): player ``i`` descends

      grad_i L_i - alpha * grad_i  sum_{j != i} (grad_j L_i)^T (grad_j L_j)

  the first-order Taylor expansion of its loss after every other player ``j`` takes a naive step of size
  ``alpha``. Differentiating the inner product gives two second-order terms (Letcher et al. 2019, "Stable Opponent
  Shaping", section 3): the *look-ahead* term ``(grad_i grad_j L_i) grad_j L_j`` and the *shaping* term
  ``(grad_i grad_j L_j)^T grad_j L_i``. ``LOLAConfig(look_ahead=False)`` keeps only the shaping term, which is
  the update of Foerster et al.'s paper (their eq. 4 treats ``grad_j L_i`` as constant).

:func:`make_exact_learning` runs ``num_updates`` simultaneous updates of a mix of learners (naive, LOLA, or fixed
policies such as tit-for-tat) as one ``lax.scan``; vmap it over initialisations and games.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp

from jaxsafety.config import check, check_range

__all__ = [
    "LOLAConfig",
    "LearnerSpec",
    "check_num_learners",
    "learner_step_sizes",
    "lola_grads",
    "make_exact_learning",
    "memory_one_value_fn",
    "mixed_directions",
    "naive_and_lola_grads",
    "naive_grads",
]

ValueFn = Callable[[jax.Array], jax.Array]  # thetas [N, P] -> values [N]


def _loss_jacobian(value_fn: ValueFn, thetas: jax.Array) -> jax.Array:
    """``J[i, j] = grad_{theta_j} L_i`` ``[N, N, P]`` with ``L = -value_fn``."""
    return jax.jacrev(lambda t: -value_fn(t))(thetas)


def naive_grads(value_fn: ValueFn, thetas: jax.Array) -> jax.Array:
    """Each player's own loss gradient ``grad_i L_i`` ``[N, P]``."""
    jac = _loss_jacobian(value_fn, thetas)
    return jnp.einsum("iip->ip", jac)


@dataclasses.dataclass(frozen=True)
class LOLAConfig:
    """N-player LOLA: ``alpha`` is the co-players' assumed naive learning rate; ``look_ahead`` keeps the
    look-ahead term of the full derivative (module docstring); False gives Foerster et al.'s shaping-only rule."""

    alpha: float = 1.0
    look_ahead: bool = False

    def __post_init__(self) -> None:
        check_range("alpha", self.alpha, ge=0)


def lola_grads(value_fn: ValueFn, thetas: jax.Array, config: LOLAConfig = LOLAConfig()) -> jax.Array:
    """LOLA descent directions ``[N, P]`` for every player at once (each as if it alone were LOLA; a caller mixing
    learner types takes the rows it needs).

    Row ``i``: ``grad_i L_i - alpha * grad_i f_i`` with ``f_i(theta) = sum_{j != i} (grad_j L_i)^T (grad_j L_j)``;
    without look-ahead the first factor ``grad_j L_i`` is held constant (``stop_gradient``).
    """
    return naive_and_lola_grads(value_fn, thetas, config)[1]


def naive_and_lola_grads(
    value_fn: ValueFn,
    thetas: jax.Array,
    config: LOLAConfig,
    own_value_fn: ValueFn | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``(naive_grads, lola_grads)``, both ``[N, P]``, from one loss Jacobian (returned as the aux of the
    differentiated ``f``, so it is not computed a second time).

    ``own_value_fn`` (default: ``value_fn``) supplies the second factor ``grad_j L_j`` of ``f_i``. Sample-based
    callers (:mod:`jaxsafety.shaping.dice`) pass an estimate from independent samples, so that the expectation of
    the product is the product of the expectations; the naive rows are then the mean of both estimates.
    """
    n = thetas.shape[0]
    off = 1.0 - jnp.eye(n)

    def f(t: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        jac = _loss_jacobian(value_fn, t)  # [i, j, P]
        own_jac = jac if own_value_fn is None else _loss_jacobian(own_value_fn, t)
        own = jnp.einsum("jjp->jp", own_jac)  # grad_j L_j
        first = jac if config.look_ahead else jax.lax.stop_gradient(jac)
        return jnp.einsum("ij,ijp,jp->i", off, first, own), (jnp.einsum("iip->ip", jac), own)  # f_i

    df, (naive, own) = jax.jacrev(f, has_aux=True)(thetas)  # df[i, k]: d f_i / d theta_k
    if own_value_fn is not None:
        naive = 0.5 * (naive + own)
    return naive, naive - config.alpha * jnp.einsum("iip->ip", df)


@dataclasses.dataclass(frozen=True)
class LearnerSpec:
    """One player's learner: ``kind`` naive or lola (learning rate ``lr``), or fixed (never updates: e.g. a
    tit-for-tat policy given as its initial parameters)."""

    kind: Literal["naive", "lola", "fixed"] = "naive"
    lr: float = 1.0
    lola: LOLAConfig = LOLAConfig()

    def __post_init__(self) -> None:
        check(
            self.kind in ("naive", "lola", "fixed"),
            "kind",
            self.kind,
            "one of 'naive', 'lola', 'fixed'",
        )
        check_range("lr", self.lr, ge=0)


def learner_step_sizes(learners: Sequence[LearnerSpec]) -> jax.Array:
    """``[N]`` step sizes of the players' learners (``spec.lr``), 0 for fixed players."""
    return jnp.asarray([0.0 if spec.kind == "fixed" else spec.lr for spec in learners])


def check_num_learners(learners: Sequence[LearnerSpec], n: int) -> None:
    """Raise ``ConfigError`` naming ``learners`` unless there is one ``LearnerSpec`` per player (``n``)."""
    check(len(learners) == n, "learners", len(learners), f"one LearnerSpec per player ({n})")


def mixed_directions(
    learners: Sequence[LearnerSpec],
    naive: Callable[[], jax.Array],
    naive_and_lola: Callable[[LOLAConfig], tuple[jax.Array, jax.Array]],
) -> jax.Array:
    """Descent directions ``[N, P]`` of a mix of learners: the naive rows from ``naive()`` when nobody is LOLA,
    else from ``naive_and_lola(cfg)``, computed once per distinct LOLA config among the players, with each LOLA
    player's row taken from its own config (fixed players get a row too; their step size is 0)."""
    lola_cfgs = sorted({spec.lola for spec in learners if spec.kind == "lola"}, key=repr)
    if not lola_cfgs:
        return naive()
    rows = None
    for cfg in lola_cfgs:
        naive_rows, lola = naive_and_lola(cfg)
        rows = naive_rows if rows is None else rows
        use = jnp.asarray([spec.kind == "lola" and spec.lola == cfg for spec in learners])
        rows = jnp.where(use[:, None], lola, rows)
    return rows


def make_exact_learning(
    value_fn: ValueFn, learners: Sequence[LearnerSpec], num_updates: int
) -> Callable[[jax.Array], tuple[jax.Array, dict[str, jax.Array]]]:
    """``run(thetas0 [N, P]) -> (thetas [N, P], {"values": [U + 1, N], "thetas": [U + 1, N, P]})``.

    All players update simultaneously from the same parameters each step (``U = num_updates``). The LOLA
    directions are computed only if some player is LOLA; different LOLA configs per player are supported.
    """
    check_range("num_updates", num_updates, ge=1, integer=True)
    lr = learner_step_sizes(learners)

    def direction(thetas: jax.Array) -> jax.Array:
        check_num_learners(learners, thetas.shape[0])
        return mixed_directions(
            learners,
            lambda: naive_grads(value_fn, thetas),
            lambda cfg: naive_and_lola_grads(value_fn, thetas, cfg),
        )

    def step(thetas: jax.Array, _: None) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        new = thetas - lr[:, None] * direction(thetas)
        return new, (value_fn(new), new)

    def run(thetas0: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        final, (values, thetas) = jax.lax.scan(step, thetas0, None, num_updates)
        return final, {
            "values": jnp.concatenate([value_fn(thetas0)[None], values]),
            "thetas": jnp.concatenate([thetas0[None], thetas]),
        }

    return run


def memory_one_value_fn(payoffs: jax.Array, gamma: float) -> ValueFn:
    """``thetas [N, 2^N + 1] -> values [N]``: exact normalised discounted return of memory-one policies in the
    iterated tensor game ``payoffs [2, N]`` (:func:`envs.tensor_game.memory_one_return`), with
    ``thetas[i, s]`` the logit of player ``i`` cooperating in its egocentric state ``s``."""
    from envs.tensor_game import memory_one_return

    return lambda thetas: memory_one_return(payoffs, jax.nn.sigmoid(thetas), gamma)
