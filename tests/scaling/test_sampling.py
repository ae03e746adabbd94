"""The exact success probability against a plain teacher-forcing loop without padding or batching; sampled success
frequencies of the KV-cache sampler against the exact probabilities (binomial tests per problem and a chi-square
over problems); validation errors.

One tiny model is trained once per module (a few seconds); the sampling tests share one batch shape, so the
sampler compiles once.
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
from jaxsafety.scaling.sampling import (
    ArithmeticLMConfig,
    exact_success_probability,
    sample_attempts,
    sample_success_counts,
    train_arithmetic_lm,
)

TINY = ArithmeticLMConfig(d_model=32, n_layers=2, n_heads=4, max_operand=9, steps=150, batch_size=64)
BATCH = 2000  # every sampling call below decodes [2000, 8] prompts for 4 tokens: one compilation
NEW_TOKENS = 4  # " 81." is the longest completion with operands <= 9


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, tokens):
    """Plain full-sequence logits, no cache, no padding (causal: one pass gives every prefix's prediction)."""
    return nnx.merge(graphdef, state)(tokens)


@pytest.fixture(scope="module")
def lm():
    return train_arithmetic_lm(TINY, seed=0)


# ----------------------------------------------------------------------------------------------------------------
# config (the problems and the tokenizer are tested in tests/data/test_arithmetic.py, tests/models/test_tokenizer.py)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"arch": "bert"}, "arch"),
        ({"d_model": 64, "n_heads": 3}, "n_heads"),
        ({"ops": ("+", "%")}, "ops"),
        ({"max_operand": 0}, "max_operand"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}="):
        ArithmeticLMConfig(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# the trained model, exact probabilities and sampling


def test_training_lowers_the_loss(lm):
    assert lm.losses.shape == (TINY.steps,) and np.isfinite(lm.losses).all()
    assert lm.losses[-20:].mean() < lm.losses[:5].mean() - 1.0


@pytest.mark.slow
def test_training_is_deterministic_and_independent_of_chunking(lm):
    again = train_arithmetic_lm(TINY, seed=0, chunk_steps=40)  # 40, 40, 40, 30 steps: a second compilation
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
    probs = arithmetic_problems(4, seed=2, max_operand=9)
    kw = {"num_attempts": 500, "max_new_tokens": NEW_TOKENS, "batch_size": BATCH}  # one [2000, 8] batch
    a = sample_attempts(lm.model, lm.tokenizer, probs, key=jax.random.key(7), **kw)
    counts = sample_success_counts(lm.model, lm.tokenizer, probs, key=jax.random.key(7), **kw)
    other = sample_attempts(lm.model, lm.tokenizer, probs, key=jax.random.key(8), **kw)
    np.testing.assert_array_equal(counts, a.sum(1))
    assert counts.dtype == np.int64
    assert not np.array_equal(a, other)


def test_sampling_validation_names_the_field(lm):
    probs = arithmetic_problems(4, seed=2, max_operand=9)
    key = jax.random.key(0)
    with pytest.raises(ConfigError, match=r"^num_attempts="):
        sample_attempts(lm.model, lm.tokenizer, probs, num_attempts=0, key=key)
    with pytest.raises(ConfigError, match=r"^max_new_tokens="):
        sample_attempts(lm.model, lm.tokenizer, probs, num_attempts=1, key=key, max_new_tokens=1)
    with pytest.raises(ConfigError, match=r"^temperature="):
        sample_attempts(lm.model, lm.tokenizer, probs, num_attempts=1, key=key, temperature=-1.0)
