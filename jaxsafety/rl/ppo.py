"""PPO for gymnax environments, PureJaxRL style: ``make_train(config) -> train(key) -> (runner, metrics)``.

The whole run (rollouts of ``num_envs`` vmapped environments inside ``lax.scan``, GAE, ``update_epochs`` x
``num_minibatches`` clipped-PPO updates) is one pure function of a PRNG key, so ``jax.jit(train)`` compiles it once
and ``jax.jit(jax.vmap(train))(keys)`` trains many seeds in one program. Metrics come back as arrays with one entry
per update (``[num_updates]``, or ``[seeds, num_updates]`` under vmap) and are written to TensorBoard after the run.

Differences from PureJaxRL's reference script, each switchable: time-limit truncations are bootstrapped with the
value of the true final observation (gymnax's ``info["final_observation"]``), optional observation normalisation and
reward scaling, continuous actions as clipped or tanh-squashed Gaussians, k1/k3 KL and clip-fraction diagnostics.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxsafety.config import check, check_choice, check_range
from jaxsafety.rl import losses
from jaxsafety.rl.gae import gae_advantages
from jaxsafety.rl.networks import ActorCritic
from jaxsafety.rl.normalize import RunningMeanStd, normalize_obs, scale_rewards
from jaxsafety.train.optim import OptimizerConfig, make_optimizer

__all__ = ["PPOConfig", "Runner", "make_env", "make_policy", "make_train"]


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; defaults are PureJaxRL's CartPole-v1 settings."""

    env: str = "CartPole-v1"
    num_envs: int = 4
    num_steps: int = 128  # rollout length per env per update
    total_timesteps: int = 500_000
    update_epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    clip_value: bool = True  # clip the value loss with clip_eps (ppo2)
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    lr: float = 2.5e-4
    anneal_lr: bool = True  # linear decay to 0 over the run
    max_grad_norm: float = 0.5
    hidden: tuple[int, ...] = (64, 64)
    activation: Literal["tanh", "relu", "gelu", "silu"] = "tanh"
    action_kind: Literal["auto", "discrete", "gaussian", "tanh"] = "auto"  # auto: discrete or gaussian
    init_log_std: float = 0.0
    normalize_obs: bool = False
    scale_rewards: bool = False
    normalize_advantages: bool = True
    bootstrap_truncation: bool = True

    def __post_init__(self) -> None:
        for f in ("num_envs", "num_steps", "total_timesteps", "update_epochs", "num_minibatches"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check(
            self.total_timesteps >= self.num_envs * self.num_steps,
            "total_timesteps",
            self.total_timesteps,
            f"integers >= num_envs * num_steps ({self.num_envs * self.num_steps})",
        )
        check(
            (self.num_envs * self.num_steps) % self.num_minibatches == 0,
            "num_minibatches",
            self.num_minibatches,
            f"divisors of num_envs * num_steps ({self.num_envs * self.num_steps})",
        )
        check_range("gamma", self.gamma, ge=0, le=1)
        check_range("gae_lambda", self.gae_lambda, ge=0, le=1)
        check_range("clip_eps", self.clip_eps, gt=0)
        check_range("ent_coef", self.ent_coef, ge=0)
        check_range("vf_coef", self.vf_coef, ge=0)
        check_range("lr", self.lr, gt=0)
        check_range("max_grad_norm", self.max_grad_norm, gt=0)
        check(
            len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden), "hidden", self.hidden, "positive ints"
        )
        check_choice("activation", self.activation, ("tanh", "relu", "gelu", "silu"))
        check_choice("action_kind", self.action_kind, ("auto", "discrete", "gaussian", "tanh"))

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // (self.num_envs * self.num_steps)

    @property
    def minibatch_size(self) -> int:
        return self.num_envs * self.num_steps // self.num_minibatches


class Runner(NamedTuple):
    """Everything that evolves during training (one seed)."""

    params: nnx.State
    opt_state: optax.OptState
    env_state: Any
    obs: jax.Array  # [N, obs_dim] raw observations
    key: jax.Array
    obs_rms: RunningMeanStd
    ret_rms: RunningMeanStd
    disc_return: jax.Array  # [N] running discounted return (reward scaling)
    ep_return: jax.Array  # [N] undiscounted return of the running episode
    ep_length: jax.Array  # [N]


class Transition(NamedTuple):
    obs: jax.Array
    action: jax.Array
    logp: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    final_obs: jax.Array
    ep_return: jax.Array  # completed episode's return at done steps
    ep_length: jax.Array


def make_env(name: str) -> tuple[Any, Any]:
    """A gymnax environment and its default params; errors list gymnax's registered names."""
    import gymnax

    check_choice("env", name, tuple(gymnax.registered_envs))
    return gymnax.make(name)


def _action_spec(env: Any, env_params: Any, kind: str) -> tuple[str, int, Any, Any]:
    space = env.action_space(env_params)
    if hasattr(space, "n"):
        check(
            kind in ("auto", "discrete"),
            "action_kind",
            kind,
            "'auto' or 'discrete' for a discrete action space",
        )
        return "discrete", int(space.n), None, None
    check(
        kind != "discrete", "action_kind", kind, "'auto', 'gaussian' or 'tanh' for a continuous action space"
    )
    dim = int(np.prod(space.shape))
    low = np.broadcast_to(np.asarray(space.low, np.float32), (dim,))
    high = np.broadcast_to(np.asarray(space.high, np.float32), (dim,))
    return ("gaussian" if kind == "auto" else kind), dim, low, high


def make_policy(config: PPOConfig, key: jax.Array | None = None) -> tuple[ActorCritic, Any, Any]:
    """``(actor_critic, env, env_params)`` for ``config``; the network is initialised from ``key``."""
    env, env_params = make_env(config.env)
    kind, n_act, low, high = _action_spec(env, env_params, config.action_kind)
    obs_dim = int(np.prod(env.observation_space(env_params).shape))
    model = ActorCritic(
        obs_dim,
        n_act,
        action_kind=kind,
        hidden=tuple(config.hidden),
        activation=config.activation,
        action_low=tuple(low) if low is not None else -1.0,
        action_high=tuple(high) if high is not None else 1.0,
        init_log_std=config.init_log_std,
        rngs=nnx.Rngs(jax.random.key(0) if key is None else key),
    )
    return model, env, env_params


def make_train(config: PPOConfig):
    """Build ``train(key) -> (Runner, metrics)``; jit it (and vmap it over keys for many seeds)."""
    model0, env, env_params = make_policy(config)
    graphdef, _ = nnx.split(model0, nnx.Param)
    kind = model0.action_kind
    n_envs, n_steps = config.num_envs, config.num_steps
    steps_per_update = config.update_epochs * config.num_minibatches
    tx = make_optimizer(
        OptimizerConfig(
            name="adamw",
            lr=config.lr,
            eps=1e-5,
            weight_decay=0.0,
            schedule="linear" if config.anneal_lr else "constant",
            total_steps=config.num_updates * steps_per_update,
            grad_clip_norm=config.max_grad_norm,
        )
    )
    obs_shape = env.observation_space(env_params).shape
    obs_dim = int(np.prod(obs_shape))
    if kind == "discrete":
        act_low = act_high = None
    else:
        act_low, act_high = jnp.asarray(model0.low), jnp.asarray(model0.high)
    v_reset = jax.vmap(env.reset, in_axes=(0, None))
    v_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def policy(params: nnx.State, obs: jax.Array):
        return nnx.merge(graphdef, params)(obs)

    def norm(rms: RunningMeanStd, obs: jax.Array) -> jax.Array:
        return normalize_obs(rms, obs) if config.normalize_obs else obs

    def rollout_step(runner: Runner, _: Any) -> tuple[Runner, Transition]:
        key, k_act, k_env = jax.random.split(runner.key, 3)
        obs_rms = runner.obs_rms.update(runner.obs) if config.normalize_obs else runner.obs_rms
        obs_n = norm(obs_rms, runner.obs)
        dist, value = policy(runner.params, obs_n)
        action = dist.sample(k_act)
        logp = dist.log_prob(action)
        env_action = jnp.clip(action, act_low, act_high) if kind == "gaussian" else action
        if kind != "discrete" and env.action_space(env_params).shape == ():
            env_action = env_action[..., 0]
        next_obs, env_state, reward, terminated, truncated, info = v_step(
            jax.random.split(k_env, n_envs), runner.env_state, env_action, env_params
        )
        next_obs = next_obs.reshape(n_envs, obs_dim)
        final_obs = info["final_observation"].reshape(n_envs, obs_dim)
        done = jnp.logical_or(terminated, truncated)
        reward = reward.astype(jnp.float32)
        ep_return = runner.ep_return + reward
        ep_length = runner.ep_length + 1
        ret_rms, disc_return = runner.ret_rms, runner.disc_return
        train_reward = reward
        if config.scale_rewards:
            ret_rms, disc_return, train_reward = scale_rewards(
                ret_rms, disc_return, reward, done, config.gamma
            )
        term = terminated if config.bootstrap_truncation else done
        tr = Transition(
            obs_n,
            action,
            logp,
            value,
            train_reward,
            term,
            done,
            norm(obs_rms, final_obs),
            ep_return,
            ep_length,
        )
        runner = runner._replace(
            env_state=env_state,
            obs=next_obs,
            key=key,
            obs_rms=obs_rms,
            ret_rms=ret_rms,
            disc_return=disc_return,
            ep_return=jnp.where(done, 0.0, ep_return),
            ep_length=jnp.where(done, 0, ep_length),
        )
        return runner, tr

    def loss_fn(params: nnx.State, mb: dict[str, jax.Array]):
        dist, value = policy(params, mb["obs"])
        logp = dist.log_prob(mb["action"])
        adv = mb["adv"]
        if config.normalize_advantages:
            adv = losses.normalize_advantages(adv)
        pg = losses.clipped_policy_loss(logp, mb["logp"], adv, config.clip_eps)
        vl = losses.clipped_value_loss(
            value, mb["value"], mb["ret"], config.clip_eps if config.clip_value else None
        )
        ent = dist.entropy().mean()
        total = pg + config.vf_coef * vl - config.ent_coef * ent
        aux = {
            "policy_loss": pg,
            "value_loss": vl,
            "entropy": ent,
            "approx_kl": losses.approx_kl_k3(logp, mb["logp"]),
            "approx_kl_k1": losses.approx_kl_k1(logp, mb["logp"]),
            "clip_fraction": losses.clip_fraction(logp, mb["logp"], config.clip_eps),
        }
        return total, aux

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update_minibatch(carry, mb):
        params, opt_state = carry
        (total, aux), grads = grad_fn(params, mb)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), {"loss": total, **aux}

    def update_epoch(carry, key):
        params, opt_state, batch = carry
        perm = jax.random.permutation(key, n_envs * n_steps)
        mbs = jax.tree.map(
            lambda x: x[perm].reshape(config.num_minibatches, config.minibatch_size, *x.shape[1:]), batch
        )
        (params, opt_state), m = jax.lax.scan(update_minibatch, (params, opt_state), mbs)
        return (params, opt_state, batch), m

    def update(runner: Runner, _: Any) -> tuple[Runner, dict[str, jax.Array]]:
        runner, traj = jax.lax.scan(rollout_step, runner, None, n_steps)
        # V(s'_t): the final observation on done steps, otherwise the next observation (the same thing)
        _, next_values = policy(runner.params, traj.final_obs)
        adv, ret = gae_advantages(
            traj.reward,
            traj.value,
            next_values,
            traj.terminated,
            traj.done,
            gamma=config.gamma,
            lam=config.gae_lambda,
        )
        batch = {
            "obs": traj.obs,
            "action": traj.action,
            "logp": traj.logp,
            "value": traj.value,
            "adv": adv,
            "ret": ret,
        }
        batch = jax.tree.map(lambda x: x.reshape(n_envs * n_steps, *x.shape[2:]), batch)
        key, k_epochs = jax.random.split(runner.key)
        (params, opt_state, _), m = jax.lax.scan(
            update_epoch,
            (runner.params, runner.opt_state, batch),
            jax.random.split(k_epochs, config.update_epochs),
        )
        metrics = jax.tree.map(jnp.mean, m)
        n_done = traj.done.sum()
        denom = jnp.maximum(n_done, 1)
        nan = jnp.float32(jnp.nan)
        metrics["episode_return"] = jnp.where(n_done > 0, (traj.ep_return * traj.done).sum() / denom, nan)
        metrics["episode_length"] = jnp.where(n_done > 0, (traj.ep_length * traj.done).sum() / denom, nan)
        metrics["episodes"] = n_done
        var_ret = ret.var()
        metrics["explained_variance"] = 1.0 - (ret - traj.value).var() / jnp.maximum(var_ret, 1e-8)
        runner = runner._replace(params=params, opt_state=opt_state, key=key)
        return runner, metrics

    def train(key: jax.Array) -> tuple[Runner, dict[str, jax.Array]]:
        k_init, k_env, k_run = jax.random.split(key, 3)
        model, _, _ = make_policy(config, k_init)
        params = nnx.state(model, nnx.Param)
        obs, env_state = v_reset(jax.random.split(k_env, n_envs), env_params)
        runner = Runner(
            params=params,
            opt_state=tx.init(params),
            env_state=env_state,
            obs=obs.reshape(n_envs, obs_dim),
            key=k_run,
            obs_rms=RunningMeanStd.create((obs_dim,)),
            ret_rms=RunningMeanStd.create(()),
            disc_return=jnp.zeros(n_envs),
            ep_return=jnp.zeros(n_envs),
            ep_length=jnp.zeros(n_envs, jnp.int32),
        )
        runner, metrics = jax.lax.scan(update, runner, None, config.num_updates)
        metrics["env_steps"] = (jnp.arange(config.num_updates) + 1) * n_envs * n_steps
        return runner, metrics

    train.graphdef = graphdef  # type: ignore[attr-defined]
    return train
