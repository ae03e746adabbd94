"""Log-gamma and its derivatives from Stirling's series, in small elementary graphs.

Why not ``jax.scipy.special``: the fits of :mod:`jaxsafety.scaling.fit` take Hessians of likelihoods built from
log-gamma functions, and XLA expands ``lgamma``'s second derivative (``polygamma``) into a very large graph (most
of a fit's compile time). Here ``lgamma``, ``digamma`` and ``trigamma`` are a few dozen elementwise operations,
accurate to float32 rounding, with custom JVPs chaining ``lgamma' = digamma``, ``digamma' = trigamma``.

Also the remainder ``r(z)`` and log-gamma differences that stay accurate for large arguments (used by the pass@k
estimator and the beta-binomial likelihood).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SHIFT = 6.0  # digamma / trigamma: recurrence up to z + 6 before the asymptotic series


def stirling_series(z: jax.Array) -> jax.Array:
    """Stirling series ``sum_{k=1}^{6} B_2k / (2k (2k-1) z^(2k-1))`` ``= 1/(12z) - 1/(360z^3) + 1/(1260z^5)
    - 1/(1680z^7) + 1/(1188z^9) - 691/(360360z^11)``: the remainder ``r(z)`` to within the next term,
    ``1/(156 z^13)``, below 5e-9 for ``z >= 3``."""
    iz = 1.0 / z
    iz2 = iz * iz
    acc = -691.0 / 360360.0
    for coef in (1.0 / 1188.0, -1.0 / 1680.0, 1.0 / 1260.0, -1.0 / 360.0, 1.0 / 12.0):
        acc = acc * iz2 + coef
    return iz * acc


def stirling_remainder(z: jax.Array) -> jax.Array:
    """``r(z) = lgamma(z) - [(z - 1/2) log z - z + log(2 pi)/2]`` for ``z > 0`` (between 0 and ``1/(12z)``).

    :func:`stirling_series` for ``z >= K``; below, the recurrence ``lgamma(z) = lgamma(z + K) - log(z (z+1) ...
    (z+K-1))`` gives ``r(z) = r(z+K) + (z + K - 1/2) log(z+K) - (z - 1/2) log z - K - log prod_{j<K} (z + j)``.
    ``K = 3`` in float32 (series truncation below 5e-9, under float32 rounding; the recurrence's cancellation
    costs about 1e-6 absolute, like ``jax.scipy.special.gammaln`` itself) and ``K = 8`` in float64 (truncation
    below 1e-14, so the switch between the branches is continuous to that level).
    """
    k = 3 if jnp.finfo(jnp.result_type(z)).bits <= 32 else 8
    big = z >= k
    zb = jnp.where(big, z, float(k))
    zs = jnp.where(big, 1.0, z)
    prod = zs
    for j in range(1, k):
        prod = prod * (zs + j)
    small = stirling_series(zs + k) + (zs + k - 0.5) * jnp.log(zs + k) - (zs - 0.5) * jnp.log(zs) - k
    return jnp.where(big, stirling_series(zb), small - jnp.log(prod))


def _shifted(z: jax.Array) -> tuple[jax.Array, jax.Array, list[jax.Array]]:
    """``(small, z_shifted, [z, z+1, ..., z+5])``: where ``z < 6`` the recurrences run from ``z + 6``."""
    small = z < _SHIFT
    zs = jnp.where(small, z, 1.0)
    return small, jnp.where(small, z + _SHIFT, z), [zs + j for j in range(int(_SHIFT))]


@jax.custom_jvp
def trigamma(z: jax.Array) -> jax.Array:
    """``psi'(z)`` for ``z > 0``: ``psi'(z) = psi'(z + 6) + sum_{j<6} 1/(z+j)^2`` and, for ``w >= 6``,
    ``psi'(w) ~ 1/w + 1/(2w^2) + 1/(6w^3) - 1/(30w^5) + 1/(42w^7) - 1/(30w^9)`` (next term ``5/(66 w^11)``,
    below 2e-10 relative)."""
    small, w, terms = _shifted(z)
    iw = 1.0 / w
    iw2 = iw * iw
    series = iw + 0.5 * iw2 + iw * iw2 * (1.0 / 6.0 - iw2 * (1.0 / 30.0 - iw2 * (1.0 / 42.0 - iw2 / 30.0)))
    return series + jnp.where(small, sum(1.0 / (t * t) for t in terms), 0.0)


@trigamma.defjvp
def _trigamma_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    # psi''(z) ~ -1/z^2 - 1/z^3 - 1/(2z^4) + 1/(6z^6) - 1/(6z^8) + 3/(10z^10) (w >= 6), with the recurrence.
    (z,), (z_dot,) = primals, tangents
    small, w, terms = _shifted(z)
    iw = 1.0 / w
    iw2 = iw * iw
    series = -iw2 * (1.0 + iw + iw2 * (0.5 - iw2 * (1.0 / 6.0 - iw2 * (1.0 / 6.0 - iw2 * 0.3))))
    second = series - jnp.where(small, sum(2.0 / (t * t * t) for t in terms), 0.0)
    return trigamma(z), second * z_dot


@jax.custom_jvp
def digamma(z: jax.Array) -> jax.Array:
    """``psi(z)`` for ``z > 0``: ``psi(z) = psi(z + 6) - sum_{j<6} 1/(z+j)`` and, for ``w >= 6``,
    ``psi(w) ~ log w - 1/(2w) - 1/(12w^2) + 1/(120w^4) - 1/(252w^6) + 1/(240w^8)`` (next term ``1/(132 w^10)``,
    below 2e-10)."""
    small, w, terms = _shifted(z)
    iw = 1.0 / w
    iw2 = iw * iw
    series = (
        jnp.log(w) - 0.5 * iw - iw2 * (1.0 / 12.0 - iw2 * (1.0 / 120.0 - iw2 * (1.0 / 252.0 - iw2 / 240.0)))
    )
    return series - jnp.where(small, sum(1.0 / t for t in terms), 0.0)


@digamma.defjvp
def _digamma_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    (z,), (z_dot,) = primals, tangents
    return digamma(z), trigamma(z) * z_dot


@jax.custom_jvp
def lgamma(z: jax.Array) -> jax.Array:
    """``log Gamma(z)`` for ``z > 0`` as ``(z - 1/2) log z - z + log(2 pi)/2 + r(z)`` (:func:`stirling_remainder`;
    absolute error ~``eps |lgamma(z)|``, like ``gammaln``)."""
    return (z - 0.5) * jnp.log(z) - z + HALF_LOG_2PI + stirling_remainder(z)


@lgamma.defjvp
def _lgamma_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    (z,), (z_dot,) = primals, tangents
    return lgamma(z), digamma(z) * z_dot


def log_beta(a: jax.Array, b: jax.Array) -> jax.Array:
    """``log B(a, b) = lgamma(a) + lgamma(b) - lgamma(a + b)`` for moderate ``a, b`` (distribution parameters;
    absolute error ~``eps * |lgamma|``, 1e-5 at ``a, b ~ 10``)."""
    return lgamma(a) + lgamma(b) - lgamma(a + b)


@jax.custom_jvp
def lgamma_diff(x: jax.Array, d: jax.Array) -> jax.Array:
    """``lgamma(x + d) - lgamma(x)`` for ``x > 0``, ``x + d > 0``, to relative precision for large ``x``.

    With ``lgamma(z) = (z - 1/2) log z - z + log(2 pi)/2 + r(z)`` (exact given the remainder ``r``):
    ``(x + d - 1/2) log((x + d)/x) + d (log x - 1) + r(x + d) - r(x)``, with ``log((x+d)/x)`` by ``log1p(d/x)``
    unless ``d/x < -1/2``. (The plain difference of two ``gammaln`` of size ~``x log x`` would lose
    ``eps x log x``.) Derivatives: ``psi(x + d) - psi(x)`` and ``psi(x + d)`` (custom JVP).
    """
    z = x + d
    ratio = d / x
    near = ratio < -0.5
    log_ratio = jnp.where(near, jnp.log(z) - jnp.log(x), jnp.log1p(jnp.where(near, 0.0, ratio)))
    return (z - 0.5) * log_ratio + d * (jnp.log(x) - 1.0) + stirling_remainder(z) - stirling_remainder(x)


@lgamma_diff.defjvp
def _lgamma_diff_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    x, d = primals
    x_dot, d_dot = tangents
    psi_z = digamma(x + d)
    return lgamma_diff(x, d), psi_z * (x_dot + d_dot) - digamma(x) * x_dot
