"""Jitted, batched generation with the KV cache, shared-prefix scoring and per-token log-probabilities.

Conventions
- Prompts are LEFT-padded: ``prompt_tokens [B, P]`` with ``prompt_mask [B, P]`` (1 = real token) holding each
  row's real tokens at the right end, so the last column is every row's last prompt token and all rows write
  their new tokens to the same cache slot (``KVCache.index`` is shared by the batch). :func:`left_pad` builds them.
  Positions ignore padding (``cumsum(mask) - 1``), so a padded row generates what it would alone.
- Continuations (:func:`score_continuations`) and generated tokens are RIGHT-padded: real tokens first.
- ``logprobs`` are always ``log p_model(token | context)`` under the raw model distribution (temperature 1, no
  top-k / top-p): the quantity policy-gradient methods (PPO, RLHF) and KL penalties need. ``sample_logprobs`` are
  under the distribution actually sampled from (temperature, top-k, top-p applied); 0 for greedy decoding, whose
  sampling distribution is a point mass.
- Randomness only through the explicit ``key``: split once per decode step, never reused.

Each entry point splits the model once (``nnx.split``) and calls a ``jax.jit``-compiled pure function whose static
arguments are the graph definition and the :class:`SamplingConfig` (both hashable), so compiled code is cached per
(architecture, config, input shapes) and reused across calls and across parameter values (e.g. during RLHF).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.config import check, check_range
from jaxsafety.models.heads import ScoreModel
from jaxsafety.models.hooks import Hooks
from jaxsafety.models.transformer import CausalLM

__all__ = [
    "ContinuationScores",
    "GenerateOutput",
    "SamplingConfig",
    "generate",
    "left_pad",
    "mask_top_k",
    "mask_top_p",
    "right_pad",
    "sampling_logits",
    "score_continuations",
    "sequence_logprobs",
    "token_logprobs",
]


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to decode. Hashable: a static argument of the jitted decode loop (one compilation per config).

    max_new_tokens  tokens to generate per row (N); decoding stops earlier once every row has emitted EOS
    temperature     0 = greedy (argmax); otherwise logits are divided by it before filtering and sampling
    top_k           keep the k most likely tokens (ties with the k-th kept); 0 = off
    top_p           nucleus: keep the smallest set of most likely tokens whose mass >= top_p (the most likely
                    token always kept; Holtzman et al. 2020); 1.0 = off. Applied after temperature and top-k,
                    as in HF ``generate``.
    eos_token_id    token id(s) that end a row (kept in the output, mask 1); None = never stop early
    pad_token_id    written after EOS (mask 0); must be a valid token id (it is fed to the model, masked out)
    """

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        check_range("max_new_tokens", self.max_new_tokens, ge=1, integer=True)
        check_range("temperature", self.temperature, ge=0)
        check_range("top_k", self.top_k, ge=0, integer=True)
        check_range("top_p", self.top_p, gt=0, le=1)
        eos = self.eos_token_id
        if isinstance(eos, list):  # lists from YAML / CLI: store a tuple so the config stays hashable
            eos = tuple(eos)
            object.__setattr__(self, "eos_token_id", eos)
        ok = eos is None or _is_token_id(eos) or (isinstance(eos, tuple) and all(map(_is_token_id, eos)))
        check(ok, "eos_token_id", eos, "None, an integer >= 0 or a tuple of integers >= 0")
        check_range("pad_token_id", self.pad_token_id, ge=0, integer=True)

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """EOS ids as a (possibly empty) tuple."""
        if self.eos_token_id is None:
            return ()
        return (self.eos_token_id,) if isinstance(self.eos_token_id, int) else tuple(self.eos_token_id)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _is_token_id(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool) and x >= 0


class GenerateOutput(NamedTuple):
    """Result of :func:`generate`; all arrays ``[B, N]`` (N = ``max_new_tokens``) except ``lengths [B]``."""

    tokens: jax.Array  # int32 generated tokens, pad_token_id after EOS (and after an early stop)
    logprobs: jax.Array  # float32 log p_model(token | context), raw model distribution; 0 where mask is 0
    sample_logprobs: (
        jax.Array
    )  # float32 log-prob under the sampling distribution (0 for greedy); 0 where mask 0
    mask: jax.Array  # int32 1 for real generated tokens, up to and including EOS
    lengths: jax.Array  # int32 number of real generated tokens per row (= mask.sum(-1))


class ContinuationScores(NamedTuple):
    """Result of :func:`score_continuations`."""

    logprobs: jax.Array  # [B, C] float32 log p(c_j | prefix, c_<j); 0 at padding
    total: jax.Array  # [B] float32 sum over real tokens: log p(continuation | prefix)


# ----------------------------------------------------------------------------------------------------------------
# padding helpers


def _pad(sequences: Sequence[Sequence[int]], pad_id: int, length: int | None, left: bool):
    lens = [len(s) for s in sequences]
    if not sequences or min(lens) < 1:
        raise ValueError(
            "sequences is invalid: accepted values are a non-empty list of non-empty token lists"
        )
    width = max(lens) if length is None else length
    if width < max(lens):
        raise ValueError(
            f"length={length} is invalid: accepted values are >= the longest sequence ({max(lens)})"
        )
    tokens = np.full((len(sequences), width), pad_id, np.int32)
    mask = np.zeros((len(sequences), width), np.int32)
    for i, s in enumerate(sequences):
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        tokens[i, cols] = np.asarray(s, np.int32)
        mask[i, cols] = 1
    return jnp.asarray(tokens), jnp.asarray(mask)


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, length: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Stack token lists into LEFT-padded ``tokens [B, L]`` and ``mask [B, L]`` (int32), the prompt layout of
    :func:`generate`. ``L`` = the longest sequence unless ``length`` is given (a fixed width avoids recompiling
    the decode loop for every prompt batch)."""
    return _pad(sequences, pad_id, length, left=True)


def right_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, length: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Stack token lists into RIGHT-padded ``tokens [B, L]`` and ``mask [B, L]`` (int32), the continuation
    layout of :func:`score_continuations`."""
    return _pad(sequences, pad_id, length, left=False)


# ----------------------------------------------------------------------------------------------------------------
# sampling distribution


def mask_top_k(logits: jax.Array, k: int) -> jax.Array:
    """Set every logit below the ``k``-th largest (along the last axis) to ``-inf``; ``k = 0`` (or >= V) is a
    no-op. Ties with the ``k``-th largest are kept (as HF's ``TopKLogitsWarper``)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def mask_top_p(logits: jax.Array, p: float) -> jax.Array:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability mass is >= ``p`` (a token is
    kept iff the mass of the tokens strictly more likely than it is < ``p``, so the most likely token always
    stays), set the rest to ``-inf``; ``p = 1`` is a no-op. Ties at the boundary are kept."""
    if p >= 1.0:
        return logits
    desc = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(desc.astype(jnp.float32), axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # exclusive cumulative mass, non-decreasing
    n_keep = jnp.sum(mass_before < p, axis=-1, keepdims=True).clip(1)
    threshold = jnp.take_along_axis(desc, n_keep - 1, axis=-1)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def sampling_logits(logits: jax.Array, config: SamplingConfig) -> jax.Array:
    """Logits of the distribution :func:`generate` samples from: ``logits / temperature``, then top-k, then
    top-p (float32). Undefined for greedy decoding (``temperature = 0``)."""
    if config.greedy:
        raise ValueError("temperature=0 is invalid for sampling_logits: accepted values are numbers > 0")
    x = logits.astype(jnp.float32) / config.temperature
    return mask_top_p(mask_top_k(x, config.top_k), config.top_p)


def _pick(logits: jax.Array, key: jax.Array, config: SamplingConfig):
    """Next token ``[B]`` from last-position logits ``[B, V]``, with its raw and its sampling log-prob."""
    logits = logits.astype(jnp.float32)
    raw = jax.nn.log_softmax(logits, axis=-1)
    if config.greedy:
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        sample_lp = jnp.zeros(tok.shape, jnp.float32)
    else:
        filtered = sampling_logits(logits, config)
        tok = jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
        sample_lp = jnp.take_along_axis(jax.nn.log_softmax(filtered, axis=-1), tok[:, None], axis=-1)[:, 0]
    lp = jnp.take_along_axis(raw, tok[:, None], axis=-1)[:, 0]
    return tok, lp, sample_lp


# ----------------------------------------------------------------------------------------------------------------
# argument checks (eager: only on concrete arrays, skipped under an outer jit)


def _causal_lm(model: Any) -> CausalLM:
    if isinstance(model, CausalLM):
        return model
    if isinstance(model, ScoreModel):
        if not model.keep_lm_head:
            raise ValueError(
                "model is a ScoreModel with keep_lm_head=False: accepted models are CausalLM or "
                "ScoreModel(keep_lm_head=True) (one backbone serving as policy and value function)"
            )
        return model.backbone
    raise TypeError(
        f"model of type {type(model).__name__} is invalid: accepted types are CausalLM, ScoreModel"
    )


def _concrete(x: Any) -> np.ndarray | None:
    return None if isinstance(x, jax.core.Tracer) else np.asarray(x)


def _check_hooks(hooks: Hooks | None, fn: str) -> None:
    if hooks is not None and hooks.capture:
        raise ValueError(
            f"hooks.capture={hooks.capture!r} is invalid for {fn}: accepted values are () (it applies edits only; "
            "capture activations with model.forward on the generated tokens)"
        )


def _check_length(lm: CausalLM, total: int, what: str) -> None:
    cfg = lm.config
    if cfg.positional == "learned" and total > cfg.max_seq_len:
        raise ValueError(
            f"{what}={total} is invalid: accepted values are <= max_seq_len ({cfg.max_seq_len}) for a model with "
            "learned positions"
        )


def _check_padding(mask: jax.Array, name: str, left: bool) -> None:
    m = _concrete(mask)
    if m is None:
        return
    m = m.astype(bool)
    if left and not m.any(-1).all():  # an empty prompt has no last token to predict from
        raise ValueError(f"{name} is invalid: every row needs at least one real token")
    # left padding: 0...0 1...1 per row (non-decreasing); right padding: 1...1 0...0 (non-increasing)
    steps = np.diff(m.astype(np.int8), axis=-1)
    if (steps < 0).any() if left else (steps > 0).any():
        side = "LEFT-padded (real tokens at the right end)" if left else "RIGHT-padded (real tokens first)"
        raise ValueError(f"{name} is invalid: accepted values are {side} masks")


def _check_token_id(lm: CausalLM, name: str, ids: Sequence[int]) -> None:
    v = lm.config.vocab_size
    for i in ids:
        if i >= v:
            raise ValueError(f"{name}={i} is invalid: accepted values are token ids < vocab_size ({v})")


# ----------------------------------------------------------------------------------------------------------------
# generation


class _Carry(NamedTuple):
    step: jax.Array
    cache: Any
    logits: jax.Array  # [B, V] next-token logits
    tokens: jax.Array
    logprobs: jax.Array
    sample_logprobs: jax.Array
    mask: jax.Array
    done: jax.Array  # [B] bool: row has emitted EOS
    key: jax.Array


@functools.partial(jax.jit, static_argnames=("graphdef", "config", "num_samples"))
def _generate_jit(graphdef, config: SamplingConfig, num_samples: int, state, tokens, mask, key, hooks):
    model = nnx.merge(graphdef, state)
    b, p = tokens.shape
    n = config.max_new_tokens
    eos = jnp.asarray(config.eos_ids, jnp.int32)
    # prefill: the whole left-padded prompt in one forward; the last column holds every row's last prompt token
    cache = model.init_cache(b, p + n - 1)  # the last sampled token is never fed back
    out = model.forward(tokens, mask, cache=cache, hooks=hooks, logits_last_only=True)
    first_logits = out.logits[:, 0].astype(jnp.float32)
    cache = out.cache
    if num_samples > 1:  # prompt i's prefill serves rows i*n .. i*n + n-1 (prompt-major, as HF)
        cache = cache.repeat(num_samples)
        first_logits = jnp.repeat(first_logits, num_samples, axis=0)
        b = b * num_samples

    def feed(tok, alive, cache):
        o = model.forward(tok[:, None], alive[:, None], cache=cache, hooks=hooks, logits_last_only=True)
        return o.cache, o.logits[:, 0]

    def cond(c: _Carry) -> jax.Array:
        return (c.step < n) & ~jnp.all(c.done)

    def body(c: _Carry) -> _Carry:
        key, sub = jax.random.split(c.key)
        tok, lp, slp = _pick(c.logits, sub, config)
        alive = ~c.done
        tok = jnp.where(alive, tok, config.pad_token_id)
        lp = jnp.where(alive, lp, 0.0)
        slp = jnp.where(alive, slp, 0.0)
        done = c.done
        if eos.size:
            done = done | (jnp.isin(tok, eos) & alive)

        def put(buf: jax.Array, col: jax.Array) -> jax.Array:
            return jax.lax.dynamic_update_slice(buf, col[:, None].astype(buf.dtype), (0, c.step))

        def skip(tok, alive, cache):  # after the last step or once all rows are done: logits never used
            return cache, c.logits

        more = (c.step + 1 < n) & ~jnp.all(done)
        cache, logits = jax.lax.cond(more, feed, skip, tok, alive, c.cache)
        return _Carry(
            c.step + 1,
            cache,
            logits,
            put(c.tokens, tok),
            put(c.logprobs, lp),
            put(c.sample_logprobs, slp),
            put(c.mask, alive),
            done,
            key,
        )

    init = _Carry(
        jnp.int32(0),
        cache,
        first_logits,
        jnp.full((b, n), config.pad_token_id, jnp.int32),
        jnp.zeros((b, n), jnp.float32),
        jnp.zeros((b, n), jnp.float32),
        jnp.zeros((b, n), jnp.int32),
        jnp.zeros((b,), jnp.bool_),
        key,
    )
    # while_loop, not scan: it stops as soon as every row is done (generation is never differentiated)
    c = jax.lax.while_loop(cond, body, init)
    return GenerateOutput(c.tokens, c.logprobs, c.sample_logprobs, c.mask, c.mask.sum(-1).astype(jnp.int32))


def generate(
    model: CausalLM | ScoreModel,
    prompt_tokens: jax.Array,
    prompt_mask: jax.Array | None = None,
    key: jax.Array | None = None,
    config: SamplingConfig = SamplingConfig(),  # frozen, so a shared default is safe
    *,
    num_samples: int = 1,
    hooks: Hooks | None = None,
) -> GenerateOutput:
    """Sample ``config.max_new_tokens`` tokens per row after LEFT-padded prompts, with the KV cache, in one
    jitted program: one prefill forward over the prompt, then a ``lax.while_loop`` of one-token decode steps that
    stops once every row has emitted EOS.

    Args:
      model: a :class:`CausalLM` (GPT2, Llama, ...) or a ``ScoreModel(keep_lm_head=True)`` (its backbone decodes).
      prompt_tokens: int ``[B, P]``, left-padded (see :func:`left_pad`); every row needs >= 1 real token.
      prompt_mask: ``[B, P]`` 1 = real token, 0 = padding (left); None = no padding.
      key: PRNG key (``jax.random.key``); split once per step. May be None for greedy decoding.
      config: :class:`SamplingConfig`.
      num_samples: continuations per prompt (best-of-n, pass@k). Each prompt is prefilled ONCE and its cache
        tiled (:meth:`KVCache.repeat`); outputs have ``B * num_samples`` rows in prompt-major order, as HF's
        ``num_return_sequences``: row ``i * num_samples + j`` is sample ``j`` of prompt ``i``. Every row is
        an independent draw from the same distribution as with ``num_samples=1``.
      hooks: optional :class:`Hooks` edits applied in every forward (activation steering while generating);
        edit values and masks must broadcast against both the prompt ``[B, P, ...]`` and one step ``[B, 1, ...]``
        (e.g. a ``[D]`` steering vector). Capture is not supported here.

    Returns: :class:`GenerateOutput` (tokens, logprobs, sample_logprobs, mask, lengths), all ``[R, N]``/``[R]``
    with ``R = B * num_samples``.

    With learned positions (GPT-2) ``P + N`` must fit ``max_seq_len``, so that prompt plus completion can be
    re-scored in one forward (:func:`sequence_logprobs`). Compilation is cached per (model graph, config, B, P).
    """
    lm = _causal_lm(model)
    tokens = jnp.asarray(prompt_tokens, jnp.int32)
    if tokens.ndim != 2:
        raise ValueError(f"prompt_tokens.shape={tokens.shape} is invalid: accepted values are [B, P]")
    mask = jnp.ones(tokens.shape, jnp.int32) if prompt_mask is None else jnp.asarray(prompt_mask)
    if mask.shape != tokens.shape:
        raise ValueError(f"prompt_mask.shape={mask.shape} is invalid: accepted values are {tokens.shape}")
    _check_padding(mask, "prompt_mask", left=True)
    _check_length(lm, tokens.shape[1] + config.max_new_tokens, "prompt length + max_new_tokens")
    _check_token_id(lm, "pad_token_id", (config.pad_token_id,))
    _check_token_id(lm, "eos_token_id", config.eos_ids)
    _check_hooks(hooks, "generate")
    check_range("num_samples", num_samples, ge=1, integer=True)
    if key is None:
        if not config.greedy:
            raise ValueError("key=None is invalid for temperature > 0: accepted values are a jax.random key")
        key = jax.random.key(0)  # unused by greedy decoding
    graphdef, state = nnx.split(lm)
    return _generate_jit(graphdef, config, num_samples, state, tokens, mask.astype(jnp.int32), key, hooks)


# ----------------------------------------------------------------------------------------------------------------
# scoring


def token_logprobs(logits: jax.Array, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Per-token ``log p(tokens[:, t] | real tokens before t)`` ``[B, T]`` float32 from full-sequence logits
    ``[B, T, V]`` (position ``s`` predicts the token after it).

    Pure and differentiable (use it inside a loss). The prediction for a real token comes from the previous REAL
    position, so any padding works (left-padded prompt + right-padded completion, as RLHF concatenates them).
    Entries are 0 at padding and at each row's first real token (which has no context).
    """
    b, t = tokens.shape
    m = jnp.ones((b, t), jnp.bool_) if mask is None else mask.astype(jnp.bool_)
    last_real = jax.lax.cummax(jnp.where(m, jnp.arange(t), -1), axis=1)  # last real index <= t
    prev = jnp.concatenate([jnp.full((b, 1), -1, last_real.dtype), last_real[:, :-1]], axis=1)
    valid = m & (prev >= 0)
    prev = jnp.maximum(prev, 0)
    rows = jnp.arange(b)[:, None]
    logits = logits.astype(jnp.float32)
    lp = logits[rows, prev, tokens] - jax.nn.logsumexp(logits, axis=-1)[rows, prev]
    return jnp.where(valid, lp, 0.0)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _sequence_logprobs_jit(graphdef, state, tokens, mask, hooks):
    model = nnx.merge(graphdef, state)
    logits = model.forward(tokens, mask, hooks=hooks).logits
    return token_logprobs(logits, tokens, mask)


def sequence_logprobs(
    model: CausalLM | ScoreModel,
    tokens: jax.Array,
    mask: jax.Array | None = None,
    *,
    hooks: Hooks | None = None,
) -> jax.Array:
    """``log p(tokens[:, t] | tokens[:, <t])`` ``[B, T]`` for whole sequences in one forward, no cache (the
    reference for the cached paths, and what RLHF re-scores completions with). See :func:`token_logprobs` for
    padding and the zero entries. Jitted."""
    lm = _causal_lm(model)
    tokens = jnp.asarray(tokens, jnp.int32)
    mask = jnp.ones(tokens.shape, jnp.int32) if mask is None else jnp.asarray(mask)
    _check_length(lm, tokens.shape[1], "sequence length")
    _check_hooks(hooks, "sequence_logprobs")
    graphdef, state = nnx.split(lm)
    return _sequence_logprobs_jit(graphdef, state, tokens, mask, hooks)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _score_continuations_jit(graphdef, state, prefix, cont, cmask, hooks):
    model = nnx.merge(graphdef, state)
    b, c = cont.shape
    p = prefix.shape[1]
    cache = model.init_cache(1, p + c - 1)
    out = model.forward(prefix, None, cache=cache, hooks=hooks, logits_last_only=True)
    logits = jnp.broadcast_to(out.logits, (b, 1, out.logits.shape[-1]))  # predicts c_0
    if c > 1:  # c_0 .. c_{C-2} predict c_1 .. c_{C-1}; the last token is never fed
        rest = model.forward(cont[:, :-1], cmask[:, :-1], cache=out.cache.repeat(b), hooks=hooks).logits
        logits = jnp.concatenate([logits, rest], axis=1)
    logits = logits.astype(jnp.float32)
    lp = jnp.take_along_axis(logits, cont[..., None], axis=-1)[..., 0] - jax.nn.logsumexp(logits, axis=-1)
    lp = jnp.where(cmask.astype(jnp.bool_), lp, 0.0)
    return ContinuationScores(lp, lp.sum(-1))


def score_continuations(
    model: CausalLM | ScoreModel,
    prefix: jax.Array,
    continuations: jax.Array,
    continuation_mask: jax.Array | None = None,
    *,
    hooks: Hooks | None = None,
) -> ContinuationScores:
    """Score ``B`` continuations of one shared prefix: ``log p(c_j | prefix, c_<j)`` per token ``[B, C]`` and
    their sum ``[B]``.

    The prefix ``[P]`` or ``[1, P]`` (no padding) is prefilled once at batch 1, the cache tiled to ``B``
    (``KVCache.repeat``), then all continuations run in one forward against it: the prefix costs one forward
    instead of ``B`` (multiple-choice evals, judge option scoring, behaviour log-likelihoods).
    ``continuations [B, C]`` are RIGHT-padded with ``continuation_mask [B, C]`` (None = no padding). Jitted.
    Hook edits must broadcast against batch 1 (prefix) and batch ``B``.
    """
    lm = _causal_lm(model)
    prefix = jnp.asarray(prefix, jnp.int32)
    if prefix.ndim == 1:
        prefix = prefix[None]
    if prefix.ndim != 2 or prefix.shape[0] != 1 or prefix.shape[1] < 1:
        raise ValueError(
            f"prefix.shape={prefix.shape} is invalid: accepted values are [P] or [1, P] with P >= 1"
        )
    cont = jnp.asarray(continuations, jnp.int32)
    if cont.ndim != 2:
        raise ValueError(f"continuations.shape={cont.shape} is invalid: accepted values are [B, C]")
    cmask = jnp.ones(cont.shape, jnp.int32) if continuation_mask is None else jnp.asarray(continuation_mask)
    if cmask.shape != cont.shape:
        raise ValueError(
            f"continuation_mask.shape={cmask.shape} is invalid: accepted values are {cont.shape}"
        )
    _check_padding(cmask, "continuation_mask", left=False)
    _check_length(lm, prefix.shape[1] + cont.shape[1], "prefix length + continuation length")
    _check_hooks(hooks, "score_continuations")
    graphdef, state = nnx.split(lm)
    return _score_continuations_jit(graphdef, state, prefix, cont, cmask.astype(jnp.int32), hooks)
