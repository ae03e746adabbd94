"""Reinforcement learning: PPO components (GAE, clipped losses, KL estimators, distributions, normalisation) and the
PureJaxRL-style end-to-end jitted trainer for gymnax environments. Shared by opponent shaping and LM RLHF."""

from jaxsafety.rl.distributions import Categorical, Gaussian, TanhGaussian
from jaxsafety.rl.gae import gae_advantages
from jaxsafety.rl.losses import (
    approx_kl_k1,
    approx_kl_k3,
    clip_fraction,
    clipped_policy_loss,
    clipped_value_loss,
    normalize_advantages,
)
from jaxsafety.rl.networks import ActorCritic, GRUActorCritic
from jaxsafety.rl.normalize import RunningMeanStd, normalize_obs, scale_rewards
from jaxsafety.rl.ppo import PPOConfig, Runner, make_evaluate, make_policy, make_train

__all__ = [
    "ActorCritic",
    "Categorical",
    "GRUActorCritic",
    "Gaussian",
    "PPOConfig",
    "Runner",
    "RunningMeanStd",
    "TanhGaussian",
    "approx_kl_k1",
    "approx_kl_k3",
    "clip_fraction",
    "clipped_policy_loss",
    "clipped_value_loss",
    "gae_advantages",
    "make_evaluate",
    "make_policy",
    "make_train",
    "normalize_advantages",
    "normalize_obs",
    "scale_rewards",
]
