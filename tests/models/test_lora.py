"""LoRA adapters (jaxsafety.models.lora): exact no-op at init, the dense update ``W + (alpha / r) A B`` (numpy),
merging, the HF export through ``to_hf`` (torch logits), and bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsafety.config import ConfigError
from jaxsafety.models import GPT2, GPT2Config, Llama, LlamaConfig, to_hf
from jaxsafety.models.hf import param_dict
from jaxsafety.models.lora import LoRAConfig, LoRALinear, add_lora, has_lora, lora_targets, merge_lora

V, T = 29, 7
TOKENS = np.random.default_rng(0).integers(0, V, (2, T)).astype(np.int32)


def _gpt2():
    return GPT2(GPT2Config(vocab_size=V, max_seq_len=8, d_model=16, n_layers=2, n_heads=2), rngs=nnx.Rngs(0))


def _llama():  # grouped-query attention, untied LM head (a Linear that can be adapted), SwiGLU
    cfg = LlamaConfig(vocab_size=V, max_seq_len=8, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=24)
    return Llama(cfg, rngs=nnx.Rngs(0))


MODELS = {"gpt2": _gpt2, "llama": _llama}
TARGETS = {"gpt2": ("*attn.qkv", "*mlp.*"), "llama": ("*attn.*", "*mlp.up", "lm_head")}


@nnx.jit
def _logits(model, tokens):
    return model(tokens)


def _randomize_b(model, seed: int):
    """Nonzero B matrices (as after training), drawn in numpy."""
    rng = np.random.default_rng(seed)
    for _, m in nnx.iter_modules(model):
        if isinstance(m, LoRALinear):
            m.lora_b[...] = jnp.asarray(0.3 * rng.normal(size=m.lora_b.shape), jnp.float32)
    return model


@pytest.mark.parametrize("arch", list(MODELS))
def test_zero_initialised_adapters_leave_logits_unchanged(arch):
    base = MODELS[arch]()
    lora = add_lora(base, LoRAConfig(rank=3, alpha=5.0, targets=TARGETS[arch]), rngs=nnx.Rngs(1))
    np.testing.assert_array_equal(np.asarray(_logits(lora, TOKENS)), np.asarray(_logits(base, TOKENS)))
    assert has_lora(lora) and not has_lora(base)  # the input model is not modified
    # base parameters keep their paths and values; each adapted layer adds A [in, r] (nonzero) and B [r, out] = 0
    pb, pl = param_dict(base), param_dict(lora)
    for k, v in pb.items():
        np.testing.assert_array_equal(np.asarray(pl[k]), np.asarray(v))
    adapted = lora_targets(base, TARGETS[arch])
    assert sorted(set(pl) - set(pb)) == sorted(f"{p}.lora_{x}" for p in adapted for x in "ab")
    for p in adapted:
        d_in, d_out = pb[f"{p}.kernel"].shape
        assert pl[f"{p}.lora_a"].shape == (d_in, 3) and np.abs(np.asarray(pl[f"{p}.lora_a"])).max() > 0
        np.testing.assert_array_equal(np.asarray(pl[f"{p}.lora_b"]), np.zeros((3, d_out)))
        assert np.abs(np.asarray(pl[f"{p}.lora_a"])).max() <= 1 / np.sqrt(d_in)  # U(+-1/sqrt(in))


@pytest.mark.parametrize("arch", list(MODELS))
def test_adapter_forward_equals_dense_update_and_merge(arch):
    """The adapter forward equals the plain model whose kernels are ``W + (alpha / r) A B`` (built in numpy, put
    into a copy of the base model); :func:`merge_lora` gives those kernels and the plain architecture."""
    base = MODELS[arch]()
    cfg = LoRAConfig(rank=2, alpha=6.0, targets=TARGETS[arch])
    lora = _randomize_b(add_lora(base, cfg, rngs=nnx.Rngs(1)), seed=2)
    pl = {k: np.asarray(v, np.float64) for k, v in param_dict(lora).items()}
    dense = {}
    for p in lora_targets(base, cfg.targets):
        dense[f"{p}.kernel"] = pl[f"{p}.kernel"] + 3.0 * pl[f"{p}.lora_a"] @ pl[f"{p}.lora_b"]
    reference = nnx.clone(base)
    state = nnx.state(reference, nnx.Param)
    for path, var in nnx.to_flat_state(state):
        name = ".".join(map(str, path))
        if name in dense:
            var.set_value(jnp.asarray(dense[name], jnp.float32))
    nnx.update(reference, state)
    ref_logits = np.asarray(_logits(reference, TOKENS))
    lora_logits = np.asarray(_logits(lora, TOKENS))
    assert np.abs(lora_logits - np.asarray(_logits(base, TOKENS))).max() > 1e-2  # the update matters
    np.testing.assert_allclose(lora_logits, ref_logits, atol=1e-5, rtol=0)

    merged = merge_lora(lora)
    assert not has_lora(merged) and has_lora(lora)
    assert nnx.graphdef(merged) == nnx.graphdef(base)  # the plain architecture again
    pm = param_dict(merged)
    assert pm.keys() == param_dict(base).keys()
    for k, v in pm.items():
        np.testing.assert_allclose(np.asarray(v), dense.get(k, pl[k]), atol=1e-6, rtol=0, err_msg=k)
    np.testing.assert_allclose(np.asarray(_logits(merged, TOKENS)), lora_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", list(MODELS))
def test_to_hf_exports_merged_kernels_matching_torch(arch, tmp_path):
    import torch
    import transformers

    lora = _randomize_b(
        add_lora(MODELS[arch](), LoRAConfig(rank=2, alpha=4.0, targets=TARGETS[arch]), rngs=nnx.Rngs(3)),
        seed=4,
    )
    path = to_hf(lora, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor(TOKENS, dtype=torch.long)).logits.float().numpy()
    np.testing.assert_allclose(theirs, np.asarray(_logits(lora, TOKENS)), atol=1e-4, rtol=0)
    assert has_lora(lora)  # exporting merges a copy


def test_bad_input_raises():
    with pytest.raises(ConfigError, match="rank"):
        LoRAConfig(rank=0)
    with pytest.raises(ConfigError, match="alpha"):
        LoRAConfig(alpha=0.0)
    with pytest.raises(ConfigError, match="targets"):
        LoRAConfig(targets=())
    assert LoRAConfig(targets=["*mlp.up"]).targets == ("*mlp.up",)  # lists become tuples: hashable
    model = _gpt2()
    with pytest.raises(ValueError, match=r"'\*attn.qkvv' selects no linear layer"):
        add_lora(model, LoRAConfig(targets=("*attn.qkv", "*attn.qkvv")), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="selects no linear layer"):
        add_lora(model, LoRAConfig(targets=("embed",)), rngs=nnx.Rngs(0))  # an embedding is not a Linear
    lora = add_lora(model, LoRAConfig(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        add_lora(lora, LoRAConfig(), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="LoRAConfig"):
        add_lora(model, {"rank": 2}, rngs=nnx.Rngs(0))


def test_adapters_are_lora_params_and_scale_is_alpha_over_rank():
    lora = add_lora(_gpt2(), LoRAConfig(rank=4, alpha=2.0, targets=("blocks.1.mlp.down",)), rngs=nnx.Rngs(0))
    only = nnx.to_flat_state(nnx.state(lora, nnx.LoRAParam))
    assert sorted(".".join(map(str, p)) for p, _ in only) == [
        "blocks.1.mlp.down.lora_a",
        "blocks.1.mlp.down.lora_b",
    ]
    layer = lora.blocks[1].mlp.down
    assert isinstance(layer, LoRALinear) and layer.scaling == 0.5
    x = jax.random.normal(jax.random.key(0), (3, layer.in_features))
    layer.lora_b[...] = jax.random.normal(jax.random.key(1), layer.lora_b.shape)
    a, b, w, bias = (
        np.asarray(v, np.float64) for v in (layer.lora_a, layer.lora_b, layer.kernel, layer.bias)
    )
    expected = np.asarray(x, np.float64) @ w + bias + 0.5 * (np.asarray(x, np.float64) @ a) @ b
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5, rtol=0)
