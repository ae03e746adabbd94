"""Reward over-optimisation in (iterated) RLHF, small and offline: the gold/proxy set-up of Gao et al. 2022 and the
design options of iterated RLHF of Wolf, Kirk, Musolesi 2025 (arXiv 2505.18126).

- :mod:`~jaxsafety.rlhf.task`: the synthetic instruction task (arithmetic prompts), its programmatic GOLD reward on
  token arrays (jitted), the SFT rows, Bradley-Terry label noise and preference-pair collection;
- :mod:`~jaxsafety.rlhf.fits`: Gao et al.'s functional forms of gold reward vs ``d = sqrt(KL)`` (best-of-n and RL,
  closed-form least squares with R^2), ``KL_bon(n)``, the unbiased best-of-n estimator and gold normalisation;
- :mod:`~jaxsafety.rlhf.iterate`: data transfer, reward combinators over stacked RM params, policy init (SFT /
  continue / LITI) and :class:`IteratedRLHFConfig`.

Reward models and LM PPO / best-of-n come from :mod:`jaxsafety.rl`; this study plugs them in through a generic
``score_fn(params, tokens, mask) -> [B]``.
"""

from jaxsafety.rlhf.fits import (
    OverOptFit,
    best_of_n_expectation,
    fit_overoptimization,
    kl_best_of_n,
    normalize_gold,
    predict_overoptimization,
)
from jaxsafety.rlhf.iterate import (
    IteratedRLHFConfig,
    combined_reward,
    policy_init,
    sample_mix_index,
    transfer_preferences,
    tree_interpolate,
)
from jaxsafety.rlhf.task import (
    GoldConfig,
    GoldTerms,
    PreferencePairs,
    RLHFTask,
    RLHFTaskConfig,
    answers_from_prompts,
    collect_preferences,
    concat_pairs,
    gold_reward,
    gold_reward_fn,
    gold_terms,
    label_preferences,
    pair_sequences,
    rlhf_task,
    sft_data,
    task_tokenizer,
    with_prompts,
)

__all__ = [
    "GoldConfig",
    "GoldTerms",
    "IteratedRLHFConfig",
    "OverOptFit",
    "PreferencePairs",
    "RLHFTask",
    "RLHFTaskConfig",
    "answers_from_prompts",
    "best_of_n_expectation",
    "collect_preferences",
    "combined_reward",
    "concat_pairs",
    "fit_overoptimization",
    "gold_reward",
    "gold_reward_fn",
    "gold_terms",
    "kl_best_of_n",
    "label_preferences",
    "normalize_gold",
    "pair_sequences",
    "policy_init",
    "predict_overoptimization",
    "rlhf_task",
    "sample_mix_index",
    "sft_data",
    "task_tokenizer",
    "transfer_preferences",
    "tree_interpolate",
    "with_prompts",
]
