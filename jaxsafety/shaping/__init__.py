"""Opponent-shaping learners for N-player general-sum games (Souly et al. 2023, "Leading the Pack: N-player
Opponent Shaping"): naive learners and N-player LOLA with exact gradients or sampled (DiCE) estimates, M-FOS-style
meta-learned shapers (OpenES or meta-PPO outer loop) on the exact games, Shaper-style recurrent shapers (OpenES)
against PPO naive learners on sampled games, fixed baseline policies, and the populations of the paper's study (shapers among naive learners, runners and
summaries: :mod:`jaxsafety.shaping.populations`)."""

from jaxsafety.shaping.dice import (
    dice_lola_grads,
    dice_naive_grads,
    dice_objective,
    make_dice_learning,
    sample_episodes,
)
from jaxsafety.shaping.es import ESConfig, make_es_train
from jaxsafety.shaping.exact import (
    LearnerSpec,
    LOLAConfig,
    lola_grads,
    make_exact_learning,
    memory_one_value_fn,
    naive_grads,
)
from jaxsafety.shaping.mfos import MetaPPOConfig, MFOSConfig, make_mfos_es, make_mfos_ppo, make_mfos_trial
from jaxsafety.shaping.policies import always, tit_for_tat
from jaxsafety.shaping.populations import (
    GAMES,
    POPULATIONS,
    SHAPER_POPULATIONS,
    PopulationConfig,
    compare_populations,
    exact_cooperation,
    make_exact_runner,
    make_mfos_runner,
    make_sampled_runner,
    payoff_table,
    shaper_seats,
    summarise_population,
)
from jaxsafety.shaping.shaper import NaivePPOConfig, SampledGameConfig, make_sampled_trial, make_shaper_es

__all__ = [
    "GAMES",
    "POPULATIONS",
    "SHAPER_POPULATIONS",
    "ESConfig",
    "LOLAConfig",
    "LearnerSpec",
    "MFOSConfig",
    "MetaPPOConfig",
    "NaivePPOConfig",
    "PopulationConfig",
    "SampledGameConfig",
    "always",
    "compare_populations",
    "dice_lola_grads",
    "dice_naive_grads",
    "dice_objective",
    "exact_cooperation",
    "lola_grads",
    "make_dice_learning",
    "make_es_train",
    "make_exact_learning",
    "make_exact_runner",
    "make_mfos_es",
    "make_mfos_ppo",
    "make_mfos_runner",
    "make_mfos_trial",
    "make_sampled_runner",
    "make_sampled_trial",
    "make_shaper_es",
    "memory_one_value_fn",
    "naive_grads",
    "payoff_table",
    "sample_episodes",
    "shaper_seats",
    "summarise_population",
    "tit_for_tat",
]
