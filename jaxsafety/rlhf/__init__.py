"""Reward over-optimisation in (iterated) RLHF, small and offline: the gold/proxy set-up of Gao et al. 2022 and the
design options of iterated RLHF of Wolf, Kirk, Musolesi 2025 (arXiv 2505.18126).

- :mod:`~jaxsafety.rlhf.task`: the synthetic instruction task (arithmetic prompts), its programmatic GOLD reward on
  token arrays (jitted), the SFT rows, Bradley-Terry label noise and preference-pair collection;
- :mod:`~jaxsafety.rlhf.fits`: Gao et al.'s functional forms of gold reward vs ``d = sqrt(KL)`` (best-of-n and RL,
  closed-form least squares with R^2), ``KL_bon(n)``, the unbiased best-of-n estimator and gold normalisation;
- :mod:`~jaxsafety.rlhf.pipeline`: the study's pipeline (SFT policy through the trained-model cache, per-round
  proxy RM ensembles in a fixed buffer, best-of-n curves, LM PPO against the combined proxy, one grid cell);
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
from jaxsafety.rlhf.pipeline import (
    PolicyEval,
    RMBuffer,
    StudyConfig,
    best_of_n_curve,
    evaluate_policy,
    gold_at_kl,
    proxy_reward_fn,
    round_score,
    run_iterated_rlhf,
    sft_policy,
    train_round_rm,
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
    "PolicyEval",
    "PreferencePairs",
    "RLHFTask",
    "RLHFTaskConfig",
    "RMBuffer",
    "StudyConfig",
    "answers_from_prompts",
    "best_of_n_curve",
    "best_of_n_expectation",
    "collect_preferences",
    "combined_reward",
    "concat_pairs",
    "evaluate_policy",
    "fit_overoptimization",
    "gold_at_kl",
    "gold_reward",
    "gold_reward_fn",
    "gold_terms",
    "kl_best_of_n",
    "label_preferences",
    "normalize_gold",
    "pair_sequences",
    "policy_init",
    "predict_overoptimization",
    "proxy_reward_fn",
    "rlhf_task",
    "round_score",
    "run_iterated_rlhf",
    "sample_mix_index",
    "sft_data",
    "sft_policy",
    "task_tokenizer",
    "train_round_rm",
    "transfer_preferences",
    "tree_interpolate",
    "with_prompts",
]
