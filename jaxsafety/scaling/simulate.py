"""Synthetic problem populations with a known distribution of single-attempt success probabilities, and the
exponent-error-versus-sampling-budget study of Schaeffer et al. 2025 (section 6), vmapped over seeds.

A population draws ``p_i = scale * x_i`` with ``x_i ~ Beta(alpha, beta)`` (or Kumaraswamy(a, b)), then
``c_i ~ Binomial(n, p_i)`` successes in ``n`` attempts per problem. The true power-law exponent of the aggregate
``-log pass@k`` is ``alpha`` (:func:`jaxsafety.scaling.predicted_passk_curve`). :func:`exponent_estimates` draws
``num_seeds`` independent populations per budget ``n`` and returns every estimator's exponent, so that the
relative error ``|b_hat / alpha - 1|`` can be compared at equal inference compute (``n`` attempts per problem):

- ``least_squares``: the power law fitted to the measured aggregate ``-log pass@k`` at log-spaced ``k <= n``
  (:func:`jaxsafety.scaling.fit_power_law_lsq`, the baseline);
- the distributional estimators of :data:`ESTIMATORS` (:func:`jaxsafety.scaling.fit_distribution` on the counts).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.config import ConfigError, check_range
from jaxsafety.scaling.distributions import DistributionParams, check_distribution_params, check_family
from jaxsafety.scaling.fit import fit_distribution_unchecked
from jaxsafety.scaling.passk import fit_power_law_lsq, neg_log_pass_at_k_unchecked

__all__ = [
    "ESTIMATORS",
    "LEAST_SQUARES",
    "exponent_estimates",
    "lsq_budgets",
    "sample_success_probs",
    "simulate_counts",
]

LEAST_SQUARES = "least_squares"
# name -> (family, scaled, likelihood); the names of Schaeffer et al. 2025's estimators
ESTIMATORS: dict[str, tuple[str, bool, str]] = {
    "beta_binomial": ("beta", False, "binomial"),
    "scaled_beta_binomial": ("beta", True, "binomial"),
    "kumaraswamy_binomial": ("kumaraswamy", False, "binomial"),
    "scaled_kumaraswamy_binomial": ("kumaraswamy", True, "binomial"),
    "discretized_beta": ("beta", False, "discretized"),
    "discretized_scaled_beta": ("beta", True, "discretized"),
    "discretized_kumaraswamy": ("kumaraswamy", False, "discretized"),
    "discretized_scaled_kumaraswamy": ("kumaraswamy", True, "discretized"),
}
_MAX_LSQ_BUDGETS = 48


def lsq_budgets(max_k: int, num: int = _MAX_LSQ_BUDGETS) -> np.ndarray:
    """Distinct integer budgets ``k`` log-spaced in ``[1, max_k]`` (at most ``num``): where the least-squares
    baseline evaluates ``-log pass@k`` (log spacing weights every decade of ``k`` equally in the log-log fit)."""
    check_range("max_k", max_k, ge=1, integer=True)
    return np.unique(np.round(np.geomspace(1, max_k, num)).astype(np.int64))


def sample_success_probs(
    rng: np.random.Generator, params: DistributionParams, family: str, shape: int | Sequence[int]
) -> np.ndarray:
    """``p = scale * x`` with ``x ~ Beta(alpha, beta)`` or ``Kumaraswamy(alpha, beta)`` (by inversion:
    ``x = (1 - (1 - u)^(1/b))^(1/a)``), of the given ``shape`` (float64, numpy: exact samplers that cost no
    compilation; JAX's Beta and binomial samplers take ~10 s each to compile on CPU)."""
    a, b, s = (float(v) for v in params)
    if family == "beta":
        x = rng.beta(a, b, shape)
    else:
        u = rng.random(shape)
        x = (-np.expm1(np.log1p(-u) / b)) ** (1.0 / a)
    return s * x


def simulate_counts(
    rng: np.random.Generator,
    params: DistributionParams,
    family: str,
    num_problems: int,
    attempts: int,
    num: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """``num`` independent populations: success probabilities ``p`` ``[num, P]`` and successes
    ``c ~ Binomial(attempts, p)`` ``[num, P]`` (int64)."""
    p = sample_success_probs(rng, params, family, (num, num_problems))
    return p, rng.binomial(attempts, p)


def _check_names(estimators: Sequence[str]) -> None:
    accepted = [LEAST_SQUARES, *ESTIMATORS]
    for name in estimators:
        if name not in accepted:
            raise ConfigError("estimators", name, "names from " + ", ".join(accepted))


@functools.partial(jax.jit, static_argnames=("estimators", "max_attempts"))
def _estimates(
    n: jax.Array, c: jax.Array, ks: jax.Array, *, estimators: tuple[str, ...], max_attempts: int
) -> dict[str, jax.Array]:
    """Every estimator's exponent for populations ``c`` ``[S, P]`` with ``n`` attempts each (traced, so one
    compilation serves every budget up to ``max_attempts``); ``ks`` ``[K]``: least-squares budgets, padded with
    entries ``> n`` (whose ``-log pass@k`` is NaN, which the fit leaves out)."""

    def one(c: jax.Array) -> dict[str, jax.Array]:
        nn = jnp.full(c.shape, n, c.dtype)
        out = {}
        for name in estimators:
            if name == LEAST_SQUARES:
                out[name] = fit_power_law_lsq(ks, neg_log_pass_at_k_unchecked(nn, c, ks))[1]
                continue
            family, scaled, likelihood = ESTIMATORS[name]
            fit = fit_distribution_unchecked(
                nn,
                c,
                jnp.ones_like(c),
                None,
                family=family,
                scaled=scaled,
                likelihood=likelihood,
                num_nodes=32,
                num_steps=40,
                max_attempts=max_attempts,  # a static bound on n: the beta-binomial's sufficient statistics
            )
            out[name] = jnp.where(fit.converged, fit.params.alpha, jnp.nan)
        return out

    return jax.vmap(one)(c)


def exponent_estimates(
    seed: int,
    params: DistributionParams,
    family: str,
    *,
    budgets: Sequence[int],
    num_problems: int,
    num_seeds: int,
    estimators: Sequence[str] = (LEAST_SQUARES, "beta_binomial"),
    show_progress: bool = False,
) -> dict[str, np.ndarray]:
    """Each estimator's fitted exponent ``[len(budgets), num_seeds]`` over ``num_seeds`` independent populations
    of ``num_problems`` problems with ``budgets[j]`` attempts each (NaN where a distributional fit did not
    converge). The populations are drawn with numpy (``default_rng([seed, j])`` for budget ``j``: budgets are
    independent); the fits run in one jitted program vmapped over the populations, compiled once for all
    budgets. The truth to compare with is ``params.alpha``. ``show_progress``: a progress bar over budgets."""
    from jaxsafety.train.progress import progress

    check_family(family)
    check_distribution_params(params)
    _check_names(estimators)
    check_range("num_problems", num_problems, ge=3, integer=True)
    check_range("num_seeds", num_seeds, ge=1, integer=True)
    for b in budgets:
        check_range("budgets", b, ge=2, integer=True)
    max_attempts = 1 << (int(max(budgets)) - 1).bit_length()
    rows = []
    for j, budget in enumerate(progress(budgets, desc="budgets", enabled=None if show_progress else False)):
        _, c = simulate_counts(
            np.random.default_rng([seed, j]), params, family, num_problems, int(budget), num_seeds
        )
        ks = lsq_budgets(int(budget))
        ks = np.concatenate([ks, np.full(_MAX_LSQ_BUDGETS - len(ks), budget + 1)])
        out = _estimates(
            jnp.asarray(float(budget)),
            jnp.asarray(c, jnp.float32),
            jnp.asarray(ks, jnp.float32),
            estimators=tuple(estimators),
            max_attempts=max_attempts,
        )
        rows.append({k: np.asarray(v) for k, v in out.items()})
    return {name: np.stack([r[name] for r in rows]) for name in estimators}
