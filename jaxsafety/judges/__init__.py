"""LLM-as-a-judge evaluation: pairwise comparisons, non-transitivity metrics, Bradley-Terry fits and tournaments.

Xu, Ruis, Rocktaschel, Kirk (ICML 2025, arXiv 2502.14074): pairwise judges anchored to a fixed baseline give
rankings that depend on the baseline, because judge preferences are non-transitive; round-robin tournaments with
Bradley-Terry aggregation are the remedy, and their Swim (Swiss-Wise Iterative Matchmaking) tournaments cut its cost;
binary-search insertion is a cheaper design of ours.

- :mod:`~jaxsafety.judges.data`: the comparison data model and its CSV reader / writer;
- :mod:`~jaxsafety.judges.bradley_terry`: Bradley-Terry MLE (dense Newton, Newman's fixed point, Hunter's MM;
  hard and soft labels, ties, weights, L2 prior), Elo scale, vmapped bootstrap;
- :mod:`~jaxsafety.judges.metrics`: position bias, PNT / SNTD non-transitivity, win rates, rank correlations;
- :mod:`~jaxsafety.judges.judges`: the ``Judge`` protocol, a caching wrapper and simulated judges;
- :mod:`~jaxsafety.judges.tournaments`: baseline-anchored, round-robin, Swim (Swiss rounds) and insertion
  tournaments;
- :mod:`~jaxsafety.judges.lm_judge`: an LM judge on the model zoo (a tiny GPT-2 trained to judge arithmetic
  answers, p(A) from the log-probs of the label tokens) and response models that generate their answers with zoo
  arithmetic LMs. Its names are exported lazily (PEP 562 ``__getattr__``): importing this package does not import
  flax or the model zoo.
"""

from jaxsafety.judges.bradley_terry import (
    BTBootstrap,
    BTResult,
    bootstrap_bradley_terry,
    fit_bradley_terry,
    to_elo,
    win_matrix,
    win_probability,
)
from jaxsafety.judges.data import Comparisons, make_comparisons, read_comparisons_csv, to_csv
from jaxsafety.judges.judges import (
    CachedJudge,
    Judge,
    SimulatedJudge,
    StringJudgeAdapter,
    make_simulated_judge,
)
from jaxsafety.judges.metrics import (
    baseline_win_rates,
    non_transitivity,
    position_consistency,
    preference_tensor,
    rank_correlations,
)
from jaxsafety.judges.tournaments import (
    TournamentResult,
    baseline_tournament,
    insertion_tournament,
    round_robin_tournament,
    swim_rounds,
    swim_tournament,
    swiss_pairing,
)

_LAZY = {
    name: "jaxsafety.judges.lm_judge"
    for name in ("JudgeTask", "LMJudge", "LMJudgeConfig", "make_generated_responses", "train_lm_judge")
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BTBootstrap",
    "BTResult",
    "CachedJudge",
    "Comparisons",
    "Judge",
    "JudgeTask",
    "LMJudge",
    "LMJudgeConfig",
    "SimulatedJudge",
    "StringJudgeAdapter",
    "TournamentResult",
    "baseline_tournament",
    "baseline_win_rates",
    "bootstrap_bradley_terry",
    "fit_bradley_terry",
    "insertion_tournament",
    "make_comparisons",
    "make_generated_responses",
    "make_simulated_judge",
    "non_transitivity",
    "position_consistency",
    "preference_tensor",
    "rank_correlations",
    "read_comparisons_csv",
    "round_robin_tournament",
    "swim_rounds",
    "swim_tournament",
    "swiss_pairing",
    "to_csv",
    "to_elo",
    "train_lm_judge",
    "win_matrix",
    "win_probability",
]
