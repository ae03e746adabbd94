"""N-player opponent shaping (Souly et al. 2023, "Leading the Pack", arXiv 2312.12564): LOLA, M-FOS and Shaper.

For every game (iterated N-player tensor games: IPD, stag hunt, snowdrift, tragedy of the commons, public goods)
and every N, each shaping method plays in four populations:

- ``all_naive``: N naive learners;
- ``1_shaper``: one shaper + N - 1 naive learners;
- ``2_shapers``: two shapers + N - 2 naive learners;
- ``all_shapers``: shapers against each other (each its own agent, maximising its own return).

Shapers (``--shapers``):

- ``lola``: N-player LOLA with exact gradients (:mod:`jaxsafety.shaping.exact`) among exact naive learners
  (memory-one policies, exact policy gradient on the exact discounted return);
- ``mfos``: M-FOS-style meta-policy (:mod:`jaxsafety.shaping.mfos`), meta-trained with OpenES over trials of
  ``num_updates`` naive-learner updates from random initialisations, then evaluated on the same initialisations as
  the other exact populations;
- ``shaper``: Shaper-style GRU policy (:mod:`jaxsafety.shaping.shaper`) meta-trained with OpenES on the *sampled*
  game, against PPO naive learners updated after every episode; its baseline is the sampled all-naive population.

One XLA program per (method, N, population), vmapped over the five games (and over initialisations, ES
candidates and envs inside). Thin script over :mod:`jaxsafety.shaping.populations` (the runners and summaries):
config -> library -> TensorBoard logs, plots, results.

Reported per (method, game, N, population), averaged over initialisations (exact) or evaluation trials (sampled):
each seat's return, the shapers' and naive learners' mean return, the social return (mean over all players) and
the cooperation rate, both as the mean over the whole learning run (``*_mean``: what the meta-learners maximise)
and at its end (``final``). Headline comparisons: the shaper's return in ``1_shaper`` against the same seat's
in ``all_naive``, and each population's social return against ``all_naive``.

    python experiments/nplayer_shaping.py --smoke        # about a minute (compile-bound)
    python experiments/nplayer_shaping.py                # every game, N = 3, 4, 5, all three shapers
    tensorboard --logdir runs

Writes ``runs/nplayer_shaping/<run>/``: TensorBoard scalars (``<method>/<game>/N<n>/<population>/social_return``
etc. per update or episode), ``results.json`` (the table), ``summary.png`` (own and social gains against N per
game and method) and ``curves.png`` (social return over the learning run).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxsafety.config import check, check_choice, check_range, parse_cli
from jaxsafety.shaping import (
    GAMES,
    POPULATIONS,
    SHAPER_POPULATIONS,
    ESConfig,
    NaivePPOConfig,
    PopulationConfig,
    SampledGameConfig,
    compare_populations,
    make_exact_runner,
    make_mfos_runner,
    make_sampled_runner,
    payoff_table,
    shaper_seats,
    summarise_population,
)
from jaxsafety.train import progress
from jaxsafety.train.experiment import Run, start_run
from jaxsafety.xla_flags import apply_cpu_workarounds, prefer_fast_compile

# before jax starts its backend (importing starts nothing): nested-Jacobian LOLA programs crash XLA:CPU's
# YNNPACK fusions (see jaxsafety.xla_flags)
apply_cpu_workarounds(single_threaded=True, no_ynn=True)

SHAPERS = ("lola", "mfos", "shaper")


@dataclasses.dataclass(frozen=True)
class NPlayerShapingConfig(PopulationConfig):
    """N-player shaping study (fields above run_name: the learners, see :class:`jaxsafety.shaping.PopulationConfig`)."""

    run_name: str | None = None
    out_dir: str = "runs"
    seed: int = 0
    games: tuple[str, ...] = GAMES
    players: tuple[int, ...] = (3, 4, 5)
    shapers: tuple[str, ...] = SHAPERS
    populations: tuple[str, ...] = SHAPER_POPULATIONS  # besides all_naive, which always runs
    num_inits: int = (
        32  # exact games: evaluation initialisations per population (shared by all populations of an N)
    )
    sampled_eval_trials: int = 16  # sampled games: evaluation trials per population

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.games) >= 1, "games", self.games, f"non-empty tuples of {GAMES}")
        for g in self.games:
            check_choice("games", g, GAMES)
        check(
            len(self.players) >= 1 and all(isinstance(n, int) and 2 <= n <= 8 for n in self.players),
            "players",
            self.players,
            "non-empty tuples of integers in 2..8",
        )
        check(len(self.shapers) >= 1, "shapers", self.shapers, f"non-empty tuples of {SHAPERS}")
        for s in self.shapers:
            check_choice("shapers", s, SHAPERS)
        check(
            len(self.populations) >= 1,
            "populations",
            self.populations,
            f"non-empty tuples of {SHAPER_POPULATIONS}",
        )
        for p in self.populations:
            check_choice("populations", p, SHAPER_POPULATIONS)
        if "2_shapers" in self.populations:
            check(
                min(self.players) >= 3,
                "players",
                self.players,
                "integers >= 3 when populations include 2_shapers",
            )
        for f in ("num_inits", "sampled_eval_trials"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check(
            all(self.public_goods_r * n > 1 for n in self.players),
            "public_goods_r",
            self.public_goods_r,
            f"fractions in (0, 1) with r = fraction * N > 1 for every N in {self.players}",
        )


SMOKE = NPlayerShapingConfig(
    games=("ipd", "stag_hunt"),
    players=(3,),
    populations=("1_shaper",),
    num_inits=4,
    num_updates=20,
    mfos_hidden=(8,),
    mfos_es=ESConfig(population=4, generations=3),
    sampled=SampledGameConfig(
        num_envs=4,
        episode_length=10,
        num_episodes=4,
        shaper_hidden=8,
        naive=NaivePPOConfig(network="mlp", lr=1e-2),
    ),
    shaper_es=ESConfig(population=4, generations=2),
    sampled_eval_trials=2,
)


def plot_summary(run: Run, comparisons: dict[str, Any], cfg: NPlayerShapingConfig) -> Path:
    games, ns = list(cfg.games), list(cfg.players)
    rows = [("shaper_gain_own_mean", "own gain (1 shaper)")] if "1_shaper" in cfg.populations else []
    rows += [(f"social_gain_{p}_mean", f"social gain ({p.replace('_', ' ')})") for p in cfg.populations]
    fig, axes = plt.subplots(
        len(rows), len(games), figsize=(2.6 * len(games), 2.0 * len(rows)), squeeze=False, sharex=True
    )
    for c, game in enumerate(games):
        for r, (key, label) in enumerate(rows):
            ax = axes[r, c]
            for kind in cfg.shapers:
                ys = [comparisons[f"{kind}/{game}/N{n}"][key] for n in ns]
                ax.plot(ns, ys, marker="o", linewidth=1, label=kind)
            ax.axhline(0.0, color="k", linewidth=0.5)
            ax.set_xticks(ns)
            ax.tick_params(labelsize=7)
            if r == 0:
                ax.set_title(game, fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.supxlabel("N players", fontsize=8)
    fig.suptitle(
        "return over the learning run minus the all-naive population's (mean over inits)", fontsize=9
    )
    fig.tight_layout()
    path = run.save_figure(fig, "summary", cfg.num_updates)
    plt.close(fig)
    return path


def plot_curves(
    run: Run, curves: dict[tuple[str, str, int, str], np.ndarray], cfg: NPlayerShapingConfig
) -> Path:
    games, ns = list(cfg.games), list(cfg.players)
    fig, axes = plt.subplots(len(games), len(ns), figsize=(3.2 * len(ns), 2.4 * len(games)), squeeze=False)
    styles = {"naive": ":", "naive_sampled": ":", "lola": "-", "mfos": "--", "shaper": "-."}
    for r, game in enumerate(games):
        for c, n in enumerate(ns):
            ax = axes[r, c]
            for (kind, g, nn, p), social in curves.items():
                if g == game and nn == n and p in ("all_naive", "1_shaper", "all_shapers"):
                    x = np.linspace(0.0, 1.0, len(social))
                    ax.plot(x, social, styles[kind], linewidth=1, label=f"{kind} {p}")
            ax.set_title(f"{game}, N={n}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=5)
    fig.supxlabel("fraction of the learning run (exact: updates; sampled: episodes)", fontsize=8)
    fig.supylabel("social return (mean over inits)", fontsize=8)
    fig.tight_layout()
    path = run.save_figure(fig, "curves", cfg.num_updates)
    plt.close(fig)
    return path


def main(cfg: NPlayerShapingConfig) -> dict[str, Any]:
    t_start = time.time()
    run = start_run("nplayer_shaping", cfg, run_name=cfg.run_name, root=cfg.out_dir)
    key = jax.random.key(cfg.seed)
    exact_kinds = [k for k in cfg.shapers if k in ("lola", "mfos")]
    table: dict[str, Any] = {kind: {g: {} for g in cfg.games} for kind in cfg.shapers}
    curves: dict[tuple[str, str, int, str], np.ndarray] = {}
    meta_fitness: dict[str, Any] = {}
    jobs = []
    for n in cfg.players:
        if exact_kinds:
            jobs.append(("naive", n, "all_naive"))
        if "shaper" in cfg.shapers:
            jobs.append(("naive_sampled", n, "all_naive"))
        jobs += [(kind, n, p) for kind in cfg.shapers for p in cfg.populations]
    print(
        f"[nplayer_shaping] {len(cfg.games)} games x N in {cfg.players} x shapers {cfg.shapers} x populations "
        f"{('all_naive', *cfg.populations)}: {len(jobs)} programs",
        flush=True,
    )
    learners = cfg.population_config()
    with run:
        for kind, n, population in progress(jobs, desc="method x N x population"):
            payoffs = jnp.stack([payoff_table(g, n, cfg.public_goods_r) for g in cfg.games])
            # the same initialisations / evaluation trials for every population of a given N (paired comparison)
            k_n = jax.random.fold_in(key, n)
            inits = cfg.init_std * jax.random.normal(k_n, (cfg.num_inits, n, 2**n + 1))
            eval_keys = jax.random.split(jax.random.fold_in(k_n, 1), cfg.sampled_eval_trials)
            k_meta = jax.random.fold_in(k_n, 2 + POPULATIONS.index(population))
            fitness, t_job = None, time.time()
            if kind in ("naive", "lola"):
                values, coop = make_exact_runner(n, population, kind, learners)(payoffs, inits)
            elif kind == "mfos":
                values, coop, fitness = make_mfos_runner(n, population, learners)(payoffs, inits, k_meta)
            else:
                values, coop, fitness = make_sampled_runner(n, population, learners)(
                    payoffs, eval_keys, k_meta
                )
            values, coop = np.asarray(values), np.asarray(coop)
            print(f"[nplayer_shaping] {kind} N={n} {population}: {time.time() - t_job:.0f} s", flush=True)
            owners = exact_kinds if kind == "naive" else ["shaper"] if kind == "naive_sampled" else [kind]
            for gi, game in enumerate(cfg.games):
                cell = summarise_population(values[gi], coop[gi], shaper_seats(population, n))
                if fitness is not None and population != "all_naive":
                    cell["meta_fitness"] = np.asarray(fitness[gi]).tolist()  # [generations, K]
                for owner in owners:
                    table[owner][game].setdefault(str(n), {})[population] = cell
                social = values[gi].mean(-1).mean(0)  # [U]
                curves[(kind, game, n, population)] = social
                prefix = f"{kind}/{game}/N{n}/{population}/"
                for u in range(0, len(social), max(1, len(social) // 100)):
                    run.tracker.scalars(
                        {"social_return": social[u], "cooperation": coop[gi, :, u].mean()}, u, prefix=prefix
                    )
            if fitness is not None and population != "all_naive":
                meta_fitness[f"{kind}/N{n}/{population}"] = np.asarray(fitness).mean(-1)  # [G, gens]
        comparisons = {
            f"{kind}/{game}/N{n}": compare_populations(table[kind][game][str(n)], cfg.populations)
            for kind in cfg.shapers
            for game in cfg.games
            for n in cfg.players
        }
        for name, fit in meta_fitness.items():
            for gi, game in enumerate(cfg.games):
                for g, v in enumerate(fit[gi]):
                    run.tracker.scalars(
                        {"meta_fitness": v}, g, prefix=f"{name.replace('/', f'/{game}/', 1)}/"
                    )
        for name, c in comparisons.items():
            own = c.get("shaper_gain_own_mean")
            print(
                f"[nplayer_shaping] {name}: "
                + (f"shaper own gain {own:+.3f}, " if own is not None else "")
                + "social gain "
                + ", ".join(f"{p} {c[f'social_gain_{p}_mean']:+.3f}" for p in cfg.populations),
                flush=True,
            )
        plot_summary(run, comparisons, cfg)
        plot_curves(run, curves, cfg)
        results = {
            "experiment": "nplayer_shaping",
            "run": run.name,
            "shapers": list(cfg.shapers),
            "table": table,
            "comparisons": comparisons,
            "definitions": {
                "returns": (
                    "exact games: (1 - gamma)-normalised exact discounted return of the policies played at each of "
                    "num_updates episodes; sampled games: mean reward per round of each episode; *_mean: mean over "
                    "the run, no suffix: the last episode; averaged over initialisations / evaluation trials"
                ),
                "shaper_gain_own": "shaper's return in 1_shaper minus the same seat's return in all_naive",
                "social_gain_<population>": "social return of the population minus that of all_naive",
                "baselines": "lola and mfos: exact naive learners; shaper: PPO naive learners on the sampled game",
            },
        }
        run.finish(results, t_start)
    return results


def parse_args(argv: list[str]) -> NPlayerShapingConfig:
    return parse_cli(
        NPlayerShapingConfig, argv, presets={"smoke": SMOKE}, description=__doc__.splitlines()[0]
    )


if __name__ == "__main__":
    config = parse_args(sys.argv[1:])
    if "--smoke" in sys.argv[1:]:
        prefer_fast_compile()  # smoke sizes are compile-bound (the backend has not started yet)
    main(config)
