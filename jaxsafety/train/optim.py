"""Optimizer factory: one frozen config -> an optax ``GradientTransformation``.

Chain (outermost first): optional gradient accumulation (``optax.MultiSteps``), global-norm clipping, the base
optimizer (AdamW / SGD with momentum / Lion) driven by a warmup + decay learning-rate schedule. Weight decay is
decoupled for AdamW and Lion (Loshchilov & Hutter 2019) and added to the gradient (L2) for SGD; by default it
applies only to parameters with ndim >= 2 (matrices and embeddings, not biases or norm scales), the convention of
GPT-2/Llama training recipes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import optax

from jaxsafety.config import check, check_choice, check_range

__all__ = ["OptimizerConfig", "cached_optimizer", "make_optimizer", "make_schedule"]

OPTIMIZERS = ("adamw", "sgd", "lion")
SCHEDULES = ("cosine", "linear", "constant")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer + learning-rate schedule + clipping.

    The schedule warms up linearly from 0 to ``lr`` over ``warmup_steps``, then decays to ``lr * min_lr_ratio``
    at ``total_steps`` (cosine or linear), or stays at ``lr`` (constant). Steps count optimizer updates, i.e.
    after gradient accumulation.
    """

    name: Literal["adamw", "sgd", "lion"] = "adamw"
    lr: float = 3e-4
    weight_decay: float = 0.0
    b1: float = 0.9  # adamw/lion beta1; sgd momentum
    b2: float = 0.999  # adamw/lion beta2
    eps: float = 1e-8
    nesterov: bool = False
    schedule: Literal["cosine", "linear", "constant"] = "constant"
    warmup_steps: int = 0
    total_steps: int | None = None  # None: the caller passes the run length to make_optimizer
    min_lr_ratio: float = 0.0
    grad_clip_norm: float | None = None
    grad_accum_steps: int = 1
    decay_only_matrices: bool = True

    def __post_init__(self) -> None:
        check_choice("name", self.name, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_range("lr", self.lr, gt=0)
        check_range("weight_decay", self.weight_decay, ge=0)
        check_range("b1", self.b1, ge=0, lt=1)
        check_range("b2", self.b2, ge=0, lt=1)
        check_range("eps", self.eps, ge=0)
        check_range("warmup_steps", self.warmup_steps, ge=0, integer=True)
        if self.total_steps is not None:
            check_range("total_steps", self.total_steps, ge=1, integer=True)
            check(
                self.schedule == "constant" or self.warmup_steps <= self.total_steps,
                "warmup_steps",
                self.warmup_steps,
                f"integers <= total_steps ({self.total_steps})",
            )
        check_range("min_lr_ratio", self.min_lr_ratio, ge=0, le=1)
        if self.grad_clip_norm is not None:
            check_range("grad_clip_norm", self.grad_clip_norm, gt=0)
        check_range("grad_accum_steps", self.grad_accum_steps, ge=1, integer=True)

    def resolve(self, total_steps: int | None) -> OptimizerConfig:
        """This config with ``total_steps`` filled in from the run length (if unset) and checked against warmup.

        Call it in an experiment config's ``__post_init__`` so a bad combination fails before any compute.
        """
        total = self.total_steps if self.total_steps is not None else total_steps
        if total is None:
            check(
                self.schedule == "constant",
                "total_steps",
                None,
                f"an integer >= 1 for the {self.schedule!r} schedule",
            )
            return self
        check_range("total_steps", total, ge=1, integer=True)
        check(
            self.schedule == "constant" or self.warmup_steps <= total,
            "warmup_steps",
            self.warmup_steps,
            f"integers <= total_steps ({total})",
        )
        return dataclasses.replace(self, total_steps=total)


def make_schedule(cfg: OptimizerConfig, total_steps: int | None = None) -> optax.Schedule:
    """Learning rate as a function of the optimizer step (see :class:`OptimizerConfig`).

    ``total_steps`` is the run length in optimizer updates, used when ``cfg.total_steps`` is None.
    """
    cfg = cfg.resolve(total_steps)
    total = cfg.total_steps or max(cfg.warmup_steps, 1)
    peak, end = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        if cfg.warmup_steps == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, cfg.warmup_steps), optax.constant_schedule(peak)],
            [cfg.warmup_steps],
        )
    decay_steps = max(total - cfg.warmup_steps, 1)
    if cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.min_lr_ratio)
    else:
        decay = optax.linear_schedule(peak, end, decay_steps)
    if cfg.warmup_steps == 0:
        return decay
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, cfg.warmup_steps), decay], [cfg.warmup_steps]
    )


def _matrix_mask(params):
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def make_optimizer(cfg: OptimizerConfig, total_steps: int | None = None) -> optax.GradientTransformation:
    """The optax transformation described by ``cfg``; its state tracks the schedule step itself.

    ``total_steps``: run length in optimizer updates (after accumulation), used when ``cfg.total_steps`` is None.
    """
    lr = make_schedule(cfg, total_steps)
    mask = _matrix_mask if cfg.decay_only_matrices else None
    if cfg.name == "adamw":
        base = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=mask)
    elif cfg.name == "lion":
        base = optax.lion(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=mask)
    else:
        parts = []
        if cfg.weight_decay > 0:
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=mask))
        parts.append(optax.sgd(lr, momentum=cfg.b1 or None, nesterov=cfg.nesterov))
        base = optax.chain(*parts)
    chain = [optax.clip_by_global_norm(cfg.grad_clip_norm)] if cfg.grad_clip_norm is not None else []
    tx = optax.chain(*chain, base) if chain else base
    if cfg.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum_steps)
    return tx


@functools.lru_cache(maxsize=16)
def cached_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """:func:`make_optimizer`, one object per ``(cfg, total_steps)``.

    An ``nnx.Optimizer``'s transformation is part of the train state's graph definition, so runs in one process
    that build their optimizer here (repeated pretraining or fine-tuning runs of one config) reuse one object and
    so share the compiled train step instead of compiling it again.
    """
    return make_optimizer(cfg, total_steps=total_steps)
