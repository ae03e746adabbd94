"""Iterated N-player "tensor games" (binary cooperate/defect social dilemmas) and their exact memory-one returns.

The environment of Souly et al. 2023, "Leading the Pack: N-player Opponent Shaping" (arXiv 2312.12564), and of
Pax's ``IteratedTensorGameNPlayer`` (github.com/ucl-dark/pax, ``pax/envs/iterated_tensor_game_n_player.py``):
each round, each of ``N`` players picks C (=0) or D (=1); player ``i`` receives ``payoffs[a_i, k_i]`` with
``k_i`` the number of OTHER players that defected (``0 .. N-1``). Because the payoff depends on the others only
through ``k_i``, one ``[2, N]`` table defines a symmetric N-player game (Pax indexes the same numbers as
``payoff_table[k_i + a_i, a_i]``, i.e. by the total number of defectors).

Observations are egocentric: player ``i`` sees the last joint action with its own action as the most significant
bit, followed by the players after it in cyclic order,

    s_i = sum_j a_{(i + j) mod N} * 2^(N - 1 - j),      s_i in 0 .. 2^N - 1, and 2^N = "start" (no previous round),

one-hot encoded (length ``2^N + 1``), as in Pax. ``obs_mode="history"`` returns the last ``history`` joint actions
instead (``[N, history, 2^N + 1]``, most recent first, padded with "start").

:func:`memory_one_return` and :func:`memory_one_return_finite` give the exact expected normalised discounted
return of memory-one policies (``coop_probs[i, s]``: player ``i``'s probability of C in its egocentric state
``s``) from the Markov chain over the ``2^N`` joint actions, as Pax's ``InfiniteMatrixGame`` does for two players
(Foerster et al. 2018, LOLA, eq. 4-5). They are differentiable (twice) in ``coop_probs`` and vmappable.

Payoff presets (functions of ``N`` returning ``[2, N]`` float32 tables, row 0 = C, row 1 = D, column = ``k``):
:func:`ipd`, :func:`stag_hunt`, :func:`snowdrift` (= :func:`chicken`), :func:`tragedy`, :func:`public_goods`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxsafety.config import check, check_choice, check_range

__all__ = [
    "TensorGame",
    "TensorGameParams",
    "TensorGameState",
    "chicken",
    "ipd",
    "memory_one_return",
    "memory_one_return_finite",
    "public_goods",
    "snowdrift",
    "stag_hunt",
    "tragedy",
]

MAX_PLAYERS = (
    16  # 2^N joint actions: beyond this the one-hot observation and the Markov chain stop being small
)
OBS_MODES = ("joint_action", "history")


@struct.dataclass
class TensorGameParams:
    """``payoffs``: ``[2, N]`` float32; ``payoffs[a, k]`` is the reward for action ``a`` (0 = C, 1 = D) when ``k``
    of the other ``N - 1`` players defect. An array field, so a batch of games can be vmapped over."""

    payoffs: jax.Array


@struct.dataclass
class TensorGameState:
    """``history``: ``[h]`` int32 global joint-action codes ``sum_j a_j 2^(N-1-j)``, most recent first, ``2^N``
    where there was no round yet; ``t``: int32 rounds played in this episode."""

    history: jax.Array
    t: jax.Array


# ----------------------------------------------------------------------------------------------------------------
# payoff presets


def _check_players(n: int) -> None:
    check_range("num_players", n, ge=2, le=MAX_PLAYERS, integer=True)


def _table(c: np.ndarray, d: np.ndarray) -> jax.Array:
    return jnp.asarray(np.stack([c, d]).astype(np.float32))


def ipd(n: int) -> jax.Array:
    """N-player iterated prisoner's dilemma, ``[2, n]``.

    Souly et al. 2023 (Sec. 5, and Pax's 3-player IPD config) use, by number of other defectors ``k = 0, 1, 2``,
    C: 4, 2, 0 and D: 5, 3, 1. That table is linear in the number of other cooperators ``m = n - 1 - k``: every
    other cooperator gives 2 to each player and defecting adds a private 1, so for any ``n`` we use

        C(k) = 2 (n - 1 - k),        D(k) = 2 (n - 1 - k) + 1.

    D strictly dominates C (by 1), yet all-C (``2 (n - 1)``) beats all-D (1) for ``n >= 2``; ``n = 2`` gives the
    PD with T, R, P, S = 3, 2, 1, 0.
    """
    _check_players(n)
    m = n - 1 - np.arange(n)
    return _table(2.0 * m, 2.0 * m + 1.0)


def stag_hunt(n: int, stag: float = 3.0, hare: float = 2.0) -> jax.Array:
    """N-player stag hunt with a majority threshold, ``[2, n]``.

    Skyrms 2004 ("The Stag Hunt and the Evolution of Social Structure", ch. 1): hunting stag (C) pays ``stag`` if
    the hunt succeeds and 0 otherwise, hunting hare (D) pays ``hare`` regardless, ``stag > hare > 0``. Here the hunt
    succeeds when a strict majority of all ``n`` players hunts stag, i.e. for a C player ``n - k > n / 2``:

        C(k) = stag if k < n / 2 else 0,        D(k) = hare.

    All-C and all-D are both Nash equilibria (payoff-dominant vs. risk-dominant).
    """
    _check_players(n)
    check(stag > hare > 0, "stag", stag, f"numbers > hare ({hare}) > 0")
    k = np.arange(n)
    return _table(np.where(k < n / 2, stag, 0.0), np.full(n, hare))


def snowdrift(n: int, benefit: float = 4.0, cost: float = 2.0) -> jax.Array:
    """N-player snowdrift game (chicken), ``[2, n]``.

    Souza, Pacheco & Santos 2009 ("Evolution of cooperation under N-person snowdrift games", J. Theor. Biol. 260)
    with threshold ``M = 1``: the task (shovelling the snowdrift) is done if at least one player cooperates, giving
    ``benefit`` to everyone; the cooperators share its ``cost`` equally:

        C(k) = benefit - cost / (n - k),        D(k) = benefit if k < n - 1 else 0.

    ``benefit > cost > 0``; for ``n = 2`` this is chicken with T, R, S, P = 4, 3, 2, 0 (defaults).
    """
    _check_players(n)
    check(benefit > cost > 0, "benefit", benefit, f"numbers > cost ({cost}) > 0")
    k = np.arange(n)
    return _table(benefit - cost / (n - k), np.where(k < n - 1, benefit, 0.0))


def chicken(n: int, benefit: float = 4.0, cost: float = 2.0) -> jax.Array:
    """Alias of :func:`snowdrift` (the N-player game of chicken)."""
    return snowdrift(n, benefit, cost)


def tragedy(n: int) -> jax.Array:
    """N-player tragedy of the commons (Hardin 1968) as a grazing game, ``[2, n]``.

    Each player grazes ``x = 1`` (C, restrain) or ``x = 2`` (D, overgraze) animals on a commons whose value per
    animal falls linearly with the total herd (Gordon 1954's open-access model in its simplest form):
    ``r_i = x_i (K - sum_j x_j)`` with ``K = 2n + 1.5``, i.e. with ``k`` other overgrazers

        C(k) = K - n - k,        D(k) = 2 (K - n - k - 1).

    ``K`` lies strictly between ``2n + 1`` (above which D dominates C for every ``k``) and ``3n`` (below which
    all-D pays less than all-C), so the commons is overgrazed at the unique equilibrium. ``n = 2`` gives the PD
    T, R, P, S = 5, 3.5, 3, 2.5. Unlike :func:`ipd`, the harm of overgrazing grows with the others' defection.
    """
    _check_players(n)
    cap = 2 * n + 1.5
    k = np.arange(n)
    return _table(cap - n - k, 2.0 * (cap - n - k - 1))


def public_goods(n: int, r: float, endowment: float = 1.0) -> jax.Array:
    """Binary public goods game, ``[2, n]``.

    Each player either contributes its ``endowment`` (C) or keeps it (D); the pot is multiplied by ``r`` and shared
    equally among all ``n`` players (e.g. Hauert et al. 2002, "Volunteering as Red Queen mechanism", Science 296):

        C(k) = r e (n - k) / n,        D(k) = e + r e (n - 1 - k) / n.

    ``1 < r < n`` makes it a social dilemma: D dominates (by ``e (1 - r / n)``) but all-C (``r e``) beats all-D
    (``e``).
    """
    _check_players(n)
    check_range("r", r, gt=1, lt=n)
    check_range("endowment", endowment, gt=0)
    k = np.arange(n)
    return _table(r * endowment * (n - k) / n, endowment + r * endowment * (n - 1 - k) / n)


# ----------------------------------------------------------------------------------------------------------------
# environment


class TensorGame:
    """Iterated N-player tensor game (gymnax-style API, player axis leading).

    Payoff: each round player ``i`` gets ``payoffs[a_i, k_i]``, ``a_i`` in {0 = C, 1 = D}, ``k_i`` = number of other
    players choosing D (Souly et al. 2023, arXiv 2312.12564; Pax ``IteratedTensorGameNPlayer``). An episode is
    ``num_rounds`` rounds (Pax's inner episode: 100); ``step`` resets automatically when it ends, returning the
    start observation and the pre-reset one in ``info["final_observation"]``.

    Args:
        num_players: ``N``, 2 .. 16.
        num_rounds: rounds per episode (>= 1).
        obs_mode: ``"joint_action"``: one-hot egocentric last joint action, ``[N, 2^N + 1]`` float32 (index
            ``2^N`` = start); ``"history"``: the last ``history`` joint actions, ``[N, history, 2^N + 1]``.
        history: window length for ``obs_mode="history"`` (must be 1 for ``"joint_action"``).
    """

    num_actions = 2

    def __init__(
        self,
        num_players: int = 3,
        num_rounds: int = 100,
        obs_mode: Literal["joint_action", "history"] = "joint_action",
        history: int = 1,
    ):
        _check_players(num_players)
        check_range("num_rounds", num_rounds, ge=1, integer=True)
        check_choice("obs_mode", obs_mode, OBS_MODES)
        check_range("history", history, ge=1, integer=True)
        if obs_mode == "joint_action":
            check(history == 1, "history", history, "1 when obs_mode='joint_action'")
        self.num_players = num_players
        self.num_rounds = num_rounds
        self.obs_mode = obs_mode
        self.history = history
        self.num_states = 2**num_players + 1  # joint actions + "start"
        self.start = 2**num_players
        # player j's action is bit N-1-j of the global code; rotating it left by i bits makes player i's the top bit
        self._shift = jnp.arange(num_players - 1, -1, -1, dtype=jnp.int32)
        self._rot = jnp.arange(num_players, dtype=jnp.int32)

    @property
    def observation_shape(self) -> tuple[int, ...]:
        """Per-player observation shape (``obs`` is ``[num_players, *observation_shape]``)."""
        if self.obs_mode == "joint_action":
            return (self.num_states,)
        return (self.history, self.num_states)

    @property
    def default_params(self) -> TensorGameParams:
        """The IPD payoffs (:func:`ipd`)."""
        return TensorGameParams(payoffs=ipd(self.num_players))

    def egocentric_index(self, codes: jax.Array) -> jax.Array:
        """Egocentric state indices ``[N, ...]`` of global joint-action codes ``[...]`` (start stays ``2^N``)."""
        n = self.num_players
        c = codes[None].astype(jnp.int32)
        rot = self._rot.reshape((n,) + (1,) * codes.ndim)
        ego = ((c << rot) | (c >> (n - rot))) & (self.start - 1)
        return jnp.where(c == self.start, self.start, ego)

    def _obs(self, history: jax.Array) -> jax.Array:
        """One-hot egocentric observations ``[N, h, 2^N + 1]`` (``[N, 2^N + 1]`` for ``"joint_action"``) of the
        global codes ``history [h]``.

        Player ``i`` sees code ``g`` as state ``s`` iff ``g`` is ``s`` rotated right by ``i`` bits, so
        ``obs[i, j, s] = [history[j] == seen_as[i, s]]`` with ``seen_as`` the inverse rotation of every state
        (start -> start): one compare per element against a table that depends only on ``(i, s)``, instead of a
        rotation per player followed by a one-hot. Under ``vmap`` the per-env input is then just the code, and the
        table is built from iotas inside the fused loop (no constant of ``N (2^N + 1)`` entries in the program).

        The indicator is written ``max(1 - |g - seen_as|, 0)`` (exact for integers): XLA:CPU vectorises this
        integer form along the state axis, whereas ``(g == seen_as).astype(float32)`` (what ``jax.nn.one_hot``
        lowers to) compiles to scalar compare-and-convert code, 3-4x slower (a ``[1000, 5, 33]`` one-hot alone).
        """
        n, h = self.num_players, history.shape[0]
        shape = (n, h, self.num_states)
        s = jax.lax.broadcasted_iota(jnp.int32, shape, 2)
        i = jax.lax.broadcasted_iota(jnp.int32, shape, 0)
        seen_as = jnp.where(s == self.start, self.start, ((s >> i) | (s << (n - i))) & (self.start - 1))
        g = history.astype(jnp.int32)[None, :, None]
        obs = jnp.maximum(1 - jnp.abs(g - seen_as), 0).astype(jnp.float32)
        return obs[:, 0] if self.obs_mode == "joint_action" else obs

    def reset(self, key: jax.Array, params: TensorGameParams) -> tuple[jax.Array, TensorGameState]:
        """Start of an episode (deterministic; ``key`` is unused). ``obs``: ``[N, *observation_shape]``."""
        del key, params
        state = TensorGameState(
            history=jnp.full((self.history,), self.start, jnp.int32), t=jnp.zeros((), jnp.int32)
        )
        return self._obs(state.history), state

    def step(
        self, key: jax.Array, state: TensorGameState, actions: jax.Array, params: TensorGameParams
    ) -> tuple[jax.Array, TensorGameState, jax.Array, jax.Array, dict[str, Any]]:
        """One round. ``actions``: ``[N]`` ints in {0, 1}. Returns ``obs [N, ...]``, state, ``rewards [N]``
        float32, ``done`` bool scalar, ``info`` with ``final_observation`` (the observation before auto-reset)."""
        chex.assert_shape(
            actions,
            (self.num_players,),
            custom_message=f"TensorGame.step: actions must be [num_players] = ({self.num_players},), one per player "
            "(vmap step over a batch of envs)",
        )
        del key
        a = actions.astype(jnp.int32)
        code = jnp.sum(a << self._shift)
        # payoffs[a_i, k_i] with k_i = defectors - a_i: every cooperator gets payoffs[0, defectors], every defector
        # payoffs[1, defectors - 1], so two lookups per round instead of one per player (the out-of-range index of
        # the row nobody takes, all-D or all-C, is clipped and its value unused)
        defectors = jax.lax.population_count(code)
        payoffs = params.payoffs.astype(jnp.float32)
        rewards = jnp.where(
            a == 1,
            jnp.take(payoffs[1], defectors - 1, mode="clip"),
            jnp.take(payoffs[0], defectors, mode="clip"),
        )
        history = jnp.concatenate([code[None], state.history[:-1]])
        t = state.t + 1
        done = t >= self.num_rounds
        # auto-reset on the integer codes, then one one-hot: obs is the observation of the new state
        new_state = TensorGameState(history=jnp.where(done, self.start, history), t=jnp.where(done, 0, t))
        obs = self._obs(new_state.history)
        final_obs = self._obs(history)
        return obs, new_state, rewards, done, {"final_observation": final_obs}


# ----------------------------------------------------------------------------------------------------------------
# exact returns of memory-one policies


def _chain_tables(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static tables over global joint-action codes ``g``: ``bits [2^N, N]`` (player ``i``'s action in ``g``),
    ``others [2^N, N]`` (its number of defecting others) and ``ego [N, 2^N]`` (its egocentric state index)."""
    g = np.arange(2**n)
    bits = (g[:, None] >> (n - 1 - np.arange(n))[None, :]) & 1
    others = bits.sum(1, keepdims=True) - bits
    i = np.arange(n)[:, None]
    ego = ((g[None, :] << i) | (g[None, :] >> (n - i))) & (2**n - 1)
    return bits, others, ego


def _chain(payoffs: jax.Array, coop_probs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Start distribution ``p0 [2^N]``, transition matrix ``P [2^N, 2^N]`` over joint actions, rewards
    ``R [2^N, N]``."""
    n = payoffs.shape[-1]
    if payoffs.shape != (2, n) or coop_probs.shape != (n, 2**n + 1):
        raise ValueError(
            f"payoffs {payoffs.shape} and coop_probs {coop_probs.shape} are invalid: accepted shapes are "
            f"[2, N] and [N, 2^N + 1] ([2, {n}] and [{n}, {2**n + 1}])"
        )
    bits, others, ego = _chain_tables(n)
    rewards = payoffs[bits, others]  # [2^N, N]
    coop = coop_probs[np.arange(n)[:, None], ego].T  # [2^N (previous joint action), N]
    defect_next = jnp.asarray(bits == 1)  # [2^N (next joint action), N]
    trans = jnp.prod(jnp.where(defect_next[None], 1.0 - coop[:, None], coop[:, None]), axis=-1)
    start = coop_probs[:, -1]
    p0 = jnp.prod(jnp.where(defect_next, 1.0 - start[None], start[None]), axis=-1)
    return p0, trans, rewards


def memory_one_return(payoffs: jax.Array, coop_probs: jax.Array, gamma: float | jax.Array) -> jax.Array:
    """Exact normalised discounted return of memory-one policies in the infinite iterated game, ``[N]``.

    ``payoffs``: ``[2, N]``; ``coop_probs``: ``[N, 2^N + 1]``, ``coop_probs[i, s]`` is player ``i``'s probability of
    cooperating in its egocentric state ``s`` (index ``2^N``: the first round); ``gamma`` in [0, 1).

    With ``p0`` the distribution of the first joint action and ``P`` the transition matrix between joint actions,
    ``V = (1 - gamma) * p0 (I - gamma P)^{-1} R`` (Foerster et al. 2018, LOLA, eq. 4-5, for N players) is
    ``(1 - gamma) E[sum_t gamma^t r_{i,t}]`` (the inverse applied by :func:`_discounted_visits`); differentiable
    twice; ``gamma <= 0.999``.
    """
    p0, trans, rewards = _chain(payoffs, coop_probs)
    return (1.0 - gamma) * _discounted_visits(trans, p0, gamma) @ rewards


_DOUBLINGS = 16  # the series below sums 2^16 = 65536 terms: gamma^65536 < 1e-28 for gamma <= 0.999


def _doublings(gamma: float | jax.Array) -> int:
    """Doublings for a truncation ``gamma^(2^K) <= 1e-12`` (all :data:`_DOUBLINGS` when ``gamma`` is traced)."""
    if isinstance(gamma, jax.core.Tracer) or not 0 < float(gamma) < 1:
        return _DOUBLINGS
    return min(_DOUBLINGS, max(1, math.ceil(math.log2(math.log(1e-12) / math.log(float(gamma))))))


def _discounted_visits(trans: jax.Array, p0: jax.Array, gamma: float | jax.Array) -> jax.Array:
    """``sum_t gamma^t p0 P^t = (I - gamma P)^{-T} p0`` by doubling: ``S_{2m} = S_m + A^m S_m`` with
    ``A = gamma P^T``, squared ``K`` times (matmuls only; ``K`` from :func:`_doublings`: 10 for
    ``gamma = 0.96``).

    Not ``jnp.linalg.solve``: nested Jacobians of the LU solve, vmapped over games and initialisations, crashed
    XLA:CPU (jaxlib 0.10.2) intermittently with a segfault in its LAPACK path; the doubling series needs no
    LAPACK and is as accurate in float32 for ``gamma <= 0.999``. Its derivative is given in closed form
    (:func:`_visits_series`), so a gradient costs ``K`` matrix-vector products instead of back-propagating
    through ``2 K`` matmuls.
    """
    return _visits_series(gamma * trans.T, p0, _doublings(gamma))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _visits_series(a: jax.Array, p0: jax.Array, k: int) -> jax.Array:
    """``v = sum_{t < 2^k} a^t p0`` (``a = gamma P^T``), i.e. ``(I - a)^{-1} p0`` up to ``gamma^(2^k)``.

    VJP: with ``u = (I - a)^{-T} g = sum_t (a^T)^t g`` (the same doubling, applied with the stored powers
    ``a^(2^i)`` transposed), ``a_bar = u v^T`` and ``p0_bar = u``: the exact derivative of the infinite series,
    which the truncated one matches to ``O(gamma^(2^k))``. Differentiable again (reverse over reverse), as
    N-player LOLA needs."""
    return _visits_fwd(a, p0, k)[0]


def _visits_fwd(a: jax.Array, p0: jax.Array, k: int) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    powers, v = [], p0
    for _ in range(k):
        powers.append(a)
        v = v + a @ v
        a = a @ a
    return v, (jnp.stack(powers), v)


def _visits_bwd(k: int, res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    powers, v = res
    u = g
    for i in range(k):
        u = u + powers[i].T @ u
    return jnp.outer(u, v), u


_visits_series.defvjp(_visits_fwd, _visits_bwd)


def memory_one_return_finite(
    payoffs: jax.Array, coop_probs: jax.Array, gamma: float | jax.Array, horizon: int
) -> jax.Array:
    """Exact discounted average reward over a finite episode of ``horizon`` rounds, ``[N]``.

    ``sum_{t<H} gamma^t E[r_{i,t}] / sum_{t<H} gamma^t`` (``gamma`` in [0, 1]; with ``gamma = 1`` the mean reward
    per round, i.e. the episode return over ``H``), computed by propagating the joint-action distribution
    ``p_{t+1} = p_t P`` in a ``lax.scan``. Tends to :func:`memory_one_return` as ``horizon`` grows. Shapes as there.
    """
    check_range("horizon", horizon, ge=1, integer=True)
    p0, trans, rewards = _chain(payoffs, coop_probs)

    def body(carry, _):
        p, w, acc = carry
        return (p @ trans, w * gamma, acc + w * (p @ rewards)), None

    one = jnp.ones((), p0.dtype)
    init = (p0, one, jnp.zeros(rewards.shape[1], p0.dtype))
    (_, _, acc), _ = jax.lax.scan(body, init, None, length=horizon)
    weights = jnp.sum(jnp.asarray(gamma, p0.dtype) ** jnp.arange(horizon, dtype=p0.dtype))
    return acc / weights
