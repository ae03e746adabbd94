"""N-player opponent shaping (Souly et al. 2023, "Leading the Pack", arXiv 2312.12564) with exact gradients.

For every game (iterated N-player tensor games: IPD, stag hunt, snowdrift, tragedy of the commons, public goods)
and every N, four populations of memory-one learners train simultaneously on the exact discounted return
(:func:`envs.tensor_game.memory_one_return`):

- ``all_naive``: N naive learners (exact policy gradient);
- ``1_shaper``: one shaper + N - 1 naive learners;
- ``2_shapers``: two shapers + N - 2 naive learners;
- ``all_shapers``: shapers against each other.

The shaper is N-player LOLA (:mod:`jaxsafety.shaping.exact`); the meta-learned shapers of the paper (M-FOS,
Shaper with OpenES) will join as further ``--shaper`` choices. Every population runs from ``num_inits`` random
initialisations (vmapped, and vmapped over games too: one XLA call per N and population).

Reported per (game, N, population), at the end of learning and averaged over initialisations: each seat's
return, the shapers' and the naive learners' mean return, the social return (mean over all players) and the
cooperation rate (discounted frequency of C, exact). The headline comparisons: the shaper's return in
``1_shaper`` against the same seat's return in ``all_naive``, and the social return of each population against
``all_naive``.

    python experiments/nplayer_shaping.py --smoke        # seconds
    python experiments/nplayer_shaping.py                # every game, N = 3, 4, 5
    tensorboard --logdir runs

Writes ``runs/nplayer_shaping/<run>/``: TensorBoard scalars (``<game>/N<n>/<population>/social_return`` etc. per
update), ``results.json`` (the table), ``summary.png`` (social and shaper returns per game, N and population) and
``curves.png`` (social return over updates).
"""

from __future__ import annotations

import dataclasses
import math
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

from envs import tensor_game
from jaxsafety.config import check, check_choice, check_range, config_to_dict, parse_cli
from jaxsafety.shaping import LearnerSpec, LOLAConfig, make_exact_learning, memory_one_value_fn
from jaxsafety.train import progress
from jaxsafety.train.experiment import Run, start_run, write_json_atomic
from jaxsafety.xla_flags import apply_cpu_workarounds

# before jax starts its backend (importing starts nothing): nested-Jacobian LOLA programs crash XLA:CPU's
# YNNPACK fusions (see jaxsafety.xla_flags)
apply_cpu_workarounds(single_threaded=True, no_ynn=True)

GAMES = ("ipd", "stag_hunt", "snowdrift", "tragedy", "public_goods")
POPULATIONS = ("all_naive", "1_shaper", "2_shapers", "all_shapers")


@dataclasses.dataclass(frozen=True)
class NPlayerShapingConfig:
    run_name: str | None = None
    out_dir: str = "runs"
    seed: int = 0
    games: tuple[str, ...] = GAMES
    players: tuple[int, ...] = (3, 4, 5)
    shaper: str = "lola"  # the shaping learner (meta-learned shapers come next)
    num_inits: int = 32  # random initialisations per population (vmapped)
    num_updates: int = 300
    init_std: float = 1.0  # initial cooperation logits ~ N(0, init_std^2)
    gamma: float = 0.96  # discount of the iterated game (LOLA paper, Pax)
    lr: float = 10.0  # every learner's step on the (1 - gamma)-normalised return
    lola_alpha: float = 10.0  # LOLA's assumed co-player step
    lola_look_ahead: bool = False
    public_goods_r: float = 0.75  # multiplication factor as a fraction of N (1 < r < N)

    def __post_init__(self) -> None:
        check(len(self.games) >= 1, "games", self.games, f"non-empty tuples of {GAMES}")
        for g in self.games:
            check_choice("games", g, GAMES)
        check(
            len(self.players) >= 1 and all(isinstance(n, int) and 2 <= n <= 8 for n in self.players),
            "players",
            self.players,
            "non-empty tuples of integers in 2..8",
        )
        check_choice("shaper", self.shaper, ("lola",))
        for f in ("num_inits", "num_updates"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check_range("init_std", self.init_std, ge=0)
        check_range("gamma", self.gamma, ge=0, lt=1)
        check_range("lr", self.lr, gt=0)
        check_range("lola_alpha", self.lola_alpha, ge=0)
        check(
            all(self.public_goods_r * n > 1 for n in self.players) and 0 < self.public_goods_r < 1,
            "public_goods_r",
            self.public_goods_r,
            f"fractions in (0, 1) with r = fraction * N > 1 for every N in {self.players}",
        )


SMOKE = NPlayerShapingConfig(games=("ipd", "stag_hunt"), players=(3,), num_inits=4, num_updates=40)


def payoff_table(game: str, n: int, cfg: NPlayerShapingConfig) -> jax.Array:
    """The ``[2, n]`` payoff table of ``game`` (:mod:`envs.tensor_game` presets)."""
    if game == "public_goods":
        return tensor_game.public_goods(n, cfg.public_goods_r * n)
    return getattr(tensor_game, game)(n)


def seats(population: str, n: int) -> list[bool]:
    """Which seats hold a shaper (the first ones)."""
    k = {"all_naive": 0, "1_shaper": 1, "2_shapers": 2, "all_shapers": n}[population]
    return [i < k for i in range(n)]


def population_runner(n: int, population: str, cfg: NPlayerShapingConfig) -> Any:
    """``jit(run(payoffs [G, 2, n], inits [I, n, 2^n + 1])) -> (values [G, I, U+1, n], coop [G, I, U+1, n])``."""
    lola = LOLAConfig(alpha=cfg.lola_alpha, look_ahead=cfg.lola_look_ahead)
    specs = [
        LearnerSpec("lola", lr=cfg.lr, lola=lola) if s else LearnerSpec("naive", lr=cfg.lr)
        for s in seats(population, n)
    ]
    coop_table = jnp.stack([jnp.ones(n), jnp.zeros(n)])  # reward 1 for C: the return is the cooperation rate

    def one(payoffs: jax.Array, thetas0: jax.Array) -> tuple[jax.Array, jax.Array]:
        _, hist = make_exact_learning(memory_one_value_fn(payoffs, cfg.gamma), specs, cfg.num_updates)(
            thetas0
        )
        coop = jax.vmap(lambda t: tensor_game.memory_one_return(coop_table, jax.nn.sigmoid(t), cfg.gamma))(
            hist["thetas"]
        )
        return hist["values"], coop

    return jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))


def summarise(values: np.ndarray, coop: np.ndarray, shaper_seats: list[bool]) -> dict[str, Any]:
    """Final-update statistics of one population over initialisations (``values, coop: [I, U+1, n]``)."""
    final, final_coop = values[:, -1], coop[:, -1]
    mask = np.asarray(shaper_seats)
    social = final.mean(-1)
    out = {
        "seat_return": final.mean(0).tolist(),
        "social_return": float(social.mean()),
        "social_return_se": float(social.std(ddof=1) / math.sqrt(len(social))) if len(social) > 1 else None,
        "cooperation": float(final_coop.mean()),
        "shaper_return": float(final[:, mask].mean()) if mask.any() else None,
        "naive_return": float(final[:, ~mask].mean()) if (~mask).any() else None,
    }
    return out


def plot_summary(run: Run, table: dict[str, Any], cfg: NPlayerShapingConfig) -> Path:
    games, ns = list(cfg.games), list(cfg.players)
    fig, axes = plt.subplots(
        len(games), len(ns), figsize=(3.2 * len(ns), 2.4 * len(games)), squeeze=False, sharey=False
    )
    colours = ["tab:gray", "tab:blue", "tab:orange", "tab:red"]
    for r, game in enumerate(games):
        for c, n in enumerate(ns):
            ax = axes[r, c]
            cell = table[game][str(n)]
            x = np.arange(len(POPULATIONS))
            ax.bar(x - 0.2, [cell[p]["social_return"] for p in POPULATIONS], 0.4, color=colours, alpha=0.9)
            shaper = [cell[p]["shaper_return"] or np.nan for p in POPULATIONS]
            ax.bar(x + 0.2, shaper, 0.4, color=colours, alpha=0.45, hatch="//")
            ax.set_xticks(x, ["naive", "1 sh", "2 sh", "all sh"], fontsize=7)
            ax.set_title(f"{game}, N={n}", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(f"social return (solid) and shaper return (hatched); shaper = {cfg.shaper}", fontsize=9)
    fig.tight_layout()
    path = run.save_figure(fig, "summary", cfg.num_updates)
    plt.close(fig)
    return path


def plot_curves(run: Run, curves: dict[tuple[str, int, str], np.ndarray], cfg: NPlayerShapingConfig) -> Path:
    games, ns = list(cfg.games), list(cfg.players)
    fig, axes = plt.subplots(len(games), len(ns), figsize=(3.2 * len(ns), 2.4 * len(games)), squeeze=False)
    for r, game in enumerate(games):
        for c, n in enumerate(ns):
            ax = axes[r, c]
            for p in POPULATIONS:
                ax.plot(curves[(game, n, p)], label=p, linewidth=1)
            ax.set_title(f"{game}, N={n}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.supxlabel("update", fontsize=8)
    fig.supylabel("social return (mean over inits)", fontsize=8)
    fig.tight_layout()
    path = run.save_figure(fig, "curves", cfg.num_updates)
    plt.close(fig)
    return path


def main(cfg: NPlayerShapingConfig) -> dict[str, Any]:
    t_start = time.time()
    run = start_run("nplayer_shaping", cfg, run_name=cfg.run_name, root=cfg.out_dir)
    key = jax.random.key(cfg.seed)
    table: dict[str, Any] = {g: {} for g in cfg.games}
    curves: dict[tuple[str, int, str], np.ndarray] = {}
    jobs = [(n, p) for n in cfg.players for p in POPULATIONS]
    print(
        f"[nplayer_shaping] {len(cfg.games)} games x N in {cfg.players} x {len(POPULATIONS)} populations, "
        f"{cfg.num_inits} inits x {cfg.num_updates} updates each (shaper: {cfg.shaper})",
        flush=True,
    )
    with run:
        for n, population in progress(jobs, desc="N x population"):
            payoffs = jnp.stack([payoff_table(g, n, cfg) for g in cfg.games])
            # the same initialisations for every population of a given N (paired comparison)
            inits = cfg.init_std * jax.random.normal(jax.random.fold_in(key, n), (cfg.num_inits, n, 2**n + 1))
            values, coop = jax.device_get(population_runner(n, population, cfg)(payoffs, inits))
            for gi, game in enumerate(cfg.games):
                cell = summarise(values[gi], coop[gi], seats(population, n))
                table[game].setdefault(str(n), {})[population] = cell
                social = values[gi].mean(-1).mean(0)  # [U + 1]
                curves[(game, n, population)] = social
                prefix = f"{game}/N{n}/{population}/"
                for u in range(0, cfg.num_updates + 1, max(1, cfg.num_updates // 100)):
                    run.tracker.scalars(
                        {"social_return": social[u], "cooperation": coop[gi, :, u].mean()}, u, prefix=prefix
                    )
        comparisons = {}
        for game in cfg.games:
            for n in cfg.players:
                cell = table[game][str(n)]
                base = cell["all_naive"]
                comparisons[f"{game}/N{n}"] = {
                    "shaper_gain_own": cell["1_shaper"]["shaper_return"] - base["seat_return"][0],
                    **{
                        f"social_gain_{p}": cell[p]["social_return"] - base["social_return"]
                        for p in POPULATIONS[1:]
                    },
                }
        plot_summary(run, table, cfg)
        plot_curves(run, curves, cfg)
        results = {
            "experiment": "nplayer_shaping",
            "run": run.name,
            "shaper": cfg.shaper,
            "table": table,
            "comparisons": comparisons,
            "definitions": {
                "returns": "(1 - gamma)-normalised exact discounted return after the last update, mean over inits",
                "shaper_gain_own": "shaper's return in 1_shaper minus the same seat's return in all_naive",
                "social_gain_<population>": "social return of the population minus that of all_naive",
            },
            "wall_seconds": time.time() - t_start,
            "config": config_to_dict(cfg),
        }
        path = write_json_atomic(run.dir / "results.json", results)
    for name, c in comparisons.items():
        print(
            f"[nplayer_shaping] {name}: shaper own gain {c['shaper_gain_own']:+.3f}, social gain "
            + ", ".join(f"{p} {c[f'social_gain_{p}']:+.3f}" for p in POPULATIONS[1:]),
            flush=True,
        )
    print(f"[nplayer_shaping] wrote {path}", flush=True)
    return results


def parse_args(argv: list[str]) -> NPlayerShapingConfig:
    return parse_cli(
        NPlayerShapingConfig, argv, presets={"smoke": SMOKE}, description=__doc__.splitlines()[0]
    )


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
