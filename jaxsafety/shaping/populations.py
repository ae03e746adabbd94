"""Populations of shapers and naive learners in the iterated N-player tensor games (Souly et al. 2023, "Leading the
Pack: N-player Opponent Shaping", arXiv 2312.12564, section 5): the study design of the paper as library functions.

A *population* fills the ``N`` seats of a game with shapers (the first seats) and naive learners (the rest):

- ``all_naive``: ``N`` naive learners;
- ``1_shaper``: one shaper + ``N - 1`` naive learners;
- ``2_shapers``: two shapers + ``N - 2`` naive learners;
- ``all_shapers``: shapers against each other (each its own agent, maximising its own return).

Each runner below builds one jitted program for one ``(method, N, population)``, vmapped over a stack of games
(``payoffs [G, 2, N]``) and over initialisations or evaluation trials:

- :func:`make_exact_runner`: exact naive learners (memory-one policies, exact policy gradient on the exact
  discounted return, :mod:`jaxsafety.shaping.exact`), with N-player LOLA in the shaper seats;
- :func:`make_mfos_runner`: M-FOS-style meta-policies (:mod:`jaxsafety.shaping.mfos`) meta-trained with OpenES,
  then played against exact naive learners from given initialisations;
- :func:`make_sampled_runner`: Shaper-style GRU policies (:mod:`jaxsafety.shaping.shaper`) meta-trained with OpenES
  on the *sampled* game against PPO naive learners, then evaluation trials.

:func:`summarise_population` reduces one population's returns and cooperation to the reported statistics;
:func:`compare_populations` gives the paper's headline comparisons against ``all_naive`` (a single shaper's own
gain, each population's social gain).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from envs import tensor_game
from jaxsafety.config import check, check_choice, check_range
from jaxsafety.shaping.es import ESConfig
from jaxsafety.shaping.exact import LearnerSpec, LOLAConfig, make_exact_learning, memory_one_value_fn
from jaxsafety.shaping.mfos import MFOSConfig, make_mfos_es, make_mfos_trial
from jaxsafety.shaping.shaper import NaivePPOConfig, SampledGameConfig, make_sampled_trial, make_shaper_es

__all__ = [
    "GAMES",
    "POPULATIONS",
    "SHAPER_POPULATIONS",
    "PopulationConfig",
    "compare_populations",
    "exact_cooperation",
    "make_exact_runner",
    "make_mfos_runner",
    "make_sampled_runner",
    "payoff_table",
    "shaper_seats",
    "summarise_population",
]

GAMES = ("ipd", "stag_hunt", "snowdrift", "tragedy", "public_goods")  # presets of envs.tensor_game
SHAPER_POPULATIONS = ("1_shaper", "2_shapers", "all_shapers")
POPULATIONS = ("all_naive", *SHAPER_POPULATIONS)
_SHAPERS_IN = {"all_naive": 0, "1_shaper": 1, "2_shapers": 2}  # all_shapers: N


@dataclasses.dataclass(frozen=True)
class PopulationConfig:
    """The learners of one population study (defaults: the ``nplayer_shaping`` experiment's).

    Exact games (naive, LOLA and M-FOS populations): ``num_updates`` naive-learner updates per run (= the M-FOS
    trial length) of step ``lr`` on the ``(1 - gamma)``-normalised exact return, initial cooperation logits
    ``~ N(0, init_std^2)`` (M-FOS meta-training draws its own); LOLA's assumed co-player step ``lola_alpha`` (with
    the look-ahead term if ``lola_look_ahead``, :class:`jaxsafety.shaping.LOLAConfig`); M-FOS meta-policy MLP
    ``mfos_hidden`` trained by OpenES ``mfos_es`` on ``mfos_train_inits`` co-player initialisations per fitness.

    Sampled games (Shaper and its PPO naive baseline): trials ``sampled``, OpenES ``shaper_es`` on
    ``shaper_train_inits`` trials per fitness.

    ``public_goods_r``: the public goods game's multiplication factor as a fraction of ``N`` (``r = fraction * N``,
    a social dilemma for ``1 < r < N``).
    """

    num_updates: int = 100
    init_std: float = 1.0
    gamma: float = 0.96  # discount of the iterated game (LOLA paper, Pax)
    lr: float = 10.0
    lola_alpha: float = 10.0
    lola_look_ahead: bool = False
    mfos_hidden: tuple[int, ...] = (32,)
    mfos_es: ESConfig = ESConfig(population=16, generations=50, sigma=0.1, lr=0.03)
    mfos_train_inits: int = 2
    sampled: SampledGameConfig = SampledGameConfig(
        num_envs=8, episode_length=50, num_episodes=30, naive=NaivePPOConfig(network="mlp", lr=1e-2)
    )
    shaper_es: ESConfig = ESConfig(population=16, generations=30, sigma=0.1, lr=0.03)
    shaper_train_inits: int = 1
    public_goods_r: float = 0.75

    def __post_init__(self) -> None:
        for f in ("num_updates", "mfos_train_inits", "shaper_train_inits"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check_range("init_std", self.init_std, ge=0)
        check_range("gamma", self.gamma, ge=0, lt=1)
        check_range("lr", self.lr, gt=0)
        check_range("lola_alpha", self.lola_alpha, ge=0)
        check_range("public_goods_r", self.public_goods_r, gt=0, lt=1)
        check(
            len(self.mfos_hidden) >= 1 and all(isinstance(h, int) and h >= 1 for h in self.mfos_hidden),
            "mfos_hidden",
            self.mfos_hidden,
            "non-empty tuples of integers >= 1",
        )

    def population_config(self) -> PopulationConfig:
        """This config's :class:`PopulationConfig` fields only (for subclasses that add their own fields)."""
        return PopulationConfig(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(PopulationConfig)}
        )

    def mfos_config(self) -> MFOSConfig:
        """The inner game of the M-FOS populations' trials."""
        return MFOSConfig(
            trial_length=self.num_updates,
            inner_lr=self.lr,
            gamma=self.gamma,
            init_std=self.init_std,
            hidden=self.mfos_hidden,
        )


def payoff_table(game: str, n: int, public_goods_r: float = 0.75) -> jax.Array:
    """The ``[2, n]`` payoff table of ``game`` (one of :data:`GAMES`, the :mod:`envs.tensor_game` presets);
    ``public_goods`` with ``r = public_goods_r * n``."""
    check_choice("game", game, GAMES)
    if game == "public_goods":
        return tensor_game.public_goods(n, public_goods_r * n)
    return getattr(tensor_game, game)(n)


def shaper_seats(population: str, n: int) -> list[bool]:
    """Which of the ``n`` seats of ``population`` (one of :data:`POPULATIONS`) hold a shaper: the first ones."""
    check_choice("population", population, POPULATIONS)
    k = _SHAPERS_IN.get(population, n)
    check(k <= n, "population", population, f"populations with at most N = {n} shapers")
    return [i < k for i in range(n)]


def exact_cooperation(thetas: jax.Array, gamma: float) -> jax.Array:
    """Exact ``(1 - gamma)``-normalised discounted frequency of C of memory-one policies, ``[..., N]``.

    ``thetas [..., N, 2^N + 1]``: cooperation logits per egocentric state (:mod:`envs.tensor_game`). The frequency
    is :func:`envs.tensor_game.memory_one_return` of the payoff table that pays 1 for C and 0 for D.
    """
    n = thetas.shape[-2]
    coop_table = jnp.stack([jnp.ones(n), jnp.zeros(n)])
    flat = thetas.reshape(-1, *thetas.shape[-2:])
    coop = jax.vmap(lambda t: tensor_game.memory_one_return(coop_table, jax.nn.sigmoid(t), gamma))(flat)
    return coop.reshape(thetas.shape[:-1])


def make_exact_runner(
    n: int, population: str, kind: Literal["naive", "lola"], config: PopulationConfig
) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """``jit(run(payoffs [G, 2, n], inits [I, n, 2^n + 1])) -> (values [G, I, U, n], coop [G, I, U, n])``.

    Exact naive learners in every seat, except LOLA learners in the shaper seats of ``population`` when
    ``kind="lola"``. ``U = config.num_updates`` episodes: the policies before each of the first ``U - 1``
    updates and after the last; ``values``: their exact normalised returns, ``coop``: their exact cooperation
    (:func:`exact_cooperation`).
    """
    check_choice("kind", kind, ("naive", "lola"))
    lola = LOLAConfig(alpha=config.lola_alpha, look_ahead=config.lola_look_ahead)
    specs = [
        LearnerSpec("lola", lr=config.lr, lola=lola)
        if s and kind == "lola"
        else LearnerSpec("naive", lr=config.lr)
        for s in shaper_seats(population, n)
    ]

    def one(payoffs: jax.Array, thetas0: jax.Array) -> tuple[jax.Array, jax.Array]:
        value_fn = memory_one_value_fn(payoffs, config.gamma)
        if config.num_updates == 1:
            return value_fn(thetas0)[None], exact_cooperation(thetas0[None], config.gamma)
        _, hist = make_exact_learning(value_fn, specs, config.num_updates - 1)(thetas0)
        return hist["values"], exact_cooperation(hist["thetas"], config.gamma)

    return jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))


def make_mfos_runner(
    n: int, population: str, config: PopulationConfig
) -> Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]:
    """``jit(run(payoffs [G, 2, n], inits [I, n, 2^n + 1], key)) -> (values [G, I, U, n], coop [G, I, U, n],
    fitness [G, generations, K])``.

    Per game: OpenES meta-training (``config.mfos_es``) of the ``K`` shaper seats' M-FOS meta-policies
    (:func:`jaxsafety.shaping.make_mfos_es`, the same ``key`` for every game), then the trained meta-policies
    against exact naive learners from each of ``inits``. ``fitness``: the ES search means' fitness per generation.
    ``population``: one of :data:`SHAPER_POPULATIONS`.
    """
    check_choice("population", population, SHAPER_POPULATIONS)
    seats = shaper_seats(population, n)
    mcfg = config.mfos_config()

    def one(payoffs: jax.Array, inits: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        train, graphdef = make_mfos_es(
            payoffs, seats, mcfg, config.mfos_es, num_inits=config.mfos_train_inits
        )
        params, metrics = train(key)

        def act(obs: jax.Array, _: Any) -> jax.Array:
            return jax.vmap(lambda p, o: nnx.merge(graphdef, p)(o))(params, obs)

        trial = make_mfos_trial(payoffs, seats, mcfg)
        out = jax.vmap(lambda th0: trial(act, th0))(inits)
        return out["values"], exact_cooperation(out["thetas"], config.gamma), metrics["mean_fitness"]

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def make_sampled_runner(
    n: int, population: str, config: PopulationConfig
) -> Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]:
    """``jit(run(payoffs [G, 2, n], eval_keys [E], key)) -> (reward [G, E, U, n], coop [G, E, U, n],
    fitness [G, generations, K])`` on the sampled game (``U = config.sampled.num_episodes``).

    Per game: the Shaper's OpenES meta-training (``config.shaper_es``, :func:`jaxsafety.shaping.make_shaper_es`;
    skipped for ``all_naive``, whose ``fitness`` is empty, ``K = 0``), then one evaluation trial per key of
    ``eval_keys`` (:func:`jaxsafety.shaping.make_sampled_trial`: mean reward per round and frequency of C per
    episode and seat).
    """
    seats = shaper_seats(population, n)

    def one(
        payoffs: jax.Array, eval_keys: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        if population == "all_naive":
            trial, _, _ = make_sampled_trial(payoffs, seats, config.sampled)
            params, fitness = None, jnp.zeros((config.shaper_es.generations, 0))
        else:
            train, trial = make_shaper_es(
                payoffs, seats, config.sampled, config.shaper_es, num_inits=config.shaper_train_inits
            )
            params, metrics = train(key)
            fitness = metrics["mean_fitness"]
        stats = jax.vmap(lambda k: trial(params, k))(eval_keys)
        return stats["reward"], stats["coop"], fitness

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def summarise_population(
    values: np.ndarray, coop: np.ndarray, seats: Sequence[bool]
) -> dict[str, float | list[float] | None]:
    """Statistics of one population over initialisations or trials.

    ``values, coop: [I, U, n]`` (returns and cooperation of ``I`` runs of ``U`` episodes); ``seats``: which seats
    hold a shaper (:func:`shaper_seats`). For the last episode (no suffix) and the mean over the run (``_mean``,
    what the meta-learners maximise), averaged over the ``I`` runs: ``seat_return`` (per seat), ``social_return``
    (mean over seats) with its standard error over runs ``social_return_se`` (None for one run),
    ``cooperation``, ``shaper_return`` and ``naive_return`` (mean over those seats; None if there are none).
    """
    values, coop = np.asarray(values), np.asarray(coop)
    mask = np.asarray(seats, bool)
    check(
        values.ndim == 3 and values.shape == coop.shape and values.shape[-1] == len(mask),
        "values",
        f"shape {values.shape} (coop {coop.shape}, {len(mask)} seats)",
        "arrays [I, U, n] of the shape of coop with n = len(seats)",
    )
    out: dict[str, Any] = {}
    for tag, v, c in (("", values[:, -1], coop[:, -1]), ("_mean", values.mean(1), coop.mean(1))):
        social = v.mean(-1)
        out |= {
            f"seat_return{tag}": v.mean(0).tolist(),
            f"social_return{tag}": float(social.mean()),
            f"social_return{tag}_se": float(social.std(ddof=1) / math.sqrt(len(social)))
            if len(social) > 1
            else None,
            f"cooperation{tag}": float(c.mean()),
            f"shaper_return{tag}": float(v[:, mask].mean()) if mask.any() else None,
            f"naive_return{tag}": float(v[:, ~mask].mean()) if (~mask).any() else None,
        }
    return out


def compare_populations(cell: dict[str, dict[str, Any]], populations: Sequence[str]) -> dict[str, float]:
    """Headline comparisons of one (method, game, N) against its ``all_naive`` population.

    ``cell``: population name -> :func:`summarise_population` statistics (``all_naive`` and each of
    ``populations``). Returns, for the mean over the run (``_mean``) and the last episode (no suffix):
    ``shaper_gain_own`` (when ``1_shaper`` is in ``cell``: the shaper's return minus the same seat's in
    ``all_naive``) and ``social_gain_<population>`` (its social return minus ``all_naive``'s).
    """
    check("all_naive" in cell, "cell", sorted(cell), "mappings with an 'all_naive' population")
    for p in populations:
        check(p in cell, "populations", p, f"populations in the cell ({sorted(cell)})")
    base = cell["all_naive"]
    out = {}
    for tag in ("_mean", ""):
        if "1_shaper" in cell:
            out[f"shaper_gain_own{tag}"] = (
                cell["1_shaper"][f"shaper_return{tag}"] - base[f"seat_return{tag}"][0]
            )
        for p in populations:
            out[f"social_gain_{p}{tag}"] = cell[p][f"social_return{tag}"] - base[f"social_return{tag}"]
    return out
