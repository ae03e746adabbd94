"""Repeated sampling from a small trained LM on arithmetic: the measured per-problem successes that pass@k fits need.

The inference-compute study (Schaeffer et al. 2025, arXiv 2502.17578) fits a distribution of per-problem
single-attempt success probabilities ``p_i`` to success counts ``c_i`` out of ``n`` attempts. This module makes
such counts from a real model of the zoo, end to end and seeded:

1. :func:`~jaxsafety.data.arithmetic.arithmetic_problems`: a set of distinct problems ``"12 + 7 ="`` with
   integer answers (the task lives in :mod:`jaxsafety.data.arithmetic`);
2. :func:`train_arithmetic_lm`: a tiny GPT-2 / Llama trained (partly: ``steps`` is the knob) on equation lines
   ``"12 + 7 = 19."`` with the character-level :func:`arithmetic_tokenizer`, in jitted ``lax.fori_loop`` chunks of the zoo's train
   step. It trains on the same problem distribution the problems are drawn from, so the problems are (mostly)
   seen ones: ``p_i`` measures how well each was learned, which is what spreads it between 0 and 1;
3. :func:`sample_attempts` / :func:`sample_success_counts`: ``n`` sampled completions per problem with the zoo's
   KV-cache :func:`~jaxsafety.models.generate.generate`, scored by exact match;
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

import dataclasses
import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxsafety.config import ConfigError, check_choice, check_range
from jaxsafety.data.arithmetic import (
    ALPHABET,
    OPS,
    TERMINATOR,
    ArithmeticProblems,
    all_arithmetic_problems,
    check_ops,
    evaluate,
)
from jaxsafety.models.generate import SamplingConfig, generate, sampling_logits, token_logprobs
from jaxsafety.models.gpt2 import GPT2, GPT2Config
from jaxsafety.models.llama import Llama, LlamaConfig
from jaxsafety.models.tokenizer import CharTokenizer
from jaxsafety.models.transformer import CausalLM
from jaxsafety.train.lm import make_lm_train_step
from jaxsafety.train.optim import OptimizerConfig, make_optimizer
from jaxsafety.train.progress import progress

__all__ = [
    "ArithmeticLM",
    "ArithmeticLMConfig",
    "arithmetic_tokenizer",
    "exact_success_probability",
    "sample_attempts",
    "sample_success_counts",
    "train_arithmetic_lm",
]


def arithmetic_tokenizer() -> CharTokenizer:
    """The character tokenizer of the arithmetic LMs: :data:`~jaxsafety.data.arithmetic.ALPHABET`, EOS the
    terminator ``"."``."""
    return CharTokenizer(ALPHABET, eos=TERMINATOR)


def _prompt_rows(tok: CharTokenizer, problems: ArithmeticProblems, width: int) -> np.ndarray:
    """``[BOS] + prompt``, LEFT-padded to ``width``: int32 ``[P, width]`` (mask: ``!= pad``)."""
    return tok.encode_batch(problems.prompts, width=width, left=True)[0]


def _completion_rows(tok: CharTokenizer, problems: ArithmeticProblems, width: int) -> np.ndarray:
    """Completion ids RIGHT-padded with -1 to ``width``: int32 ``[P, width]``."""
    tokens, mask = tok.encode_batch(problems.completions, bos=False, width=width)
    return np.where(mask > 0, tokens, -1).astype(np.int32)


def _equation_rows(tok: CharTokenizer, problems: ArithmeticProblems, width: int | None = None):
    """Teacher-forcing rows ``[BOS] + prompt + completion`` RIGHT-padded: ``tokens, mask, completion_mask``, each
    int32 ``[P, width]`` (``width`` None: the longest row)."""
    tokens, mask = tok.encode_batch(problems.equations, width=width)
    start = 1 + np.asarray([len(p) for p in problems.prompts])[:, None]  # BOS + prompt
    completion = (np.arange(tokens.shape[1])[None, :] >= start) & (mask > 0)
    return tokens, mask, completion.astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------
# training


@dataclasses.dataclass(frozen=True)
class ArithmeticLMConfig:
    """A tiny zoo LM trained on arithmetic equation lines ``"<a> <op> <b> = <answer>."`` (char tokens).

    Each training row is one equation ``[BOS] a op b = answer.`` right-padded; the loss is on the completion
    ``" answer."`` only (the operands are uniform noise, nothing to learn). Equations are drawn uniformly from the
    table :func:`~jaxsafety.data.arithmetic.all_arithmetic_problems` inside the jitted run: the problem
    distribution that :func:`~jaxsafety.data.arithmetic.arithmetic_problems` draws evaluation problems from.
    ``steps`` and ``max_operand`` set how well it learns: few steps / large operands leave many problems with
    success probabilities strictly between 0 and 1 and a tail near 0 (multiplication of large operands).
    ``d_ff=None``: 4 d_model (gpt2) or 8/3 d_model rounded up to a multiple of 8 (llama).
    """

    arch: Literal["gpt2", "llama"] = "gpt2"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int | None = None
    max_operand: int = 60
    ops: tuple[str, ...] = OPS
    steps: int = 1000
    batch_size: int = 128
    optim: OptimizerConfig = OptimizerConfig(
        name="adamw",
        lr=3e-3,
        b2=0.98,
        weight_decay=0.01,
        schedule="cosine",
        warmup_steps=50,
        min_lr_ratio=0.1,
        grad_clip_norm=1.0,
    )

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, ("gpt2", "llama"))
        for f in ("d_model", "n_layers", "n_heads", "steps", "batch_size"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        if self.d_ff is not None:
            check_range("d_ff", self.d_ff, ge=1, integer=True)
        check_range("max_operand", self.max_operand, ge=1, le=9999, integer=True)
        # a list (YAML / CLI) or a single operator string becomes a tuple: the config stays hashable
        object.__setattr__(self, "ops", check_ops(self.ops))
        self.model_config()  # raises ConfigError naming the model field
        try:
            self.optim.resolve(self.steps)
        except ConfigError as err:
            raise err.with_prefix("optim") from None

    @property
    def seq_len(self) -> int:
        """Longest training row: BOS + prompt + completion at the largest operands."""
        m = self.max_operand
        prompt = max(len(f"{m} {o} {m} =") for o in self.ops)
        answer = max(len(str(evaluate(m, o, 0 if o == "-" else m))) for o in self.ops)
        return 1 + prompt + len(" .") + answer

    def model_config(self) -> GPT2Config | LlamaConfig:
        """The model's config: vocabulary of :class:`CharTokenizer`, context ``seq_len``."""
        common = {
            "vocab_size": arithmetic_tokenizer().vocab_size,
            "max_seq_len": self.seq_len,
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
        }
        if self.arch == "gpt2":
            return GPT2Config(d_ff=self.d_ff, **common)
        return LlamaConfig(d_ff=self.d_ff or -(-8 * self.d_model // 3 // 8) * 8, **common)


class ArithmeticLM(NamedTuple):
    """What :func:`train_arithmetic_lm` returns."""

    model: CausalLM  # GPT2 | Llama
    tokenizer: CharTokenizer
    config: ArithmeticLMConfig
    losses: np.ndarray  # [steps] float32 training loss (nats per completion token) per step


@functools.lru_cache(maxsize=16)
def _optimizer(config: OptimizerConfig, steps: int) -> optax.GradientTransformation:
    """One optax object per (config, steps): it is part of the train state's graph definition, so reusing it lets
    repeated runs in one process share the compiled scan."""
    return make_optimizer(config, total_steps=steps)


def _model_and_optimizer(model_cls: type, model_config, tx: optax.GradientTransformation, key=None):
    model = model_cls(model_config, rngs=nnx.Rngs(jax.random.key(0) if key is None else key))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_train_state(model_cls: type, model_config, tx: optax.GradientTransformation, key) -> nnx.State:
    """The initial ``(model, optimizer)`` state in one compiled program: eager initialisation compiles one small
    XLA program per parameter shape (about 6 s of the smoke run on 2 CPU cores), and a single program is also
    what JAX's persistent compilation cache can keep between runs."""
    return nnx.split(_model_and_optimizer(model_cls, model_config, tx, key))[1]


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3,))
def _train_chunk(graphdef, max_steps: int, batch_size: int, state, table, key, first_step, num_steps):
    """Steps ``first_step .. first_step + num_steps - 1`` (``num_steps <= max_steps``, dynamic: one compilation
    for every chunk) in a ``lax.fori_loop``; step ``s`` draws ``batch_size`` rows of ``table`` uniformly with
    ``fold_in(key, s)``, so the run does not depend on how it is chunked. Returns the state and the losses
    ``[max_steps]`` (the first ``num_steps`` are real)."""
    step = make_lm_train_step(graphdef)
    tokens, mask, loss_mask = table

    def body(i, carry):
        s, losses = carry
        k = jax.random.fold_in(key, first_step + i)
        idx = jax.random.randint(k, (batch_size,), 0, tokens.shape[0])
        s, metrics = step(s, {"tokens": tokens[idx], "mask": mask[idx], "loss_mask": loss_mask[idx]})
        return s, losses.at[i].set(metrics["loss"])

    return jax.lax.fori_loop(0, num_steps, body, (state, jnp.zeros(max_steps, jnp.float32)))


def train_arithmetic_lm(
    config: ArithmeticLMConfig = ArithmeticLMConfig(), *, seed: int, chunk_steps: int = 500
) -> ArithmeticLM:
    """Train the tiny LM ``config`` describes on arithmetic equations; deterministic in ``seed`` (on one backend).

    Initialisation and the data stream come from ``jax.random.key(seed)``; the run is a few calls of one jitted
    ``lax.fori_loop`` of up to ``chunk_steps`` steps over :func:`~jaxsafety.train.lm.make_lm_train_step`
    (compiled once), with a progress bar over the steps; ``chunk_steps`` changes the progress granularity only,
    not the result.
    """
    check_range("seed", seed, ge=0, integer=True)
    check_range("chunk_steps", chunk_steps, ge=1, integer=True)
    tok = arithmetic_tokenizer()
    tokens, mask, completion = _equation_rows(
        tok, all_arithmetic_problems(config.max_operand, config.ops), config.seq_len
    )
    # loss on the completion " answer." only (lm_target_mask: target t counts iff loss_mask[t] and mask[t - 1])
    table = (jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(completion))
    k_init, k_data = jax.random.split(jax.random.key(seed))
    model_cls = GPT2 if config.arch == "gpt2" else Llama
    tx = _optimizer(config.optim, config.steps)
    graphdef = nnx.split(nnx.eval_shape(lambda: _model_and_optimizer(model_cls, config.model_config(), tx)))[
        0
    ]
    state = _init_train_state(model_cls, config.model_config(), tx, k_init)
    chunk = min(chunk_steps, config.steps)
    losses = []
    with progress(total=config.steps, desc="train arithmetic LM") as bar:
        for first in range(0, config.steps, chunk):
            n = min(chunk, config.steps - first)
            state, chunk_losses = _train_chunk(
                graphdef, chunk, config.batch_size, state, table, k_data, jnp.int32(first), jnp.int32(n)
            )
            losses.append(np.asarray(chunk_losses[:n]))
            bar.update(n)
    model = nnx.merge(graphdef, state)[0]
    return ArithmeticLM(model, tok, config, np.concatenate(losses))


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

    Rows (problem ``i``, attempt ``j``) are laid out problem-major and decoded ``batch_size`` at a time by the
    zoo's jitted KV-cache :func:`~jaxsafety.models.generate.generate` (fixed prompt width and batch: one
    compilation; the last batch is padded). Each batch samples with its own key from ``jax.random.split(key,
    num_batches)``: the result is deterministic in ``(key, batch_size)``. Decoding stops at the terminator
    ``"."``; ``max_new_tokens`` (None: the longest completion, which is all an exact match needs) must be at
    least that long (and prompt plus completion must fit the model's context: with the default GPT-2, whose
    positions are learned up to ``config.seq_len``, operands at most the training ``max_operand``). ``generate``
    takes a prompt batch, not a prefilled cache, so every attempt re-prefills its prompt: about 10 of the ~14
    token forwards of an attempt. Prefilling once per problem and tiling the cache (``KVCache.repeat``, as
    :func:`~jaxsafety.models.generate.score_continuations` does) would cut the sampling cost roughly 2-3x.
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
    width = 1 + max(len(p) for p in problems.prompts)
    prompts = _prompt_rows(tokenizer, problems, width)
    target = np.full((num_problems, max_new_tokens), -1, np.int32)
    target[:, :longest] = _completion_rows(tokenizer, problems, longest)
    total = num_problems * num_attempts
    batch_size = min(batch_size, total)
    num_batches = -(-total // batch_size)
    keys = jax.random.split(key, num_batches)
    success = np.zeros(total, bool)
    for i in range(num_batches):
        rows = np.arange(i * batch_size, (i + 1) * batch_size)
        problem = np.minimum(rows, total - 1) // num_attempts  # padding rows repeat the last row
        tokens = prompts[problem]
        out = generate(model, tokens, (tokens != tokenizer.pad_token_id).astype(np.int32), keys[i], config)
        generated = np.asarray(out.tokens)
        t = target[problem]
        # exact match: every completion token agrees (the terminator included); after the terminator generate
        # writes padding, which the -1 entries of the target ignore
        ok = np.all((generated == t) | (t < 0), axis=1)
        keep = rows < total
        success[rows[keep]] = ok[keep]
    return success.reshape(num_problems, num_attempts)


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
    tokens, mask, completion = _equation_rows(tokenizer, problems)
    n = tokens.shape[0]
    batch_size = min(batch_size, n)
    graphdef, state = nnx.split(model)
    out = []
    for start in range(0, n, batch_size):
        rows = np.minimum(np.arange(start, start + batch_size), n - 1)  # fixed batch: one compilation
        lp = _completion_logprob_jit(graphdef, config, state, tokens[rows], mask[rows], completion[rows])
        out.append(np.asarray(lp, np.float64)[: n - start])
    return np.exp(np.concatenate(out))
