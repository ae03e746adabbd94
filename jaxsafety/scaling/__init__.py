"""Scaling laws of inference compute: pass@k estimation and the distributional fits that predict its power law.

Schaeffer et al. 2025 ("How Do Large Language Monkeys Get Their Power (Laws)?", arXiv 2502.17578): per problem the
failure rate falls exponentially in the number of attempts ``k``, ``1 - pass_i@k = (1 - p_i)^k``, yet the aggregate
``-log pass@k`` follows a power law ``a k^-b`` because of a heavy left tail of the distribution of ``p_i``. For
``p = scale * x``, ``x ~ Beta(alpha, beta)``: ``-log pass@k ~ Gamma(alpha+beta)/(Gamma(beta) scale^alpha) k^-alpha``,
so ``b = alpha``, which a fit of the distribution to per-problem counts estimates with far less compute than a fit
of the aggregate curve.

- :mod:`~jaxsafety.scaling.passk`: the unbiased ``pass@k`` estimator, its aggregate, the least-squares power law
  and its bootstrap over problems.
- :mod:`~jaxsafety.scaling.distributions`: Beta / Kumaraswamy (scaled or not) likelihoods of per-problem counts
  (binomial mixture and discretised) and the predicted ``pass@k`` curve.
- :mod:`~jaxsafety.scaling.fit`: MLE, bootstrap, and the attempts-per-problem budget for a target precision.
- :mod:`~jaxsafety.scaling.simulate`: synthetic populations and the exponent-error-versus-budget study.
- :mod:`~jaxsafety.scaling.chinchilla`: training scaling laws, Chinchilla approach 3 as replicated by Besiroglu et
  al. 2024 (LSE form, summed Huber loss, L-BFGS from a grid, all starts vmapped), the compute-optimal frontier and
  the power law with offset ``L(C) = a C^-b + c``.
- :mod:`~jaxsafety.scaling.sampling`: repeated sampling of a small zoo LM trained on arithmetic
  (:func:`jaxsafety.train.pretrained.arithmetic_lm`) and its exact success probabilities (imports the model zoo,
  so it is not imported here).
- :mod:`~jaxsafety.scaling.cli`: ``python -m jaxsafety.scaling fit-passk | fit-chinchilla | fit-power-law``.
"""

from jaxsafety.scaling.chinchilla import (
    ChinchillaBootstrap,
    ChinchillaFit,
    ChinchillaParams,
    PowerLawBootstrap,
    PowerLawOffset,
    bootstrap_chinchilla,
    bootstrap_power_law_offset,
    compute_optimal,
    fit_chinchilla,
    fit_power_law_offset,
    predict_loss,
)
from jaxsafety.scaling.distributions import (
    DistributionParams,
    PassAtKCurve,
    beta_binomial_logpmf,
    discretized_log_likelihood,
    kumaraswamy_binomial_logpmf,
    predicted_passk_curve,
    scaled_beta_binomial_logpmf,
    scaled_kumaraswamy_binomial_logpmf,
)
from jaxsafety.scaling.fit import (
    BootstrapResult,
    FitResult,
    SampleBudget,
    bootstrap_fit,
    exponent_standard_error,
    fit_distribution,
    samples_for_exponent_tolerance,
)
from jaxsafety.scaling.passk import (
    aggregate_pass_at_k,
    bootstrap_power_law_lsq,
    fit_power_law_lsq,
    neg_log_pass_at_k,
    pass_at_k,
)
from jaxsafety.scaling.simulate import exponent_estimates, simulate_counts

__all__ = [
    "BootstrapResult",
    "ChinchillaBootstrap",
    "ChinchillaFit",
    "ChinchillaParams",
    "DistributionParams",
    "FitResult",
    "PassAtKCurve",
    "PowerLawBootstrap",
    "PowerLawOffset",
    "SampleBudget",
    "aggregate_pass_at_k",
    "beta_binomial_logpmf",
    "bootstrap_chinchilla",
    "bootstrap_fit",
    "bootstrap_power_law_lsq",
    "bootstrap_power_law_offset",
    "compute_optimal",
    "discretized_log_likelihood",
    "exponent_estimates",
    "exponent_standard_error",
    "fit_chinchilla",
    "fit_distribution",
    "fit_power_law_lsq",
    "fit_power_law_offset",
    "kumaraswamy_binomial_logpmf",
    "neg_log_pass_at_k",
    "pass_at_k",
    "predict_loss",
    "predicted_passk_curve",
    "samples_for_exponent_tolerance",
    "scaled_beta_binomial_logpmf",
    "scaled_kumaraswamy_binomial_logpmf",
    "simulate_counts",
]
