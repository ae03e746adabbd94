"""Llama family (Touvron et al. 2023; Llama 3): RMSNorm, RoPE (linear / llama3 scaling), SwiGLU, grouped-query
attention, optional tied embeddings. Mistral (no sliding window here) and Qwen2 (q/k/v biases) fit this config."""

from __future__ import annotations

import dataclasses
from typing import Literal

from flax import nnx

from jaxsafety.config import check, check_choice, check_range
from jaxsafety.models.transformer import CausalLM, rope_frequencies

__all__ = ["Llama", "LlamaConfig", "RopeScaling"]


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """HF ``rope_scaling``: ``linear`` (positions / factor) or ``llama3`` (frequency-band-dependent)."""

    rope_type: Literal["linear", "llama3"] = "linear"
    factor: float = 1.0
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    original_max_position_embeddings: int = 8192  # llama3

    def __post_init__(self) -> None:
        check_choice("rope_scaling.rope_type", self.rope_type, ("linear", "llama3"))
        check_range("rope_scaling.factor", self.factor, gt=0)
        if self.rope_type == "llama3":
            check(
                self.high_freq_factor > self.low_freq_factor,
                "rope_scaling.high_freq_factor",
                self.high_freq_factor,
                f"numbers > low_freq_factor ({self.low_freq_factor})",
            )
            check_range(
                "rope_scaling.original_max_position_embeddings", self.original_max_position_embeddings, ge=1
            )


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Llama hyperparameters (HF names in comments). Defaults: a ~20M-parameter toy, not a released model."""

    vocab_size: int = 32000
    max_seq_len: int = 2048  # max_position_embeddings
    d_model: int = 256  # hidden_size
    n_layers: int = 4  # num_hidden_layers
    n_heads: int = 8  # num_attention_heads
    n_kv_heads: int | None = None  # num_key_value_heads (None: = n_heads, i.e. MHA)
    head_dim: int | None = None  # None: d_model // n_heads
    d_ff: int = 688  # intermediate_size
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    attention_bias: bool = False  # q/k/v biases (Qwen2: True)
    mlp_bias: bool = False
    tie_embeddings: bool = False  # tie_word_embeddings
    activation: Literal["silu", "gelu", "gelu_new", "relu"] = "silu"  # hidden_act
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    param_dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        for f in ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads", "d_ff"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        if self.n_kv_heads is not None:
            check(
                self.n_kv_heads >= 1 and self.n_heads % self.n_kv_heads == 0,
                "n_kv_heads",
                self.n_kv_heads,
                f"divisors of n_heads ({self.n_heads})",
            )
        if self.head_dim is None:
            check(
                self.d_model % self.n_heads == 0,
                "n_heads",
                self.n_heads,
                f"divisors of d_model ({self.d_model})",
            )
        else:
            check_range("head_dim", self.head_dim, ge=2, integer=True)
        check(self.head_dim_ % 2 == 0, "head_dim", self.head_dim_, "even integers (RoPE rotates pairs)")
        check_range("rms_norm_eps", self.rms_norm_eps, gt=0)
        check_range("rope_theta", self.rope_theta, gt=0)
        check_choice("activation", self.activation, ("silu", "gelu", "gelu_new", "relu"))
        check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))
        check_choice("param_dtype", self.param_dtype, ("float32", "bfloat16"))

    norm = "rmsnorm"
    positional = "rope"
    mlp = "swiglu"
    out_bias = False

    @property
    def qkv_bias(self) -> bool:
        return self.attention_bias

    @property
    def n_kv_heads_(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim_(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def d_ff_(self) -> int:
        return self.d_ff

    @property
    def norm_eps(self) -> float:
        return self.rms_norm_eps

    @property
    def rope_inv_freq(self) -> tuple[float, ...]:
        scaling = dataclasses.asdict(self.rope_scaling) if self.rope_scaling is not None else None
        return rope_frequencies(self.head_dim_, self.rope_theta, scaling)


class Llama(CausalLM):
    """Llama-family LM: ``Llama(LlamaConfig(...), rngs=nnx.Rngs(0))(tokens, mask) -> logits``."""

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
