"""Opponent-shaping learners for N-player general-sum games (Souly et al. 2023, "Leading the Pack: N-player
Opponent Shaping"): naive learners and N-player LOLA with exact gradients or sampled (DiCE) estimates, M-FOS-style
meta-learned shapers (OpenES or meta-PPO outer loop) on the exact games, Shaper-style recurrent shapers (OpenES)
against PPO naive learners on sampled games, fixed baseline policies."""

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
from jaxsafety.shaping.shaper import NaivePPOConfig, SampledGameConfig, make_sampled_trial, make_shaper_es

__all__ = [
    "ESConfig",
    "LOLAConfig",
    "LearnerSpec",
    "MFOSConfig",
    "MetaPPOConfig",
    "NaivePPOConfig",
    "SampledGameConfig",
    "always",
    "dice_lola_grads",
    "dice_naive_grads",
    "dice_objective",
    "lola_grads",
    "make_dice_learning",
    "make_es_train",
    "make_exact_learning",
    "make_mfos_es",
    "make_mfos_ppo",
    "make_mfos_trial",
    "make_sampled_trial",
    "make_shaper_es",
    "memory_one_value_fn",
    "naive_grads",
    "sample_episodes",
    "tit_for_tat",
]
