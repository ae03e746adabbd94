"""N-player coin game: a gridworld social dilemma (Lerer & Peysakhovich 2017; Foerster et al. 2018, LOLA; Pax).

Generalises the two-player coin game of Lerer & Peysakhovich 2017 ("Maintaining cooperation in complex social
dilemmas using deep reinforcement learning", arXiv 1707.01068) as implemented in Foerster et al. 2018 (LOLA) and
Pax's ``CoinGame`` (github.com/ucl-dark/pax, ``pax/envs/coin_game.py``) to N players.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxsafety.config import check, check_range

__all__ = ["CoinGame", "CoinGameParams", "CoinGameState"]

MAX_PLAYERS = 8
# (d_row, d_col): right, left, up, down, stay (rows grow downwards)
# numpy, not jnp: a module-level jnp array would start the JAX backend on import (before scripts set XLA_FLAGS)
MOVES = np.array([[0, 1], [0, -1], [-1, 0], [1, 0], [0, 0]], dtype=np.int32)


@struct.dataclass
class CoinGameParams:
    """``own_reward``: to the picker of any coin (Pax: +1); ``owner_penalty``: to a coin's owner each time another
    agent picks it (Pax: -2). Float32 scalars, vmappable."""

    own_reward: jax.Array
    owner_penalty: jax.Array


@struct.dataclass
class CoinGameState:
    """``agent_pos``: ``[N, 2]`` int32 (row, col); ``coin_pos``: ``[N, 2]`` int32, coin ``c`` has agent ``c``'s
    colour; ``t``: int32 steps taken in this episode."""

    agent_pos: jax.Array
    coin_pos: jax.Array
    t: jax.Array


class CoinGame:
    """N-player coin game on a ``grid_size x grid_size`` torus.

    N agents, agent ``i`` with colour ``i``, and one coin of each colour on the grid at all times (N coins; our
    choice for N players: every agent always has a coin of its own to collect, and the 2-player game is Pax's).
    Moves: right, left, up, down (and stay if ``allow_stay``), wrapping around the edges as in LOLA and Pax. Agents
    may share a cell. Rewards per step, summed over all coins picked up that step:

        picker of any coin:                           + own_reward      (default +1)
        owner of coin c, when agent j != c picks it:  + owner_penalty   (default -2, to the owner only)

    so for N = 2 this is exactly Pax's / LOLA's coin game (+1 for any coin, -2 to the other when it takes yours).
    Several agents stepping onto the same coin each pick it up (and each such non-owner costs the owner). A
    picked-up coin respawns at a uniformly random cell holding no agent and no other coin (coins respawn one after
    the other, in colour order). Agents and coins start on 2N distinct random cells. An episode lasts
    ``num_steps`` steps (Pax's inner episode: 16); ``step`` resets automatically (random new positions).

    Observation (egocentric, ``[N, H, W, 4]`` float32; the grid rolled so that the observing agent is at the centre
    ``(H // 2, W // 2)``): channel 0 the agent itself, 1 the other agents (counts), 2 its own coin, 3 the other
    agents' coins. Pax's 2-player view has the same four channels.
    """

    def __init__(
        self,
        num_players: int = 2,
        grid_size: int | None = None,
        num_steps: int = 16,
        allow_stay: bool = False,
    ):
        check_range("num_players", num_players, ge=2, le=MAX_PLAYERS, integer=True)
        if grid_size is None:
            grid_size = 3 if num_players <= 3 else 5
        check_range("grid_size", grid_size, ge=2, integer=True)
        check(
            grid_size * grid_size >= 2 * num_players,
            "grid_size",
            grid_size,
            f"integers with grid_size^2 >= 2 * num_players ({2 * num_players})",
        )
        check_range("num_steps", num_steps, ge=1, integer=True)
        self.num_players = num_players
        self.grid_size = grid_size
        self.num_steps = num_steps
        self.allow_stay = bool(allow_stay)
        self.num_actions = 5 if allow_stay else 4
        self.center = (grid_size // 2, grid_size // 2)

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return (self.grid_size, self.grid_size, 4)

    @property
    def default_params(self) -> CoinGameParams:
        return CoinGameParams(own_reward=jnp.float32(1.0), owner_penalty=jnp.float32(-2.0))

    def _flat(self, pos: jax.Array) -> jax.Array:
        return pos[..., 0] * self.grid_size + pos[..., 1]

    def _unflat(self, idx: jax.Array) -> jax.Array:
        return jnp.stack([idx // self.grid_size, idx % self.grid_size], axis=-1).astype(jnp.int32)

    def _random_state(self, key: jax.Array) -> CoinGameState:
        n, cells = self.num_players, self.grid_size**2
        idx = jax.random.choice(key, cells, (2 * n,), replace=False)
        pos = self._unflat(idx)
        return CoinGameState(agent_pos=pos[:n], coin_pos=pos[n:], t=jnp.zeros((), jnp.int32))

    def observe(self, state: CoinGameState) -> jax.Array:
        """Egocentric observations ``[N, H, W, 4]`` of ``state``."""
        n, g = self.num_players, self.grid_size
        centre = jnp.array(self.center, jnp.int32)

        def rel(
            pos: jax.Array,
        ) -> jax.Array:  # [N viewers, N objects] flat cells in each viewer's rolled grid
            return self._flat((pos[None, :, :] - state.agent_pos[:, None, :] + centre) % g)

        agents = jax.nn.one_hot(rel(state.agent_pos), g * g, dtype=jnp.float32)  # [N, N, H W]
        coins = jax.nn.one_hot(rel(state.coin_pos), g * g, dtype=jnp.float32)
        eye = jnp.eye(n, dtype=jnp.float32)[:, :, None]
        own_agent = jnp.sum(agents * eye, axis=1)
        own_coin = jnp.sum(coins * eye, axis=1)
        channels = [own_agent, jnp.sum(agents, 1) - own_agent, own_coin, jnp.sum(coins, 1) - own_coin]
        return jnp.stack(channels, axis=-1).reshape(n, g, g, 4)

    def reset(self, key: jax.Array, params: CoinGameParams) -> tuple[jax.Array, CoinGameState]:
        """Agents and coins on 2N distinct uniformly random cells."""
        del params
        state = self._random_state(key)
        return self.observe(state), state

    def step(
        self, key: jax.Array, state: CoinGameState, actions: jax.Array, params: CoinGameParams
    ) -> tuple[jax.Array, CoinGameState, jax.Array, jax.Array, dict[str, Any]]:
        """``actions``: ``[N]`` ints in ``0 .. num_actions - 1``. Returns ``obs [N, H, W, 4]``, state,
        ``rewards [N]``, ``done``, ``info`` with ``final_observation`` and ``picked`` (``[N pickers, N coins]``)."""
        chex.assert_shape(
            actions,
            (self.num_players,),
            custom_message=f"CoinGame.step: actions must be [num_players] = ({self.num_players},), one per player "
            "(vmap step over a batch of envs)",
        )
        n, g = self.num_players, self.grid_size
        key_spawn, key_reset = jax.random.split(key)
        agent_pos = (state.agent_pos + jnp.asarray(MOVES)[actions.astype(jnp.int32)]) % g
        picked = jnp.all(agent_pos[:, None, :] == state.coin_pos[None, :, :], axis=-1)  # [pickers, coins]
        picked_f = picked.astype(jnp.float32)
        by_others = jnp.sum(picked_f, axis=0) - jnp.diagonal(picked_f)  # coin c (= its owner) taken by j != c
        rewards = params.own_reward * jnp.sum(picked_f, axis=1) + params.owner_penalty * by_others

        # respawn the picked coins one by one on cells free of agents and of the other coins
        taken = jnp.any(picked, axis=0)
        agent_cells = jnp.sum(jax.nn.one_hot(self._flat(agent_pos), g * g), axis=0)
        coin_cells = jax.nn.one_hot(self._flat(state.coin_pos), g * g) * (~taken)[:, None]
        occupied = agent_cells + jnp.sum(coin_cells, axis=0)
        noise = jax.random.uniform(key_spawn, (n, g * g))
        coin_idx = self._flat(state.coin_pos)
        for c in range(n):
            new = jnp.argmax(jnp.where(occupied > 0, -1.0, noise[c]))
            idx_c = jnp.where(taken[c], new, coin_idx[c])
            coin_idx = coin_idx.at[c].set(idx_c)
            occupied = occupied + taken[c] * jax.nn.one_hot(idx_c, g * g)
        t = state.t + 1
        after = CoinGameState(agent_pos=agent_pos, coin_pos=self._unflat(coin_idx), t=t)
        done = t >= self.num_steps
        fresh = self._random_state(key_reset)
        new_state = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, after)
        obs = self.observe(new_state)
        return obs, new_state, rewards, done, {"final_observation": self.observe(after), "picked": picked}
