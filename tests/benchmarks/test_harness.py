"""Benchmark harness: compile time is split from steady state, results land in JSON with machine info."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from benchmarks import __main__ as runner
from benchmarks.harness import time_fn, time_jitted, write_result


def test_first_call_is_reported_apart_from_steady_state():
    calls = []

    def slow_first(x):
        time.sleep(0.25 if not calls else 0.02)
        calls.append(x)
        return x

    t = time_fn(slow_first, 1, repeats=5, warmup=1)
    assert len(calls) == 1 + 5  # the first call doubles as the warm-up
    assert t.compile_s == pytest.approx(0.25, abs=0.1)
    assert t.median_s == pytest.approx(0.02, abs=0.015)
    assert t.min_s <= t.median_s and t.repeats == 5 and len(t.times_s) == 5


def test_jitted_compile_time_is_separate():
    @jax.jit
    def many_ops(x):
        # 400 unrolled elementwise ops: slow to compile, fast to run
        for i in range(400):
            x = jnp.sin(x) * (1.0 + 1e-3 * i)
        return x

    x = jnp.ones((8,))
    t = time_jitted(many_ops, x, repeats=5)
    assert t.compile_s > 10 * t.median_s
    # the steady state really ran the computation: it returns and is positive
    assert 0 < t.min_s <= t.median_s


def test_steady_state_waits_for_the_device():
    f = jax.jit(lambda a: (a @ a) @ a)
    a = jnp.ones((768, 768), jnp.float32)
    f(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(3):
        f(a).block_until_ready()
    blocked = (time.perf_counter() - t0) / 3
    t = time_jitted(f, a, repeats=3)
    assert t.median_s > 0.3 * blocked  # an unblocked timing of async dispatch would be ~100x smaller


def test_bad_repeats():
    with pytest.raises(ValueError, match="repeats=0 is invalid"):
        time_fn(lambda: None, repeats=0)


def test_write_result_and_runner(tmp_path: Path, capsys):
    path = write_result("demo", {"ratio": 2.0}, tmp_path)
    data = json.loads(path.read_text())
    assert data["benchmark"] == "demo" and data["ratio"] == 2.0
    for k in ("jax", "backend", "device_kind", "cpu_count", "timestamp_utc", "cpu", "cpu_vendor", "cpu_isa"):
        assert k in data["machine"]
    # the ISA list is the subset of /proc/cpuinfo's flags that name SIMD / matrix extensions
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = next(
            (
                ln.split(":", 1)[1].split()
                for ln in cpuinfo.read_text().splitlines()
                if ln.startswith("flags")
            ),
            [],
        )
        assert set(data["machine"]["cpu_isa"]) <= set(flags)
        assert ("avx2" in data["machine"]["cpu_isa"]) == ("avx2" in flags)
        assert "smep" not in data["machine"]["cpu_isa"]  # a security feature, not an ISA extension
    assert "matmul" in runner.discover()
    assert runner.main(["--only", "nope", "--out", str(tmp_path)]) == 2
    assert "--only nope is invalid" in capsys.readouterr().out
    assert runner.main(["--only", "matmul", "--quick", "--out", str(tmp_path)]) == 0
    mm = json.loads((tmp_path / "matmul.json").read_text())
    assert mm["quick"] is True and mm["peak_gflops"] > 0
    assert all(r["ratio_jax_over_numpy"] > 0 for r in mm["rows"])
