"""EK-FAC influence on a tiny GPT-2: ours (:mod:`jaxsafety.influence`) vs kronfluence (issue 19, item 4).

What is compared. One random HF GPT-2 (``n_embd`` wide, ``n_layer`` blocks, vocab ``vocab``, ``n_positions``
positions, dropout 0) and random token documents are written once by the peer's own
:func:`benchmarks.influence_kronfluence_peer.make_random_inputs` (``n_train`` training documents and
``n_query`` queries of ``seq_len`` tokens) into a temporary folder; both sides read that folder:

- ours: :func:`jaxsafety.models.from_hf` on the folder, :func:`~jaxsafety.influence.fit_factors` then
  :func:`~jaxsafety.influence.pairwise_scores` with ``InfluenceConfig(strategy="ekfac", include_bias=True,
  damping_factor=0.1)`` on :func:`~jaxsafety.influence.mlp_layers` (every block's MLP up and down projection,
  bias as an extra input row), ``chunk_size`` examples per jitted chunk;
- kronfluence: ``benchmarks/influence_kronfluence_peer.py`` in its own virtualenv ``.venv-kron`` (install
  command in that file), run as a subprocess: ``Analyzer.fit_all_factors`` (strategy ekfac) +
  ``compute_pairwise_scores`` on the same MLP projections (``c_fc``, ``c_proj`` as ``nn.Linear`` with bias),
  damping ``None`` = its heuristic ``0.1 x mean(Lambda)`` per module, i.e. the same damping rule as ours.

Same quantity on both sides (the sign convention, checked: :func:`compare` reports the fraction of pairs with
equal signs and Spearman would be near -1 if one side were flipped): ``score[q, t] = grad f_q^T P grad L_t``
with ``f_q`` the query's summed next-token NLL, ``L_t`` the training document's summed next-token NLL and
``P`` the damped inverse EK-FAC curvature fitted on labels sampled from the model (the Fisher). The sampled
labels differ (jax vs torch RNG), so the scores agree up to the sampling noise of the factors, not to float
precision; that noise floor is measured too (``agreement_ours_vs_ours_other_labels``: ours against ours with
another label key).

How it is timed. ``rounds`` rounds, interleaved: ours, then the peer, then ours, ... so the machine's load
hits both alike. Ours: one untimed call first (it compiles every jitted chunk function; its time minus the
steady median is ``compile_s``), then per round ``fit_factors`` (``factors_s``) and ``pairwise_scores``
(``scores_s``) each ended by ``jax.block_until_ready``, once on all cores and once pinned to one core
(``OURS_MODES``; the faster median total is ours' figure, as the peer's faster thread count is its; on a busy
machine a second thread often loses), plus a K-FAC fit (``kfac_factors_s``: pass 1 + ``eigh``; EK-FAC's
eigenvalue pass is the rest), with ``OPENBLAS_NUM_THREADS=1`` / every loaded OpenBLAS limited to one thread
(the LAPACK ``eigh`` contends with XLA's threads otherwise). The peer: per round one subprocess timing one run
(after one warm-up run) at each torch thread count in ``peer_threads``; its OWN ``timings.json`` figures are
used, not the subprocess wall time (which holds python, torch and transformers start-up). Per thread count the
median over rounds is taken and the faster thread count is the peer's figure. Ratios are peer time / our time
(>1: ours faster) for factors, scores and their total. The os load average is recorded before and after;
``loaded`` is true when the 1-minute load average exceeded ``0.5 x cpu_count`` at either point (then the
timings are not a fair ratio: the coordinator's other work was running).

``python -m benchmarks.influence_kronfluence [--quick]`` writes
``benchmarks/results/influence_kronfluence.json`` (raises if ``.venv-kron`` is missing).
"""

from __future__ import annotations

import os

# before numpy / jax load OpenBLAS when run as a script (``single_threaded_blas`` covers one already loaded)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import contextlib
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from scipy import stats

from benchmarks import influence_kronfluence_peer as peer_inputs
from benchmarks.harness import cli_main, one_core, single_threaded_blas
from jaxsafety.config import check, check_range
from jaxsafety.influence import Factors, InfluenceConfig, fit_factors, mlp_layers, pairwise_scores
from jaxsafety.models import from_hf

__all__ = [
    "KRON_PYTHON",
    "PEER_SCRIPT",
    "BenchConfig",
    "PeerFn",
    "bench_config",
    "compare",
    "influence_config",
    "kronfluence_peer",
    "load_ours",
    "measure",
    "ours_round",
    "run",
    "spearman",
    "write_inputs",
]

REPO = Path(__file__).resolve().parent.parent
KRON_PYTHON = REPO / ".venv-kron" / "bin" / "python"
PEER_SCRIPT = Path(__file__).resolve().parent / "influence_kronfluence_peer.py"
KRON_INSTALL = (
    "python3 -m venv .venv-kron && .venv-kron/bin/pip install torch==2.13.0 kronfluence==1.0.1 "
    "transformers==5.25.0 safetensors numpy && .venv-kron/bin/pip uninstall -y torchvision"
)
DAMPING_FACTOR = 0.1
# ours is timed with XLA's thread pool on every core and pinned to one core (harness ``one_core``), the faster
# taken, as the peer's faster of 1 and 2 torch threads is
OURS_MODES = ("all_cores", "one_core")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Sizes of one benchmark row (validated: positive integers, ``n_embd`` a multiple of ``n_head``,
    ``2 <= seq_len <= n_positions``)."""

    n_embd: int
    n_layer: int
    n_head: int
    vocab: int
    n_positions: int
    n_train: int
    n_query: int
    seq_len: int
    rounds: int  # interleaved timed rounds (ours, peer)
    chunk_size: int  # ours: examples per jitted chunk; the peer: factor and train batch size
    seed: int = 0
    peer_threads: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        for f in ("n_embd", "n_layer", "n_head", "vocab", "n_positions", "n_train", "n_query"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        for f in ("rounds", "chunk_size"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check_range("seed", self.seed, ge=0, integer=True)
        check(self.n_embd % self.n_head == 0, "n_embd", self.n_embd, f"multiples of n_head ({self.n_head})")
        check_range("seq_len", self.seq_len, ge=2, le=self.n_positions, integer=True)
        check(
            len(self.peer_threads) >= 1 and all(isinstance(t, int) and t >= 1 for t in self.peer_threads),
            "peer_threads",
            self.peer_threads,
            "a non-empty tuple of positive ints",
        )

    def model_sizes(self) -> dict[str, int]:
        """The keyword arguments of :func:`benchmarks.influence_kronfluence_peer.make_random_inputs`."""
        keys = ("n_embd", "n_layer", "n_head", "vocab", "n_positions", "n_train", "n_query", "seq_len")
        return {k: getattr(self, k) for k in keys}


def bench_config(quick: bool) -> BenchConfig:
    """``quick``: GPT-2 1 layer x 32 wide, vocab 64, 32 train docs + 4 queries of 16 tokens, 1 round.
    Full (the issue's size): 2 layers x 128 wide, vocab 512, 64 positions, 512 train docs + 16 queries of 64
    tokens, 3 rounds."""
    if quick:
        return BenchConfig(32, 1, 2, 64, 16, n_train=32, n_query=4, seq_len=16, rounds=1, chunk_size=16)
    return BenchConfig(128, 2, 4, 512, 64, n_train=512, n_query=16, seq_len=64, rounds=3, chunk_size=64)


def influence_config(strategy: str = "ekfac", chunk_size: int = 64) -> InfluenceConfig:
    """Our settings matched to the peer's: bias as an extra input row, damping 0.1 x mean eigenvalue per
    layer."""
    return InfluenceConfig(
        strategy=strategy, include_bias=True, damping_factor=DAMPING_FACTOR, chunk_size=chunk_size
    )


def write_inputs(bc: BenchConfig, model_dir: str | os.PathLike) -> Path:
    """The shared inputs (HF GPT-2 ``config.json`` + ``model.safetensors``, ``tokens.npy``, ``queries.npy``),
    written by the peer's own function so both sides read identical files."""
    return peer_inputs.make_random_inputs(model_dir, seed=bc.seed, **bc.model_sizes())


def load_ours(model_dir: str | os.PathLike) -> tuple[Any, np.ndarray, np.ndarray]:
    """Our model (:func:`from_hf` of the folder), ``tokens [n_train, T]`` and ``queries [n_query, T]``."""
    model_dir = Path(model_dir)
    return from_hf(model_dir), np.load(model_dir / "tokens.npy"), np.load(model_dir / "queries.npy")


def ours_round(
    model: Any, tokens: np.ndarray, queries: np.ndarray, config: InfluenceConfig, key: jax.Array
) -> tuple[np.ndarray, Factors, float, float]:
    """One timed run of ours: ``(scores [n_query, n_train], factors, factors_s, scores_s)``, each phase ended
    by ``block_until_ready``."""
    check(config.layers is None, "config.layers", config.layers, "None (every MLP layer, as the peer tracks)")
    t0 = time.perf_counter()
    factors = jax.block_until_ready(fit_factors(model, {"tokens": tokens}, config, key))
    t1 = time.perf_counter()
    scores = jax.block_until_ready(
        pairwise_scores(model, factors, {"tokens": queries}, {"tokens": tokens}, config)
    )
    t2 = time.perf_counter()
    return np.asarray(scores), factors, t1 - t0, t2 - t1


# the peer: (bench config, input folder, output folder) -> (scores [n_query, n_train], timings.json record)
PeerFn = Callable[[BenchConfig, Path, Path], tuple[np.ndarray, dict[str, Any]]]


def run_peer(model_dir: Path, out_dir: Path, args: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Run ``influence_kronfluence_peer.py --model-dir --out *args`` in ``.venv-kron`` (raises if the venv is
    missing or the peer fails); its ``scores.npy`` and ``timings.json`` record."""
    if not KRON_PYTHON.exists():
        raise RuntimeError(f"kronfluence peer venv {KRON_PYTHON} is missing: create it with `{KRON_INSTALL}`")
    cmd = [str(KRON_PYTHON), str(PEER_SCRIPT), f"--model-dir={model_dir}", f"--out={out_dir}", *args]
    # the peer's own venv and thread settings: none of ours (PYTHONPATH, our one-thread OpenBLAS) leaks in
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "OPENBLAS_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"kronfluence peer failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return np.load(out_dir / "scores.npy"), json.loads((out_dir / "timings.json").read_text())


def kronfluence_peer(bc: BenchConfig, model_dir: Path, out_dir: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Run ``influence_kronfluence_peer.py`` in ``.venv-kron`` once (one warm-up + one timed run per thread
    count of ``bc.peer_threads``); its ``scores.npy`` and ``timings.json`` (raises if the venv is missing)."""
    args = [
        f"--seed={bc.seed}",
        "--damping=heuristic",
        "--threads",
        *map(str, bc.peer_threads),
        "--repeats=1",
        "--warmup=1",
        f"--factor-batch={bc.chunk_size}",
        f"--train-batch={bc.chunk_size}",
        f"--query-batch={bc.n_query}",
    ]
    return run_peer(model_dir, out_dir, args)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equal-size arrays (flattened; ties get average ranks)."""
    a, b = np.ravel(a), np.ravel(b)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"a and b must have the same size >= 2, got {a.size} and {b.size}")
    return float(stats.spearmanr(a, b).statistic)


def compare(ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    """Agreement of two ``[n_query, n_train]`` score matrices: Spearman over all pairs and per query (median,
    min), Pearson, the fraction of pairs with the same sign, and the least-squares scale ``theirs ~ c *
    ours``."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape or ours.ndim != 2:
        raise ValueError(
            f"scores must be two equal [n_query, n_train] arrays, got {ours.shape} and {theirs.shape}"
        )
    per_query = [spearman(o, t) for o, t in zip(ours, theirs, strict=True)]
    return {
        "spearman_all": spearman(ours, theirs),
        "spearman_per_query": per_query,
        "spearman_per_query_median": float(np.median(per_query)),
        "spearman_per_query_min": float(np.min(per_query)),
        "pearson_all": float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]),
        "same_sign_fraction": float(np.mean(np.sign(ours) == np.sign(theirs))),
        "scale_theirs_over_ours": float(np.sum(ours * theirs) / np.sum(ours * ours)),
    }


def _load() -> list[float]:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def measure(
    bc: BenchConfig, peer: PeerFn = kronfluence_peer, config: InfluenceConfig | None = None
) -> dict[str, Any]:
    """Write the inputs, run ours and ``peer`` interleaved for ``bc.rounds`` rounds, compare the last round's
    scores; the JSON payload (module docstring). ``config``: ours (default :func:`influence_config`)."""
    config = config or influence_config(chunk_size=bc.chunk_size)
    key = jax.random.key(bc.seed)
    load = {"start": _load()}
    ours_t: dict[str, dict[str, list[float]]] = {m: {"factors_s": [], "scores_s": []} for m in OURS_MODES}
    kfac_s: list[float] = []
    peer_rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_inputs(bc, Path(tmp) / "inputs")
        model, tokens, queries = load_ours(model_dir)
        with single_threaded_blas() as n_blas:
            t0 = time.perf_counter()
            ours_round(model, tokens, queries, config, key)  # compiles every chunk function
            first_s = time.perf_counter() - t0
            for r in range(bc.rounds):
                for mode in OURS_MODES:
                    with one_core() if mode == "one_core" else contextlib.nullcontext():
                        ours_scores, factors, fac, sco = ours_round(model, tokens, queries, config, key)
                    ours_t[mode]["factors_s"].append(fac)
                    ours_t[mode]["scores_s"].append(sco)
                if config.strategy == "ekfac":  # where the factor time goes: a K-FAC fit is pass 1 + eigh
                    t0 = time.perf_counter()
                    kfac = dataclasses.replace(config, strategy="kfac")
                    jax.block_until_ready(fit_factors(model, {"tokens": tokens}, kfac, key))
                    kfac_s.append(time.perf_counter() - t0)
                peer_scores, record = peer(bc, model_dir, Path(tmp) / f"peer{r}")
                peer_rounds.append(record)
            # the sampling-noise floor: ours again with other sampled labels (a different key)
            other = ours_round(model, tokens, queries, config, jax.random.fold_in(key, 1))[0]
        load["end"] = _load()
    modes = {}
    for mode, t in ours_t.items():
        fac, sco = _median(t["factors_s"]), _median(t["scores_s"])
        modes[mode] = {**t, "factors_median_s": fac, "scores_median_s": sco, "total_median_s": fac + sco}
    best_mode = min(modes, key=lambda m: modes[m]["total_median_s"])
    ours_res = {
        "modes": modes,
        "best_mode": best_mode,
        **modes[best_mode],
        "first_call_s": first_s,
        "compile_s": first_s - modes["all_cores"]["total_median_s"],
        "kfac_factors_s": kfac_s,
        "kfac_factors_median_s": _median(kfac_s) if kfac_s else None,
    }
    per_threads = {}
    for n in map(str, bc.peer_threads):
        fac = [rec["threads"][n]["factors_median_s"] for rec in peer_rounds]
        sco = [rec["threads"][n]["scores_median_s"] for rec in peer_rounds]
        per_threads[n] = {
            "factors_s": fac,
            "scores_s": sco,
            "factors_median_s": _median(fac),
            "scores_median_s": _median(sco),
            "total_median_s": _median(fac) + _median(sco),
        }
    best = min(per_threads, key=lambda n: per_threads[n]["total_median_s"])
    peer_res = {"threads": per_threads, "best_threads": int(best), **per_threads[best]}
    ratios = {
        k.removesuffix("_median_s"): peer_res[k] / ours_res[k]
        for k in ("factors_median_s", "scores_median_s", "total_median_s")
    }
    agreement = compare(ours_scores, peer_scores)
    cpus = os.cpu_count() or 1
    loaded = any(x and x[0] > 0.5 * cpus for x in load.values())
    last = peer_rounds[-1]
    return {
        "settings": dataclasses.asdict(bc),
        "ours_config": {
            "strategy": config.strategy,
            "layers": list(mlp_layers(model)),
            "include_bias": config.include_bias,
            "damping_factor": config.damping_factor,
            "damping": config.damping,
            "num_label_samples": config.num_label_samples,
            "chunk_size": config.chunk_size,
            "damping_per_layer": {
                n: None if f.damping is None else float(f.damping) for n, f in factors.layers.items()
            },
            "openblas_num_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
            "openblas_libraries_limited_to_1_thread": n_blas,
        },
        "peer_config": {
            k: last.get(k)
            for k in (
                "peer",
                "strategy",
                "tracked_modules",
                "damping",
                "damping_semantics",
                "damping_per_module",
            )
        },
        "peer_versions": last.get("versions"),
        "peer_machine": last.get("machine"),
        "sign_convention": "both: grad f_q^T P grad L_t, f and L summed next-token NLL (positive = helpful)",
        "ours": ours_res,
        "peer": peer_res,
        "peer_rounds": peer_rounds,
        "speed_ratio_peer_over_ours": ratios,
        "agreement": agreement,
        "agreement_ours_vs_ours_other_labels": compare(ours_scores, other),
        "load_avg": load,
        "loaded": loaded,
        "python": sys.version.split()[0],
    }


def run(quick: bool = False) -> dict[str, Any]:
    """The benchmark at :func:`bench_config` size against kronfluence; prints the agreement and ratios."""
    res = measure(bench_config(quick))
    a, r = res["agreement"], res["speed_ratio_peer_over_ours"]
    print(
        f"[influence_kronfluence] Spearman all {a['spearman_all']:.4f}, per-query median "
        f"{a['spearman_per_query_median']:.4f}; kronfluence/ours time: factors {r['factors']:.2f}x, scores "
        f"{r['scores']:.2f}x, total {r['total']:.2f}x (loaded={res['loaded']}, load {res['load_avg']})"
    )
    return res


if __name__ == "__main__":
    cli_main("influence_kronfluence", run)
