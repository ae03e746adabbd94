"""Where the LM train step's time goes, ours and HF torch: time in matmuls vs elsewhere, and page faults.

The profile behind the model-zoo performance notes in the README (``benchmarks/models_train.py`` measures the
speed; this says why). Same models, batch and optimizer as ``models_train``, run on one pinned core:

- ours: the jitted step (``make_lm_train_step``) traced with ``jax.profiler`` and XLA's per-thunk trace events
  (``--xla_cpu_enable_xprof_traceme=true``); every event's wall time is attributed to its HLO op (ops running
  at once share it), and ops are grouped by what the compiled HLO says they are: ``dot`` (a dot or a library
  fusion containing one), ``copy`` (layout copies and transposes), ``reduce`` and ``elementwise`` (the rest);
- HF torch: ``torch.profiler`` self CPU time, ``aten::mm / addmm / bmm / baddbmm`` and the SDPA kernels
  (``_scaled_dot_product_*``) counted as matmul time.

Both profiles run in a child process whose glibc malloc keeps freed memory mapped (``MALLOC_ARENA_MAX=1``,
``MALLOC_MMAP_MAX_=0``, large trim threshold), so they show compute only. Page faults are measured apart, in the
default environment: XLA:CPU maps its whole temp buffer afresh on every call and glibc gives torch's large tensors
fresh pages, so each first touch of a 4 KiB page faults; ``fault_us`` is the measured cost of one (an mmap'd
buffer touched page by page), and ``faults_per_step x fault_us`` the step time they take.

``python -m benchmarks.profile_train_step [--quick]`` writes ``benchmarks/results/profile_train_step.json``.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.harness import cli_main

__all__ = ["fault_cost_us", "hlo_categories", "run"]

_KEEP_MAPPED = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
    "MALLOC_TOP_PAD_": str(1 << 30),
}
_TORCH_MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def fault_cost_us(mb: int = 256, repeats: int = 5) -> float:
    """CPU microseconds per first touch of a fresh 4 KiB page (best of ``repeats`` mmap / touch / munmap)."""
    import mmap

    import numpy as np

    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        m = mmap.mmap(-1, mb << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        a = np.frombuffer(m, dtype=np.uint8)
        a[::4096] = 1
        del a
        m.close()
        best = min(best, time.process_time() - t0)
    return best / (mb * 256) * 1e6


def hlo_categories(hlo: str) -> dict[str, str]:
    """Category of every instruction of a compiled HLO module: dot, copy, reduce or elementwise."""
    bodies = {m.group(1): m.group(2) for m in re.finditer(r"^%([\w.\-]+) .*?\{\n(.*?)\n\}", hlo, re.M | re.S)}
    cats = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = \S+ ([\w\-]+)\((.*)$", hlo, re.M):
        name, op, rest = m.groups()
        called = re.search(r"calls=%([\w.\-]+)", rest)
        body = bodies.get(called.group(1), "") if called else ""
        if op == "dot" or " dot(" in body:
            cats[name] = "dot"
        elif op in ("copy", "transpose") or re.search(r"(^|_)(copy|transpose)(_|\.|$)", name):
            cats[name] = "copy"
        elif op == "reduce" or " reduce(" in body:
            cats[name] = "reduce"
        else:
            cats[name] = "elementwise"
    return cats


def _attribute(intervals: list[tuple[int, int, str]]) -> tuple[collections.Counter, int]:
    """Wall time per name (time shared by concurrent events split evenly) and the busy time, in ns."""
    starts, ends = collections.defaultdict(list), collections.defaultdict(list)
    for a, b, name in intervals:
        starts[a].append(name)
        ends[b].append(name)
    out, active, prev, busy = collections.Counter(), collections.Counter(), None, 0
    for p in sorted(set(starts) | set(ends)):
        if prev is not None and active:
            k = sum(active.values())
            busy += p - prev
            for name, c in active.items():
                out[name] += (p - prev) * c / k
        for name in ends[p]:
            active[name] -= 1
            if not active[name]:
                del active[name]
        for name in starts[p]:
            active[name] += 1
        prev = p
    return out, busy


def _inputs(arch: str, quick: bool) -> tuple[Any, Any]:
    """The benchmark's model config and token batch for ``arch``."""
    from benchmarks.models_train import batch_shape, model_configs, train_tokens

    cfg = model_configs(quick)[arch]
    return cfg, train_tokens(cfg, *batch_shape(quick))


def _ours_call(arch: str, quick: bool) -> tuple[Any, Any]:
    from benchmarks.models_train import make_model, ours_train_call

    cfg, tokens = _inputs(arch, quick)
    ours = ours_train_call(make_model(cfg), tokens)
    return ours.call, ours.compiled


def _hf_call(arch: str, quick: bool) -> Any:
    from benchmarks.models_train import hf_train_call, load_hf, make_model

    cfg, tokens = _inputs(arch, quick)
    hf = load_hf(make_model(cfg))
    hf.train()
    return hf_train_call(hf, tokens)


def _ours_profile(arch: str, quick: bool, steps: int) -> dict[str, Any]:
    import jax

    call, compiled = _ours_call(arch, quick)
    for _ in range(2):
        jax.block_until_ready(call())
    cats = hlo_categories(compiled.as_text())
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with jax.profiler.trace(tmp):
            for _ in range(steps):
                jax.block_until_ready(call())
        wall = (time.perf_counter() - t0) / steps
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)[0])
    intervals = [
        (ev.start_ns, ev.end_ns, ev.name)
        for plane in data.planes
        for line in plane.lines
        if line.name.startswith("tf_XLA")
        for ev in line.events
        if not ev.name.startswith(("ThunkExecutor", "Threadpool", "while", "conditional", "call"))
    ]
    per_op, busy = _attribute(intervals)
    by_cat = collections.Counter()
    for name, ns in per_op.items():
        by_cat[cats.get(name, "elementwise")] += ns
    return {
        "step_ms_profiled": wall * 1e3,
        "busy_ms": busy / steps / 1e6,
        "ms": {c: v / steps / 1e6 for c, v in by_cat.items()},
        "share": {c: v / busy for c, v in by_cat.items()},
        "top_non_dot_ops_ms": dict(
            [
                (n, v / steps / 1e6)
                for n, v in sorted(per_op.items(), key=lambda kv: -kv[1])
                if cats.get(n, "elementwise") != "dot"
            ][:12]
        ),
    }


def _hf_profile(arch: str, quick: bool, steps: int) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    call = _hf_call(arch, quick)
    for _ in range(2):
        call()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            call()
        wall = (time.perf_counter() - t0) / steps
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mm = sum(
        e.self_cpu_time_total
        for e in events
        if e.key in _TORCH_MATMUL or e.key.startswith("aten::_scaled_dot_product")
    )
    return {
        "step_ms_profiled": wall * 1e3,
        "self_ms": total / steps / 1e3,
        "ms": {"matmul_and_sdpa": mm / steps / 1e3, "other": (total - mm) / steps / 1e3},
        "share": {"matmul_and_sdpa": mm / total, "other": (total - mm) / total},
    }


def _faults(arch: str, quick: bool, steps: int) -> dict[str, float]:
    import jax
    import torch

    torch.set_num_threads(1)
    out = {}
    call, compiled = _ours_call(arch, quick)
    out["ours_xla_temp_mb"] = compiled.memory_analysis().temp_size_in_bytes / 2**20
    for name, fn in (("ours", lambda: jax.block_until_ready(call())), ("hf", _hf_call(arch, quick))):
        fn()
        fn()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            fn()
        out[f"{name}_faults_per_step"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps
    return out


def _child(kind: str, arch: str, quick: bool, steps: int, keep_mapped: bool) -> dict[str, Any]:
    """Run one measurement in a subprocess pinned to one CPU (malloc tuned before start when ``keep_mapped``)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = f"os.sched_setaffinity(0, {{{cpus[-1]}}}); " if cpus else ""
    env = dict(os.environ)
    if keep_mapped:
        env.update(_KEEP_MAPPED)
    if kind == "ours":
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = (flags + " --xla_cpu_enable_xprof_traceme=true").strip()
    fn = {"ours": "_ours_profile", "hf": "_hf_profile", "faults": "_faults"}[kind]
    code = (
        f"import os; {pin}import json, sys; from benchmarks import profile_train_step as m; "
        f"json.dump(m.{fn}(sys.argv[1], sys.argv[2] == '1', int(sys.argv[3])), open(sys.argv[4], 'w'))"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        subprocess.run(
            [sys.executable, "-c", code, arch, "1" if quick else "0", str(steps), out],
            check=True,
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        with open(out) as f:
            return json.load(f)


def run(quick: bool = False) -> dict[str, Any]:
    from benchmarks.models_train import model_configs

    steps = 2 if quick else 4
    fault_us = fault_cost_us(64 if quick else 256)
    rows = []
    for arch in model_configs(quick):
        ours = _child("ours", arch, quick, steps, keep_mapped=True)
        hf = _child("hf", arch, quick, steps, keep_mapped=True)
        faults = _child("faults", arch, quick, steps, keep_mapped=False)
        row = {
            "arch": arch,
            "ours": ours,
            "hf": hf,
            **faults,
            "fault_us": fault_us,
            "ours_fault_ms_per_step": faults["ours_faults_per_step"] * fault_us / 1e3,
            "hf_fault_ms_per_step": faults["hf_faults_per_step"] * fault_us / 1e3,
        }
        rows.append(row)
        o, h = ours["ms"], hf["ms"]
        print(
            f"[1 core] {arch}: ours {ours['busy_ms']:.0f} ms compute (dots {o.get('dot', 0):.0f}, copies "
            f"{o.get('copy', 0):.0f}, elementwise {o.get('elementwise', 0):.0f}, reductions {o.get('reduce', 0):.0f})"
            f" + {row['ours_faults_per_step']:.0f} page faults ({row['ours_fault_ms_per_step']:.0f} ms); HF torch "
            f"{hf['self_ms']:.0f} ms (matmul+SDPA {h['matmul_and_sdpa']:.0f}, other {h['other']:.0f}) + "
            f"{row['hf_faults_per_step']:.0f} page faults ({row['hf_fault_ms_per_step']:.0f} ms); "
            f"{fault_us:.2f} us per fault",
            flush=True,
        )
    return {"rows": rows, "single_core": True}


if __name__ == "__main__":
    cli_main("profile_train_step", run)
