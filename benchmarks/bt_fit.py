"""Bradley-Terry fit time against choix (I-LSR) and evalica on identical comparisons, and the same optimum.

TARGETS.md row "Bradley-Terry fit": floor faster than choix and the same optimum, goal >= 5x evalica at 500 models.
Data: ``n`` models with true log-strengths ``~ N(0, 1)``, ``M`` comparisons of uniformly random distinct pairs,
hard outcomes drawn from the Bradley-Terry probabilities (one seed per size). Sizes 20 models x 10k comparisons and
500 x 200k.

- **ours**: :func:`jaxsafety.judges.bradley_terry.fit_bradley_terry` with its defaults (``method="auto"``: dense
  Newton at 20 models, Anderson-accelerated Newman iteration at 500; ``l2 = 1e-6``; ``tol = 1e-9``), called on the
  raw numpy arrays ``model_a, model_b, y``: the timed call holds everything from those arrays to the scores (input
  checks, transfer, the in-graph scatter-add into the ``n x n`` win matrix, the solver, the log-likelihood). Its
  first call (tracing and XLA compilation) is reported as ``compile_s``.
- **choix** ``ilsr_pairwise(n, data, alpha=0)`` (Maystre & Grossglauser 2015; its defaults ``tol=1e-8``,
  ``max_iter=100``), ``data`` a list of ``(winner, loser)`` int tuples, its fastest input format.
- **evalica** ``bradley_terry(xs, ys, winners, index=...)`` (its Rust solver, defaults ``tolerance=1e-6``,
  ``limit=100``), ``xs``, ``ys`` lists of ints, ``winners`` a list of :class:`evalica.Winner`, ``index`` the model
  ids. It returns strengths ``pi`` (geometric mean 1), compared as ``log pi`` centred.

The peers' inputs are built before timing (generous to them: ours converts and checks its arrays inside the timed
call). Every score vector is centred before comparing; "same optimum" is ``max |ours - peer| <= 1e-4`` for both
peers at every size (ours is a MAP with ``l2 = 1e-6``, which moves these fits by ~2e-7; with ``l2 = 0`` ours and
choix agree to 1e-10). Timing follows ``harness.time_interleaved`` (ours, choix, evalica, ours, ...; median of
``repeats`` after one warm-up, each call ended by ``block_until_ready`` and started 0.3 s after the previous one,
so every call is a cold-ish single fit), on all cores the process may use, with every OpenBLAS limited to one
thread (:func:`benchmarks.harness.single_threaded_blas`): on this 2-core machine under load a 2-thread
OpenBLAS made a 500 x 500 Cholesky (our Newton's) take 230 ms instead of 3 ms; choix's per-iteration 500 x 500 LU
is the same kind of call, and the defaults' timings were erratic.

Breakdown of ours (profile): the input checks alone, the jitted program alone on checked arrays, and each solver
(``newton``, ``newman``) at each size with its iteration count.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from benchmarks.harness import Timing, cli_main, single_threaded_blas, time_fn, time_interleaved
from jaxsafety.judges import bradley_terry as bt
from jaxsafety.judges.bradley_terry import fit_bradley_terry

NAME = "bt_fit"
SAME_OPTIMUM_ATOL = 1e-4


@dataclasses.dataclass(frozen=True)
class Budget:
    """Sizes ``(num_models, num_comparisons)``, repeats of the interleaved timing and of the breakdown."""

    sizes: tuple[tuple[int, int], ...]
    repeats: int
    breakdown_repeats: int


FULL = Budget(sizes=((20, 10_000), (500, 200_000)), repeats=7, breakdown_repeats=7)
QUICK = Budget(sizes=((20, 2_000), (60, 6_000)), repeats=3, breakdown_repeats=2)


def synthetic_comparisons(num_models: int, num_comparisons: int, seed: int = 0):
    """True log-strengths ``[n] ~ N(0, 1)``; ``model_a``, ``model_b`` ``[M]`` uniformly random distinct pairs
    (int64); ``y`` ``[M]`` float64 hard outcomes, 1 when ``model_a`` won, drawn from ``sigmoid(theta_a -
    theta_b)``."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=num_models)
    a = rng.integers(0, num_models, num_comparisons)
    b = rng.integers(0, num_models - 1, num_comparisons)
    b = b + (b >= a)
    y = (rng.random(num_comparisons) < 1.0 / (1.0 + np.exp(theta[b] - theta[a]))).astype(np.float64)
    return theta, a, b, y


def choix_data(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> list[tuple[int, int]]:
    """choix's pairwise format: ``(winner, loser)`` for every comparison (hard outcomes only)."""
    winners = np.where(y == 1.0, a, b).tolist()
    losers = np.where(y == 1.0, b, a).tolist()
    return list(zip(winners, losers))


def evalica_inputs(a: np.ndarray, b: np.ndarray, y: np.ndarray, num_models: int) -> dict[str, Any]:
    import evalica
    import pandas as pd

    winners = [evalica.Winner.X if v == 1.0 else evalica.Winner.Y for v in y.tolist()]
    return {"xs": a.tolist(), "ys": b.tolist(), "winners": winners, "index": pd.Index(range(num_models))}


def evalica_scores(result: Any, num_models: int) -> np.ndarray:
    """evalica's strengths (a pandas Series sorted by score) as centred log-strengths in model order."""
    strengths = result.scores.reindex(range(num_models)).to_numpy(dtype=np.float64)
    log_s = np.log(strengths)
    return log_s - log_s.mean()


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean()


def _timing_row(t: Timing) -> dict[str, Any]:
    return {"median_ms": 1e3 * t.median_s, "min_ms": 1e3 * t.min_s, "timing": t.to_dict()}


def breakdown(a, b, y, num_models: int, repeats: int) -> dict[str, Any]:
    """Where ours spends its time: the input checks, the jitted program (aggregation + solver) on checked arrays,
    and the end-to-end call per solver, with iterations."""
    prepared = bt.check_comparisons(a, b, y, None, num_models, bt.DEFAULT_L2, "half")
    method = bt.resolve_method("auto", "half", num_models)

    def core():
        with jax.enable_x64():
            return bt.fit_checked_comparisons(
                *prepared,
                np.float64(bt.DEFAULT_L2),
                np.float64(1e-9),
                np.int32(1000),
                num_models=num_models,
                method=method,
                ties="half",
            )

    out: dict[str, Any] = {
        "auto_method": method,
        "input_checks": _timing_row(
            time_fn(lambda: bt.check_comparisons(a, b, y, None, num_models, 1e-6, "half"), repeats=repeats)
        ),
        "jitted_program": _timing_row(time_fn(core, repeats=repeats)),
        "methods": {},
    }
    for m in ("newton", "newman"):
        result = fit_bradley_terry(a, b, y, num_models=num_models, method=m)
        t = time_fn(lambda m=m: fit_bradley_terry(a, b, y, num_models=num_models, method=m), repeats=repeats)
        out["methods"][m] = {
            **_timing_row(t),
            "num_iterations": int(result.num_iterations),
            "converged": bool(result.converged),
        }
    return out


def fit_calls(a: np.ndarray, b: np.ndarray, y: np.ndarray, num_models: int) -> dict[str, Callable[[], Any]]:
    """The timed calls on one set of comparisons, ``{"ours", "choix", "evalica"}``, each fitting from scratch
    (the peers' inputs converted here, outside the timed calls); :func:`centred_scores` reads their results."""
    import choix
    import evalica

    data = choix_data(a, b, y)
    ev_in = evalica_inputs(a, b, y, num_models)
    return {
        "ours": lambda: fit_bradley_terry(a, b, y, num_models=num_models),
        "choix": lambda: choix.ilsr_pairwise(num_models, data, alpha=0.0),
        "evalica": lambda: evalica.bradley_terry(**ev_in),
    }


def centred_scores(name: str, result: Any, num_models: int) -> np.ndarray:
    """Centred log-strengths ``[n]`` (float64, model order) from the result of ``fit_calls(...)[name]()``."""
    if name == "ours":
        return _centred(result.scores)
    if name == "choix":
        return _centred(result)
    return evalica_scores(result, num_models)


def size_row(num_models: int, num_comparisons: int, budget: Budget) -> dict[str, Any]:
    theta, a, b, y = synthetic_comparisons(num_models, num_comparisons)
    calls = fit_calls(a, b, y, num_models)
    timings = time_interleaved(calls, repeats=budget.repeats)
    results = {name: call() for name, call in calls.items()}
    ours = results["ours"]
    scores = {name: centred_scores(name, r, num_models) for name, r in results.items()}
    delta = {
        "ours_vs_choix": float(np.max(np.abs(scores["ours"] - scores["choix"]))),
        "ours_vs_evalica": float(np.max(np.abs(scores["ours"] - scores["evalica"]))),
        "choix_vs_evalica": float(np.max(np.abs(scores["choix"] - scores["evalica"]))),
    }
    row = {
        "num_models": num_models,
        "num_comparisons": num_comparisons,
        **{name: _timing_row(t) for name, t in timings.items()},
        "ours_compile_s": timings["ours"].compile_s,
        "ours_num_iterations": int(ours.num_iterations),
        "ours_converged": bool(ours.converged),
        "ratio_choix_over_ours": timings["choix"].median_s / timings["ours"].median_s,
        "ratio_evalica_over_ours": timings["evalica"].median_s / timings["ours"].median_s,
        "max_abs_delta_centred": delta,
        "max_abs_error_vs_truth": float(np.max(np.abs(scores["ours"] - _centred(theta)))),
        "same_optimum": bool(max(delta["ours_vs_choix"], delta["ours_vs_evalica"]) <= SAME_OPTIMUM_ATOL),
        "breakdown": breakdown(a, b, y, num_models, budget.breakdown_repeats),
    }
    print(
        f"n={num_models} M={num_comparisons}: ours {row['ours']['median_ms']:.2f} ms "
        f"(compile {row['ours_compile_s']:.2f} s, {row['ours_num_iterations']} iterations), "
        f"choix {row['choix']['median_ms']:.1f} ms ({row['ratio_choix_over_ours']:.1f}x), "
        f"evalica {row['evalica']['median_ms']:.1f} ms ({row['ratio_evalica_over_ours']:.1f}x); "
        f"max |delta| vs choix {delta['ours_vs_choix']:.1e}, vs evalica {delta['ours_vs_evalica']:.1e}",
        flush=True,
    )
    return row


def run(quick: bool = False, budget: Budget | None = None) -> dict[str, Any]:
    import choix
    import evalica

    budget = budget or (QUICK if quick else FULL)
    t0 = time.perf_counter()
    with single_threaded_blas() as limited:
        rows = [size_row(n, m, budget) for n, m in budget.sizes]
    at_500 = [r for r in rows if r["num_models"] == 500]
    payload = {
        "peers": {
            "choix": f"choix {getattr(choix, '__version__', '?')} ilsr_pairwise(alpha=0)",
            "evalica": f"evalica {evalica.__version__} bradley_terry (solver {evalica.SOLVER})",
        },
        "config": {**dataclasses.asdict(budget), "same_optimum_atol": SAME_OPTIMUM_ATOL, "blas_threads": 1},
        "openblas_libraries_limited": limited,
        "rows": rows,
        "ratios": {
            f"n{r['num_models']}_m{r['num_comparisons']}": {
                "choix_over_ours": r["ratio_choix_over_ours"],
                "evalica_over_ours": r["ratio_evalica_over_ours"],
            }
            for r in rows
        },
        "targets": {
            "faster_than_choix": all(r["ratio_choix_over_ours"] > 1.0 for r in rows),
            "same_optimum": all(r["same_optimum"] for r in rows),
            # None when the 500-model size is not part of the run (--quick)
            "ge_5x_evalica_at_500": (
                all(r["ratio_evalica_over_ours"] >= 5.0 for r in at_500) if at_500 else None
            ),
        },
        "wall_s": time.perf_counter() - t0,
    }
    print(f"summary: ratios {payload['ratios']}; targets {payload['targets']}", flush=True)
    return payload


if __name__ == "__main__":
    cli_main(NAME, run)
