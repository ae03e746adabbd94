"""Opponent-shaping learners for N-player general-sum games (Souly et al. 2023, "Leading the Pack: N-player
Opponent Shaping"): naive learners and N-player LOLA with exact gradients, fixed baseline policies."""

from jaxsafety.shaping.exact import (
    LearnerSpec,
    LOLAConfig,
    lola_grads,
    make_exact_learning,
    memory_one_value_fn,
    naive_grads,
)
from jaxsafety.shaping.policies import always, tit_for_tat

__all__ = [
    "LOLAConfig",
    "LearnerSpec",
    "always",
    "lola_grads",
    "make_exact_learning",
    "memory_one_value_fn",
    "naive_grads",
    "tit_for_tat",
]
