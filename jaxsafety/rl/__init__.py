"""Reinforcement learning: PPO components (GAE, clipped losses, KL estimators, distributions, normalisation) and the
PureJaxRL-style end-to-end jitted trainer for gymnax environments, the one PPO update (:func:`make_ppo_update`)
that the gymnax trainer, opponent shaping and LM RLHF all call, Bradley-Terry reward models
(:mod:`jaxsafety.rl.reward`) and LM PPO / RLOO / best-of-n (:mod:`jaxsafety.rl.lm_ppo`)."""

from jaxsafety.rl.distributions import Categorical, Gaussian, TanhGaussian
from jaxsafety.rl.gae import gae_advantages
from jaxsafety.rl.lm_ppo import (
    LMPPOConfig,
    LMPPOState,
    adaptive_kl_update,
    best_of_n,
    best_of_n_kl,
    make_lm_ppo,
    rloo_advantages,
)
from jaxsafety.rl.losses import (
    approx_kl_k1,
    approx_kl_k3,
    clip_fraction,
    clipped_policy_loss,
    clipped_value_loss,
    masked_mean,
    normalize_advantages,
)
from jaxsafety.rl.networks import ActorCritic, GRUActorCritic
from jaxsafety.rl.normalize import RunningMeanStd, normalize_obs, scale_rewards
from jaxsafety.rl.ppo import PPOConfig, Runner, make_evaluate, make_policy, make_train
from jaxsafety.rl.presets import ENV_PRESETS, load_policy, ppo_fields, save_policy
from jaxsafety.rl.reward import (
    PreferenceBatch,
    RewardModelConfig,
    RewardModels,
    RewardNormalizer,
    bradley_terry_loss,
    evaluate_rewards,
    make_reward_model,
    train_reward_models,
)
from jaxsafety.rl.update import PPOHyperparams, PPOUpdate, make_ppo_update, ppo_loss

__all__ = [
    "ENV_PRESETS",
    "ActorCritic",
    "Categorical",
    "GRUActorCritic",
    "Gaussian",
    "LMPPOConfig",
    "LMPPOState",
    "PPOConfig",
    "PPOHyperparams",
    "PPOUpdate",
    "PreferenceBatch",
    "RewardModelConfig",
    "RewardModels",
    "RewardNormalizer",
    "Runner",
    "RunningMeanStd",
    "TanhGaussian",
    "adaptive_kl_update",
    "approx_kl_k1",
    "approx_kl_k3",
    "best_of_n",
    "best_of_n_kl",
    "bradley_terry_loss",
    "clip_fraction",
    "clipped_policy_loss",
    "clipped_value_loss",
    "evaluate_rewards",
    "gae_advantages",
    "load_policy",
    "make_evaluate",
    "make_lm_ppo",
    "make_policy",
    "make_ppo_update",
    "make_reward_model",
    "make_train",
    "masked_mean",
    "normalize_advantages",
    "normalize_obs",
    "ppo_fields",
    "ppo_loss",
    "rloo_advantages",
    "save_policy",
    "scale_rewards",
    "train_reward_models",
]
