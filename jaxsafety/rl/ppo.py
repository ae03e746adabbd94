"""PPO for gymnax environments, PureJaxRL style: ``make_train(config) -> train(key) -> (runner, metrics)``.

The whole run (rollouts of ``num_envs`` vmapped environments inside ``lax.scan``, GAE, ``update_epochs`` x
``num_minibatches`` clipped-PPO updates) is one pure function of a PRNG key, so ``jax.jit(train)`` compiles it once
and ``jax.jit(jax.vmap(train))(keys)`` trains many seeds in one program. Metrics come back as arrays with one entry
per update (``[num_updates]``, or ``[seeds, num_updates]`` under vmap) and are written to TensorBoard after the run.

Differences from PureJaxRL's reference script, each switchable: time-limit truncations are bootstrapped with the
value of the true final observation (gymnax's ``info["final_observation"]``), optional observation normalisation and
reward scaling, continuous actions as clipped or tanh-squashed Gaussians, k1/k3 KL and clip-fraction diagnostics.

Speed. On CPU a rollout step is a chain of tiny ops, so latency, not FLOPs, sets the pace; and every threefry call
inside a loop body lowers to a small loop of its own. So the randomness of a whole rollout (action noise, env keys
and, through :func:`make_vec_env`, the auto-reset states gymnax would draw at every step) is drawn in batched calls
before the rollout's ``lax.scan``; the extra network pass for truncation bootstrapping is the critic alone, batched
over the rollout after the scan, and only when ``bootstrap_truncation`` is on (otherwise ``V(s'_t)`` is read off the
next row, as in PureJaxRL); Adam and gradient clipping run on one flattened vector (``optax.flatten``) rather than
one small op per parameter leaf.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxsafety.config import check, check_choice, check_range
from jaxsafety.rl.distributions import Categorical, Gaussian, TanhGaussian
from jaxsafety.rl.gae import gae_advantages
from jaxsafety.rl.networks import ActorCritic
from jaxsafety.rl.normalize import RunningMeanStd, normalize_obs, scale_rewards
from jaxsafety.rl.update import PPOHyperparams, make_ppo_update

__all__ = [
    "PPOConfig",
    "Runner",
    "VecEnv",
    "make_env",
    "make_evaluate",
    "make_policy",
    "make_train",
    "make_vec_env",
]

ACTIVATIONS = ("tanh", "relu", "gelu", "silu")
ACTION_KINDS = ("auto", "discrete", "gaussian", "tanh")


@dataclasses.dataclass(frozen=True)
class PPOConfig(PPOHyperparams):
    """PPO on a gymnax environment; defaults are PureJaxRL's CartPole-v1 settings (4 envs x 128 steps, 4 epochs x
    4 minibatches, lr 2.5e-4 annealed, 2x64 tanh actor and critic, 5e5 env steps). The loss, GAE and optimiser
    fields come from :class:`~jaxsafety.rl.update.PPOHyperparams`."""

    env: str = "CartPole-v1"  # any gymnax registered env name
    num_envs: int = 4
    num_steps: int = 128  # rollout length per env per update
    total_timesteps: int = 500_000
    anneal_lr: bool = True  # linear decay to 0 over the run
    hidden: tuple[int, ...] = (64, 64)
    activation: Literal["tanh", "relu", "gelu", "silu"] = "tanh"
    action_kind: Literal["auto", "discrete", "gaussian", "tanh"] = "auto"  # auto: discrete or gaussian
    init_log_std: float = 0.0  # continuous policies: initial log std of the (pre-squash) Gaussian
    normalize_obs: bool = False  # running mean/var observation normalisation
    scale_rewards: bool = False  # divide rewards by the running std of the discounted return
    bootstrap_truncation: bool = True  # bootstrap time-limit truncations with V(final observation)

    def __post_init__(self) -> None:
        import gymnax

        check_choice("env", self.env, tuple(gymnax.registered_envs))
        for f in ("num_envs", "num_steps", "total_timesteps"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        super().__post_init__()
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
        check(
            len(self.hidden) >= 1 and all(isinstance(h, int) and h >= 1 for h in self.hidden),
            "hidden",
            self.hidden,
            "non-empty tuples of integers >= 1",
        )
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("action_kind", self.action_kind, ACTION_KINDS)
        check_range("init_log_std", self.init_log_std, ge=-20, le=2)
        env, env_params = make_env(self.env)
        _action_spec(env, env_params, self.action_kind)

    @property
    def num_updates(self) -> int:
        """Rollout + update iterations: ``total_timesteps // (num_envs * num_steps)``."""
        return self.total_timesteps // (self.num_envs * self.num_steps)

    @property
    def minibatch_size(self) -> int:
        return self.num_envs * self.num_steps // self.num_minibatches

    @property
    def env_steps(self) -> int:
        """Environment steps the run actually takes (``total_timesteps`` rounded down to whole updates)."""
        return self.num_updates * self.num_envs * self.num_steps


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
    """One rollout step of ``N`` envs (stacked to ``[T, N, ...]`` by the scan)."""

    obs: jax.Array  # [N, obs_dim] as the policy saw it (normalised if enabled)
    action: jax.Array  # [N] (discrete), [N, D] raw Gaussian sample, or pre-squash sample for tanh
    logp: jax.Array
    value: jax.Array
    reward: jax.Array  # as trained on (scaled if enabled)
    terminated: jax.Array  # cuts bootstrapping (= done when bootstrap_truncation is off)
    done: jax.Array  # terminated or truncated: cuts the GAE recursion
    final_obs: jax.Array | None  # [N, obs_dim] s'_t before auto-reset; None without truncation bootstrapping
    ep_return: jax.Array  # running episode's return (complete at done steps)
    ep_length: jax.Array


def make_env(name: str) -> tuple[Any, Any]:
    """A gymnax environment and its default params; errors list gymnax's registered names."""
    import gymnax

    check_choice("env", name, tuple(gymnax.registered_envs))
    return gymnax.make(name)


def _action_spec(env: Any, env_params: Any, kind: str) -> tuple[str, int, Any, Any]:
    """``(resolved kind, action count or dim, low, high)`` of the env's action space."""
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


Dist = Categorical | Gaussian | TanhGaussian


def _sample(dist: Dist, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(stored action, log-prob)`` from standard noise: the pre-squash sample for tanh policies (scored exactly,
    see :class:`TanhGaussian`), the raw sample otherwise."""
    if isinstance(dist, TanhGaussian):
        u = dist.sample_pre_squash_from_noise(noise)
        return u, dist.log_prob_pre_squash(u)
    action = dist.sample_from_noise(noise)
    return action, dist.log_prob(action)


def _noise_fn(kind: str) -> Callable[[jax.Array, tuple[int, ...]], jax.Array]:
    return Categorical.noise if kind == "discrete" else Gaussian.noise


def _log_prob(dist: Dist, stored: jax.Array) -> jax.Array:
    if isinstance(dist, TanhGaussian):
        return dist.log_prob_pre_squash(stored)
    return dist.log_prob(stored)


def _env_action_fn(env: Any, env_params: Any, kind: str, low: Any, high: Any) -> Callable[..., jax.Array]:
    """Stored action -> what ``env.step`` takes (clipped or squashed into the bounds, env action shape)."""
    scalar = kind != "discrete" and env.action_space(env_params).shape == ()

    def to_env(dist: Dist, stored: jax.Array) -> jax.Array:
        if kind == "gaussian":
            stored = jnp.clip(stored, low, high)
        elif kind == "tanh":
            stored = dist.squash(stored)
        return stored[..., 0] if scalar else stored

    return to_env


class VecEnv(NamedTuple):
    """``num_envs`` copies of a gymnax env with auto-reset, split so that a rollout's randomness (and, for envs
    using gymnax's standard ``Environment.step``, its reset states) is computed in one batched call before the
    rollout's ``lax.scan`` instead of at every step.

    ``reset(key) -> (obs [N, obs_dim], state)``; ``prepare(key, n_steps) -> xs`` (a pytree with leading axis
    ``n_steps``); ``step(xs_t, state, action) -> (next_obs, state, reward, terminated, truncated, final_obs)``,
    where ``next_obs`` is already reset at done envs and ``final_obs`` is the observation before the reset (both
    ``[N, obs_dim]``). The result equals ``vmap(env.step)`` with the same per-env keys (tested).
    """

    reset: Callable[[jax.Array], tuple[jax.Array, Any]]
    prepare: Callable[[jax.Array, int], Any]
    step: Callable[[Any, Any, jax.Array], tuple[jax.Array, ...]]


def make_vec_env(env: Any, env_params: Any, num_envs: int) -> VecEnv:
    """A :class:`VecEnv` of ``num_envs`` copies of ``env``.

    gymnax's ``Environment.step`` draws a reset state at every step (split key -> ``reset_env``) and selects it
    where the episode ended. When ``env`` uses that standard ``step``, the same computation is done here with the
    reset states of all ``n_steps`` x ``num_envs`` steps drawn by ``prepare`` in one batched call: on CPU every
    threefry call inside a loop body is a (5-iteration) loop of its own, which would otherwise dominate a
    CartPole rollout step. Envs that override ``step`` (e.g. DeepSea) are stepped through their own ``step``.
    """
    from gymnax.environments.environment import Environment

    obs_dim = int(np.prod(env.observation_space(env_params).shape))

    def flat(obs: jax.Array) -> jax.Array:
        return obs.reshape(num_envs, obs_dim)

    def reset(key: jax.Array) -> tuple[jax.Array, Any]:
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), env_params)
        return flat(obs), state

    if type(env).step is not Environment.step:
        v_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

        def prepare_keys(key: jax.Array, n_steps: int) -> jax.Array:
            return jax.random.split(key, (n_steps, num_envs))

        def step_generic(keys: jax.Array, state: Any, action: jax.Array) -> tuple[jax.Array, ...]:
            obs, state, reward, terminated, truncated, info = v_step(keys, state, action, env_params)
            return flat(obs), state, reward, terminated, truncated, flat(info["final_observation"])

        return VecEnv(reset, prepare_keys, step_generic)

    def prepare(key: jax.Array, n_steps: int) -> tuple[jax.Array, jax.Array, Any]:
        keys = jax.vmap(jax.random.split)(jax.random.split(key, n_steps * num_envs))  # as Environment.step
        k_step, k_reset = keys[:, 0], keys[:, 1]
        obs_re, state_re = jax.vmap(env.reset_env, in_axes=(0, None))(k_reset, env_params)
        return jax.tree.map(lambda x: x.reshape(n_steps, num_envs, *x.shape[1:]), (k_step, obs_re, state_re))

    def step_one(key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, ...]:
        obs, state, reward, terminated, _ = env.step_env(key, state, action, env_params)
        return obs, state, reward, terminated, env.is_truncated(state, env_params)

    v_step_env = jax.vmap(step_one)

    def step(xs: tuple[jax.Array, jax.Array, Any], state: Any, action: jax.Array) -> tuple[jax.Array, ...]:
        k_step, obs_re, state_re = xs
        obs_st, state_st, reward, terminated, truncated = v_step_env(k_step, state, action)
        done = jnp.logical_or(terminated, truncated)

        def select(re: jax.Array, st: jax.Array) -> jax.Array:
            return jnp.where(done.reshape(-1, *(1,) * (st.ndim - 1)), re, st)

        state = jax.tree.map(select, state_re, state_st)
        return flat(select(obs_re, obs_st)), state, reward, terminated, truncated, flat(obs_st)

    return VecEnv(reset, prepare, step)


def make_train(config: PPOConfig) -> Callable[[jax.Array], tuple[Runner, dict[str, jax.Array]]]:
    """Build ``train(key) -> (Runner, metrics)``; jit it (and vmap it over keys for many seeds).

    ``metrics`` maps names to ``[num_updates]`` arrays: ``episode_return`` / ``episode_length`` (mean over the
    episodes that ended during the update's rollout, NaN if none did), ``episodes``, the minibatch means of
    ``loss``, ``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl`` (k3), ``approx_kl_k1`` and
    ``clip_fraction``, ``explained_variance``, ``action_std`` (continuous only) and ``env_steps`` (the x axis).
    """
    model0, env, env_params = make_policy(config)
    graphdef, _ = nnx.split(model0, nnx.Param)
    kind = model0.action_kind
    n_envs, n_steps = config.num_envs, config.num_steps
    batch_size = n_envs * n_steps
    tx = config.optimizer(config.num_updates)
    obs_dim = int(np.prod(env.observation_space(env_params).shape))
    act_low = None if kind == "discrete" else jnp.asarray(model0.low)
    act_high = None if kind == "discrete" else jnp.asarray(model0.high)
    to_env = _env_action_fn(env, env_params, kind, act_low, act_high)
    venv = make_vec_env(env, env_params, n_envs)

    def model(params: nnx.State) -> ActorCritic:
        return nnx.merge(graphdef, params)  # trace-time only: no cost in the compiled program

    def norm(rms: RunningMeanStd, obs: jax.Array) -> jax.Array:
        return normalize_obs(rms, obs) if config.normalize_obs else obs

    n_act = model0.actor.out.out_features
    noise_fn = _noise_fn(kind)

    def rollout_step(runner: Runner, xs: tuple[jax.Array, Any]) -> tuple[Runner, Transition]:
        noise, env_xs = xs
        obs_rms = runner.obs_rms.update(runner.obs) if config.normalize_obs else runner.obs_rms
        obs_n = norm(obs_rms, runner.obs)
        dist, value = model(runner.params)(obs_n)
        action, logp = _sample(dist, noise)
        next_obs, env_state, reward, terminated, truncated, final_obs = venv.step(
            env_xs, runner.env_state, to_env(dist, action)
        )
        done = jnp.logical_or(terminated, truncated)
        reward = reward.astype(jnp.float32)
        ep_return = runner.ep_return + reward
        ep_length = runner.ep_length + 1
        ret_rms, disc_return, train_reward = runner.ret_rms, runner.disc_return, reward
        if config.scale_rewards:
            ret_rms, disc_return, train_reward = scale_rewards(
                ret_rms, disc_return, reward, done, config.gamma
            )
        tr = Transition(
            obs=obs_n,
            action=action,
            logp=logp,
            value=value,
            reward=train_reward,
            terminated=terminated if config.bootstrap_truncation else done,
            done=done,
            final_obs=norm(obs_rms, final_obs) if config.bootstrap_truncation else None,
            ep_return=ep_return,
            ep_length=ep_length,
        )
        runner = runner._replace(
            env_state=env_state,
            obs=next_obs,
            obs_rms=obs_rms,
            ret_rms=ret_rms,
            disc_return=disc_return,
            ep_return=jnp.where(done, 0.0, ep_return),
            ep_length=jnp.where(done, 0, ep_length),
        )
        return runner, tr

    def apply(params: nnx.State, mb: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        dist, value = model(params)(mb["obs"])
        return _log_prob(dist, mb["action"]), dist.entropy(), value

    ppo_update = make_ppo_update(apply, tx, config)

    def update(runner: Runner, _: Any) -> tuple[Runner, dict[str, jax.Array]]:
        key, k_noise, k_env, k_epochs = jax.random.split(runner.key, 4)
        # the randomness of the whole rollout, drawn in two batched calls (see the module docstring)
        xs = (noise_fn(k_noise, (n_steps, n_envs, n_act)), venv.prepare(k_env, n_steps))
        runner, traj = jax.lax.scan(rollout_step, runner, xs)
        if config.bootstrap_truncation:
            # V(s'_t) from the true final observation: equals the next row's value except at done steps
            next_values = model(runner.params).value(traj.final_obs)
        else:  # terminated == done here, so the value after a done step is never used
            last_value = model(runner.params).value(norm(runner.obs_rms, runner.obs))
            next_values = jnp.concatenate([traj.value[1:], last_value[None]])
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
        batch = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), batch)

        params, opt_state, metrics = ppo_update(runner.params, runner.opt_state, batch, k_epochs)
        n_done = traj.done.sum()
        denom = jnp.maximum(n_done, 1)
        nan = jnp.float32(jnp.nan)
        metrics["episode_return"] = jnp.where(n_done > 0, (traj.ep_return * traj.done).sum() / denom, nan)
        metrics["episode_length"] = jnp.where(n_done > 0, (traj.ep_length * traj.done).sum() / denom, nan)
        metrics["episodes"] = n_done
        metrics["explained_variance"] = 1.0 - (ret - traj.value).var() / jnp.maximum(ret.var(), 1e-8)
        if kind != "discrete":
            metrics["action_std"] = jnp.exp(params["log_std"][...]).mean()
        runner = runner._replace(params=params, opt_state=opt_state, key=key)
        return runner, metrics

    def train(key: jax.Array) -> tuple[Runner, dict[str, jax.Array]]:
        k_init, k_env, k_run = jax.random.split(key, 3)
        params = nnx.state(make_policy(config, k_init)[0], nnx.Param)
        obs, env_state = venv.reset(k_env)
        runner = Runner(
            params=params,
            opt_state=tx.init(params),
            env_state=env_state,
            obs=obs,
            key=k_run,
            obs_rms=RunningMeanStd.create((obs_dim,)),
            ret_rms=RunningMeanStd.create(()),
            disc_return=jnp.zeros(n_envs),
            ep_return=jnp.zeros(n_envs),
            ep_length=jnp.zeros(n_envs, jnp.int32),
        )
        runner, metrics = jax.lax.scan(update, runner, None, config.num_updates)
        metrics["env_steps"] = (jnp.arange(config.num_updates) + 1) * batch_size
        return runner, metrics

    train.graphdef = graphdef  # type: ignore[attr-defined]
    train.ppo_update = ppo_update  # type: ignore[attr-defined]  # the update on one rollout batch
    return train


def make_evaluate(
    config: PPOConfig, num_episodes: int = 16, *, deterministic: bool = True
) -> Callable[[nnx.State, RunningMeanStd, jax.Array], jax.Array]:
    """Build ``evaluate(params, obs_rms, key) -> returns [num_episodes]``: full episodes of fresh environments with
    the policy ``params`` (e.g. ``runner.params``; its mode when ``deterministic``, else samples), normalising
    observations with the frozen statistics ``obs_rms`` (``runner.obs_rms``; unused unless
    ``config.normalize_obs``). Each episode runs until its first termination or truncation (at most the env's
    ``max_steps_in_episode``). Jittable, and vmappable over seeds."""
    check_range("num_episodes", num_episodes, ge=1, integer=True)
    model0, env, env_params = make_policy(config)
    graphdef, _ = nnx.split(model0, nnx.Param)
    kind = model0.action_kind
    low = None if kind == "discrete" else jnp.asarray(model0.low)
    high = None if kind == "discrete" else jnp.asarray(model0.high)
    to_env = _env_action_fn(env, env_params, kind, low, high)
    horizon = int(env_params.max_steps_in_episode)
    n_act = model0.actor.out.out_features
    noise_fn = _noise_fn(kind)

    venv = make_vec_env(env, env_params, num_episodes)

    def evaluate(params: nnx.State, obs_rms: RunningMeanStd, key: jax.Array) -> jax.Array:
        policy = nnx.merge(graphdef, params)
        k_reset, k_noise, k_env = jax.random.split(key, 3)
        obs, state = venv.reset(k_reset)

        def step(carry: tuple, xs: tuple[jax.Array, Any]) -> tuple[tuple, None]:
            obs, state, ret, alive = carry
            noise, env_xs = xs
            dist, _ = policy(normalize_obs(obs_rms, obs) if config.normalize_obs else obs)
            if deterministic:
                action = dist.mode() if kind != "tanh" else dist.mean
            else:
                action = _sample(dist, noise)[0]
            obs, state, reward, terminated, truncated, _ = venv.step(env_xs, state, to_env(dist, action))
            ret = ret + alive * reward.astype(jnp.float32)
            alive = alive * (1.0 - jnp.logical_or(terminated, truncated).astype(jnp.float32))
            return (obs, state, ret, alive), None

        init = (obs, state, jnp.zeros(num_episodes), jnp.ones(num_episodes))
        xs = (noise_fn(k_noise, (horizon, num_episodes, n_act)), venv.prepare(k_env, horizon))
        (_, _, ret, _), _ = jax.lax.scan(step, init, xs)
        return ret

    return evaluate
