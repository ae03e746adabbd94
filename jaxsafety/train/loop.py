"""A resumable host-side training loop and the NNX train step it usually drives.

The loop owns nothing but bookkeeping: it asks ``batch_fn(step)`` for the batch of step ``step`` (so data must be a
pure function of the step; then a resumed run sees exactly the batches the uninterrupted run would have seen),
calls the jitted ``step_fn(state, batch) -> (state, metrics)``, logs, and checkpoints. With a
:class:`~jaxsafety.train.checkpoint.Checkpointer` that already holds a checkpoint, the loop restores it and continues
from there; on CPU the continuation is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax
import optax
from flax import nnx

from jaxsafety.config import check_range
from jaxsafety.train.checkpoint import Checkpointer
from jaxsafety.train.progress import progress
from jaxsafety.train.tracker import NoOpTracker, Tracker

__all__ = ["nnx_train_step", "run_loop"]

S = TypeVar("S")


def nnx_train_step(
    graphdef: nnx.GraphDef,
    loss_fn: Callable[[nnx.Module, Any], tuple[jax.Array, Mapping[str, jax.Array]]],
    *,
    donate: bool = False,
) -> Callable[[nnx.State, Any], tuple[nnx.State, dict[str, jax.Array]]]:
    """Jitted functional step over ``state = nnx.split((model, optimizer))[1]``.

    ``loss_fn(model, batch) -> (loss, aux_metrics)``. Returns ``step(state, batch) -> (state, metrics)`` with
    metrics ``loss``, ``grad_norm`` and the aux metrics. Splitting once and merging inside jit avoids NNX's
    Python-side graph traversal on every call (the pattern the Flax performance guide recommends).
    """

    def step(state: nnx.State, batch: Any) -> tuple[nnx.State, dict[str, jax.Array]]:
        model, optimizer = nnx.merge(graphdef, state)
        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch)
        optimizer.update(model, grads)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
        return nnx.state((model, optimizer)), metrics

    return jax.jit(step, donate_argnums=(0,) if donate else ())


def run_loop(
    state: S,
    step_fn: Callable[[S, Any], tuple[S, Mapping[str, Any]]],
    batch_fn: Callable[[int], Any],
    *,
    num_steps: int,
    checkpointer: Checkpointer | None = None,
    tracker: Tracker | None = None,
    log_every: int = 10,
    metadata: Mapping[str, Any] | None = None,
    desc: str = "train",
    on_log: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[S, dict[str, float]]:
    """Run steps ``start..num_steps-1`` and return ``(final_state, last_logged_metrics)``.

    ``start`` is 0, or the step of the newest checkpoint in ``checkpointer`` that restores and passes its
    checksums (the checkpoint at step ``k`` is the state after ``k`` updates; newer corrupt ones are reported in one
    line each and moved aside, see :meth:`~jaxsafety.train.checkpoint.Checkpointer.restore_latest`; when none
    restores, :class:`~jaxsafety.train.checkpoint.CheckpointError` is raised before any step runs). Metrics are
    pulled to the host only every ``log_every`` steps, so the device is not synchronised on every step. The final
    state is always checkpointed.
    """
    check_range("num_steps", num_steps, ge=0, integer=True)
    check_range("log_every", log_every, ge=1, integer=True)
    tracker = tracker or NoOpTracker()
    start = 0
    if checkpointer is not None:
        restored = checkpointer.restore_latest(state)
        if restored is not None:
            start, state = restored
    last: dict[str, float] = {}
    with progress(range(start, num_steps), total=num_steps, initial=start, desc=desc) as bar:
        for step in bar:
            state, metrics = step_fn(state, batch_fn(step))
            done = step + 1
            if done % log_every == 0 or done == num_steps:
                last = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
                tracker.scalars(last, done, prefix="train/")
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(last.items())[:3]})
                if on_log is not None:
                    on_log(done, last)
            if checkpointer is not None and checkpointer.should_save(done) and done != num_steps:
                checkpointer.save(done, state, metadata=metadata)
    if checkpointer is not None and checkpointer.latest_step() != num_steps and num_steps > 0:
        checkpointer.save(num_steps, state, metadata=metadata, force=True)
        checkpointer.wait()
    tracker.flush()
    return state, last
