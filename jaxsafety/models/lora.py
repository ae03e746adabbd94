"""LoRA adapters (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models") on the zoo's
dense layers.

A LoRA layer computes ``y = x W + b + (alpha / r) (x A) B`` with the base kernel ``W [in, out]`` (and bias)
frozen and only ``A [in, r]`` and ``B [r, out]`` trained. ``B`` starts at zero, so adding adapters leaves the
model's function exactly unchanged; ``A`` starts uniform in ``+-1/sqrt(in)`` (PEFT's Kaiming-uniform default).
Scaling by ``alpha / r`` (Hu et al., section 4.1) keeps the update's size roughly independent of the rank.

The zoo fuses projections (``attn.qkv`` is ``q|k|v``, a SwiGLU ``mlp.up`` is ``gate|up``; kernels ``[in,
out]``, see :mod:`jaxsafety.models.transformer`), so one adapter on ``attn.qkv`` is a single rank-``r`` update
of the fused ``[D, (H + 2 Hkv) Dh]`` matrix (PEFT's per-projection adapters would be three rank-``r``
updates).

Adapted layers keep the base layer's parameter paths (``blocks.0.attn.qkv.kernel``, ``...bias``) and add
``...lora_a`` / ``...lora_b`` as :class:`flax.nnx.LoRAParam` (a subclass of ``nnx.Param``): filter with
``nnx.LoRAParam`` to train only the adapters. :func:`merge_lora` folds them into the kernels (``W + (alpha /
r) A B``), giving back the plain architecture; :func:`~jaxsafety.models.hf.to_hf` merges before writing.

Usage::

    cfg = LoRAConfig(rank=8, alpha=16, targets=("*attn.qkv", "*mlp.up"))
    lora_model = add_lora(model, cfg, rngs=nnx.Rngs(0))
    plain = merge_lora(lora_model)  # same logits (up to float rounding), no adapters
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsafety.config import check, check_range

__all__ = ["LoRAConfig", "LoRALinear", "add_lora", "has_lora", "lora_targets", "merge_lora"]

# the fields of nnx.Linear that its __call__ reads (besides the kernel and bias variables)
_LINEAR_FIELDS = (
    "in_features",
    "out_features",
    "use_bias",
    "dtype",
    "param_dtype",
    "precision",
    "dot_general",
    "promote_dtype",
    "preferred_element_type",
)


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Adapter rank ``r``, scale numerator ``alpha`` (the update is scaled by ``alpha / r``) and the layers to
    adapt: globs (``fnmatch``, ``*`` also matches dots) over module paths such as ``blocks.0.attn.qkv``,
    ``blocks.1.mlp.up``, ``blocks.1.mlp.down``, ``lm_head``. Only ``nnx.Linear`` layers can be adapted (not
    the embeddings). The defaults adapt every attention projection."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("*attn.qkv", "*attn.out")

    def __post_init__(self) -> None:
        check_range("rank", self.rank, ge=1, integer=True)
        check_range("alpha", self.alpha, gt=0)
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        check(
            len(targets) >= 1 and all(isinstance(t, str) and t for t in targets),
            "targets",
            self.targets,
            "a non-empty tuple of module-path globs such as '*attn.qkv'",
        )
        object.__setattr__(self, "targets", targets)  # a list (YAML / CLI) becomes a tuple: hashable

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class LoRALinear(nnx.Linear):
    """An ``nnx.Linear`` plus a low-rank update: ``x W + b + scaling (x A) B``.

    Built from an existing layer, whose ``kernel`` / ``bias`` variables and settings (dtypes, the
    ``dot_general`` the zoo chose) it adopts, so the base computation is the same program and the parameter
    paths are unchanged; ``lora_a [in, r]`` and ``lora_b [r, out]`` (zeros) are :class:`flax.nnx.LoRAParam` in
    the base layer's ``param_dtype``; the update runs in the layer's computation dtype.
    """

    def __init__(self, base: nnx.Linear, rank: int, scaling: float, *, rngs: nnx.Rngs):
        # no super().__init__: it would draw a fresh kernel; the base layer's variables are adopted instead
        self.kernel = base.kernel
        self.bias = nnx.data(None) if base.bias is None else base.bias
        for name in _LINEAR_FIELDS:
            setattr(self, name, getattr(base, name))
        self.rank = rank
        self.scaling = float(scaling)
        a_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")  # U(+-1/sqrt(in))
        self.lora_a = nnx.LoRAParam(a_init(rngs.params(), (self.in_features, rank), self.param_dtype))
        self.lora_b = nnx.LoRAParam(jnp.zeros((rank, self.out_features), self.param_dtype))

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        y = super().__call__(inputs, out_sharding=out_sharding)
        x, a, b = self.promote_dtype((inputs, self.lora_a[...], self.lora_b[...]), dtype=self.dtype)
        # (x A) B: two thin matmuls, never the [in, out] product
        return y + (x @ a @ b) * jnp.asarray(self.scaling, y.dtype)

    def merged_kernel(self) -> jax.Array:
        """``W + scaling A B`` (computed in float32, stored in the kernel's dtype)."""
        w = self.kernel[...]
        delta = jnp.asarray(self.lora_a[...], jnp.float32) @ jnp.asarray(self.lora_b[...], jnp.float32)
        return (w.astype(jnp.float32) + self.scaling * delta).astype(w.dtype)


def _dotted(path: tuple) -> str:
    return ".".join(map(str, path))


def _linear_paths(model: nnx.Module) -> dict[str, nnx.Linear]:
    return {_dotted(p): m for p, m in nnx.iter_modules(model) if isinstance(m, nnx.Linear) and p}


def lora_targets(model: nnx.Module, targets: Sequence[str]) -> list[str]:
    """Module paths of the ``nnx.Linear`` layers of ``model`` that the globs ``targets`` select, in model
    order.

    Raises ``ValueError`` naming a glob that selects no linear layer (a typo would otherwise adapt
    nothing)."""
    linears = _linear_paths(model)
    chosen: list[str] = []
    for glob in targets:
        hits = [p for p in linears if fnmatch.fnmatchcase(p, glob)]
        if not hits:
            raise ValueError(
                f"targets glob {glob!r} selects no linear layer: accepted paths are like {sorted(linears)[:6]}"
            )
        chosen += [p for p in hits if p not in chosen]
    return [p for p in linears if p in chosen]


def _set_child(model: nnx.Module, path: tuple, child: nnx.Module) -> None:
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    if isinstance(path[-1], int):
        parent[path[-1]] = child
    else:
        setattr(parent, path[-1], child)


def has_lora(model: nnx.Module) -> bool:
    """Whether ``model`` holds any :class:`LoRALinear`."""
    return any(isinstance(m, LoRALinear) for _, m in nnx.iter_modules(model))


def add_lora(model: nnx.Module, config: LoRAConfig, *, rngs: nnx.Rngs) -> nnx.Module:
    """A copy of ``model`` (any zoo model: GPT2, Llama, ScoreModel) whose target linear layers are
    :class:`LoRALinear` (``B = 0``: the same function as ``model``, exactly). ``model`` itself is unchanged
    (the copy shares its immutable parameter arrays). ``rngs`` draws the ``A`` matrices, one key per layer in
    model order. Raises ``ValueError`` when a target glob selects no linear layer or the model already has
    adapters."""
    if not isinstance(config, LoRAConfig):
        raise TypeError(f"config must be a LoRAConfig, got {type(config).__name__}")
    if has_lora(model):
        raise ValueError("model already has LoRA adapters: merge_lora it first, or train the adapters it has")
    chosen = lora_targets(model, config.targets)
    out = nnx.clone(model)
    modules = {_dotted(p): (p, m) for p, m in nnx.iter_modules(out)}
    for name in chosen:
        path, base = modules[name]
        _set_child(out, path, LoRALinear(base, config.rank, config.scaling, rngs=rngs))
    return out


def merge_lora(model: nnx.Module) -> nnx.Module:
    """A copy of ``model`` with every :class:`LoRALinear` replaced by a plain ``nnx.Linear`` whose kernel is
    ``W + (alpha / r) A B``: the architecture (and graph definition) of the model before :func:`add_lora`.
    A model without adapters comes back as a copy."""
    out = nnx.clone(model)
    for path, m in list(nnx.iter_modules(out)):
        if not isinstance(m, LoRALinear):
            continue
        kernel = m.merged_kernel()
        bias = None if m.bias is None else m.bias[...]
        plain = nnx.Linear(
            m.in_features,
            m.out_features,
            use_bias=m.use_bias,
            dtype=m.dtype,
            param_dtype=m.param_dtype,
            precision=m.precision,
            # the initialisers hand over the merged arrays: no random draw, no shape-by-shape eager program
            kernel_init=lambda *_, k=kernel: k,
            bias_init=lambda *_, b=bias: b,
            dot_general=m.dot_general,
            promote_dtype=m.promote_dtype,
            preferred_element_type=m.preferred_element_type,
            rngs=nnx.Rngs(0),
        )
        _set_child(out, path, plain)
    return out
