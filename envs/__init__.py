"""Vectorised multi-player general-sum game environments with a gymnax-style API (player axis leading).

``reset(key, params) -> (obs, state)`` and ``step(key, state, actions, params) -> (obs, state, rewards, done, info)``
with ``obs`` and ``rewards`` shaped ``[n_players, ...]``; every environment is jittable and vmappable over batches and
over params.
"""
