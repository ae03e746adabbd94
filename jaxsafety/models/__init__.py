"""Flax NNX model zoo: GPT-2 and Llama families (Mistral, Qwen2), score/value heads, one activation mechanism.

from jaxsafety.models import GPT2, GPT2Config, Llama, LlamaConfig, Hooks, add
model = Llama(LlamaConfig(vocab_size=512, d_model=128, n_layers=2, n_heads=4, n_kv_heads=2), rngs=nnx.Rngs(0))
logits = model(tokens, attention_mask)                                   # [B, T, V]
out = model.forward(tokens, mask, hooks=Hooks.make(capture="blocks.*.resid_post",
                                                   edits=[add("blocks.1.resid_post", steer)]))
acts = capture(model, tokens, mask, "blocks.*.resid_post", edits=[add("blocks.1.resid_post", steer)])  # jitted
"""

from jaxsafety.models.generate import (
    ContinuationScores,
    GenerateOutput,
    SamplingConfig,
    capture,
    generate,
    left_pad,
    prefill,
    right_pad,
    score_continuations,
    sequence_logprobs,
    token_logprobs,
)
from jaxsafety.models.gpt2 import GPT2, GPT2Config
from jaxsafety.models.heads import ScoreModel, ScoreOutput, last_token_index
from jaxsafety.models.hf import config_from_hf, config_to_hf, from_hf, to_hf
from jaxsafety.models.hooks import Edit, Hooks, add, project_out, replace, scale
from jaxsafety.models.llama import Llama, LlamaConfig, RopeScaling
from jaxsafety.models.lora import LoRAConfig, LoRALinear, add_lora, merge_lora
from jaxsafety.models.taps import (
    LinearLayer,
    Tap,
    layer_taps,
    linear_layers,
    per_example_bias_grads,
    per_example_kernel_grads,
)
from jaxsafety.models.tokenizer import CharTokenizer
from jaxsafety.models.transformer import CausalLM, KVCache, ModelOutput, lean_backward, positions_from_mask

__all__ = [
    "GPT2",
    "CausalLM",
    "CharTokenizer",
    "ContinuationScores",
    "Edit",
    "GPT2Config",
    "GenerateOutput",
    "Hooks",
    "KVCache",
    "LinearLayer",
    "Llama",
    "LlamaConfig",
    "LoRAConfig",
    "LoRALinear",
    "ModelOutput",
    "RopeScaling",
    "SamplingConfig",
    "ScoreModel",
    "ScoreOutput",
    "Tap",
    "add",
    "add_lora",
    "capture",
    "config_from_hf",
    "config_to_hf",
    "from_hf",
    "generate",
    "last_token_index",
    "layer_taps",
    "lean_backward",
    "left_pad",
    "linear_layers",
    "merge_lora",
    "per_example_bias_grads",
    "per_example_kernel_grads",
    "positions_from_mask",
    "prefill",
    "project_out",
    "replace",
    "right_pad",
    "scale",
    "score_continuations",
    "sequence_logprobs",
    "to_hf",
    "token_logprobs",
]
