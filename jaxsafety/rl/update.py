"""The one PPO update of the project: clipped loss (optionally masked over tokens or time steps) and the
``update_epochs`` x ``num_minibatches`` optimisation loop, shared by the gymnax trainer (:mod:`jaxsafety.rl.ppo`),
the opponent-shaping learners (M-FOS meta-PPO, Shaper's naive PPO learners) and LM PPO.

- :class:`PPOHyperparams`: the loss, GAE and optimiser fields every PPO config carries, validated once. The
  callers' configs subclass it (``PPOConfig``, ``MetaPPOConfig``, ``NaivePPOConfig``), overriding defaults only.
- :func:`ppo_loss`: ``policy + vf_coef * value - ent_coef * entropy`` from the new policy's per-sample log-probs,
  entropies and values, plus diagnostics (k1/k3 KL, clip fraction). With a ``mask`` (``1`` = a real token / time
  step) every mean, and the advantage normalisation, runs over the masked-in entries only, as LM PPO needs for
  padded responses (the TRL convention: ``masked_mean`` / ``masked_whiten``).
- :func:`make_ppo_update`: ``update(params, opt_state, batch, key) -> (params, opt_state, metrics)``. Each epoch
  draws a permutation of the samples along ``minibatch_axis`` (0 for flat ``[B, ...]`` batches; 1 for ``[T, E,
  ...]`` rollouts split into minibatches of whole episodes, for recurrent policies back-propagated through time)
  and takes one optimiser step per minibatch, all in ``lax.scan``: jittable and vmappable (over seeds, seats or
  population members).

The optimiser comes from :func:`jaxsafety.train.optim.make_optimizer` (Adam with ``eps = 1e-5``, no weight decay,
global-norm clipping, optional linear annealing to 0), wrapped in ``optax.flatten`` so that Adam and the clip run
on one concatenated vector instead of one small op per parameter leaf: at the sizes of control policies the
update is otherwise dominated by per-op latency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from jaxsafety.config import check, check_range
from jaxsafety.rl import losses
from jaxsafety.train.optim import OptimizerConfig, make_optimizer

__all__ = ["PPOHyperparams", "PPOUpdate", "make_ppo_update", "ppo_loss"]

ApplyFn = Callable[[Any, dict[str, jax.Array]], tuple[jax.Array, jax.Array, jax.Array]]
PPOUpdate = Callable[[Any, optax.OptState, dict[str, jax.Array], jax.Array], tuple[Any, optax.OptState, dict]]


@dataclasses.dataclass(frozen=True)
class PPOHyperparams:
    """The PPO fields shared by every PPO config in the project (defaults: PureJaxRL's CartPole settings).

    ``clip_value``: clip the value loss with ``clip_eps`` (OpenAI baselines' ppo2). ``anneal_lr``: decay the
    learning rate linearly to 0 over the run (the caller passes the run length to :meth:`optimizer`).
    ``normalize_advantages``: per minibatch (over its masked-in entries when a mask is given).
    """

    update_epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    clip_value: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    lr: float = 2.5e-4
    anneal_lr: bool = False
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True

    def __post_init__(self) -> None:
        for f in ("update_epochs", "num_minibatches"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check_range("gamma", self.gamma, ge=0, le=1)
        check_range("gae_lambda", self.gae_lambda, ge=0, le=1)
        check_range("clip_eps", self.clip_eps, gt=0)
        check_range("ent_coef", self.ent_coef, ge=0)
        check_range("vf_coef", self.vf_coef, ge=0)
        check_range("lr", self.lr, gt=0)
        check_range("max_grad_norm", self.max_grad_norm, gt=0)

    @property
    def steps_per_update(self) -> int:
        """Optimiser steps per PPO update: ``update_epochs * num_minibatches``."""
        return self.update_epochs * self.num_minibatches

    def optimizer(
        self, num_updates: int | None = None, *, flatten: bool = True
    ) -> optax.GradientTransformation:
        """Adam (``eps = 1e-5``) with global-norm clipping at ``max_grad_norm``, built by
        :func:`~jaxsafety.train.optim.make_optimizer`; with ``anneal_lr`` the learning rate decays linearly to 0
        over ``num_updates`` PPO updates (required then). ``flatten``: run it on one concatenated vector."""
        if self.anneal_lr:
            check(
                num_updates is not None and int(num_updates) >= 1,
                "num_updates",
                num_updates,
                "an integer >= 1 (the run length) when anneal_lr is on",
            )
        tx = make_optimizer(
            OptimizerConfig(
                name="adamw",
                lr=self.lr,
                eps=1e-5,
                weight_decay=0.0,
                schedule="linear" if self.anneal_lr else "constant",
                total_steps=int(num_updates) * self.steps_per_update if self.anneal_lr else None,
                grad_clip_norm=self.max_grad_norm,
            )
        )
        return optax.flatten(tx) if flatten else tx


def ppo_loss(
    logp: jax.Array,
    entropy: jax.Array,
    value: jax.Array,
    batch: dict[str, jax.Array],
    hp: PPOHyperparams,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The clipped PPO objective to minimise, and its diagnostics.

    ``logp``, ``value``: the new policy's log-probabilities of the stored actions and its values, shaped like
    ``batch["logp"]`` (``[B]``, or ``[B, T]`` for sequences); ``entropy``: per sample (the same shape when
    masked; unmasked, anything whose mean is the policy entropy). ``batch`` holds the rollout's ``logp``,
    ``value``, ``adv`` and ``ret`` (value target). ``mask`` (same shape as ``logp``; 1 = counts): masked means
    throughout; entries under the mask are zeroed first, so padding may hold any finite value and never reaches
    the loss or its gradient. Mismatched shapes raise at trace time (``chex``), before anything broadcasts.
    Returns ``(loss, {"loss", "policy_loss", "value_loss", "entropy", "approx_kl" (k3), "approx_kl_k1",
    "clip_fraction"})``.
    """
    old_logp, adv, old_value, ret = batch["logp"], batch["adv"], batch["value"], batch["ret"]
    # a [B, 1] value against [B] targets would broadcast to [B, B] without an error
    chex.assert_equal_shape(
        [logp, value, old_logp, adv, old_value, ret, *(() if mask is None else (mask, entropy))],
        custom_message="ppo_loss: logp, value, batch['logp'], batch['adv'], batch['value'], batch['ret'] (and "
        "mask, entropy when masked; shapes listed in this order) must have one shape",
    )
    if mask is not None:  # zero what is under the mask, so padding may hold any finite value (no inf * 0)
        keep = mask.astype(bool)
        logp, old_logp, value, adv, old_value, ret = (
            jnp.where(keep, x, 0.0) for x in (logp, old_logp, value, adv, old_value, ret)
        )
        entropy = jnp.where(keep, entropy, 0.0)
    if hp.normalize_advantages:
        adv = losses.normalize_advantages(adv, mask=mask)
    pg = losses.clipped_policy_loss(logp, old_logp, adv, hp.clip_eps, mask=mask)
    vl = losses.clipped_value_loss(value, old_value, ret, hp.clip_eps if hp.clip_value else None, mask=mask)
    ent = losses.masked_mean(entropy, mask)
    total = pg + hp.vf_coef * vl - hp.ent_coef * ent
    return total, {
        "loss": total,
        "policy_loss": pg,
        "value_loss": vl,
        "entropy": ent,
        "approx_kl": losses.approx_kl_k3(logp, old_logp, mask=mask),
        "approx_kl_k1": losses.approx_kl_k1(logp, old_logp, mask=mask),
        "clip_fraction": losses.clip_fraction(logp, old_logp, hp.clip_eps, mask=mask),
    }


def make_ppo_update(
    apply_fn: ApplyFn,
    tx: optax.GradientTransformation,
    hp: PPOHyperparams,
    *,
    minibatch_axis: int = 0,
    mask_key: str | None = None,
) -> PPOUpdate:
    """Build ``update(params, opt_state, batch, key) -> (params, opt_state, metrics)``: ``hp.update_epochs``
    epochs, each a fresh permutation (``jax.random.permutation`` of the epoch's key, keys split from ``key``) of
    the samples along ``minibatch_axis``, cut into ``hp.num_minibatches`` equal minibatches, one ``tx`` step each.

    ``apply_fn(params, minibatch) -> (logp, entropy, value)`` evaluates the current policy on a minibatch (a dict
    shaped like ``batch`` with the minibatch axis cut down; it may read any extra keys the caller put in
    ``batch``, e.g. ``obs``, ``action``, token ids). ``batch`` needs ``logp``, ``value``, ``adv`` and ``ret``
    (see :func:`ppo_loss`) and, with ``mask_key``, a mask under that key. Every leaf has the same length along
    ``minibatch_axis``, divisible by ``hp.num_minibatches``. ``metrics``: :func:`ppo_loss`'s, averaged over all
    minibatches of all epochs.
    """
    check(
        isinstance(minibatch_axis, int) and minibatch_axis >= 0,
        "minibatch_axis",
        minibatch_axis,
        "integers >= 0",
    )
    m = hp.num_minibatches

    def loss_fn(params: Any, mb: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        logp, entropy, value = apply_fn(params, mb)
        return ppo_loss(logp, entropy, value, mb, hp, mb[mask_key] if mask_key is not None else None)

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def minibatch_step(carry: tuple[Any, Any], mb: dict[str, jax.Array]) -> tuple[tuple[Any, Any], dict]:
        params, opt_state = carry
        grads, metrics = grad_fn(params, mb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics

    def update(
        params: Any, opt_state: optax.OptState, batch: dict[str, jax.Array], key: jax.Array
    ) -> tuple[Any, optax.OptState, dict[str, jax.Array]]:
        for k in ("logp", "value", "adv", "ret", *((mask_key,) if mask_key is not None else ())):
            check(k in batch, "batch", sorted(batch), f"dicts with a {k!r} entry")
        sizes = {x.shape[minibatch_axis] if x.ndim > minibatch_axis else None for x in jax.tree.leaves(batch)}
        check(
            len(sizes) == 1 and None not in sizes,
            "batch",
            f"leaves of lengths {sorted(map(str, sizes))} along axis {minibatch_axis}",
            f"leaves that all share one length along minibatch_axis={minibatch_axis}",
        )
        n = sizes.pop()
        check(n % m == 0, "num_minibatches", m, f"divisors of the batch's length along its axis ({n})")

        def split(x: jax.Array, perm: jax.Array) -> jax.Array:
            if minibatch_axis == 0:
                return x[perm].reshape(m, n // m, *x.shape[1:])
            x = jnp.take(x, perm, axis=minibatch_axis)
            x = x.reshape(*x.shape[:minibatch_axis], m, n // m, *x.shape[minibatch_axis + 1 :])
            return jnp.moveaxis(x, minibatch_axis, 0)

        def epoch(carry: tuple[Any, Any], key: jax.Array) -> tuple[tuple[Any, Any], dict]:
            perm = jax.random.permutation(key, n)
            return jax.lax.scan(minibatch_step, carry, jax.tree.map(lambda x: split(x, perm), batch))

        (params, opt_state), metrics = jax.lax.scan(
            epoch, (params, opt_state), jax.random.split(key, hp.update_epochs)
        )
        return params, opt_state, jax.tree.map(jnp.mean, metrics)

    return update
