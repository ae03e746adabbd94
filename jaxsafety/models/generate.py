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
import fnmatch
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.config import check, check_range, concrete_or_none
from jaxsafety.models.heads import ScoreModel
from jaxsafety.models.hooks import Edit, Hooks
from jaxsafety.models.transformer import CausalLM, KVCache

__all__ = [
    "ContinuationScores",
    "GenerateOutput",
    "SamplingConfig",
    "capture",
    "generate",
    "left_pad",
    "mask_top_k",
    "mask_top_p",
    "prefill",
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
    x = logits.astype(jnp.float32)
    if config.temperature != 1.0:
        x = x / config.temperature
    return mask_top_p(mask_top_k(x, config.top_k), config.top_p)


def _sample(key: jax.Array, logits: jax.Array, lse: jax.Array) -> jax.Array:
    """One token per row from ``softmax(logits)`` ``[B, V]`` (``lse`` its log-normaliser ``[B]``) by inverse-CDF
    sampling: one uniform per row against the cumulative probabilities. Exact like the Gumbel-max trick of
    ``jax.random.categorical``, which draws V uniforms per row instead (a [64, 8192] draw cost 4x the whole
    inverse-CDF pick on CPU). A token of probability 0 is never picked: the pick is the first index whose
    cumulative mass reaches ``u > 0``, so its own mass is > 0."""
    cdf = jnp.cumsum(jnp.exp(logits - lse[:, None]), axis=-1)
    u = jax.random.uniform(key, (logits.shape[0], 1), minval=jnp.finfo(jnp.float32).tiny) * cdf[:, -1:]
    return jnp.minimum(jnp.sum(cdf < u, axis=-1), logits.shape[-1] - 1).astype(jnp.int32)


def _pick(logits: jax.Array, key: jax.Array, config: SamplingConfig):
    """Next token ``[B]`` from last-position logits ``[B, V]``, with its raw and its sampling log-prob."""
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    if config.greedy:
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        sample_lp = jnp.zeros(tok.shape, jnp.float32)
    else:
        plain = config.temperature == 1.0 and config.top_k == 0 and config.top_p == 1.0
        filtered = logits if plain else sampling_logits(logits, config)
        filtered_lse = lse if plain else jax.nn.logsumexp(filtered, axis=-1)
        tok = _sample(key, filtered, filtered_lse)
        sample_lp = jnp.take_along_axis(filtered, tok[:, None], axis=-1)[:, 0] - filtered_lse
    lp = jnp.take_along_axis(logits, tok[:, None], axis=-1)[:, 0] - lse
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
    m = concrete_or_none(mask)
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
# edits over whole sequences: the row and position layout of hook edits (see hooks.Edit)

_SITE_NDIMS: dict[Any, dict[str, int]] = {}


def _site_ndims(graphdef: Any, state: Any, sites: tuple[str, ...]) -> dict[str, int]:
    """Number of axes of the activation at each site (abstract evaluation, cached per model graph)."""
    key = (graphdef, sites)
    if key not in _SITE_NDIMS:
        if len(_SITE_NDIMS) > 256:
            _SITE_NDIMS.clear()
        fn = functools.partial(_capture_jit, graphdef=graphdef, sites=sites)
        shapes = jax.eval_shape(fn, state, jnp.zeros((1, 1), jnp.int32), None, ())
        _SITE_NDIMS[key] = {s: len(v.shape) for s, v in shapes.items()}
    return _SITE_NDIMS[key]


def _edit_layout(
    graphdef: Any, state: Any, hooks: Hooks | None, fn: str, length: int, what: str, rows: int, rows_what: str
) -> dict[str, int]:
    """Check every edit's per-position axes hold ``length`` columns (or 1) and its row axes ``rows`` (or 1), with
    errors that say what the axes mean for ``fn``; returns the sites' activation ndims."""
    if hooks is None or not hooks.edits:
        return {}
    ndims = _site_ndims(graphdef, state, tuple(dict.fromkeys(e.site for e in hooks.edits)))

    def check_axis(e: Any, size: int, accepted: str) -> Any:
        def check_leaf(a: Any, axis: int) -> Any:
            if jnp.shape(a)[axis] != size:
                leaf = "value" if e.value is not None and jnp.shape(a) == jnp.shape(e.value) else "mask"
                raise ValueError(
                    f"hooks edit {e.name}: {leaf} of shape {jnp.shape(a)} is invalid for {fn}: axis {axis} "
                    f"accepted values are 1 or {size} ({accepted})"
                )
            return a

        return check_leaf

    for e in hooks.edits:
        nd = ndims[e.site]
        e.map_axes(nd, rows=check_axis(e, rows, rows_what), positions=check_axis(e, length, what))
    return ndims


def _map_edits(hooks: Hooks, ndims: dict[str, int], **fns: Any) -> Hooks:
    return Hooks(capture=hooks.capture, edits=tuple(e.map_axes(ndims[e.site], **fns) for e in hooks.edits))


# ----------------------------------------------------------------------------------------------------------------
# capture


@functools.partial(jax.jit, static_argnames=("graphdef", "sites"))
def _capture_jit(state, tokens, mask, edits, *, graphdef, sites):
    model = nnx.merge(graphdef, state)
    logits = any(fnmatch.fnmatchcase("lm_logits", p) for p in sites) or any(
        e.site == "lm_logits" for e in edits
    )
    hooks = Hooks(capture=sites, edits=tuple(edits))
    return model.forward(tokens, mask, hooks=hooks, compute_logits=logits).activations


def capture(
    model: CausalLM | ScoreModel,
    tokens: jax.Array,
    mask: jax.Array | None,
    sites: str | Sequence[str],
    *,
    edits: Edit | Sequence[Edit] = (),
) -> dict[str, jax.Array]:
    """Activations at ``sites`` (names or ``fnmatch`` patterns, see ``model.site_names()``) for ``tokens [B, T]``
    with ``mask [B, T]`` (None = no padding), after ``edits``: ``{site: [B, T, ...]}``.

    One jitted forward (no logits unless ``lm_logits`` is asked for), compiled once per (model graph, site set,
    edit structure, input shapes) and reused across parameter, token and edit values; ``model.forward(...,
    hooks=Hooks.make(capture=...))`` called outside jit runs op by op instead.
    """
    lm = _causal_lm(model)
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim != 2:
        raise ValueError(f"tokens.shape={tokens.shape} is invalid: accepted values are [B, T]")
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != tokens.shape:
            raise ValueError(f"mask.shape={mask.shape} is invalid: accepted values are {tokens.shape}")
    sites = (sites,) if isinstance(sites, str) else tuple(sites)
    if not sites:
        raise ValueError(
            "sites=() is invalid: accepted values are site names or patterns (model.site_names())"
        )
    edits = (edits,) if isinstance(edits, Edit) else tuple(edits)
    _check_length(lm, tokens.shape[1], "sequence length")
    graphdef, state = nnx.split(lm)
    return _capture_jit(state, tokens, mask, edits, graphdef=graphdef, sites=sites)


# ----------------------------------------------------------------------------------------------------------------
# prefill


def _prefill(model: CausalLM, tokens: jax.Array, mask: jax.Array, max_len: int, hooks: Hooks | None):
    """Inside jit: one forward over the LEFT-padded prompt into a fresh cache of ``max_len`` slots; returns the
    cache and the next-token logits ``[B, V]`` float32 (the last column holds every row's last real token)."""
    cache = model.init_cache(tokens.shape[0], max_len)
    out = model.forward(tokens, mask, cache=cache, hooks=hooks, logits_last_only=True)
    return out.cache, out.logits[:, 0].astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_len"))
def _prefill_jit(graphdef, max_len: int, state, tokens, mask, hooks):
    return _prefill(nnx.merge(graphdef, state), tokens, mask, max_len, hooks)


def prefill(
    model: CausalLM | ScoreModel,
    tokens: jax.Array,
    mask: jax.Array | None = None,
    max_len: int | None = None,
    *,
    hooks: Hooks | None = None,
) -> tuple[KVCache, jax.Array]:
    """Run LEFT-padded prompts ``tokens [B, P]`` (``mask [B, P]``, None = no padding) through the model into a KV
    cache of ``max_len`` slots (default P); returns ``(cache, last_logits [B, V])``: the cache, ready for
    ``model.forward(next_tokens, cache=cache)`` (or :meth:`KVCache.repeat` to branch each prompt into several
    continuations), and the logits predicting each row's next token. Jitted, compiled per (model graph, B, P,
    max_len).

    ``hooks`` edits apply in the prefill forward; their masks and per-position values index the cache's
    ``max_len`` columns (see :class:`~jaxsafety.models.hooks.Edit`), so the same hooks can be passed to the
    decode forwards that follow (``model.forward(tok, cache=cache, hooks=hooks)`` edits column ``cache.index``).
    """
    lm = _causal_lm(model)
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim != 2:
        raise ValueError(f"tokens.shape={tokens.shape} is invalid: accepted values are [B, P]")
    mask = jnp.ones(tokens.shape, jnp.int32) if mask is None else jnp.asarray(mask)
    if mask.shape != tokens.shape:
        raise ValueError(f"mask.shape={mask.shape} is invalid: accepted values are {tokens.shape}")
    p = tokens.shape[1]
    max_len = p if max_len is None else max_len
    check_range("max_len", max_len, ge=p, integer=True)
    _check_padding(mask, "mask", left=True)
    _check_length(lm, max_len, "max_len")
    _check_hooks(hooks, "prefill")
    graphdef, state = nnx.split(lm)
    _edit_layout(
        graphdef, state, hooks, "prefill", max_len, f"the cache's {max_len} slots", tokens.shape[0], "rows"
    )
    return _prefill_jit(graphdef, max_len, state, tokens, mask.astype(jnp.int32), hooks)


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
def _generate_jit(
    graphdef, config: SamplingConfig, num_samples: int, state, tokens, mask, key, hooks, decode_hooks
):
    model = nnx.merge(graphdef, state)
    b, p = tokens.shape
    n = config.max_new_tokens
    eos = jnp.asarray(config.eos_ids, jnp.int32)
    # prefill: the whole left-padded prompt in one forward; the last sampled token is never fed back
    cache, first_logits = _prefill(model, tokens, mask, p + n - 1, hooks)
    if num_samples > 1:  # prompt i's prefill serves rows i*n .. i*n + n-1 (prompt-major, as HF)
        cache = cache.repeat(num_samples)
        first_logits = jnp.repeat(first_logits, num_samples, axis=0)
        b = b * num_samples

    def feed(tok, alive, cache):
        o = model.forward(
            tok[:, None], alive[:, None], cache=cache, hooks=decode_hooks, logits_last_only=True
        )
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
      hooks: optional :class:`Hooks` edits applied in every forward (activation steering while generating).
        Masks and per-position values index ABSOLUTE columns of the whole sequence, ``L = P + max_new_tokens``
        of them (columns ``0 .. P-1`` the left-padded prompt, ``P + j`` generated token ``j``): a mask
        ``[B, L]`` or ``[L]``, a value ``[L, D]`` or ``[B, L, D]`` at the residual stream (see
        :class:`~jaxsafety.models.hooks.Edit`), so a mask can steer the prompt only, the generated tokens
        only, or from some column on. Their row axis is 1 or B, one per PROMPT: the samples of a prompt share
        it (a per-row steering vector is ``[B, 1, D]``). Capture is not supported here.

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
    b, p = tokens.shape
    length = p + config.max_new_tokens
    ndims = _edit_layout(
        graphdef, state, hooks, "generate", length, "prompt + max_new_tokens columns", b, "one per prompt"
    )
    decode_hooks = hooks
    if ndims and num_samples > 1:  # decode rows are prompt-major samples: repeat the per-prompt rows
        decode_hooks = _map_edits(hooks, ndims, rows=lambda a, ax: jnp.repeat(a, num_samples, axis=ax))
    mask = mask.astype(jnp.int32)
    return _generate_jit(graphdef, config, num_samples, state, tokens, mask, key, hooks, decode_hooks)


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


def _point_mass_logits(logits: jax.Array) -> jax.Array:
    """Greedy decoding's distribution: log-prob 0 at the argmax (first on ties, as ``jnp.argmax``), -inf else."""
    top = jnp.argmax(logits, axis=-1)[..., None]
    return jnp.where(jnp.arange(logits.shape[-1]) == top, 0.0, -jnp.inf)


@functools.partial(jax.jit, static_argnames=("graphdef", "sampling"))
def _sequence_logprobs_jit(graphdef, sampling, state, tokens, mask, hooks):
    model = nnx.merge(graphdef, state)
    logits = model.forward(tokens, mask, hooks=hooks).logits
    if sampling is not None:
        logits = _point_mass_logits(logits) if sampling.greedy else sampling_logits(logits, sampling)
    return token_logprobs(logits, tokens, mask)


def sequence_logprobs(
    model: CausalLM | ScoreModel,
    tokens: jax.Array,
    mask: jax.Array | None = None,
    *,
    hooks: Hooks | None = None,
    sampling: SamplingConfig | None = None,
) -> jax.Array:
    """``log p(tokens[:, t] | tokens[:, <t])`` ``[B, T]`` for whole sequences in one forward, no cache (the
    reference for the cached paths, and what RLHF re-scores completions with). See :func:`token_logprobs` for
    padding and the zero entries. Jitted.

    ``sampling``: None = the raw model distribution; a :class:`SamplingConfig` = the distribution
    :func:`generate` samples from with it (temperature, then top-k, then top-p; :func:`sampling_logits`), which
    is what ``GenerateOutput.sample_logprobs`` holds (importance weights, the sampler's own likelihood). Tokens
    outside the top-k / top-p support get ``-inf``; greedy (``temperature=0``) is a point mass at the argmax:
    0 there, ``-inf`` elsewhere.
    """
    lm = _causal_lm(model)
    tokens = jnp.asarray(tokens, jnp.int32)
    mask = jnp.ones(tokens.shape, jnp.int32) if mask is None else jnp.asarray(mask)
    if sampling is not None and not isinstance(sampling, SamplingConfig):
        raise ValueError(
            f"sampling of type {type(sampling).__name__} is invalid: accepted values are None or a SamplingConfig"
        )
    _check_length(lm, tokens.shape[1], "sequence length")
    _check_hooks(hooks, "sequence_logprobs")
    graphdef, state = nnx.split(lm)
    return _sequence_logprobs_jit(graphdef, sampling, state, tokens, mask, hooks)


def _bucket(n: int) -> int:
    """The next power of two >= n: padded lengths that new inputs reuse (one compilation per bucket)."""
    return 1 << max(n - 1, 0).bit_length()


@functools.partial(jax.jit, static_argnames=("graphdef", "per_row"))
def _score_continuations_jit(graphdef, per_row: bool, state, prefix, pmask, cont, cmask, hooks):
    model = nnx.merge(graphdef, state)
    k, p = prefix.shape
    _, m, c = cont.shape
    rows = k * m
    cont, cmask = cont.reshape(rows, c), cmask.reshape(rows, c)
    if per_row:  # edits differ between the continuations of a prefix: each row runs its own prefix
        prefix, pmask = jnp.repeat(prefix, m, axis=0), jnp.repeat(pmask, m, axis=0)
    cache, first = _prefill(model, prefix, pmask, p + c - 1, hooks)  # first predicts c_0
    if not per_row and m > 1:  # prefill once per prefix, tile the cache to its m continuations
        cache, first = cache.repeat(m), jnp.repeat(first, m, axis=0)
    logits = first[:, None]
    if c > 1:  # c_0 .. c_{C-2} predict c_1 .. c_{C-1}; the last token is never fed
        rest = model.forward(cont[:, :-1], cmask[:, :-1], cache=cache, hooks=hooks).logits
        logits = jnp.concatenate([logits, rest.astype(jnp.float32)], axis=1)
    lp = jnp.take_along_axis(logits, cont[..., None], axis=-1)[..., 0] - jax.nn.logsumexp(logits, axis=-1)
    lp = jnp.where(cmask.astype(jnp.bool_), lp, 0.0).reshape(k, m, c)
    return ContinuationScores(lp, lp.sum(-1))


def score_continuations(
    model: CausalLM | ScoreModel,
    prefix: jax.Array,
    continuations: jax.Array,
    continuation_mask: jax.Array | None = None,
    *,
    prefix_mask: jax.Array | None = None,
    hooks: Hooks | None = None,
    bucket: bool = True,
) -> ContinuationScores:
    """Score continuations of shared prefixes: ``log p(c_j | prefix, c_<j)`` per token and their sum.

    Two layouts:
      - one prefix ``[P]`` or ``[1, P]`` and ``continuations [B, C]``: scores ``[B, C]``, totals ``[B]``;
      - ``K`` LEFT-padded prefixes ``[K, P]`` (``prefix_mask [K, P]``, every row with a real token) and ``M``
        continuations of each, ``continuations [K, M, C]``: scores ``[K, M, C]``, totals ``[K, M]``.
    Continuations are RIGHT-padded with ``continuation_mask`` of their shape (None = no padding).

    Each prefix is prefilled once, its cache tiled to its continuations (:meth:`KVCache.repeat`), then all
    continuations run in one forward against it: a prefix costs one forward instead of ``M`` (multiple-choice
    evals, judge option scoring, behaviour log-likelihoods, featurization). With ``bucket`` the prefix is
    left-padded and the continuations right-padded to the next power of two (within ``max_seq_len`` for learned
    positions), so new lengths reuse compiled programs: one compilation per (K, M, bucket pair). Jitted.

    Hook edits index ABSOLUTE columns of each scored sequence, ``L = P + C`` of them (the prefix as given, then
    the continuation): masks ``[R, L]`` / ``[L]``, per-position values ``[L, D]`` / ``[R, L, D]`` at the residual
    stream (see :class:`~jaxsafety.models.hooks.Edit`), with row axis 1 or ``R = K * M``, one per scored
    continuation (row ``k * M + m``; a per-row steering vector is ``[R, 1, D]``). With per-row edits each row runs
    its own prefix (a shared prefill could not apply them).
    """
    lm = _causal_lm(model)
    prefix = jnp.asarray(prefix, jnp.int32)
    single = prefix.ndim == 1 or (prefix.ndim == 2 and jnp.ndim(continuations) == 2)
    prefix = prefix[None] if prefix.ndim == 1 else prefix
    if prefix.ndim != 2 or prefix.shape[1] < 1 or (single and prefix.shape[0] != 1):
        raise ValueError(
            f"prefix.shape={prefix.shape} is invalid: accepted values are [P] or [1, P] (with continuations "
            "[B, C]) or [K, P] (with continuations [K, M, C]), P >= 1"
        )
    k, p = prefix.shape
    pmask = jnp.ones(prefix.shape, jnp.int32) if prefix_mask is None else jnp.asarray(prefix_mask)
    if pmask.ndim == 1:
        pmask = pmask[None]
    if pmask.shape != prefix.shape:
        raise ValueError(f"prefix_mask.shape={pmask.shape} is invalid: accepted values are {prefix.shape}")
    cont = jnp.asarray(continuations, jnp.int32)
    want = "[B, C]" if single else f"[{k}, M, C]"
    if cont.ndim != (2 if single else 3) or (not single and cont.shape[0] != k) or cont.shape[-1] < 1:
        raise ValueError(f"continuations.shape={cont.shape} is invalid: accepted values are {want}")
    cmask = jnp.ones(cont.shape, jnp.int32) if continuation_mask is None else jnp.asarray(continuation_mask)
    if cmask.shape != cont.shape:
        raise ValueError(
            f"continuation_mask.shape={cmask.shape} is invalid: accepted values are {cont.shape}"
        )
    if single:
        cont, cmask = cont[None], cmask[None]
    m, c = cont.shape[1], cont.shape[2]
    _check_padding(pmask, "prefix_mask", left=True)
    _check_padding(cmask, "continuation_mask", left=False)
    _check_length(lm, p + c, "prefix length + continuation length")
    _check_hooks(hooks, "score_continuations")
    graphdef, state = nnx.split(lm)
    ndims = _edit_layout(
        graphdef,
        state,
        hooks,
        "score_continuations",
        p + c,
        "prefix + continuation columns",
        k * m,
        "one per scored continuation, K * M",
    )
    pb, cb = p, c
    if bucket:
        limit = lm.config.max_seq_len if lm.config.positional == "learned" else None
        cb = _bucket(c) if limit is None else min(_bucket(c), limit - p)
        pb = _bucket(p) if limit is None else min(_bucket(p), limit - cb)
    if (pb, cb) != (p, c):
        lpad, rpad = pb - p, cb - c
        prefix = jnp.pad(prefix, ((0, 0), (lpad, 0)))
        pmask = jnp.pad(pmask, ((0, 0), (lpad, 0)))
        cont = jnp.pad(cont, ((0, 0), (0, 0), (0, rpad)))
        cmask = jnp.pad(cmask, ((0, 0), (0, 0), (0, rpad)))
        if ndims:  # the edits' columns follow the padding: prefix columns shift right, continuation ones too

            def pad_columns(a: jax.Array, axis: int) -> jax.Array:
                widths = [(0, 0)] * a.ndim
                widths[axis] = (lpad, rpad)
                return jnp.pad(a, widths)

            hooks = _map_edits(hooks, ndims, positions=pad_columns)
    per_row = any(e.rows(ndims[e.site]) > 1 for e in hooks.edits) if ndims else False
    out = _score_continuations_jit(
        graphdef, per_row, state, prefix, pmask.astype(jnp.int32), cont, cmask.astype(jnp.int32), hooks
    )
    lp, total = out.logprobs[..., :c], out.total
    return ContinuationScores(lp[0], total[0]) if single else ContinuationScores(lp, total)
