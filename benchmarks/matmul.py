"""Dense fp32 matmul throughput: XLA (jax.numpy) vs numpy (BLAS) on this machine.

The reference peak that later benchmarks quote their FLOP/s against (``peak_gflops``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import cli_main, time_fn, time_jitted


def operands(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The two standard-normal float32 ``[n, n]`` matrices both sides multiply (seed 0)."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


def run(quick: bool = False) -> dict[str, Any]:
    sizes = (512, 1024) if quick else (1024, 2048)
    rows = []
    for n in sizes:
        a_np, b_np = operands(n)
        a, b = jnp.asarray(a_np), jnp.asarray(b_np)
        flops = 2.0 * n**3
        ours = time_jitted(jax.jit(jnp.matmul), a, b, repeats=5 if quick else 10)
        peer = time_fn(np.matmul, a_np, b_np, repeats=5 if quick else 10)
        row = {
            "n": n,
            "jax_gflops": ours.rate(flops) / 1e9,
            "numpy_gflops": peer.rate(flops) / 1e9,
            "ratio_jax_over_numpy": peer.median_s / ours.median_s,
            "jax": ours.to_dict(),
            "numpy": peer.to_dict(),
        }
        rows.append(row)
        print(
            f"matmul fp32 {n}^2: jax {row['jax_gflops']:.1f} GFLOP/s, numpy {row['numpy_gflops']:.1f} GFLOP/s, "
            f"ratio {row['ratio_jax_over_numpy']:.2f}x (compile {ours.compile_s * 1e3:.0f} ms)"
        )
    peak = max(max(r["jax_gflops"], r["numpy_gflops"]) for r in rows)
    return {"rows": rows, "peak_gflops": peak, "peer": "numpy"}


if __name__ == "__main__":
    cli_main("matmul", run)
