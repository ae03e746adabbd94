"""Actor-critic MLPs for control (PureJaxRL's architecture: separate actor and critic torsos, orthogonal init)."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.rl.distributions import Categorical, Gaussian, TanhGaussian

__all__ = ["MLP", "ActorCritic", "GRUActorCritic"]

_ACTS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu}


class MLP(nnx.Module):
    """``hidden`` layers with activation, then a linear output with its own init scale."""

    def __init__(
        self,
        n_in: int,
        hidden: tuple[int, ...],
        n_out: int,
        activation: str,
        out_scale: float,
        *,
        rngs: nnx.Rngs,
    ):
        dims = (n_in, *hidden)
        ortho = nnx.initializers.orthogonal
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, kernel_init=ortho(math.sqrt(2.0)), rngs=rngs)
                for a, b in itertools.pairwise(dims)
            ]
        )
        self.out = nnx.Linear(dims[-1], n_out, kernel_init=ortho(out_scale), rngs=rngs)
        self.act = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` [..., n_in] -> [..., n_out]."""
        act = _ACTS[self.act]
        for layer in self.layers:
            x = act(layer(x))
        return self.out(x)


class ActorCritic(nnx.Module):
    """``model(obs) -> (distribution, value)``; ``obs`` [..., obs_dim] (flattened).

    ``action_kind``: ``discrete`` (Categorical over ``n_actions``), ``gaussian`` (clipped by the env) or ``tanh``
    (squashed into ``[low, high]``). Continuous policies use a state-independent learned log-std.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        *,
        action_kind: str = "discrete",
        hidden: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        action_low: float | tuple[float, ...] = -1.0,
        action_high: float | tuple[float, ...] = 1.0,
        init_log_std: float = 0.0,
        rngs: nnx.Rngs,
    ):
        if action_kind not in ("discrete", "gaussian", "tanh"):
            raise ValueError(
                f"action_kind={action_kind!r} is invalid: accepted values are discrete, gaussian, tanh"
            )
        if activation not in _ACTS:
            raise ValueError(f"activation={activation!r} is invalid: accepted values are {', '.join(_ACTS)}")
        self.action_kind = action_kind
        self.actor = MLP(obs_dim, hidden, n_actions, activation, 0.01, rngs=rngs)
        self.critic = MLP(obs_dim, hidden, 1, activation, 1.0, rngs=rngs)
        if action_kind != "discrete":
            self.log_std = nnx.Param(jnp.full((n_actions,), init_log_std, jnp.float32))
            # static Python floats (numpy, not jnp: under a trace jnp would give tracers)
            self.low = tuple(np.broadcast_to(np.asarray(action_low, np.float32), (n_actions,)).tolist())
            self.high = tuple(np.broadcast_to(np.asarray(action_high, np.float32), (n_actions,)).tolist())

    def value(self, obs: jax.Array) -> jax.Array:
        """The critic alone: ``V(obs)`` [...] (no actor forward; used to bootstrap from final observations)."""
        return self.critic(obs)[..., 0]

    def __call__(self, obs: jax.Array) -> tuple[Categorical | Gaussian | TanhGaussian, jax.Array]:
        """``obs`` [..., obs_dim] -> (action distribution over [...], value [...])."""
        out = self.actor(obs)
        value = self.critic(obs)[..., 0]
        if self.action_kind == "discrete":
            return Categorical(out), value
        log_std = self.log_std[...]
        if self.action_kind == "gaussian":
            return Gaussian(out, log_std), value
        return TanhGaussian(out, log_std, jnp.asarray(self.low), jnp.asarray(self.high)), value


class GRUActorCritic(nnx.Module):
    """Recurrent discrete actor-critic: one GRU cell (``nnx.GRUCell``) shared by a linear actor head (init scale
    0.01, near-uniform start) and a linear critic head, as Pax's GRU PPO agents.

    ``model(h [..., hidden], obs [..., obs_dim]) -> (h', Categorical over [...], value [...])``: one step; a
    sequence is a ``lax.scan`` of it (:meth:`unroll`). ``initial_state(shape)`` is the zero state.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 16, *, rngs: nnx.Rngs):
        ortho = nnx.initializers.orthogonal
        self.cell = nnx.GRUCell(obs_dim, hidden, rngs=rngs)
        self.actor = nnx.Linear(hidden, n_actions, kernel_init=ortho(0.01), rngs=rngs)
        self.critic = nnx.Linear(hidden, 1, kernel_init=ortho(1.0), rngs=rngs)
        self.hidden = hidden

    def initial_state(self, shape: tuple[int, ...] = ()) -> jax.Array:
        return jnp.zeros((*shape, self.hidden), jnp.float32)

    def __call__(self, h: jax.Array, obs: jax.Array) -> tuple[jax.Array, Categorical, jax.Array]:
        h, _ = self.cell(h, obs)
        return h, Categorical(self.actor(h)), self.critic(h)[..., 0]

    def unroll(self, h0: jax.Array, obs: jax.Array) -> tuple[jax.Array, Categorical, jax.Array]:
        """Run over ``obs [T, ..., obs_dim]`` from ``h0 [..., hidden]``: ``(h_T, Categorical [T, ...], values
        [T, ...])``."""

        def step(h: jax.Array, o: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
            h, dist, value = self(h, o)
            return h, (dist.logits, value)

        h, (logits, values) = jax.lax.scan(step, h0, obs)
        return h, Categorical(logits), values
