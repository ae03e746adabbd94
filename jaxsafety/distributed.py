"""Multi-process JAX (``jax.distributed``): start-up, which process this is, and moving pytrees between the
host and a mesh that spans processes.

One program runs in every process (multi-controller JAX). After :func:`initialize`, ``jax.devices()`` lists
every process's devices and a :class:`~jax.sharding.Mesh` over them (``jaxsafety.train.sharding.make_mesh``)
spans all hosts; each process drives only its own devices (``jax.local_devices()``) and feeds their part of
each batch. Arrays sharded over several processes are not *fully addressable*: no single process can read
them whole, so the helpers here move pytrees across that boundary:

- :func:`put_global`: identical host values on every process -> global arrays with the given shardings
  (each process copies only its devices' slices);
- :func:`to_host`: global arrays -> numpy on every process (an all-gather for arrays split over processes);
- :func:`to_local`: global arrays -> arrays on this process's first device (for work that stays per process:
  sampling, evaluation on the host, HF export).

Start-up, in order of precedence (:func:`initialize`):

1. ``JAXSAFETY_COORDINATOR`` / ``JAXSAFETY_NUM_PROCESSES`` / ``JAXSAFETY_PROCESS_ID`` (set by the local
   launcher, ``python -m jaxsafety.launch --num-processes N``): a localhost coordinator; on CPU the
   collectives run over gloo (``jax_cpu_collectives_implementation``);
2. ``cluster=True`` (``python -m jaxsafety.launch --cluster`` under ``srun`` / on a TPU VM):
   ``jax.distributed.initialize()`` with no arguments, which reads the coordinator, process count and id from
   SLURM, Open MPI or the TPU metadata server;
3. neither: a single process, nothing to do.

Only process 0 writes logs, results and plots (:func:`is_main`); every process takes part in checkpoints.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "COORDINATOR_ENV",
    "NUM_PROCESSES_ENV",
    "PROCESS_ID_ENV",
    "broadcast_from_main",
    "initialize",
    "is_initialized",
    "is_main",
    "process_count",
    "process_index",
    "put_global",
    "sync",
    "to_host",
    "to_local",
]

COORDINATOR_ENV = "JAXSAFETY_COORDINATOR"
NUM_PROCESSES_ENV = "JAXSAFETY_NUM_PROCESSES"
PROCESS_ID_ENV = "JAXSAFETY_PROCESS_ID"

_STATE = {"initialized": False}


def initialize(*, cluster: bool = False, timeout_s: int = 60) -> int:
    """Join the multi-process job this process belongs to (see the module docstring); return its index.

    Must run before anything touches a JAX backend (the launcher's worker calls it first thing). A no-op when
    no launcher variable is set and ``cluster`` is False, or when already initialized. ``timeout_s``: how long
    to wait for the other processes to connect.
    """
    if _STATE["initialized"]:
        return process_index()
    import jax

    address = os.environ.get(COORDINATOR_ENV)
    if address:
        try:
            num = int(os.environ[NUM_PROCESSES_ENV])
            pid = int(os.environ[PROCESS_ID_ENV])
        except (KeyError, ValueError):
            raise ValueError(
                f"{COORDINATOR_ENV} is set, so {NUM_PROCESSES_ENV} and {PROCESS_ID_ENV} must be integers, got "
                f"{os.environ.get(NUM_PROCESSES_ENV)!r} and {os.environ.get(PROCESS_ID_ENV)!r}"
            ) from None
        if not 0 <= pid < num:
            raise ValueError(f"{PROCESS_ID_ENV}={pid} is invalid: accepted values are 0 .. {num - 1}")
        # CPU devices' collectives across processes (the option concerns the CPU client only)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=num,
            process_id=pid,
            initialization_timeout=timeout_s,
        )
    elif cluster:
        jax.distributed.initialize(initialization_timeout=timeout_s)
    else:
        return 0
    _STATE["initialized"] = True
    return jax.process_index()


def is_initialized() -> bool:
    """Whether this process joined a multi-process job through :func:`initialize`."""
    return _STATE["initialized"]


def process_index() -> int:
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def is_main() -> bool:
    """True on process 0 (and in a single-process run): the process that writes logs, results and plots."""
    return process_index() == 0


def sync(name: str) -> None:
    """Wait until every process reaches this point (a no-op in a single process). ``name`` must be the same
    string in all processes for one barrier."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def broadcast_from_main(value: str) -> str:
    """Process 0's ``value`` on every process (e.g. a run name made from the clock, which the processes would
    otherwise each read differently). Identity in a single process."""
    if process_count() == 1:
        return value
    import numpy as np
    from jax.experimental import multihost_utils

    raw = np.frombuffer(value.encode(), np.uint8)
    length = int(multihost_utils.broadcast_one_to_all(np.int32(raw.size)))
    buf = np.zeros(length, np.uint8)
    buf[: min(length, raw.size)] = raw[:length]
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf))).decode()


def _is_key(x: Any) -> bool:
    import jax

    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_host(tree: Any) -> Any:
    """Every array of ``tree`` as numpy on every process: fully addressable (and fully replicated) arrays are
    read locally, arrays split over processes are all-gathered first. Typed PRNG keys stay keys (on this
    process's first device)."""
    import jax
    import numpy as np

    def one(x: Any) -> Any:
        if not isinstance(x, jax.Array):
            return x
        if _is_key(x):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(
                jax.device_put(to_host(jax.random.key_data(x)), _local0()), impl=impl
            )
        if x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(x)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def _local0() -> Any:
    import jax

    return jax.local_devices()[0]


def to_local(tree: Any) -> Any:
    """``tree`` with every array on this process's first device (gathered from other processes if needed)."""
    import jax

    return jax.device_put(to_host(tree), _local0())


def put_global(tree: Any, shardings: Any) -> Any:
    """Place ``tree`` (the same values on every process: numpy, or arrays this process can read whole) with
    ``shardings`` (a matching pytree of ``jax.sharding.Sharding``, possibly spanning processes). Each process
    copies only the slices its own devices hold. Typed PRNG keys are placed through their key data."""
    import jax

    def one(x: Any, sharding: Any) -> Any:
        if sharding.is_fully_addressable:  # a single process: a plain transfer
            return jax.device_put(x, sharding)
        if _is_key(x):
            impl = jax.random.key_impl(x)
            data = one(jax.random.key_data(x), sharding)
            return jax.random.wrap_key_data(data, impl=impl)
        host = to_host(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree, shardings)
