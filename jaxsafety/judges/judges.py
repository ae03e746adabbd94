"""Pairwise judges: the string protocol of an LLM judge, the index-array form tournaments call, a cache, and a
simulated judge with a tunable amount of non-transitivity.

Two forms of a judge, both returning the probability that the response shown *first* wins:

- :class:`Judge` (strings): ``judge.judge(instruction, response_a, response_b) -> p(a wins)``, ``response_a``
  shown first. This is what an LLM judge implements.
- :class:`BatchedJudge` (index arrays): ``judge(instruction [B], first [B], second [B]) -> p(first wins) [B]``,
  models and instructions as integer indices. Tournaments (:mod:`jaxsafety.judges.tournaments`) call this form;
  :class:`StringJudgeAdapter` turns a string judge plus a table of responses into it, and :class:`SimulatedJudge`
  implements both.

:class:`CachedJudge` memoises a batched judge on ``(instruction, a, b, order)`` (``a < b`` the two models,
``order`` which was shown first), so a repeated comparison costs no judge call; it counts requests and the calls
that reached the judge.

:class:`SimulatedJudge` (built by :func:`make_simulated_judge`): a latent skill per model (the ground-truth
ranking), plus a rock-paper-scissors component from the 2-D "disc game" of Balduzzi et al. 2019 ("Open-ended
learning in symmetric zero-sum games", Sec. 3): each model has a unit "style" vector ``v = (cos t, sin t)`` and
the judge adds ``nontransitivity * (v_a x v_b)``, an antisymmetric term that no score difference can express
(three styles 120 degrees apart form a pure cycle). Styles are jittered per instruction, the judge favours the
first-shown response by ``position_bias`` (in logits) and adds independent Gaussian logit noise per (instruction,
ordered pair), drawn once so the judge is deterministic (like an LLM judge at temperature 0) and caching is
transparent::

    logit p(a wins | a first, instruction i) = s_a - s_b + nontransitivity * sin(t_ib - t_ia) + position_bias
                                                 + noise * eps_iab
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.config import ConfigError, check_range

__all__ = [
    "BatchedJudge",
    "CachedJudge",
    "Judge",
    "SimulatedJudge",
    "StringJudgeAdapter",
    "make_simulated_judge",
]


@runtime_checkable
class Judge(Protocol):
    """String protocol of a pairwise judge (e.g. an LLM judge)."""

    def judge(self, instruction: str, response_a: str, response_b: str) -> float:
        """p(``response_a`` is better), ``response_a`` shown first; a float in [0, 1] (1 / 0.5 / 0 when hard)."""
        ...


class BatchedJudge(Protocol):
    """Index-array form of a pairwise judge."""

    def __call__(self, instruction: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """``[B]`` p(model ``first`` beats model ``second`` on ``instruction``), ``first`` shown first."""
        ...


class StringJudgeAdapter:
    """A :class:`BatchedJudge` over indices that asks a string :class:`Judge` one comparison at a time.

    ``instructions[i]`` is the text of instruction ``i``; ``responses[m][i]`` is model ``m``'s response to it.
    """

    def __init__(self, judge: Judge, instructions: Sequence[str], responses: Sequence[Sequence[str]]):
        if not isinstance(judge, Judge):
            raise ConfigError(
                "judge", type(judge).__name__, "an object with a judge(instruction, a, b) method"
            )
        for m, row in enumerate(responses):
            if len(row) != len(instructions):
                raise ConfigError(
                    f"responses[{m}]", f"{len(row)} responses", f"{len(instructions)} responses"
                )
        self.judge, self.instructions, self.responses = (
            judge,
            list(instructions),
            [list(r) for r in responses],
        )

    def __call__(self, instruction: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        out = [
            float(self.judge.judge(self.instructions[i], self.responses[a][i], self.responses[b][i]))
            for i, a, b in zip(
                np.asarray(instruction).tolist(),
                np.asarray(first).tolist(),
                np.asarray(second).tolist(),
                strict=True,
            )
        ]
        return np.asarray(out, dtype=np.float64)


class CachedJudge:
    """Memoising wrapper of a :class:`BatchedJudge` (or any callable with its signature).

    The cache key is ``(instruction, a, b, order)`` with ``a = min(first, second)``, ``b = max(...)`` and
    ``order = 0`` when ``a`` was shown first, so the two presentation orders are distinct entries. Counters:
    ``num_requests`` (comparisons asked for), ``num_calls`` (comparisons that reached the wrapped judge, i.e.
    distinct cache misses; the wrapped judge is called once per batch with all of them), ``num_hits``.
    """

    def __init__(self, judge: BatchedJudge | Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]):
        self.judge = judge
        self.cache: dict[tuple[int, int, int, int], float] = {}
        self.num_requests = 0
        self.num_calls = 0

    @property
    def num_hits(self) -> int:
        return self.num_requests - self.num_calls

    @staticmethod
    def key(instruction: int, first: int, second: int) -> tuple[int, int, int, int]:
        return (instruction, min(first, second), max(first, second), int(first > second))

    def __call__(self, instruction: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """``[B]`` p(first wins), from the cache where possible. Shapes broadcast like the wrapped judge's."""
        ins = np.atleast_1d(np.asarray(instruction, dtype=np.int64))
        fst = np.atleast_1d(np.asarray(first, dtype=np.int64))
        snd = np.atleast_1d(np.asarray(second, dtype=np.int64))
        ins, fst, snd = np.broadcast_arrays(ins, fst, snd)
        keys = [self.key(*t) for t in zip(ins.tolist(), fst.tolist(), snd.tolist(), strict=True)]
        self.num_requests += len(keys)
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            m = np.asarray(missing, dtype=np.int64).reshape(-1, 4)
            mf = np.where(m[:, 3] == 0, m[:, 1], m[:, 2])
            ms = np.where(m[:, 3] == 0, m[:, 2], m[:, 1])
            probs = np.asarray(self.judge(m[:, 0], mf, ms), dtype=np.float64).reshape(-1)
            if probs.shape[0] != len(missing):
                raise ConfigError(
                    "judge", f"{probs.shape[0]} outputs", f"{len(missing)} (one per comparison)"
                )
            bad = np.flatnonzero(~((probs >= 0.0) & (probs <= 1.0)))
            if bad.size:
                raise ConfigError(
                    f"judge output for {missing[bad[0]]}", float(probs[bad[0]]), "numbers in [0, 1]"
                )
            self.cache.update(zip(missing, probs.tolist(), strict=True))
            self.num_calls += len(missing)
        return np.asarray([self.cache[k] for k in keys], dtype=np.float64)

    def clear(self) -> None:
        """Empty the cache and reset the counters."""
        self.cache.clear()
        self.num_requests = self.num_calls = 0


_RESPONSE = re.compile(r"^model_(\d+)/instr_(\d+)$")
_INSTRUCTION = re.compile(r"^instr_(\d+)$")


class SimulatedJudge(NamedTuple):
    """A simulated pairwise judge (module docstring); build with :func:`make_simulated_judge`.

    - ``skill``: ``[n]`` latent skills; the ground-truth ranking is :meth:`true_ranking`.
    - ``logits``: ``[I, n, n]`` float32, ``logits[i, a, b]`` the position-free logit that ``a`` beats ``b`` when
      ``a`` is shown first (skill difference + non-transitive term + that order's noise).
    - ``position_bias``: logit added in favour of the first-shown response.
    - ``hard``: return verdicts 1 / 0.5 / 0 instead of probabilities.
    """

    skill: np.ndarray
    logits: np.ndarray
    position_bias: float
    hard: bool

    @property
    def num_models(self) -> int:
        return int(self.skill.shape[0])

    @property
    def num_instructions(self) -> int:
        return int(self.logits.shape[0])

    def __call__(self, instruction: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """:class:`BatchedJudge`: ``[B]`` p(``first`` beats ``second``), ``first`` shown first."""
        logit = (
            self.logits[np.asarray(instruction), np.asarray(first), np.asarray(second)] + self.position_bias
        )
        logit = np.asarray(logit, dtype=np.float64)
        if self.hard:
            return 0.5 + 0.5 * np.sign(logit)
        return 1.0 / (1.0 + np.exp(-logit))

    def judge(self, instruction: str, response_a: str, response_b: str) -> float:
        """:class:`Judge` on the strings of :meth:`instruction_text` / :meth:`response_text`
        (``"instr_7"``, ``"model_3/instr_7"``)."""
        mi = _INSTRUCTION.match(instruction)
        ma, mb = _RESPONSE.match(response_a), _RESPONSE.match(response_b)
        for name, value, match in (
            ("instruction", instruction, mi),
            ("response_a", response_a, ma),
            ("response_b", response_b, mb),
        ):
            if match is None:
                raise ConfigError(name, value, "instr_<i> / model_<m>/instr_<i> strings of SimulatedJudge")
        i = int(mi.group(1))  # type: ignore[union-attr]
        if int(ma.group(2)) != i or int(mb.group(2)) != i:  # type: ignore[union-attr]
            raise ConfigError("responses", (response_a, response_b), f"responses to {instruction}")
        a, b = int(ma.group(1)), int(mb.group(1))  # type: ignore[union-attr]
        return float(self(np.asarray([i]), np.asarray([a]), np.asarray([b]))[0])

    @staticmethod
    def instruction_text(instruction: int) -> str:
        return f"instr_{instruction}"

    @staticmethod
    def response_text(model: int, instruction: int) -> str:
        return f"model_{model}/instr_{instruction}"

    def string_tables(self) -> tuple[list[str], list[list[str]]]:
        """``(instructions, responses)`` for :class:`StringJudgeAdapter` (``responses[m][i]``)."""
        instructions = [self.instruction_text(i) for i in range(self.num_instructions)]
        responses = [
            [self.response_text(m, i) for i in range(self.num_instructions)] for m in range(self.num_models)
        ]
        return instructions, responses

    def true_ranking(self) -> np.ndarray:
        """``[n]`` model indices by latent skill, best first."""
        return np.argsort(-self.skill, kind="stable")

    def preference_tensor(self, *, debias: bool = True) -> np.ndarray:
        """``[I, n, n]`` exact preferences this judge gives in a full round robin (NaN on the diagonal): with
        ``debias`` the mean of both presentation orders (:func:`~jaxsafety.judges.metrics.debiased_preference`),
        else with the row model shown first."""
        num_i, n = self.logits.shape[0], self.logits.shape[1]
        ins, a, b = np.meshgrid(np.arange(num_i), np.arange(n), np.arange(n), indexing="ij")
        p_first = self(ins, a, b)
        prefs = 0.5 * (p_first + 1.0 - np.swapaxes(p_first, 1, 2)) if debias else p_first
        prefs[:, np.arange(n), np.arange(n)] = np.nan
        return prefs


@functools.partial(jax.jit, static_argnames=("num_models", "num_instructions"))
def _simulated_logits(
    key: jax.Array,
    skill: jax.Array,
    style_angle: jax.Array,
    given: jax.Array,
    skill_scale: jax.Array,
    nontransitivity: jax.Array,
    style_jitter: jax.Array,
    noise: jax.Array,
    *,
    num_models: int,
    num_instructions: int,
) -> tuple[jax.Array, jax.Array]:
    """``(skill [n], logits [I, n, n])`` of :class:`SimulatedJudge` (module docstring). ``skill`` / ``style_angle``
    are used where ``given`` ``[2]`` is True and drawn otherwise (a traced switch, so building a judge compiles
    once per shape whichever are given)."""
    n = num_models
    k_skill, k_angle, k_jitter, k_noise = jax.random.split(key, 4)
    skill = jnp.where(given[0], skill, skill_scale * jax.random.normal(k_skill, (n,)))
    style_angle = jnp.where(given[1], style_angle, jax.random.uniform(k_angle, (n,), maxval=2 * jnp.pi))
    angle = style_angle[None, :] + style_jitter * jax.random.normal(k_jitter, (num_instructions, n))
    # v_a x v_b = cos t_a sin t_b - sin t_a cos t_b = sin(t_b - t_a): antisymmetric, a pure cycle for three
    # styles 120 degrees apart (disc game).
    disc = jnp.sin(angle[:, None, :] - angle[:, :, None])
    eps = jax.random.normal(k_noise, (num_instructions, n, n))
    logits = (skill[:, None] - skill[None, :])[None] + nontransitivity * disc + noise * eps
    return skill, logits


def make_simulated_judge(
    key: jax.Array,
    num_models: int,
    num_instructions: int,
    *,
    nontransitivity: float = 0.0,
    skill_scale: float = 1.0,
    style_jitter: float = 0.3,
    position_bias: float = 0.0,
    noise: float = 0.0,
    hard: bool = False,
    skill: Sequence[float] | np.ndarray | None = None,
    style_angle: Sequence[float] | np.ndarray | None = None,
) -> SimulatedJudge:
    """A :class:`SimulatedJudge` over ``num_models`` models and ``num_instructions`` instructions.

    ``skill`` defaults to ``skill_scale * N(0, 1)`` draws, ``style_angle`` (radians) to uniform draws on the
    circle; both from ``key``, as are the per-instruction style jitter (``style_jitter`` radians, Gaussian) and the
    logit noise (``noise`` standard deviation). ``nontransitivity`` scales the disc-game term: 0 is a transitive
    Bradley-Terry judge (plus noise), values well above the skill spread are mostly rock-paper-scissors.
    """
    check_range("num_models", num_models, ge=2, integer=True)
    check_range("num_instructions", num_instructions, ge=1, integer=True)
    for name, value in (
        ("nontransitivity", nontransitivity),
        ("skill_scale", skill_scale),
        ("style_jitter", style_jitter),
        ("noise", noise),
    ):
        check_range(name, float(value), ge=0.0)
    check_range("position_bias", float(position_bias))
    skill_arr = angle_arr = jnp.zeros((num_models,), dtype=jnp.float32)
    if skill is not None:
        skill_arr = jnp.asarray(skill, dtype=jnp.float32)
        if skill_arr.shape != (num_models,):
            raise ConfigError("skill", f"shape {skill_arr.shape}", f"shape ({num_models},)")
    if style_angle is not None:
        angle_arr = jnp.asarray(style_angle, dtype=jnp.float32)
        if angle_arr.shape != (num_models,):
            raise ConfigError("style_angle", f"shape {angle_arr.shape}", f"shape ({num_models},)")
    skill_arr, logits = _simulated_logits(
        key,
        skill_arr,
        angle_arr,
        jnp.asarray([skill is not None, style_angle is not None]),
        jnp.float32(skill_scale),
        jnp.float32(nontransitivity),
        jnp.float32(style_jitter),
        jnp.float32(noise),
        num_models=num_models,
        num_instructions=num_instructions,
    )
    return SimulatedJudge(np.asarray(skill_arr), np.asarray(logits), float(position_bias), bool(hard))
