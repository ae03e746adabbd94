"""The trained-model cache: a miss trains and stores an HF checkpoint, a hit loads the same weights without
training (counted train calls, a finetune that fails if called), bad specs and corrupt entries raise; the arithmetic
LM's cache and config."""

from __future__ import annotations

import dataclasses
import importlib
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsafety.config import ConfigError
from jaxsafety.data.corpus import CorpusConfig
from jaxsafety.models import GPT2, GPT2Config
from jaxsafety.train import OptimizerConfig
from jaxsafety.train.lm import PretrainConfig, pretrain
from jaxsafety.train.pretrained import (
    ArithmeticLMConfig,
    arithmetic_lm,
    pretrained_lm,
    pretrained_lm_key,
    trained_model,
    trained_model_key,
)

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


# ----------------------------------------------------------------------------------------------------------------
# the generic cache (trained_model) and the arithmetic LMs built on it


def _tiny_gpt2(seed: int) -> GPT2:
    return GPT2(
        GPT2Config(vocab_size=20, max_seq_len=8, d_model=16, n_layers=1, n_heads=2), rngs=nnx.Rngs(seed)
    )


def test_trained_model_second_call_loads_without_training(tmp_path):
    calls = []
    made = {}

    def train():
        calls.append(1)
        made["model"] = _tiny_gpt2(3)
        return made["model"], {"losses": [1.5, 0.25]}

    spec = {"model": {"d_model": 16, "ops": ("+", "-")}, "seed": 3}
    first = trained_model("toy", spec, train, root=tmp_path)
    second = trained_model(
        "toy", {"seed": 3, "model": {"ops": ["+", "-"], "d_model": 16}}, train, root=tmp_path
    )
    assert len(calls) == 1 and not first.from_cache and second.from_cache  # same spec in another key order
    assert second.info["losses"] == [1.5, 0.25] and second.info["spec"] == {
        "model": {"d_model": 16, "ops": ["+", "-"]},
        "seed": 3,
    }
    assert first.path == second.path == tmp_path / "toy" / trained_model_key(spec) / "hf"
    toks = jnp.asarray([[1, 5, 7, 2]])
    np.testing.assert_array_equal(
        _logits(second.model, toks), _logits(made["model"], toks)
    )  # the trained model
    trained_model("toy", {**spec, "seed": 4}, train, root=tmp_path)
    assert len(calls) == 2  # another spec trains


def test_trained_model_bad_input_and_corrupt_entry(tmp_path):
    def train():
        raise AssertionError("must not train")

    with pytest.raises(ConfigError, match=r"^kind="):
        trained_model("../x", {"seed": 0}, train, root=tmp_path)
    with pytest.raises(ConfigError, match=r"^spec=.*JSON-serialisable"):
        trained_model("toy", {"model": object()}, train, root=tmp_path)
    out = trained_model("toy", {"seed": 0}, lambda: (_tiny_gpt2(0), {}), root=tmp_path)
    info = json.loads((out.path.parent / "info.json").read_text())
    info["spec"] = {"seed": 1}
    (out.path.parent / "info.json").write_text(json.dumps(info))
    with pytest.raises(RuntimeError, match="different spec"):
        trained_model("toy", {"seed": 0}, train, root=tmp_path)


ARITH = ArithmeticLMConfig(
    d_model=16,
    n_layers=1,
    n_heads=2,
    max_operand=3,
    ops=("+",),
    steps=30,
    batch_size=8,
    optim=OptimizerConfig(name="adamw", lr=1e-2, schedule="constant", warmup_steps=3),
)


def test_arithmetic_lm_cached_and_learns_the_completion(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSAFETY_CACHE", str(tmp_path))
    first = arithmetic_lm(ARITH, seed=0)
    assert not first.from_cache and (tmp_path / "arithmetic_lm").is_dir()
    assert first.losses.shape == (30,) and first.losses[-5:].mean() < first.losses[:3].mean() - 0.5

    ft = importlib.import_module(
        "jaxsafety.train.finetune"
    )  # the module (jaxsafety.train exports the function)
    monkeypatch.setattr(ft, "finetune", lambda *a, **k: pytest.fail("a cache hit must not train"))
    second = arithmetic_lm(ARITH, seed=0)
    assert second.from_cache
    np.testing.assert_array_equal(second.losses, first.losses)
    tok = second.tokenizer
    rows, _ = tok.encode_batch(["3 + 2 = 5.", "0 + 1 = 1."])
    np.testing.assert_array_equal(_logits(second.model, rows), _logits(first.model, rows))
    assert second.model.config == ARITH.model_config()
    assert arithmetic_lm(ARITH, seed=0, chunk_steps=7).from_cache  # chunking is not part of the key


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
def test_arithmetic_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}="):
        ArithmeticLMConfig(**kwargs)
