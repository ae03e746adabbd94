"""Iterated RLHF on the arithmetic task: reward over-optimisation (Gao et al. 2022) and how iteration mitigates it
(Wolf, Kirk, Musolesi 2025, arXiv 2505.18126), small and offline.

The policy is an arithmetic-trained GPT-2 fine-tuned on the task's instruction/response rows (the SFT model: the
initial policy and the KL reference, both cached). The gold reward is programmatic (:mod:`jaxsafety.rlhf.task`);
it labels pairs of policy samples with Bradley-Terry noise, and small proxy reward models (an ensemble of
``rm_members`` members per round, trained in one vmapped jit) learn from those labels. Each round: collect pairs from
the current policy -> transfer the preference data -> train the round's RM -> best-of-n from SFT for ``n`` on a
geometric grid and LM PPO from the round's init against the combined proxy; gold and proxy are measured against
``d = sqrt(KL(policy || SFT))`` and Gao et al.'s forms fitted. A cell of the ``grid`` is
``transfer/reward_fn/policy_init`` (the paper's baseline: ``concat/latest/sft``). Thin script over
:func:`jaxsafety.rlhf.pipeline.run_iterated_rlhf`.

    python experiments/iterated_rlhf.py --smoke        # under 2 minutes on CPU (models cached after a first run)
    python experiments/iterated_rlhf.py                # the default grid, 4 rounds, seeds 0 and 1 vmapped
    python experiments/iterated_rlhf.py --overopt      # round 1 only, 8 seeds, stronger proxy: RL gold peaks
    python experiments/iterated_rlhf.py --seed 2 --num-seeds 1 --run-name s2     # more seeds, elsewhere ...
    python experiments/iterated_rlhf.py --merge runs/iterated_rlhf/<run> runs/iterated_rlhf/s2   # ... pooled
    tensorboard --logdir runs

The ``num_seeds`` runs of a cell are vmapped together (pair sampling, RM training - runs x members in one jit -,
PPO steps, evaluations); every number is their mean, ``per_seed`` in ``results.json`` holds each run's own.

Writes ``runs/iterated_rlhf/<run>/``: TensorBoard scalars ``<cell>/iter<k>/{rl,bon}/{gold,proxy,kl,d,gap}`` (per
PPO evaluation step / per ``n``; the mean over runs, each run's under ``<cell>/seed<s>/``), ``results.json``
(per cell and iteration: final gold, proxy, gap, KL, gold at matched KL, the fits with R^2, the curves), ``overoptimisation.png`` (round 1 of the first cell: gold and proxy vs
``d`` with the fits, best-of-n and RL) and ``iterations.png`` (gold-proxy gap and gold at matched KL per round, per
cell); prints a table and the cells ranked by their final-round gap.

Measured (AMD EPYC, 2 cores, beside other runs; README "Reward models, LM PPO and iterated RLHF" has the tables):
the full default takes 91 min. ``--overopt`` (8 seeds, 26 min): best-of-n gold +0.16 at n = 4 falls to +0.02 at
n = 32 while the proxy climbs to 3.15 (fit R^2 1.00); the policy gradient's proxy rises to +1.18 while mean gold
peaks at +0.01 and falls to -0.09 (R^2 0.95; 7 of 8 seeds peak). Over rounds the concatenated-data baseline's gap
falls 1.53 -> 0.78 -> 0.48 -> 0.49 while take-last ends at 2.6 and a fixed-size mix at 1.1-2.4.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxsafety.config import check, check_choice, check_range, format_number, parse_cli, print_table
from jaxsafety.rl.lm_ppo import LMPPOConfig
from jaxsafety.rlhf import IteratedRLHFConfig, RLHFTaskConfig, predict_overoptimization
from jaxsafety.rlhf.iterate import INITS, REWARD_FNS, TRANSFERS
from jaxsafety.rlhf.pipeline import StudyConfig, mean_over_seeds, run_iterated_rlhf
from jaxsafety.train import FinetuneConfig, progress
from jaxsafety.train.experiment import Run, start_run
from jaxsafety.train.pretrained import ArithmeticLMConfig
from jaxsafety.xla_flags import prefer_fast_compile

BASELINE = "concat/latest/sft"
# the grid's transfer names: the library's, and sample_mix drawing at most one pair per prompt
GRID_TRANSFERS = (*TRANSFERS, "sample_mix_unique")
DEFAULT_GRID = (
    BASELINE,
    "last/latest/sft",
    "sample_mix/latest/sft",
    "sample_mix_unique/latest/sft",
    "concat/ensemble_mean/sft",
    "concat/worst_case/sft",
    "concat/weight_average/sft",
    "concat/latest/continue",
    "concat/latest/liti",
)


@dataclasses.dataclass(frozen=True)
class IteratedRLHFExperiment:
    """The study (``study``: policy, task, RMs, PPO, measurements) and the grid of iterated-RLHF options.

    ``grid``: cells ``"transfer/reward_fn/policy_init"``; the other fields are shared by every cell
    (:class:`jaxsafety.rlhf.IteratedRLHFConfig`; ``num_seeds`` runs from ``seed`` on, vmapped together, each
    with ``rm_members`` RMs per round). A grid transfer ``sample_mix_unique`` is ``sample_mix`` with at most one
    pair per prompt (``repeat_prompts=False``). ``merge``: instead of computing, pool the runs of earlier results
    (run directories or ``results.json`` paths of this study; e.g. seeds or cells run on several machines) per
    grid cell and report their mean."""

    run_name: str | None = None
    out_dir: str = "runs"
    study: StudyConfig = StudyConfig()
    grid: tuple[str, ...] = DEFAULT_GRID
    num_iterations: int = 4
    prompts_per_round: int = 1920
    label_temperature: float = 0.1
    liti_eta: float = 0.5
    rm_members: int = 2
    num_seeds: int = 2
    seed: int = 0
    merge: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check(len(self.grid) >= 1, "grid", self.grid, "non-empty tuples of 'transfer/reward_fn/policy_init'")
        for c in self.grid:
            parts = c.split("/")
            check(len(parts) == 3, "grid", c, "'transfer/reward_fn/policy_init' strings")
            check_choice("grid transfer", parts[0], GRID_TRANSFERS)
            check_choice("grid reward_fn", parts[1], REWARD_FNS)
            check_choice("grid policy_init", parts[2], INITS)
        check(len(set(self.grid)) == len(self.grid), "grid", self.grid, "tuples without repeated cells")
        check_range("prompts_per_round", self.prompts_per_round, ge=2, integer=True)
        check(
            self.prompts_per_round <= self.study.task.num_prompts - self.study.eval_prompts,
            "prompts_per_round",
            self.prompts_per_round,
            "integers <= the training prompts (study.task.num_prompts - study.eval_prompts)",
        )
        self.cell(self.grid[0])  # validates the shared fields (ConfigError names them)
        for path in self.merge:
            check(_results_path(path).is_file(), "merge", path, "run directories or results.json files")
        if self.merge:
            pooled_runs(self)  # the merged results' cells and seeds are checked before anything is written

    def cell(self, name: str) -> IteratedRLHFConfig:
        """The :class:`IteratedRLHFConfig` of grid cell ``name``."""
        transfer, reward_fn, init = name.split("/")
        unique = transfer == "sample_mix_unique"
        return IteratedRLHFConfig(
            num_iterations=self.num_iterations,
            prompts_per_round=self.prompts_per_round,
            label_temperature=self.label_temperature,
            transfer="sample_mix" if unique else transfer,
            repeat_prompts=not unique,
            reward_fn=reward_fn,
            policy_init=init,
            liti_eta=self.liti_eta,
            rm_members=self.rm_members,
            num_seeds=self.num_seeds,
            seed=self.seed,
        )


SMOKE = IteratedRLHFExperiment(
    study=StudyConfig(
        lm=ArithmeticLMConfig(d_model=32, n_layers=1, n_heads=2, max_operand=9, steps=150),
        task=RLHFTaskConfig(num_prompts=128, max_operand=9, response_len=4),
        sft=FinetuneConfig(steps=20, batch_size=16, chunk_steps=20),
        rm_steps=40,
        rm_batch=16,
        rm_d_model=16,
        ppo=LMPPOConfig(lr=1e-3, kl_coef=0.02, num_samples=2, update_epochs=1),
        ppo_steps=6,
        ppo_batch=8,
        eval_every=2,
        eval_prompts=32,
        bon_ns=(1, 2, 4, 8),
        bon_prompts=16,
        kl_match=0.5,
    ),
    grid=(BASELINE, "last/ensemble_mean/continue"),
    num_iterations=2,
    prompts_per_round=32,
)

# one round of the baseline, 8 seeds, with a stronger proxy (RM 3000 steps) and a less noisy policy gradient (128
# prompts per step at lr 3e-5): the Gao et al. single-round picture, RL gold peaking before it falls
OVEROPT = IteratedRLHFExperiment(
    study=dataclasses.replace(
        StudyConfig(),
        rm_steps=3000,
        ppo_batch=128,
        ppo=dataclasses.replace(StudyConfig().ppo, lr=3e-5),
    ),
    grid=(BASELINE,),
    num_iterations=1,
    num_seeds=8,
)


def _results_path(path: str) -> Path:
    p = Path(path)
    return p / "results.json" if p.is_dir() else p


def pooled_runs(cfg: IteratedRLHFExperiment) -> dict[str, tuple[list[dict[str, Any]], list[int]]]:
    """Per grid cell, ``(runs, seeds)`` of every ``cfg.merge`` result that has the cell (a result of one unbatched
    run is that run). Raises ``ConfigError`` when no result has a cell of the grid or two results give the same
    seed for a cell."""
    pooled: dict[str, tuple[list[dict[str, Any]], list[int]]] = {name: ([], []) for name in cfg.grid}
    for path in cfg.merge:
        res = json.loads(_results_path(path).read_text())
        for name in cfg.grid:
            cell = res["cells"].get(name)
            if cell is None:
                continue
            pooled[name][0].extend(cell.get("per_seed", [cell]))
            pooled[name][1].extend(cell.get("seeds", [res.get("config", {}).get("seed", 0)]))
    for name, (_, ss) in pooled.items():
        check(len(ss) > 0, "merge", cfg.merge, f"results of which at least one has the cell {name}")
        check(len(set(ss)) == len(ss), "merge", cfg.merge, f"results of distinct seeds (cell {name}: {ss})")
    return pooled


def merge_runs(cfg: IteratedRLHFExperiment) -> dict[str, Any]:
    """Per grid cell, the :func:`pooled_runs` averaged (:func:`jaxsafety.rlhf.pipeline.mean_over_seeds`)."""
    return {
        name: {**mean_over_seeds(runs, cfg.study.kl_match), "seeds": seeds, "per_seed": runs}
        for name, (runs, seeds) in pooled_runs(cfg).items()
    }


def _slug(cell: str) -> str:
    return cell.replace("/", "-")


def plot_overoptimisation(run: Run, it: dict[str, Any], cell: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, kind, form in ((axes[0], "bon", "bon"), (axes[1], "rl", "rl")):
        c = it[kind]
        d = np.asarray(c["d"])
        grid = np.linspace(0.0, max(float(d.max()), 1e-3), 100)
        for name, color in (("gold", "C0"), ("proxy", "C1")):
            f = it["fits"][f"{kind}_{name}"]
            ax.plot(d, c[name], "o", color=color, label=f"{name}")
            fit = np.asarray(predict_overoptimization(grid, f["alpha"], f["beta"], form))
            ax.plot(grid, fit, "--", color=color, linewidth=1, label=f"{name} fit (R$^2$={f['r2']:.2f})")
        ax.axhline(0.0, color="k", linewidth=0.5)
        ax.set_xlabel("d = sqrt(KL to SFT) (nats$^{1/2}$)")
        ax.set_title({"bon": "best-of-n", "rl": "PPO"}[kind], fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("reward (SFT = 0)")
    fig.suptitle(f"reward over-optimisation, round 1 of {cell}", fontsize=9)
    fig.tight_layout()
    run.save_figure(fig, "overoptimisation")
    plt.close(fig)


def plot_iterations(run: Run, results: dict[str, Any]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for cell, res in results.items():
        its = res["iterations"]
        x = [i["iteration"] + 1 for i in its]
        style = "-" if cell == BASELINE else "--"
        axes[0].plot(x, [i["final"]["gap"] for i in its], style, marker="o", label=cell)
        axes[1].plot(x, [i["gold_at_kl"] for i in its], style, marker="o", label=cell)
    axes[0].set_ylabel("proxy - gold at the end of PPO")
    axes[1].set_ylabel("gold at matched KL")
    for ax in axes:
        ax.set_xlabel("round")
        ax.axhline(0.0, color="k", linewidth=0.5)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    run.save_figure(fig, "iterations")
    plt.close(fig)


def summarise(cells: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per cell (means over its runs): the gold-proxy gap at the end of PPO in the first and last round, its
    standard deviation over runs in the last, its mean over the later rounds, the last round's gold and KL (the
    over-optimisation a cell's options leave), and round 1's RL gold peak (the highest point of the mean gold
    curve, with its KL) against that round's final gold (over-optimisation: a peak above 0, then a fall)."""
    out = {}
    for name, res in cells.items():
        its = res["iterations"]
        gaps = [i["final"]["gap"] for i in its]
        last = its[-1]["final"]
        rl = its[0]["rl"]
        peak = int(np.argmax(rl["gold"]))
        out[name] = {
            "gap_first": gaps[0],
            "gap_last": gaps[-1],
            "gap_last_sd": its[-1]["final_sd"]["gap"],
            "gap_mean_after_first": float(np.mean(gaps[1:])) if len(gaps) > 1 else float("nan"),
            "gold_last": last["gold"],
            "kl_last": last["kl"],
            "round1_rl_gold_peak": float(rl["gold"][peak]),
            "round1_rl_gold_peak_kl": float(rl["kl"][peak]),
            "round1_rl_gold_final": float(rl["gold"][-1]),
            "num_runs": len(res["per_seed"]),
        }
    return out


def _log_curves(run: Run, name: str, res: dict[str, Any]) -> None:
    """A merged cell's mean curves under the tags the live run logs."""
    for it in res["iterations"]:
        prefix = f"{_slug(name)}/iter{it['iteration']}/"
        bon, rl = it["bon"], it["rl"]
        for i, n in enumerate(bon["n"]):
            run.tracker.scalars(
                {k: bon[k][i] for k in ("gold", "proxy", "d")}, int(n), prefix=prefix + "bon/"
            )
        for i, step in enumerate(rl["step"]):
            row = {k: rl[k][i] for k in ("gold", "proxy", "kl", "d")}
            run.tracker.scalars({**row, "gap": row["proxy"] - row["gold"]}, int(step), prefix=prefix + "rl/")


def main(cfg: IteratedRLHFExperiment) -> dict[str, Any]:
    t_start = time.time()
    run = start_run("iterated_rlhf", cfg, run_name=cfg.run_name, root=cfg.out_dir)
    cells: dict[str, Any] = {}
    if cfg.merge:
        print(f"[iterated_rlhf] merging {len(cfg.merge)} results: {', '.join(cfg.merge)}", flush=True)
        cells = merge_runs(cfg)
        total = 0
    else:
        total = len(cfg.grid) * cfg.num_iterations * cfg.study.ppo_steps
        print(
            f"[iterated_rlhf] {len(cfg.grid)} cells x {cfg.num_iterations} rounds x {cfg.study.ppo_steps} PPO "
            f"steps, seeds {cfg.cell(cfg.grid[0]).seeds} vmapped, {cfg.rm_members} RMs per round",
            flush=True,
        )
    with run, progress(total=total, desc="PPO steps", enabled=False if cfg.merge else None) as bar:
        for name in cfg.grid:
            if cfg.merge:
                _log_curves(run, name, cells[name])
                continue
            t_cell = time.time()

            def log(prefix: str, values: dict[str, float], step: int, name: str = name) -> None:
                run.tracker.scalars(values, step, prefix=f"{_slug(name)}/{prefix}")

            cells[name] = run_iterated_rlhf(cfg.study, cfg.cell(name), log=log, on_step=lambda: bar.update(1))
            print(f"[iterated_rlhf] {name}: {time.time() - t_cell:.0f} s", flush=True)
        first = cfg.grid[0]
        plot_overoptimisation(run, cells[first]["iterations"][0], first)
        plot_iterations(run, cells)
        rows = []
        for name, res in cells.items():
            for it in res["iterations"]:
                f, fits = it["final"], it["fits"]
                rows.append(
                    [name, str(it["iteration"] + 1)]
                    + [format_number(f[k], ".3f") for k in ("gold", "proxy", "gap")]
                    + [format_number(it["final_sd"]["gap"], ".3f")]
                    + [format_number(f["kl"], ".3f"), format_number(it["gold_at_kl"], ".3f")]
                    + [format_number(fits[k]["r2"], ".2f") for k in ("bon_gold", "rl_gold")]
                )
        print_table(
            [
                "cell",
                "round",
                "gold",
                "proxy",
                "gap",
                "gap sd",
                "KL",
                f"gold@KL={cfg.study.kl_match}",
                "R2 BoN",
                "R2 RL",
            ],
            rows,
        )
        summary = summarise(cells)
        ranking = sorted(summary, key=lambda c: summary[c]["gap_last"])
        print(
            "[iterated_rlhf] final-round gold-proxy gap, smallest first: "
            + ", ".join(f"{c} {summary[c]['gap_last']:.3f}" for c in ranking),
            flush=True,
        )
        results = {
            "experiment": "iterated_rlhf",
            "run": run.name,
            "cells": cells,
            "summary": summary,
            "ranking_by_final_gap": ranking,
            "definitions": {
                "gold": "programmatic gold reward minus the SFT policy's mean (SFT = 0), on held-out prompts",
                "proxy": "the round's combined proxy reward minus its mean on the SFT policy's samples",
                "gap": "proxy - gold",
                "means": "every curve and number of a cell is the mean over its runs (per_seed: each run's own)",
                "kl": "KL(policy || SFT) per response, nats (k3 estimator summed over tokens)",
                "gold_at_kl": "gold interpolated along the PPO curve at KL = study.kl_match (NaN if not reached)",
                "fits": "Gao et al.: best-of-n R = d (alpha - beta d), RL R = d (alpha - beta log d); r2 about the mean",
            },
        }
        run.finish(results, t_start)
    return results


def parse_args(argv: list[str]) -> IteratedRLHFExperiment:
    return parse_cli(
        IteratedRLHFExperiment,
        argv,
        presets={"smoke": SMOKE, "overopt": OVEROPT},
        description=__doc__.splitlines()[0],
    )


if __name__ == "__main__":
    config = parse_args(sys.argv[1:])
    if "--smoke" in sys.argv[1:]:
        prefer_fast_compile()  # smoke sizes are compile-bound (the backend has not started yet)
    main(config)
    sys.exit(0)
