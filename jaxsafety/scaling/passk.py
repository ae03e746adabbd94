"""pass@k from repeated sampling: the unbiased estimator, its aggregate over problems, and the power-law baseline fit.

A problem ``i`` attempted ``n_i`` times with ``c_i`` successes has the unbiased estimator of
``pass_i@k = 1 - (1 - p_i)^k`` (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1)::

    pass_i@k = 1 - C(n - c, k) / C(n, k)          (= 1 exactly when n - c < k)

The aggregate over a set of problems is the mean, ``pass@k = mean_i pass_i@k``, and the empirical regularity
studied by Schaeffer et al. 2025 ("How Do Large Language Monkeys Get Their Power (Laws)?", arXiv 2502.17578) is
the power law ``-log pass@k ~ a k^-b``; :func:`fit_power_law_lsq` is its least-squares fit in log-log space (the
baseline estimator of their section 6, which the distributional fit of :mod:`jaxsafety.scaling.distributions`
improves on).

Numerics (float32 by default): ``log C(n, k)`` is of size ``k log n``, so the textbook
``gammaln(n-c+1) - gammaln(n-c-k+1) - gammaln(n+1) + gammaln(n-k+1)`` loses about ``eps * n log n`` in absolute
terms (0.01 at n = 10^4), which swamps a small ``pass@k``. :func:`pass_at_k` instead writes the log failure ratio
as a short sum of terms each no larger than the result (derivation in :func:`_log_fail_ratio`), which keeps the
relative error of both ``pass@k`` and ``1 - pass@k`` below about 1e-6 (tested against exact rationals; measured
over n up to 10^5).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.config import ConfigError, check_range, concrete_or_none, first_bad
from jaxsafety.scaling._special import stirling_remainder

__all__ = [
    "aggregate_pass_at_k",
    "bootstrap_power_law_lsq",
    "fit_power_law_lsq",
    "neg_log_pass_at_k",
    "neg_log_pass_at_k_unchecked",
    "pass_at_k",
]


# ----------------------------------------------------------------------------------------------------------------
# input checks (run only on concrete inputs; under jit/vmap invalid entries give NaN instead)


def check_counts(n: object, c: object, k: object | None = None, *, k_field: str = "k") -> None:
    """Validate attempt counts ``n``, success counts ``c`` (and ``k``) when they are concrete.

    ``n``: integers >= 1; ``c``: integers with ``0 <= c <= n``; ``k``: integers with ``1 <= k <= n`` (broadcast
    against ``n``). Raises :class:`~jaxsafety.config.ConfigError` (a ``ValueError``) naming the field and, for
    arrays, the index of the first bad entry. Does nothing for traced inputs.
    """
    if any(isinstance(x, jax.core.Tracer) for x in (n, c, k)):
        return
    n_a, c_a = np.asarray(n), np.asarray(c)
    k_a = None if k is None else np.asarray(k)

    def integral(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        return np.isfinite(a) & (a == np.round(a))

    first_bad("n", ~integral(n_a) | ~(n_a >= 1), n_a, "integers >= 1 (attempts per problem)")
    n_b, c_b = np.broadcast_arrays(n_a, c_a)
    first_bad("c", ~integral(c_b) | ~(c_b >= 0), c_b, "integers >= 0 (successes per problem)")
    if np.any(c_b > n_b):
        bad = c_b > n_b
        nv = int(n_b[tuple(np.argwhere(bad)[0])])
        first_bad("c", bad, c_b, f"integers 0 <= c <= n (here n={nv})")
    if k_a is not None:
        n_b, k_b = np.broadcast_arrays(n_a, k_a)
        first_bad(k_field, ~integral(k_b) | ~(k_b >= 1), k_b, "integers >= 1")
        if np.any(k_b > n_b):
            bad = k_b > n_b
            nv = int(np.min(n_a))
            first_bad(k_field, bad, k_b, f"integers 1 <= k <= n (smallest n here is {nv})")


# ----------------------------------------------------------------------------------------------------------------
# the estimator


def _log1m_ratio(u: jax.Array, b: jax.Array) -> jax.Array:
    """``log(1 - u/b)`` for ``0 <= u < b``: ``log1p`` for ``u/b < 1/2``, else ``log(b - u) - log(b)`` (``b - u`` is
    exact for integer-valued floats, whereas rounding ``u/b`` near 1 would cost ``eps / (1 - u/b)`` relative)."""
    near_one = u > 0.5 * b
    diff = jnp.where(near_one, b - u, 1.0)
    return jnp.where(near_one, jnp.log(diff) - jnp.log(b), jnp.log1p(-jnp.where(near_one, 0.0, u / b)))


def _q(b: jax.Array, u: jax.Array) -> jax.Array:
    """``q(B, u) = (B - u - 1/2) log(1 - u/B) + u = B w(u/B) - log(1 - u/B)/2`` with
    ``w(t) = (1 - t) log(1 - t) + t = sum_{j >= 2} t^j / (j (j - 1))``: by the series (truncated where the rest is
    below 2e-9 relative) for ``u/B < 1/4``, where the direct form cancels, and directly above."""
    t = u / b
    small = t < 0.25
    ts = jnp.where(small, t, 0.0)
    acc = jnp.zeros_like(ts)
    for j in range(16, 1, -1):  # Horner on sum_{j=2}^{16} t^(j-2) / (j (j-1))
        acc = acc * ts + 1.0 / (j * (j - 1))
    series = b * ts * ts * acc - 0.5 * jnp.log1p(-ts)
    direct = (b - u - 0.5) * _log1m_ratio(jnp.where(small, 0.0, u), b) + u
    return jnp.where(small, series, direct)


def _log_fail_ratio(n: jax.Array, c: jax.Array, k: jax.Array) -> jax.Array:
    """``log[C(n - c, k) / C(n, k)]`` (``-inf`` where ``n - c < k``), relative error below about 1e-6.

    Derivation. With ``L(x) = lgamma(x + 1)`` the ratio is the second difference
    ``L(n-c) + L(n-k) - L(n) - L(n-c-k)``, symmetric in ``c`` and ``k``; let ``u = min(c, k)``, ``v = max(c, k)``,
    ``A = n + 1``. Split ``lgamma(z) = (z - 1/2) log z - z + log(2 pi)/2 + r(z)``. The linear and constant
    parts cancel exactly, leaving with ``g(z) = (z - 1/2) log z``::

        D = g(A-u) - g(A) - [g(A-v-u) - g(A-v)]
          = u log1p(-v/A) + q(A, u) - q(A-v, u),      q(B, u) = B w(u/B) - log1p(-u/B) / 2,
                                                       w(t)    = (1 - t) log1p(-t) + t
        R = [r(A-u) - r(A)] - [r(A-v-u) - r(A-v)]

    (``g(B-u) - g(B) = (B-u-1/2) log1p(-u/B) - u log B``; adding and subtracting ``u`` turns the two
    ``(B-u-1/2) log1p(-u/B)`` terms into ``q``). The main term ``u log1p(-v/A) ~ -uv/A`` is computed to full
    relative precision; ``q(B, u) ~ u(u+1)/(2B)`` is small, and the cancellation in ``q(A,u) - q(A-v,u)`` costs at
    most ``2 eps`` relative to the main term because ``u <= v`` and ``A - v >= u + 1``; the ``r`` terms are each
    below ``1/(12 z)`` and their errors are likewise bounded relative to the result. (``w`` is evaluated by its
    series for small ``t``, and ``log(1 - x/B)`` from the exact difference ``B - x`` when ``x/B`` is near 1: see
    :func:`_q` and :func:`_log1m_ratio`.)
    """
    trivial = n - c < k
    # Safe stand-ins where the ratio is 0, so that no log of a non-positive number is taken.
    c_ = jnp.where(trivial, 0.0, c)
    u = jnp.minimum(c_, k)
    v = jnp.maximum(c_, k)
    a = n + 1.0

    d = u * _log1m_ratio(v, a) + _q(a, u) - _q(a - v, u)
    # Grouped as two first differences in u, so that u = 0 (no successes) gives exactly 0.
    r = (stirling_remainder(a - u) - stirling_remainder(a)) - (
        stirling_remainder(a - v - u) - stirling_remainder(a - v)
    )
    return jnp.where(trivial, -jnp.inf, d + r)


def _float(x: object) -> jax.Array:
    return jnp.asarray(x, dtype=jnp.result_type(float))


def _valid(n: jax.Array, c: jax.Array, k: jax.Array) -> jax.Array:
    """Mask of valid entries (for traced inputs, whose checks cannot raise)."""
    return (n >= 1) & (c >= 0) & (c <= n) & (k >= 1) & (k <= n)


def pass_at_k(n: jax.Array, c: jax.Array, k: jax.Array) -> jax.Array:
    """Unbiased ``pass@k`` estimate ``1 - C(n - c, k) / C(n, k)`` (Chen et al. 2021), broadcast over inputs.

    ``n``: attempts, ``c``: successes, ``k``: budget; integer-valued arrays (any dtype) that broadcast together.
    Exactly 1 where ``n - c < k``. Requires ``1 <= k <= n`` and ``0 <= c <= n``: concrete inputs that violate this
    raise :class:`~jaxsafety.config.ConfigError` naming the field (``n``, ``c`` or ``k``); under ``jit``/``vmap``
    the checks cannot run and invalid entries come out as NaN. Relative error below about 1e-6 in both
    ``pass@k`` and ``1 - pass@k`` (module docstring).
    """
    check_counts(n, c, k)
    return _pass_at_k(_float(n), _float(c), _float(k))


@jax.jit
def _pass_at_k(n: jax.Array, c: jax.Array, k: jax.Array) -> jax.Array:
    # Jitted core: op-by-op dispatch of these few dozen elementwise ops would cost more than the compile.
    return jnp.where(_valid(n, c, k), -jnp.expm1(_log_fail_ratio(n, c, k)), jnp.nan)


@jax.jit
def _mean_pass_and_fail(n: jax.Array, c: jax.Array, ks: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(mean_i pass_i@k, mean_i (1 - pass_i@k))`` ``[K]`` from ``[K, P]`` log failure ratios (NaN if invalid)."""
    n, c, ks = n[None, :], c[None, :], ks[:, None]
    lf = jnp.where(_valid(n, c, ks), _log_fail_ratio(n, c, ks), jnp.nan)
    return jnp.mean(-jnp.expm1(lf), axis=-1), jnp.mean(jnp.exp(lf), axis=-1)


def _check_aggregate(n: object, c: object, ks: object) -> None:
    for name, x, ndim in (("n", n, 1), ("c", c, 1), ("ks", ks, 1)):
        a = concrete_or_none(x)
        if a is not None and a.ndim != ndim:
            raise ConfigError(f"{name}.shape", a.shape, "1-D arrays (n, c: [P] problems; ks: [K] budgets)")
    nc = [concrete_or_none(x) for x in (n, c)]
    if all(a is not None for a in nc) and nc[0].shape != nc[1].shape:
        raise ConfigError("c.shape", nc[1].shape, f"the shape of n, {nc[0].shape}")
    check_counts(n, c)
    a_n, a_k = concrete_or_none(n), concrete_or_none(ks)
    if a_n is not None and a_k is not None:
        check_counts(np.min(a_n), 0, a_k, k_field="ks")


def aggregate_pass_at_k(n: jax.Array, c: jax.Array, ks: jax.Array) -> jax.Array:
    """Dataset ``pass@k = mean_i pass_i@k`` ``[K]`` for attempts ``n`` ``[P]``, successes ``c`` ``[P]`` and budgets
    ``ks`` ``[K]`` (each ``k <= min_i n_i``; checks and traced behaviour as in :func:`pass_at_k`)."""
    _check_aggregate(n, c, ks)
    return _mean_pass_and_fail(_float(n), _float(c), _float(ks))[0]


def neg_log_pass_at_k(n: jax.Array, c: jax.Array, ks: jax.Array) -> jax.Array:
    """``-log pass@k`` ``[K]`` of :func:`aggregate_pass_at_k`, the quantity that follows the power law.

    Computed as ``-log(mean pass_i@k)`` while the mean is below 1/2 and as ``-log1p(-mean fail_i@k)`` (from the
    failure probabilities ``C(n-c,k)/C(n,k)`` directly) above, so it keeps relative precision as ``pass@k -> 1``
    and ``-log pass@k -> 0`` (the large-k end of the power law).
    """
    _check_aggregate(n, c, ks)
    return neg_log_pass_at_k_unchecked(_float(n), _float(c), _float(ks))


def neg_log_pass_at_k_unchecked(n: jax.Array, c: jax.Array, ks: jax.Array) -> jax.Array:
    """:func:`neg_log_pass_at_k` without the input checks, for use inside ``jit``/``vmap`` (float inputs;
    invalid entries give NaN)."""
    mean_pass, mean_fail = _mean_pass_and_fail(n, c, ks)
    return jnp.where(mean_pass < 0.5, -jnp.log(mean_pass), -jnp.log1p(-mean_fail))


@jax.jit
def fit_power_law_lsq(ks: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Least-squares power law ``y ~ a k^-b`` to ``y = -log pass@k`` ``[K]`` at budgets ``ks`` ``[K]``.

    Ordinary least squares of ``log y = log a - b log k``: with ``x = log k`` and ``z = log y``,
    ``b = -cov(x, z) / var(x)`` and ``log a = mean(z) + b mean(x)``. Entries with ``y <= 0`` or non-finite ``y``
    (``pass@k = 1`` or undefined) are left out (masked, so the function stays jittable). Returns ``(a, b)``.
    This is the baseline estimator whose exponent needs ``pass@k`` measured out to large ``k``; compare
    :func:`jaxsafety.scaling.fit_distribution`.
    """
    ks, y = _float(ks), _float(y)
    ok = (y > 0) & jnp.isfinite(y) & (ks > 0)
    wts = ok.astype(y.dtype)
    x = jnp.log(jnp.where(ok, ks, 1.0))
    z = jnp.log(jnp.where(ok, y, 1.0))
    total = jnp.sum(wts)
    mx = jnp.sum(wts * x) / total
    mz = jnp.sum(wts * z) / total
    cov = jnp.sum(wts * (x - mx) * (z - mz))
    var = jnp.sum(wts * (x - mx) ** 2)
    b = -cov / var
    return jnp.exp(mz + b * mx), b


@functools.partial(jax.jit, static_argnames=("num_resamples",))
def _bootstrap_lsq(
    key: jax.Array, n: jax.Array, c: jax.Array, ks: jax.Array, *, num_resamples: int
) -> tuple[jax.Array, jax.Array]:
    num_problems = n.shape[0]

    def one(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        idx = jax.random.randint(k, (num_problems,), 0, num_problems)
        return fit_power_law_lsq(ks, neg_log_pass_at_k_unchecked(n[idx], c[idx], ks))

    return jax.vmap(one)(jax.random.split(key, num_resamples))


def bootstrap_power_law_lsq(
    key: jax.Array, n: jax.Array, c: jax.Array, ks: jax.Array, *, num_resamples: int = 200
) -> tuple[jax.Array, jax.Array]:
    """Bootstrap over problems of :func:`fit_power_law_lsq` on the aggregate ``-log pass@k``: ``(a, b)``, each
    ``[num_resamples]``.

    Resample ``r`` draws the ``P`` problems with replacement (``jax.random.randint`` under
    ``jax.random.split(key, num_resamples)[r]``), computes ``-log pass@k`` at ``ks`` on the resampled attempts
    ``n`` and successes ``c`` (``[P]``; checked as in :func:`neg_log_pass_at_k`) and fits the power law; all
    resamples run in one jitted ``vmap``. Percentiles of ``b`` give the interval of the least-squares exponent.
    """
    _check_aggregate(n, c, ks)
    check_range("num_resamples", num_resamples, ge=1, integer=True)
    return _bootstrap_lsq(key, _float(n), _float(c), _float(ks), num_resamples=num_resamples)
