"""Repeated sampling from a small trained LM on arithmetic: the measured per-problem successes that pass@k fits need.

The inference-compute study (Schaeffer et al. 2025, arXiv 2502.17578) fits a distribution of per-problem
single-attempt success probabilities ``p_i`` to success counts ``c_i`` out of ``n`` attempts. This module makes
such counts from a real model of the zoo, end to end and seeded:

1. :func:`~jaxsafety.data.arithmetic.arithmetic_problems`: a set of distinct problems ``"12 + 7 ="`` with
   integer answers (the task lives in :mod:`jaxsafety.data.arithmetic`);
2. :func:`~jaxsafety.train.pretrained.arithmetic_lm`: a tiny GPT-2 / Llama trained (partly: ``steps`` is the
   knob) on equation lines ``"12 + 7 = 19."`` with character tokens, through the trained-model cache (a second
   run loads it). It trains on the same problem distribution the problems are drawn from, so the problems are
   (mostly) seen ones: ``p_i`` measures how well each was learned, which is what spreads it between 0 and 1;
3. :func:`sample_attempts` / :func:`sample_success_counts`: ``n`` sampled completions per problem with the zoo's
   KV-cache :func:`~jaxsafety.models.generate.generate` (each prompt prefilled once for its ``n`` samples),
   scored by exact match;
4. :func:`exact_success_probability`: the true ``p_i`` of that sampler, by teacher forcing.

Success is an exact string match of the completion with ``" <answer>."`` (the terminator ``"."`` included, nothing
generated after it). Character tokenization is unique, so that string is one token sequence and its probability
under the sampler (temperature ``T``, optional top-k / top-p) is the product of the per-token probabilities of
:func:`~jaxsafety.models.generate.sampling_logits` along it: :func:`exact_success_probability` computes exactly
the success probability that :func:`sample_attempts` estimates (the tests check one against the other).

Layering note: the rest of :mod:`jaxsafety.scaling` is pure statistics and needs no model; this module is the one
place where it meets the model zoo, and it only *uses* ``models/`` and ``train/`` (nothing there depends on it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.config import check_range
from jaxsafety.data.arithmetic import ArithmeticProblems
from jaxsafety.models.generate import SamplingConfig, generate, sampling_logits, token_logprobs
from jaxsafety.models.tokenizer import CharTokenizer
from jaxsafety.models.transformer import CausalLM
from jaxsafety.train.finetune import sft_rows

__all__ = ["exact_success_probability", "sample_attempts", "sample_success_counts"]


def _completion_rows(tok: CharTokenizer, problems: ArithmeticProblems, width: int) -> np.ndarray:
    """Completion ids RIGHT-padded with -1 to ``width``: int32 ``[P, width]``."""
    tokens, mask = tok.encode_batch(problems.completions, bos=False, width=width)
    return np.where(mask > 0, tokens, -1).astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------
# sampling and exact success probabilities


def _sampling_config(temperature: float, top_k: int, top_p: float, max_new_tokens: int, tok: CharTokenizer):
    return SamplingConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def sample_attempts(
    model: CausalLM,
    tokenizer: CharTokenizer,
    problems: ArithmeticProblems,
    *,
    num_attempts: int,
    key: jax.Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    max_new_tokens: int | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Per-attempt successes ``[P, num_attempts]`` (bool): ``num_attempts`` independent completions per problem,
    each a success iff it is exactly ``" <answer>."``.

    Decoded by the zoo's jitted KV-cache :func:`~jaxsafety.models.generate.generate` with ``num_samples``: each
    prompt is prefilled once and its cache tiled to ``n = min(num_attempts, batch_size)`` samples, for
    ``max(1, batch_size // n)`` prompts per call (about ``batch_size`` rows); ``ceil(num_attempts / n)`` rounds
    of calls cover the attempts (fixed shapes: one compilation; the last group of prompts is padded by repeating
    a prompt, surplus samples of the last round are dropped). Call ``c`` samples with key
    ``jax.random.split(key, num_calls)[c]``: the result is deterministic in ``(key, batch_size)``. Decoding stops
    at the terminator ``"."``; ``max_new_tokens`` (None: the longest completion, which is all an exact match
    needs) must be at least that long (and prompt plus completion must fit the model's context: with the default
    GPT-2, whose positions are learned up to ``config.seq_len``, operands at most the training ``max_operand``).
    """
    check_range("num_attempts", num_attempts, ge=1, integer=True)
    check_range("batch_size", batch_size, ge=1, integer=True)
    num_problems = problems.num_problems
    check_range("num_problems", num_problems, ge=1, integer=True)
    longest = max(len(c) for c in problems.completions)
    if max_new_tokens is None:
        max_new_tokens = longest
    check_range("max_new_tokens", max_new_tokens, ge=longest, integer=True)
    config = _sampling_config(temperature, top_k, top_p, max_new_tokens, tokenizer)
    prompts, prompt_mask = tokenizer.encode_batch(problems.prompts, left=True)
    target = np.full((num_problems, max_new_tokens), -1, np.int32)
    target[:, :longest] = _completion_rows(tokenizer, problems, longest)
    n = min(num_attempts, batch_size)  # samples per prompt and call
    per_call = min(max(1, batch_size // n), num_problems)  # prompts per call
    groups = -(-num_problems // per_call)
    rounds = -(-num_attempts // n)
    keys = jax.random.split(key, groups * rounds)
    success = np.zeros((num_problems, rounds * n), bool)
    for g in range(groups):
        rows = np.arange(g * per_call, (g + 1) * per_call)
        problem = np.minimum(rows, num_problems - 1)  # padding rows repeat the last problem
        t = np.repeat(target[problem], n, axis=0)  # prompt-major, as generate's rows
        for r in range(rounds):
            out = generate(
                model, prompts[problem], prompt_mask[problem], keys[g * rounds + r], config, num_samples=n
            )
            # exact match: every completion token agrees (the terminator included); after the terminator generate
            # writes padding, which the -1 entries of the target ignore
            ok = np.all((np.asarray(out.tokens) == t) | (t < 0), axis=1).reshape(per_call, n)
            keep = rows < num_problems
            success[rows[keep], r * n : (r + 1) * n] = ok[keep]
    return success[:, :num_attempts]


def sample_success_counts(
    model: CausalLM,
    tokenizer: CharTokenizer,
    problems: ArithmeticProblems,
    *,
    num_attempts: int,
    key: jax.Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    max_new_tokens: int | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Successes per problem ``[P]`` (int64) out of ``num_attempts``: :func:`sample_attempts` summed over
    attempts (the ``c_i`` of :func:`~jaxsafety.scaling.fit.fit_distribution`, with ``n = num_attempts``)."""
    return sample_attempts(
        model,
        tokenizer,
        problems,
        num_attempts=num_attempts,
        key=key,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    ).sum(axis=1, dtype=np.int64)


@functools.partial(jax.jit, static_argnames=("graphdef", "config"))
def _completion_logprob_jit(graphdef, config: SamplingConfig, state, tokens, mask, completion):
    model = nnx.merge(graphdef, state)
    logits = model(tokens, mask).astype(jnp.float32)
    if config.greedy:  # the sampling distribution is a point mass on the argmax
        hit = jnp.argmax(logits, axis=-1) == jnp.roll(tokens, -1, axis=1)
        hit = jnp.roll(hit, 1, axis=1)  # hit[t]: token t is the argmax of the prediction made at t - 1
        lp = jnp.where(hit, 0.0, -jnp.inf)
    else:
        lp = token_logprobs(sampling_logits(logits, config), tokens, mask)
    return jnp.sum(jnp.where(completion.astype(jnp.bool_), lp, 0.0), axis=-1)


def exact_success_probability(
    model: CausalLM,
    tokenizer: CharTokenizer,
    problems: ArithmeticProblems,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 1024,
) -> np.ndarray:
    """The exact probability ``p_i`` ``[P]`` (float64) that one attempt of :func:`sample_attempts` with the same
    sampling settings succeeds: ``prod_t q(c_t | prompt, c_<t)`` over the completion tokens ``" <answer>."``,
    ``q`` the sampling distribution (``softmax(logits / T)`` after top-k / top-p,
    :func:`~jaxsafety.models.generate.sampling_logits`; a 0/1 argmax match for ``temperature = 0``), all in one
    teacher-forced forward per batch. Exact because the character tokenization of the answer is unique.
    """
    check_range("batch_size", batch_size, ge=1, integer=True)
    longest = max(len(c) for c in problems.completions)
    config = _sampling_config(temperature, top_k, top_p, longest, tokenizer)
    # [BOS] prompt completion, right-padded; loss_mask marks the completion tokens
    tokens, mask, completion = sft_rows(tokenizer, problems.prompts, problems.completions, eos=False)
    n = tokens.shape[0]
    batch_size = min(batch_size, n)
    graphdef, state = nnx.split(model)
    out = []
    for start in range(0, n, batch_size):
        rows = np.minimum(np.arange(start, start + batch_size), n - 1)  # fixed batch: one compilation
        lp = _completion_logprob_jit(graphdef, config, state, tokens[rows], mask[rows], completion[rows])
        out.append(np.asarray(lp, np.float64)[: n - start])
    return np.exp(np.concatenate(out))
