"""Env steps/s of the N-player game environments in ``envs/``, against a vectorised numpy tensor game.

Compared on the same work in one run (TARGETS.md row "N-player iterated tensor game"), on one core (both sides,
see :func:`one_core`), timed interleaved (ours, numpy, ours, numpy, ...) so a shared machine's load hits both alike:

- **ours**: :class:`envs.TensorGame` with the IPD payoffs (:func:`envs.tensor_game.ipd`) and one-hot egocentric
  joint-action observations, ``jax.vmap``-ed over ``batch`` envs and stepped ``length`` times inside one
  ``lax.scan`` in one jitted call, auto-reset every 100 rounds. Random actions are sampled in-graph: one
  ``jax.random.bits`` call inside the jitted function, before the scan, draws ``2^N``-valued action codes, one
  byte per env step (two for ``N > 8``, :func:`action_codes`), and each step unpacks player ``j``'s action from
  bit ``j``. Every step adds every observation and reward into a per-env carry (``[batch, N (2^N + 1)]`` and
  ``[batch, N]``, summed over the batch once after the scan), so XLA cannot drop any of the work.
- **numpy peer**: the same game written as a well-vectorised numpy loop over steps (the same per-step work: each
  player's action bit, joint code, other-defector counts, reward lookup, egocentric rotation for every player,
  auto-reset, one-hot observations written into a preallocated ``[batch, N, 2^N + 1]`` float32 buffer), with the
  action codes drawn as the same number of random bytes by one ``Generator.integers`` call per timed call.
- **references**: gymnax ``CartPole-v1`` with random actions (the usual JAX-env yardstick, stepped the PureJaxRL way
  with one key per env per step), and our :class:`envs.CoinGame` (3 players, 3x3) and :class:`envs.CommonPool`
  (3 players, 5 levels), stepped like ours above (with per-env keys for the coin game, which needs randomness).

Env steps count ``batch x length`` per call (one step of all N players is one env step). Timing follows
``harness``: compile (``lower().compile()``) apart, median of ``repeats`` calls after a warm-up.

Meta-training throughput (:func:`meta_training`, no peer: inner episodes/s of the shapers' OpenES loops in
:mod:`jaxsafety.shaping`, whole jitted runs of a few generations): M-FOS on the exact games and the Shaper on the
sampled games with MLP and GRU PPO naive learners.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import Timing, cli_main, one_core, time_interleaved, time_jitted
from envs.coin_game import CoinGame
from envs.common_pool import CommonPool
from envs.tensor_game import TensorGame, TensorGameParams, ipd
from jaxsafety.shaping import (
    ESConfig,
    MFOSConfig,
    NaivePPOConfig,
    SampledGameConfig,
    make_mfos_es,
    make_shaper_es,
)

NAME = "envs_nplayer"
ROUNDS = 100  # episode length (Pax's inner episode), so the measured steps include auto-resets


@dataclasses.dataclass(frozen=True)
class Budget:
    """Sizes of one run: ``(batch, length)`` pairs per env, the players of the tensor game, repeats; and the
    meta-training runs (:func:`meta_training`)."""

    tensor: tuple[tuple[int, int], ...]
    players: tuple[int, ...]
    others: tuple[tuple[int, int], ...]
    repeats: int
    meta_players: tuple[int, ...]
    meta_population: int
    meta_generations: int
    mfos_trial: int  # naive-learner updates (episodes) per M-FOS trial
    shaper_episodes: int  # episodes (naive PPO updates) per Shaper trial
    shaper_networks: tuple[str, ...]  # naive learners' networks timed for the Shaper
    meta_repeats: int


FULL = Budget(
    tensor=((1, 20_000), (1_000, 2_000), (65_536, 100)),
    players=(3, 5),
    others=((1, 5_000), (1_000, 500), (65_536, 20)),
    repeats=7,
    meta_players=(3, 5),
    meta_population=16,
    meta_generations=2,
    mfos_trial=100,
    shaper_episodes=10,
    shaper_networks=("mlp", "gru"),
    meta_repeats=3,
)
QUICK = Budget(
    tensor=((1, 64), (256, 20)),
    players=(3,),
    others=((32, 8),),
    repeats=3,
    meta_players=(3,),
    meta_population=4,
    meta_generations=1,
    mfos_trial=5,
    shaper_episodes=2,
    shaper_networks=("mlp",),
    meta_repeats=1,
)


def action_codes(key: jax.Array, length: int, batch: int, num_players: int) -> jax.Array:
    """``[length, batch]`` uniformly random ``num_players``-bit action codes (uint8, or uint16 for more than 8
    players), in one ``jax.random.bits`` call.

    The draw is 32-bit words split into bytes (halves), so each env step costs one byte (two) of the generator's
    output, as numpy's ``Generator.integers(..., dtype=np.uint8)`` does (it buffers 32-bit draws). Drawing a whole
    word per env step instead made threefry (about 20 ns a word on this CPU) half of our time at N=3.
    """
    dtype = jnp.uint8 if num_players <= 8 else jnp.uint16
    per_word = 32 // jnp.iinfo(dtype).bits
    words = jax.random.bits(key, (length, -(-batch // per_word)), jnp.uint32)
    codes = jax.lax.bitcast_convert_type(words, dtype).reshape(length, -1)[:, :batch]
    return codes & (2**num_players - 1)


def make_tensor_rollout(num_players: int, batch: int, length: int, unroll: int = 1):
    """Jitted ``rollout(key, codes=None) -> (obs_sum [N, 2^N + 1], reward_sum [N])`` of ``batch`` IPD envs for
    ``length`` steps with uniformly random actions: ``codes`` ``[length, batch]`` are the action codes (player
    ``j``'s action is bit ``j``), by default drawn in-graph from ``key`` by :func:`action_codes` (the timed call).

    The scan carries per-env sums of the observations (flattened, ``[batch, N (2^N + 1)]``) and rewards: an
    elementwise add of every observation element every step, which XLA fuses with the observation's computation,
    and a single batch reduction after the scan. Summing over the batch inside each step instead (the first version
    of this benchmark) costs a reduction per step, which XLA:CPU splits into a reduce-window and a reduce without
    fusing the observation into it: the rollout took 2-3x as long at batch 1k, 1.8-2x at 64k.
    """
    env = TensorGame(num_players, num_rounds=ROUNDS)
    params = TensorGameParams(payoffs=ipd(num_players))
    step = jax.vmap(env.step, in_axes=(None, 0, 0, None))
    width = num_players * env.num_states

    def rollout(key, codes=None):
        _, state = jax.vmap(lambda _: env.reset(key, params))(jnp.arange(batch))
        if codes is None:
            codes = action_codes(key, length, batch, num_players)
        player_bit = jnp.arange(num_players, dtype=codes.dtype)

        def body(carry, code):
            state, obs_sum, rew_sum = carry
            actions = ((code[:, None] >> player_bit) & 1).astype(jnp.int32)  # [batch, N]
            obs, state, rew, _, _ = step(key, state, actions, params)
            return (state, obs_sum + obs.reshape(batch, width), rew_sum + rew), None

        zeros = (jnp.zeros((batch, width)), jnp.zeros((batch, num_players)))
        (_, obs_sum, rew_sum), _ = jax.lax.scan(body, (state, *zeros), codes, unroll=unroll)
        return obs_sum.sum(0).reshape(num_players, env.num_states), rew_sum.sum(0)

    return jax.jit(rollout)


class NumpyTensorGame:
    """The same batched IPD tensor game in vectorised numpy (the peer): ``rollout()`` steps ``batch`` envs
    ``length`` times with random actions and returns the reward sum ``[N]``; observations are written to a
    preallocated ``[batch, N, 2^N + 1]`` float32 buffer every step. ``rollout(codes, trace)`` plays given action
    codes ``[length, batch]`` (as :func:`make_tensor_rollout`) and appends every step's ``(observations
    [batch, N, 2^N + 1], rewards [N, batch])`` to the list ``trace`` (copies), for the tests.

    Per-player arrays are player-major (``[N, batch]``: each player's row is contiguous, and sums over players are
    ``N - 1`` vector adds instead of a reduction over a short inner axis), in int32, and the one-hot is a zero fill
    of the buffer plus one scattered store of 1 per (env, player). The first version of this peer (``[batch, N]``
    int64 arrays, ``.sum(1)``, one-hot rows gathered from an identity matrix with ``np.take``) took 2-3.7x as long
    for the same work.
    """

    def __init__(self, num_players: int, batch: int, length: int):
        n = self.n = num_players
        self.batch, self.length = batch, length
        self.start = 2**n
        self.payoffs = np.asarray(ipd(n), np.float32).reshape(-1)  # index a * N + k
        self.shift = np.arange(n - 1, -1, -1, dtype=np.int32)[:, None]
        self.rot = np.arange(n, dtype=np.int32)[:, None]
        self.player_bit = np.arange(n, dtype=np.int32)[:, None]
        self.obs = np.empty((batch, n, 2**n + 1), np.float32)
        # flat offset of obs[b, i, 0], player-major like the per-player arrays
        self.row = ((np.arange(batch)[None, :] * n + np.arange(n)[:, None]) * (2**n + 1)).astype(np.int64)
        self.rng = np.random.default_rng(0)

    def rollout(self, codes: np.ndarray | None = None, trace: list | None = None) -> np.ndarray:
        n, batch = self.n, self.batch
        dtype = np.uint8 if n <= 8 else np.uint16
        if codes is None:
            bits = self.rng.integers(0, 2**n, size=(self.length, batch), dtype=dtype)
        else:
            bits = np.asarray(codes, dtype).reshape(self.length, batch)
        t = np.zeros(batch, np.int32)
        rew_sum = np.zeros(n, np.float32)
        flat = self.obs.reshape(-1)
        for s in range(self.length):
            actions = (bits[s] >> self.player_bit) & 1  # [N, batch]
            code = np.add.reduce(actions << self.shift, axis=0)
            others = np.add.reduce(actions, axis=0) - actions
            rewards = self.payoffs[actions * n + others]
            ego = ((code << self.rot) | (code >> (n - self.rot))) & (self.start - 1)
            t += 1
            done = t >= ROUNDS
            t[done] = 0
            ego[:, done] = self.start
            self.obs.fill(0.0)
            flat[self.row + ego] = 1.0
            rew_sum += np.add.reduce(rewards, axis=1)
            if trace is not None:
                trace.append((self.obs.copy(), rewards.copy()))
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


def meta_training(budget: Budget) -> list[dict[str, Any]]:
    """Meta-training throughput of the shapers' OpenES loops (IPD payoffs, one shaper among naive learners):
    a whole jitted run of ``meta_generations`` generations, each evaluating ``meta_population`` candidates plus
    the search mean. Inner episodes: M-FOS on the exact game (one exact evaluation of every player's return and
    the naive learners' exact gradient step per episode); Shaper on the sampled game (``8 envs x 50 rounds`` of
    play, then one PPO update of each naive learner, MLP or GRU)."""
    key = jax.random.key(0)
    rows = []
    es = ESConfig(population=budget.meta_population, generations=budget.meta_generations)
    candidates = budget.meta_generations * (budget.meta_population + 1)
    for n in budget.meta_players:
        seats = [True] + [False] * (n - 1)
        train, _ = make_mfos_es(ipd(n), seats, MFOSConfig(trial_length=budget.mfos_trial), es, num_inits=2)
        contenders = [("mfos_exact", jax.jit(train), candidates * 2 * budget.mfos_trial, None)]
        for network in budget.shaper_networks:
            cfg = SampledGameConfig(
                num_envs=8,
                episode_length=50,
                num_episodes=budget.shaper_episodes,
                naive=NaivePPOConfig(network=network, lr=1e-2),
            )
            train, _ = make_shaper_es(ipd(n), seats, cfg, es, num_inits=1)
            episodes = candidates * budget.shaper_episodes
            contenders.append((f"shaper_sampled_{network}", jax.jit(train), episodes, episodes * 8 * 50))
        for method, fn, episodes, env_steps in contenders:
            t = time_jitted(fn, key, repeats=budget.meta_repeats)
            row = {
                "method": method,
                "num_players": n,
                "population": budget.meta_population,
                "generations": budget.meta_generations,
                "inner_episodes_per_call": episodes,
                "inner_episodes_per_s": episodes / t.median_s,
                "env_steps_per_s": None if env_steps is None else env_steps / t.median_s,
                "timing": t.to_dict(),
            }
            rows.append(row)
            print(
                f"meta-training {method} N={n}: {row['inner_episodes_per_s']:.3g} inner episodes/s"
                + ("" if env_steps is None else f" ({row['env_steps_per_s']:.3g} env steps/s)")
                + f", compile {t.compile_s:.1f} s",
                flush=True,
            )
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    budget = QUICK if quick else FULL
    key = jax.random.key(0)
    tensor_rows = []
    for n in budget.players:
        for batch, length in budget.tensor:
            steps = batch * length
            fn = make_tensor_rollout(n, batch, length, _unroll(batch, quick))
            peer_env = NumpyTensorGame(n, batch, length)
            with one_core():
                t0 = time.perf_counter()
                compiled = fn.lower(key).compile()
                compile_s = time.perf_counter() - t0
                t = time_interleaved(
                    {"ours": lambda c=compiled: c(key), "numpy": peer_env.rollout},
                    repeats=budget.repeats,
                    compile_s={"ours": compile_s},
                )
            ours, peer = t["ours"], t["numpy"]
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
        "tensor_game_cores": 1,
        "rounds_per_episode": ROUNDS,
        "tensor_game": tensor_rows,
        "references": reference_rows,
        "ratios_ours_over_numpy": ratios,
        "meta_training": meta_training(budget),
    }


if __name__ == "__main__":
    cli_main(NAME, run)
