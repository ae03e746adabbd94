"""M-FOS-style meta-learned shapers on the exact N-player iterated tensor games.

Model-Free Opponent Shaping (Lu et al. 2022, ICML, "Model-Free Opponent Shaping"), extended to N players as in
Souly et al. 2023 ("Leading the Pack"): a shaper is a *meta-policy* ``pi_phi`` that, before every inner episode,
looks at every player's current memory-one policy and chooses its own memory-one policy for that episode; the
co-players are naive learners that take one exact policy-gradient step per episode. A *trial* (meta-episode) is
``trial_length`` episodes from a random initialisation of the co-players; ``pi_phi`` maximises the shaper's summed
return over the trial, so it may give up early return to steer the learners somewhere better for itself.

Inner game (as :mod:`jaxsafety.shaping.exact`): ``thetas [N, S]`` logits of cooperation over the ``S = 2^N + 1``
egocentric states, values = exact normalised discounted returns (:func:`memory_one_value_fn`). At meta-step ``t``:

1. each shaper seat ``i`` observes ``sigmoid(thetas)`` with the players rolled so that row 0 is itself (the same
   egocentric convention as the env's states) and sets ``thetas[i] = pi_phi_i(obs)``;
2. the episode's values ``V(thetas)`` are the meta-rewards (seat ``i`` is scored by ``V_i``);
3. every naive seat takes its step ``theta_j += lr * grad_j V_j`` (all simultaneously).

Outer loops: OpenES (:func:`make_mfos_es`, via :mod:`jaxsafety.shaping.es`; deterministic meta-policy) and
meta-PPO (:func:`make_mfos_ppo`; Gaussian meta-policy over the logits with a learned std and a critic, PPO on the
meta-steps of a batch of trials, reusing :mod:`jaxsafety.rl`). With several shaper seats each is its own agent
with its own parameters, trained on its own return.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.config import check, check_range
from jaxsafety.rl.gae import gae_advantages
from jaxsafety.rl.networks import MLP, ActorCritic
from jaxsafety.rl.update import PPOHyperparams, make_ppo_update
from jaxsafety.shaping.es import ESConfig, make_es_train
from jaxsafety.shaping.exact import memory_one_value_fn, naive_grads

__all__ = [
    "MFOSConfig",
    "MetaPPOConfig",
    "init_mfos_policy",
    "make_mfos_es",
    "make_mfos_ppo",
    "make_mfos_trial",
]


@dataclasses.dataclass(frozen=True)
class MFOSConfig:
    """The inner game of an M-FOS trial: ``trial_length`` episodes, naive learners' step ``inner_lr`` on the
    ``(1 - gamma)``-normalised return, co-player logits initialised ``~ N(0, init_std^2)``, meta-policy MLP
    ``hidden`` (tanh)."""

    trial_length: int = 100
    inner_lr: float = 10.0
    gamma: float = 0.96
    init_std: float = 1.0
    hidden: tuple[int, ...] = (64, 64)

    def __post_init__(self) -> None:
        check_range("trial_length", self.trial_length, ge=1, integer=True)
        check_range("inner_lr", self.inner_lr, ge=0)
        check_range("gamma", self.gamma, ge=0, lt=1)
        check_range("init_std", self.init_std, ge=0)
        check(
            len(self.hidden) >= 1 and all(isinstance(h, int) and h >= 1 for h in self.hidden),
            "hidden",
            self.hidden,
            "non-empty tuples of integers >= 1",
        )


def _check_seats(shaper_seats: Sequence[bool]) -> np.ndarray:
    seats = np.asarray(shaper_seats, bool)
    check(seats.ndim == 1 and seats.any(), "shaper_seats", list(shaper_seats), "boolean lists with >= 1 True")
    return seats


def _meta_obs(thetas: jax.Array, seat: jax.Array) -> jax.Array:
    """Cooperation probabilities of every player, rolled so that ``seat`` comes first, flattened ``[N * S]``."""
    return jnp.roll(jax.nn.sigmoid(thetas), -seat, axis=0).reshape(-1)


def make_mfos_trial(
    payoffs: jax.Array, shaper_seats: Sequence[bool], config: MFOSConfig
) -> Callable[..., dict[str, jax.Array]]:
    """``trial(act, thetas0 [N, S], xs) -> {"values": [T, N], "thetas": [T, N, S], "obs": [T, K, N * S]}``.

    ``act(obs [K, N * S], x_t) -> logits [K, S]`` chooses the ``K`` shapers' policies at meta-step ``t`` (``xs``:
    per-step inputs with leading axis ``T``, e.g. noise; ``None`` for a deterministic policy). ``thetas[t]`` are the
    policies played in episode ``t`` and ``values[t]`` their exact returns.
    """
    seats = _check_seats(shaper_seats)
    n = payoffs.shape[-1]
    check(len(seats) == n, "shaper_seats", list(shaper_seats), f"lists of length N = {n}")
    value_fn = memory_one_value_fn(payoffs, config.gamma)
    shaper_idx = jnp.asarray(np.flatnonzero(seats))
    naive_lr = jnp.asarray(np.where(seats, 0.0, config.inner_lr), jnp.float32)[:, None]

    def trial(act: Callable[[jax.Array, Any], jax.Array], thetas0: jax.Array, xs: Any = None) -> dict:
        def step(thetas: jax.Array, x: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
            obs = jax.vmap(_meta_obs, in_axes=(None, 0))(thetas, shaper_idx)
            thetas = thetas.at[shaper_idx].set(act(obs, x))
            values = value_fn(thetas)
            new = thetas - naive_lr * naive_grads(value_fn, thetas)
            return new, {"values": values, "thetas": thetas, "obs": obs}

        _, out = jax.lax.scan(step, thetas0, xs, length=config.trial_length)
        return out

    return trial


def init_mfos_policy(num_players: int, config: MFOSConfig, key: jax.Array) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, params)`` of a deterministic meta-policy MLP ``[N * S] -> [S]`` logits (the ES search
    space); the output layer starts near zero (cooperation probabilities near 1/2)."""
    s = 2**num_players + 1
    model = MLP(num_players * s, tuple(config.hidden), s, "tanh", 0.01, rngs=nnx.Rngs(key))
    return nnx.split(model)


def make_mfos_es(
    payoffs: jax.Array,
    shaper_seats: Sequence[bool],
    config: MFOSConfig,
    es: ESConfig,
    *,
    num_inits: int = 4,
) -> tuple[Callable[[jax.Array], tuple[nnx.State, dict[str, jax.Array]]], nnx.GraphDef]:
    """``(train, graphdef)``: ``train(key) -> (params [K, ...], metrics)`` meta-trains the ``K`` shaper seats'
    meta-policies with OpenES (:func:`jaxsafety.shaping.es.make_es_train`). A candidate's fitness is its seat's
    mean return over the trial, averaged over ``num_inits`` random co-player initialisations (drawn per
    generation, shared by the population). Play a trained policy with :func:`make_mfos_trial` and
    ``act = lambda obs, _: jax.vmap(lambda p, o: nnx.merge(graphdef, p)(o))(params, obs)``."""
    check_range("num_inits", num_inits, ge=1, integer=True)
    seats = _check_seats(shaper_seats)
    n, k = len(seats), int(seats.sum())
    s = 2**n + 1
    trial = make_mfos_trial(payoffs, shaper_seats, config)
    graphdef, params0 = init_mfos_policy(n, config, jax.random.key(0))
    shaper_idx = np.flatnonzero(seats)

    def fitness(params: nnx.State, key: jax.Array) -> jax.Array:
        def act(obs: jax.Array, _: Any) -> jax.Array:
            return jax.vmap(lambda p, o: nnx.merge(graphdef, p)(o))(params, obs)

        inits = config.init_std * jax.random.normal(key, (num_inits, n, s))
        values = jax.vmap(lambda th0: trial(act, th0)["values"])(inits)  # [I, T, N]
        return values[:, :, shaper_idx].mean((0, 1))

    return make_es_train(fitness, params0, k, es), graphdef


# ----------------------------------------------------------------------------------------------------------------
# meta-PPO


@dataclasses.dataclass(frozen=True)
class MetaPPOConfig(PPOHyperparams):
    """PPO on meta-steps: ``iterations`` rounds of ``num_trials`` parallel trials, then ``update_epochs`` x
    ``num_minibatches`` clipped updates (:func:`jaxsafety.rl.make_ppo_update`); the meta-policy is a Gaussian over
    the shaper's logits (state-independent learned log-std starting at ``init_log_std``) with a separate critic."""

    iterations: int = 100
    num_trials: int = 16
    ent_coef: float = 0.0
    lr: float = 1e-3
    init_log_std: float = 0.0

    def __post_init__(self) -> None:
        for f in ("iterations", "num_trials"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        super().__post_init__()


def make_mfos_ppo(
    payoffs: jax.Array, shaper_seats: Sequence[bool], config: MFOSConfig, ppo: MetaPPOConfig
) -> tuple[Callable[[jax.Array], tuple[nnx.State, dict[str, jax.Array]]], nnx.GraphDef]:
    """``(train, graphdef)``: ``train(key) -> (params [K, ...], metrics [iterations, K])`` meta-trains each shaper
    seat's Gaussian actor-critic (:class:`jaxsafety.rl.ActorCritic`) with PPO, every seat on its own return.
    ``metrics``: ``trial_return`` (mean meta-reward per step of the iteration's trials), ``policy_loss``,
    ``value_loss``, ``approx_kl``, ``log_std``. The greedy meta-policy of a trained seat is its Gaussian's mean."""
    seats = _check_seats(shaper_seats)
    n, k = len(seats), int(seats.sum())
    s = 2**n + 1
    batch = ppo.num_trials * config.trial_length
    check(
        batch % ppo.num_minibatches == 0,
        "num_minibatches",
        ppo.num_minibatches,
        f"divisors of num_trials * trial_length ({batch})",
    )
    trial = make_mfos_trial(payoffs, shaper_seats, config)
    shaper_idx = np.flatnonzero(seats)

    def new_model(key: jax.Array) -> ActorCritic:
        return ActorCritic(
            n * s,
            s,
            action_kind="gaussian",
            hidden=tuple(config.hidden),
            init_log_std=ppo.init_log_std,
            rngs=nnx.Rngs(key),
        )

    graphdef, _ = nnx.split(new_model(jax.random.key(0)))
    tx = ppo.optimizer(ppo.iterations)

    def forward(params: nnx.State, obs: jax.Array) -> tuple[Any, jax.Array]:
        return nnx.merge(graphdef, params)(obs)

    def rollout(params: nnx.State, key: jax.Array) -> dict[str, jax.Array]:
        """``num_trials`` trials; every leaf ``[B, T, ...]`` (seat axis after T)."""
        k_init, k_noise = jax.random.split(key)
        inits = config.init_std * jax.random.normal(k_init, (ppo.num_trials, n, s))
        noise = jax.random.normal(k_noise, (ppo.num_trials, config.trial_length, k, s))

        def act(obs: jax.Array, z: jax.Array) -> jax.Array:  # every seat samples its logits
            return jax.vmap(lambda p, o, zk: forward(p, o)[0].sample_from_noise(zk))(params, obs, z)

        def one_trial(th0: jax.Array, z: jax.Array) -> dict[str, jax.Array]:
            out = trial(act, th0, z)
            # score the played actions (the shapers' rows of thetas) for log-probs and values, batched over T
            actions = out["thetas"][:, shaper_idx]  # [T, K, S]
            dists, values = jax.vmap(jax.vmap(forward), in_axes=(None, 0))(params, out["obs"])
            return {
                "obs": out["obs"],
                "action": actions,
                "logp": dists.log_prob(actions),
                "value": values,
                "reward": out["values"][:, shaper_idx],
            }

        return jax.vmap(one_trial)(inits, noise)

    def apply(p: nnx.State, mb: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        dist, value = forward(p, mb["obs"])
        return dist.log_prob(mb["action"]), dist.entropy(), value

    ppo_update = make_ppo_update(apply, tx, ppo)

    def update_seat(p: nnx.State, opt: Any, data: dict[str, jax.Array], key: jax.Array) -> tuple:
        """PPO epochs for one seat on ``data`` leaves ``[B, T, ...]``."""
        value_last = jnp.zeros_like(data["value"][:, :1])  # a trial ends: no bootstrap after its last step
        next_values = jnp.concatenate([data["value"][:, 1:], value_last], axis=1)
        done = jnp.zeros_like(data["reward"]).at[:, -1].set(1.0)
        adv, ret = gae_advantages(
            data["reward"].T,
            data["value"].T,
            next_values.T,
            done.T,
            done.T,
            gamma=ppo.gamma,
            lam=ppo.gae_lambda,
        )
        flat = {
            "obs": data["obs"].reshape(batch, -1),
            "action": data["action"].reshape(batch, -1),
            "logp": data["logp"].reshape(batch),
            "value": data["value"].reshape(batch),
            "adv": adv.T.reshape(batch),
            "ret": ret.T.reshape(batch),
        }

        p, opt, metrics = ppo_update(p, opt, flat, key)
        return p, opt, {k: metrics[k] for k in ("policy_loss", "value_loss", "approx_kl")}

    def iteration(carry: tuple, key: jax.Array) -> tuple[tuple, dict[str, jax.Array]]:
        params, opt = carry
        k_roll, k_upd = jax.random.split(key)
        data = rollout(params, k_roll)  # leaves [B, T, K, ...]
        per_seat = jax.tree.map(lambda x: jnp.moveaxis(x, 2, 0), data)  # [K, B, T, ...]
        params, opt, aux = jax.vmap(update_seat)(params, opt, per_seat, jax.random.split(k_upd, k))
        log_std = jax.vmap(lambda p: nnx.merge(graphdef, p).log_std[...].mean())(params)
        return (params, opt), {"trial_return": per_seat["reward"].mean((1, 2)), "log_std": log_std, **aux}

    def train(key: jax.Array) -> tuple[nnx.State, dict[str, jax.Array]]:
        k_init, k_iters = jax.random.split(key)
        params = jax.vmap(lambda kk: nnx.split(new_model(kk))[1])(jax.random.split(k_init, k))
        opt = jax.vmap(tx.init)(params)
        (params, _), metrics = jax.lax.scan(
            iteration, (params, opt), jax.random.split(k_iters, ppo.iterations)
        )
        return params, metrics

    train.ppo_update = update_seat  # type: ignore[attr-defined]  # one seat's update on its trials
    return train, graphdef
