"""LM PPO benchmark (``benchmarks/lm_ppo.py`` and its TRL peer ``benchmarks/lm_ppo_trl.py``): the parts that run
without the TRL virtualenv.

- The weights the driver hands to TRL are ours: the exported causal-LM directory gives HF torch logits equal to
  our backbone's, and the exported sequence-classification directory gives HF scores equal to our ScoreModel's
  (HF pools at the last non-pad token, with pad = vocab_size, as the TRL side runs it).
- Our reward function scores ``[prompt | response]`` exactly as HF's classifier does (TRL's ``get_reward`` on the
  reward model), also when the response is partly masked.
- The TRL script's tokenizer maps ``t<i>`` to id ``i`` and pads with id ``vocab`` (outside the model); the script
  imports neither jax nor jaxsafety (it runs in a venv without them).
- Bad sizes raise a ConfigError naming the field.
The TRL run itself needs ``.venv-trl`` and is not part of the default tests.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from benchmarks import lm_ppo, lm_ppo_trl
from jaxsafety.config import ConfigError
from tests.benchmarks.peer_imports import import_roots


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    bc = lm_ppo.bench_config(quick=True)
    policy, reward = lm_ppo.make_models(bc.model)
    policy_dir, score_dir = lm_ppo.export_weights(policy, tmp_path_factory.mktemp("w"))
    return bc, policy, reward, policy_dir, score_dir


def _tokens(bc, rows=4, length=12, seed=0):
    return np.random.default_rng(seed).integers(0, bc.model.vocab_size, (rows, length))


def test_exported_policy_gives_our_logits_in_hf_torch(exported):
    from transformers import AutoModelForCausalLM

    bc, policy, _, policy_dir, _ = exported
    hf = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    tokens = _tokens(bc)
    with torch.no_grad():
        theirs = hf(torch.as_tensor(tokens)).logits.numpy()
    ours = np.asarray(policy.backbone(jnp.asarray(tokens)))
    assert ours.shape == theirs.shape == (*tokens.shape, bc.model.vocab_size)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)  # float32 rounding (measured ~2e-6)
    assert hf.config.eos_token_id is None and hf.config.pad_token_id == bc.model.vocab_size


def test_exported_score_model_and_reward_fn_give_hf_classifier_scores(exported):
    from transformers import AutoModelForSequenceClassification

    bc, _, reward, _, score_dir = exported
    hf = AutoModelForSequenceClassification.from_pretrained(score_dir, num_labels=1).eval()
    prompt, response = _tokens(bc, length=5, seed=1), _tokens(bc, length=7, seed=2)
    rmask = np.ones(response.shape, np.int32)
    rmask[1, 4:] = 0  # a response that ended early: TRL pads it, HF pools before the padding
    rmask[2, 1:] = 0
    assert list(5 + rmask.sum(1) - 1) == [11, 8, 5, 11]  # the pooled positions
    full = np.concatenate([prompt, np.where(rmask == 1, response, bc.model.vocab_size)], axis=1)
    with torch.no_grad():  # TRL 1.12's get_reward, restated: the score at the token before the first pad
        attn = torch.as_tensor(full != bc.model.vocab_size)
        ids = torch.as_tensor(full).masked_fill(~attn, 0)
        pos = attn.long().cumsum(1) - attn.long()
        hidden = hf.transformer(input_ids=ids, attention_mask=attn, position_ids=pos).last_hidden_state
        last = (attn.sum(1) - 1).numpy()
        theirs = hf.score(hidden)[torch.arange(len(full)), torch.as_tensor(last), 0].numpy()
    reward_fn, params = lm_ppo.reward_scorer(reward)
    ours = np.asarray(
        reward_fn(
            params, jnp.asarray(prompt), jnp.ones(prompt.shape, jnp.int32), jnp.asarray(response), rmask
        )
    )
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    assert np.ptp(ours) > 1e-3  # the rows differ: a wrong pooling position would show


def test_policy_and_reward_copies_are_identical_and_independent(exported):
    bc, policy, reward, _, _ = exported
    tokens = jnp.asarray(_tokens(bc))
    np.testing.assert_array_equal(np.asarray(policy(tokens)), np.asarray(reward(tokens)))
    assert policy.backbone is not reward.backbone


def test_trl_tokenizer_ids_and_padding():
    tok = lm_ppo_trl.make_tokenizer(64)
    assert tok("t3 t5 t63")["input_ids"] == [3, 5, 63]
    assert tok.pad_token_id == 64 and tok.eos_token_id == 0
    padded = tok.pad({"input_ids": [[1, 2, 3], [4]]}, padding=True)["input_ids"]
    assert [list(row) for row in padded] == [[1, 2, 3], [4, 64, 64]]  # right padding with the pad id


def test_trl_script_imports_neither_jax_nor_jaxsafety():
    roots = import_roots(lm_ppo_trl.__file__)
    assert {"torch", "trl", "transformers"} <= roots
    assert not roots & {"jax", "jaxsafety", "flax", "optax", "benchmarks"}


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("batch", 0, ">= 1"),
        ("minibatches", 3, "divisors of batch"),
        ("response_len", 30, "max_seq_len - prompt_len"),
    ],
)
def test_bench_config_rejects_bad_sizes(field, value, accepted):
    bc = lm_ppo.bench_config(quick=True)
    kwargs = {**bc.__dict__, field: value}
    with pytest.raises(ConfigError, match=field) as err:
        lm_ppo.BenchConfig(**kwargs)
    assert accepted in str(err.value)
