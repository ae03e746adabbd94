"""Data parallelism and FSDP over a 1-D device mesh (GSPMD: annotate shardings, XLA inserts the collectives).

- ``dp``: parameters and optimizer state replicated, the batch split over the ``data`` axis; XLA all-reduces
  gradients.
- ``fsdp``: additionally every large array of the state is split over the same ``data`` axis along its largest
  divisible dimension (ZeRO-3 style); XLA all-gathers parameters for the forward/backward and reduce-scatters
  gradients, so each device holds 1/n of the parameters and optimizer state.

Works unchanged on CPU (test with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``), GPU and TPU; after
:func:`jaxsafety.distributed.initialize` (``python -m jaxsafety.launch``) the mesh spans every process's devices.
Then each process feeds only its own rows of a batch (:func:`process_rows`, :func:`process_batch`), or every
process holds the whole batch and places its part (:func:`shard_batch`); state goes to the mesh through
:func:`shard_state` (the same values on every process, each copying its devices' slices).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxsafety.config import check, check_choice, check_range
from jaxsafety.distributed import put_global

__all__ = [
    "array_spec",
    "batch_sharding",
    "choose_mesh",
    "jit_sharded",
    "make_mesh",
    "process_batch",
    "process_rows",
    "shard_batch",
    "shard_state",
    "state_shardings",
]

AXIS = "data"
MODES = ("dp", "fsdp")
SHARDINGS = ("auto", "none", *MODES)


def make_mesh(num_devices: int | None = None, axis: str = AXIS) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (default: all, across hosts)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    check_range("num_devices", n, ge=1, le=len(devices), integer=True)
    return Mesh(np.asarray(devices[:n]), (axis,))


def choose_mesh(sharding: str, batch_size: int) -> tuple[Mesh | None, str]:
    """The mesh and mode of a training entry point's ``sharding`` option (one of :data:`SHARDINGS`): ``"none"``
    (one device: no mesh), ``"dp"`` / ``"fsdp"`` over every device of every process, or ``"auto"`` (``"dp"``
    when there is more than one device, else ``"none"``). Checks, before any compute, that a multi-process job
    shards and that ``batch_size`` splits evenly over the devices."""
    check_choice("sharding", sharding, SHARDINGS)
    n = jax.device_count()
    if sharding == "auto":
        sharding = "dp" if n > 1 else "none"
    if sharding == "none":
        procs = jax.process_count()
        check(procs == 1, "sharding", sharding, f"'auto', 'dp' or 'fsdp' in a job of {procs} processes")
        return None, sharding
    check(
        batch_size % n == 0,
        "batch_size",
        batch_size,
        f"multiples of the {n} devices with sharding {sharding!r}",
    )
    return make_mesh(), sharding


def array_spec(
    shape: tuple[int, ...], mesh: Mesh, mode: str, *, min_size: int = 1024, axis: str = AXIS
) -> PartitionSpec:
    """PartitionSpec of one state array: replicated for ``dp`` (and for small arrays); for ``fsdp`` the largest
    dimension divisible by the mesh size is split over ``axis``."""
    n = mesh.shape[axis]
    if mode == "dp" or n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    dims = sorted(range(len(shape)), key=lambda d: -shape[d])
    for d in dims:
        if shape[d] % n == 0:
            spec = [None] * len(shape)
            spec[d] = axis
            return PartitionSpec(*spec)
    return PartitionSpec()


def state_shardings(state: Any, mesh: Mesh, mode: str = "fsdp", *, min_size: int = 1024) -> Any:
    """Pytree of ``NamedSharding`` matching ``state`` (arrays or ShapeDtypeStructs)."""
    check_choice("mode", mode, MODES)
    return jax.tree.map(
        lambda x: NamedSharding(mesh, array_spec(tuple(x.shape), mesh, mode, min_size=min_size)), state
    )


def shard_state(state: Any, mesh: Mesh, mode: str = "fsdp", *, min_size: int = 1024) -> Any:
    """Place ``state`` on ``mesh`` per :func:`state_shardings` (in a multi-process job every process passes the
    same values, e.g. initialised from the same seed)."""
    return put_global(state, state_shardings(state, mesh, mode, min_size=min_size))


def batch_sharding(mesh: Mesh, axis: str = AXIS) -> NamedSharding:
    """Rows split over ``axis``: the layout of a data-parallel batch."""
    return NamedSharding(mesh, PartitionSpec(axis))


def _check_rows(rows: int, mesh: Mesh, axis: str) -> None:
    n = mesh.shape[axis]
    if rows % n:
        raise ValueError(f"batch size {rows} is invalid: accepted values are multiples of {n} devices")


def shard_batch(batch: Any, mesh: Mesh, axis: str = AXIS) -> Any:
    """Split every array of ``batch`` (the whole global batch, the same on every process) along its leading
    (batch) axis over the mesh."""
    leaves = jax.tree.leaves(batch)
    for x in leaves:
        _check_rows(x.shape[0], mesh, axis)
    sh = batch_sharding(mesh, axis)
    return put_global(batch, jax.tree.map(lambda _: sh, batch))


def process_rows(batch_size: int, mesh: Mesh, axis: str = AXIS) -> slice:
    """The rows ``[start, stop)`` of a global batch of ``batch_size`` rows that this process's devices hold
    under :func:`batch_sharding` (all rows in a single process): what this process feeds to
    :func:`process_batch`."""
    _check_rows(batch_size, mesh, axis)
    spans = [
        idx[0].indices(batch_size)[:2]
        for idx in batch_sharding(mesh, axis).addressable_devices_indices_map((batch_size,)).values()
    ]
    start, stop = min(a for a, _ in spans), max(b for _, b in spans)
    if sum(b - a for a, b in set(spans)) != stop - start:
        raise ValueError(f"this process's devices hold non-contiguous rows {sorted(set(spans))} of the batch")
    return slice(start, stop)


def process_batch(local_batch: Any, mesh: Mesh, axis: str = AXIS) -> Any:
    """Global batch arrays (rows split over ``axis``) from this process's rows of them (:func:`process_rows` of
    the global batch size) in every array of ``local_batch``: each process reads and transfers only its own part
    of the data (``jax.make_array_from_process_local_data``)."""
    sh = batch_sharding(mesh, axis)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sh, np.asarray(x)), local_batch)


def jit_sharded(
    step: Callable[[Any, Any], tuple[Any, Any]],
    state: Any,
    mesh: Mesh,
    mode: str = "fsdp",
    *,
    min_size: int = 1024,
    donate: bool = False,
) -> Callable[[Any, Any], tuple[Any, Any]]:
    """Jit ``step(state, batch) -> (state, metrics)`` so the state keeps its dp/fsdp layout across steps and the
    batch is split over the mesh; metrics come back replicated."""
    st = state_shardings(state, mesh, mode, min_size=min_size)
    batch_sh = NamedSharding(mesh, PartitionSpec(AXIS))
    return jax.jit(
        step,
        in_shardings=(st, batch_sh),
        out_shardings=(st, NamedSharding(mesh, PartitionSpec())),
        donate_argnums=(0,) if donate else (),
    )
