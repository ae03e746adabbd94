"""The trained-model cache: a miss trains and stores an HF checkpoint, a hit loads the same weights."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.data.corpus import CorpusConfig
from jaxsafety.train import OptimizerConfig
from jaxsafety.train.lm import PretrainConfig, pretrain
from jaxsafety.train.pretrained import pretrained_lm, pretrained_lm_key

TINY = PretrainConfig(
    arch="llama",
    d_model=32,
    n_layers=1,
    n_heads=2,
    vocab_size=300,
    synthetic=CorpusConfig(num_documents=200, num_entities=10),
    seq_len=32,
    batch_size=4,
    steps=6,
    optim=OptimizerConfig(name="adamw", lr=3e-3, schedule="cosine", warmup_steps=2),
)


@nnx.jit
def _logits(model, tokens):
    return model(tokens)


def test_miss_trains_hit_loads_identical_weights(tmp_path):
    first = pretrained_lm(TINY, root=tmp_path)
    assert not first.from_cache
    assert (first.path / "config.json").is_file() and (first.path / "tokenizer.json").is_file()
    second = pretrained_lm(TINY, root=tmp_path)
    assert second.from_cache and second.path == first.path
    assert second.info["heldout_loss"] == first.info["heldout_loss"]

    # independent truth: the same config trained again from scratch in this process
    direct = pretrain(TINY)
    toks = jnp.asarray(direct.tokenizer("the capital of", return_tensors="np")["input_ids"])
    np.testing.assert_allclose(_logits(second.model, toks), _logits(direct.model, toks), atol=1e-5)
    assert second.tokenizer.get_vocab() == direct.tokenizer.get_vocab()


def test_key_depends_on_every_field():
    assert pretrained_lm_key(TINY) == pretrained_lm_key(dataclasses.replace(TINY))
    assert pretrained_lm_key(TINY) != pretrained_lm_key(dataclasses.replace(TINY, steps=7))
    assert pretrained_lm_key(TINY) != pretrained_lm_key(
        dataclasses.replace(TINY, synthetic=CorpusConfig(num_documents=201, num_entities=10))
    )
