"""HF interop: logits parity with the torch ``transformers`` models on padded batches, export round trips, errors.

Every truth here is the torch HF model built locally from a tiny random config (no hub): weights, norms and biases
are all randomised so that a transposed or misplaced tensor cannot hide behind an identity init.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from jaxsafety.models.gpt2 import GPT2, GPT2Config
from jaxsafety.models.heads import ScoreModel
from jaxsafety.models.hf import config_from_hf, config_to_hf, from_hf, param_dict, to_hf
from jaxsafety.models.llama import Llama, LlamaConfig, RopeScaling

ATOL = 1e-4
V = 128
# one row of each padding kind in the same batch: full, right-padded, left-padded
MASK = np.array([[1] * 8, [1] * 5 + [0] * 3, [0] * 4 + [1] * 4], np.int64)
PAD_ID = 0

_LLAMA_SMALL = dict(
    vocab_size=V, hidden_size=64, num_hidden_layers=2, intermediate_size=96, max_position_embeddings=128
)


def _gpt2() -> Any:
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=64, n_layer=2, n_head=4)
    return transformers.GPT2LMHeadModel(cfg)


def _llama_gqa_llama3() -> Any:
    # original_max_position_embeddings=32 with head_dim 16 puts RoPE frequencies in all three llama3 bands
    rope = dict(
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=32,
    )
    cfg = transformers.LlamaConfig(
        **_LLAMA_SMALL, num_attention_heads=4, num_key_value_heads=2, rope_scaling=rope
    )
    return transformers.LlamaForCausalLM(cfg)


def _llama_linear_tied() -> Any:
    # head_dim (32) != hidden / heads (16), MLP biases, tied embeddings, linear RoPE scaling, a non-default theta
    cfg = transformers.LlamaConfig(
        **_LLAMA_SMALL,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        mlp_bias=True,
        tie_word_embeddings=True,
        rope_theta=500.0,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
    )
    return transformers.LlamaForCausalLM(cfg)


def _qwen2() -> Any:
    cfg = transformers.Qwen2Config(**_LLAMA_SMALL, num_attention_heads=4, num_key_value_heads=2)
    return transformers.Qwen2ForCausalLM(cfg)


def _mistral() -> Any:
    cfg = transformers.MistralConfig(
        **_LLAMA_SMALL, num_attention_heads=4, num_key_value_heads=1, sliding_window=None
    )
    return transformers.MistralForCausalLM(cfg)


def _gpt2_cls() -> Any:
    cfg = transformers.GPT2Config(
        vocab_size=V, n_positions=32, n_embd=64, n_layer=2, n_head=4, num_labels=3, pad_token_id=PAD_ID
    )
    return transformers.GPT2ForSequenceClassification(cfg)


def _llama_cls() -> Any:
    cfg = transformers.LlamaConfig(
        **_LLAMA_SMALL, num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=PAD_ID
    )
    return transformers.LlamaForSequenceClassification(cfg)


CASES: dict[str, Callable[[], Any]] = {
    "gpt2": _gpt2,
    "llama_gqa_llama3": _llama_gqa_llama3,
    "llama_linear_tied": _llama_linear_tied,
    "qwen2": _qwen2,
    "mistral": _mistral,
    "gpt2_cls": _gpt2_cls,
    "llama_cls": _llama_cls,
}
CLS_CASES = [c for c in CASES if c.endswith("_cls")]


def _randomize(model: Any, seed: int) -> Any:
    """Random weights everywhere (HF inits norms to 1 and biases to 0, which would hide mapping bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_norm = p.ndim == 1 and any(s in name for s in ("norm", "ln_")) and name.endswith("weight")
            p.copy_(1.0 + 0.1 * noise if is_norm else 0.1 * noise)
    return model.eval()


def _inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.random.default_rng(seed).integers(1, V, MASK.shape)  # real tokens never equal PAD_ID
    return np.where(MASK == 1, tokens, PAD_ID), np.clip(np.cumsum(MASK, -1) - 1, 0, None)


def _hf_out(model: Any, tokens: np.ndarray) -> np.ndarray:
    """HF logits (or pooled scores) with the same positions as ours: ``clip(cumsum(mask) - 1, 0)``."""
    positions = np.clip(np.cumsum(MASK, -1) - 1, 0, None)
    with torch.no_grad():
        out = model(
            torch.tensor(tokens), attention_mask=torch.tensor(MASK), position_ids=torch.tensor(positions)
        )
    return out.logits.float().numpy()


@nnx.jit
def _ours_out(model: nnx.Module, tokens: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    return model(tokens, mask)  # logits [B, T, V] for LMs, scores [B, L] for ScoreModel


def _real(x: np.ndarray) -> np.ndarray:
    """Only the real-token positions of [B, T, ...] (padded queries are undefined in both implementations)."""
    return x[MASK.astype(bool)]


def _assert_params_equal(a: nnx.Module, b: nnx.Module) -> None:
    pa, pb = param_dict(a), param_dict(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert pa[k].dtype == pb[k].dtype, k
        np.testing.assert_array_equal(np.asarray(pa[k]), np.asarray(pb[k]), err_msg=k)


@dataclasses.dataclass
class Case:
    name: str
    hf: Any  # the torch model
    path: Path  # its save_pretrained directory
    ours: nnx.Module  # from_hf(path)
    tokens: np.ndarray
    hf_out: np.ndarray
    ours_out: np.ndarray


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    name = request.param
    seed = list(CASES).index(name)
    torch.manual_seed(seed)
    hf = _randomize(CASES[name](), seed)
    path = tmp_path_factory.mktemp(name) / "hf"
    hf.save_pretrained(path, safe_serialization=True)
    ours = from_hf(path)
    tokens, _ = _inputs(seed)
    out = np.asarray(_ours_out(ours, jnp.asarray(tokens), jnp.asarray(MASK)))
    return Case(name, hf, path, ours, tokens, _hf_out(hf, tokens), out)


# ------------------------------------------------------------------------------------------------------------
# parity with the torch model
# ------------------------------------------------------------------------------------------------------------
def test_parity_with_hf(case: Case) -> None:
    """Logits at real tokens (LMs) or pooled scores (classifiers) match HF on a left+right padded batch."""
    if case.name in CLS_CASES:
        assert isinstance(case.ours, ScoreModel)
        assert case.ours_out.shape == case.hf_out.shape == (MASK.shape[0], case.hf.config.num_labels)
        np.testing.assert_allclose(case.ours_out, case.hf_out, atol=ATOL, rtol=0)
    else:
        assert isinstance(case.ours, GPT2 if case.name == "gpt2" else Llama)
        assert case.ours_out.shape == (*MASK.shape, V)
        np.testing.assert_allclose(_real(case.ours_out), _real(case.hf_out), atol=ATOL, rtol=0)
    assert np.abs(case.hf_out).max() > 0.1  # the comparison is not between two near-zero outputs


def test_from_in_memory_model_equals_from_dir(case: Case) -> None:
    _assert_params_equal(from_hf(case.hf), case.ours)


def test_to_hf_round_trip(case: Case, tmp_path: Path) -> None:
    """to_hf -> transformers.Auto*.from_pretrained reproduces our outputs; from_hf(to_hf(m)) our exact params."""
    is_cls = case.name in CLS_CASES
    extra = {"pad_token_id": PAD_ID} if is_cls else None
    path = to_hf(case.ours, tmp_path / "export", model_type=case.hf.config.model_type, extra_config=extra)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == case.hf.config.model_type
    assert config["architectures"] == [type(case.hf).__name__]
    assert config["torch_dtype"] == "float32"
    auto = transformers.AutoModelForSequenceClassification if is_cls else transformers.AutoModelForCausalLM
    hf2 = auto.from_pretrained(path).eval()
    assert type(hf2) is type(case.hf)
    out2 = _hf_out(hf2, case.tokens)
    if is_cls:
        np.testing.assert_allclose(out2, case.ours_out, atol=ATOL, rtol=0)
    else:
        np.testing.assert_allclose(_real(out2), _real(case.ours_out), atol=ATOL, rtol=0)

    again = from_hf(path)
    assert type(again) is type(case.ours)
    assert again.config == case.ours.config
    _assert_params_equal(again, case.ours)
    # the exported tensors are exactly the HF model's own (same names, shapes and values)
    theirs = {k: v.numpy() for k, v in case.hf.state_dict().items()}
    exported = load_file(path / "model.safetensors")
    if case.hf.config.tie_word_embeddings and "lm_head.weight" in theirs:
        theirs.pop("lm_head.weight")
    assert exported.keys() == theirs.keys()
    for k, v in exported.items():
        np.testing.assert_array_equal(v, theirs[k], err_msg=k)


def test_base_model_and_missing_architectures(case: Case, tmp_path: Path) -> None:
    """Base-model weights (``GPT2Model``, ``LlamaModel``: no prefix, no head) load as an LM when the head is tied,
    and name the missing ``lm_head.weight`` otherwise; without ``architectures`` the kind is read off the tensors."""
    ours_lm = case.ours.backbone if isinstance(case.ours, ScoreModel) else case.ours
    base = case.hf.base_model
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    for source in (tmp_path / "base", base):
        if case.hf.config.tie_word_embeddings:
            _assert_params_equal(from_hf(source), ours_lm)
        else:
            with pytest.raises(ValueError, match=r"tensor 'lm_head.weight' is missing"):
                from_hf(source)

    bare = tmp_path / "bare"
    bare.mkdir()
    config = json.loads((case.path / "config.json").read_text())
    del config["architectures"]
    (bare / "config.json").write_text(json.dumps(config))
    (bare / "model.safetensors").symlink_to(case.path / "model.safetensors")
    _assert_params_equal(from_hf(bare), case.ours)


# ------------------------------------------------------------------------------------------------------------
# configs
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg",
    [
        GPT2Config(
            vocab_size=100, max_seq_len=64, d_model=32, n_layers=3, n_heads=4, d_ff=48, activation="gelu"
        ),
        LlamaConfig(vocab_size=100, d_model=64, n_heads=4, n_kv_heads=2, head_dim=8, rope_theta=5e5),
        LlamaConfig(
            rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192), tie_embeddings=True, mlp_bias=True
        ),
        LlamaConfig(rope_scaling=RopeScaling("linear", 4.0), attention_bias=True, activation="gelu_new"),
    ],
)
def test_config_round_trip(cfg: GPT2Config | LlamaConfig) -> None:
    assert config_from_hf(config_to_hf(cfg)) == cfg


def test_config_reads_legacy_rope_fields() -> None:
    """transformers 4 writes ``rope_theta`` + ``rope_scaling`` (``type`` or ``rope_type``) at the top level."""
    base = dict(model_type="llama", vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    cfg = config_from_hf(
        {
            **base,
            "intermediate_size": 8,
            "rope_theta": 123.0,
            "rope_scaling": {"type": "linear", "factor": 3.0},
        }
    )
    assert cfg.rope_theta == 123.0 and cfg.rope_scaling == RopeScaling("linear", 3.0)
    # a config object works as well as a dict
    hf_cfg = transformers.MistralConfig(
        **base, intermediate_size=8, num_key_value_heads=1, sliding_window=None
    )
    assert config_from_hf(hf_cfg) == config_from_hf(hf_cfg.to_dict())


def test_mistral_window_longer_than_context_is_accepted() -> None:
    d = transformers.MistralConfig(max_position_embeddings=256, sliding_window=256).to_dict()
    assert config_from_hf(d).max_seq_len == 256


# ------------------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------------------
def _llama_dict(**kw: Any) -> dict[str, Any]:
    return transformers.LlamaConfig(**_LLAMA_SMALL, num_attention_heads=4, **kw).to_dict()


@pytest.mark.parametrize(
    ("hf_config", "match"),
    [
        (
            _llama_dict(rope_scaling={"rope_type": "yarn", "factor": 2.0}),
            r"rope_type='yarn'.*'linear', 'llama3'",
        ),
        (_llama_dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), r"rope_type='dynamic'"),
        (_llama_dict(attention_bias=True), r"attention_bias=True.*false for model_type 'llama'"),
        (
            transformers.MistralConfig(**_LLAMA_SMALL, num_attention_heads=4, sliding_window=16).to_dict(),
            r"sliding_window=16 is invalid: accepted values are null or >= max_position_embeddings \(128\)",
        ),
        (
            transformers.Qwen2Config(
                **_LLAMA_SMALL,
                num_attention_heads=4,
                use_sliding_window=True,
                sliding_window=16,
                max_window_layers=1,
            ).to_dict(),
            r"use_sliding_window=True is invalid: accepted values are false",
        ),
        ({"model_type": "bert"}, r"model_type='bert'.*'gpt2', 'llama', 'mistral', 'qwen2'"),
        (
            transformers.GPT2Config(tie_word_embeddings=False).to_dict(),
            r"tie_word_embeddings=False is invalid: accepted values are true",
        ),
    ],
)
def test_unsupported_config_raises(hf_config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        config_from_hf(hf_config)


def _copy_with_tensors(src: Path, dst: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> Path:
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    tensors = load_file(src / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("llama_err") / "hf"
    _randomize(_llama_gqa_llama3(), 0).save_pretrained(path, safe_serialization=True)
    return path


def test_missing_tensor_raises(llama_dir: Path, tmp_path: Path) -> None:
    name = "model.layers.1.mlp.up_proj.weight"
    bad = _copy_with_tensors(llama_dir, tmp_path / "bad", lambda t: t.pop(name))
    with pytest.raises(ValueError, match=rf"tensor '{name}' is missing.*\[96, 64\]"):
        from_hf(bad)


def test_wrong_shape_raises(llama_dir: Path, tmp_path: Path) -> None:
    name = "model.layers.0.self_attn.k_proj.weight"

    def shrink(t: dict[str, np.ndarray]) -> None:
        t[name] = t[name][:16]

    bad = _copy_with_tensors(llama_dir, tmp_path / "bad", shrink)
    with pytest.raises(ValueError, match=rf"tensor '{name}' has shape \[16, 64\]: expected \[32, 64\]"):
        from_hf(bad)


def test_unexpected_tensor_raises(llama_dir: Path, tmp_path: Path) -> None:
    def add(t: dict[str, np.ndarray]) -> None:
        t["model.layers.0.self_attn.o_proj.bias"] = np.zeros(64, np.float32)

    bad = _copy_with_tensors(llama_dir, tmp_path / "bad", add)
    with pytest.raises(ValueError, match=r"unexpected tensors.*o_proj\.bias"):
        from_hf(bad)


def test_no_weights_raises(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_llama_dict()))
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        from_hf(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        from_hf(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------------------
# files: sharding, dtypes, tokenizer, atomic writes
# ------------------------------------------------------------------------------------------------------------
def test_sharded_checkpoint(llama_dir: Path, tmp_path: Path) -> None:
    hf = transformers.LlamaForCausalLM.from_pretrained(llama_dir)
    hf.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    _assert_params_equal(from_hf(tmp_path), from_hf(llama_dir))


def test_bfloat16_round_trip(llama_dir: Path, tmp_path: Path) -> None:
    m = from_hf(llama_dir, param_dtype="bfloat16")
    assert m.config.dtype == m.config.param_dtype == "bfloat16"
    assert m.blocks[0].attn.qkv.kernel[...].dtype == jnp.bfloat16
    path = to_hf(m, tmp_path / "bf16")
    assert json.loads((path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    hf = transformers.AutoModelForCausalLM.from_pretrained(path)
    assert hf.model.embed_tokens.weight.dtype == torch.bfloat16
    _assert_params_equal(from_hf(path, param_dtype="bfloat16"), m)


def test_tokenizer_is_written(llama_dir: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(V - 2)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    model = from_hf(llama_dir)
    path = to_hf(model, tmp_path / "with_tok", tokenizer=fast)
    loaded = transformers.AutoTokenizer.from_pretrained(path)
    assert loaded("w3 w7")["input_ids"] == fast("w3 w7")["input_ids"] == [5, 9]
    config = json.loads((path / "config.json").read_text())
    assert config["pad_token_id"] == 0 and config["eos_token_id"] == 1
    generation = transformers.GenerationConfig.from_pretrained(path)
    assert generation.pad_token_id == 0 and generation.eos_token_id == 1


def test_to_hf_is_atomic(llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = from_hf(llama_dir)
    target = to_hf(model, tmp_path / "ckpt")
    before = {f.name: f.read_bytes() for f in target.iterdir()}

    # a crash mid-write leaves the previous checkpoint untouched and no temporary directory behind
    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.numpy.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        to_hf(model, target)
    monkeypatch.undo()
    assert {f.name: f.read_bytes() for f in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]

    # overwriting a checkpoint replaces it; a directory that is not a checkpoint is refused
    other = from_hf(llama_dir, param_dtype="bfloat16")
    to_hf(other, target)
    _assert_params_equal(from_hf(target, param_dtype="bfloat16"), other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a HF checkpoint"):
        to_hf(model, tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
