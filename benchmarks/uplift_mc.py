"""Uplift-model Monte Carlo (issue 9, item 6): scenarios/s of :func:`jaxsafety.uplift.model.simulate` against an
independent float64 numpy implementation of the same model (:mod:`benchmarks.uplift_numpy`), with and without
sensitivities. Issue targets: ``10^6`` scenarios with full sensitivity in < 5 s on this CPU; >= 10x numpy.

Work: ``N`` scenarios of the example parameter file (``jaxsafety/uplift/data/example_params.yaml``, base
safeguards) drawn once by :func:`jaxsafety.uplift.params.draw_scenarios` (its time reported separately: with the
file's ``fit_csv`` it includes the red-team survival bootstrap); every side evaluates the same draws (slices of
them).

- **ours**: ``simulate(draws, horizon_months=..., family=..., sensitivity=...)`` end to end (float32: host-side
  casting and padding, the jitted evaluation of chunks of 8192 scenarios, outputs back to numpy). Forward only
  (``sensitivity=False``) and with the gradient of the mean ``harm.safeguarded`` w.r.t. the shift of every input
  (23 scalar shifts for the example's four steps) from one reverse pass per chunk. The first call (trace + XLA
  compile + run) is ``compile_s``; steady state is the median of ``repeats`` calls (``block_until_ready``; the
  outputs are numpy arrays, so the call is synchronous anyway).
- **numpy**: :func:`benchmarks.uplift_numpy.simulate_numpy`, float64, vectorised over chunks of 16384 scenarios;
  sensitivities by central finite differences of the mean target (``2 P + 1 = 47`` model evaluations).

Timings: ours on every core at ``num_scenarios`` (the headline "< 5 s" check); then, both sides pinned to one core
(:func:`benchmarks.harness.one_core`, every OpenBLAS at one thread) and interleaved
(:func:`benchmarks.harness.time_interleaved`), ours against numpy forward at ``peer_scenarios`` and ours with
sensitivity against numpy with finite differences at ``fd_scenarios`` (numpy's finite differences cost ~47 forward
passes, so fewer scenarios keep the run short; every rate is per scenario, and numpy's is flat in ``N`` beyond one
chunk). Ratios are scenario rates: pinned (same core count) and ours-all-cores over numpy (numpy is
single-threaded).

Agreement (same draws): every output per scenario, ours (float32) vs numpy (float64), max relative difference
(the differences ``uplift.*`` and ``risk_reduction`` relative to the scenario's ``harm.none``, as they cancel);
sensitivities, autodiff vs central differences, max absolute and relative difference per input. The finite-
difference step is ``1e-6``, not ``1e-4``: the open fraction ``w`` has kinks (a window's patch time crossing the
horizon), and central differences across a kink are off by O(jump) in the few scenarios within ``h`` of one, a
bias O(h) in the mean: at ``h = 1e-4`` it moved the ``jb_a`` / ``jb_b`` sensitivities by ~1% on 4096 scenarios
(ours agreed with a float64 per-scenario autodiff there), at ``1e-6`` everything agrees to ~1e-6.

XLA flag: ``--xla_cpu_experimental_ynn_fusion_type=`` (no YNNPACK fusions; they make the model's backward pass ~7x
slower) is set at import, before the backend starts (``xla_no_ynn_in_effect`` in the JSON says whether it took).

    python -m benchmarks.uplift_mc [--quick]
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml

from benchmarks.harness import Timing, cli_main, one_core, single_threaded_blas, time_fn, time_interleaved
from benchmarks.uplift_numpy import NumpyResult, simulate_numpy
from jaxsafety.config import ConfigError, check_range, format_number, print_table
from jaxsafety.xla_flags import apply_cpu_workarounds

NO_YNN = apply_cpu_workarounds(no_ynn=True)  # before anything starts the backend (module docstring)

from jaxsafety.uplift import params as uplift_params  # noqa: E402
from jaxsafety.uplift.model import OUTPUTS, SimulationResult, simulate  # noqa: E402

NAME = "uplift_mc"
EXAMPLE = Path(uplift_params.__file__).resolve().parent / "data" / "example_params.yaml"
TARGET = "harm.safeguarded"
FD_STEP = 1e-6
CHUNK = 16384
_DIFFERENCES = ("uplift.none", "uplift.safeguarded", "risk_reduction")  # compared relative to harm.none


@dataclasses.dataclass(frozen=True)
class Budget:
    """Sizes of one run: ``num_scenarios`` (ours on every core), ``peer_scenarios`` (forward, pinned, both sides),
    ``fd_scenarios`` (with sensitivity, pinned, both sides); ``repeats`` timed calls of ours on every core and of
    the pinned forward pair, ``fd_repeats`` of the pinned sensitivity pair; ``seed`` of the draws; ``jailbreak``:
    None for the example file's own section (a survival fit to its red-team CSV), or a replacement ``jailbreak``
    mapping with the family's parameters given directly (the test's: no bootstrap fit to compile)."""

    num_scenarios: int
    peer_scenarios: int
    fd_scenarios: int
    repeats: int
    fd_repeats: int
    seed: int = 0
    jailbreak: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        check_range("num_scenarios", self.num_scenarios, ge=1, integer=True)
        check_range("peer_scenarios", self.peer_scenarios, ge=1, le=self.num_scenarios, integer=True)
        check_range("fd_scenarios", self.fd_scenarios, ge=1, le=self.num_scenarios, integer=True)
        check_range("repeats", self.repeats, ge=1, integer=True)
        check_range("fd_repeats", self.fd_repeats, ge=1, integer=True)
        check_range("seed", self.seed, ge=0, integer=True)
        if self.jailbreak is not None and not isinstance(self.jailbreak, Mapping):
            raise ConfigError(
                "jailbreak", self.jailbreak, "None or a jailbreak mapping of the parameter file"
            )


FULL = Budget(num_scenarios=1_000_000, peer_scenarios=100_000, fd_scenarios=32_768, repeats=3, fd_repeats=3)
QUICK = Budget(num_scenarios=4096, peer_scenarios=4096, fd_scenarios=4096, repeats=3, fd_repeats=3)


def load_example(jailbreak: Mapping[str, Any] | None = None) -> uplift_params.ModelParams:
    """The example parameter file, its ``jailbreak`` section replaced by ``jailbreak`` when given."""
    if jailbreak is None:
        return uplift_params.load_params(EXAMPLE)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["jailbreak"] = dict(jailbreak)
    return uplift_params.parse_params(data, base_dir=EXAMPLE.parent, source=f"{EXAMPLE} (jailbreak replaced)")


def head(draws: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first ``n`` scenarios of ``draws`` (views)."""
    return {k: v[:n] for k, v in draws.items()}


def output_agreement(
    ours: Mapping[str, np.ndarray], peer: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Per output: max absolute and max relative difference over scenarios, ours (float32) vs the float64 peer.
    Relative to the peer's value, except the differences ``uplift.*`` / ``risk_reduction``, which are relative to
    the scenario's ``harm.none`` (they cross zero)."""
    out = {}
    for k in OUTPUTS:
        a, b = np.asarray(ours[k], np.float64), np.asarray(peer[k], np.float64)
        diff = np.abs(a - b)
        den = np.abs(peer["harm.none"] if k in _DIFFERENCES else b)
        rel = np.where(den > 0, diff / np.where(den > 0, den, 1.0), np.where(diff > 0, np.inf, 0.0))
        out[k] = {"max_abs_diff": float(diff.max()), "max_rel_diff": float(rel.max())}
    return out


def sensitivity_agreement(
    ours: Mapping[str, np.ndarray], peer: Mapping[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Per input: ours (autodiff, float32) and the peer's central differences (float64), their max absolute and
    max relative difference (relative to the peer's value, floored at 1e-9 of the largest sensitivity)."""
    assert set(ours) == set(peer), (sorted(ours), sorted(peer))
    floor = 1e-9 * max(float(np.max(np.abs(v))) for v in peer.values())
    out = {}
    for k in sorted(peer):
        a, b = np.atleast_1d(np.asarray(ours[k], np.float64)), np.atleast_1d(np.asarray(peer[k], np.float64))
        diff = np.abs(a - b)
        out[k] = {
            "ours": a.tolist(),
            "numpy_fd": b.tolist(),
            "max_abs_diff": float(diff.max()),
            "max_rel_diff": float(np.max(diff / np.maximum(np.abs(b), floor))),
        }
    return out


def _side(t: Timing, n: int) -> dict[str, Any]:
    return {
        "scenarios": n,
        "scenarios_per_s": n / t.median_s,
        "scenarios_per_s_best": n / t.min_s,
        "median_s": t.median_s,
        "first_call_s": t.compile_s,
        "compile_estimate_s": max(t.compile_s - t.median_s, 0.0),
        "timing": t.to_dict(),
    }


def run(quick: bool = False, budget: Budget | None = None) -> dict[str, Any]:
    budget = budget or (QUICK if quick else FULL)
    t_start = time.perf_counter()
    params = load_example(budget.jailbreak)
    horizon, family = params.horizon_months, params.jailbreak.family
    t0 = time.perf_counter()
    draws = dict(uplift_params.draw_scenarios(params, budget.num_scenarios, seed=budget.seed))
    draw_s = time.perf_counter() - t0
    kw = {"horizon_months": horizon, "family": family, "target": TARGET}

    def ours(n: int, sens: bool) -> SimulationResult:
        return simulate(head(draws, n), sensitivity=sens, **kw)  # the library's chunk size (8192)

    def peer(n: int, sens: bool) -> NumpyResult:
        return simulate_numpy(head(draws, n), sensitivity=sens, chunk=CHUNK, step=FD_STEP, **kw)

    n_all, n_peer, n_fd = budget.num_scenarios, budget.peer_scenarios, budget.fd_scenarios
    # 1. ours on every core at num_scenarios (first call: trace + compile + run)
    all_cores = {
        "forward": _side(time_fn(lambda: ours(n_all, False), repeats=budget.repeats), n_all),
        "sensitivity": _side(time_fn(lambda: ours(n_all, True), repeats=budget.repeats), n_all),
    }
    # 2. one core, interleaved; ours' programs at these sizes are compiled (and their results kept) first, on
    # every core, so the pinned rounds time steady state only
    t0 = time.perf_counter()
    ours_fwd = ours(n_peer, False)
    first_fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours_sens = ours(n_fd, True)
    first_sens = time.perf_counter() - t0
    last: dict[
        str, NumpyResult
    ] = {}  # the peer's results are kept from its timed calls (its FD runs are long)

    def keep(name: str, n: int, sens: bool) -> NumpyResult:
        last[name] = peer(n, sens)
        return last[name]

    with one_core(), single_threaded_blas() as limited:
        fwd = time_interleaved(
            {"ours": lambda: ours(n_peer, False), "numpy": lambda: keep("fwd", n_peer, False)},
            repeats=budget.repeats,
            compile_s={"ours": first_fwd},
        )
        sens = time_interleaved(
            {"ours": lambda: ours(n_fd, True), "numpy": lambda: keep("fd", n_fd, True)},
            repeats=budget.fd_repeats,
            compile_s={"ours": first_sens},
        )
    peer_fwd, peer_fd = last["fwd"], last["fd"]
    one = {
        "forward": {"ours": _side(fwd["ours"], n_peer), "numpy": _side(fwd["numpy"], n_peer)},
        "sensitivity": {"ours": _side(sens["ours"], n_fd), "numpy_fd": _side(sens["numpy"], n_fd)},
    }
    rate = {
        "ours_all_cores_forward": all_cores["forward"]["scenarios_per_s"],
        "ours_all_cores_sensitivity": all_cores["sensitivity"]["scenarios_per_s"],
        "ours_one_core_forward": one["forward"]["ours"]["scenarios_per_s"],
        "ours_one_core_sensitivity": one["sensitivity"]["ours"]["scenarios_per_s"],
        "numpy_forward": one["forward"]["numpy"]["scenarios_per_s"],
        "numpy_fd_sensitivity": one["sensitivity"]["numpy_fd"]["scenarios_per_s"],
    }
    ratios = {
        "forward_one_core": rate["ours_one_core_forward"] / rate["numpy_forward"],
        "sensitivity_one_core": rate["ours_one_core_sensitivity"] / rate["numpy_fd_sensitivity"],
        "forward_all_cores": rate["ours_all_cores_forward"] / rate["numpy_forward"],
        "sensitivity_all_cores": rate["ours_all_cores_sensitivity"] / rate["numpy_fd_sensitivity"],
    }
    outputs = output_agreement(ours_fwd.outputs, peer_fwd.outputs)
    sensitivity = sensitivity_agreement(ours_sens.sensitivity, peer_fd.sensitivity)
    steady_sens_s = all_cores["sensitivity"]["median_s"]
    agreement = {
        "scenarios_outputs": n_peer,
        "scenarios_sensitivity": n_fd,
        "fd_step": FD_STEP,
        "outputs": outputs,
        "harm_max_rel_diff": max(outputs[k]["max_rel_diff"] for k in OUTPUTS if k.startswith("harm.")),
        "outputs_max_rel_diff": max(v["max_rel_diff"] for v in outputs.values()),
        "sensitivity": sensitivity,
        "sensitivity_max_rel_diff": max(v["max_rel_diff"] for v in sensitivity.values()),
        "sensitivity_max_abs_diff": max(v["max_abs_diff"] for v in sensitivity.values()),
        "mean_target_ours": ours_sens.mean[TARGET],
        "mean_target_numpy": peer_fd.mean[TARGET],
        "truncated_ours": ours_sens.truncated,
        "truncated_numpy": peer_fd.truncated,
    }
    payload = {
        "peer": f"numpy {np.__version__} float64 (benchmarks.uplift_numpy), sensitivities by central differences",
        "config": {
            **{k: v for k, v in dataclasses.asdict(budget).items() if k != "jailbreak"},
            "jailbreak": dict(budget.jailbreak) if budget.jailbreak is not None else "example file",
            "params": str(EXAMPLE),
            "family": family,
            "horizon_months": horizon,
            "steps": len(params.steps),
            "sensitivity_inputs": len(peer_fd.sensitivity),
            "fd_evaluations": peer_fd.evaluations,
            "target": TARGET,
            "chunk_numpy": CHUNK,
            "chunk_ours": inspect.signature(simulate).parameters["chunk"].default,
            "cycles": int(draws["jb_z"].shape[1]),
            "xla_no_ynn_in_effect": NO_YNN,
            "openblas_libraries_limited": limited,
            "jax_devices": len(jax.devices()),
        },
        "draw_s": draw_s,
        "ours_all_cores": all_cores,
        "one_core": one,
        "scenarios_per_s": rate,
        "ratios": ratios,
        "agreement": agreement,
        "targets": {
            # None unless the run has 10^6 scenarios (--quick)
            "full_sensitivity_1e6_under_5s": (steady_sens_s < 5.0) if n_all >= 1_000_000 else None,
            "full_sensitivity_seconds_at_num_scenarios": steady_sens_s,
            "ge_10x_numpy_sensitivity_one_core": bool(ratios["sensitivity_one_core"] >= 10.0),
            "ge_10x_numpy_forward_one_core": bool(ratios["forward_one_core"] >= 10.0),
            "ge_10x_numpy_forward_all_cores": bool(ratios["forward_all_cores"] >= 10.0),
        },
        "wall_s": time.perf_counter() - t_start,
    }
    _print_summary(payload)
    return payload


def _print_summary(payload: dict[str, Any]) -> None:
    r, ratio, ag = payload["scenarios_per_s"], payload["ratios"], payload["agreement"]
    one, allc = payload["one_core"], payload["ours_all_cores"]
    rows = [
        ["ours, all cores", "forward", str(allc["forward"]["scenarios"]), format_number(allc["forward"]["median_s"]),
         format_number(r["ours_all_cores_forward"], ".3g"), format_number(allc["forward"]["first_call_s"], ".3g")],
        ["ours, all cores", "sensitivity", str(allc["sensitivity"]["scenarios"]),
         format_number(allc["sensitivity"]["median_s"]), format_number(r["ours_all_cores_sensitivity"], ".3g"),
         format_number(allc["sensitivity"]["first_call_s"], ".3g")],
        ["ours, one core", "forward", str(one["forward"]["ours"]["scenarios"]),
         format_number(one["forward"]["ours"]["median_s"]), format_number(r["ours_one_core_forward"], ".3g"), "-"],
        ["numpy, one core", "forward", str(one["forward"]["numpy"]["scenarios"]),
         format_number(one["forward"]["numpy"]["median_s"]), format_number(r["numpy_forward"], ".3g"), "-"],
        ["ours, one core", "sensitivity", str(one["sensitivity"]["ours"]["scenarios"]),
         format_number(one["sensitivity"]["ours"]["median_s"]), format_number(r["ours_one_core_sensitivity"], ".3g"),
         "-"],
        ["numpy, one core", "central diff.", str(one["sensitivity"]["numpy_fd"]["scenarios"]),
         format_number(one["sensitivity"]["numpy_fd"]["median_s"]), format_number(r["numpy_fd_sensitivity"], ".3g"),
         "-"],
    ]  # fmt: skip
    print_table(["side", "mode", "scenarios", "median s", "scenarios/s", "first call s"], rows)
    print(
        f"draws {payload['draw_s']:.2f} s; ratios ours/numpy: forward {ratio['forward_one_core']:.1f}x (one core), "
        f"{ratio['forward_all_cores']:.1f}x (all cores); sensitivity {ratio['sensitivity_one_core']:.1f}x (one core),"
        f" {ratio['sensitivity_all_cores']:.1f}x (all cores); agreement: outputs max rel "
        f"{ag['outputs_max_rel_diff']:.1e} (harm {ag['harm_max_rel_diff']:.1e}), sensitivities max rel "
        f"{ag['sensitivity_max_rel_diff']:.1e}; targets {payload['targets']}",
        flush=True,
    )


if __name__ == "__main__":
    cli_main(NAME, run)
