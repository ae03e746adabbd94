"""Linear datamodeling score (LDS) of EK-FAC influence, ours (:mod:`jaxsafety.influence`) vs kronfluence, against
the SAME retraining ground truth (issue 19, item 4: "the same LDS within noise").

The problem (one per seed): :func:`jaxsafety.influence.convex_head_problem`, shared with
``tests/influence/test_lds.py``. A random tiny zoo Llama (``d_model`` wide, one block, vocab ``vocab``,
``seq_len`` tokens) is frozen; only its untied LM head ``W [d_model, vocab]`` trains, by softmax regression of the
next token on the final hidden states (summed next-token NLL per document plus ``0.5 * l2 * |W|^2``), a convex
objective that float64 Newton (``newton_steps`` steps from zero) solves exactly on the full set and on
``num_subsets`` random halves: the ground truth ``actual [M, Q]`` of the ``n_query`` query losses. The full-data
head (rounded to float32) is loaded into the model, which is exported with :func:`jaxsafety.models.to_hf` (HF
``LlamaForCausalLM``, ``lm_head`` an ``nn.Linear``) beside ``tokens.npy`` and ``queries.npy`` in a temporary
folder.

Scores ``[Q, N]`` (positive = training on the document lowers the query loss), all with the absolute damping
``l2 / n_train`` on the mean sampled Fisher (the Hessian of the objective is ``N (mean GGN + l2 / N)``, so this is
the exact damping up to the ``1/N`` scale that rank correlations ignore):

- ``exact``: the dense float64 influence ``grad f_q^T H^-1 grad L_n`` (``jax.hessian`` of the objective), the
  first-order ceiling;
- ``ours``: :func:`~jaxsafety.influence.fit_factors` + :func:`~jaxsafety.influence.pairwise_scores`,
  ``InfluenceConfig(layers=("lm_head",), strategy="ekfac", damping=l2 / n_train, num_label_samples=1)``
  (kronfluence also draws one label per position), label key ``jax.random.key(seed)``;
- ``kronfluence``: ``benchmarks/influence_kronfluence_peer.py --modules lm_head --damping l2/n_train`` in its own
  virtualenv ``.venv-kron`` (a float ``ScoreArguments.damping_factor`` is added to the corrected eigenvalues as an
  absolute value, ``None`` would be its heuristic: ``kronfluence/factor/config.py``, 1.0.1), the same summed
  next-token NLL as train loss (labels sampled from the model for the factors) and measurement,
  ``torch.manual_seed(seed)``;
- ``ours_other_labels``: ours with the label key ``fold_in(key(seed), 1)``: the noise floor of the sampled labels;
- ``ours_32_labels``: ours with 32 label samples per document (a reference: the one-label Fisher's noise).

Per seed and method the LDS is the mean over queries of :func:`~jaxsafety.influence.lds.lds` (Spearman over the
subsets between ``-masks @ scores^T`` and ``actual``). The summary gives, per method, the mean and the sample sd
(ddof 1) of the per-seed LDS, the paired per-seed differences (ours - kronfluence, ours - ours_other_labels), and
the verdict ``same_lds_within_noise``: ``|mean ours - mean kronfluence| <= min(sd ours, sd kronfluence)`` (the
seed-to-seed spread, which includes how hard each seed's problem is), and the stricter paired one
``paired_gap_within_label_noise``: ``|mean_s (ours - kronfluence)| <= 2 sd_s(ours - ours_other_labels) /
sqrt(S)``, i.e. the mean per-seed gap is within two standard errors of what redrawing our own labels does. The
Spearman between ours' and kronfluence's score matrices (all ``Q x N`` pairs) is
reported per seed with :func:`benchmarks.influence_kronfluence.compare`.

``python -m benchmarks.influence_lds [--quick]`` writes ``benchmarks/results/influence_lds.json`` (raises if
``.venv-kron`` is missing; create it with the command in ``benchmarks/influence_kronfluence_peer.py``).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks.harness import cli_main
from benchmarks.influence_kronfluence import compare, run_peer
from jaxsafety.config import check, check_range
from jaxsafety.influence import (
    ConvexHeadProblem,
    InfluenceConfig,
    convex_head_problem,
    fit_factors,
    lds,
    pairwise_scores,
)
from jaxsafety.models import to_hf

__all__ = [
    "METHODS",
    "LdsConfig",
    "PeerFn",
    "build_problem",
    "export_problem",
    "influence_config",
    "kronfluence_scores",
    "lds_config",
    "measure",
    "ours_scores",
    "run",
    "summarize",
]

METHODS = ("exact", "ours", "kronfluence", "ours_other_labels", "ours_32_labels")
MANY_LABELS = 32  # ours_32_labels: how much of the gap to ``exact`` is the one-label Fisher's sampling noise


@dataclasses.dataclass(frozen=True)
class LdsConfig:
    """Sizes of the convex problem and the seeds (validated: positive integers, ``vocab >= 2``,
    ``num_subsets >= 2``, ``n_train >= 4``, at least 2 distinct seeds, ``l2 > 0``)."""

    vocab: int = 12
    seq_len: int = 8
    d_model: int = 8
    n_train: int = 256
    n_query: int = 16
    num_subsets: int = 48
    l2: float = 1.0
    newton_steps: int = 10
    chunk_size: int = 64  # ours: examples per jitted chunk; the peer: its factor and train batch size
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    def __post_init__(self) -> None:
        check_range("vocab", self.vocab, ge=2, integer=True)
        for f in ("n_query", "newton_steps", "chunk_size"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check_range("seq_len", self.seq_len, ge=2, integer=True)
        check_range("d_model", self.d_model, ge=2, integer=True)
        check(self.d_model % 2 == 0, "d_model", self.d_model, "even numbers (2 heads)")
        check_range("n_train", self.n_train, ge=4, integer=True)
        check_range("num_subsets", self.num_subsets, ge=2, integer=True)
        check_range("l2", self.l2, gt=0)
        ok = (
            isinstance(self.seeds, tuple)
            and len(self.seeds) >= 2
            and len(set(self.seeds)) == len(self.seeds)
            and all(isinstance(s, int) and s >= 0 for s in self.seeds)
        )
        check(ok, "seeds", self.seeds, "a tuple of at least 2 distinct ints >= 0")

    @property
    def damping(self) -> float:
        """The absolute damping on the mean Fisher that makes the influence the exact ``H^-1`` one: ``l2 / N``."""
        return self.l2 / self.n_train


def lds_config(quick: bool) -> LdsConfig:
    """Full: test_lds.py's size (256 documents, 16 queries, 48 random halves), seeds 0-4. ``quick``: 64
    documents, 4 queries, 16 halves, seeds 0-1."""
    if quick:
        return LdsConfig(n_train=64, n_query=4, num_subsets=16, chunk_size=32, seeds=(0, 1))
    return LdsConfig()


def influence_config(cfg: LdsConfig, num_label_samples: int = 1) -> InfluenceConfig:
    """Ours: EK-FAC on the LM head alone, absolute damping ``l2 / n_train``, one sampled label per position."""
    return InfluenceConfig(
        layers=("lm_head",),
        strategy="ekfac",
        damping=cfg.damping,
        num_label_samples=num_label_samples,
        chunk_size=cfg.chunk_size,
    )


def build_problem(cfg: LdsConfig, seed: int) -> ConvexHeadProblem:
    """The convex problem of ``seed`` at ``cfg``'s sizes: :func:`~jaxsafety.influence.convex_head_problem`
    (its ``exact`` is ``N grad f^T H^-1 grad L``, the scale of ours and kronfluence with damping ``l2 / N``)."""
    return convex_head_problem(
        seed,
        vocab=cfg.vocab,
        seq_len=cfg.seq_len,
        d_model=cfg.d_model,
        n_train=cfg.n_train,
        n_query=cfg.n_query,
        num_subsets=cfg.num_subsets,
        l2=cfg.l2,
        newton_steps=cfg.newton_steps,
    )


def export_problem(problem: ConvexHeadProblem, model_dir: str | os.PathLike) -> Path:
    """Write the full-data model as a HF ``LlamaForCausalLM`` (:func:`to_hf`) plus ``tokens.npy`` / ``queries.npy``
    (int32) to ``model_dir``: the peer's inputs."""
    model_dir = to_hf(problem.model, model_dir)
    np.save(model_dir / "tokens.npy", problem.tokens.astype(np.int32))
    np.save(model_dir / "queries.npy", problem.queries.astype(np.int32))
    return model_dir


def ours_scores(
    problem: ConvexHeadProblem, config: InfluenceConfig, key: jax.Array
) -> tuple[np.ndarray, float]:
    """Our EK-FAC scores ``[Q, N]`` and the seconds for ``fit_factors`` + ``pairwise_scores``."""
    t0 = time.perf_counter()
    train = {"tokens": problem.tokens}
    factors = fit_factors(problem.model, train, config, key)
    scores = pairwise_scores(problem.model, factors, {"tokens": problem.queries}, train, config)
    scores = np.asarray(jax.block_until_ready(scores))
    return scores, time.perf_counter() - t0


# the peer: (config, input folder, output folder, seed) -> (scores [Q, N], its timings.json record)
PeerFn = Callable[[LdsConfig, Path, Path, int], tuple[np.ndarray, dict[str, Any]]]


def kronfluence_scores(
    cfg: LdsConfig, model_dir: Path, out_dir: Path, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """kronfluence's EK-FAC scores of ``lm_head`` with absolute damping ``cfg.damping`` (one untimed-free run on
    one torch thread, ``torch.manual_seed(seed)``), by ``influence_kronfluence_peer.py`` in ``.venv-kron``; its
    ``scores.npy`` and ``timings.json`` record (with ``wall_s``: the subprocess, interpreter start included)."""
    args = [
        f"--seed={seed}",
        f"--damping={cfg.damping!r}",
        "--modules",
        "lm_head",
        "--threads=1",
        "--repeats=1",
        "--warmup=0",
        f"--factor-batch={cfg.chunk_size}",
        f"--train-batch={cfg.chunk_size}",
        f"--query-batch={cfg.n_query}",
    ]
    t0 = time.perf_counter()
    scores, record = run_peer(model_dir, out_dir, args)
    record["wall_s"] = time.perf_counter() - t0
    return scores, record


def _mean_sd(xs: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(xs)), "sd": float(statistics.stdev(xs)) if len(xs) > 1 else 0.0}


def summarize(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds of each method's LDS, the paired differences, the score-matrix Spearman, and the
    verdict (module docstring) from the ``per_seed`` records (``lds_mean`` per method, ``agreement``)."""
    lds_by = {m: [s["lds_mean"][m] for s in per_seed] for m in METHODS}
    stats = {m: _mean_sd(x) for m, x in lds_by.items()}
    diff = {
        "ours_minus_kronfluence": _mean_sd([a - b for a, b in zip(lds_by["ours"], lds_by["kronfluence"])]),
        "ours_minus_ours_other_labels": _mean_sd(
            [a - b for a, b in zip(lds_by["ours"], lds_by["ours_other_labels"])]
        ),
    }
    gap = abs(stats["ours"]["mean"] - stats["kronfluence"]["mean"])
    spread = min(stats["ours"]["sd"], stats["kronfluence"]["sd"])
    paired_gap = abs(diff["ours_minus_kronfluence"]["mean"])
    label_se = diff["ours_minus_ours_other_labels"]["sd"] / np.sqrt(len(per_seed))
    rho = [s["agreement"]["spearman_all"] for s in per_seed]
    return {
        "lds": stats,
        "paired_differences": diff,
        "spearman_ours_vs_kronfluence": {**_mean_sd(rho), "min": float(min(rho))},
        "spearman_ours_vs_ours_other_labels": _mean_sd([s["agreement_other_labels"] for s in per_seed]),
        "lds_gap_ours_kronfluence": gap,
        "seed_spread": spread,
        "same_lds_within_noise": bool(gap <= spread),
        "paired_gap": paired_gap,
        "label_noise_standard_error": float(label_se),
        "paired_gap_within_label_noise": bool(paired_gap <= 2 * label_se),
        "spearman_at_least_0.95": bool(min(rho) >= 0.95),
    }


def measure(
    cfg: LdsConfig, peer: PeerFn = kronfluence_scores, keep_arrays: bool = False
) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """Every seed: build the problem, export it, score it four ways, LDS against its retraining. Returns the JSON
    payload and, with ``keep_arrays``, per seed ``{masks, actual, exact, ours, kronfluence, ours_other_labels}``
    (else an empty list)."""
    config = influence_config(cfg)
    per_seed, arrays = [], []
    peer_record: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in cfg.seeds:
            problem = build_problem(cfg, seed)
            model_dir = export_problem(problem, Path(tmp) / f"seed{seed}" / "inputs")
            key = jax.random.key(seed)
            ours, ours_s = ours_scores(problem, config, key)
            other, _ = ours_scores(problem, config, jax.random.fold_in(key, 1))
            many, _ = ours_scores(problem, influence_config(cfg, MANY_LABELS), key)
            theirs, peer_record = peer(cfg, model_dir, Path(tmp) / f"seed{seed}" / "peer", seed)
            scores = {
                "exact": problem.exact,
                "ours": ours,
                "kronfluence": theirs,
                "ours_other_labels": other,
                "ours_32_labels": many,
            }
            per_query = {
                m: np.asarray(lds(s, problem.masks, problem.actual)).tolist() for m, s in scores.items()
            }
            agreement = compare(ours, theirs)
            per_seed.append(
                {
                    "seed": seed,
                    "lds_mean": {m: float(np.mean(x)) for m, x in per_query.items()},
                    "lds_per_query": per_query,
                    "agreement": {k: v for k, v in agreement.items() if k != "spearman_per_query"},
                    "agreement_other_labels": compare(ours, other)["spearman_all"],
                    "spearman_exact_vs_ours": compare(problem.exact, ours)["spearman_all"],
                    "spearman_exact_vs_kronfluence": compare(problem.exact, theirs)["spearman_all"],
                    "newton_grad_max": problem.grad_max,
                    "actual_query_loss_range": [float(problem.actual.min()), float(problem.actual.max())],
                    "retrain_s": problem.retrain_s,
                    "ours_s": ours_s,
                    "peer_s": peer_record.get("total_s"),
                    "peer_wall_s": peer_record.get("wall_s"),
                }
            )
            if keep_arrays:
                arrays.append({"masks": problem.masks, "actual": problem.actual, **scores})
            print(
                f"[influence_lds] seed {seed}: LDS "
                + ", ".join(f"{m} {v:.3f}" for m, v in per_seed[-1]["lds_mean"].items())
                + f"; Spearman ours/kronfluence {agreement['spearman_all']:.4f}",
                flush=True,
            )
    payload = {
        "settings": {**dataclasses.asdict(cfg), "damping": cfg.damping},
        "ours_config": {
            "layers": list(config.layers),
            "strategy": config.strategy,
            "damping": config.damping,
            "num_label_samples": config.num_label_samples,
            "chunk_size": config.chunk_size,
        },
        "peer_config": {
            k: peer_record.get(k)
            for k in ("peer", "strategy", "tracked_modules", "damping", "damping_semantics")
        },
        "peer_versions": peer_record.get("versions"),
        "methods": list(METHODS),
        "per_seed": per_seed,
        "summary": summarize(per_seed),
    }
    return payload, arrays


def run(quick: bool = False) -> dict[str, Any]:
    """The benchmark at :func:`lds_config` size against kronfluence; prints the LDS summary."""
    t0 = time.perf_counter()
    payload, _ = measure(lds_config(quick))
    payload["total_s"] = time.perf_counter() - t0
    s = payload["summary"]
    print(
        "[influence_lds] LDS mean +- sd over seeds: "
        + ", ".join(f"{m} {v['mean']:.3f} +- {v['sd']:.3f}" for m, v in s["lds"].items())
        + f"; Spearman ours/kronfluence {s['spearman_ours_vs_kronfluence']['mean']:.4f}; same LDS within noise: "
        f"{s['same_lds_within_noise']}, paired gap {s['paired_gap']:.4f} within 2 label-noise SE "
        f"({2 * s['label_noise_standard_error']:.4f}): {s['paired_gap_within_label_noise']} "
        f"({payload['total_s']:.0f} s)"
    )
    return payload


if __name__ == "__main__":
    cli_main("influence_lds", run)
