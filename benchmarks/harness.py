"""Timing harness shared by every benchmark.

Compile time is reported separately from steady state: for a jitted function, ``lower(...).compile()`` is timed on
its own and the steady state times the compiled executable; for anything else (a torch or numpy peer) the first call
is reported as ``compile_s`` (it holds lazy initialisation). Steady state is the median (and min) of ``repeats``
timed calls after ``warmup`` untimed ones, each ending in ``jax.block_until_ready`` so asynchronous dispatch is not
mistaken for speed.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax

__all__ = [
    "RESULTS_DIR",
    "Timing",
    "machine_info",
    "one_core",
    "single_threaded_blas",
    "time_fn",
    "time_interleaved",
    "time_jitted",
    "write_result",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds: ``compile_s`` (compile, or first call for non-jitted functions) and steady-state statistics."""

    compile_s: float
    median_s: float
    min_s: float
    mean_s: float
    std_s: float
    repeats: int
    times_s: tuple[float, ...]

    def rate(self, work: float) -> float:
        """``work`` units per second at the median time (e.g. env steps/s, FLOP/s)."""
        return work / self.median_s

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _block(x: Any) -> Any:
    return jax.block_until_ready(x)


def _steady(call: Callable[[], Any], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        _block(call())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _block(call())
        times.append(time.perf_counter() - t0)
    return times


def _timing(compile_s: float, times: list[float]) -> Timing:
    return Timing(
        compile_s=compile_s,
        median_s=statistics.median(times),
        min_s=min(times),
        mean_s=statistics.fmean(times),
        std_s=statistics.pstdev(times),
        repeats=len(times),
        times_s=tuple(times),
    )


def time_jitted(fn: Callable[..., Any], *args: Any, repeats: int = 5, warmup: int = 1) -> Timing:
    """Time a ``jax.jit``-wrapped ``fn(*args)``: AOT compile time, then steady-state calls of the executable.

    A function without ``.lower`` (not jitted) falls back to :func:`time_fn`.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats} is invalid: accepted values are integers >= 1")
    if not hasattr(fn, "lower"):
        return time_fn(fn, *args, repeats=repeats, warmup=warmup)
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    return _timing(compile_s, _steady(lambda: compiled(*args), repeats, warmup))


def time_interleaved(
    calls: dict[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int = 1,
    compile_s: dict[str, float] | None = None,
    settle_s: float = 0.3,
) -> dict[str, Timing]:
    """Time several contenders round-robin: one call of each per round, ``repeats`` rounds after ``warmup``
    untimed calls each, every call ended by ``jax.block_until_ready`` (torch and numpy calls are synchronous).

    Interleaving makes a shared machine's load hit every contender alike. Each timed call starts ``settle_s``
    after the previous one ended: BLAS and OpenMP worker pools (numpy's OpenBLAS, torch) busy-wait for a while
    after a call, and without the pause their spinning threads would take a core from the next contender. ``compile_s[name]`` (e.g. an AOT
    compile time) is reported as is; otherwise the first call's time is (the harness convention).
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats} is invalid: accepted values are integers >= 1")
    given = dict(compile_s or {})
    first: dict[str, float] = {}
    for name, call in calls.items():
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        first[name] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            jax.block_until_ready(call())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            time.sleep(settle_s)
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - t0)
    return {name: _timing(given.get(name, first[name]), times[name]) for name in calls}


def time_fn(fn: Callable[..., Any], *args: Any, repeats: int = 5, warmup: int = 1) -> Timing:
    """Time any callable: the first call is ``compile_s``; then ``warmup`` untimed and ``repeats`` timed calls."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} is invalid: accepted values are integers >= 1")
    t0 = time.perf_counter()
    _block(fn(*args))
    first = time.perf_counter() - t0
    return _timing(first, _steady(lambda: fn(*args), repeats, max(warmup - 1, 0)))


# ISA extensions that decide matmul and elementwise kernels (x86 /proc/cpuinfo "flags", Arm "Features")
_ISA_FLAG = re.compile(
    r"^(sse\S*|ssse3|avx\S*|fma\S*|f16c|amx\S*|bmi\d|popcnt|movbe|aes|vaes|sha\S*|gfni|vpclmulqdq|adx"
    r"|asimd\S*|sve\d*|sme\d*|fphp|bf16|i8mm|dotprod)$"
)


def _cpu_info() -> dict[str, Any]:
    """CPU vendor, model name and ISA extensions from /proc/cpuinfo (Linux); the model alone elsewhere.

    The ISA list is what tells an AVX-512 / AMX Xeon from an AVX-512 EPYC or an AVX2-only laptop: the same
    benchmark's matmul peak and kernel choices differ between them."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in (
                "vendor_id",
                "model name",
                "cpu family",
                "model",
                "flags",
                "Features",
                "CPU implementer",
                "CPU part",
            ):
                fields.setdefault(key, value.strip())
            elif not line.strip() and fields:  # first processor block is enough
                break
    except OSError:
        pass
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    model = fields.get("model name") or platform.processor() or "unknown"
    if "model name" not in fields and "CPU part" in fields:
        model = f"implementer {fields.get('CPU implementer')} part {fields['CPU part']}"
    return {
        "cpu": model,
        "cpu_vendor": fields.get("vendor_id") or platform.machine() or "unknown",
        # family/model numbers name the generation when a VM reports only a generic model name ("AMD EPYC")
        "cpu_family_model": f"{fields['cpu family']}/{fields['model']}" if "cpu family" in fields else None,
        "cpu_isa": sorted(f for f in flags if _ISA_FLAG.match(f)),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """Where a number was measured: CPU model, vendor and ISA extensions, devices, core count, library versions,
    commit, time."""
    import numpy as np

    devices = jax.devices()
    info: dict[str, Any] = {
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        **_cpu_info(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "numpy": np.__version__,
        "git_commit": _git_commit(),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def write_result(name: str, payload: dict[str, Any], results_dir: str | Path | None = None) -> Path:
    """Write ``payload`` plus :func:`machine_info` to ``<results_dir>/<name>.json`` (atomically)."""
    results_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    results_dir.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "machine": machine_info(), **payload}
    path = results_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    os.replace(tmp, path)
    return path


def cli_main(
    name: str, run: Callable[[bool], dict[str, Any]], argv: list[str] | None = None
) -> dict[str, Any]:
    """``python -m benchmarks.<name> [--quick] [--out DIR]``: run, print the summary, write the JSON."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"benchmarks.{name}")
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, for CI and smoke checks)")
    parser.add_argument("--out", default=None, help=f"results directory (default {RESULTS_DIR})")
    args = parser.parse_args(argv)
    payload = run(args.quick)
    path = write_result(name, {"quick": args.quick, **payload}, args.out)
    print(f"[{name}] wrote {path}")
    return payload


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """Pin every thread of this process to one CPU (the first allowed) while inside, then restore.

    The numpy peer is single-threaded; XLA:CPU splits large loops across its thread pool (the
    ``xla_cpu_multi_thread_eigen=false`` flag does not stop that), so without the pin ours could use a second core
    the peer does not get. Every thread is pinned: ``sched_setaffinity`` of the pid alone moves only the calling
    thread, not XLA's pool. Does nothing where affinity cannot be set.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = os.sched_getaffinity(0)
    previous = {}
    for tid in (int(t) for t in os.listdir("/proc/self/task")):
        with contextlib.suppress(OSError):
            previous[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, {min(allowed)})
    try:
        yield
    finally:  # threads started inside (e.g. a pool grown during compilation) get the process's original set
        for tid in (int(t) for t in os.listdir("/proc/self/task")):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, previous.get(tid, allowed))


# (get, set) thread-count entry points of the OpenBLAS builds that numpy and scipy wheels bundle (64-bit-integer
# scipy-openblas in numpy, 32-bit in scipy) and of a system OpenBLAS.
_OPENBLAS_THREAD_FUNCS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[int]:
    """Limit every loaded OpenBLAS to one thread while inside (what ``threadpoolctl.threadpool_limits(1)`` does,
    without the dependency); yields how many libraries were limited.

    Why: scipy's L-BFGS-B calls BLAS/LAPACK on 2x2 .. 10x10 matrices every iteration, and a multi-threaded
    OpenBLAS wakes its pool for each call: on this 2-core machine under load that cost ~4 ms per ``setulb`` call
    and made each 2-parameter fit ~20x slower (60 ms instead of 3 ms). One thread is the peer's best setting (the
    loop is pinned to one core anyway)."""
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    restore = []
    for path in sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", maps))):
        with contextlib.suppress(OSError):
            lib = ctypes.CDLL(path)
            for get, put in _OPENBLAS_THREAD_FUNCS:
                if hasattr(lib, get) and hasattr(lib, put):
                    restore.append((getattr(lib, put), int(getattr(lib, get)())))
                    getattr(lib, put)(1)
                    break
    try:
        yield len(restore)
    finally:
        for put, threads in restore:
            put(threads)
