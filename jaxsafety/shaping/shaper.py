"""Shaper-style meta-learned shapers on the *sampled* N-player tensor games, against GRU PPO naive learners.

Shaper (Khan et al. 2024, "Scaling Opponent Shaping to High Dimensional Games", AAMAS), the meta-learner that
Souly et al. 2023 ("Leading the Pack", Pax) take to N players: the shaper is a recurrent policy whose hidden state
is carried through every episode of a *trial*, so it conditions both on the history inside an episode and on how
its co-players' behaviour changes from episode to episode; it is meta-trained by OpenES on its mean reward over the
whole trial (:mod:`jaxsafety.shaping.es`). Its co-players are naive learners: GRU PPO agents
(:class:`jaxsafety.rl.GRUActorCritic`, hidden state reset every episode) that take one PPO update (``update_epochs``
x ``num_minibatches`` over envs, GAE, clipped losses from :mod:`jaxsafety.rl`) after every episode, on that
episode's ``num_envs x episode_length`` samples. Pax's settings: 100-round episodes, naive lr 3e-4, 4 epochs,
entropy 0.1, gamma 0.96, 1000 naive updates per trial; the defaults below keep the per-update settings but shorten
the trial (``num_episodes``) so that a CPU can meta-train many game configurations (raise them for a GPU).

The whole trial (``num_episodes`` x (rollout ``lax.scan`` of ``episode_length`` rounds over ``num_envs`` vmapped
:class:`envs.TensorGame` envs + the naive learners' PPO updates, vmapped over naive seats)) is one pure function;
the ES vmaps it over population members and co-player initialisations, and a run is one jitted call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from envs.tensor_game import TensorGame, TensorGameParams
from jaxsafety.config import check, check_choice, check_range
from jaxsafety.rl.gae import gae_advantages
from jaxsafety.rl.networks import ActorCritic, GRUActorCritic
from jaxsafety.rl.update import PPOHyperparams, make_ppo_update
from jaxsafety.shaping.es import ESConfig, make_es_train

__all__ = ["NaivePPOConfig", "SampledGameConfig", "make_sampled_trial", "make_shaper_es"]

NETWORKS = ("gru", "mlp")


@dataclasses.dataclass(frozen=True)
class NaivePPOConfig(PPOHyperparams):
    """The PPO naive learners (Pax's Leading-the-Pack settings by default; the PPO fields come from
    :class:`~jaxsafety.rl.update.PPOHyperparams`). ``network``: ``gru`` (:class:`jaxsafety.rl.GRUActorCritic`,
    hidden state reset every episode, minibatches of whole episodes back-propagated through time) or ``mlp``
    (:class:`jaxsafety.rl.ActorCritic` on the one-hot last joint action, i.e. a memory-one policy, evaluated on the
    whole minibatch at once with no recurrence: cheaper on CPU)."""

    network: str = "gru"
    hidden: int = 16
    lr: float = 3e-4
    num_minibatches: int = 2  # over envs (whole episodes per minibatch, back-propagated through time)
    gamma: float = 0.96
    ent_coef: float = 0.1

    def __post_init__(self) -> None:
        check_choice("network", self.network, NETWORKS)
        check_range("hidden", self.hidden, ge=1, integer=True)
        super().__post_init__()


@dataclasses.dataclass(frozen=True)
class SampledGameConfig:
    """A trial: ``num_episodes`` episodes (= naive updates) of ``episode_length`` rounds in ``num_envs`` parallel
    envs; the shaper is a GRU of width ``shaper_hidden``."""

    num_envs: int = 8
    episode_length: int = 100
    num_episodes: int = 50
    shaper_hidden: int = 16
    naive: NaivePPOConfig = NaivePPOConfig()

    def __post_init__(self) -> None:
        for f in ("num_envs", "episode_length", "num_episodes", "shaper_hidden"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check(
            self.num_envs % self.naive.num_minibatches == 0,
            "naive.num_minibatches",
            self.naive.num_minibatches,
            f"divisors of num_envs ({self.num_envs})",
        )


def _stack_init(graphdef_model: Callable[[jax.Array], GRUActorCritic], keys: jax.Array) -> nnx.State:
    return jax.vmap(lambda k: nnx.split(graphdef_model(k))[1])(keys)


def make_sampled_trial(
    payoffs: jax.Array, shaper_seats: Sequence[bool], config: SampledGameConfig
) -> tuple[Callable[[nnx.State | None, jax.Array], dict[str, jax.Array]], nnx.GraphDef, nnx.State]:
    """``(trial, shaper_graphdef, shaper_params0)``.

    ``trial(shaper_params [K, ...] or None, key) -> {"reward": [U, N], "coop": [U, N]}``: per episode, each
    seat's mean reward per round and its frequency of C, over envs and rounds (``U = num_episodes``). ``key``
    draws the naive learners' initial networks and all sampling. ``shaper_seats`` may be all False (the
    all-naive baseline; pass ``None`` as ``shaper_params``) or all True (shapers among themselves). ``shaper_params0`` is one shaper's initial
    parameters (a :class:`GRUActorCritic` whose actor head is the policy; its critic head is unused).
    """
    seats = np.asarray(shaper_seats, bool)
    n = payoffs.shape[-1]
    check(
        seats.ndim == 1 and len(seats) == n,
        "shaper_seats",
        list(shaper_seats),
        f"boolean lists of length N = {n}",
    )
    cfg, nv = config, config.naive
    s = 2**n + 1
    env = TensorGame(n, num_rounds=cfg.episode_length)
    env_params = TensorGameParams(payoffs=payoffs)
    shaper_idx, naive_idx = np.flatnonzero(seats), np.flatnonzero(~seats)
    k, m, e, h_len = len(shaper_idx), len(naive_idx), cfg.num_envs, cfg.episode_length

    recurrent = nv.network == "gru"

    def naive_model(key: jax.Array) -> GRUActorCritic | ActorCritic:
        if recurrent:
            return GRUActorCritic(s, 2, nv.hidden, rngs=nnx.Rngs(key))
        return ActorCritic(s, 2, hidden=(nv.hidden,), rngs=nnx.Rngs(key))

    def shaper_model(key: jax.Array) -> GRUActorCritic:
        return GRUActorCritic(s, 2, cfg.shaper_hidden, rngs=nnx.Rngs(key))

    naive_gd, _ = nnx.split(naive_model(jax.random.key(0)))
    shaper_gd, shaper_p0 = nnx.split(shaper_model(jax.random.key(0)))
    tx = nv.optimizer(cfg.num_episodes)
    v_reset = jax.vmap(env.reset, in_axes=(None, None), axis_size=e)
    v_step = jax.vmap(env.step, in_axes=(None, 0, 0, None))

    def seats_step(graphdef: nnx.GraphDef, params: nnx.State, h: jax.Array, obs: jax.Array) -> tuple:
        """One step of every seat in a group (vmapped over seats): ``h [G, E, H]``, ``obs [G, E, S]``."""

        def one(p: nnx.State, hh: jax.Array, o: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
            model = nnx.merge(graphdef, p)
            if isinstance(model, GRUActorCritic):
                hh, dist, value = model(hh, o)
            else:  # memory-one MLP: no state
                dist, value = model(o)
            return hh, dist.logits, value

        return jax.vmap(one)(params, h, obs)

    def naive_sequence(p: nnx.State, obs: jax.Array) -> tuple[Any, jax.Array]:
        """A naive learner's policy and values over episodes ``obs [T, e, S]`` (from the zero state)."""
        model = nnx.merge(naive_gd, p)
        if recurrent:
            _, dist, value = model.unroll(model.initial_state(obs.shape[1:2]), obs)
            return dist, value
        return model(obs)

    def apply(p: nnx.State, mb: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        dist, value = naive_sequence(p, mb["obs"])
        return dist.log_prob(mb["action"]), dist.entropy(), value

    # minibatches of whole episodes: leaves are [T, E, ...], permuted and split along the env axis
    naive_update = make_ppo_update(apply, tx, nv, minibatch_axis=1)

    def ppo_update(p: nnx.State, opt: Any, data: dict[str, jax.Array], key: jax.Array) -> tuple:
        """One naive seat's PPO update on its episode (leaves ``[T, E, ...]``)."""
        next_values = jnp.concatenate([data["value"][1:], jnp.zeros_like(data["value"][:1])])
        done = jnp.zeros_like(data["reward"]).at[-1].set(1.0)  # the episode ends: nothing to bootstrap
        adv, ret = gae_advantages(
            data["reward"], data["value"], next_values, done, done, gamma=nv.gamma, lam=nv.gae_lambda
        )
        p, opt, _ = naive_update(p, opt, {**data, "adv": adv, "ret": ret}, key)
        return p, opt

    def trial(shaper_params: nnx.State | None, key: jax.Array) -> dict[str, jax.Array]:
        k_init, k_eps = jax.random.split(key)
        naive_p = _stack_init(naive_model, jax.random.split(k_init, m)) if m else None
        naive_opt = jax.vmap(tx.init)(naive_p) if m else None
        shaper_h = jnp.zeros((k, e, cfg.shaper_hidden), jnp.float32)

        def episode(carry: tuple, key: jax.Array) -> tuple[tuple, dict[str, jax.Array]]:
            naive_p, naive_opt, shaper_h = carry
            k_noise, k_upd = jax.random.split(key)
            gumbel = jax.random.gumbel(k_noise, (h_len, e, n, 2))  # all the episode's action noise at once
            obs0, state0 = v_reset(key, env_params)  # [E, N, S]

            def round_(c: tuple, g: jax.Array) -> tuple[tuple, tuple]:
                state, obs, h_n, h_s = c
                obs_by_seat = jnp.swapaxes(obs, 0, 1)  # [N, E, S]
                logits = jnp.zeros((n, e, 2))
                if m:
                    h_n, logits_n, value_n = seats_step(naive_gd, naive_p, h_n, obs_by_seat[naive_idx])
                    logits = logits.at[naive_idx].set(logits_n)
                if k:
                    h_s, logits_s, _ = seats_step(shaper_gd, shaper_params, h_s, obs_by_seat[shaper_idx])
                    logits = logits.at[shaper_idx].set(logits_s)
                actions = jnp.argmax(logits + jnp.swapaxes(g, 0, 1), -1)  # [N, E] Gumbel-max
                obs, state, reward, _, _ = v_step(key, state, actions.T, env_params)
                out = (reward.T, actions)
                if m:
                    a_n = actions[naive_idx]
                    logp_n = jnp.take_along_axis(jax.nn.log_softmax(logits_n), a_n[..., None], -1)[..., 0]
                    out += (obs_by_seat[naive_idx], a_n, logp_n, value_n)
                return (state, obs, h_n, h_s), out

            h_n0 = jnp.zeros((m, e, nv.hidden if recurrent else 1), jnp.float32)
            (_, _, _, shaper_h), (rew, acts, *naive_traj) = jax.lax.scan(
                round_, (state0, obs0, h_n0, shaper_h), gumbel
            )  # rew, acts [T, N, E]; the naive seats' leaves [T, M, E, ...]
            if m:
                per_seat = dict(zip(("obs", "action", "logp", "value"), naive_traj, strict=True))
                per_seat["reward"] = rew[:, naive_idx]
                per_seat = jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), per_seat)  # [M, T, E, ...]
                naive_p, naive_opt = jax.vmap(ppo_update)(
                    naive_p, naive_opt, per_seat, jax.random.split(k_upd, m)
                )
            stats = {"reward": rew.mean((0, 2)), "coop": (acts == 0).mean((0, 2))}
            return (naive_p, naive_opt, shaper_h), stats

        _, stats = jax.lax.scan(
            episode, (naive_p, naive_opt, shaper_h), jax.random.split(k_eps, cfg.num_episodes)
        )
        return stats

    trial.ppo_update = ppo_update  # type: ignore[attr-defined]  # one naive seat's update on its episode
    return trial, shaper_gd, shaper_p0


def make_shaper_es(
    payoffs: jax.Array,
    shaper_seats: Sequence[bool],
    config: SampledGameConfig,
    es: ESConfig,
    *,
    num_inits: int = 2,
) -> tuple[Callable[[jax.Array], tuple[nnx.State, dict[str, jax.Array]]], Callable]:
    """``(train, trial)``: ``train(key) -> (params [K, ...], metrics)`` meta-trains the shaper seats' GRU policies
    with OpenES, one ES per seat (:func:`jaxsafety.shaping.es.make_es_train`); a candidate's fitness is its seat's
    mean reward per round over a whole trial, averaged over ``num_inits`` trials (naive-learner initialisations
    and samples, shared by the generation's population). ``trial`` is :func:`make_sampled_trial`'s."""
    check_range("num_inits", num_inits, ge=1, integer=True)
    seats = np.asarray(shaper_seats, bool)
    check(seats.any(), "shaper_seats", list(shaper_seats), "boolean lists with >= 1 True")
    trial, _, params0 = make_sampled_trial(payoffs, shaper_seats, config)
    shaper_idx = np.flatnonzero(seats)

    def fitness(params: nnx.State, key: jax.Array) -> jax.Array:
        stats = jax.vmap(trial, in_axes=(None, 0))(params, jax.random.split(key, num_inits))
        return stats["reward"][:, :, shaper_idx].mean((0, 1))

    return make_es_train(fitness, params0, len(shaper_idx), es), trial
