"""Supervised fine-tuning (jaxsafety.train.finetune): row layout, the response-only loss against a numpy masked
mean, frozen parameters, LoRA (merge, HF torch export), resume, HF checkpoint input, logging, bad input."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
import pytest
from flax import nnx

from jaxsafety.config import ConfigError
from jaxsafety.models import GPT2, GPT2Config, Llama, LlamaConfig, to_hf
from jaxsafety.models.hf import param_dict
from jaxsafety.models.lora import has_lora, merge_lora
from jaxsafety.train import (
    FinetuneConfig,
    LoRAConfig,
    NoOpTracker,
    OptimizerConfig,
    SFTData,
    finetune,
    sft_rows,
    trainable_filter,
)

ALPHABET = "abcdefgh=."


@dataclasses.dataclass(frozen=True)
class Tok:
    """A minimal tokenizer of the protocol sft_rows reads: pad 0, BOS 1, EOS 2, then one id per character."""

    pad_token_id: int = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2

    def encode(self, text: str) -> list[int]:
        return [3 + ALPHABET.index(c) for c in text]


TOK = Tok()
V = 3 + len(ALPHABET)
# rows of different lengths, so the token-weighted mean differs from a mean of per-row means
PROMPTS = ["ab=", "cdef=", "g=", "hab=", "ba=", "fed=", "c=", "ggh="]
RESPONSES = ["ba", "fedc", "g", "bah", "ab", "def", "cccc", "h"]
DATA = sft_rows(TOK, PROMPTS, RESPONSES)
BASE = FinetuneConfig(steps=6, batch_size=8, optim=OptimizerConfig(lr=1e-2), chunk_steps=4, log_every=2)


def _gpt2() -> GPT2:
    model = GPT2(
        GPT2Config(vocab_size=V, max_seq_len=12, d_model=16, n_layers=2, n_heads=2), rngs=nnx.Rngs(0)
    )
    # a 25x larger embedding (std 0.5): peaked initial logits, whose losses differ between tokens and rows
    model.embed.embedding[...] = 25.0 * model.embed.embedding[...]
    return model


def _np_params(model) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in param_dict(model).items()}


class Recorder(NoOpTracker):
    """Keeps every scalar; optionally raises once a step is reached (a run killed mid-way)."""

    def __init__(self, die_at: int | None = None):
        super().__init__()
        self.rows: list[tuple[str, float, int]] = []
        self.die_at = die_at

    def scalar(self, tag, value, step):
        self.rows.append((tag, float(value), int(step)))

    def scalars(self, values, step, prefix=""):
        if self.die_at is not None and step >= self.die_at:
            raise KeyboardInterrupt("killed")
        for k, v in values.items():
            self.scalar(prefix + k, v, step)


@pytest.fixture(scope="module")
def base_run():
    tracker = Recorder()
    return finetune(_gpt2(), DATA, BASE, tracker=tracker, progress=False), tracker


# ----------------------------------------------------------------------------------------------------------------
# rows


def test_sft_rows_layout():
    data = sft_rows(TOK, ["ab=", [7, 8]], ["c", "de"], width=8)
    np.testing.assert_array_equal(
        data.tokens,
        [[1, 3, 4, 11, 5, 2, 0, 0], [1, 7, 8, 6, 7, 2, 0, 0]],  # BOS prompt response EOS pad
    )
    np.testing.assert_array_equal(data.mask, [[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(data.loss_mask, [[0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 0, 0]])
    assert all(a.dtype == np.int32 for a in data) and (data.num_rows, data.width) == (2, 8)
    plain = sft_rows(TOK, ["ab="], [[5]], eos=False, bos=False)  # width: the longest row
    np.testing.assert_array_equal(plain.tokens, [[3, 4, 11, 5]])
    np.testing.assert_array_equal(plain.loss_mask, [[0, 0, 0, 1]])


def test_sft_rows_uses_hf_tokenizers_without_their_special_tokens():
    class AddsBos(Tok):
        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return ([1] if add_special_tokens else []) + super().encode(text)

    np.testing.assert_array_equal(sft_rows(AddsBos(), ["a"], ["b"]).tokens, [[1, 3, 4, 2]])
    from jaxsafety.models.tokenizer import train_bpe_tokenizer

    hf = train_bpe_tokenizer(["the cat sat on the mat"] * 5, 300)
    data = sft_rows(hf, ["the cat"], [" sat"])
    ids = [hf.eos_token_id, *hf("the cat")["input_ids"], *hf(" sat")["input_ids"], hf.eos_token_id]
    np.testing.assert_array_equal(data.tokens[0], ids)  # BOS = EOS for this tokenizer (as GPT-2)
    assert data.loss_mask[0].sum() == len(hf(" sat")["input_ids"]) + 1


def test_sft_rows_bad_input():
    with pytest.raises(ValueError, match="same length"):
        sft_rows(TOK, ["a"], ["b", "c"])
    with pytest.raises(
        ValueError, match=r"width=3 is invalid: accepted values are >= the longest row \(6 tokens"
    ):
        sft_rows(TOK, ["abc"], ["d"], width=3)
    with pytest.raises(ValueError, match=r"responses\[0\] is empty"):
        sft_rows(TOK, ["a"], [""], eos=False)
    with pytest.raises(ValueError, match="eos_token_id"):
        sft_rows(Tok(eos_token_id=None), ["a"], ["b"])
    with pytest.raises(ValueError, match=r"prompts\[0\] is invalid"):
        sft_rows(TOK, [[1, -2]], ["b"])


# ----------------------------------------------------------------------------------------------------------------
# training


def _np_response_loss(model, data: SFTData, loss_mask: np.ndarray) -> float:
    """Token-weighted mean over targets t with loss_mask[t] (and a real token at t - 1) of -log softmax."""
    logits = np.asarray(nnx.jit(lambda m, t, k: m(t, k))(model, data.tokens, data.mask), np.float64)
    total, n = 0.0, 0
    for b in range(data.num_rows):
        for t in range(1, data.width):
            if loss_mask[b, t] and data.mask[b, t - 1]:
                row = logits[b, t - 1]
                lse = row.max() + np.log(np.exp(row - row.max()).sum())
                total += lse - row[data.tokens[b, t]]
                n += 1
    return total / n


def test_response_only_loss_equals_numpy_masked_mean(base_run):
    """With batch_size = rows, every step's batch is a permutation of all rows, so step 0's loss is the masked
    mean over the whole table under the initial model."""
    result, _ = base_run
    expected = _np_response_loss(_gpt2(), DATA, DATA.loss_mask)
    np.testing.assert_allclose(result.losses[0], expected, rtol=1e-5)
    all_tokens = _np_response_loss(_gpt2(), DATA, DATA.mask)  # the loss a prompt-scoring bug would give
    assert abs(all_tokens - expected) > 0.1
    assert result.losses[-1] < result.losses[0] - 0.1  # training moves the loss
    assert result.start_step == 0 and result.num_trainable == _gpt2().num_params()


def test_tracker_gets_the_step_losses(base_run):
    result, tracker = base_run
    logged = {step: v for tag, v, step in tracker.rows if tag == "train/loss"}
    assert sorted(logged) == [2, 4, 6]
    for step, v in logged.items():
        assert v == pytest.approx(float(result.losses[step - 1]), rel=1e-6)
    assert {tag for tag, _, _ in tracker.rows} >= {"train/grad_norm", "train/lr", "train/steps_per_second"}


def test_frozen_parameters_are_bit_identical_after_training():
    model = _gpt2()
    before = _np_params(model)
    cfg = dataclasses.replace(BASE, freeze=("embed.*", "blocks.0.*"))
    result = finetune(model, DATA, cfg, progress=False)
    after = _np_params(result.model)
    frozen = {k for k in before if k.startswith(("embed.", "blocks.0."))}
    assert frozen and set(result.trainable) == set(before) - frozen
    for k in before:
        if k in frozen:
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)
        else:
            assert np.abs(after[k] - before[k]).max() > 0, k
    for k, v in _np_params(model).items():  # the caller's model is untouched (training donates a copy)
        np.testing.assert_array_equal(v, before[k])


def test_lora_trains_only_adapters_and_exports_merged(tmp_path):
    import torch
    import transformers

    cfg = LlamaConfig(vocab_size=V, max_seq_len=12, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=24)
    model = Llama(cfg, rngs=nnx.Rngs(0))
    before = _np_params(model)
    lora = LoRAConfig(rank=2, alpha=4.0, targets=("*attn.qkv", "*mlp.up", "lm_head"))
    result = finetune(model, DATA, dataclasses.replace(BASE, lora=lora), progress=False, merge=False)
    trained = result.model
    assert has_lora(trained)
    params = _np_params(trained)
    assert set(result.trainable) == set(params) - set(before)
    assert all(k.endswith((".lora_a", ".lora_b")) for k in result.trainable)
    assert result.num_trainable == sum(params[k].size for k in result.trainable)
    for k, v in before.items():  # everything but the adapters is frozen
        np.testing.assert_array_equal(params[k], v, err_msg=k)
    assert all(np.abs(params[k]).max() > 0 for k in result.trainable if k.endswith("lora_b"))

    tokens = DATA.tokens[:, :10]
    adapter = np.asarray(nnx.jit(lambda m, t: m(t))(trained, tokens))
    merged = np.asarray(nnx.jit(lambda m, t: m(t))(merge_lora(trained), tokens))
    assert np.abs(adapter - np.asarray(nnx.jit(lambda m, t: m(t))(model, tokens))).max() > 1e-3
    np.testing.assert_allclose(merged, adapter, atol=1e-5, rtol=0)
    hf = transformers.AutoModelForCausalLM.from_pretrained(to_hf(trained, tmp_path / "hf")).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor(tokens, dtype=torch.long)).logits.float().numpy()
    np.testing.assert_allclose(theirs, adapter, atol=1e-4, rtol=0)


def test_gradient_accumulation_gives_the_same_step(base_run):
    """Two microbatches per step: the same first loss and gradient norm (one update from the same state) as
    the whole batch at once, up to float summation order."""
    reference, _ = base_run
    result = finetune(_gpt2(), DATA, dataclasses.replace(BASE, steps=1, accum_steps=2), progress=False)
    np.testing.assert_allclose(result.losses[0], reference.losses[0], rtol=1e-5)
    np.testing.assert_allclose(result.grad_norms[0], reference.grad_norms[0], rtol=1e-5)


def test_resume_continues_bit_identically(base_run, tmp_path):
    """A run killed after its step-2 checkpoint and rerun on the same run_dir ends where the uninterrupted run
    ends (same process, same CPU: deterministic), with the same loss history."""
    reference, _ = base_run
    run = dict(run_dir=tmp_path / "run", progress=False)
    cfg = dataclasses.replace(BASE, save_every=2)
    with pytest.raises(KeyboardInterrupt):
        finetune(_gpt2(), DATA, cfg, tracker=Recorder(die_at=4), **run)
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()) == [
        2
    ]
    resumed = finetune(_gpt2(), DATA, cfg, **run)
    assert resumed.start_step == 2
    np.testing.assert_array_equal(resumed.losses, reference.losses)
    ref = _np_params(reference.model)
    for k, v in _np_params(resumed.model).items():
        np.testing.assert_array_equal(v, ref[k], err_msg=k)
    done = finetune(_gpt2(), DATA, cfg, **run)  # complete: nothing left to run
    assert done.start_step == BASE.steps
    np.testing.assert_array_equal(_np_params(done.model)["final_norm.scale"], ref["final_norm.scale"])
    other = sft_rows(TOK, PROMPTS, RESPONSES[::-1])
    with pytest.raises(ValueError, match="another data_sha256"):
        finetune(_gpt2(), other, cfg, **run)
    with pytest.raises(ValueError, match="another finetune_config"):
        finetune(_gpt2(), DATA, dataclasses.replace(cfg, seed=1), **run)


def test_finetune_from_a_local_hf_checkpoint(base_run, tmp_path):
    reference, _ = base_run
    path = to_hf(_gpt2(), tmp_path / "hf")
    result = finetune(str(path), DATA, BASE, progress=False)
    assert isinstance(result.model, GPT2)
    ref = _np_params(reference.model)
    for k, v in _np_params(result.model).items():
        np.testing.assert_allclose(v, ref[k], atol=1e-6, rtol=0, err_msg=k)


def test_bad_config_and_data_raise_before_training():
    for kwargs, field in (
        ({"steps": 0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"chunk_steps": 0}, "chunk_steps"),
        ({"save_every": 0}, "save_every"),
        ({"freeze": ("",)}, "freeze"),
        ({"batch_size": 8, "accum_steps": 3}, "accum_steps"),
        ({"lora": {"rank": 2}}, "lora"),
        ({"optim": OptimizerConfig(schedule="cosine", warmup_steps=50)}, "optim.warmup_steps"),
    ):
        with pytest.raises(ConfigError, match=field):
            FinetuneConfig(**{"steps": 10, **kwargs})
    assert FinetuneConfig(steps=1, freeze=["embed.*"]).freeze == ("embed.*",)
    model = _gpt2()
    with pytest.raises(
        ConfigError, match=r"batch_size=9 is invalid: accepted values are integers <= the number"
    ):
        finetune(model, DATA, dataclasses.replace(BASE, batch_size=9))
    with pytest.raises(ValueError, match=r"freeze glob 'embedding\.\*' matches no parameter"):
        finetune(model, DATA, dataclasses.replace(BASE, freeze=("embedding.*",)))
    with pytest.raises(ValueError, match="leaves no parameter to train"):
        finetune(model, DATA, dataclasses.replace(BASE, freeze=("*",)))
    with pytest.raises(ValueError, match="selects no linear layer"):
        finetune(model, DATA, dataclasses.replace(BASE, lora=LoRAConfig(targets=("*attn.q",))))
    wide = sft_rows(TOK, ["abcdefgh="], ["abcdefgh"])
    with pytest.raises(
        ValueError, match=r"data.width=19 is invalid: accepted values are <= the model's max_seq_len"
    ):
        finetune(model, wide, dataclasses.replace(BASE, batch_size=1))
    big = SFTData(DATA.tokens + 100, DATA.mask, DATA.loss_mask)
    with pytest.raises(ValueError, match=r"data\.tokens holds ids"):
        finetune(model, big, BASE)
    none = SFTData(DATA.tokens, DATA.mask, np.zeros_like(DATA.loss_mask))
    with pytest.raises(ValueError, match="selects no target token"):
        finetune(model, none, BASE)
    with pytest.raises(TypeError, match="CausalLM"):
        finetune(object(), DATA, BASE)


def test_trainable_filter_selects_by_path_and_type():
    model = _gpt2()

    def paths(f: object) -> Sequence[str]:
        return [".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, f))]

    assert paths(trainable_filter()) == list(param_dict(model))
    kept = paths(trainable_filter(("blocks.*.attn.*", "embed.embedding")))
    assert kept == [k for k in param_dict(model) if ".attn." not in k and k != "embed.embedding"]
    assert paths(trainable_filter(lora=True)) == []
    assert hash(trainable_filter(("a*",))) == hash(trainable_filter(("a*",)))  # static: one compilation
    assert jax.tree.leaves(nnx.state(model, trainable_filter(("*",)))) == []
