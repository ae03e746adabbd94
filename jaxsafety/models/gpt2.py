"""GPT-2 family (Radford et al. 2019): learned positions, pre-LayerNorm, GELU (tanh) MLP, tied embeddings."""

from __future__ import annotations

import dataclasses
from typing import Literal

from flax import nnx

from jaxsafety.config import check, check_choice, check_range
from jaxsafety.models.transformer import CausalLM

__all__ = ["GPT2", "GPT2Config"]

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """GPT-2 hyperparameters (HF names in comments). Defaults: GPT-2 small (124M)."""

    vocab_size: int = 50257
    max_seq_len: int = 1024  # n_positions
    d_model: int = 768  # n_embd
    n_layers: int = 12  # n_layer
    n_heads: int = 12  # n_head
    d_ff: int | None = None  # n_inner (None: 4 * d_model)
    layer_norm_eps: float = 1e-5
    activation: Literal["gelu_new", "gelu", "relu", "silu"] = "gelu_new"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # computation
    param_dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        for f in ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check(
            self.d_model % self.n_heads == 0, "n_heads", self.n_heads, f"divisors of d_model ({self.d_model})"
        )
        if self.d_ff is not None:
            check_range("d_ff", self.d_ff, ge=1, integer=True)
        check_range("layer_norm_eps", self.layer_norm_eps, gt=0)
        check_choice("activation", self.activation, ("gelu_new", "gelu", "relu", "silu"))
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("param_dtype", self.param_dtype, ("float32", "bfloat16"))

    # --- the switches the shared decoder reads (jaxsafety.models.transformer.TransformerSpec) ---
    norm = "layernorm"
    positional = "learned"
    mlp = "gelu"
    qkv_bias = True
    out_bias = True
    mlp_bias = True
    tie_embeddings = True
    rope_inv_freq = ()

    @property
    def n_kv_heads_(self) -> int:
        return self.n_heads

    @property
    def head_dim_(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_ff_(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def norm_eps(self) -> float:
        return self.layer_norm_eps


class GPT2(CausalLM):
    """GPT-2 LM: ``GPT2(GPT2Config(...), rngs=nnx.Rngs(0))(tokens, mask) -> logits``."""

    def __init__(self, config: GPT2Config, *, rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
