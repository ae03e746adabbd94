"""OpenES outer loop for meta-learned shapers, with one independent evolution strategy per shaper seat.

The meta-learned shapers (:mod:`jaxsafety.shaping.mfos`, :mod:`jaxsafety.shaping.shaper`) are trained by OpenAI-ES
(Salimans et al. 2017), as in Pax's M-FOS and Shaper experiments, through evosax's ``Open_ES`` (antithetic
sampling, centred-rank fitness shaping, Adam on the mean). Several shapers in one game are *separate agents*: seat
``k`` has its own ES state and is scored by its own return only, so "shapers against each other" is simultaneous
self-interested meta-learning, not cooperative training of a shared policy.

:func:`make_es_train` builds ``train(key) -> (params, metrics)``, the whole meta-training run as one ``lax.scan``
over generations (jit it; vmap it over seeds). Each generation every seat's ES proposes ``population`` candidates;
candidate ``p`` of every seat plays in the same games (candidate ``p`` of seat 0 with candidate ``p`` of seat 1,
...), evaluated by ``fitness_fn(params [K, ...], key) -> returns [K]`` vmapped over the population with one key per
generation (common random numbers: all candidates meet the same co-player initialisations and samples).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsafety.config import check, check_range

__all__ = ["ESConfig", "make_es_train"]

FitnessFn = Callable[[Any, jax.Array], jax.Array]  # (params with a leading seat axis [K, ...], key) -> [K]


@dataclasses.dataclass(frozen=True)
class ESConfig:
    """OpenES hyperparameters: ``population`` candidates per seat and generation (even: antithetic pairs),
    perturbation scale ``sigma``, Adam step ``lr`` on the search mean, ``generations`` updates."""

    population: int = 32
    generations: int = 100
    sigma: float = 0.1
    lr: float = 0.03

    def __post_init__(self) -> None:
        check_range("population", self.population, ge=2, integer=True)
        check(self.population % 2 == 0, "population", self.population, "even integers (antithetic pairs)")
        check_range("generations", self.generations, ge=1, integer=True)
        check_range("sigma", self.sigma, gt=0)
        check_range("lr", self.lr, gt=0)


def make_es_train(
    fitness_fn: FitnessFn, init_params: Any, num_seats: int, config: ESConfig
) -> Callable[[jax.Array], tuple[Any, dict[str, jax.Array]]]:
    """``train(key) -> (mean params [K, ...], metrics)`` with ``K = num_seats`` independent OpenES runs.

    ``init_params``: one seat's parameter pytree (every seat's search starts at it). ``metrics``: ``fitness_mean``
    and ``fitness_max`` ``[generations, K]`` (the raw returns of the population), and ``mean_fitness``
    ``[generations, K]``, the return of the search means themselves before the generation's update, evaluated with
    the generation's key alongside the population.
    """
    from evosax.algorithms import Open_ES

    check_range("num_seats", num_seats, ge=1, integer=True)
    es = Open_ES(
        population_size=config.population,
        solution=init_params,
        optimizer=optax.adam(config.lr),
        std_schedule=optax.constant_schedule(config.sigma),
    )
    es_params = es.default_params
    stack = jax.vmap(lambda _: init_params)(jnp.arange(num_seats))

    def generation(states: Any, key: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        k_ask, k_eval, k_tell = jax.random.split(key, 3)
        pops, states = jax.vmap(es.ask, in_axes=(0, 0, None))(
            jax.random.split(k_ask, num_seats), states, es_params
        )  # leaves [K, P, ...]
        means = jax.vmap(es.get_mean)(states)  # [K, ...]
        # the search means are scored in the same vmapped call, as candidate P (one copy of fitness_fn's program)
        candidates = jax.tree.map(lambda p, m: jnp.concatenate([jnp.swapaxes(p, 0, 1), m[None]]), pops, means)
        returns = jax.vmap(fitness_fn, in_axes=(0, None))(candidates, k_eval)  # [P + 1, K]
        states, _ = jax.vmap(es.tell, in_axes=(0, 0, 1, 0, None))(
            jax.random.split(k_tell, num_seats), pops, -returns[:-1], states, es_params
        )  # evosax minimises
        return states, {
            "fitness_mean": returns[:-1].mean(0),
            "fitness_max": returns[:-1].max(0),
            "mean_fitness": returns[-1],
        }

    def train(key: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        k_init, k_gens = jax.random.split(key)
        states = jax.vmap(es.init, in_axes=(0, 0, None))(
            jax.random.split(k_init, num_seats), stack, es_params
        )
        states, metrics = jax.lax.scan(generation, states, jax.random.split(k_gens, config.generations))
        return jax.vmap(es.get_mean)(states), metrics

    return train
