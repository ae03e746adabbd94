"""Hugging Face interop: read and write ``transformers`` checkpoints (config.json + safetensors) for the zoo.

Supported architectures (``config.json`` ``architectures`` / ``model_type``):

==========================================  ===========================  ====================================
HF class                                    ``model_type``               ours
==========================================  ===========================  ====================================
GPT2LMHeadModel, GPT2Model                  gpt2                         :class:`~jaxsafety.models.GPT2`
LlamaForCausalLM, LlamaModel                llama                        :class:`~jaxsafety.models.Llama`
MistralForCausalLM, MistralModel            mistral (no sliding window)  :class:`~jaxsafety.models.Llama`
Qwen2ForCausalLM, Qwen2Model                qwen2 (q/k/v biases)         :class:`~jaxsafety.models.Llama`
``{GPT2,Llama,Mistral,Qwen2}ForSequence``   any of the above             :class:`~jaxsafety.models.ScoreModel`
``Classification``
==========================================  ===========================  ====================================

Weight layout. Our linear kernels are ``[in, out]``. HF GPT-2 uses ``Conv1D`` whose weights are already
``[in, out]`` (``c_attn`` is the fused ``q|k|v``); torch ``nn.Linear`` weights (Llama family, ``score``,
``lm_head``) are ``[out, in]`` and are transposed. Llama's ``q_proj|k_proj|v_proj`` are concatenated along the
output axis into our fused ``attn.qkv`` (biases too, for Qwen2), and ``gate_proj|up_proj`` into ``mlp.up``
(``[D, 2F]`` = ``[gate | up]``). The same table (:func:`_weight_table`) drives both directions, so import and export
are exact inverses.

Loading needs no torch: safetensors files are read with ``safetensors.numpy`` (bfloat16 through ``ml_dtypes``).
A ``transformers`` model in memory is read through its ``state_dict()`` and ``config``.

Padding: our models take an ``attention_mask`` and derive positions from it (``cumsum(mask) - 1``); HF models must
be given the same ``position_ids`` explicitly for left-padded rows to match. :class:`ScoreModel` pools at the last
real token of ``attention_mask``; HF's ``...ForSequenceClassification`` pools at the last token that is not
``pad_token_id``: the two agree whenever the padded positions are exactly the pad tokens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.config import check, check_choice
from jaxsafety.models.gpt2 import GPT2, GPT2Config
from jaxsafety.models.heads import ScoreModel
from jaxsafety.models.llama import Llama, LlamaConfig, RopeScaling
from jaxsafety.models.lora import has_lora, merge_lora
from jaxsafety.models.transformer import CausalLM

__all__ = ["config_from_hf", "config_to_hf", "from_hf", "to_hf"]

MODEL_TYPES = ("gpt2", "llama", "mistral", "qwen2")
_ARCH_PREFIX = {"gpt2": "GPT2", "llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}
_LM_HEADS = {"gpt2": "LMHeadModel", "llama": "ForCausalLM", "mistral": "ForCausalLM", "qwen2": "ForCausalLM"}
# HF ``hidden_act`` / ``activation_function`` -> ours (gelu_pytorch_tanh is the same tanh approximation as gelu_new)
_ACTIVATIONS = {
    "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
# non-parameter buffers that older checkpoints carry: causal-mask and RoPE tables, recomputed by every implementation
_IGNORED = re.compile(r"(^|\.)attn\.(masked_)?bias$|(^|\.)rotary_emb\.inv_freq$")

Model = GPT2 | Llama | ScoreModel
ConfigLike = GPT2Config | LlamaConfig


# ------------------------------------------------------------------------------------------------------------
# configs
# ------------------------------------------------------------------------------------------------------------
def _as_dict(hf_config: Any) -> dict[str, Any]:
    if isinstance(hf_config, Mapping):
        return dict(hf_config)
    if hasattr(hf_config, "to_dict"):  # a transformers PretrainedConfig
        return hf_config.to_dict()
    raise TypeError(f"hf_config must be a dict or a transformers config, got {type(hf_config).__name__}")


def _activation(d: dict[str, Any], key: str, default: str) -> str:
    act = d.get(key) or default
    check_choice(key, act, tuple(_ACTIVATIONS))
    return _ACTIVATIONS[act]


def _rope(d: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """``(rope_theta, scaling)`` from transformers 5 ``rope_parameters`` or the older ``rope_theta`` +
    ``rope_scaling`` pair."""
    params = d.get("rope_parameters")
    field = "rope_parameters"
    if not params:
        params, field = d.get("rope_scaling"), "rope_scaling"
    params = dict(params or {})
    theta = float(params.get("rope_theta", d.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    check_choice(f"{field}.rope_type", kind, ("default", "linear", "llama3"))
    partial = params.get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0))
    check(partial == 1.0, "partial_rotary_factor", partial, "1.0 (RoPE on the full head)")
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, RopeScaling("linear", factor=float(params["factor"]))
    return theta, RopeScaling(
        "llama3",
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]),
    )


def _check_no_sliding_window(d: dict[str, Any], model_type: str) -> None:
    """Our attention is full causal attention; a sliding window that can bite within ``max_position_embeddings``
    (Mistral v0.1, Qwen2 with ``use_sliding_window``) would change the outputs, so it is refused."""
    # absent keys take HF's defaults: Mistral's sliding_window defaults to 4096
    window = d.get("sliding_window", 4096 if model_type == "mistral" else None)
    max_pos = d.get("max_position_embeddings", 2048)
    bites = window is not None and window < max_pos
    accepted = f"null or >= max_position_embeddings ({max_pos})"
    if model_type == "mistral":
        check(not bites, "sliding_window", window, accepted)
    if model_type == "qwen2" and d.get("use_sliding_window", False) and bites:
        n = d.get("num_hidden_layers", 0)
        types_ = d.get("layer_types") or [
            "sliding_attention" if i >= d.get("max_window_layers", n) else "full_attention" for i in range(n)
        ]
        check(
            "sliding_attention" not in types_,
            "use_sliding_window",
            True,
            f"false (or sliding_window {accepted}, or max_window_layers >= num_hidden_layers)",
        )
    if model_type != "qwen2" and d.get("layer_types"):
        check(
            set(d["layer_types"]) <= {"full_attention"},
            "layer_types",
            d["layer_types"],
            "only 'full_attention'",
        )


def config_from_hf(
    hf_config: Mapping[str, Any] | Any, *, dtype: str = "float32", param_dtype: str = "float32"
) -> ConfigLike:
    """Our config from a HF ``config.json`` dict (or a ``transformers`` config object).

    ``model_type`` gpt2 -> :class:`GPT2Config`; llama, mistral, qwen2 -> :class:`LlamaConfig` (Qwen2 always has
    q/k/v biases; Mistral and Qwen2 only without an active sliding window). RoPE scaling ``linear`` and ``llama3``
    map to :class:`RopeScaling`, from either transformers-5 ``rope_parameters`` or ``rope_theta`` + ``rope_scaling``.
    Features we cannot represent raise :class:`~jaxsafety.config.ConfigError` (a ``ValueError``) naming the HF
    field and its accepted values.
    """
    d = _as_dict(hf_config)
    model_type = d.get("model_type")
    check_choice("model_type", model_type, MODEL_TYPES)
    if model_type == "gpt2":
        check(d.get("scale_attn_weights", True), "scale_attn_weights", d.get("scale_attn_weights"), "true")
        for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
            check(not d.get(flag, False), flag, d.get(flag), "false")
        tie = d.get("tie_word_embeddings", True)
        check(tie, "tie_word_embeddings", tie, "true (GPT-2's LM head is the token embedding)")
        return GPT2Config(
            vocab_size=d["vocab_size"],
            max_seq_len=d.get("n_positions", d.get("n_ctx", 1024)),
            d_model=d["n_embd"],
            n_layers=d["n_layer"],
            n_heads=d["n_head"],
            d_ff=d.get("n_inner"),
            layer_norm_eps=float(d.get("layer_norm_epsilon", 1e-5)),
            activation=_activation(d, "activation_function", "gelu_new"),
            dtype=dtype,
            param_dtype=param_dtype,
        )

    _check_no_sliding_window(d, model_type)
    if model_type == "llama":
        # HF Llama's attention_bias also adds an o_proj bias, which our decoder has only for GPT-2
        bias = d.get("attention_bias", False)
        check(
            not bias, "attention_bias", bias, "false for model_type 'llama' (o_proj biases are not supported)"
        )
    mlp_bias = bool(d.get("mlp_bias", False)) if model_type == "llama" else False
    d_model, n_heads = d["hidden_size"], d["num_attention_heads"]
    n_kv = d.get("num_key_value_heads") or n_heads
    head_dim = d.get("head_dim") or d_model // n_heads
    theta, scaling = _rope(d)
    return LlamaConfig(
        vocab_size=d["vocab_size"],
        max_seq_len=d.get("max_position_embeddings", 2048),
        d_model=d_model,
        n_layers=d["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=None if n_kv == n_heads else n_kv,
        head_dim=None if head_dim * n_heads == d_model else head_dim,
        d_ff=d["intermediate_size"],
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        attention_bias=model_type == "qwen2",
        mlp_bias=mlp_bias,
        tie_embeddings=bool(d.get("tie_word_embeddings", False)),
        activation=_activation(d, "hidden_act", "silu"),
        dtype=dtype,
        param_dtype=param_dtype,
    )


def _default_model_type(cfg: ConfigLike) -> str:
    if isinstance(cfg, GPT2Config):
        return "gpt2"
    return "qwen2" if cfg.attention_bias else "llama"


def config_to_hf(cfg: ConfigLike, *, model_type: str | None = None) -> dict[str, Any]:
    """The HF ``config.json`` fields (without ``architectures``) of one of our configs; inverse of
    :func:`config_from_hf`.

    ``model_type`` defaults to gpt2 for :class:`GPT2Config`, and for :class:`LlamaConfig` to qwen2 when
    ``attention_bias`` (HF Llama would add an o_proj bias) and llama otherwise; ``"mistral"`` may be asked for
    instead of llama. Dropout is written as 0 (our models have none). RoPE is written both as transformers-5
    ``rope_parameters`` and as the older ``rope_theta`` / ``rope_scaling`` so either major version reads it.
    """
    if isinstance(cfg, GPT2Config):
        check_choice("model_type", model_type or "gpt2", ("gpt2",))
        return {
            "model_type": "gpt2",
            "vocab_size": cfg.vocab_size,
            "n_positions": cfg.max_seq_len,
            "n_ctx": cfg.max_seq_len,
            "n_embd": cfg.d_model,
            "n_layer": cfg.n_layers,
            "n_head": cfg.n_heads,
            "n_inner": cfg.d_ff,
            "layer_norm_epsilon": cfg.layer_norm_eps,
            "activation_function": cfg.activation,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "scale_attn_weights": True,
            "tie_word_embeddings": True,
        }
    if not isinstance(cfg, LlamaConfig):
        raise TypeError(f"cfg must be a GPT2Config or LlamaConfig, got {type(cfg).__name__}")
    model_type = model_type or _default_model_type(cfg)
    check_choice("model_type", model_type, ("llama", "mistral", "qwen2"))
    if model_type == "qwen2":
        check(cfg.attention_bias, "attention_bias", cfg.attention_bias, "true for model_type 'qwen2'")
        check(not cfg.mlp_bias, "mlp_bias", cfg.mlp_bias, "false for model_type 'qwen2'")
    else:
        check(not cfg.attention_bias, "attention_bias", True, f"false for model_type {model_type!r}")
    if model_type == "mistral":
        check(not cfg.mlp_bias, "mlp_bias", cfg.mlp_bias, "false for model_type 'mistral'")
    rope: dict[str, Any] = {"rope_type": "default"}
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        rope = {"rope_type": s.rope_type, "factor": s.factor}
        if s.rope_type == "llama3":
            rope.update(
                low_freq_factor=s.low_freq_factor,
                high_freq_factor=s.high_freq_factor,
                original_max_position_embeddings=s.original_max_position_embeddings,
            )
    out: dict[str, Any] = {
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads_,
        "head_dim": cfg.head_dim_,
        "intermediate_size": cfg.d_ff,
        "rms_norm_eps": cfg.rms_norm_eps,
        "hidden_act": cfg.activation,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_dropout": 0.0,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None if cfg.rope_scaling is None else rope,
        "rope_parameters": {**rope, "rope_theta": cfg.rope_theta},
    }
    if model_type == "llama":
        out.update(attention_bias=False, mlp_bias=cfg.mlp_bias)
    elif model_type == "mistral":
        out.update(sliding_window=None)
    else:
        out.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layers)
    return out


# ------------------------------------------------------------------------------------------------------------
# the weight table: one row per tensor of ours, shared by import and export
# ------------------------------------------------------------------------------------------------------------
class WeightMap(NamedTuple):
    """Our parameter ``ours`` (dotted path) = ``concat([hf[n].T if transpose else hf[n] for n in hf_names], -1)``.

    ``hf_shapes`` are the HF tensor shapes, checked on import and used to split on export.
    """

    ours: str
    hf_names: tuple[str, ...]
    hf_shapes: tuple[tuple[int, ...], ...]
    transpose: bool


def _gpt2_table(cfg: GPT2Config, p: str, o: str) -> list[WeightMap]:
    """GPT-2 rows; HF prefix ``p`` (``transformer.`` or empty), our prefix ``o`` (``backbone.`` or empty)."""
    d, f = cfg.d_model, cfg.d_ff_
    rows = [
        WeightMap(f"{o}embed.embedding", (f"{p}wte.weight",), ((cfg.vocab_size, d),), False),
        WeightMap(f"{o}pos_embed.embedding", (f"{p}wpe.weight",), ((cfg.max_seq_len, d),), False),
    ]
    # (ours, HF module, shape of the Conv1D weight [in, out])
    mods = [
        ("ln1", "ln_1", None),
        ("attn.qkv", "attn.c_attn", (d, 3 * d)),
        ("attn.out", "attn.c_proj", (d, d)),
        ("ln2", "ln_2", None),
        ("mlp.up", "mlp.c_fc", (d, f)),
        ("mlp.down", "mlp.c_proj", (f, d)),
    ]
    for i in range(cfg.n_layers):
        for ours, hf, shape in mods:
            a, b = f"{o}blocks.{i}.{ours}", f"{p}h.{i}.{hf}"
            if shape is None:  # LayerNorm
                rows.append(WeightMap(f"{a}.scale", (f"{b}.weight",), ((d,),), False))
                rows.append(WeightMap(f"{a}.bias", (f"{b}.bias",), ((d,),), False))
            else:
                rows.append(WeightMap(f"{a}.kernel", (f"{b}.weight",), (shape,), False))
                rows.append(WeightMap(f"{a}.bias", (f"{b}.bias",), ((shape[1],),), False))
    rows.append(WeightMap(f"{o}final_norm.scale", (f"{p}ln_f.weight",), ((d,),), False))
    rows.append(WeightMap(f"{o}final_norm.bias", (f"{p}ln_f.bias",), ((d,),), False))
    return rows


def _llama_table(cfg: LlamaConfig, p: str, o: str, lm_head: bool) -> list[WeightMap]:
    """Llama / Mistral / Qwen2 rows; HF prefix ``p`` (``model.`` or empty), our prefix ``o``."""
    d, f = cfg.d_model, cfg.d_ff
    q, kv = cfg.n_heads * cfg.head_dim_, cfg.n_kv_heads_ * cfg.head_dim_
    rows = [WeightMap(f"{o}embed.embedding", (f"{p}embed_tokens.weight",), ((cfg.vocab_size, d),), False)]
    for i in range(cfg.n_layers):
        a, b = f"{o}blocks.{i}", f"{p}layers.{i}"
        att, mlp = f"{b}.self_attn", f"{b}.mlp"
        qkv = (f"{att}.q_proj", f"{att}.k_proj", f"{att}.v_proj")
        gate_up = (f"{mlp}.gate_proj", f"{mlp}.up_proj")
        rows += [
            WeightMap(f"{a}.ln1.scale", (f"{b}.input_layernorm.weight",), ((d,),), False),
            WeightMap(
                f"{a}.attn.qkv.kernel", tuple(f"{n}.weight" for n in qkv), ((q, d), (kv, d), (kv, d)), True
            ),
            WeightMap(f"{a}.attn.out.kernel", (f"{att}.o_proj.weight",), ((d, q),), True),
            WeightMap(f"{a}.ln2.scale", (f"{b}.post_attention_layernorm.weight",), ((d,),), False),
            WeightMap(f"{a}.mlp.up.kernel", tuple(f"{n}.weight" for n in gate_up), ((f, d), (f, d)), True),
            WeightMap(f"{a}.mlp.down.kernel", (f"{mlp}.down_proj.weight",), ((d, f),), True),
        ]
        if cfg.attention_bias:
            rows.append(
                WeightMap(f"{a}.attn.qkv.bias", tuple(f"{n}.bias" for n in qkv), ((q,), (kv,), (kv,)), False)
            )
        if cfg.mlp_bias:
            rows.append(
                WeightMap(f"{a}.mlp.up.bias", tuple(f"{n}.bias" for n in gate_up), ((f,), (f,)), False)
            )
            rows.append(WeightMap(f"{a}.mlp.down.bias", (f"{mlp}.down_proj.bias",), ((d,),), False))
    rows.append(WeightMap(f"{o}final_norm.scale", (f"{p}norm.weight",), ((d,),), False))
    if lm_head and not cfg.tie_embeddings:
        rows.append(WeightMap(f"{o}lm_head.kernel", ("lm_head.weight",), ((cfg.vocab_size, d),), True))
    return rows


def _weight_table(cfg: ConfigLike, *, hf_prefix: str, num_labels: int | None) -> list[WeightMap]:
    """All rows for an LM (``num_labels=None``) or a sequence classifier with ``num_labels`` outputs."""
    o = "" if num_labels is None else "backbone."
    if isinstance(cfg, GPT2Config):
        rows = _gpt2_table(cfg, hf_prefix, o)
    else:
        rows = _llama_table(cfg, hf_prefix, o, lm_head=num_labels is None)
    if num_labels is not None:
        rows.append(WeightMap("score.kernel", ("score.weight",), ((num_labels, cfg.d_model),), True))
    return rows


# ------------------------------------------------------------------------------------------------------------
# reading tensors
# ------------------------------------------------------------------------------------------------------------
class _Tensors:
    """Lazy name -> numpy array view over safetensors files (single or sharded) or an in-memory state dict."""

    def __init__(self, names: dict[str, Any], get: Callable[[str], np.ndarray]):
        self._names, self._get = names, get

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._names[name])

    def __getitem__(self, name: str) -> np.ndarray:
        return self._get(name)

    @classmethod
    def from_dir(cls, path: Path) -> _Tensors:
        from safetensors import safe_open

        index = path / "model.safetensors.index.json"
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (path / "model.safetensors").exists():
            files = ["model.safetensors"]
        else:
            raise FileNotFoundError(
                f"{path} holds no model.safetensors or model.safetensors.index.json "
                "(PyTorch .bin checkpoints are not read: re-save with safe_serialization=True)"
            )
        handles = {f: safe_open(str(path / f), framework="numpy") for f in files}
        where, shapes = {}, {}
        for f, h in handles.items():
            for name in h.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                where[name] = f
                shapes[name] = h.get_slice(name).get_shape()
        return cls(shapes, lambda n: handles[where[n]].get_tensor(n))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> _Tensors:
        import torch

        def to_numpy(t: Any) -> np.ndarray:
            t = t.detach().cpu()
            if t.dtype == torch.bfloat16:  # numpy has no bfloat16: go through float32 (exact)
                t = t.float()
            return t.numpy()

        return cls({k: tuple(v.shape) for k, v in state.items()}, lambda n: to_numpy(state[n]))


def _kind(model_type: str, arch: str) -> str:
    """``lm`` or ``cls`` for an architecture name (``GPT2LMHeadModel`` / ``*ForCausalLM`` / base ``*Model``:
    ``lm``; ``*ForSequenceClassification``: ``cls``)."""
    stem = _ARCH_PREFIX[model_type]
    kinds = {
        stem + _LM_HEADS[model_type]: "lm",
        stem + "Model": "lm",
        stem + "ForSequenceClassification": "cls",
    }
    check_choice("architectures[0]", arch, tuple(kinds))
    return kinds[arch]


def _hf_prefix(model_type: str, tensors: _Tensors) -> str:
    """``transformer.`` / ``model.`` when the tensors carry the base-model prefix (head models), else empty (base
    models). Decided by the names, as ``transformers`` does, not by the architecture."""
    base, embed = (
        ("transformer.", "wte.weight") if model_type == "gpt2" else ("model.", "embed_tokens.weight")
    )
    return base if base + embed in tensors else ""


def param_dict(model: nnx.Module) -> dict[str, jax.Array]:
    """Every ``nnx.Param`` of ``model`` by dotted path (``blocks.0.attn.qkv.kernel`` -> array)."""
    return {".".join(map(str, k)): v for k, v in _flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))}


def _load_into(abstract: nnx.Module, arrays: dict[str, np.ndarray], param_dtype: Any) -> nnx.Module:
    """Fill an abstract (``nnx.eval_shape``) model with ``arrays`` keyed by dotted parameter path."""
    graphdef, state = nnx.split(abstract)
    pure = nnx.to_pure_dict(state)
    flat = {".".join(map(str, k)): v for k, v in _flatten(pure)}
    missing = sorted(set(flat) - set(arrays))
    extra = sorted(set(arrays) - set(flat))
    if missing or extra:  # the weight table and the model disagree: a bug here, not in the checkpoint
        raise RuntimeError(f"internal weight-table mismatch: missing {missing}, unexpected {extra}")
    for key, spec in flat.items():
        if tuple(arrays[key].shape) != tuple(spec.shape):
            raise RuntimeError(f"internal shape mismatch for {key}: {arrays[key].shape} vs {spec.shape}")
    filled = _unflatten({k: jnp.asarray(arrays[k], dtype=param_dtype) for k in flat}, pure)
    nnx.replace_by_pure_dict(state, filled)
    return nnx.merge(graphdef, state)


def _flatten(tree: Mapping[Any, Any], prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _flatten(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def _unflatten(flat: dict[str, Any], like: Mapping[Any, Any], prefix: str = "") -> dict[Any, Any]:
    return {
        k: _unflatten(flat, v, f"{prefix}{k}.") if isinstance(v, Mapping) else flat[f"{prefix}{k}"]
        for k, v in like.items()
    }


def from_hf(
    path_or_model: str | os.PathLike | Any, *, dtype: str | None = None, param_dtype: str = "float32"
) -> Model:
    """Load a HF checkpoint as a zoo model.

    ``path_or_model``: a directory with ``config.json`` and ``model.safetensors`` (or a sharded
    ``model.safetensors.index.json``), read with safetensors' numpy backend (no torch needed); or a ``transformers``
    ``PreTrainedModel`` in memory (its ``state_dict()`` and ``config``). ``*ForCausalLM`` / ``GPT2LMHeadModel`` /
    base ``*Model`` give :class:`GPT2` or :class:`Llama`; ``*ForSequenceClassification`` gives a
    :class:`ScoreModel` (HF ``score.weight [num_labels, D]`` -> our ``score.kernel [D, num_labels]``; an untied
    backbone's unused ``lm_head`` is zero). Parameters are stored as ``param_dtype`` and the forward pass runs in
    ``dtype`` (default: ``param_dtype``).

    Every expected tensor must be present with the expected shape, and no unknown tensor may remain; otherwise a
    ``ValueError`` names the tensor(s).
    """
    if isinstance(path_or_model, str | os.PathLike):
        path = Path(path_or_model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a HF checkpoint directory: no config.json")
        hf_config = json.loads((path / "config.json").read_text())
        tensors = _Tensors.from_dir(path)
        archs = hf_config.get("architectures") or []
    elif hasattr(path_or_model, "state_dict") and hasattr(path_or_model, "config"):
        hf_config = _as_dict(path_or_model.config)
        tensors = _Tensors.from_state_dict(path_or_model.state_dict())
        archs = [type(path_or_model).__name__]
    else:
        raise TypeError(
            f"path_or_model must be a directory or a transformers model, got {type(path_or_model)}"
        )

    cfg = config_from_hf(hf_config, dtype=dtype or param_dtype, param_dtype=param_dtype)
    model_type = hf_config["model_type"]
    if archs:
        check(len(archs) == 1, "architectures", archs, "a single architecture")
        kind = _kind(model_type, archs[0])
    else:  # no architectures field: a score head makes it a classifier
        kind = "cls" if "score.weight" in tensors else "lm"
    prefix = _hf_prefix(model_type, tensors)

    num_labels = None
    if kind == "cls":
        if "score.weight" not in tensors:
            raise ValueError("tensor 'score.weight' is missing from the checkpoint")
        num_labels = len(hf_config.get("id2label") or {}) or tensors.shape("score.weight")[0]
    rows = _weight_table(cfg, hf_prefix=prefix, num_labels=num_labels)

    arrays: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for row in rows:
        parts = []
        for name, shape in zip(row.hf_names, row.hf_shapes, strict=True):
            if name not in tensors:
                raise ValueError(
                    f"tensor {name!r} is missing from the checkpoint (expected shape {list(shape)})"
                )
            if tensors.shape(name) != shape:
                raise ValueError(
                    f"tensor {name!r} has shape {list(tensors.shape(name))}: expected {list(shape)} from config.json"
                )
            a = tensors[name]
            parts.append(a.T if row.transpose else a)
            used.add(name)
        arrays[row.ours] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
    tied_head = "lm_head.weight" if cfg.tie_embeddings else None
    unknown = sorted(n for n in tensors if n not in used and n != tied_head and not _IGNORED.search(n))
    if unknown:
        raise ValueError(
            f"unexpected tensors in the checkpoint (not part of {archs or model_type}): {unknown[:8]}"
        )

    pd = jnp.dtype(param_dtype)
    if isinstance(cfg, GPT2Config):
        make_lm: Callable[[], CausalLM] = lambda: GPT2(cfg, rngs=nnx.Rngs(0))  # noqa: E731
    else:
        make_lm = lambda: Llama(cfg, rngs=nnx.Rngs(0))  # noqa: E731
    if num_labels is None:
        abstract = nnx.eval_shape(make_lm)
    else:
        abstract = nnx.eval_shape(lambda: ScoreModel(make_lm(), num_labels, rngs=nnx.Rngs(0)))
        if not cfg.tie_embeddings:  # HF classifiers have no LM head: ours exists but is unused (zero)
            arrays["backbone.lm_head.kernel"] = np.zeros((cfg.d_model, cfg.vocab_size), pd)
    return _load_into(abstract, arrays, pd)


# ------------------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def to_hf(
    model: Model,
    path: str | os.PathLike,
    *,
    tokenizer: Any = None,
    model_type: str | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a HF checkpoint directory that ``transformers.AutoModelForCausalLM.from_pretrained`` (or
    ``AutoModelForSequenceClassification`` for a :class:`ScoreModel`) loads; returns the directory.

    Writes ``config.json`` (``architectures``, ``model_type``, ``dtype``/``torch_dtype`` = ``param_dtype``) and
    ``model.safetensors`` (numpy backend, no torch), plus the tokenizer files when a ``transformers`` tokenizer is
    given (its pad/bos/eos ids also go into config.json and generation_config.json). ``model_type`` picks llama
    or mistral for a :class:`LlamaConfig` without biases (see :func:`config_to_hf`); ``extra_config`` entries are
    merged into config.json last (e.g. ``pad_token_id``, which HF sequence classifiers need for batches). GPT-2
    tensors get the ``transformer.`` prefix and a tied LM head (no ``lm_head.weight``), as ``GPT2LMHeadModel``
    saves them; a :class:`ScoreModel`'s own LM head (``keep_lm_head``) is not written (HF classifiers have none).

    Atomic: everything is written to a fresh sibling directory and renamed into place, so ``path`` never holds a
    half-written checkpoint. A model with LoRA adapters (:func:`~jaxsafety.models.lora.add_lora`) is written
    with the adapters merged into its kernels (:func:`~jaxsafety.models.lora.merge_lora`). An existing ``path``
    is replaced only if it is empty or a HF checkpoint (has a config.json); anything else raises
    ``FileExistsError``.
    """
    path = Path(path)
    if has_lora(model):  # LoRA adapters are folded into their kernels: HF gets the plain architecture
        model = merge_lora(model)
    is_cls = isinstance(model, ScoreModel)
    lm = model.backbone if is_cls else model
    if not isinstance(lm, CausalLM):
        raise TypeError(f"model must be a GPT2, Llama or ScoreModel, got {type(model).__name__}")
    cfg = lm.config
    hf_config = config_to_hf(cfg, model_type=model_type)
    mt = hf_config["model_type"]
    num_labels = model.num_labels if is_cls else None
    arch = _ARCH_PREFIX[mt] + (
        "ForSequenceClassification" if is_cls else "LMHeadModel" if mt == "gpt2" else "ForCausalLM"
    )
    prefix = "transformer." if mt == "gpt2" else "model."
    hf_config = {
        "architectures": [arch],
        **hf_config,
        "dtype": cfg.param_dtype,
        "torch_dtype": cfg.param_dtype,
    }
    if is_cls:
        hf_config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        hf_config["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    if tokenizer is not None:
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if getattr(tokenizer, key, None) is not None:
                hf_config[key] = getattr(tokenizer, key)
    hf_config.update(extra_config or {})

    params = {k: np.asarray(v) for k, v in param_dict(model).items()}
    tensors: dict[str, np.ndarray] = {}
    used = set()
    for row in _weight_table(cfg, hf_prefix=prefix, num_labels=num_labels):
        ours = params[row.ours]
        sizes = [s[0] if row.transpose else s[-1] for s in row.hf_shapes]
        pieces = np.split(ours, np.cumsum(sizes)[:-1], axis=-1)
        for name, shape, piece in zip(row.hf_names, row.hf_shapes, pieces, strict=True):
            t = np.ascontiguousarray(piece.T if row.transpose else piece)
            if t.shape != shape:
                raise RuntimeError(f"internal shape mismatch writing {name}: {t.shape} vs {shape}")
            tensors[name] = t
        used.add(row.ours)
    left = sorted(set(params) - used - {"backbone.lm_head.kernel"})
    if left:
        raise ValueError(f"parameters with no HF counterpart: {left}")

    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or (path / "config.json").exists())):
        raise FileExistsError(f"{path} exists and is not a HF checkpoint directory: refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        from safetensors.numpy import save_file

        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
            # generation defaults from the tokenizer's special tokens (what ``model.generate`` stops / pads on)
            ids = {
                k: hf_config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in hf_config
            }
            (tmp / "generation_config.json").write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            if f.is_file():
                _fsync(f)
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            # a crash between these two renames leaves two complete copies (old and tmp), never a half one
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
