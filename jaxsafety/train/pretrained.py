"""Small *trained* models on demand: train once, then load from a cache in seconds.

Studies (steering, unlearning, influence, judges, scaling...) need small trained language models and no hub is
reachable. :func:`trained_model` is the one cache: it keys a model by a hash of a JSON *spec* (model config, data
config, training config, seed: everything that determines the weights) and keeps it as an HF-format checkpoint
(``config.json`` + ``model.safetensors``, plus tokenizer files for a ``transformers`` tokenizer) with an
``info.json`` (the spec and what training reported, e.g. its loss curve) under
``$JAXSAFETY_CACHE`` (default ``~/.cache/jaxsafety``)``/<kind>/<hash>/``. The first caller trains it; every later
caller (another experiment, another process, a test) loads it. A file lock makes concurrent callers (pytest-xdist
workers) train it only once, and ``info.json`` is written atomically after the checkpoint, so a killed run leaves
no entry that looks complete.

Built on it:

- :func:`pretrained_lm`: an LM pretrained on a corpus (:class:`~jaxsafety.train.lm.PretrainConfig`) with its BPE;
- :func:`arithmetic_lm`: a tiny GPT-2 / Llama trained from scratch on arithmetic equation lines
  (:mod:`jaxsafety.data.arithmetic`) with :func:`~jaxsafety.train.finetune.finetune`, the loss on the answers; the
  response models of the LM judge and the sampled model of the inference-scaling study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import numpy as np
from flax import nnx

from jaxsafety.config import ConfigError, check_choice, check_range, config_from_dict, config_to_dict
from jaxsafety.data.arithmetic import ALPHABET, OPS, TERMINATOR, all_arithmetic_problems, check_ops, evaluate
from jaxsafety.io import cache_dir, write_json_atomic
from jaxsafety.models.gpt2 import GPT2, GPT2Config
from jaxsafety.models.llama import Llama, LlamaConfig
from jaxsafety.models.tokenizer import CharTokenizer
from jaxsafety.train.lm import PretrainConfig, pretrain
from jaxsafety.train.optim import OptimizerConfig

__all__ = [
    "ArithmeticLM",
    "ArithmeticLMConfig",
    "PretrainedLM",
    "TrainedModel",
    "arithmetic_lm",
    "pretrained_lm",
    "pretrained_lm_key",
    "trained_model",
    "trained_model_key",
]

# bump when a change to the training code makes old cached models stale
# 2: info.json records the spec (the generic trained_model cache); arithmetic LMs and LM judges cached
CACHE_VERSION = 2


# ----------------------------------------------------------------------------------------------------------------
# the generic cache


class TrainedModel(NamedTuple):
    """What :func:`trained_model` returns. ``info``: the spec (``info["spec"]``) and what ``train`` reported."""

    model: Any  # GPT2 | Llama | ScoreModel
    info: dict[str, Any]
    path: Path  # the HF-format checkpoint directory
    from_cache: bool


def _canonical(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` as it reads back from JSON (tuples become lists); ``ConfigError`` if it is not JSON data."""
    try:
        return json.loads(json.dumps(spec, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ConfigError("spec", type(spec).__name__, f"a JSON-serialisable dict ({err})") from None


def trained_model_key(spec: Mapping[str, Any]) -> str:
    """Stable hash (20 hex digits) of ``spec`` and the cache format version :data:`CACHE_VERSION`."""
    blob = json.dumps({"version": CACHE_VERSION, **_canonical(spec)}, sort_keys=True)
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


def trained_model(
    kind: str,
    spec: Mapping[str, Any],
    train: Callable[[], tuple[Any, Mapping[str, Any]] | tuple[Any, Mapping[str, Any], Any]],
    *,
    root: str | os.PathLike | None = None,
    dtype: str | None = None,
) -> TrainedModel:
    """The model that ``train()`` returns, trained once per ``(kind, spec)`` and loaded from the cache afterwards.

    ``kind``: a directory name grouping the entries (``"lm"``, ``"arithmetic_lm"``, ``"lm_judge"``...). ``spec``:
    JSON data holding everything that determines the weights (use :func:`~jaxsafety.config.config_to_dict` for
    configs, and include the seed); its hash :func:`trained_model_key` names the entry. ``train``: called on a
    miss only, returns ``(model, info)`` or ``(model, info, tokenizer)``: a zoo model
    (:func:`~jaxsafety.models.hf.to_hf` writes it), JSON data recorded in ``info.json`` (losses, metrics) and
    optionally a ``transformers`` tokenizer saved next to the weights. ``dtype`` overrides the computation dtype of
    the loaded model (parameters stay as trained). The model returned is always the one read back from the
    checkpoint, so a hit and a miss give the same function.

    Raises ``ConfigError`` for a bad ``kind`` or a spec that is not JSON data (before anything trains), and
    ``RuntimeError`` when an entry holds another spec (a hash collision or a corrupted entry).
    """
    from jaxsafety.models.hf import from_hf, to_hf

    ok = isinstance(kind, str) and kind.replace("_", "").replace("-", "").isalnum()
    if not ok:
        raise ConfigError("kind", kind, "a non-empty name of letters, digits, '_' and '-'")
    canonical = _canonical(spec)
    key = trained_model_key(canonical)
    entry = cache_dir(root) / kind / key
    hf_dir = entry / "hf"
    info_path = entry / "info.json"
    with _locked(entry.parent / f"{key}.lock"):
        from_cache = info_path.is_file() and (hf_dir / "config.json").is_file()
        if not from_cache:
            out = train()
            model, info = out[0], dict(out[1])
            to_hf(model, hf_dir, tokenizer=out[2] if len(out) > 2 else None)
            info = {"key": key, "kind": kind, "cache_version": CACHE_VERSION, "spec": canonical, **info}
            write_json_atomic(info_path, info)  # written last: its presence marks a complete entry
    info = json.loads(info_path.read_text())
    if info.get("spec") != canonical:
        raise RuntimeError(
            f"cache entry {entry} holds a different spec (hash collision or a corrupted entry)"
        )
    return TrainedModel(from_hf(hf_dir, dtype=dtype), info, hf_dir, from_cache)


# ----------------------------------------------------------------------------------------------------------------
# pretrained LMs


class PretrainedLM(NamedTuple):
    model: Any  # GPT2 | Llama
    tokenizer: Any  # transformers PreTrainedTokenizerFast
    path: Path  # the HF-format checkpoint directory
    info: dict[str, Any]  # config and headline numbers recorded when it was trained
    from_cache: bool


def _pretrain_spec(config: PretrainConfig) -> dict[str, Any]:
    spec: dict[str, Any] = {"config": config_to_dict(config)}
    if (
        config.corpus != "synthetic"
    ):  # a text-file corpus: its contents, not just its path, determine the model
        spec["corpus_sha256"] = hashlib.sha256(Path(config.corpus).read_bytes()).hexdigest()
    return spec


def pretrained_lm_key(config: PretrainConfig) -> str:
    """Stable hash of everything that determines the trained weights (and the cache format version)."""
    return trained_model_key(_pretrain_spec(config))


def pretrained_lm(
    config: PretrainConfig, *, root: str | os.PathLike | None = None, dtype: str | None = None
) -> PretrainedLM:
    """The small LM ``config`` describes (:func:`~jaxsafety.train.lm.pretrain`): loaded from the cache, or trained
    (then cached, with its tokenizer) on a miss. ``dtype`` overrides the computation dtype of the loaded model."""
    from jaxsafety.models.tokenizer import load_tokenizer

    key = pretrained_lm_key(config)

    def train() -> tuple[Any, dict[str, Any], Any]:
        result = pretrain(config, desc=f"pretrain {key[:8]}")
        info = {
            "config": config_to_dict(config),
            "train_loss": result.train_loss,
            "train_eval_loss": result.train_eval_loss,
            "heldout_loss": result.heldout_loss,
            "unigram_entropy": result.unigram_entropy,
            "num_params": result.num_params,
            "num_train_tokens": result.num_train_tokens,
        }
        return result.model, info, result.tokenizer

    out = trained_model("lm", _pretrain_spec(config), train, root=root, dtype=dtype)
    if config_from_dict(PretrainConfig, out.info["config"]) != config:
        raise RuntimeError(f"cache entry {out.path.parent} holds a different config")
    return PretrainedLM(out.model, load_tokenizer(out.path), out.path, out.info, out.from_cache)


# ----------------------------------------------------------------------------------------------------------------
# arithmetic LMs


@dataclasses.dataclass(frozen=True)
class ArithmeticLMConfig:
    """A tiny zoo LM trained from scratch on arithmetic equation lines ``"<a> <op> <b> = <answer>."`` (char tokens).

    The training rows are the whole problem table :func:`~jaxsafety.data.arithmetic.all_arithmetic_problems`
    (``len(ops) * (max_operand + 1)^2`` rows ``[BOS] a op b = answer.``, right-padded), visited in seeded epochs of
    batches of ``batch_size`` by :func:`~jaxsafety.train.finetune.finetune`, with the loss on the completion
    ``" answer."`` only (the operands are uniform noise, nothing to learn; the terminator ``"."`` is the EOS).
    ``steps`` and ``max_operand`` set how well it learns: few steps / large operands leave many problems with
    success probabilities strictly between 0 and 1 and a tail near 0 (multiplication of large operands).
    ``d_ff=None``: 4 d_model (gpt2) or 8/3 d_model rounded up to a multiple of 8 (llama).
    """

    arch: Literal["gpt2", "llama"] = "gpt2"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int | None = None
    max_operand: int = 60
    ops: tuple[str, ...] = OPS
    steps: int = 1000
    batch_size: int = 128
    optim: OptimizerConfig = OptimizerConfig(
        name="adamw",
        lr=3e-3,
        b2=0.98,
        weight_decay=0.01,
        schedule="cosine",
        warmup_steps=50,
        min_lr_ratio=0.1,
        grad_clip_norm=1.0,
    )

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, ("gpt2", "llama"))
        for f in ("d_model", "n_layers", "n_heads", "steps", "batch_size"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        if self.d_ff is not None:
            check_range("d_ff", self.d_ff, ge=1, integer=True)
        check_range("max_operand", self.max_operand, ge=1, le=9999, integer=True)
        # a list (YAML / CLI) or a single operator string becomes a tuple: the config stays hashable
        object.__setattr__(self, "ops", check_ops(self.ops))
        self.model_config()  # raises ConfigError naming the model field
        try:
            self.optim.resolve(self.steps)
        except ConfigError as err:
            raise err.with_prefix("optim") from None

    @property
    def seq_len(self) -> int:
        """Longest training row: BOS + prompt + completion at the largest operands."""
        m = self.max_operand
        prompt = max(len(f"{m} {o} {m} =") for o in self.ops)
        answer = max(len(str(evaluate(m, o, 0 if o == "-" else m))) for o in self.ops)
        return 1 + prompt + len(" .") + answer

    @staticmethod
    def tokenizer() -> CharTokenizer:
        """The character tokenizer over :data:`~jaxsafety.data.arithmetic.ALPHABET`, EOS the terminator."""
        return CharTokenizer(ALPHABET, eos=TERMINATOR)

    def model_config(self) -> GPT2Config | LlamaConfig:
        """The model's config: vocabulary of :meth:`tokenizer`, context ``seq_len``."""
        common = {
            "vocab_size": self.tokenizer().vocab_size,
            "max_seq_len": self.seq_len,
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
        }
        if self.arch == "gpt2":
            return GPT2Config(d_ff=self.d_ff, **common)
        return LlamaConfig(d_ff=self.d_ff or -(-8 * self.d_model // 3 // 8) * 8, **common)


class ArithmeticLM(NamedTuple):
    """What :func:`arithmetic_lm` returns."""

    model: Any  # GPT2 | Llama
    tokenizer: CharTokenizer
    config: ArithmeticLMConfig
    losses: np.ndarray  # [steps] float32 training loss (nats per completion token) per step
    from_cache: bool


def arithmetic_lm(
    config: ArithmeticLMConfig = ArithmeticLMConfig(),
    *,
    seed: int,
    root: str | os.PathLike | None = None,
    chunk_steps: int = 500,
) -> ArithmeticLM:
    """The arithmetic LM ``config`` describes, trained with ``seed`` or loaded from the trained-model cache
    (:func:`trained_model`, kind ``"arithmetic_lm"``, keyed by the config and the seed). Deterministic in ``seed``
    on one backend: the initial parameters come from ``jax.random.key(seed)``, the batch order
    from :class:`~jaxsafety.train.finetune.FinetuneConfig` ``seed`` (``batch_size`` capped at the number of table
    rows).
    ``chunk_steps`` (steps per jitted loop) changes the progress granularity only, not the result, and is not part
    of the key."""
    from jaxsafety.train.finetune import FinetuneConfig, finetune, sft_rows

    check_range("seed", seed, ge=0, integer=True)
    check_range("chunk_steps", chunk_steps, ge=1, integer=True)
    tok = config.tokenizer()

    def train() -> tuple[Any, dict[str, Any]]:
        table = all_arithmetic_problems(config.max_operand, config.ops)
        # responses " answer" + EOS "." = the completion " answer.": the loss is on it alone
        data = sft_rows(tok, table.prompts, [c.removesuffix(TERMINATOR) for c in table.completions],
                        width=config.seq_len)  # fmt: skip
        model_cls = GPT2 if config.arch == "gpt2" else Llama
        model = model_cls(config.model_config(), rngs=nnx.Rngs(jax.random.key(seed)))
        fcfg = FinetuneConfig(
            steps=config.steps,
            batch_size=min(config.batch_size, data.num_rows),
            optim=config.optim,
            seed=seed,
            chunk_steps=chunk_steps,
        )
        result = finetune(model, data, fcfg)
        return result.model, {"losses": result.losses.tolist()}

    spec = {"config": config_to_dict(config), "seed": seed}
    out = trained_model("arithmetic_lm", spec, train, root=root)
    return ArithmeticLM(out.model, tok, config, np.asarray(out.info["losses"], np.float32), out.from_cache)
