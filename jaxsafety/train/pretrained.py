"""Small *trained* LMs on demand: train once, then load from a cache in seconds.

Studies (steering, unlearning, influence, judges...) need small trained language models and no hub is reachable.
:func:`pretrained_lm` keys each model by a hash of its :class:`~jaxsafety.train.lm.PretrainConfig` (architecture
and size, corpus, tokenizer, data shape, optimizer, steps, seed) and keeps it as an HF-format checkpoint
(``config.json`` + ``model.safetensors`` + tokenizer files) under ``$JAXSAFETY_CACHE`` (default
``~/.cache/jaxsafety``)/``lm/<hash>/``. The first caller trains it; every later caller (another experiment, another
process, a test) loads it. A file lock makes concurrent callers (pytest-xdist workers) train it only once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from jaxsafety.config import config_from_dict, config_to_dict
from jaxsafety.train.experiment import write_json_atomic
from jaxsafety.train.lm import PretrainConfig, pretrain

__all__ = ["PretrainedLM", "cache_dir", "pretrained_lm", "pretrained_lm_key"]

# bump when a change to the training code makes old cached models stale
CACHE_VERSION = 1


class PretrainedLM(NamedTuple):
    model: Any  # GPT2 | Llama
    tokenizer: Any  # transformers PreTrainedTokenizerFast
    path: Path  # the HF-format checkpoint directory
    info: dict[str, Any]  # config and headline numbers recorded when it was trained
    from_cache: bool


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$JAXSAFETY_CACHE``, else ``~/.cache/jaxsafety``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("JAXSAFETY_CACHE", Path.home() / ".cache" / "jaxsafety"))


def pretrained_lm_key(config: PretrainConfig) -> str:
    """Stable hash of everything that determines the trained weights (and the cache format version)."""
    payload: dict[str, Any] = {"version": CACHE_VERSION, "config": config_to_dict(config)}
    if (
        config.corpus != "synthetic"
    ):  # a text-file corpus: its contents, not just its path, determine the model
        payload["corpus_sha256"] = hashlib.sha256(Path(config.corpus).read_bytes()).hexdigest()
    blob = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pretrained_lm(
    config: PretrainConfig, *, root: str | os.PathLike | None = None, dtype: str | None = None
) -> PretrainedLM:
    """The small LM ``config`` describes: loaded from the cache, or trained (then cached) on a miss.

    ``dtype`` overrides the computation dtype of the loaded model (parameters stay float32).
    """
    from jaxsafety.models.hf import from_hf, to_hf
    from jaxsafety.models.tokenizer import load_tokenizer

    key = pretrained_lm_key(config)
    entry = cache_dir(root) / "lm" / key
    hf_dir = entry / "hf"
    info_path = entry / "info.json"
    with _locked(entry.parent / f"{key}.lock"):
        from_cache = info_path.is_file() and (hf_dir / "config.json").is_file()
        if not from_cache:
            result = pretrain(config, desc=f"pretrain {key[:8]}")
            to_hf(result.model, hf_dir, tokenizer=result.tokenizer)
            info = {
                "key": key,
                "cache_version": CACHE_VERSION,
                "config": config_to_dict(config),
                "train_loss": result.train_loss,
                "train_eval_loss": result.train_eval_loss,
                "heldout_loss": result.heldout_loss,
                "unigram_entropy": result.unigram_entropy,
                "num_params": result.num_params,
                "num_train_tokens": result.num_train_tokens,
            }
            write_json_atomic(info_path, info)  # written last: its presence marks a complete entry
    info = json.loads(info_path.read_text())
    if config_from_dict(PretrainConfig, info["config"]) != config:
        raise RuntimeError(
            f"cache entry {entry} holds a different config (hash collision or a corrupted entry)"
        )
    model = from_hf(hf_dir, dtype=dtype)
    return PretrainedLM(model, load_tokenizer(hf_dir), hf_dir, info, from_cache)
