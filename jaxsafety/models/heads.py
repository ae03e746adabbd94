"""Score / value heads on any zoo backbone: reward models (sequence score at the last real token, as HF's
``...ForSequenceClassification``) and PPO critics (per-token values), optionally keeping the LM head so one
backbone serves as policy and value function."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsafety.models.hooks import Hooks
from jaxsafety.models.transformer import CausalLM, KVCache

__all__ = ["ScoreModel", "ScoreOutput", "last_token_index"]


class ScoreOutput(NamedTuple):
    scores: jax.Array  # [B, num_labels] at the last real token of each row
    token_scores: jax.Array  # [B, T, num_labels] at every position (per-token values)
    logits: jax.Array | None  # [B, T, V] when the LM head is kept
    hidden: jax.Array
    cache: KVCache | None
    activations: dict[str, jax.Array]


def last_token_index(attention_mask: jax.Array) -> jax.Array:
    """Index of the rightmost real token per row ``[B]`` (correct for left and right padding)."""
    t = attention_mask.shape[-1]
    return jnp.max(jnp.where(attention_mask.astype(bool), jnp.arange(t), -1), axis=-1).clip(0)


class ScoreModel(nnx.Module):
    """``backbone`` + linear score head (no bias, like HF). ``model(tokens, mask) -> scores [B, num_labels]``."""

    def __init__(
        self, backbone: CausalLM, num_labels: int = 1, *, rngs: nnx.Rngs, keep_lm_head: bool = False
    ):
        if num_labels < 1:
            raise ValueError(f"num_labels={num_labels} is invalid: accepted values are integers >= 1")
        self.backbone = backbone
        self.config = backbone.config
        self.num_labels = num_labels
        self.keep_lm_head = keep_lm_head
        d = backbone.config.d_model
        self.score = nnx.Linear(
            d,
            num_labels,
            use_bias=False,
            dtype=jnp.dtype(backbone.config.dtype),
            param_dtype=jnp.dtype(backbone.config.param_dtype),
            kernel_init=nnx.initializers.normal(1.0 / (d + 1) ** 0.5),
            rngs=rngs,
        )

    def __call__(
        self, tokens: jax.Array, attention_mask: jax.Array | None = None, **kwargs: Any
    ) -> jax.Array:
        return self.forward(tokens, attention_mask, **kwargs).scores

    def forward(
        self,
        tokens: jax.Array,
        attention_mask: jax.Array | None = None,
        *,
        positions: jax.Array | None = None,
        cache: KVCache | None = None,
        hooks: Hooks | None = None,
    ) -> ScoreOutput:
        out = self.backbone.forward(
            tokens,
            attention_mask,
            positions=positions,
            cache=cache,
            hooks=hooks,
            compute_logits=self.keep_lm_head,
        )
        token_scores = self.score(out.hidden).astype(jnp.float32)
        mask = jnp.ones(tokens.shape, bool) if attention_mask is None else attention_mask
        idx = last_token_index(mask)
        scores = jnp.take_along_axis(token_scores, idx[:, None, None], axis=1)[:, 0]
        return ScoreOutput(scores, token_scores, out.logits, out.hidden, out.cache, out.activations)

    def site_names(self) -> list[str]:
        return self.backbone.site_names()
