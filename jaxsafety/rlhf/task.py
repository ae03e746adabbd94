"""The synthetic instruction task of the gold/proxy RLHF study: arithmetic prompts and a programmatic GOLD reward.

Choice (issue 18, item 3): the gold reward is a *programmatic scorer*, not a fixed gold reward model. It plays the
role of Gao et al.'s 6B gold RM (and of Wolf et al.'s 7B AlpacaFarm gold RM): it labels preference pairs sampled
from the policy, and it measures the policy's true quality, while proxy reward models (the zoo's ``ScoreModel``)
learn it from noisy pairwise labels only. Why programmatic: it is exact, free, identical on every machine, and
computable in jitted JAX on token arrays, so gold scoring never bottlenecks a sweep.

The task (:mod:`jaxsafety.data.arithmetic`, character tokens over its ``ALPHABET``): the prompt is ``"12 + 7 ="``,
the intended response ``" 19."`` (a space, the answer's decimal digits, EOS ``"."``). Gold reward of a response
(:func:`gold_reward`, weights in :class:`GoldConfig`)::

    gold = w_exact   * [response is exactly " <answer>."]
         + w_partial * (answer digits right at their position) / (answer digits)
         + w_close   * [well-formed] * (1 - min(|x - answer| / (answer + 1), 1))    (x: the number answered)
         - w_format  * [not " <digits>." with EOS]
         - w_length  * min(|digits in response - answer digits|, length_cap)

The partial-credit and closeness terms make it smooth enough to be learned partially (a proxy that cannot do the
arithmetic still learns that the first digit and the magnitude are usually right, that format and length matter;
the closeness term also makes ties between two samples rare, as with a gold reward model), and the features a small proxy
latches onto - response length, format, the magnitude of the leading digit given the operands - are *correlated*
with gold on the SFT policy's samples but not the same thing, which is what over-optimisation exploits.

Also here: the SFT data (prompt/response rows for :func:`jaxsafety.train.finetune`), Bradley-Terry label noise
(:func:`label_preferences`) and preference-pair collection from the policy's samples (:func:`collect_preferences`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.config import check, check_range, concrete_or_none
from jaxsafety.data.arithmetic import (
    ALPHABET,
    TERMINATOR,
    ArithmeticProblems,
    arithmetic_problems,
    check_ops,
)
from jaxsafety.models import CharTokenizer, left_pad
from jaxsafety.train import SFTData, sft_rows

__all__ = [
    "MAX_ANSWER_DIGITS",
    "GoldConfig",
    "GoldTerms",
    "PreferencePairs",
    "RLHFTask",
    "RLHFTaskConfig",
    "answers_from_prompts",
    "collect_preferences",
    "concat_pairs",
    "gold_reward",
    "gold_reward_fn",
    "gold_terms",
    "label_preferences",
    "pair_sequences",
    "rlhf_task",
    "sft_data",
    "task_tokenizer",
    "with_prompts",
]


def task_tokenizer() -> CharTokenizer:
    """The task's tokenizer: characters of the arithmetic ``ALPHABET`` (pad 0, BOS 1), EOS ``"."``."""
    return CharTokenizer(ALPHABET, eos=TERMINATOR)


_TOK = task_tokenizer()
DIGIT0 = _TOK.token_id("0")  # digits are consecutive ids DIGIT0 .. DIGIT0 + 9
SPACE = _TOK.token_id(" ")
EOS = int(_TOK.eos_token_id)
PAD = _TOK.pad_token_id


@dataclasses.dataclass(frozen=True)
class GoldConfig:
    """Weights of the gold reward (module docstring for the formula). All >= 0; ``length_cap`` >= 1 digits."""

    exact: float = 1.0
    partial: float = 1.0
    closeness: float = 1.0
    format: float = 0.5
    length: float = 0.25
    length_cap: int = 3

    def __post_init__(self) -> None:
        for name in ("exact", "partial", "closeness", "format", "length"):
            check_range(name, getattr(self, name), ge=0)
        check_range("length_cap", self.length_cap, ge=1, integer=True)


@dataclasses.dataclass(frozen=True)
class RLHFTaskConfig:
    """The prompts: ``num_prompts`` distinct arithmetic problems (operands in ``[0, max_operand]``, operators
    ``ops``), drawn with ``seed``. ``response_len``: the generation budget (``max_new_tokens``) the gold reward is
    defined over; must hold the longest intended response (space + digits + EOS)."""

    num_prompts: int = 512
    max_operand: int = 30
    ops: tuple[str, ...] = ("+", "-", "*")
    seed: int = 0
    response_len: int = 8
    gold: GoldConfig = GoldConfig()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", check_ops(self.ops))
        check_range("num_prompts", self.num_prompts, ge=2, integer=True)
        check_range("max_operand", self.max_operand, ge=1, le=9999, integer=True)
        check_range("seed", self.seed, ge=0, integer=True)
        longest = len(str(max(self.max_operand**2 if "*" in self.ops else 2 * self.max_operand, 1))) + 2
        check_range("response_len", self.response_len, ge=longest, le=64, integer=True)
        check(isinstance(self.gold, GoldConfig), "gold", self.gold, "a GoldConfig")


class RLHFTask(NamedTuple):
    """``P`` prompts of the task with what the gold reward needs.

    ``prompt_tokens`` / ``prompt_mask`` int32 ``[P, Tp]``: ``[BOS] "a op b ="``, LEFT-padded (for ``generate``);
    ``answer_digits`` int32 ``[P, D]``: the answer's digit token ids, right-padded with 0; ``answer_len`` int32
    ``[P]``: its number of digits; ``problems``: the :class:`ArithmeticProblems` rows (strings for SFT)."""

    prompt_tokens: np.ndarray
    prompt_mask: np.ndarray
    answer_digits: np.ndarray
    answer_len: np.ndarray
    problems: ArithmeticProblems

    @property
    def num_prompts(self) -> int:
        return int(self.prompt_tokens.shape[0])


def rlhf_task(config: RLHFTaskConfig = RLHFTaskConfig()) -> RLHFTask:
    """The task's prompts and answers, deterministic in ``config.seed`` (distinct problems, see
    :func:`jaxsafety.data.arithmetic_problems`)."""
    problems = arithmetic_problems(
        config.num_prompts, seed=config.seed, max_operand=config.max_operand, ops=config.ops
    )
    prompts = [_TOK.encode(p, bos=True) for p in problems.prompts]
    tokens, mask = (np.asarray(x, np.int32) for x in left_pad(prompts, PAD))
    answers = [str(int(a)) for a in problems.answers.tolist()]
    width = max(len(a) for a in answers)
    digits = np.zeros((len(answers), width), np.int32)
    for i, a in enumerate(answers):
        digits[i, : len(a)] = [DIGIT0 + int(c) for c in a]
    lengths = np.asarray([len(a) for a in answers], np.int32)
    return RLHFTask(tokens, mask, digits, lengths, problems)


def sft_data(
    task: RLHFTask, index: Sequence[int] | np.ndarray | None = None, width: int | None = None
) -> SFTData:
    """Instruction/response rows ``[BOS] "a op b =" " answer" [EOS]`` for :func:`jaxsafety.train.finetune` (the
    SFT policy), of the prompts ``index`` (None: all). The loss mask covers the response and its EOS."""
    problems = task.problems if index is None else task.problems.take(np.asarray(index))
    responses = [c.removesuffix(TERMINATOR) for c in problems.completions]
    return sft_rows(_TOK, problems.prompts, responses, width=width, eos=True)


class GoldTerms(NamedTuple):
    """The parts of the gold reward, each ``[B]``: ``exact`` / ``format_ok`` bool, ``partial`` float32 in [0, 1]
    (fraction of the answer's digits right at their position), ``closeness`` float32 in [0, 1] (``1 - min(|x -
    answer| / (answer + 1), 1)`` for a well-formed answer ``x``, else 0), ``length_gap`` int32 ``|digits - answer digits|``,
    ``reward`` float32 (the weighted sum, :func:`gold_reward`)."""

    exact: jax.Array
    format_ok: jax.Array
    partial: jax.Array
    closeness: jax.Array
    length_gap: jax.Array
    reward: jax.Array


def _digits_value(tokens: jax.Array, sel: jax.Array) -> jax.Array:
    """float32 ``[B]``: the decimal number of the selected digit tokens of each row (in order)."""
    place = jnp.flip(jnp.cumsum(jnp.flip(sel, -1), -1), -1) - sel  # selected digits to the right
    digit = jnp.where(sel, tokens - DIGIT0, 0).astype(jnp.float32)
    return jnp.sum(digit * jnp.where(sel, 10.0 ** jnp.minimum(place, 30).astype(jnp.float32), 0.0), axis=-1)


@functools.partial(jax.jit, static_argnames="config")
def gold_terms(
    tokens: jax.Array,
    mask: jax.Array,
    answer_digits: jax.Array,
    answer_len: jax.Array,
    config: GoldConfig = GoldConfig(),
) -> GoldTerms:
    """Gold reward and its parts for responses ``tokens`` int ``[B, L]`` with ``mask`` ``[B, L]`` (1 = a real
    generated token up to and including EOS: ``generate``'s ``tokens`` and ``mask``), against the rows'
    ``answer_digits`` int ``[B, D]`` (digit token ids, right-padded) and ``answer_len`` int ``[B]``.

    Parsing: the body is everything before the first EOS (all real tokens when there is none). ``format_ok``:
    EOS present, body = a space then >= 1 digits. ``partial``: answer digit ``j`` right at body position ``1 + j``
    (the body must start with the space; positions past the body count as wrong). ``exact``: ``format_ok``, as
    many digits as the answer, all right. ``length_gap``: digits in the body vs the answer's."""
    tokens = jnp.asarray(tokens, jnp.int32)
    real = jnp.asarray(mask) > 0
    _, width = tokens.shape
    pos = jnp.arange(width)
    is_eos = (tokens == EOS) & real
    has_eos = jnp.any(is_eos, axis=-1)
    body_len = jnp.where(has_eos, jnp.argmax(is_eos, axis=-1), jnp.sum(real, axis=-1))
    in_body = (pos[None, :] < body_len[:, None]) & real
    is_digit = (tokens >= DIGIT0) & (tokens <= DIGIT0 + 9)
    lead_space = (tokens[:, 0] == SPACE) & (body_len >= 1)
    rest_digits = jnp.all(jnp.where(in_body & (pos[None, :] >= 1), is_digit, True), axis=-1)
    n_digits = jnp.sum(in_body & is_digit, axis=-1)
    format_ok = has_eos & lead_space & rest_digits & (body_len >= 2)

    answer_digits = jnp.asarray(answer_digits, jnp.int32)
    answer_len = jnp.asarray(answer_len, jnp.int32)
    d = answer_digits.shape[1]
    # response position 1 + j against answer digit j (pad the response so every answer digit has a slot)
    padded = jnp.pad(tokens, ((0, 0), (0, max(0, 1 + d - width))), constant_values=PAD)[:, 1 : 1 + d]
    j = jnp.arange(d)[None, :]
    hit = (
        (padded == answer_digits)
        & (j < answer_len[:, None])
        & (1 + j < body_len[:, None])
        & lead_space[:, None]
    )
    n_hit = jnp.sum(hit, axis=-1)
    partial = n_hit / jnp.maximum(answer_len, 1)
    exact = format_ok & (n_digits == answer_len) & (n_hit == answer_len)
    gap = jnp.abs(n_digits - answer_len)
    # the numbers answered and asked, in float32 (relative error only; > 30 digits saturate the term at 0)
    value = _digits_value(tokens, in_body & is_digit & (pos[None, :] >= 1))
    target = _digits_value(answer_digits, j < answer_len[:, None])
    close = jnp.where(format_ok, 1.0 - jnp.minimum(jnp.abs(value - target) / (target + 1.0), 1.0), 0.0)
    reward = (
        config.exact * exact
        + config.partial * partial
        + config.closeness * close
        - config.format * (~format_ok)
        - config.length * jnp.minimum(gap, config.length_cap)
    ).astype(jnp.float32)
    return GoldTerms(
        exact,
        format_ok,
        partial.astype(jnp.float32),
        close.astype(jnp.float32),
        gap.astype(jnp.int32),
        reward,
    )


def gold_reward(
    tokens: jax.Array,
    mask: jax.Array,
    answer_digits: jax.Array,
    answer_len: jax.Array,
    config: GoldConfig = GoldConfig(),
) -> jax.Array:
    """The gold reward ``[B]`` float32 of responses (:func:`gold_terms` for shapes and the parsing rules)."""
    return gold_terms(tokens, mask, answer_digits, answer_len, config).reward


MAX_ANSWER_DIGITS = 8  # answers < 10^8: operands <= 9999 (RLHFTaskConfig.max_operand), int32-exact


@jax.jit
def answers_from_prompts(prompt: jax.Array, prompt_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The answers of prompts ``[BOS] "a op b ="`` read back from their tokens, in JAX: ``(answer_digits int32
    [B, MAX_ANSWER_DIGITS], answer_len int32 [B])`` as in :class:`RLHFTask`. ``prompt`` / ``prompt_mask``
    ``[B, P]``, any padding. Lets the gold reward run where only the prompt tokens travel with a response (the
    ``reward_fn`` of :func:`jaxsafety.rl.lm_ppo.make_lm_ppo` and ``best_of_n``). Operands must be < 10^4."""
    tokens = jnp.asarray(prompt, jnp.int32)
    real = jnp.asarray(prompt_mask) > 0
    is_digit = real & (tokens >= DIGIT0) & (tokens <= DIGIT0 + 9)
    ops = jnp.asarray([_TOK.token_id(o) for o in ("+", "-", "*")], jnp.int32)
    is_op = real[..., None] & (tokens[..., None] == ops)  # [B, P, 3]
    op_pos = jnp.argmax(jnp.any(is_op, -1), axis=-1)
    op = jnp.argmax(jnp.any(is_op, 1), axis=-1)  # 0 +, 1 -, 2 *
    pos = jnp.arange(tokens.shape[1])[None, :]

    def number(sel):  # the decimal number of the selected digit tokens (Horner by place value)
        place = jnp.flip(jnp.cumsum(jnp.flip(sel, -1), -1), -1) - sel  # selected digits to the right
        return jnp.sum(jnp.where(sel, (tokens - DIGIT0) * 10 ** jnp.minimum(place, 9), 0), axis=-1)

    a = number(is_digit & (pos < op_pos[:, None]))
    b = number(is_digit & (pos > op_pos[:, None]))
    ans = jnp.select([op == 0, op == 1], [a + b, a - b], a * b)
    length = 1 + jnp.sum(ans[:, None] >= 10 ** jnp.arange(1, MAX_ANSWER_DIGITS), axis=-1)
    j = jnp.arange(MAX_ANSWER_DIGITS)[None, :]
    digit = (ans[:, None] // 10 ** jnp.maximum(length[:, None] - 1 - j, 0)) % 10
    return jnp.where(j < length[:, None], DIGIT0 + digit, PAD).astype(jnp.int32), length.astype(jnp.int32)


def gold_reward_fn(
    reward_params: Any,
    prompt: jax.Array,
    prompt_mask: jax.Array,
    response: jax.Array,
    response_mask: jax.Array,
    config: GoldConfig = GoldConfig(),
) -> jax.Array:
    """The gold reward with the ``reward_fn`` signature of :func:`jaxsafety.rl.lm_ppo.make_lm_ppo` and
    ``best_of_n``: ``[R]`` for prompts ``[R, P]`` and responses ``[R, N]`` (answers read from the prompt tokens
    by :func:`answers_from_prompts`; ``reward_params`` ignored). Hashable with other weights via
    ``functools.partial(gold_reward_fn, config=GoldConfig(...))``."""
    del reward_params
    digits, length = answers_from_prompts(prompt, prompt_mask)
    return gold_reward(response, response_mask, digits, length, config)


def label_preferences(
    gold_r_a: jax.Array, gold_r_b: jax.Array, key: jax.Array, temperature: float | jax.Array = 1.0
) -> jax.Array:
    """Noisy Bradley-Terry labels: bool ``[N]``, True = response ``a`` preferred, drawn with
    ``P(a > b) = sigmoid((r_a - r_b) / temperature)`` (Gao et al.'s synthetic labeller with label noise;
    ``temperature = 0``: noiseless, the higher gold wins and a tie is a fair coin). ``gold_r_a``, ``gold_r_b``
    ``[N]``. Raises ``ConfigError`` for a negative (concrete) temperature."""
    t = concrete_or_none(temperature)
    if t is not None:
        check(bool(np.all(t >= 0)), "temperature", float(t) if t.ndim == 0 else t, "numbers >= 0")
    diff = jnp.asarray(gold_r_a, jnp.float32) - jnp.asarray(gold_r_b, jnp.float32)
    temperature = jnp.asarray(temperature, jnp.float32)
    noisy = jax.nn.sigmoid(diff / jnp.where(temperature > 0, temperature, 1.0))
    p = jnp.where(temperature > 0, noisy, jnp.where(diff > 0, 1.0, jnp.where(diff < 0, 0.0, 0.5)))
    return jax.random.uniform(key, diff.shape) < p


class PreferencePairs(NamedTuple):
    """``N`` labelled preference pairs of responses (the RM's training data).

    ``prompt_index`` int32 ``[N]`` (row of :class:`RLHFTask`); ``chosen`` / ``rejected`` int32 ``[N, L]``
    response tokens with ``chosen_mask`` / ``rejected_mask`` ``[N, L]``; ``gold_chosen`` / ``gold_rejected``
    float32 ``[N]`` (for label accuracy: the labeller is noisy); ``round`` int32 ``[N]`` (the iteration that
    collected the pair)."""

    prompt_index: np.ndarray
    chosen: np.ndarray
    chosen_mask: np.ndarray
    rejected: np.ndarray
    rejected_mask: np.ndarray
    gold_chosen: np.ndarray
    gold_rejected: np.ndarray
    round: np.ndarray

    @property
    def num_pairs(self) -> int:
        return int(self.prompt_index.shape[0])

    def take(self, index: np.ndarray | Sequence[int]) -> PreferencePairs:
        """The pairs at ``index`` (numpy fancy indexing on every field)."""
        idx = np.asarray(index)
        return PreferencePairs(*(np.asarray(x)[idx] for x in self))


def collect_preferences(
    key: jax.Array,
    tokens: jax.Array,
    mask: jax.Array,
    gold: jax.Array,
    prompt_index: jax.Array,
    *,
    temperature: float = 1.0,
    round_index: int = 0,
) -> PreferencePairs:
    """Label pairs of policy samples with the noisy gold labeller (:func:`label_preferences`).

    ``tokens`` / ``mask`` ``[2P, L]`` and ``gold`` ``[2P]``: two samples per prompt, prompt-major (rows ``2i`` and
    ``2i + 1`` answer ``prompt_index[i]``: ``generate(..., num_samples=2)`` order); ``prompt_index`` ``[P]``.
    Returns ``P`` pairs, the preferred sample as ``chosen``, tagged with ``round_index``."""
    tokens, mask, gold = jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(gold, jnp.float32)
    if (
        tokens.shape[0] % 2
        or tokens.shape[0] != 2 * np.shape(prompt_index)[0]
        or gold.shape != tokens.shape[:1]
    ):
        raise ValueError(
            f"tokens {tokens.shape}, gold {gold.shape} and prompt_index {np.shape(prompt_index)} must be [2P, L], "
            "[2P] and [P] (two samples per prompt, prompt-major)"
        )
    check_range("round_index", round_index, ge=0, integer=True)
    ta, tb, ma, mb = tokens[0::2], tokens[1::2], mask[0::2], mask[1::2]
    ga, gb = gold[0::2], gold[1::2]
    a_wins = label_preferences(ga, gb, key, temperature)
    pick = lambda x, y: jnp.where(a_wins.reshape((-1,) + (1,) * (x.ndim - 1)), x, y)  # noqa: E731
    n = ta.shape[0]
    return PreferencePairs(
        np.asarray(prompt_index, np.int32),
        np.asarray(pick(ta, tb), np.int32),
        np.asarray(pick(ma, mb), np.int32),
        np.asarray(pick(tb, ta), np.int32),
        np.asarray(pick(mb, ma), np.int32),
        np.asarray(pick(ga, gb), np.float32),
        np.asarray(pick(gb, ga), np.float32),
        np.full((n,), round_index, np.int32),
    )


def concat_pairs(rounds: Sequence[PreferencePairs]) -> PreferencePairs:
    """All pairs of ``rounds`` in order (their response widths must agree)."""
    check(len(rounds) >= 1, "rounds", len(rounds), "at least one round of pairs")
    return PreferencePairs(*(np.concatenate(parts) for parts in zip(*rounds, strict=True)))


def with_prompts(task: RLHFTask, prompt_index: jax.Array, tokens: jax.Array, mask: jax.Array):
    """``(tokens, mask)`` int32 ``[N, Tp + L]``: each response ``[N, L]`` after its left-padded prompt (row
    ``prompt_index[n]`` of the task) - the full sequence a reward model or ``sequence_logprobs`` scores (any
    padding is fine for them: predictions come from the previous real token)."""
    idx = np.asarray(prompt_index)
    full = jnp.concatenate([jnp.asarray(task.prompt_tokens)[idx], jnp.asarray(tokens, jnp.int32)], axis=1)
    full_mask = jnp.concatenate([jnp.asarray(task.prompt_mask)[idx], jnp.asarray(mask, jnp.int32)], axis=1)
    return full, full_mask


def pair_sequences(
    task: RLHFTask, pairs: PreferencePairs
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(chosen, chosen_mask, rejected, rejected_mask)`` int32 ``[N, Tp + L]``: the pairs' responses after their
    prompts (:func:`with_prompts`), the layout of :class:`jaxsafety.rl.reward.PreferenceBatch` (pass them as its
    first four fields)."""
    chosen, chosen_mask = with_prompts(task, pairs.prompt_index, pairs.chosen, pairs.chosen_mask)
    rejected, rejected_mask = with_prompts(task, pairs.prompt_index, pairs.rejected, pairs.rejected_mask)
    return chosen, chosen_mask, rejected, rejected_mask
