"""Multi-process training on one machine: tokens/s of the pretraining step at 1 x 4, 2 x 2 and 4 x 1
(processes x devices per process), so the cost of crossing processes is visible.

Every layout runs the same step, :func:`jaxsafety.train.lm.make_lm_train_step` on a mesh of 4 CPU devices
(:func:`~jaxsafety.train.sharding.make_mesh`), in ``dp`` and ``fsdp``, on the model and batch of
:class:`~jaxsafety.train.lm.PretrainConfig`'s defaults (GPT-2, d_model 128, 4 layers, batch 32 x 128 tokens,
vocabulary 1024); each process feeds its own rows (:func:`~jaxsafety.train.sharding.process_batch`). Within one
process the 4 devices exchange gradients through shared memory; across processes the collectives go through
gloo over localhost TCP (``python -m jaxsafety.launch``). A single-device step without a mesh (``1 x 1``) is the
reference. The multi-process layouts also divide the cores among processes, each with its own XLA thread pool.
Each multi-device layout also times an all-reduce alone (a jitted sum over the devices of 1e3, 1e5 and 1e6
floats), the collective's latency and bandwidth without the model.

Timing: each layout is its own job; its process 0 reports ``compile_s`` (the first call less one steady step:
tracing and compilation) and the median of ``steps`` steps after 2 warm-up steps, each ending in
``block_until_ready`` (the collectives keep the processes in step). Layouts run in rounds (``1x1, 1x4, 2x2, 4x1`` per round), and the median over rounds is
reported, with the load average before and after.

``python -m benchmarks.multihost [--quick]`` writes ``benchmarks/results/multihost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = ((1, 1), (1, 4), (2, 2), (4, 1))  # (processes, devices per process); (1, 1): no mesh
MODES = ("dp", "fsdp")


def model_config(quick: bool) -> dict[str, Any]:
    """The PretrainConfig fields of the benchmarked model (quick: a smaller one)."""
    if quick:
        return {
            "d_model": 64,
            "n_layers": 2,
            "n_heads": 4,
            "seq_len": 64,
            "batch_size": 16,
            "vocab_size": 512,
        }
    return {"d_model": 128, "n_layers": 4, "n_heads": 4, "seq_len": 128, "batch_size": 32, "vocab_size": 1024}


def worker(out: str, quick: bool, steps: int) -> None:
    """One process of a layout's job: time the step in each mode; process 0 writes ``out`` (JSON)."""
    import jax
    import numpy as np
    from flax import nnx

    from jaxsafety.distributed import is_main
    from jaxsafety.models.gpt2 import GPT2
    from jaxsafety.train.lm import PretrainConfig, make_lm_train_step
    from jaxsafety.train.optim import cached_optimizer
    from jaxsafety.train.sharding import make_mesh, process_batch, process_rows, shard_state

    cfg = PretrainConfig(**model_config(quick), steps=1000)
    b, t = cfg.batch_size, cfg.seq_len
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(b, t), dtype=np.int32)
    rows: dict[str, Any] = {"tokens_per_step": b * t, "processes": jax.process_count()}
    rows["devices"] = jax.device_count()
    single = jax.device_count() == 1
    for mode in ("none",) if single else MODES:
        model = GPT2(cfg.model_config(cfg.vocab_size), rngs=nnx.Rngs(0))
        opt = nnx.Optimizer(model, cached_optimizer(cfg.optim, cfg.steps), wrt=nnx.Param)
        graphdef, state = nnx.split((model, opt))
        if single:
            state = jax.device_put(state, jax.local_devices()[0])
            step = make_lm_train_step(graphdef, donate=True)
            batch = jax.device_put({"tokens": tokens, "mask": np.ones_like(tokens)}, jax.local_devices()[0])
        else:
            mesh = make_mesh()
            state = shard_state(state, mesh, mode)
            step = make_lm_train_step(graphdef, donate=True, mesh=mesh, mode=mode, state=state)
            mine = tokens[process_rows(b, mesh)]
            batch = process_batch({"tokens": mine, "mask": np.ones_like(mine)}, mesh)
        times = []
        for _ in range(2 + steps):
            t0 = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics["loss"])
            times.append(time.perf_counter() - t0)
        first, times = times[0], times[2:]
        step_s = statistics.median(times)
        compile_s = first - step_s  # the first call: tracing and compilation, then one step
        rows[mode] = {
            "compile_s": compile_s,
            "step_s_median": step_s,
            "step_s_min": min(times),
            "tokens_per_s": b * t / step_s,
            "final_loss": float(metrics["loss"]),
        }
    if not single:
        rows["allreduce_ms"] = allreduce_ms(make_mesh())
    if is_main():
        Path(out).write_text(json.dumps(rows))


def allreduce_ms(mesh: Any, sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000)) -> dict[str, float]:
    """Median milliseconds of one jitted sum over the mesh's devices of a float32 ``[devices, size]`` array
    (an all-reduce of ``size`` floats), per size: the collective alone."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxsafety.distributed import put_global

    out = {}
    n = mesh.devices.size
    fn = jax.jit(lambda a: a.sum(0), out_shardings=NamedSharding(mesh, PartitionSpec()))
    for size in sizes:
        x = put_global(np.ones((n, size), np.float32), NamedSharding(mesh, PartitionSpec("data")))
        jax.block_until_ready(fn(x))
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(x))
            times.append(time.perf_counter() - t0)
        out[str(size)] = 1e3 * statistics.median(times)
    return out


def _job(processes: int, devices: int, quick: bool, steps: int, out: Path) -> dict[str, Any]:
    args = [str(Path(__file__)), "--worker", str(out), "--steps", str(steps)] + ["--quick"] * quick
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    if processes == 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "jaxsafety.launch", "--num-processes", str(processes)]
        cmd += ["--devices-per-process", str(devices), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"layout {processes}x{devices} failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def run(quick: bool) -> dict[str, Any]:
    rounds, steps = (1, 5) if quick else (3, 20)
    load_before = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {f"{p}x{d}": [] for p, d in LAYOUTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for p, d in LAYOUTS:
                out = Path(tmp) / f"{p}x{d}-{r}.json"
                results[f"{p}x{d}"].append(_job(p, d, quick, steps, out))
    rows = []
    for name, runs in results.items():
        row: dict[str, Any] = {
            "layout": name,
            "processes": runs[0]["processes"],
            "devices": runs[0]["devices"],
        }
        for mode in ("none", *MODES):
            if mode in runs[0]:
                tps = [x[mode]["tokens_per_s"] for x in runs]
                row[mode] = {
                    "tokens_per_s": statistics.median(tps),
                    "tokens_per_s_rounds": tps,
                    "compile_s": statistics.median(x[mode]["compile_s"] for x in runs),
                    "final_loss": runs[0][mode]["final_loss"],
                }
        if "allreduce_ms" in runs[0]:
            row["allreduce_ms"] = {
                k: statistics.median(x["allreduce_ms"][k] for x in runs) for k in runs[0]["allreduce_ms"]
            }
        rows.append(row)
    base = {m: next(r for r in rows if r["layout"] == "1x4")[m]["tokens_per_s"] for m in MODES}
    for row in rows:
        for mode in MODES:
            if mode in row:
                row[mode]["ratio_vs_1x4"] = row[mode]["tokens_per_s"] / base[mode]
    single = rows[0]["none"]["tokens_per_s"]
    print(f"{'layout':>8} {'mode':>5} {'tokens/s':>10} {'vs 1x4':>7} {'vs 1x1':>7} {'compile s':>9}")
    for row in rows:
        for mode in ("none", *MODES):
            if mode in row:
                x = row[mode]
                vs4 = f"{x['ratio_vs_1x4']:.2f}" if "ratio_vs_1x4" in x else "-"
                print(
                    f"{row['layout']:>8} {mode:>5} {x['tokens_per_s']:>10,.0f} {vs4:>7} "
                    f"{x['tokens_per_s'] / single:>7.2f} {x['compile_s']:>9.1f}"
                )
    print("all-reduce ms (floats):", {r["layout"]: r.get("allreduce_ms") for r in rows[1:]})
    return {
        "model": model_config(quick),
        "rounds": rounds,
        "steps_per_round": steps,
        "rows": rows,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="benchmarks.multihost")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.worker, a.quick, a.steps)
        return
    from benchmarks.harness import cli_main

    cli_main("multihost", run, ["--quick"] * a.quick + (["--out", a.out] if a.out else []))


if __name__ == "__main__":
    main()
