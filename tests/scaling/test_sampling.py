"""The exact success probability against a plain teacher-forcing loop without padding or batching; sampled success
frequencies of the KV-cache sampler against the exact probabilities (binomial tests per problem and a chi-square
over problems); greedy attempts against exact 0/1 probabilities (the layout of prompts and samples); validation
errors.

One tiny model is trained once per module (a few seconds, through the trained-model cache in a temporary
directory); the two statistical sampling tests share one batch shape, so the sampler compiles once for them.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from jaxsafety.config import ConfigError
from jaxsafety.data.arithmetic import arithmetic_problems
from jaxsafety.scaling.sampling import exact_success_probability, sample_attempts, sample_success_counts
from jaxsafety.train.pretrained import ArithmeticLMConfig, arithmetic_lm

TINY = ArithmeticLMConfig(d_model=32, n_layers=2, n_heads=4, max_operand=9, steps=150, batch_size=64)
BATCH = 2000  # the sampling calls below decode 2 prompts [2, 8] x 1000 samples for 4 tokens: one compilation
NEW_TOKENS = 4  # " 81." is the longest completion with operands <= 9


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, tokens):
    """Plain full-sequence logits, no cache, no padding (causal: one pass gives every prefix's prediction)."""
    return nnx.merge(graphdef, state)(tokens)


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return arithmetic_lm(TINY, seed=0, root=tmp_path_factory.mktemp("cache"))


# ----------------------------------------------------------------------------------------------------------------
# the trained model (config validation and the cache: tests/train/test_pretrained.py), exact probabilities and
# sampling


def test_training_lowers_the_loss(lm):
    assert lm.losses.shape == (TINY.steps,) and np.isfinite(lm.losses).all()
    assert lm.losses[-20:].mean() < lm.losses[:5].mean() - 1.0


@pytest.mark.slow
def test_training_is_deterministic_and_independent_of_chunking(lm, tmp_path):
    again = arithmetic_lm(
        TINY, seed=0, root=tmp_path, chunk_steps=40
    )  # 40, 40, 40, 30 steps: a second compilation
    assert not again.from_cache
    np.testing.assert_array_equal(again.losses, lm.losses)
    same = jax.tree.map(np.array_equal, nnx.state(again.model, nnx.Param), nnx.state(lm.model, nnx.Param))
    assert all(jax.tree.leaves(same))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_exact_probability_matches_a_plain_teacher_forcing_loop(lm, temperature):
    probs = arithmetic_problems(6, seed=5, max_operand=9)
    exact = exact_success_probability(lm.model, lm.tokenizer, probs, temperature=temperature)
    tok = lm.tokenizer
    graphdef, state = nnx.split(lm.model)
    for i, (prompt, completion) in enumerate(zip(probs.prompts, probs.completions)):
        context, target = [tok.bos_token_id, *tok.encode(prompt)], tok.encode(completion)
        logits = np.asarray(
            _forward(graphdef, state, np.asarray([context + target], np.int32))[0], np.float64
        )
        p = 1.0
        for j, t in enumerate(target):  # unpadded, unbatched, float64 softmax
            z = logits[len(context) + j - 1] / temperature
            q = np.exp(z - z.max())
            p *= q[t] / q.sum()
        np.testing.assert_allclose(exact[i], p, rtol=2e-4)


def test_sampled_success_frequencies_match_exact_probabilities(lm):
    probs = arithmetic_problems(20, seed=1, max_operand=9)
    n = 1000
    p = exact_success_probability(lm.model, lm.tokenizer, probs)
    assert 0.01 < np.median(p) < 0.99, p  # the test needs probabilities the sampler can resolve
    attempts = sample_attempts(
        lm.model,
        lm.tokenizer,
        probs,
        num_attempts=n,
        key=jax.random.key(0),
        max_new_tokens=NEW_TOKENS,
        batch_size=BATCH,
    )
    assert attempts.shape == (20, n) and attempts.dtype == bool
    c = attempts.sum(1)
    # per problem: exact two-sided binomial test, Bonferroni over problems
    pvals = np.array([scipy.stats.binomtest(int(ci), n, float(pi)).pvalue for ci, pi in zip(c, p)])
    assert pvals.min() * len(pvals) > 1e-3, (c, n * p)
    # jointly: sum of squared z-scores over problems with a resolvable variance ~ chi-square(df)
    ok = n * p * (1 - p) >= 5
    z2 = (c[ok] - n * p[ok]) ** 2 / (n * p[ok] * (1 - p[ok]))
    assert ok.sum() >= 10
    assert scipy.stats.chi2.sf(z2.sum(), ok.sum()) > 1e-3, (z2.sum(), ok.sum())


def test_sampling_is_deterministic_in_the_key(lm):
    probs = arithmetic_problems(2, seed=2, max_operand=9)
    kw = {"num_attempts": 1000, "max_new_tokens": NEW_TOKENS, "batch_size": BATCH}  # one call, 2 x 1000 rows
    a = sample_attempts(lm.model, lm.tokenizer, probs, key=jax.random.key(7), **kw)
    counts = sample_success_counts(lm.model, lm.tokenizer, probs, key=jax.random.key(7), **kw)
    other = sample_attempts(lm.model, lm.tokenizer, probs, key=jax.random.key(8), **kw)
    np.testing.assert_array_equal(counts, a.sum(1))
    assert counts.dtype == np.int64
    assert not np.array_equal(a, other)


def test_greedy_attempts_land_on_their_problems(lm):
    """Greedy decoding makes every attempt the argmax completion, so each attempt's success is the exact 0/1
    probability of its problem: checks the layout of prompt groups, sample rounds, padding and dropped surplus
    (5 problems, 7 attempts, 3 rows per call: 3 samples per prompt, 1 prompt per call, 3 rounds, 2 surplus)."""
    probs = arithmetic_problems(5, seed=6, max_operand=9)
    p = exact_success_probability(lm.model, lm.tokenizer, probs, temperature=0.0)
    assert set(p.tolist()) <= {0.0, 1.0} and 0 < p.sum() < 5, p  # both outcomes occur
    kw = {"num_attempts": 7, "key": jax.random.key(0), "temperature": 0.0, "max_new_tokens": NEW_TOKENS}
    for batch_size in (3, 16):  # 16: 2 prompts x 7 samples per call, the last of 3 calls padded
        got = sample_attempts(lm.model, lm.tokenizer, probs, batch_size=batch_size, **kw)
        np.testing.assert_array_equal(got, np.repeat(p[:, None] > 0.5, 7, axis=1))


def test_sampling_validation_names_the_field(lm):
    probs = arithmetic_problems(4, seed=2, max_operand=9)
    key = jax.random.key(0)
    with pytest.raises(ConfigError, match=r"^num_attempts="):
        sample_attempts(lm.model, lm.tokenizer, probs, num_attempts=0, key=key)
    with pytest.raises(ConfigError, match=r"^max_new_tokens="):
        sample_attempts(lm.model, lm.tokenizer, probs, num_attempts=1, key=key, max_new_tokens=1)
    with pytest.raises(ConfigError, match=r"^temperature="):
        sample_attempts(lm.model, lm.tokenizer, probs, num_attempts=1, key=key, temperature=-1.0)
