"""Influence functions on the model zoo: K-FAC / EK-FAC curvature of dense layers and influence scores
(Grosse et al. 2023, "Studying large language model generalization with influence functions", arXiv 2308.03296).

from jaxsafety.influence import InfluenceConfig, fit_factors, query_gradients, pairwise_scores, token_influence
config = InfluenceConfig(strategy="ekfac")                  # default layers: every MLP layer of every block
factors = fit_factors(model, {"tokens": train_tokens}, config, jax.random.key(0))   # sampled-label Fisher
scores = pairwise_scores(model, factors, {"tokens": q_tokens, "loss_mask": q_mask}, {"tokens": train_tokens},
                         config)                            # [Q, N]
per_token = token_influence(model, factors, queries, {"tokens": train_tokens[:1]}, config)   # [Q, 1, T]

- :mod:`~jaxsafety.influence.factors`: :class:`InfluenceConfig`, :func:`fit_factors` (streaming sums of
  ``A = E[x x^T]``, ``S = E[g g^T]``, eigendecomposition, EK-FAC eigenvalue correction, damping),
  :func:`precondition` (damped inverse for identity / diagonal / kfac / ekfac), the losses.
- :mod:`~jaxsafety.influence.scores`: :func:`query_gradients` (preconditioned, optional low-rank),
  :func:`pairwise_scores`, :func:`token_influence`.
- :mod:`~jaxsafety.influence.storage`: :func:`save_factors` / :func:`load_factors`, :func:`save_scores` /
  :func:`load_scores` (safetensors, atomic).
- :mod:`~jaxsafety.influence.lds`: the linear datamodeling score (:func:`subset_masks`, :func:`retrain_subsets`
  vmapped over subsets, :func:`predicted_losses`, :func:`lds`) and its exact ground truth
  :func:`convex_head_problem` (:class:`ConvexHeadProblem`: a convex LM-head problem retrained exactly on every
  subset, with the dense influence).
"""

from jaxsafety.influence.factors import (
    STRATEGIES,
    Factors,
    InfluenceConfig,
    LayerFactors,
    fit_factors,
    length_sorted_chunks,
    mlp_layers,
    next_token_loss,
    precondition,
    sampled_next_token_loss,
)
from jaxsafety.influence.lds import (
    ConvexHeadProblem,
    convex_head_problem,
    lds,
    predicted_losses,
    retrain_subsets,
    spearman,
    subset_masks,
)
from jaxsafety.influence.scores import QueryGradients, pairwise_scores, query_gradients, token_influence
from jaxsafety.influence.storage import load_factors, load_scores, save_factors, save_scores

__all__ = [
    "STRATEGIES",
    "ConvexHeadProblem",
    "Factors",
    "InfluenceConfig",
    "LayerFactors",
    "QueryGradients",
    "convex_head_problem",
    "fit_factors",
    "lds",
    "length_sorted_chunks",
    "load_factors",
    "load_scores",
    "mlp_layers",
    "next_token_loss",
    "pairwise_scores",
    "precondition",
    "predicted_losses",
    "query_gradients",
    "retrain_subsets",
    "sampled_next_token_loss",
    "save_factors",
    "save_scores",
    "spearman",
    "subset_masks",
    "token_influence",
]
