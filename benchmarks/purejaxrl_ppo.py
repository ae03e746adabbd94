"""A plain PureJaxRL-style PPO (Lu et al. 2022, ``purejaxrl/ppo.py``): the in-benchmark reference for PPO speed.

TARGETS.md sets the floor of ``jaxsafety.rl.ppo`` at >= 1.0x "a plain PureJaxRL-style implementation run in the
same benchmark"; this module is that implementation, written here in the shape of PureJaxRL's single-file script
(benchmark peer code, not library code: it imports nothing from ``jaxsafety``):

- gymnax env with LogWrapper-style episode statistics (gymnax's own ``FlattenObservationWrapper`` and
  ``LogWrapper``, which follow PureJaxRL's ``wrappers.py``);
- a flax.linen ``ActorCritic`` with separate 2x64 tanh actor and critic torsos, orthogonal init (sqrt 2 hidden,
  0.01 policy head, 1.0 value head), zero biases;
- ``optax.chain(clip_by_global_norm, adam(eps=1e-5))`` in a flax ``TrainState``, learning rate annealed linearly
  per update (PureJaxRL's ``linear_schedule``);
- rollout: ``lax.scan`` over ``num_steps``, splitting the key and sampling the action inside every step, then one
  ``vmap(env.step)``;
- GAE as a reverse ``lax.scan`` with ``done = terminated or truncated`` and **no truncation bootstrapping**
  (the value after any done step is cut, as in PureJaxRL);
- ``update_epochs`` epochs of a fresh permutation split into ``num_minibatches``, clipped policy loss, clipped
  value loss (0.5 max of squared errors), entropy bonus, per-minibatch advantage normalisation.

Two deliberate deviations, both to make the timing comparable rather than to speed the reference up: the
categorical is written with ``jax.random.categorical`` / ``log_softmax`` (PureJaxRL uses distrax, which these
machines do not have; distrax's ``Categorical`` does the same ops), and the metrics are reduced in-graph to one
value per update (mean return and length of the episodes that ended in that rollout) instead of returning the whole
``[num_updates, num_steps, num_envs]`` info pytree, so both implementations hand back ``[num_updates]`` arrays.

``python -m benchmarks.purejaxrl_ppo [--quick]`` trains the reference on CartPole-v1 (several seeds vmapped) and
records its learning curve end points: a check that the speed reference is a PPO that actually learns.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen.initializers import constant, orthogonal
from flax.training.train_state import TrainState
from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper

from benchmarks.harness import cli_main

__all__ = ["ActorCritic", "RefConfig", "make_train", "run"]


@dataclasses.dataclass(frozen=True)
class RefConfig:
    """PureJaxRL's CartPole-v1 hyperparameters (the same values as ``jaxsafety.rl.ppo.PPOConfig``'s defaults)."""

    env_name: str = "CartPole-v1"
    lr: float = 2.5e-4
    num_envs: int = 4
    num_steps: int = 128
    total_timesteps: int = 500_000
    update_epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    anneal_lr: bool = True

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // (self.num_envs * self.num_steps)

    @property
    def minibatch_size(self) -> int:
        return self.num_envs * self.num_steps // self.num_minibatches

    @property
    def env_steps(self) -> int:
        """Env steps one seed actually takes (``total_timesteps`` rounded down to whole updates)."""
        return self.num_updates * self.num_envs * self.num_steps


class ActorCritic(nn.Module):
    """``obs [..., obs_dim] -> (logits [..., action_dim], value [...])`` with separate tanh torsos."""

    action_dim: int
    hidden: int = 64

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        hid = orthogonal(np.sqrt(2))
        pi = nn.tanh(nn.Dense(self.hidden, kernel_init=hid, bias_init=constant(0.0))(x))
        pi = nn.tanh(nn.Dense(self.hidden, kernel_init=hid, bias_init=constant(0.0))(pi))
        logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), bias_init=constant(0.0))(pi)
        v = nn.tanh(nn.Dense(self.hidden, kernel_init=hid, bias_init=constant(0.0))(x))
        v = nn.tanh(nn.Dense(self.hidden, kernel_init=hid, bias_init=constant(0.0))(v))
        v = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0))(v)
        return logits, jnp.squeeze(v, axis=-1)


def _log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(logp, action[..., None], axis=-1)[..., 0]


def _entropy(logits: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return -(jnp.exp(logp) * logp).sum(-1)


class Transition(NamedTuple):
    done: jax.Array
    action: jax.Array
    value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: jax.Array
    info: dict[str, jax.Array]


def make_train(config: RefConfig) -> Callable[[jax.Array], tuple[Any, dict[str, jax.Array]]]:
    """``train(key) -> (runner_state, metrics)``, the whole run as one function (jit it; vmap it over keys).

    ``metrics``: ``episode_return`` / ``episode_length`` ``[num_updates]`` (mean over the episodes that ended
    during the update's rollout, NaN if none did), ``episodes`` (how many ended) and ``env_steps``.
    """
    env, env_params = gymnax.make(config.env_name)
    env = LogWrapper(FlattenObservationWrapper(env))
    n_actions = env.action_space(env_params).n
    obs_shape = env.observation_space(env_params).shape
    network = ActorCritic(n_actions, config.hidden)
    batch_size = config.num_envs * config.num_steps

    def linear_schedule(count: jax.Array) -> jax.Array:
        # one step of the staircase per update, as in PureJaxRL
        frac = 1.0 - (count // (config.num_minibatches * config.update_epochs)) / config.num_updates
        return config.lr * frac

    def train(rng: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        rng, init_rng = jax.random.split(rng)
        params = network.init(init_rng, jnp.zeros(obs_shape))
        tx = optax.chain(
            optax.clip_by_global_norm(config.max_grad_norm),
            optax.adam(linear_schedule if config.anneal_lr else config.lr, eps=1e-5),
        )
        train_state = TrainState.create(apply_fn=network.apply, params=params, tx=tx)

        rng, reset_rng = jax.random.split(rng)
        obsv, env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(reset_rng, config.num_envs), env_params
        )

        def update_step(runner_state: tuple, _: Any) -> tuple[tuple, dict[str, jax.Array]]:
            def env_step(runner_state: tuple, _: Any) -> tuple[tuple, Transition]:
                train_state, env_state, last_obs, rng = runner_state
                rng, action_rng = jax.random.split(rng)
                logits, value = network.apply(train_state.params, last_obs)
                action = jax.random.categorical(action_rng, logits)
                log_prob = _log_prob(logits, action)
                rng, step_rng = jax.random.split(rng)
                obsv, env_state, reward, terminated, truncated, info = jax.vmap(
                    env.step, in_axes=(0, 0, 0, None)
                )(jax.random.split(step_rng, config.num_envs), env_state, action, env_params)
                done = jnp.logical_or(terminated, truncated)
                transition = Transition(done, action, value, reward, log_prob, last_obs, info)
                return (train_state, env_state, obsv, rng), transition

            runner_state, traj = jax.lax.scan(env_step, runner_state, None, config.num_steps)
            train_state, env_state, last_obs, rng = runner_state
            _, last_val = network.apply(train_state.params, last_obs)

            def gae_step(carry: tuple, tr: Transition) -> tuple[tuple, jax.Array]:
                gae, next_value = carry
                not_done = 1.0 - tr.done
                delta = tr.reward + config.gamma * next_value * not_done - tr.value
                gae = delta + config.gamma * config.gae_lambda * not_done * gae
                return (gae, tr.value), gae

            _, advantages = jax.lax.scan(
                gae_step, (jnp.zeros_like(last_val), last_val), traj, reverse=True, unroll=16
            )
            targets = advantages + traj.value

            def update_epoch(update_state: tuple, _: Any) -> tuple[tuple, Any]:
                def update_minibatch(train_state: TrainState, batch: tuple) -> tuple[TrainState, Any]:
                    tr, gae, target = batch

                    def loss_fn(params: Any) -> tuple[jax.Array, tuple]:
                        logits, value = network.apply(params, tr.obs)
                        log_prob = _log_prob(logits, tr.action)
                        value_clipped = tr.value + (value - tr.value).clip(-config.clip_eps, config.clip_eps)
                        sq_err = jnp.square(value - target)
                        sq_err_clipped = jnp.square(value_clipped - target)
                        value_loss = 0.5 * jnp.maximum(sq_err, sq_err_clipped).mean()
                        ratio = jnp.exp(log_prob - tr.log_prob)
                        gae_n = (gae - gae.mean()) / (gae.std() + 1e-8)
                        ratio_clipped = jnp.clip(ratio, 1.0 - config.clip_eps, 1.0 + config.clip_eps)
                        actor_loss = -jnp.minimum(ratio * gae_n, ratio_clipped * gae_n).mean()
                        entropy = _entropy(logits).mean()
                        total = actor_loss + config.vf_coef * value_loss - config.ent_coef * entropy
                        return total, (value_loss, actor_loss, entropy)

                    (total, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(train_state.params)
                    return train_state.apply_gradients(grads=grads), (total, aux)

                train_state, traj, advantages, targets, rng = update_state
                rng, perm_rng = jax.random.split(rng)
                perm = jax.random.permutation(perm_rng, batch_size)
                batch = (traj, advantages, targets)
                batch = jax.tree.map(lambda x: x.reshape((batch_size, *x.shape[2:])), batch)
                shuffled = jax.tree.map(lambda x: jnp.take(x, perm, axis=0), batch)
                minibatches = jax.tree.map(
                    lambda x: x.reshape((config.num_minibatches, -1, *x.shape[1:])), shuffled
                )
                train_state, losses = jax.lax.scan(update_minibatch, train_state, minibatches)
                return (train_state, traj, advantages, targets, rng), losses

            # the info pytree is not trained on: drop it before the minibatch shuffles
            traj_train = traj._replace(info={})
            update_state = (train_state, traj_train, advantages, targets, rng)
            update_state, _ = jax.lax.scan(update_epoch, update_state, None, config.update_epochs)
            train_state, rng = update_state[0], update_state[-1]

            ended = traj.info["returned_episode"]
            n_ended = ended.sum()
            denom = jnp.maximum(n_ended, 1)
            nan = jnp.float32(jnp.nan)
            metric = {
                "episode_return": jnp.where(
                    n_ended > 0, (traj.info["returned_episode_returns"] * ended).sum() / denom, nan
                ),
                "episode_length": jnp.where(
                    n_ended > 0, (traj.info["returned_episode_lengths"] * ended).sum() / denom, nan
                ),
                "episodes": n_ended,
            }
            return (train_state, env_state, last_obs, rng), metric

        runner_state = (train_state, env_state, obsv, rng)
        runner_state, metrics = jax.lax.scan(update_step, runner_state, None, config.num_updates)
        metrics["env_steps"] = (jnp.arange(config.num_updates) + 1) * batch_size
        return runner_state, metrics

    return train


def learning_summary(metrics: dict[str, jax.Array], window: int = 10) -> dict[str, float]:
    """Mean (over seeds) episode return of the first and last ``window`` updates of ``[seeds, num_updates]``
    metrics (NaN entries, updates where no episode ended, are skipped)."""
    ret = np.asarray(metrics["episode_return"], np.float64)
    ret = ret.reshape(-1, ret.shape[-1])
    window = min(window, ret.shape[-1])
    return {
        "first_return": float(np.nanmean(ret[:, :window])),
        "final_return": float(np.nanmean(ret[:, -window:])),
        "final_return_per_seed": np.nanmean(ret[:, -window:], axis=-1).tolist(),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Train the reference on CartPole-v1 for a few seeds and report first/final episode returns.

    Seeds run one after another through one compiled single-seed program rather than vmapped: a vmapped program
    needs the XLA flag that :mod:`benchmarks.ppo_cartpole` sets (see its docstring), and this check should not.
    """
    seeds = 4
    config = RefConfig(total_timesteps=100_000 if quick else 500_000)
    train = jax.jit(make_train(config))
    t0 = time.perf_counter()
    per_seed = [jax.block_until_ready(train(jax.random.key(s))[1]) for s in range(seeds)]
    wall = time.perf_counter() - t0
    metrics = jax.tree.map(lambda *xs: jnp.stack(xs), *per_seed)
    summary = learning_summary(metrics)
    print(
        f"PureJaxRL-style PPO CartPole-v1, {seeds} seeds x {config.env_steps} env steps: return "
        f"{summary['first_return']:.1f} (first 10 updates) -> {summary['final_return']:.1f} (last 10), "
        f"{wall:.1f} s incl. compile"
    )
    return {
        "config": dataclasses.asdict(config),
        "seeds": seeds,
        "env_steps_per_seed": config.env_steps,
        "wall_s_incl_compile": wall,
        **summary,
    }


if __name__ == "__main__":
    cli_main("purejaxrl_ppo", run)
