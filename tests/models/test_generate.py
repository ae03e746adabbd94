"""KV-cache generation, sampling filters and shared-prefix scoring, each checked against an independent truth:
full recompute without the cache, a plain-Python greedy loop, HF torch ``generate``, numpy filter references,
chi-square tests of sample frequencies against the exact sampling distribution.

Compilation dominates the run time on CPU, so tests share shapes and configs (the jitted functions are cached per
model graph, config and shape): the HF checkpoints have the same configs as the fixtures, reference forwards run on
one fixed [3, 12] block, and the steering hook is one module-level object.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from jaxsafety.config import ConfigError
from jaxsafety.models import GPT2, GPT2Config, Hooks, Llama, LlamaConfig, ScoreModel, add
from jaxsafety.models.generate import (
    SamplingConfig,
    _score_continuations_jit,
    generate,
    left_pad,
    mask_top_k,
    mask_top_p,
    prefill,
    right_pad,
    score_continuations,
    sequence_logprobs,
    token_logprobs,
)
from jaxsafety.models.hooks import Edit

V = 64
PROMPTS = [[5, 9, 14, 3, 22], [7, 1, 30], [11]]  # ragged: left-padded to [3, 5]
PAD = 0


def _peaky(model):
    """Scale the final norm so logits have std ~2 (random tiny models are near-uniform): greedy choices are far
    from ties, so float32 reordering between cached and uncached paths cannot flip an argmax."""
    model.final_norm.scale[...] = model.final_norm.scale[...] * 20.0
    return model


@pytest.fixture(scope="module")
def gpt2():
    cfg = GPT2Config(vocab_size=V, max_seq_len=16, d_model=32, n_layers=2, n_heads=4)
    return _peaky(GPT2(cfg, rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module")
def llama():
    cfg = LlamaConfig(
        vocab_size=V,
        max_seq_len=64,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=64,
        rms_norm_eps=1e-6,  # HF's default: the HF twin in hf_models loads to this very config
    )
    return _peaky(Llama(cfg, rngs=nnx.Rngs(1)))


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def prompts():
    return left_pad(PROMPTS, PAD)


REF_BLOCK = (3, 12)  # every reference forward runs on this shape: one compilation per model


@functools.partial(jax.jit, static_argnums=0)
def _forward_jit(graphdef, state, tokens, mask, hooks):
    return nnx.merge(graphdef, state).forward(tokens, mask, hooks=hooks).logits


def full_logits(model, tokens, mask=None, hooks=None) -> np.ndarray:
    """Uncached forward over whole sequences ``[B, T, V]`` (float64 copy). Inputs are padded into the fixed
    ``REF_BLOCK`` with masked padding on the right and extra all-padding rows: causal attention never looks right
    and rows are independent, so the real rows' logits are unchanged, and the forward compiles once per model."""
    tokens = np.asarray(tokens, np.int32)
    mask = np.ones_like(tokens) if mask is None else np.asarray(mask, np.int32)
    b, t = tokens.shape
    block_t, block_m = np.full(REF_BLOCK, PAD, np.int32), np.zeros(REF_BLOCK, np.int32)
    block_t[:b, :t], block_m[:b, :t] = tokens, mask
    graphdef, state = nnx.split(model)
    logits = _forward_jit(graphdef, state, jnp.asarray(block_t), jnp.asarray(block_m), hooks)
    return np.asarray(logits, np.float64)[:b, :t]


def _plain_greedy(model, tokens, mask, n, hooks=None):
    """Independent greedy loop: a full uncached forward over the whole sequence every step, plain Python.
    ``hooks`` may be a function of the sequence length so far, giving that step's hooks."""
    seq, m = np.asarray(tokens), np.asarray(mask)
    toks, lps = [], []
    for _ in range(n):
        logits = full_logits(model, seq, m, hooks(seq.shape[1]) if callable(hooks) else hooks)[:, -1]
        tok = logits.argmax(-1)
        logp = logits - scipy.special.logsumexp(logits, axis=-1, keepdims=True)
        toks.append(tok)
        lps.append(logp[np.arange(len(tok)), tok])
        seq = np.concatenate([seq, tok[:, None]], 1)
        m = np.concatenate([m, np.ones_like(m[:, :1])], 1)
    return np.stack(toks, 1), np.stack(lps, 1)


_CALLS: list[int] = []  # forward passes seen by STEER


def _steer_and_count(x, v):
    jax.debug.callback(lambda: _CALLS.append(1))  # a host callback fires once per executed forward pass
    return x + v


# one object (its static fn is part of the jit cache key): a steering edit that also counts forward passes
STEER = Hooks.make(
    edits=[
        Edit(
            site="blocks.0.resid_post",
            kind="fn",
            fn=_steer_and_count,
            value=jnp.asarray(3.0 * np.random.default_rng(0).normal(size=32), jnp.float32),
        )
    ]
)


def _count_forwards(fn):
    _CALLS.clear()
    out = jax.block_until_ready(fn())
    jax.effects_barrier()
    return out, len(_CALLS)


# ----------------------------------------------------------------------------------------------------------------
# (a) the cache: decoding token by token equals recomputing the whole sequence


@functools.partial(jax.jit, static_argnums=0)
def _cached_forward_jit(graphdef, state, tokens, mask, cache):
    out = nnx.merge(graphdef, state).forward(tokens, mask, cache=cache, logits_last_only=True)
    return out.logits[:, 0], out.cache


def test_cached_decode_logits_equal_full_recompute(model, prompts):
    tokens, mask = prompts
    b, p = tokens.shape
    cont = np.random.default_rng(3).integers(1, V, size=(b, 4)).astype(np.int32)
    full = full_logits(
        model, np.concatenate([tokens, cont], 1), np.concatenate([mask, np.ones_like(cont)], 1)
    )
    graphdef, state = nnx.split(model)
    cache, logits = prefill(model, tokens, mask, p + 4)
    assert cache.max_len == p + 4 and int(cache.index) == p
    cached = [np.asarray(logits)]
    for j in range(cont.shape[1]):  # decode one token at a time
        step = jnp.asarray(cont[:, j : j + 1])
        logits, cache = _cached_forward_jit(graphdef, state, step, jnp.ones((b, 1), jnp.int32), cache)
        cached.append(np.asarray(logits))
    np.testing.assert_allclose(np.stack(cached, 1), full[:, p - 1 :], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(cache.lengths(), np.asarray(mask).sum(1) + 4)


# ----------------------------------------------------------------------------------------------------------------
# (b) greedy generation equals the plain uncached loop

GREEDY6 = SamplingConfig(max_new_tokens=6, temperature=0.0)
GREEDY5 = SamplingConfig(max_new_tokens=5, temperature=0.0)


def test_greedy_equals_uncached_loop(model, prompts):
    tokens, mask = prompts
    out = generate(model, tokens, mask, None, GREEDY6)
    ref_tokens, ref_lp = _plain_greedy(model, tokens, mask, 6)
    np.testing.assert_array_equal(out.tokens, ref_tokens)
    np.testing.assert_allclose(out.logprobs, ref_lp, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out.sample_logprobs, 0.0)  # greedy: a point mass
    np.testing.assert_array_equal(out.mask, 1)
    np.testing.assert_array_equal(out.lengths, 6)


def test_score_model_with_lm_head_generates_like_its_backbone(llama, prompts):
    tokens, mask = prompts
    sm = ScoreModel(llama, rngs=nnx.Rngs(0), keep_lm_head=True)
    np.testing.assert_array_equal(
        generate(sm, tokens, mask, None, GREEDY6).tokens, generate(llama, tokens, mask, None, GREEDY6).tokens
    )
    with pytest.raises(ValueError, match="keep_lm_head=False"):
        generate(ScoreModel(llama, rngs=nnx.Rngs(0)), tokens, mask, None, GREEDY6)


def test_steering_hook_applies_in_every_step(llama, prompts):
    tokens, mask = prompts
    out, forwards = _count_forwards(lambda: generate(llama, tokens, mask, None, GREEDY5, hooks=STEER))
    assert forwards == 5  # prefill + 4 decode steps (the last token is never fed back)
    ref_tokens, ref_lp = _plain_greedy(llama, tokens, mask, 5, hooks=STEER)
    np.testing.assert_array_equal(out.tokens, ref_tokens)
    np.testing.assert_allclose(out.logprobs, ref_lp, atol=1e-5, rtol=0)
    assert not np.array_equal(ref_tokens, _plain_greedy(llama, tokens, mask, 5)[0])  # the edit mattered


def test_edits_at_absolute_columns_while_generating(model, prompts):
    """A random [B, P+N] position mask and a per-position [P+N, D] steering value at the residual stream, plus a
    masked logit bias at lm_logits: generate (prefill + cached decode steps at absolute columns) equals the plain
    greedy loop that re-runs the full uncached forward with the edits cut to the columns seen so far."""
    tokens, mask = prompts
    b, p = tokens.shape
    n = GREEDY6.max_new_tokens
    rng = np.random.default_rng(7)
    cols = rng.random((b, p + n)) < 0.5
    steer = 3.0 * rng.normal(size=(p + n, 32)).astype(np.float32)
    bias_cols = rng.random(p + n) < 0.5
    bias = np.zeros(V, np.float32)
    bias[rng.integers(1, V, size=3)] = 6.0

    def edits(width):  # the edits over the first `width` columns, padded with zeros to REF_BLOCK's width
        pad = REF_BLOCK[1] - width
        return Hooks.make(
            edits=[
                add(
                    "blocks.0.resid_post",
                    np.pad(steer[:width], ((0, pad), (0, 0))),
                    mask=np.pad(cols[:, :width], ((0, 0), (0, pad))),
                ),
                add("lm_logits", bias, mask=np.pad(bias_cols[:width], (0, pad))),
            ]
        )

    hooks = Hooks.make(
        edits=[add("blocks.0.resid_post", steer, mask=cols), add("lm_logits", bias, mask=bias_cols)]
    )
    out = generate(model, tokens, mask, None, GREEDY6, hooks=hooks)
    ref_tokens, ref_lp = _plain_greedy(model, tokens, mask, n, hooks=edits)
    np.testing.assert_array_equal(out.tokens, ref_tokens)
    np.testing.assert_allclose(out.logprobs, ref_lp, atol=1e-5, rtol=0)
    assert not np.array_equal(
        out.tokens, generate(model, tokens, mask, None, GREEDY6).tokens
    )  # edits mattered


def test_per_row_edits_in_generate_equal_each_row_alone(llama, prompts):
    """A steering vector per prompt (``[B, D]`` with ``per_row=True``) with 2 samples each: sample j of prompt i
    equals prompt i run alone with its own vector ([D])."""
    tokens, mask = prompts
    site = "blocks.0.resid_post"
    vecs = 3.0 * np.random.default_rng(8).normal(size=(3, 1, 32)).astype(np.float32)
    edit = add(site, vecs[:, 0], per_row=True)
    out = generate(llama, tokens, mask, None, GREEDY5, num_samples=2, hooks=Hooks.make(edits=edit))
    for i in range(3):
        alone = generate(
            llama,
            tokens[i : i + 1],
            mask[i : i + 1],
            None,
            GREEDY5,
            hooks=Hooks.make(edits=add(site, vecs[i, 0])),
        )
        for j in range(2):
            np.testing.assert_array_equal(out.tokens[2 * i + j], alone.tokens[0])
            np.testing.assert_allclose(out.logprobs[2 * i + j], alone.logprobs[0], atol=1e-5, rtol=0)
    assert len({tuple(r) for r in np.asarray(out.tokens)}) > 1  # the rows' vectors steer them apart


# ----------------------------------------------------------------------------------------------------------------
# (c) parity with HF torch generate


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    """Tiny random HF models with the fixtures' configs (so the jitted decode loop is shared), saved to disk."""
    import torch
    import transformers

    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=V,
            n_positions=16,
            n_embd=32,
            n_layer=2,
            n_head=4,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=None,  # no EOS: HF must not stop or suppress tokens
            eos_token_id=None,
        )
    )
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=V,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        )
    )
    with torch.no_grad():  # peaky logits, as for our fixtures
        gpt2.transformer.ln_f.weight.mul_(20.0)
        llama.model.norm.weight.mul_(20.0)
    out = {}
    for name, m in [("gpt2", gpt2), ("llama", llama)]:
        path = tmp_path_factory.mktemp(f"hf_{name}")
        m.eval().save_pretrained(path)
        out[name] = (m, path)
    return out


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_greedy_equals_hf_generate(hf_models, name, prompts):
    """Left-padded batch with attention_mask (HF derives position ids from it in generate)."""
    import torch

    from jaxsafety.models.hf import from_hf

    hf, path = hf_models[name]
    ours = from_hf(path)
    tokens, mask = prompts
    n = GREEDY6.max_new_tokens
    with torch.no_grad():
        ref = hf.generate(
            input_ids=torch.tensor(np.asarray(tokens), dtype=torch.long),
            attention_mask=torch.tensor(np.asarray(mask), dtype=torch.long),
            do_sample=False,
            max_new_tokens=n,
            pad_token_id=PAD,
            output_logits=True,
            return_dict_in_generate=True,
        )
    ref_tokens = ref.sequences[:, tokens.shape[1] :].numpy()
    ref_logp = torch.log_softmax(torch.stack(ref.logits, 1).double(), -1).numpy()  # raw logits per step
    out = generate(ours, tokens, mask, None, GREEDY6)
    np.testing.assert_array_equal(out.tokens, ref_tokens)
    ref_lp = np.take_along_axis(ref_logp, ref_tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.logprobs, ref_lp, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# (d) sampling: filters, frequencies, EOS, determinism


def _np_top_k(x: np.ndarray, k: int) -> np.ndarray:
    if k == 0:
        return x
    out = np.full_like(x, -np.inf)
    for i, row in enumerate(x):
        keep = np.argsort(-row)[:k]
        out[i, keep] = row[keep]
    return out


def _np_top_p(x: np.ndarray, p: float) -> np.ndarray:
    out = np.full_like(x, -np.inf)
    for i, row in enumerate(x):
        order = np.argsort(-row)
        finite = row[order] > -np.inf
        probs = np.exp(row[order][finite] - scipy.special.logsumexp(row[order][finite]))
        n = int(np.searchsorted(np.cumsum(probs), p - 1e-12)) + 1  # smallest prefix with mass >= p
        keep = order[: min(n, int(finite.sum()))]
        out[i, keep] = row[keep]
    return out


def _np_sampling_probs(logits: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    x = _np_top_p(_np_top_k(logits.astype(np.float64) / cfg.temperature, cfg.top_k), cfg.top_p)
    return np.exp(x - scipy.special.logsumexp(x, axis=-1, keepdims=True))


def test_top_k_top_p_match_numpy():
    x = np.random.default_rng(0).normal(size=(16, 50)).astype(np.float32) * 2
    for k in (0, 1, 5, 49, 50):
        np.testing.assert_array_equal(mask_top_k(jnp.asarray(x), k), _np_top_k(x, k))
    for p in (1e-6, 0.3, 0.9, 0.999, 1.0):
        got = np.asarray(mask_top_p(jnp.asarray(x), p))
        want = x if p == 1.0 else _np_top_p(x, p)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.isfinite(mask_top_p(jnp.asarray(x), 1e-6)).sum(-1), 1)  # top token kept
    both = np.asarray(mask_top_p(mask_top_k(jnp.asarray(x), 10), 0.8))
    np.testing.assert_array_equal(both, _np_top_p(_np_top_k(x, 10), 0.8))


@pytest.mark.parametrize(
    ("cfg", "num_samples"),
    [
        (SamplingConfig(max_new_tokens=1, temperature=1.0), 1),
        (SamplingConfig(max_new_tokens=3, temperature=1.3, top_k=12, top_p=0.8), 4000),
    ],
    ids=["temperature_tiled_prompt", "top_k_top_p_num_samples"],
)
def test_sample_frequencies_match_sampling_distribution(llama, cfg, num_samples):
    """First-token frequencies over 4000 rows vs the exact sampling distribution (numpy reference filters on the
    model's logits), chi-square; log-probs vs the raw and the filtered distributions; re-scoring; determinism.
    The 4000 rows are either the prompt tiled 4000 times or one prompt with ``num_samples=4000`` (one prefill,
    cache tiled): both must be draws from the same distribution."""
    n = 4000
    prompt = np.asarray([[5, 9, 14, 3]])
    batch = jnp.asarray(np.repeat(prompt, n, 0))
    logits = full_logits(llama, prompt)[0, -1]
    probs = _np_sampling_probs(logits[None], cfg)[0]
    gen = functools.partial(generate, num_samples=num_samples)
    inputs = jnp.asarray(prompt) if num_samples > 1 else batch
    out = gen(llama, inputs, None, jax.random.key(42), cfg)
    assert out.tokens.shape == (n, cfg.max_new_tokens)
    toks = np.asarray(out.tokens)[:, 0]
    counts = np.bincount(toks, minlength=V)
    assert counts[probs == 0].sum() == 0, "sampled a token outside the top-k / top-p support"
    exp = n * probs
    big = exp >= 5  # chi-square on the support, merging bins with expected count < 5
    small = ~big & (probs > 0)
    obs_b, exp_b = counts[big], exp[big]
    if small.any():
        obs_b, exp_b = np.append(obs_b, counts[small].sum()), np.append(exp_b, exp[small].sum())
    pval = scipy.stats.chisquare(obs_b, exp_b).pvalue
    assert pval > 1e-3, f"sample frequencies differ from the sampling distribution (p={pval:.2e})"
    assert big.sum() >= 4  # the test has power: several tokens carry mass
    raw = logits - scipy.special.logsumexp(logits)
    np.testing.assert_allclose(np.asarray(out.logprobs)[:, 0], raw[toks], atol=1e-4)
    np.testing.assert_allclose(np.asarray(out.sample_logprobs)[:, 0], np.log(probs[toks]), atol=1e-4)
    if cfg.max_new_tokens > 1:  # every step's raw log-prob equals re-scoring prompt + completion, uncached
        seq = jnp.concatenate([batch, out.tokens], 1)
        lp = np.asarray(sequence_logprobs(llama, seq, jnp.concatenate([jnp.ones_like(batch), out.mask], 1)))
        np.testing.assert_allclose(out.logprobs, lp[:, prompt.shape[1] :], atol=1e-5, rtol=0)
        slp = sequence_logprobs(
            llama, seq, jnp.concatenate([jnp.ones_like(batch), out.mask], 1), sampling=cfg
        )
        np.testing.assert_allclose(out.sample_logprobs, np.asarray(slp)[:, prompt.shape[1] :], atol=1e-4)
        assert len({tuple(r) for r in np.asarray(out.tokens)}) > 100  # later steps sample too (fresh keys)
    # determinism: the same key gives the same samples; another key gives others
    np.testing.assert_array_equal(gen(llama, inputs, None, jax.random.key(42), cfg).tokens, out.tokens)
    assert not np.array_equal(gen(llama, inputs, None, jax.random.key(43), cfg).tokens, out.tokens)


def test_num_samples_greedy_rows_equal_single_sample_run(model, prompts):
    """Greedy: every one of the n samples of prompt i (rows i*n .. i*n + n-1) equals the n=1 run of prompt i,
    itself checked against the plain uncached loop."""
    tokens, mask = prompts
    one = generate(model, tokens, mask, None, GREEDY6)
    many = generate(model, tokens, mask, None, GREEDY6, num_samples=3)
    assert many.tokens.shape == (9, 6)
    np.testing.assert_array_equal(many.tokens, np.repeat(np.asarray(one.tokens), 3, axis=0))
    np.testing.assert_allclose(many.logprobs, np.repeat(np.asarray(one.logprobs), 3, axis=0), atol=1e-5)
    np.testing.assert_array_equal(many.lengths, 6)


def test_eos_masks_pads_and_stops_early(llama, prompts):
    """EOS semantics against the EOS-free run (itself checked against the plain loop): each row keeps its tokens up
    to and including its first EOS, then pad (mask 0, log-prob 0); the loop stops once every row is done."""
    tokens, mask = prompts
    n = GREEDY5.max_new_tokens
    free = np.asarray(generate(llama, tokens, mask, None, GREEDY5, hooks=STEER).tokens)
    eos = (int(free[0, 1]), int(free[1, 2]), int(free[2, 3]))  # every row ends by step 3 of 5
    first_hit = np.array([np.flatnonzero(np.isin(row, eos))[0] for row in free])
    cfg = SamplingConfig(max_new_tokens=n, temperature=0.0, eos_token_id=eos, pad_token_id=63)
    out, forwards = _count_forwards(lambda: generate(llama, tokens, mask, None, cfg, hooks=STEER))
    for row, hit, got_tok, got_mask, got_lp in zip(
        free, first_hit, np.asarray(out.tokens), np.asarray(out.mask), np.asarray(out.logprobs)
    ):
        np.testing.assert_array_equal(got_tok[: hit + 1], row[: hit + 1])
        np.testing.assert_array_equal(got_tok[hit + 1 :], 63)
        np.testing.assert_array_equal(got_mask, np.arange(n) <= hit)
        assert (got_lp[: hit + 1] < 0).all() and (got_lp[hit + 1 :] == 0).all()
    np.testing.assert_array_equal(out.lengths, first_hit + 1)
    assert forwards == 1 + first_hit.max()  # prefill + one decode forward per step until every row is done
    assert forwards < n  # fewer than the prefill + (n - 1) decode forwards of a full run


# ----------------------------------------------------------------------------------------------------------------
# (e) shared-prefix scoring and sequence log-probs


def test_score_continuations_equals_sequence_logprobs(model):
    prefix = np.asarray([5, 9, 14, 3])
    cont, cmask = right_pad([[7, 1, 30, 2, 8], [11], [40, 41, 42]], PAD)
    got = score_continuations(model, prefix, cont, cmask)
    seq = np.concatenate([np.repeat(prefix[None], 3, 0), np.asarray(cont)], 1)
    smask = np.concatenate([np.ones((3, 4), np.int32), np.asarray(cmask)], 1)
    ref = np.asarray(sequence_logprobs(model, seq, smask))[:, 4:]
    np.testing.assert_allclose(got.logprobs, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.total, ref.sum(-1), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(np.asarray(got.logprobs)[np.asarray(cmask) == 0], 0.0)


def test_score_batched_prefixes_with_edits_equals_sequence_logprobs(model):
    """K=2 left-padded prefixes x M=3 right-padded continuations, with a position-masked steering edit over the
    scored sequences' absolute columns: equal to sequence_logprobs (one uncached forward) of the concatenated
    [K*M, P + C] sequences with the same edit. Bucketing pads prefix and continuations internally (P=4 -> 4,
    C=5 -> 8), and the edit's columns follow."""
    prefix, pmask = left_pad([[5, 9, 14, 3], [8, 2]], PAD)
    conts = [[[7, 1, 30, 2, 8], [11], [40, 41, 42]], [[3, 3], [9, 1, 5, 6], [20]]]
    cont = np.stack([np.asarray(right_pad(c, PAD, 5)[0]) for c in conts])
    cmask = np.stack([np.asarray(right_pad(c, PAD, 5)[1]) for c in conts])
    rng = np.random.default_rng(4)
    cols = rng.random((6, 9)) < 0.5
    hooks = Hooks.make(edits=add("blocks.0.resid_post", 3.0 * rng.normal(size=(9, 32)), mask=cols))
    got = score_continuations(model, prefix, cont, cmask, prefix_mask=pmask, hooks=hooks)
    assert got.logprobs.shape == (2, 3, 5) and got.total.shape == (2, 3)
    seq = np.concatenate([np.repeat(np.asarray(prefix), 3, 0), cont.reshape(6, 5)], 1)
    smask = np.concatenate([np.repeat(np.asarray(pmask), 3, 0), cmask.reshape(6, 5)], 1)
    ref = np.asarray(sequence_logprobs(model, seq, smask, hooks=hooks))[:, 4:].reshape(2, 3, 5)
    np.testing.assert_allclose(got.logprobs, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.total, ref.sum(-1), atol=1e-4, rtol=0)
    plain = score_continuations(model, prefix, cont, cmask, prefix_mask=pmask)
    assert float(np.abs(np.asarray(plain.total) - np.asarray(got.total)).max()) > 0.1  # the edit mattered


def test_score_per_row_edits_equal_each_row_alone(llama):
    """One steering vector per scored continuation ([B, 1, D], the form ``per_row=True`` builds from [B, D]):
    equal to scoring each continuation alone with its own vector ([D])."""
    prefix = np.asarray([5, 9, 14, 3])
    cont, cmask = right_pad([[7, 1, 30, 2, 8], [11], [40, 41, 42]], PAD)
    site = "blocks.1.resid_mid"
    vecs = 3.0 * np.random.default_rng(9).normal(size=(3, 1, 32)).astype(np.float32)
    got = score_continuations(llama, prefix, cont, cmask, hooks=Hooks.make(edits=add(site, vecs)))
    for i in range(3):
        alone = score_continuations(
            llama, prefix, cont[i : i + 1], cmask[i : i + 1], hooks=Hooks.make(edits=add(site, vecs[i, 0]))
        )
        np.testing.assert_allclose(got.logprobs[i], alone.logprobs[0], atol=1e-5, rtol=0)
    assert np.ptp(np.asarray(got.total)) > 0


def test_score_continuations_buckets_lengths_into_one_program(llama):
    """Prefixes of 5, 6, 7 and 8 tokens with continuations of 3 and 4 share one compiled program (bucket 8 + 4);
    every score equals sequence_logprobs of the concatenation."""
    rng = np.random.default_rng(5)
    before = _score_continuations_jit._cache_size()
    for p, c in [(5, 3), (6, 4), (7, 3), (8, 4)]:
        prefix = rng.integers(1, V, size=p)
        cont = rng.integers(1, V, size=(2, 3, c))[:1]  # K=1, M=3
        got = score_continuations(llama, prefix[None], cont)
        seq = np.zeros((3, 12), np.int32)  # one reference shape: right-padded to 12 columns
        smask = np.zeros((3, 12), np.int32)
        seq[:, : p + c] = np.concatenate([np.repeat(prefix[None], 3, 0), cont[0]], 1)
        smask[:, : p + c] = 1
        ref = np.asarray(sequence_logprobs(llama, seq, smask))[:, p : p + c]
        np.testing.assert_allclose(got.logprobs[0], ref, atol=1e-5, rtol=0)
    assert _score_continuations_jit._cache_size() - before == 1


def test_sequence_logprobs_under_the_sampling_distribution(llama):
    """sampling=SamplingConfig: log-probs under temperature + top-k + top-p against a numpy filtered softmax of
    the model's logits (-inf outside the support); greedy is the point mass at the argmax (0 there, -inf else)."""
    tokens = np.random.default_rng(6).integers(1, V, size=REF_BLOCK).astype(np.int32)
    for t in range(0, REF_BLOCK[1] - 1, 2):  # every other token is the argmax of its context
        tokens[:, t + 1] = full_logits(llama, tokens)[:, t].argmax(-1)
    logits = full_logits(llama, tokens)  # [3, 12, V]
    nxt = tokens[:, 1:, None]
    cfg = SamplingConfig(temperature=1.3, top_k=12, top_p=0.8)
    probs = _np_sampling_probs(logits.reshape(-1, V), cfg).reshape(logits.shape)
    with np.errstate(divide="ignore"):
        want = np.log(np.take_along_axis(probs[:, :-1], nxt, -1)[..., 0])
    got = np.asarray(sequence_logprobs(llama, tokens, sampling=cfg))
    np.testing.assert_array_equal(got[:, 0], 0.0)  # no context
    np.testing.assert_allclose(got[:, 1:], want, atol=1e-4)
    assert np.isinf(want).any() and np.isfinite(want).any()
    greedy = np.asarray(sequence_logprobs(llama, tokens, sampling=SamplingConfig(temperature=0.0)))
    is_top = tokens[:, 1:] == logits[:, :-1].argmax(-1)
    np.testing.assert_array_equal(greedy[:, 1:], np.where(is_top, 0.0, -np.inf))
    assert is_top.any() and not is_top.all()


def test_sequence_logprobs_reference(llama):
    """Against log_softmax of unpadded forwards; padding (left, right, both) is ignored."""
    seqs = [[5, 9, 14, 3, 7], [8, 2], [4, 4, 6, 1, 2, 3, 9, 9, 5]]
    starts = [1, 2, 0]
    tokens, mask = np.zeros((3, 9), np.int32), np.zeros((3, 9), np.int32)  # same shape as the scoring test
    for row, (s, start) in enumerate(zip(seqs, starts)):
        tokens[row, start : start + len(s)], mask[row, start : start + len(s)] = s, 1
    got = np.asarray(sequence_logprobs(llama, tokens, mask))
    for row, (s, start) in enumerate(zip(seqs, starts)):
        logits = full_logits(llama, [s])[0]
        want = np.zeros(9)
        want[start + 1 : start + len(s)] = (logits - scipy.special.logsumexp(logits, -1, keepdims=True))[
            np.arange(len(s) - 1), s[1:]
        ]  # 0 at padding and at the first real token (no context)
        np.testing.assert_allclose(got[row], want, atol=1e-5, rtol=0)
    # the pure function is differentiable (what RLHF losses use): d/dlogits of one token's log-prob
    g = jax.jit(jax.grad(lambda z: token_logprobs(z, jnp.asarray(tokens), jnp.asarray(mask))[0, 2]))(
        jnp.zeros((3, 9, V))
    )
    g = np.asarray(g)
    np.testing.assert_allclose(g[0, 1], np.eye(V)[9] - 1.0 / V, atol=1e-6)  # position 1 predicts token 9
    assert np.count_nonzero(g) == V


# ----------------------------------------------------------------------------------------------------------------
# (f) bad input


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"eos_token_id": -2}, "eos_token_id"),
        ({"eos_token_id": (1, "x")}, "eos_token_id"),
        ({"pad_token_id": -1}, "pad_token_id"),
    ],
)
def test_bad_config_names_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}=.* accepted values are"):
        SamplingConfig(**kwargs)


def test_config_is_hashable_and_normalises_eos_list():
    cfg = SamplingConfig(eos_token_id=[3, 4])
    assert cfg.eos_token_id == (3, 4) and cfg.eos_ids == (3, 4)
    assert hash(cfg) == hash(SamplingConfig(eos_token_id=(3, 4)))


def test_bad_generate_inputs(gpt2, prompts):
    tokens, mask = prompts
    greedy = SamplingConfig(max_new_tokens=4, temperature=0.0)
    right_tokens, right_mask = right_pad(PROMPTS, PAD)
    with pytest.raises(ValueError, match="prompt_mask is invalid: accepted values are LEFT-padded"):
        generate(gpt2, right_tokens, right_mask, None, greedy)
    with pytest.raises(ValueError, match=r"max_new_tokens=17 is invalid: .*max_seq_len \(16\)"):
        generate(gpt2, tokens, mask, None, SamplingConfig(max_new_tokens=12, temperature=0.0))
    with pytest.raises(ValueError, match=r"pad_token_id=64 is invalid: .*vocab_size \(64\)"):
        generate(gpt2, tokens, mask, None, SamplingConfig(max_new_tokens=4, temperature=0.0, pad_token_id=64))
    with pytest.raises(ValueError, match="num_samples=0 is invalid"):
        generate(gpt2, tokens, mask, None, greedy, num_samples=0)
    with pytest.raises(ValueError, match="key=None is invalid"):
        generate(gpt2, tokens, mask, None, SamplingConfig(max_new_tokens=4))
    with pytest.raises(ValueError, match=r"hooks\.capture"):
        generate(gpt2, tokens, mask, None, greedy, hooks=Hooks.make(capture="final_hidden"))
    with pytest.raises(ValueError, match="continuation_mask is invalid: accepted values are RIGHT-padded"):
        score_continuations(gpt2, [1, 2], tokens, mask)
    with pytest.raises(ValueError, match=r"prefix\.shape"):
        score_continuations(gpt2, tokens, tokens)
    with pytest.raises(
        ValueError, match=r"continuations\.shape=\(2, 1, 5\) is invalid: accepted values are \[3, M, C\]"
    ):
        score_continuations(gpt2, tokens, tokens[:2, None], prefix_mask=mask)
    with pytest.raises(ValueError, match="prefix_mask is invalid: accepted values are LEFT-padded"):
        score_continuations(gpt2, right_tokens, right_tokens[:, None], prefix_mask=right_mask)
    # edits index absolute columns: a mask over the prompt's 5 columns is not a mask over prompt + 4 new ones
    site = "blocks.0.resid_post"
    with pytest.raises(
        ValueError, match=r"mask of shape \(3, 5\) is invalid for generate: axis 1 accepted values are 1 or 9"
    ):
        generate(gpt2, tokens, mask, None, greedy, hooks=Hooks.make(edits=add(site, jnp.ones(32), mask=mask)))
    with pytest.raises(
        ValueError,
        match=r"value of shape \(6, 1, 32\) is invalid for generate: axis 0 accepted values are 1 or 3 \(one per prompt\)",
    ):
        generate(
            gpt2,
            tokens,
            mask,
            None,
            greedy,
            num_samples=2,
            hooks=Hooks.make(edits=add(site, jnp.ones((6, 1, 32)))),
        )
    with pytest.raises(ValueError, match="sampling of type str is invalid"):
        sequence_logprobs(gpt2, tokens, mask, sampling="greedy")


def test_left_pad_layout():
    tokens, mask = left_pad([[1, 2, 3], [4]], pad_id=9, length=4)
    np.testing.assert_array_equal(tokens, [[9, 1, 2, 3], [9, 9, 9, 4]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1]])
    with pytest.raises(ValueError, match="length=2 is invalid"):
        left_pad([[1, 2, 3]], 0, length=2)
