"""N-player common-pool resource game with a logistically regenerating stock (tragedy of the commons).

Ostrom-style common-pool resource appropriation (Ostrom, Gardner & Walker 1994, "Rules, Games, and Common-Pool
Resources"), in the renewable-stock form used for multi-agent RL by Perolat et al. 2017 ("A multi-agent
reinforcement learning model of common-pool resource appropriation", NeurIPS) and by Pax's ``Fishery`` env, with the
Schaefer (1954) / Gordon-Schaefer logistic growth of fisheries economics.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from jaxsafety.config import check_range

__all__ = ["CommonPool", "CommonPoolParams", "CommonPoolState"]


@struct.dataclass
class CommonPoolParams:
    """Float32 scalars (arrays, so a batch of parameter settings can be vmapped over).

    ``growth_rate`` g, ``capacity`` C (carrying capacity), ``initial_stock`` S_0, ``max_extraction`` (what one
    player asks for at the top level), ``collapse_threshold`` (the episode ends when the stock falls below it).
    """

    growth_rate: jax.Array
    capacity: jax.Array
    initial_stock: jax.Array
    max_extraction: jax.Array
    collapse_threshold: jax.Array


@struct.dataclass
class CommonPoolState:
    """``stock``: float32 scalar; ``last_levels``: ``[N]`` int32 last extraction levels (-1 before the first
    round); ``t``: int32 rounds played."""

    stock: jax.Array
    last_levels: jax.Array
    t: jax.Array


class CommonPool:
    """Common-pool resource game: N players extract from a shared, logistically regrowing stock.

    Each round player ``i`` picks a level ``l_i`` in ``0 .. num_levels - 1`` and asks for
    ``e_i = max_extraction * l_i / (num_levels - 1)``. If the requests exceed the stock ``S_t`` they are scaled
    down proportionally; player ``i`` receives (reward) what it extracts,

        x_i = e_i * min(1, S_t / sum_j e_j),

    and the remaining stock regrows logistically (Schaefer 1954; Perolat et al. 2017):

        S'      = S_t - sum_i x_i
        S_{t+1} = min(C, S' + g S' (1 - S' / C)).

    The episode ends after ``horizon`` rounds or when ``S_{t+1} < collapse_threshold`` (collapse), and ``step``
    resets to ``S_0`` automatically. The default parameters (``default_params``: g = 0.5, C = 100, S_0 = 50,
    threshold 5) set ``max_extraction = 2 * MSY / N`` with the maximum sustainable yield ``MSY = g C / 4``: if all
    players pick the middle level they take exactly the MSY at ``S = C / 2`` forever, if all pick the top level the
    stock collapses, while each player alone gains by extracting more (the tragedy of the commons).

    Observation of player ``i`` (``[N, 1 + N * num_levels]`` float32): ``S_t / C``, then the one-hot last levels of
    players ``i, i+1, ..., i+N-1 (mod N)`` (egocentric; all zeros before the first round).
    """

    def __init__(self, num_players: int = 3, num_levels: int = 5, horizon: int = 100):
        check_range("num_players", num_players, ge=2, le=64, integer=True)
        check_range("num_levels", num_levels, ge=2, integer=True)
        check_range("horizon", horizon, ge=1, integer=True)
        self.num_players = num_players
        self.num_levels = num_levels
        self.num_actions = num_levels
        self.horizon = horizon
        # row i: players i, i+1, ... (mod N): the egocentric order of the observation
        self._ego = (jnp.arange(num_players)[:, None] + jnp.arange(num_players)[None, :]) % num_players

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return (1 + self.num_players * self.num_levels,)

    @property
    def default_params(self) -> CommonPoolParams:
        g, cap = 0.5, 100.0
        msy = g * cap / 4
        return CommonPoolParams(
            growth_rate=jnp.float32(g),
            capacity=jnp.float32(cap),
            initial_stock=jnp.float32(cap / 2),
            max_extraction=jnp.float32(2 * msy / self.num_players),
            collapse_threshold=jnp.float32(5.0),
        )

    def _obs(self, stock: jax.Array, levels: jax.Array, params: CommonPoolParams) -> jax.Array:
        onehot = jax.nn.one_hot(
            levels[self._ego], self.num_levels, dtype=jnp.float32
        )  # [N, N, K]; -1 -> zeros
        frac = jnp.broadcast_to(stock / params.capacity, (self.num_players, 1)).astype(jnp.float32)
        return jnp.concatenate([frac, onehot.reshape(self.num_players, -1)], axis=-1)

    def _initial_state(self, params: CommonPoolParams) -> CommonPoolState:
        return CommonPoolState(
            stock=jnp.asarray(params.initial_stock, jnp.float32),
            last_levels=jnp.full((self.num_players,), -1, jnp.int32),
            t=jnp.zeros((), jnp.int32),
        )

    def reset(self, key: jax.Array, params: CommonPoolParams) -> tuple[jax.Array, CommonPoolState]:
        """Stock ``S_0``, no previous round (deterministic; ``key`` is unused)."""
        del key
        state = self._initial_state(params)
        return self._obs(state.stock, state.last_levels, params), state

    def step(
        self, key: jax.Array, state: CommonPoolState, actions: jax.Array, params: CommonPoolParams
    ) -> tuple[jax.Array, CommonPoolState, jax.Array, jax.Array, dict[str, Any]]:
        """``actions``: ``[N]`` levels. Returns ``obs [N, 1 + N K]``, state, ``rewards [N]`` (extracted amounts),
        ``done``, ``info`` with ``final_observation`` and ``stock`` (the stock before auto-reset)."""
        chex.assert_shape(
            actions,
            (self.num_players,),
            custom_message=f"CommonPool.step: actions must be [num_players] = ({self.num_players},), one per player "
            "(vmap step over a batch of envs)",
        )
        del key
        levels = actions.astype(jnp.int32)
        asked = params.max_extraction * levels.astype(jnp.float32) / (self.num_levels - 1)
        total = jnp.sum(asked)
        scale = jnp.where(total > state.stock, state.stock / jnp.maximum(total, 1e-30), 1.0)
        taken = asked * scale
        left = jnp.maximum(state.stock - jnp.sum(taken), 0.0)
        stock = jnp.minimum(
            params.capacity, left + params.growth_rate * left * (1.0 - left / params.capacity)
        )
        t = state.t + 1
        done = (t >= self.horizon) | (stock < params.collapse_threshold)
        after = CommonPoolState(stock=stock, last_levels=levels, t=t)
        fresh = self._initial_state(params)
        new_state = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, after)
        obs = self._obs(new_state.stock, new_state.last_levels, params)
        info = {"final_observation": self._obs(stock, levels, params), "stock": stock}
        return obs, new_state, taken.astype(jnp.float32), done, info
