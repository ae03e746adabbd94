"""Factors and scores saved as safetensors (``safetensors.numpy``), written atomically
(:func:`jaxsafety.io.write_atomic`: a reader never sees a half-written file).

Factors: one tensor per (layer, field) named ``<layer>/<field>`` (e.g. ``blocks.0.mlp.up/eigenvalues``), plus
``num_examples`` and ``num_tokens``; the strategy and ``include_bias`` go in the file's metadata. Scores: one
tensor ``scores`` and free-form string metadata.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load, save

from jaxsafety.influence.factors import STRATEGIES, Factors, LayerFactors
from jaxsafety.io import write_atomic

__all__ = ["load_factors", "load_scores", "save_factors", "save_scores"]

_FIELDS = tuple(f.name for f in dataclasses.fields(LayerFactors))


def save_factors(path: str | os.PathLike, factors: Factors) -> Path:
    """Write ``factors`` to ``path`` (safetensors, atomic); returns the path."""
    if not isinstance(factors, Factors):
        raise ValueError(f"factors of type {type(factors).__name__} is invalid: accepted values are Factors")
    tensors = {
        "num_examples": np.asarray(factors.num_examples, np.float32),
        "num_tokens": np.asarray(factors.num_tokens, np.float32),
    }
    for name, lf in factors.layers.items():
        if "/" in name:
            raise ValueError(f"layer name {name!r} is invalid: accepted values are names without '/'")
        for field in _FIELDS:
            value = getattr(lf, field)
            if value is not None:
                tensors[f"{name}/{field}"] = np.ascontiguousarray(np.asarray(value))
    metadata = {
        "strategy": factors.strategy,
        "include_bias": str(factors.include_bias),
        "layers": ",".join(factors.layers),
    }
    return write_atomic(path, save(tensors, metadata=metadata))


def load_factors(path: str | os.PathLike) -> Factors:
    """Read factors written by :func:`save_factors`."""
    data = Path(path).read_bytes()
    tensors = load(data)
    metadata = _metadata(data)
    strategy = metadata.get("strategy")
    if strategy not in STRATEGIES or "layers" not in metadata:
        raise ValueError(f"{path} is invalid: accepted values are files written by save_factors")
    layers = {}
    for name in metadata["layers"].split(","):
        fields = {f: jnp.asarray(tensors[f"{name}/{f}"]) for f in _FIELDS if f"{name}/{f}" in tensors}
        layers[name] = LayerFactors(**fields)
    return Factors(
        layers,
        jnp.asarray(tensors["num_examples"]),
        jnp.asarray(tensors["num_tokens"]),
        strategy,
        metadata["include_bias"] == "True",
    )


def save_scores(path: str | os.PathLike, scores, metadata: dict[str, str] | None = None) -> Path:
    """Write a scores array (e.g. ``[Q, N]``) and string ``metadata`` to ``path`` (safetensors, atomic)."""
    metadata = dict(metadata or {})
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ValueError(f"metadata[{bad[0]!r}] is invalid: accepted values are strings")
    return write_atomic(path, save({"scores": np.ascontiguousarray(np.asarray(scores))}, metadata=metadata))


def load_scores(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """``(scores, metadata)`` written by :func:`save_scores`."""
    data = Path(path).read_bytes()
    return load(data)["scores"], _metadata(data)


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors byte string (its JSON header)."""
    import json

    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {}) or {}
