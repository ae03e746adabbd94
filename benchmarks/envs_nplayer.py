"""Env steps/s of the N-player game environments in ``envs/``, against a vectorised numpy tensor game.

Compared on the same work in one run (TARGETS.md row "N-player iterated tensor game"):

- **ours**: :class:`envs.TensorGame` with the IPD payoffs (:func:`envs.tensor_game.ipd`) and one-hot egocentric
  joint-action observations, ``jax.vmap``-ed over ``batch`` envs and stepped ``length`` times inside one
  ``lax.scan`` in one jitted call, auto-reset every 100 rounds. Random actions are sampled in-graph: one
  ``jax.random.bits`` call draws a ``[length, batch]`` uint32 block inside the jitted function before the scan and
  each step unpacks player ``j``'s action from bit ``j``. The scan body sums the observations and rewards over the
  batch into its carry (so XLA cannot drop the work) instead of writing ``[length, batch, N, 2^N + 1]`` outputs.
- **numpy peer**: the same game written as a well-vectorised numpy loop over steps (the same per-step work: joint
  code, other-defector counts, reward lookup, egocentric rotation, auto-reset, one-hot observations gathered from
  an identity matrix into a preallocated buffer), with the action bits drawn by one ``Generator.integers`` call
  per timed call, as ours.
- **references**: gymnax ``CartPole-v1`` with random actions (the usual JAX-env yardstick, stepped the PureJaxRL way
  with one key per env per step), and our :class:`envs.CoinGame` (3 players, 3x3) and :class:`envs.CommonPool`
  (3 players, 5 levels), stepped like ours above (with per-env keys for the coin game, which needs randomness).

Env steps count ``batch x length`` per call (one step of all N players is one env step). Timing follows
``harness``: compile (``lower().compile()``) apart, median of ``repeats`` calls after a warm-up.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import Timing, cli_main, time_fn, time_jitted
from envs.coin_game import CoinGame
from envs.common_pool import CommonPool
from envs.tensor_game import TensorGame, TensorGameParams, ipd

NAME = "envs_nplayer"
ROUNDS = 100  # episode length (Pax's inner episode), so the measured steps include auto-resets


@dataclasses.dataclass(frozen=True)
class Budget:
    """Sizes of one run: ``(batch, length)`` pairs per env, the players of the tensor game, repeats."""

    tensor: tuple[tuple[int, int], ...]
    players: tuple[int, ...]
    others: tuple[tuple[int, int], ...]
    repeats: int


FULL = Budget(
    tensor=((1, 20_000), (1_000, 2_000), (65_536, 100)),
    players=(3, 5),
    others=((1, 5_000), (1_000, 500), (65_536, 20)),
    repeats=7,
)
QUICK = Budget(tensor=((1, 64), (256, 20)), players=(3,), others=((32, 8),), repeats=3)


def make_tensor_rollout(num_players: int, batch: int, length: int, unroll: int = 1):
    """Jitted ``rollout(key) -> (obs_sum [N, 2^N + 1], reward_sum [N])`` of ``batch`` IPD envs for ``length``
    steps with uniformly random actions."""
    env = TensorGame(num_players, num_rounds=ROUNDS)
    params = TensorGameParams(payoffs=ipd(num_players))
    step = jax.vmap(env.step, in_axes=(None, 0, 0, None))
    player_bit = jnp.arange(num_players, dtype=jnp.uint32)

    def rollout(key):
        _, state = jax.vmap(lambda _: env.reset(key, params))(jnp.arange(batch))
        bits = jax.random.bits(key, (length, batch), jnp.uint32)

        def body(carry, b):
            state, obs_sum, rew_sum = carry
            actions = ((b[:, None] >> player_bit) & 1).astype(jnp.int32)  # [batch, N]
            obs, state, rew, _, _ = step(key, state, actions, params)
            return (state, obs_sum + obs.sum(0), rew_sum + rew.sum(0)), None

        zeros = (jnp.zeros((num_players, env.num_states)), jnp.zeros(num_players))
        (_, obs_sum, rew_sum), _ = jax.lax.scan(body, (state, *zeros), bits, unroll=unroll)
        return obs_sum, rew_sum

    return jax.jit(rollout)


class NumpyTensorGame:
    """The same batched IPD tensor game in vectorised numpy (the peer): ``rollout(seed)`` steps ``batch`` envs
    ``length`` times with random actions and returns the reward sum ``[N]``; observations are written to a
    preallocated ``[batch, N, 2^N + 1]`` float32 buffer every step."""

    def __init__(self, num_players: int, batch: int, length: int):
        n = self.n = num_players
        self.batch, self.length = batch, length
        self.start = 2**n
        self.payoffs = np.asarray(ipd(n), np.float32).reshape(-1)  # index a * N + k
        self.eye = np.eye(2**n + 1, dtype=np.float32)
        self.shift = np.arange(n - 1, -1, -1, dtype=np.int64)
        self.rot = np.arange(n, dtype=np.int64)
        self.player_bit = np.arange(n, dtype=np.int64)
        self.obs = np.empty((batch, n, 2**n + 1), np.float32)
        self.rng = np.random.default_rng(0)

    def rollout(self) -> np.ndarray:
        n, batch = self.n, self.batch
        bits = self.rng.integers(0, 2**n, size=(self.length, batch), dtype=np.int64)
        t = np.zeros(batch, np.int64)
        rew_sum = np.zeros(n, np.float32)
        for s in range(self.length):
            actions = (bits[s, :, None] >> self.player_bit) & 1  # [batch, N]
            code = (actions << self.shift).sum(1)
            others = actions.sum(1, keepdims=True) - actions
            rewards = self.payoffs[actions * n + others]
            ego = ((code[:, None] << self.rot) | (code[:, None] >> (n - self.rot))) & (self.start - 1)
            t += 1
            done = t >= ROUNDS
            t[done] = 0
            ego[done] = self.start
            np.take(self.eye, ego, axis=0, out=self.obs)
            rew_sum += rewards.sum(0)
        return rew_sum


def make_cartpole_rollout(batch: int, length: int):
    """gymnax CartPole-v1, random actions, PureJaxRL-style stepping (one key per env per step)."""
    import gymnax

    env, params = gymnax.make("CartPole-v1")
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def rollout(key):
        _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, batch), params)
        bits = jax.random.bits(key, (length, batch), jnp.uint32)

        def body(carry, xs):
            state, obs_sum, rew_sum = carry
            b, t = xs
            keys = jax.random.split(jax.random.fold_in(key, t), batch)
            obs, state, rew = step(keys, state, (b & 1).astype(jnp.int32), params)[:3]
            return (state, obs_sum + obs.sum(0), rew_sum + rew.sum()), None

        init = (state, jnp.zeros(4), jnp.zeros(()))
        (_, obs_sum, rew_sum), _ = jax.lax.scan(body, init, (bits, jnp.arange(length)))
        return obs_sum, rew_sum

    return jax.jit(rollout)


def make_env_rollout(env: Any, batch: int, length: int, needs_keys: bool):
    """Random-action rollout of one of our envs (sums of obs and rewards, as :func:`make_tensor_rollout`)."""
    params = env.default_params
    step = jax.vmap(env.step, in_axes=(0 if needs_keys else None, 0, 0, None))
    n = env.num_players

    def rollout(key):
        _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, batch), params)
        actions = jax.random.randint(key, (length, batch, n), 0, env.num_actions)

        def body(carry, xs):
            state, obs_sum, rew_sum = carry
            a, t = xs
            k = jax.random.fold_in(key, t)
            obs, state, rew, _, _ = step(jax.random.split(k, batch) if needs_keys else k, state, a, params)
            return (state, obs_sum + obs.sum(0), rew_sum + rew.sum(0)), None

        init = (state, jnp.zeros((n, *env.observation_shape)), jnp.zeros(n))
        (_, obs_sum, rew_sum), _ = jax.lax.scan(body, init, (actions, jnp.arange(length)))
        return obs_sum, rew_sum

    return jax.jit(rollout)


def _rate(t: Timing, steps: int) -> dict[str, Any]:
    return {
        "steps_per_s": steps / t.median_s,
        "steps_per_s_best": steps / t.min_s,
        "env_steps_per_call": steps,
        "timing": t.to_dict(),
    }


def _unroll(batch: int, quick: bool) -> int:
    # at batch 1 the loop overhead per scan iteration dominates; unrolling amortises it (not worth its compile
    # time in the quick run)
    return 16 if batch == 1 and not quick else 1


def run(quick: bool = False) -> dict[str, Any]:
    budget = QUICK if quick else FULL
    key = jax.random.key(0)
    tensor_rows = []
    for n in budget.players:
        for batch, length in budget.tensor:
            steps = batch * length
            ours = time_jitted(
                make_tensor_rollout(n, batch, length, _unroll(batch, quick)), key, repeats=budget.repeats
            )
            peer_env = NumpyTensorGame(n, batch, length)
            peer = time_fn(peer_env.rollout, repeats=budget.repeats)
            row = {
                "num_players": n,
                "batch": batch,
                "length": length,
                "ours": _rate(ours, steps),
                "numpy": _rate(peer, steps),
                "ratio_ours_over_numpy": peer.median_s / ours.median_s,
            }
            tensor_rows.append(row)
            print(
                f"tensor game N={n} batch {batch}: ours {row['ours']['steps_per_s']:.3g} steps/s "
                f"(compile {ours.compile_s:.2f} s), numpy {row['numpy']['steps_per_s']:.3g} steps/s, "
                f"ratio {row['ratio_ours_over_numpy']:.1f}x",
                flush=True,
            )
    reference_rows = []
    others = {
        "cartpole_gymnax": lambda b, t: make_cartpole_rollout(b, t),
        "coin_game_n3_3x3": lambda b, t: make_env_rollout(CoinGame(3, 3), b, t, needs_keys=True),
        "common_pool_n3_k5": lambda b, t: make_env_rollout(CommonPool(3, 5), b, t, needs_keys=False),
    }
    for name, make in others.items():
        for batch, length in budget.others:
            timing = time_jitted(make(batch, length), key, repeats=budget.repeats)
            row = {"env": name, "batch": batch, "length": length, **_rate(timing, batch * length)}
            reference_rows.append(row)
            print(
                f"{name} batch {batch}: {row['steps_per_s']:.3g} steps/s (compile {timing.compile_s:.2f} s)",
                flush=True,
            )
    ratios = {f"n{r['num_players']}_batch{r['batch']}": r["ratio_ours_over_numpy"] for r in tensor_rows}
    return {
        "peer": "numpy",
        "rounds_per_episode": ROUNDS,
        "tensor_game": tensor_rows,
        "references": reference_rows,
        "ratios_ours_over_numpy": ratios,
    }


if __name__ == "__main__":
    cli_main(NAME, run)
