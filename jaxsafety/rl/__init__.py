"""Reinforcement learning: PPO components (GAE, clipped losses, KL estimators, distributions, normalisation) and the
PureJaxRL-style end-to-end jitted trainer for gymnax environments, and the one PPO update
(:func:`make_ppo_update`) that the gymnax trainer, opponent shaping and LM RLHF all call."""

from jaxsafety.rl.distributions import Categorical, Gaussian, TanhGaussian
from jaxsafety.rl.gae import gae_advantages
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
from jaxsafety.rl.update import PPOHyperparams, PPOUpdate, make_ppo_update, ppo_loss

__all__ = [
    "ENV_PRESETS",
    "ActorCritic",
    "Categorical",
    "GRUActorCritic",
    "Gaussian",
    "PPOConfig",
    "PPOHyperparams",
    "PPOUpdate",
    "Runner",
    "RunningMeanStd",
    "TanhGaussian",
    "approx_kl_k1",
    "approx_kl_k3",
    "clip_fraction",
    "clipped_policy_loss",
    "clipped_value_loss",
    "gae_advantages",
    "load_policy",
    "make_evaluate",
    "make_policy",
    "make_ppo_update",
    "make_train",
    "masked_mean",
    "normalize_advantages",
    "normalize_obs",
    "ppo_fields",
    "ppo_loss",
    "save_policy",
    "scale_rewards",
]
