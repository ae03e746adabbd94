"""Vectorised multi-player general-sum game environments with a gymnax-style API (player axis leading).

``reset(key, params) -> (obs, state)`` and ``step(key, state, actions, params) -> (obs, state, rewards, done, info)``
with ``obs`` and ``rewards`` shaped ``[n_players, ...]``; every environment is jittable and vmappable over batches and
over params, and resets itself inside ``step`` when an episode ends.

- :class:`TensorGame`: iterated N-player C/D games (payoff presets and exact memory-one returns in
  :mod:`envs.tensor_game`);
- :class:`CommonPool`: common-pool resource with a logistically regrowing stock;
- :class:`CoinGame`: N-player coin game gridworld.
"""

from envs.coin_game import CoinGame, CoinGameParams
from envs.common_pool import CommonPool, CommonPoolParams
from envs.tensor_game import TensorGame, TensorGameParams, memory_one_return, memory_one_return_finite

__all__ = [
    "CoinGame",
    "CoinGameParams",
    "CommonPool",
    "CommonPoolParams",
    "TensorGame",
    "TensorGameParams",
    "memory_one_return",
    "memory_one_return_finite",
]
