"""Supervised fine-tuning (SFT) of zoo models on (prompt, response) pairs, with frozen parameters and LoRA.

:func:`finetune` trains any zoo :class:`~jaxsafety.models.CausalLM` (freshly initialised, trained, or a local
HF checkpoint read by :func:`~jaxsafety.models.from_hf`) on rows ``[BOS] prompt response [EOS]`` built by
:func:`sft_rows`, with the loss on the response tokens only (:func:`~jaxsafety.train.lm.next_token_loss`: the
token-weighted mean of ``-log p(response token | everything before it)``).

Speed: the rows live on the device; a jitted ``lax.fori_loop`` runs ``chunk_steps`` steps of
:func:`~jaxsafety.train.lm.make_lm_train_step` per call, each drawing its batch inside the loop, so the host
is touched once per chunk (for logging, checkpoints and the progress bar), not once per step. Batches are
epochs of a seeded permutation of the rows (every row once per epoch); the rows of step ``s`` are a pure
function of ``(seed, s)``, so chunking and resuming do not change the run.

Freezing: ``freeze`` globs (``fnmatch``, ``*`` also matches dots) over parameter paths like
``blocks.0.attn.qkv.kernel`` or ``embed.*`` select parameters that are not trained. The model is split by an
NNX filter (:func:`trainable_filter`) into the trained part, the only one ``jax.grad`` differentiates and the
optimizer holds state for, and the rest, which leaves training bit-identical. The same filter, given as an
optimizer's ``wrt``, freezes parameters in any :func:`~jaxsafety.train.lm.make_lm_train_step` (one mechanism
for pretraining and fine-tuning).

LoRA (Hu et al. 2022): with ``lora``, adapters are added to the target layers
(:func:`~jaxsafety.models.lora.add_lora`; ``B = 0``, so training starts from the model's exact function) and
only the adapters are trained; the result is merged back into the kernels
(:func:`~jaxsafety.models.lora.merge_lora`) unless asked otherwise, and :func:`~jaxsafety.models.to_hf` of an
unmerged model writes merged kernels.

Checkpoints and resume as in :func:`~jaxsafety.train.lm.pretrain`: with ``run_dir``, the train state (and the
loss history) goes to ``run_dir/checkpoints`` at chunk boundaries every ``save_every`` steps and at the end,
and a rerun with the same config and data resumes from the newest checkpoint, bit-identically on CPU.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import inspect
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxsafety.config import ConfigError, check, check_range, config_to_dict
from jaxsafety.distributed import put_global, to_host, to_local
from jaxsafety.models.lora import LoRAConfig, add_lora, has_lora, merge_lora
from jaxsafety.models.transformer import CausalLM
from jaxsafety.train.checkpoint import Checkpointer
from jaxsafety.train.lm import make_lm_train_step
from jaxsafety.train.optim import OptimizerConfig, cached_optimizer, make_schedule
from jaxsafety.train.progress import progress as progress_bar
from jaxsafety.train.sharding import batch_sharding, choose_mesh, state_shardings
from jaxsafety.train.tracker import NoOpTracker, Tracker

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "LoRAConfig",
    "SFTData",
    "finetune",
    "sft_rows",
    "trainable_filter",
]


# ----------------------------------------------------------------------------------------------------------------
# data


class SFTData(NamedTuple):
    """(prompt, response) rows, right-padded: ``[BOS] prompt response [EOS] pad ...``.

    ``tokens`` int32 ``[N, T]``; ``mask`` int32 ``[N, T]`` (1 = real token); ``loss_mask`` int32 ``[N, T]``
    (1 = a response token, EOS included, whose prediction from the tokens before it is trained and scored)."""

    tokens: np.ndarray
    mask: np.ndarray
    loss_mask: np.ndarray

    @property
    def num_rows(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def width(self) -> int:
        return int(self.tokens.shape[1])


def _encoder(tokenizer: Any):
    """``text -> ids`` without special tokens: HF tokenizers get ``add_special_tokens=False`` (the rows add
    BOS / EOS themselves), plain ones (``CharTokenizer``) are called as ``encode(text)``."""
    encode = tokenizer.encode
    params = inspect.signature(encode).parameters
    if "add_special_tokens" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return lambda text: list(encode(text, add_special_tokens=False))
    return lambda text: list(encode(text))


def _ids(encode, item: str | Sequence[int], field: str, i: int) -> list[int]:
    if isinstance(item, str):
        return [int(t) for t in encode(item)]
    ids = list(item)
    if not all(isinstance(t, int | np.integer) and t >= 0 for t in ids):
        raise ValueError(
            f"{field}[{i}] is invalid: accepted values are strings or sequences of token ids >= 0"
        )
    return [int(t) for t in ids]


def sft_rows(
    tokenizer: Any,
    prompts: Sequence[str | Sequence[int]],
    responses: Sequence[str | Sequence[int]],
    *,
    width: int | None = None,
    eos: bool = True,
    bos: bool = True,
) -> SFTData:
    """Teacher-forcing rows for :func:`finetune`: ``[BOS] prompt response [EOS]``, right-padded to ``width``.

    ``tokenizer``: anything with ``encode(str) -> list[int]`` and ``pad_token_id`` / ``bos_token_id`` /
    ``eos_token_id`` attributes (:class:`~jaxsafety.models.tokenizer.CharTokenizer`, a HF tokenizer, which is
    called with ``add_special_tokens=False``). Prompts and responses are strings or lists of token ids.
    ``bos`` prepends ``bos_token_id`` (when the tokenizer has one), ``eos`` appends ``eos_token_id`` to the
    response (it is trained: the model learns to stop). ``width`` None: the longest row. Padding uses
    ``pad_token_id`` (else the EOS id, else 0). ``loss_mask`` marks the response tokens (and EOS).

    Raises ``ValueError`` for unequal numbers of prompts and responses, a row longer than ``width``, or a row
    with nothing to train (an empty response without EOS).
    """
    if len(prompts) != len(responses):
        raise ValueError(
            f"prompts ({len(prompts)}) and responses ({len(responses)}) must have the same length"
        )
    check_range("num_rows", len(prompts), ge=1, integer=True)
    if width is not None:
        check_range("width", width, ge=2, integer=True)
    encode = _encoder(tokenizer)
    bos_id = getattr(tokenizer, "bos_token_id", None) if bos else None
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if eos and eos_id is None:
        raise ValueError("eos=True needs a tokenizer with an eos_token_id; pass eos=False")
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = pad_id if pad_id is not None else eos_id if eos_id is not None else 0
    rows = []
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        head = ([bos_id] if bos_id is not None else []) + _ids(encode, p, "prompts", i)
        tail = _ids(encode, r, "responses", i) + ([eos_id] if eos else [])
        if not tail:
            raise ValueError(f"responses[{i}] is empty and eos=False: the row has no token to train")
        rows.append((head, tail))
    longest = max(len(h) + len(t) for h, t in rows)
    if width is None:
        width = longest
    elif longest > width:
        raise ValueError(
            f"width={width} is invalid: accepted values are >= the longest row ({longest} tokens)"
        )
    tokens = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    loss_mask = np.zeros((len(rows), width), np.int32)
    for i, (h, t) in enumerate(rows):
        n = len(h) + len(t)
        tokens[i, :n] = h + t
        mask[i, :n] = 1
        loss_mask[i, len(h) : n] = 1
    return SFTData(tokens, mask, loss_mask)


def _check_data(data: SFTData, model: CausalLM) -> None:
    if not isinstance(data, SFTData):
        raise TypeError(f"data must be an SFTData (see sft_rows), got {type(data).__name__}")
    shapes = {a.shape for a in data}
    if len(shapes) != 1 or len(data.tokens.shape) != 2:
        raise ValueError(f"data.tokens, mask and loss_mask must be [N, T] of one shape, got {sorted(shapes)}")
    cfg = model.config
    tokens = np.asarray(data.tokens)
    if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        raise ValueError(
            f"data.tokens holds ids in [{tokens.min()}, {tokens.max()}]: accepted values are "
            f"0 .. vocab_size - 1 ({cfg.vocab_size - 1})"
        )
    if cfg.positional == "learned" and data.width > cfg.max_seq_len:
        raise ValueError(
            f"data.width={data.width} is invalid: accepted values are <= the model's max_seq_len ({cfg.max_seq_len})"
        )
    # lm_target_mask in numpy: target t counts iff loss_mask[t] and a real token at t - 1
    if not np.any((np.asarray(data.loss_mask)[:, 1:] != 0) & (np.asarray(data.mask)[:, :-1] != 0)):
        raise ValueError("data.loss_mask selects no target token (after a real token): nothing to train")


def _fingerprint(data: SFTData) -> str:
    h = hashlib.sha256()
    for a in data:
        a = np.ascontiguousarray(a, np.int32)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# freezing


@dataclasses.dataclass(frozen=True)
class _PathGlobs:
    """NNX filter: the variable's dotted path (``blocks.0.attn.qkv.kernel``) matches one of ``globs``. Frozen
    and hashable, so it is a static part of the optimizer's graph definition (equal filters, one
    compilation)."""

    globs: tuple[str, ...]

    def __call__(self, path: tuple, value: Any) -> bool:
        name = ".".join(map(str, path))
        return any(fnmatch.fnmatchcase(name, g) for g in self.globs)


def trainable_filter(freeze: Sequence[str] = (), *, lora: bool = False) -> Any:
    """The NNX filter of trained variables: ``nnx.Param`` (``nnx.LoRAParam`` with ``lora``: adapters only)
    whose dotted path matches none of the ``freeze`` globs.

    Use it as an optimizer's ``wrt``: ``nnx.Optimizer(model, tx, wrt=trainable_filter(("embed.*",)))``; then
    :func:`~jaxsafety.train.lm.make_lm_train_step` differentiates and updates only those variables."""
    globs = _check_globs(freeze)
    base = nnx.LoRAParam if lora else nnx.Param
    return nnx.All(base, nnx.Not(_PathGlobs(globs))) if globs else base


def _check_globs(freeze: Sequence[str]) -> tuple[str, ...]:
    globs = (freeze,) if isinstance(freeze, str) else tuple(freeze)
    check(
        all(isinstance(g, str) and g for g in globs),
        "freeze",
        freeze,
        "a tuple of parameter-path globs such as 'embed.*' or 'blocks.0.*'",
    )
    return globs


def _param_paths(model: nnx.Module, what: Any) -> list[str]:
    return [".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, what))]


# ----------------------------------------------------------------------------------------------------------------
# config and result


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Supervised fine-tuning: ``steps`` optimizer updates on batches of ``batch_size`` rows (epochs of a
    seeded permutation of the rows; ``batch_size`` at most the number of rows), optimizer ``optim`` (its
    schedule spans ``steps``), ``seed`` (data order and LoRA initialisation). ``freeze``: parameter-path globs
    not trained (each must match a parameter). ``lora``: train LoRA adapters only (everything else frozen).
    ``accum_steps``: microbatches per step (exact gradient accumulation inside the step, see
    :func:`~jaxsafety.train.lm.make_lm_train_step`: ``1/k`` of the activation memory, the same update).
    ``chunk_steps``: steps per jitted loop (host round trips, not results). ``log_every`` steps to the
    tracker; with a run directory a checkpoint every ``save_every`` steps (None: only at the end), the newest
    ``keep_last`` kept."""

    steps: int
    batch_size: int = 32
    optim: OptimizerConfig = OptimizerConfig(
        name="adamw",
        lr=1e-3,
        b2=0.98,
        weight_decay=0.0,
        schedule="cosine",
        min_lr_ratio=0.1,
        grad_clip_norm=1.0,
    )
    seed: int = 0
    freeze: tuple[str, ...] = ()
    lora: LoRAConfig | None = None
    accum_steps: int = 1
    chunk_steps: int = 100
    log_every: int = 10
    save_every: int | None = None
    keep_last: int = 3

    def __post_init__(self) -> None:
        check_range("steps", self.steps, ge=1, integer=True)
        check_range("batch_size", self.batch_size, ge=1, integer=True)
        check(
            self.steps * self.batch_size < 2**31,
            "steps",
            self.steps,
            f"integers with steps * batch_size < 2^31 (batch_size {self.batch_size})",
        )
        check_range("seed", self.seed, ge=0, integer=True)
        object.__setattr__(self, "freeze", _check_globs(self.freeze))
        check(
            self.lora is None or isinstance(self.lora, LoRAConfig),
            "lora",
            self.lora,
            "None or a LoRAConfig",
        )
        check_range("accum_steps", self.accum_steps, ge=1, integer=True)
        check(
            self.batch_size % self.accum_steps == 0,
            "accum_steps",
            self.accum_steps,
            f"divisors of batch_size ({self.batch_size})",
        )
        check_range("chunk_steps", self.chunk_steps, ge=1, integer=True)
        check_range("log_every", self.log_every, ge=1, integer=True)
        if self.save_every is not None:
            check_range("save_every", self.save_every, ge=1, integer=True)
        check_range("keep_last", self.keep_last, ge=1, integer=True)
        try:
            self.optim.resolve(self.steps)
        except ConfigError as err:
            raise err.with_prefix("optim") from None


class FinetuneResult(NamedTuple):
    """What :func:`finetune` returns. ``losses`` / ``grad_norms`` ``[steps]`` float32: per step, the
    response-token loss (nats per token) of that step's batch before its update and the gradient's global norm
    (steps run before a resume come from the checkpoint). ``trainable``: the dotted paths of the trained
    variables."""

    model: CausalLM
    losses: np.ndarray
    grad_norms: np.ndarray
    trainable: tuple[str, ...]
    num_trainable: int
    start_step: int  # 0, or the checkpoint step a resumed run started from
    steps_per_second: float  # after the first chunk (compilation) when there are several, else including it


# ----------------------------------------------------------------------------------------------------------------
# the jitted chunk


def _epoch_perm(key: jax.Array, epoch: jax.Array, n: int) -> jax.Array:
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4), donate_argnums=(5,))
def _sft_chunk(
    graphdef,
    max_steps: int,
    batch_size: int,
    accum_steps: int,
    layout,
    state,
    table,
    key,
    first_step,
    num_steps,
):
    """Steps ``first_step .. first_step + num_steps - 1`` (``num_steps <= max_steps``, dynamic: one
    compilation for every chunk) in a ``lax.fori_loop``. Step ``s`` trains on rows ``perm_e[r]`` for positions
    ``s B + i`` (``e, r = divmod(pos, N)``, ``perm_e`` the permutation of epoch ``e`` from ``fold_in(key,
    e)``). A batch spans at most two epochs (``B <= N``): the loop carries the permutations of the current and
    the next epoch and draws a new one only when an epoch ends. Returns the state, losses and gradient norms
    ``[max_steps]``. ``layout``: None (one device) or ``(batch sharding, state shardings as a tuple of leaves)``
    on a mesh: each step's batch is split over the mesh and the state keeps its layout."""
    step = make_lm_train_step(graphdef, accum_steps=accum_steps)
    if layout is not None:
        batch_sh, state_sh = layout
        state_def = jax.tree.structure(state)

        inner = step

        def step(s, batch):
            batch = jax.lax.with_sharding_constraint(batch, jax.tree.map(lambda _: batch_sh, batch))
            s, metrics = inner(s, batch)
            return jax.lax.with_sharding_constraint(s, jax.tree.unflatten(state_def, state_sh)), metrics

    tokens, mask, loss_mask = table
    n = tokens.shape[0]
    e0 = first_step * batch_size // n

    def body(i, carry):
        s, perm_a, perm_b, epoch_a, losses, norms = carry
        pos0 = (first_step + i) * batch_size
        new_epoch = pos0 // n > epoch_a
        perm_a, perm_b, epoch_a = jax.lax.cond(
            new_epoch,
            lambda: (perm_b, _epoch_perm(key, epoch_a + 2, n), epoch_a + 1),
            lambda: (perm_a, perm_b, epoch_a),
        )
        pos = pos0 + jnp.arange(batch_size)
        rows = jnp.where(pos // n == epoch_a, perm_a[pos % n], perm_b[pos % n])
        batch = {"tokens": tokens[rows], "mask": mask[rows], "loss_mask": loss_mask[rows]}
        s, metrics = step(s, batch)
        return (
            s,
            perm_a,
            perm_b,
            epoch_a,
            losses.at[i].set(metrics["loss"]),
            norms.at[i].set(metrics["grad_norm"]),
        )

    zeros = jnp.zeros(max_steps, jnp.float32)
    init = (state, _epoch_perm(key, e0, n), _epoch_perm(key, e0 + 1, n), e0, zeros, zeros)
    s, *_, losses, norms = jax.lax.fori_loop(0, num_steps, body, init)
    return s, losses, norms


# ----------------------------------------------------------------------------------------------------------------
# the entry point


@functools.lru_cache(maxsize=16)
def _lr_schedule(optim: OptimizerConfig, steps: int):
    """The jitted learning-rate schedule, one per (config, steps): a fresh ``jax.jit`` of a fresh closure would
    compile again on every :func:`finetune` call."""
    return jax.jit(make_schedule(optim, total_steps=steps))


def _load_model(model: CausalLM | str | Path) -> CausalLM:
    if isinstance(model, str | Path):
        from jaxsafety.models.hf import from_hf

        model = from_hf(model)
    if not isinstance(model, CausalLM):
        raise TypeError(
            f"model must be a zoo CausalLM (GPT2, Llama) or a HF checkpoint path, got {type(model).__name__}"
        )
    return model


def _resume_meta(config: FinetuneConfig, data: SFTData, model: CausalLM) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (bookkeeping fields left out)."""
    cfg = config_to_dict(config)
    for k in ("chunk_steps", "log_every", "save_every", "keep_last"):
        cfg.pop(k)
    meta = {
        "finetune_config": cfg,
        "data_sha256": _fingerprint(data),
        "model_config": config_to_dict(model.config),
    }
    return json.loads(json.dumps(meta, default=str))  # as it reads back from the checkpoint's JSON


def finetune(
    model: CausalLM | str | Path,
    data: SFTData,
    config: FinetuneConfig,
    *,
    tracker: Tracker | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    merge: bool = True,
    sharding: str = "auto",
) -> FinetuneResult:
    """Supervised fine-tuning of ``model`` on ``data`` (see the module docstring); returns the trained model.

    ``model``: a zoo :class:`~jaxsafety.models.CausalLM` (fresh or trained; not modified: training works on a
    copy) or the path of a local HF checkpoint (:func:`~jaxsafety.models.from_hf`). ``data``:
    :func:`sft_rows`. With ``config.lora``, adapters are added and trained, and the returned model has them
    merged into its kernels unless ``merge=False`` (then it holds :class:`~jaxsafety.models.lora.LoRALinear`
    layers).

    Logged to ``tracker`` every ``log_every`` steps (and at the last): ``train/loss``, ``train/grad_norm``,
    ``train/lr``, and ``train/steps_per_second`` per chunk. With ``run_dir``, checkpoints go to
    ``run_dir/checkpoints``; a rerun resumes from the newest (``ValueError`` if it was written with another
    config, data or model architecture). ``progress``: a progress bar (when stderr is a TTY).

    Raises before any compute: ``TypeError`` / ``ValueError`` for a bad model or data (token ids outside the
    vocabulary, rows longer than a learned-position context, nothing to train, ``batch_size`` above the number
    of rows), a ``freeze`` glob that matches no parameter, or a LoRA target that matches no linear layer.

    ``sharding`` as in :func:`~jaxsafety.train.lm.pretrain` (``"auto"``: data parallel over all devices of all
    processes when there are several): the data rows are replicated on every device, each step's batch is
    split over the mesh, and the returned model is a copy on this process's first device.
    """
    if not isinstance(config, FinetuneConfig):
        raise TypeError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    model = _load_model(model)
    _check_data(data, model)
    check(
        config.batch_size <= data.num_rows,
        "batch_size",
        config.batch_size,
        f"integers <= the number of data rows ({data.num_rows})",
    )
    mesh, mode = choose_mesh(sharding, config.batch_size)
    tracker = tracker or NoOpTracker()
    if has_lora(model) and config.lora is not None:
        raise ValueError("model already has LoRA adapters: set config.lora=None to train them")
    params = _param_paths(model, nnx.Param)
    for g in config.freeze:
        if not any(fnmatch.fnmatchcase(p, g) for p in params):
            raise ValueError(f"freeze glob {g!r} matches no parameter: accepted paths are like {params[:6]}")

    key = jax.random.key(config.seed)
    k_lora, k_data = jax.random.split(key)
    lora = config.lora is not None or has_lora(model)
    if config.lora is not None:
        model = add_lora(model, config.lora, rngs=nnx.Rngs(k_lora))
    wrt = trainable_filter(config.freeze, lora=lora)
    trainable = tuple(_param_paths(model, wrt))
    if not trainable:
        raise ValueError(f"freeze={config.freeze!r} leaves no parameter to train")
    num_trainable = int(sum(x.size for x in jax.tree.leaves(nnx.state(model, wrt))))

    tx = cached_optimizer(config.optim, config.steps)
    graphdef, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=wrt)))
    layout = None
    if mesh is None:
        # a private committed copy: the chunks donate their input state, not the caller's model's arrays
        state = jax.device_put(jax.tree.map(jnp.copy, state), jax.local_devices()[0])
    else:
        shardings = state_shardings(state, mesh, mode)
        state = put_global(jax.tree.map(jnp.copy, state), shardings)
        layout = (batch_sharding(mesh), tuple(jax.tree.leaves(shardings)))
    losses = np.zeros(config.steps, np.float32)
    norms = np.zeros(config.steps, np.float32)

    ckpt = None
    start = 0
    meta = _resume_meta(config, data, model)
    if run_dir is not None:
        save_every = config.save_every or config.steps
        ckpt = Checkpointer(Path(run_dir) / "checkpoints", save_every=save_every, keep_last=config.keep_last)
        if ckpt.latest_step() is not None:
            old = ckpt.metadata()
            for k in meta:
                if old.get(k) != meta[k]:
                    ckpt.close()
                    raise ValueError(
                        f"run_dir {run_dir} holds a run with another {k}: resume needs the same {k} "
                        f"(or a new run_dir)"
                    )
            target = {"state": state, "losses": losses, "grad_norms": norms}
            start, restored = ckpt.restore_latest(target)
            state = restored["state"]
            losses, norms = np.array(restored["losses"]), np.array(restored["grad_norms"])

    table = tuple(jnp.asarray(a, jnp.int32) for a in data)
    if mesh is not None:  # every device holds the rows (replicated); the key too
        replicated = NamedSharding(mesh, PartitionSpec())
        table, k_data = put_global((table, k_data), jax.tree.map(lambda _: replicated, (table, k_data)))
    lr_at = _lr_schedule(config.optim, config.steps)
    chunk = min(config.chunk_steps, config.steps)
    timings: list[tuple[int, float]] = []
    try:
        with progress_bar(
            total=config.steps, initial=start, desc="finetune", enabled=None if progress else False
        ) as bar:
            first = start
            while first < config.steps:
                end = min(first + chunk, config.steps)
                if ckpt is not None:  # stop at the next save point
                    end = min(end, (first // ckpt.save_every + 1) * ckpt.save_every)
                n = end - first
                t0 = time.perf_counter()
                state, chunk_losses, chunk_norms = _sft_chunk(
                    graphdef,
                    chunk,
                    config.batch_size,
                    config.accum_steps,
                    layout,
                    state,
                    table,
                    k_data,
                    jnp.int32(first),
                    jnp.int32(n),
                )
                chunk_losses, chunk_norms = to_host((chunk_losses, chunk_norms))  # synchronises: timed
                losses[first:end] = chunk_losses[:n]
                norms[first:end] = chunk_norms[:n]
                timings.append((n, time.perf_counter() - t0))
                tracker.scalar("train/steps_per_second", n / timings[-1][1], end)
                for s in range(first, end):
                    if (s + 1) % config.log_every == 0 or s + 1 == config.steps:
                        tracker.scalars(
                            {"loss": losses[s], "grad_norm": norms[s], "lr": float(lr_at(s))},
                            s + 1,
                            prefix="train/",
                        )
                bar.update(n)
                bar.set_postfix({"loss": f"{losses[end - 1]:.4g}"})
                if ckpt is not None and (ckpt.should_save(end) or end == config.steps):
                    ckpt.save(
                        end,
                        # copies: the histories are written on while an asynchronous save may still read them
                        {"state": state, "losses": losses.copy(), "grad_norms": norms.copy()},
                        metadata=meta,
                        force=True,
                    )
                first = end
    finally:
        if ckpt is not None:
            ckpt.close()
        tracker.flush()

    timed = timings[1:] if len(timings) > 1 else timings
    steps_per_second = sum(n for n, _ in timed) / sum(t for _, t in timed) if timed else float("nan")
    trained = nnx.merge(graphdef, state if mesh is None else to_local(state))[0]
    if lora and merge:
        trained = merge_lora(trained)
    return FinetuneResult(
        model=trained,
        losses=losses,
        grad_norms=norms,
        trainable=trainable,
        num_trainable=num_trainable,
        start_step=start,
        steps_per_second=steps_per_second,
    )
