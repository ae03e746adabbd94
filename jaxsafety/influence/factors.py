"""K-FAC / EK-FAC curvature factors of a zoo model's dense layers, and their damped inverses.

Grosse et al. 2023 ("Studying large language model generalization with influence functions", arXiv 2308.03296,
sec. 3.1-3.2) approximate the Gauss-Newton Hessian ``G`` of the training loss, restricted to one dense layer
``y = x W`` (``W [d_in, d_out]``), by a Kronecker product over tokens:

    A = E_tokens[x x^T]  [d_in, d_in],     S = E_examples[sum_t g_t g_t^T]  [d_out, d_out],     G ~ A kron S

where ``g_t = dL/dy_t`` is the gradient of a *pseudo*-loss whose labels are SAMPLED from the model's own
predictive distribution (so ``E[G G^T]`` is the Fisher = GGN of the cross-entropy, not the empirical Fisher). With
``A = Q_A diag(a) Q_A^T`` and ``S = Q_S diag(s) Q_S^T``, K-FAC's eigenvalues are ``a_i s_j``; EK-FAC (George et al.
2018) keeps the Kronecker eigenbasis and refits the eigenvalues on per-example (pseudo-)gradients
``G_n = sum_t x_t^T g_t``:

    Lambda[i, j] = E_n[(Q_A^T G_n Q_S)[i, j]^2]      (computed as ``(X Q_A)^T (G Q_S)``, X and G the taps)

which is exactly ``diag(Q^T F Q)`` for the sampled Fisher ``F = E_n[vec G_n vec G_n^T]`` and ``Q = Q_A kron Q_S``
(row-major ``vec``). The damped inverse applied to a matrix ``V [d_in, d_out]`` is

    ekfac / kfac:  Q_A ((Q_A^T V Q_S) / (Lambda + damping)) Q_S^T
    diagonal:      V / (diag(F) + damping)          (the diagonal of the sampled Fisher, in the parameter basis)
    identity:      V

with ``damping = damping_factor * mean(eigenvalues)`` per layer (Grosse et al. use 0.1) unless an absolute
``damping`` is given. ``S`` is normalised per example (a sum over a sequence's tokens), ``A`` per token, so
``A kron S ~ E_n[vec G_n vec G_n^T]`` when tokens are independent (Grosse et al. eq. 18).

Inputs and output gradients come from :func:`jaxsafety.models.taps.layer_taps` (one jitted forward + backward per
chunk); the corpus is streamed in chunks (sums and counts accumulate), so it never needs to fit in memory. With
``include_bias`` each layer's input gets a trailing constant 1 (the bias is the last row of ``[d_in + 1, d_out]``),
as kronfluence's tracked modules do.

Pseudo-labels: chunk ``i`` (counted from 0 over the corpus) and label sample ``s`` draw their labels with
``jax.random.fold_in(jax.random.fold_in(key, i), s)``, the same keys in the covariance and the eigenvalue pass,
as ``jax.random.categorical(k, logits)`` over every position (see :func:`sampled_next_token_loss`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jaxsafety.config import ConfigError, check, check_choice, check_range
from jaxsafety.models import CausalLM, layer_taps, linear_layers, token_logprobs

__all__ = [
    "STRATEGIES",
    "Batches",
    "Factors",
    "InfluenceConfig",
    "LayerFactors",
    "chunks",
    "fit_factors",
    "layer_matrices",
    "length_sorted_chunks",
    "mlp_layers",
    "next_token_loss",
    "precondition",
    "resolve_layers",
    "sampled_next_token_loss",
]

STRATEGIES = ("identity", "diagonal", "kfac", "ekfac")
HI = jax.lax.Precision.HIGHEST

Batch = Mapping[str, Any]
# a mapping of arrays with a leading example axis (sliced into chunks of ``chunk_size``), a re-iterable of such
# batches (a list, a tuple), or a function returning a fresh iterator of them (a corpus bigger than memory)
Batches = Batch | Iterable[Batch] | Callable[[], Iterator[Batch]]


@dataclasses.dataclass(frozen=True)
class InfluenceConfig:
    """What to fit and how (Grosse et al. 2023).

    layers:             names from :func:`jaxsafety.models.linear_layers` (e.g. ``blocks.0.mlp.up``,
                        ``blocks.1.attn.q``); None: every MLP layer (gate / up / down of every block)
    strategy:           Hessian approximation: ``identity`` (plain gradient dot products), ``diagonal`` (diagonal
                        of the sampled Fisher), ``kfac``, ``ekfac``
    damping_factor:     damping = damping_factor * mean of the layer's eigenvalues (ignored when ``damping`` set)
    damping:            absolute damping added to every eigenvalue, or None
    num_label_samples:  labels sampled per example for the Fisher (factors' pseudo-gradients)
    chunk_size:         examples per jitted chunk when a mapping of arrays is passed (and per query chunk)
    query_rank:         keep the top-k singular directions of each layer's preconditioned query gradient
                        (Grosse et al. sec. 3.2.3); None keeps them whole
    include_bias:       treat the bias as an extra input row (input gets a trailing 1), as kronfluence does
    tap_cache_mb:       ekfac with one label sample: keep pass 1's layer inputs and output gradients in memory, up
                        to this many MB, so that the eigenvalue pass reuses them instead of running the model
                        forward and backward again (chunks past the budget are recomputed); 0 turns it off
    """

    layers: tuple[str, ...] | None = None
    strategy: str = "ekfac"
    damping_factor: float = 0.1
    damping: float | None = None
    num_label_samples: int = 1
    chunk_size: int = 32
    query_rank: int | None = None
    include_bias: bool = False
    tap_cache_mb: float = 512.0

    def __post_init__(self) -> None:
        if self.layers is not None:
            ok = (
                isinstance(self.layers, tuple)
                and len(self.layers) > 0
                and all(isinstance(n, str) for n in self.layers)
                and len(set(self.layers)) == len(self.layers)
            )
            check(ok, "layers", self.layers, "None or a non-empty tuple of distinct layer names")
        check_choice("strategy", self.strategy, STRATEGIES)
        check_range("damping_factor", self.damping_factor, ge=0)
        if self.damping is not None:
            check_range("damping", self.damping, ge=0)
        check_range("num_label_samples", self.num_label_samples, ge=1, integer=True)
        check_range("chunk_size", self.chunk_size, ge=1, integer=True)
        if self.query_rank is not None:
            check_range("query_rank", self.query_rank, ge=1, integer=True)
        check(isinstance(self.include_bias, bool), "include_bias", self.include_bias, "True or False")
        check_range("tap_cache_mb", self.tap_cache_mb, ge=0)


def mlp_layers(model: CausalLM) -> tuple[str, ...]:
    """Names of every MLP dense layer of a zoo model (``blocks.{i}.mlp.{gate,up,down}``), in forward order."""
    return tuple(layer.name for layer in linear_layers(model) if ".mlp." in layer.name)


def resolve_layers(model: CausalLM, config: InfluenceConfig) -> tuple[str, ...]:
    """The layer names ``config`` selects on ``model``, checked against :func:`linear_layers`."""
    available = [layer.name for layer in linear_layers(model)]
    if config.layers is None:
        return mlp_layers(model)
    bad = [n for n in config.layers if n not in available]
    if bad:
        raise ConfigError("layers", bad[0], "names of linear_layers(model): " + ", ".join(available))
    return config.layers


# ----------------------------------------------------------------------------------------------------------------
# losses: per-example [B], as layer_taps wants them


def _pair_weights(batch: Batch, tokens: jax.Array) -> jax.Array:
    """``w[:, t] = mask[:, t] * mask[:, t + 1]`` (position t predicts real token t+1), 0 at the last position."""
    mask = batch.get("attention_mask")
    m = jnp.ones(tokens.shape, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    return jnp.concatenate([m[:, :-1] * m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1)


def next_token_loss(logits: jax.Array, batch: Batch) -> jax.Array:
    """Per-example summed next-token NLL ``[B]`` of the batch's own tokens (the training / query loss).

    ``batch``: ``tokens [B, T]``, optional ``attention_mask [B, T]`` (any padding) and ``loss_mask [B, T]``
    weighting each *target* token (e.g. 1 on a query's completion only). Sum reduction over tokens, as
    kronfluence's language-model examples."""
    lp = token_logprobs(logits, batch["tokens"], batch.get("attention_mask"))
    w = batch.get("loss_mask")
    return -jnp.sum(lp if w is None else lp * jnp.asarray(w, jnp.float32), axis=1)


def sampled_next_token_loss(logits: jax.Array, batch: Batch) -> jax.Array:
    """Per-example summed NLL ``[B]`` of labels sampled from the model itself: ``y_t ~ softmax(logits[:, t])``
    with ``batch["label_key"]``, scored where position t and t+1 are real tokens. Its gradients are the
    pseudo-gradients whose covariance is the Fisher (= GGN for the softmax cross-entropy)."""
    logits = logits.astype(jnp.float32)
    labels = jax.random.categorical(batch["label_key"], jax.lax.stop_gradient(logits), axis=-1)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * _pair_weights(batch, batch["tokens"]), axis=1)


# ----------------------------------------------------------------------------------------------------------------
# streaming


def chunks(data: Batches, chunk_size: int) -> Iterator[dict[str, Any]]:
    """Iterate over ``data`` as batches: a mapping of arrays is sliced into chunks of ``chunk_size`` examples
    (the last may be shorter); a re-iterable or a callable returning an iterator yields its own batches."""
    if isinstance(data, Mapping):
        if "tokens" not in data:
            raise ValueError("batches is invalid: accepted values are mappings with 'tokens' [N, T]")
        n = int(jnp.shape(data["tokens"])[0])
        for start in range(0, n, chunk_size):
            yield {k: v[start : start + chunk_size] for k, v in data.items()}
        return
    it = data() if callable(data) else iter(data)
    for batch in it:
        if not isinstance(batch, Mapping) or "tokens" not in batch:
            raise ValueError("batches is invalid: each batch must be a mapping with 'tokens' [B, T]")
        yield dict(batch)


def length_sorted_chunks(
    data: Mapping[str, Any], chunk_size: int, multiple: int = 16
) -> tuple[Any, list[dict[str, Any]]]:
    """``(order, batches)``: the examples of a right-padded corpus ``data`` (``tokens [N, T]``,
    ``attention_mask [N, T]`` and any other ``[N, T]`` / ``[N]`` arrays) sorted by length, in chunks of
    ``chunk_size`` whose columns are cut to the chunk's longest example rounded up to ``multiple`` (at most ``T``
    distinct widths compile, ``T / multiple`` of them). Padding never changes a score, so a corpus of mixed
    lengths costs its real tokens, not ``N x T``. Pass ``batches`` as any :data:`Batches`; a ``[Q, N]`` score
    matrix computed on them is in ``order``: ``scores_in_data_order[:, order] = scores``."""
    check_range("chunk_size", chunk_size, ge=1, integer=True)
    check_range("multiple", multiple, ge=1, integer=True)
    if not isinstance(data, Mapping) or "tokens" not in data or "attention_mask" not in data:
        raise ValueError(
            "data is invalid: accepted values are mappings with 'tokens' and 'attention_mask' [N, T]"
        )
    mask = np.asarray(data["attention_mask"]).astype(bool)
    n, t = mask.shape
    if not (mask[:, :-1] >= mask[:, 1:]).all():
        raise ValueError(
            "data['attention_mask'] is invalid: accepted values are right-padded masks (1s then 0s)"
        )
    lengths = mask.sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    batches = []
    for start in range(0, n, chunk_size):
        idx = order[start : start + chunk_size]
        width = min(t, -(-int(lengths[idx].max()) // multiple) * multiple)
        batches.append({k: (v[idx, :width] if jnp.ndim(v) == 2 else v[idx]) for k, v in data.items()})
    return order, batches


def _check_reiterable(data: Batches, field: str) -> None:
    if not isinstance(data, Mapping) and not callable(data) and iter(data) is data:  # type: ignore[arg-type]
        raise ValueError(
            f"{field} is a one-shot iterator: accepted values are a mapping of arrays, a list / tuple of batches, "
            "or a function returning a fresh iterator (the corpus is read more than once)"
        )


# ----------------------------------------------------------------------------------------------------------------
# per-chunk statistics (jitted)


def layer_matrices(taps: Mapping[str, Any], batch: Batch, include_bias: bool) -> dict[str, tuple]:
    """``{layer: (x [B, T, d_in(+1)], g [B, T, d_out])}`` from :func:`layer_taps` output, float32, with padding
    inputs zeroed (their gradients are already 0) and, with ``include_bias``, a trailing input column holding the
    attention mask (1 at real tokens), so that ``sum_t x_t^T g_t`` is the kernel (and bias) gradient."""
    tokens = batch["tokens"]
    mask = batch.get("attention_mask")
    m = jnp.ones(tokens.shape, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    out = {}
    for name, tap in taps.items():
        x = tap.inputs.astype(jnp.float32) * m[..., None]
        if include_bias:
            x = jnp.concatenate([x, m[..., None]], axis=-1)
        out[name] = (x, tap.output_grads.astype(jnp.float32))
    return out


def _taps(graphdef, state, batch, names, loss_fn, include_bias):
    model = nnx.merge(graphdef, state)
    return layer_matrices(layer_taps(model, loss_fn, batch, names), batch, include_bias)


def _sum_over_samples(graphdef, state, batch, key, names, num_samples, include_bias, stat):
    """``({layer: (x, g)} of label sample 0, {layer: sum_s stat(layer, x, g_s)})`` over the label samples
    ``s < num_samples`` (labels drawn with ``fold_in(key, s)``); samples after the first run in a ``lax.scan``, so
    compile time does not grow with ``num_samples``."""

    def sampled(s):
        b = {**batch, "label_key": jax.random.fold_in(key, s)}
        return _taps(graphdef, state, b, names, sampled_next_token_loss, include_bias)

    first = sampled(0)
    total = {n: stat(n, x, g) for n, (x, g) in first.items()}
    if num_samples > 1:

        def body(acc, s):
            mats = sampled(s)
            return {n: acc[n] + stat(n, x, g) for n, (x, g) in mats.items()}, None

        total, _ = jax.lax.scan(body, total, jnp.arange(1, num_samples))
    return first, total


@functools.partial(
    jax.jit, static_argnames=("graphdef", "names", "num_samples", "include_bias", "return_taps")
)
def _covariance_chunk(graphdef, state, batch, key, names, num_samples, include_bias, return_taps=False):
    """Sums over one chunk: ``sum_tokens x x^T``, ``sum_{n, s} sum_t g g^T`` per layer, and the token count;
    with ``return_taps`` also label sample 0's ``{layer: (x, g)}`` (for the eigenvalue pass to reuse)."""
    first, s_sum = _sum_over_samples(
        graphdef,
        state,
        batch,
        key,
        names,
        num_samples,
        include_bias,
        lambda n, x, g: jnp.einsum("bto,btp->op", g, g, precision=HI),
    )
    # inputs do not depend on the labels: one sample's are every sample's
    a_sum = {n: jnp.einsum("bti,btj->ij", x, x, precision=HI) for n, (x, _) in first.items()}
    mask = batch.get("attention_mask")
    n_tokens = jnp.asarray(batch["tokens"].size if mask is None else jnp.sum(mask), jnp.float32)
    return (a_sum, s_sum, n_tokens, first) if return_taps else (a_sum, s_sum, n_tokens)


def _squared_rotated(x: jax.Array, g: jax.Array, qa: jax.Array, qs: jax.Array) -> jax.Array:
    """``sum_n ((X_n Q_A)^T (G_n Q_S))^2`` ``[d_in, d_out]``: per-example gradients in the Kronecker eigenbasis,
    squared and summed over the chunk's examples."""
    rot = jnp.einsum("bti,bto->bio", x @ qa, g @ qs, precision=HI)
    return jnp.sum(rot * rot, axis=0)


@functools.partial(jax.jit, static_argnames=("graphdef", "names", "num_samples", "include_bias"))
def _eigenvalue_chunk(graphdef, state, batch, key, bases, names, num_samples, include_bias):
    """``sum_{n, s} (Q_A^T G_n Q_S)^2`` per layer over one chunk (``bases``: ``{layer: (Q_A, Q_S)}``)."""

    def squared_rotated(n, x, g):
        return _squared_rotated(x, g, *bases[n])

    return _sum_over_samples(graphdef, state, batch, key, names, num_samples, include_bias, squared_rotated)[
        1
    ]


@jax.jit
def _eigenvalues_from_taps(taps, bases):
    """:func:`_eigenvalue_chunk` of one label sample from pass 1's cached ``{layer: (x, g)}``: no model pass."""
    return {n: _squared_rotated(x, g, *bases[n]) for n, (x, g) in taps.items()}


@functools.partial(jax.jit, static_argnames=("graphdef", "names", "num_samples", "include_bias"))
def _diagonal_chunk(graphdef, state, batch, key, names, num_samples, include_bias):
    """``sum_{n, s} G_n^2`` (elementwise) per layer over one chunk: the sampled Fisher's diagonal, summed."""

    def squared(n, x, g):
        grad = jnp.einsum("bti,bto->bio", x, g, precision=HI)
        return jnp.sum(grad * grad, axis=0)

    return _sum_over_samples(graphdef, state, batch, key, names, num_samples, include_bias, squared)[1]


# ----------------------------------------------------------------------------------------------------------------
# factors


@struct.dataclass
class LayerFactors:
    """One layer's curvature (float32; None where the strategy does not use it).

    activation_cov [d_in, d_in] (``A``), gradient_cov [d_out, d_out] (``S``), their eigenvalues (ascending) and
    eigenvectors (columns) ``activation_eigvals [d_in]``, ``activation_eigvecs [d_in, d_in]``, ...;
    ``eigenvalues [d_in, d_out]``: EK-FAC ``Lambda``, K-FAC ``outer(a, s)``, or the diagonal of the Fisher;
    ``damping`` (scalar) the value added to ``eigenvalues`` before inverting."""

    activation_cov: jax.Array | None = None
    gradient_cov: jax.Array | None = None
    activation_eigvals: jax.Array | None = None
    activation_eigvecs: jax.Array | None = None
    gradient_eigvals: jax.Array | None = None
    gradient_eigvecs: jax.Array | None = None
    eigenvalues: jax.Array | None = None
    damping: jax.Array | None = None


@struct.dataclass
class Factors:
    """Curvature factors of the layers ``layers`` (``{name: LayerFactors}``, in forward order) fitted with
    ``strategy`` on ``num_examples`` examples x label samples and ``num_tokens`` real tokens."""

    layers: dict[str, LayerFactors]
    num_examples: jax.Array
    num_tokens: jax.Array
    strategy: str = struct.field(pytree_node=False, default="ekfac")
    include_bias: bool = struct.field(pytree_node=False, default=False)


def _damping(eigenvalues: jax.Array, config: InfluenceConfig) -> jax.Array:
    if config.damping is not None:
        return jnp.asarray(config.damping, jnp.float32)
    return config.damping_factor * jnp.mean(eigenvalues)


@jax.jit
def _eigendecompose(a_sum, s_sum, n_tokens, count):
    """``{layer: (A, S, eig A, Q_A, eig S, Q_S)}`` from the streamed sums, in one jitted program.

    On CPU ``eigh`` runs in the LAPACK of OpenBLAS: on a machine whose cores are busy its threads contend, and a
    512 x 512 ``eigh`` took 1-4 s instead of 0.04 s with ``OPENBLAS_NUM_THREADS=1`` (set it before starting)."""
    out = {}
    for n in a_sum:
        a, s = a_sum[n] / n_tokens, s_sum[n] / count
        out[n] = (a, s, *jnp.linalg.eigh(a), *jnp.linalg.eigh(s))
    return out


def fit_factors(model: CausalLM, batches: Batches, config: InfluenceConfig, key: jax.Array) -> Factors:
    """Fit the curvature of ``config.strategy`` on the training corpus ``batches`` (see :data:`Batches`; each
    batch ``tokens [B, T]`` and optional ``attention_mask``), streamed chunk by chunk.

    kfac / ekfac: pass 1 accumulates ``A`` and ``S``, then ``eigh``; ekfac's pass 2 accumulates ``Lambda`` in the
    Kronecker eigenbasis. diagonal: one pass accumulating ``E_n[G_n^2]``. identity: no pass. Pseudo-labels are
    sampled from the model with ``key`` (module docstring). Returns :class:`Factors` with per-layer damping."""
    check_choice("strategy", config.strategy, STRATEGIES)
    names = resolve_layers(model, config)
    if config.strategy == "ekfac":
        _check_reiterable(batches, "batches")
    graphdef, state = nnx.split(model)
    static = dict(names=names, num_samples=config.num_label_samples, include_bias=config.include_bias)
    layers = {n: LayerFactors() for n in names}
    zero = jnp.zeros((), jnp.float32)
    if config.strategy == "identity":
        return Factors(layers, zero, zero, config.strategy, config.include_bias)

    # ekfac with one label sample: pass 1's taps of chunk i, while they fit the budget, serve pass 2
    cache: dict[int, Any] | None = (
        {}
        if config.strategy == "ekfac" and config.num_label_samples == 1 and config.tap_cache_mb > 0
        else None
    )
    budget = config.tap_cache_mb * 2**20

    def stream(fn, *args, fill_cache=False, from_cache=False):
        total, count = None, 0
        used: int | None = 0  # bytes cached; None once a chunk did not fit (later chunks are recomputed)
        for i, batch in enumerate(chunks(batches, config.chunk_size)):
            if from_cache and cache is not None and i in cache:
                out = _eigenvalues_from_taps(cache[i], *args)
            elif fill_cache and cache is not None and used is not None:
                *out, taps = fn(
                    graphdef, state, batch, jax.random.fold_in(key, i), *args, **static, return_taps=True
                )
                out = tuple(out)
                size = sum(x.nbytes + g.nbytes for x, g in taps.values())
                if used + size <= budget:
                    cache[i], used = taps, used + size
                else:
                    used = None
            else:
                out = fn(graphdef, state, batch, jax.random.fold_in(key, i), *args, **static)
            total = out if total is None else jax.tree.map(jnp.add, total, out)
            count += int(jnp.shape(batch["tokens"])[0]) * config.num_label_samples
        if total is None:
            raise ValueError("batches is invalid: accepted values are a corpus with at least one example")
        return total, count

    if config.strategy == "diagonal":
        diag_sum, count = stream(_diagonal_chunk)
        for n in names:
            d = diag_sum[n] / count
            layers[n] = LayerFactors(eigenvalues=d, damping=_damping(d, config))
        return Factors(layers, jnp.float32(count), zero, config.strategy, config.include_bias)

    (a_sum, s_sum, n_tok), count = stream(_covariance_chunk, fill_cache=config.strategy == "ekfac")
    for n, (a, s, ea, qa, es, qs) in _eigendecompose(a_sum, s_sum, n_tok, jnp.float32(count)).items():
        layers[n] = LayerFactors(a, s, ea, qa, es, qs)
    if config.strategy == "kfac":
        for n in names:
            f = layers[n]
            # clip tiny negative eigenvalues from round-off: A and S are PSD
            ev = jnp.outer(jnp.maximum(f.activation_eigvals, 0), jnp.maximum(f.gradient_eigvals, 0))
            layers[n] = f.replace(eigenvalues=ev, damping=_damping(ev, config))
    else:
        bases = {n: (layers[n].activation_eigvecs, layers[n].gradient_eigvecs) for n in names}
        lam_sum, count = stream(_eigenvalue_chunk, bases, from_cache=True)
        for n in names:
            lam = lam_sum[n] / count
            layers[n] = layers[n].replace(eigenvalues=lam, damping=_damping(lam, config))
    return Factors(layers, jnp.float32(count), n_tok, config.strategy, config.include_bias)


def precondition(factors: Factors, name: str, v: jax.Array) -> jax.Array:
    """Damped inverse curvature of layer ``name`` applied to ``v [..., d_in, d_out]`` (batched over leading
    axes): ``Q_A ((Q_A^T V Q_S) / (Lambda + damping)) Q_S^T`` for ekfac / kfac, ``V / (diag + damping)`` for
    diagonal, ``V`` for identity."""
    f = factors.layers[name]
    if factors.strategy == "identity":
        return v
    if factors.strategy == "diagonal":
        return v / (f.eigenvalues + f.damping)
    qa, qs = f.activation_eigvecs, f.gradient_eigvecs
    rot = jnp.einsum("ai,...ab,bo->...io", qa, v, qs, precision=HI)
    rot = rot / (f.eigenvalues + f.damping)
    return jnp.einsum("ai,...io,bo->...ab", qa, rot, qs, precision=HI)
