"""Sample-based naive learners and N-player LOLA-DiCE for the iterated tensor games (:mod:`envs.tensor_game`).

The sampled analogue of :mod:`jaxsafety.shaping.exact`: the same tabular memory-one policies (player ``i``
cooperates in its egocentric state ``s`` with probability ``sigmoid(thetas[i, s])``, ``thetas [N, 2^N + 1]``) and
the same learning rules (naive gradient descent, N-player LOLA with or without look-ahead), but every derivative of
the value comes from ``B`` sampled episodes of ``H`` rounds through the DiCE surrogate instead of the exact Markov
chain.

DiCE objective (Foerster et al. 2018, "DiCE: The Infinitely Differentiable Monte Carlo Estimator", eq. 5-6, with
the baseline of Mao et al. 2019, "A Baseline for Any Order Gradient Estimation in Stochastic Computation Graphs",
eq. 7). With the magic box ``box(x) = exp(x - stop_gradient(x))`` (1 in value, ``d box(x) = box(x) dx``), episode
``b``'s log-probability of all players' actions at round ``t``, ``l_t = sum_j log pi_j(a_{j,t} | s_{j,t})``, the
normalised discount weights ``w_t = gamma^t / sum_{t'<H} gamma^t'`` and ``G_{i,t} = sum_{t' >= t} w_t' r_{i,t'}``
(player ``i``'s weighted reward-to-go), the surrogate of player ``i``'s value is

    S_i = 1/B sum_b [ sum_t box(sum_{t' <= t} l_t') w_t r_{i,t}  +  sum_t (1 - box(l_t)) beta_{i,t} ].

The stochastic nodes that reward ``r_{i,t}`` depends on are the actions of ALL players up to and including round
``t`` (the others' actions move the state, and they depend on ``thetas``). In value, ``S_i`` is the sample mean of
the discounted average return ``sum_t w_t r_{i,t}``, whose expectation is
:func:`envs.tensor_game.memory_one_return_finite` ``(payoffs, sigmoid(thetas), gamma, H)``; every derivative of
``S_i`` (any order, any players) is an unbiased estimate of the same derivative of that value. The baseline
``beta_{i,t}`` is the leave-one-out batch mean of ``G_{i,t}`` (the mean over the other ``B - 1`` episodes, hence
``B >= 2``): independent of episode ``b``, so each baseline term has expectation 0 in every derivative order (Mao
et al., section 4) while removing the mean reward-to-go from the score-function terms; the first derivative is
``1/B sum_b sum_t grad l_t (G_{i,t} - beta_{i,t})``.

LOLA-DiCE. Row ``i`` of :func:`dice_lola_grads` is :func:`jaxsafety.shaping.exact.lola_grads`'s
``grad_i L_i - alpha * grad_i sum_{j != i} (grad_j L_i)^T (grad_j L_j)`` with ``L = -S``. The expectation of a
product of two estimates from the same episodes is not the product of their expectations, so the batch is split
into two independent halves ``A`` (first ``B // 2`` episodes) and ``B'`` (the rest): the first factor
``grad_j L_i`` (and its derivative, with look-ahead) comes from ``A``, the second ``grad_j L_j`` from ``B'``; each
half has its own leave-one-out baselines, so the halves stay independent and the LOLA direction is unbiased. The
naive part ``grad_i L_i`` is the mean of both halves' estimates. ``batch >= 4`` for LOLA.

Sampling: all uniforms ``[H, B, N]`` are drawn in one call before the ``lax.scan`` over rounds (threefry inside a
scan body is slow on CPU); the episodes store states and actions, and log-probabilities are recomputed from
``thetas`` outside the scan so that the surrogate is an ordinary differentiable function of ``thetas`` with the
samples held fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from envs.tensor_game import TensorGame, TensorGameParams, memory_one_return_finite
from jaxsafety.config import check, check_range
from jaxsafety.shaping.exact import (
    LearnerSpec,
    LOLAConfig,
    check_num_learners,
    learner_step_sizes,
    mixed_directions,
    naive_and_lola_grads,
    naive_grads,
)

__all__ = [
    "Episodes",
    "dice_lola_grads",
    "dice_naive_grads",
    "dice_objective",
    "episode_log_probs",
    "magic_box",
    "make_dice_learning",
    "sample_episodes",
]


_DEFAULT_LOLA = LOLAConfig()  # exact.lola_grads's default


class Episodes(NamedTuple):
    """``B`` sampled episodes of ``H`` rounds, all ``[H, B, N]``: ``states`` int32 egocentric state of each player
    before the round (``2^N`` = start), ``actions`` int32 (0 = C, 1 = D), ``log_probs`` float32
    ``log pi_i(a | s)`` (differentiable in the ``thetas`` they were sampled with), ``rewards`` float32."""

    states: jax.Array
    actions: jax.Array
    log_probs: jax.Array
    rewards: jax.Array


def _check_sampling(batch: int, horizon: int, gamma: float | None = None, *, min_batch: int = 2) -> None:
    accepted_batch = (
        "integers >= 2" if min_batch == 2 else f"integers >= {min_batch} (two halves of >= 2 for LOLA)"
    )
    check(
        isinstance(batch, int) and not isinstance(batch, bool) and batch >= min_batch,
        "batch",
        batch,
        accepted_batch,
    )
    check_range("horizon", horizon, ge=1, integer=True)
    if gamma is not None:
        check_range("gamma", gamma, ge=0, le=1)


def episode_log_probs(thetas: jax.Array, states: jax.Array, actions: jax.Array) -> jax.Array:
    """``log pi_i(a_i | s_i)`` ``[..., N]`` of memory-one logits ``thetas [N, S]`` at egocentric ``states`` and
    ``actions`` ``[..., N]`` (``log sigmoid(theta)`` for C, ``log sigmoid(-theta)`` for D)."""
    n = thetas.shape[0]
    logits = thetas[jnp.arange(n), states]
    return jax.nn.log_sigmoid(jnp.where(actions == 0, logits, -logits))


def _rollout(payoffs: jax.Array, thetas: jax.Array, uniforms: jax.Array) -> Episodes:
    """Episodes from pre-drawn ``uniforms [H, B, N]``: player ``i`` cooperates iff ``u < sigmoid(theta_i[s_i])``."""
    horizon, batch, n = uniforms.shape
    env = TensorGame(num_players=n, num_rounds=horizon)
    params = TensorGameParams(payoffs=payoffs)
    sample_thetas = jax.lax.stop_gradient(
        thetas
    )  # actions are discrete: no derivative flows through sampling
    players = jnp.arange(n)
    unused_key = jax.random.key(0)  # TensorGame.step is deterministic
    step = jax.vmap(env.step, in_axes=(None, 0, 0, None))

    def body(state, u):
        ego = env.egocentric_index(
            state.history[:, 0]
        ).T  # [B, N], the same states as memory_one_return_finite
        coop = jax.nn.sigmoid(sample_thetas[players, ego])
        actions = (u >= coop).astype(jnp.int32)
        _, state, rewards, _, _ = step(unused_key, state, actions, params)
        return state, (ego, actions, rewards)

    _, state0 = jax.vmap(env.reset, in_axes=(None, None), axis_size=batch)(unused_key, params)
    _, (states, actions, rewards) = jax.lax.scan(body, state0, uniforms)
    return Episodes(states, actions, episode_log_probs(thetas, states, actions), rewards)


def sample_episodes(
    payoffs: jax.Array, thetas: jax.Array, key: jax.Array, *, batch: int, horizon: int
) -> Episodes:
    """``batch`` episodes of ``horizon`` rounds of the tensor game ``payoffs [2, N]`` under memory-one logits
    ``thetas [N, 2^N + 1]``, starting in the start state (no auto-reset needed). Arrays ``[H, B, N]``."""
    _check_sampling(batch, horizon)
    n = thetas.shape[0]
    return _rollout(payoffs, thetas, jax.random.uniform(key, (horizon, batch, n)))


def magic_box(x: jax.Array) -> jax.Array:
    """DiCE's magic box ``exp(x - stop_gradient(x))``: 1 in value, ``d box(x) = box(x) dx`` (Foerster et al. 2018)."""
    return jnp.exp(x - jax.lax.stop_gradient(x))


def _discount_weights(gamma: float, horizon: int) -> np.ndarray:
    """``w_t = gamma^t / sum_{t<H} gamma^t`` ``[H]`` (the normalisation of ``memory_one_return_finite``)."""
    w = np.power(float(gamma), np.arange(horizon, dtype=np.float64))
    return (w / w.sum()).astype(np.float32)


def dice_objective(
    log_probs: jax.Array, rewards: jax.Array, gamma: float, *, baseline: bool = True
) -> jax.Array:
    """DiCE surrogate ``S [N]`` of each player's discounted average return (module docstring) from episodes'
    ``log_probs`` and ``rewards`` ``[H, B, N]``; ``baseline=False`` drops Mao et al.'s baseline term (same
    expectation of every derivative, higher variance; for comparisons)."""
    horizon, batch, _ = rewards.shape
    check_range("gamma", gamma, ge=0, le=1)
    if baseline:
        check(batch >= 2, "batch", batch, "integers >= 2 (leave-one-out baseline)")
    w = jnp.asarray(_discount_weights(gamma, horizon))[:, None, None]
    step_logp = jnp.sum(log_probs, axis=-1)  # [H, B]: all players' actions are stochastic nodes
    dependencies = jnp.cumsum(step_logp, axis=0)  # every action up to and including round t
    weighted = w * rewards  # [H, B, N]
    objective = jnp.sum(magic_box(dependencies)[..., None] * weighted, axis=0)  # [B, N]
    if baseline:
        to_go = jnp.cumsum(weighted[::-1], axis=0)[::-1]  # G_{i,t}
        loo = (jnp.sum(to_go, axis=1, keepdims=True) - to_go) / (batch - 1)  # mean of the other episodes
        beta = jax.lax.stop_gradient(loo)
        objective = objective + jnp.sum((1.0 - magic_box(step_logp))[..., None] * beta, axis=0)
    return jnp.mean(objective, axis=0)


def _surrogate(episodes: Episodes, gamma: float, lo: int = 0, hi: int | None = None) -> Callable:
    """``thetas -> S [N]`` on episodes ``lo:hi`` of the batch, samples fixed, log-probs recomputed."""
    states, actions, rewards = (x[:, lo:hi] for x in (episodes.states, episodes.actions, episodes.rewards))
    return lambda thetas: dice_objective(episode_log_probs(thetas, states, actions), rewards, gamma)


def dice_naive_grads(
    payoffs: jax.Array, thetas: jax.Array, key: jax.Array, *, batch: int, horizon: int, gamma: float
) -> jax.Array:
    """DiCE estimate ``[N, S]`` of :func:`jaxsafety.shaping.exact.naive_grads` (``grad_i L_i``,
    ``L = -memory_one_return_finite``) from ``batch`` fresh episodes of ``horizon`` rounds."""
    _check_sampling(batch, horizon, gamma)
    episodes = sample_episodes(payoffs, thetas, key, batch=batch, horizon=horizon)
    return naive_grads(_surrogate(episodes, gamma), thetas)


def _dice_naive_and_lola(
    episodes: Episodes, thetas: jax.Array, gamma: float, config: LOLAConfig
) -> tuple[jax.Array, jax.Array]:
    half = episodes.rewards.shape[1] // 2
    first, second = _surrogate(episodes, gamma, 0, half), _surrogate(episodes, gamma, half)
    return naive_and_lola_grads(first, thetas, config, own_value_fn=second)


def dice_lola_grads(
    payoffs: jax.Array,
    thetas: jax.Array,
    key: jax.Array,
    *,
    batch: int,
    horizon: int,
    gamma: float,
    config: LOLAConfig = _DEFAULT_LOLA,
) -> jax.Array:
    """LOLA-DiCE directions ``[N, S]``: an unbiased estimate of :func:`jaxsafety.shaping.exact.lola_grads` on the
    finite-horizon value, the two factors of the inner product from independent halves of the ``batch``
    (module docstring; ``batch >= 4``)."""
    _check_sampling(batch, horizon, gamma, min_batch=4)
    episodes = sample_episodes(payoffs, thetas, key, batch=batch, horizon=horizon)
    return _dice_naive_and_lola(episodes, thetas, gamma, config)[1]


def make_dice_learning(
    payoffs: jax.Array,
    learners: Sequence[LearnerSpec],
    num_updates: int,
    *,
    batch: int,
    horizon: int,
    gamma: float,
) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]:
    """``run(thetas0 [N, S], key) -> (thetas [N, S], {"values": [U + 1, N], "thetas": [U + 1, N, S]})``.

    The sampled analogue of :func:`jaxsafety.shaping.exact.make_exact_learning` (``U = num_updates`` simultaneous
    updates in one ``lax.scan``; ``kind="lola"`` is LOLA-DiCE, ``"naive"`` the DiCE policy gradient, ``"fixed"``
    never moves), with ``batch`` fresh episodes of ``horizon`` rounds per update, shared by all players. The
    recorded ``values`` are exact (:func:`envs.tensor_game.memory_one_return_finite`), not sampled. ``run`` is pure:
    vmap it over initialisations and keys.
    """
    check_range("num_updates", num_updates, ge=1, integer=True)
    has_lola = any(spec.kind == "lola" for spec in learners)
    _check_sampling(batch, horizon, gamma, min_batch=4 if has_lola else 2)
    n = payoffs.shape[-1]
    check_num_learners(learners, n)
    lr = learner_step_sizes(learners)

    def value(thetas: jax.Array) -> jax.Array:
        return memory_one_return_finite(payoffs, jax.nn.sigmoid(thetas), gamma, horizon)

    def step(thetas: jax.Array, uniforms: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        episodes = _rollout(payoffs, thetas, uniforms)
        direction = mixed_directions(
            learners,
            lambda: naive_grads(_surrogate(episodes, gamma), thetas),
            lambda cfg: _dice_naive_and_lola(episodes, thetas, gamma, cfg),
        )
        new = thetas - lr[:, None] * direction
        return new, (value(new), new)

    def run(thetas0: jax.Array, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        keys = jax.random.split(key, num_updates)
        # one batched draw before the scan (threefry inside a scan body is slow on CPU); update u's uniforms are
        # those sample_episodes would draw from keys[u]
        uniforms = jax.vmap(lambda k: jax.random.uniform(k, (horizon, batch, n)))(keys)
        final, (values, thetas) = jax.lax.scan(step, thetas0, uniforms)
        return final, {
            "values": jnp.concatenate([value(thetas0)[None], values]),
            "thetas": jnp.concatenate([thetas0[None], thetas]),
        }

    return run
