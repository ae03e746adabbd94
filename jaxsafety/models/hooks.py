"""The one activation mechanism of the model zoo: capture and edit activations at named sites, inside jit.

Every model calls ``ctx(site, x)`` at each named site of its forward pass (see ``model.site_names()``), e.g.::

    blocks.3.resid_pre   [B, T, D]   input of block 3 (blocks.0.resid_pre is the embedding output)
    blocks.3.ln1         [B, T, D]   normed input of attention (the qkv projection's input)
    blocks.3.attn.qkv    [B, T, (Hq + 2 Hkv) Dh]   fused q/k/v projection output (before RoPE)
    blocks.3.attn.probs  [B, Hq, T, S]   attention probabilities
    blocks.3.attn.z      [B, T, Hq, Dh]  per-head attention output (the output projection's input)
    blocks.3.attn_out    [B, T, D]   attention output added to the residual stream
    blocks.3.resid_mid   [B, T, D]
    blocks.3.ln2         [B, T, D]   normed input of the MLP
    blocks.3.mlp.pre     [B, T, F or 2F]   first MLP projection output (before the nonlinearity)
    blocks.3.mlp.hidden  [B, T, F]   MLP hidden (the down projection's input)
    blocks.3.mlp_out     [B, T, D]
    blocks.3.resid_post  [B, T, D]
    final_hidden         [B, T, D]   after the final norm (input of the LM / score head)
    lm_logits            [B, T, V]   LM head output (float32; only in forward passes that compute logits)

:class:`Hooks` says what to capture (site names or ``fnmatch`` patterns) and which :class:`Edit` to apply where.
Edit masks and per-position values index ABSOLUTE columns of the whole sequence: a forward pass over a chunk at
cache slot ``s`` (a decode step, continuations after a cached prefix) applies columns ``s .. s + T - 1``, so the
same edit gives the same result with and without the KV cache (see :class:`Edit` for the accepted shapes).
An edit that would change an activation's shape raises ``ValueError`` at trace time.
Hooks are pytrees (edit values are traced arrays), so the same jitted function runs with different steering
vectors without recompiling, and gradients flow into edit values: differentiating the loss w.r.t. a zero ``add``
edit at a layer's output gives that layer's output gradients (what EK-FAC and attribution methods need).

Steering, probing, unlearning, influence and featurization all use this module; none writes its own hooks.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = ["Edit", "HookContext", "Hooks", "add", "position_axis", "project_out", "replace", "scale"]

EDIT_KINDS = ("add", "project_out", "replace", "scale", "fn")


def position_axis(site: str) -> int:
    """Axis of the (query) positions in a site's activation: 2 for ``attn.probs`` ``[B, H, T, S]``, else 1."""
    return 2 if site.endswith("attn.probs") else 1


@struct.dataclass
class Edit:
    """One intervention at one site.

    kind:
      ``add``          x + value                 (value broadcasts against x, e.g. [D], [L, D], [B, L, D])
      ``project_out``  x - (x . u) u for each row u of orthonormalised ``value`` ([D] or [K, D])
      ``replace``      value                     (broadcast to x's shape)
      ``scale``        x * value
      ``fn``           fn(x, value)              (any jittable function; ``fn`` is static; ``value`` passed as is)
    ``mask`` (optional, ``[B, L]`` or ``[L]``, bool or float): apply only where true; a float mask interpolates
    ``x + mask * (edited - x)``. Its axes are (row, position); at ``attn.probs`` the position is the query's.

    Positions are ABSOLUTE columns of the whole sequence, ``L`` of them: a forward pass over a chunk of ``T``
    tokens written at cache slot ``s`` (a decode step, a continuation after a cached prefix) sees columns
    ``s .. s + T - 1`` of the mask and of a per-position value, cut out with ``dynamic_slice``. Without a cache,
    ``s = 0`` and ``L >= T``; with one, ``L >= cache.max_len``. In ``generate`` ``L = P + max_new_tokens``, in
    ``score_continuations`` ``L = P + C``; so one mask steers the prompt only, the generated tokens only, or
    everything from some column on.

    Which values are per-position and per-row (``add``, ``scale``, ``replace``; values align with the activation's
    trailing axes, numpy-style): for an activation ``[B, T, *F]`` (``F`` the feature axes: ``[D]`` for the
    residual stream, ``[H, Dh]`` for ``attn.z``),
      ``[*F]`` or fewer axes (e.g. ``[D]``, ``[H, 1]``, a scalar)   the same at every row and position;
      ``[L, *F]``       one value per position (``L`` >= the sequence length as above, or 1);
      ``[B, L, *F]``    one value per row and position; ``[B, 1, *F]`` is one value per row (a steering vector or
                        a multiplier for each row).
    For ``attn.probs`` ``[B, H, T, S]`` the position axis is the query axis T (``[H, L, S]``, ``[B, H, L, S]``);
    the key axis S is the cache's slots (or T without a cache) and must match or be 1. ``project_out`` directions
    and ``fn`` values have no position axis. An edit whose value or mask would change the activation's shape
    raises ``ValueError`` (naming the edit, the site and both shapes) at trace time.
    """

    site: str = struct.field(pytree_node=False)
    kind: str = struct.field(pytree_node=False)
    value: Any = None
    mask: Any = None
    fn: Callable[[jax.Array, Any], jax.Array] | None = struct.field(pytree_node=False, default=None)

    def __post_init__(self) -> None:
        if self.kind not in EDIT_KINDS:
            raise ValueError(
                f"Edit.kind={self.kind!r} is invalid: accepted values are one of {', '.join(EDIT_KINDS)}"
            )
        if self.kind == "fn" and self.fn is None:
            raise ValueError("Edit.fn is required when kind='fn'")

    @property
    def name(self) -> str:
        return f"{self.kind}({self.site!r})"

    def value_axes(self, ndim: int) -> tuple[int | None, int | None]:
        """(row axis, position axis) of ``value`` for an activation of ``ndim`` axes at this site; None where the
        value has no such axis (it broadcasts). ``project_out`` and ``fn`` values have neither."""
        if self.kind not in ("add", "scale", "replace") or self.value is None:
            return None, None
        vdim = jnp.ndim(self.value)
        lead = ndim - vdim  # the value's axis i aligns with the activation's axis lead + i
        pos = position_axis(self.site) - lead
        return (0 if lead == 0 else None), (pos if pos >= 0 else None)

    def rows(self, ndim: int) -> int:
        """Rows the value and mask are given for (their row axis' size; 1 = the same for every row)."""
        row_axis, _ = self.value_axes(ndim)
        n = jnp.shape(self.value)[0] if row_axis is not None else 1
        if self.mask is not None and jnp.ndim(self.mask) == 2:
            n = max(n, jnp.shape(self.mask)[0])
        return n

    def map_axes(self, ndim: int, rows: Callable | None = None, positions: Callable | None = None) -> Edit:
        """A copy with ``rows(a, axis)`` applied to the value's and mask's row axes and ``positions(a, axis)`` to
        their position axes (those of size > 1), e.g. to repeat rows or pad positions."""

        def go(a: Any, row_axis: int | None, pos_axis: int | None) -> Any:
            if rows is not None and row_axis is not None and jnp.shape(a)[row_axis] > 1:
                a = rows(a, row_axis)
            if positions is not None and pos_axis is not None and jnp.shape(a)[pos_axis] > 1:
                a = positions(a, pos_axis)
            return a

        value, mask = self.value, self.mask
        if self.kind in ("add", "scale", "replace") and value is not None:
            value = go(jnp.asarray(value), *self.value_axes(ndim))
        if mask is not None:
            mask = jnp.asarray(mask)
            mask = go(mask, 0, 1) if mask.ndim == 2 else go(mask, None, 0)
        return self.replace(value=value, mask=mask)

    def _positions(
        self, a: jax.Array, x: jax.Array, axis: int, what: str, offset: Any, slots: int
    ) -> jax.Array:
        """Columns ``offset .. offset + T - 1`` of ``a``'s position ``axis`` (unchanged if it has size 1)."""
        n, t = a.shape[axis], x.shape[position_axis(self.site)]
        if n == 1:
            return a
        if n < slots:
            raise ValueError(
                f"edit {self.name} (activation shape {tuple(x.shape)} at that site): {what} of shape "
                f"{tuple(a.shape)} has {n} positions on axis {axis}: accepted values "
                f"are 1 (every position) or >= {slots}, the absolute positions of the whole sequence this forward "
                "addresses (T without a cache, cache.max_len with one; [B, P + max_new_tokens] in generate)"
            )
        if isinstance(offset, int) and n == t and offset == 0:
            return a
        if isinstance(offset, int):
            return jax.lax.slice_in_dim(a, offset, offset + t, axis=axis)
        return jax.lax.dynamic_slice_in_dim(a, offset, t, axis=axis)

    def _shape_error(self, x: jax.Array, shape: Any, why: str) -> ValueError:
        return ValueError(
            f"edit {self.name} would change the activation's shape at site {self.site!r} from {tuple(x.shape)} "
            f"to {shape}: {why} (value shape {jnp.shape(self.value) if self.value is not None else None}, "
            f"mask shape {jnp.shape(self.mask) if self.mask is not None else None}; see Edit's docstring for "
            "the accepted shapes)"
        )

    def _check_broadcast(self, x: jax.Array, shape: tuple[int, ...], why: str) -> None:
        """Raise the shape error unless ``shape`` broadcasts against ``x`` without changing x's shape."""
        try:
            out = np.broadcast_shapes(shape, x.shape)
        except ValueError:
            out = "incompatible"
        if out != x.shape:
            raise self._shape_error(x, out, why)

    def apply(self, x: jax.Array, *, offset: Any = 0, slots: int | None = None) -> jax.Array:
        """Edit activation ``x`` whose positions are absolute columns ``offset .. offset + T - 1`` (a Python int
        or a traced scalar: the cache slot of the chunk) of a sequence of ``slots`` columns (default T)."""
        pa = position_axis(self.site)
        if x.ndim <= pa:
            raise ValueError(
                f"edit {self.name}: the activation at site {self.site!r} has shape {tuple(x.shape)}: accepted "
                f"activations have a position axis {pa}"
            )
        slots = x.shape[pa] if slots is None else slots
        value = self.value
        if self.kind in ("add", "scale", "replace"):
            value = jnp.asarray(value)
            _, vpos = self.value_axes(x.ndim)
            if vpos is not None:
                value = self._positions(value, x, vpos, "value", offset, slots)
            self._check_broadcast(x, value.shape, f"value {value.shape} does not broadcast to it")
        if self.kind == "add":
            out = x + value.astype(x.dtype)
        elif self.kind == "scale":
            out = x * value.astype(x.dtype)
        elif self.kind == "replace":
            out = jnp.broadcast_to(value.astype(x.dtype), x.shape)
        elif self.kind == "project_out":
            u = jnp.asarray(value, jnp.float32)
            u = u[None] if u.ndim == 1 else u
            q, _ = jnp.linalg.qr(u.T)  # [D, K] orthonormal basis of the directions
            xf = x.astype(jnp.float32)
            out = (xf - (xf @ q) @ q.T).astype(x.dtype)
        else:
            out = self.fn(x, value)
        if out.shape != x.shape:
            raise self._shape_error(x, tuple(out.shape), "the edited activation has another shape")
        if self.mask is None:
            return out
        m = jnp.asarray(self.mask)
        if m.ndim not in (1, 2):
            raise self._shape_error(x, m.shape, "masks are [B, L] or [L]")
        m = self._positions(m[None] if m.ndim == 1 else m, x, 1, "mask", offset, slots)
        m = m.reshape((m.shape[0],) + (1,) * (pa - 1) + (m.shape[1],) + (1,) * (x.ndim - pa - 1))
        self._check_broadcast(x, m.shape, f"mask as {m.shape} (row, position) does not broadcast to it")
        if m.dtype == jnp.bool_:
            return jnp.where(m, out, x)
        return x + m.astype(x.dtype) * (out - x)


def _rows(site: str, value: Any, per_row: bool) -> Any:
    """``per_row``: ``value`` is ``[B, *F]``, one value per row; insert the position axis (size 1) after the row
    axis, giving the ``[B, 1, *F]`` form (``[B, H, 1, S]`` at ``attn.probs``) that :class:`Edit` reads as per-row.
    (A bare ``[B, D]`` would be read as one value per position ``[L, D]``.)"""
    if not per_row:
        return value
    value = jnp.asarray(value)
    if value.ndim < 1:
        raise ValueError(
            f"per_row=True needs a value with a leading row axis [B, ...]; got shape {value.shape}"
        )
    return jnp.expand_dims(value, position_axis(site))


def add(site: str, vector: Any, *, mask: Any = None, per_row: bool = False) -> Edit:
    """Add ``vector`` at ``site`` (activation steering, ActAdd / CAA); ``per_row=True``: ``vector [B, D]`` holds
    one steering vector per row."""
    return Edit(site=site, kind="add", value=_rows(site, vector, per_row), mask=mask)


def project_out(site: str, directions: Any, *, mask: Any = None) -> Edit:
    """Remove the component along ``directions`` ([D] or [K, D]) at ``site`` (directional ablation)."""
    return Edit(site=site, kind="project_out", value=directions, mask=mask)


def replace(site: str, value: Any, *, mask: Any = None, per_row: bool = False) -> Edit:
    """Overwrite the activation at ``site`` with ``value`` (activation patching); ``per_row=True``: ``value
    [B, D]`` holds one value per row, the same at every position."""
    return Edit(site=site, kind="replace", value=_rows(site, value, per_row), mask=mask)


def scale(site: str, factor: Any, *, mask: Any = None, per_row: bool = False) -> Edit:
    """Multiply the activation at ``site`` by ``factor`` (e.g. per-head zero ablation with [H, 1] factors);
    ``per_row=True``: ``factor [B, ...]`` holds one multiplier (or [D] vector of them) per row."""
    return Edit(site=site, kind="scale", value=_rows(site, factor, per_row), mask=mask)


@struct.dataclass
class Hooks:
    """What to capture and what to edit in one forward pass. Edits at a site apply in order, before capture."""

    capture: tuple[str, ...] = struct.field(pytree_node=False, default=())
    edits: tuple[Edit, ...] = ()

    @staticmethod
    def make(capture: str | Sequence[str] = (), edits: Edit | Sequence[Edit] = ()) -> Hooks:
        capture = (capture,) if isinstance(capture, str) else tuple(capture)
        edits = (edits,) if isinstance(edits, Edit) else tuple(edits)
        return Hooks(capture=capture, edits=edits)


class HookContext:
    """Trace-time recorder a model threads through its forward pass; collects captured activations.

    ``offset`` is the absolute column (cache slot) of the chunk's first token, a Python int or a traced scalar
    (``cache.index``); ``slots`` the number of columns the forward addresses (``cache.max_len``, or T without a
    cache). Edits cut their masks and per-position values to the chunk's columns (see :class:`Edit`).
    """

    def __init__(self, hooks: Hooks | None, *, offset: Any = 0, slots: int | None = None):
        self.hooks = hooks
        self.offset = offset
        self.slots = slots
        self.captured: dict[str, jax.Array] = {}
        self.seen: list[str] = []
        self._edits: dict[str, list[Edit]] = {}
        if hooks is not None:
            for e in hooks.edits:
                self._edits.setdefault(e.site, []).append(e)

    def touches(self, site: str) -> bool:
        """Whether ``site`` is edited or captured (so the model must materialise it whole, e.g. ``attn.probs``
        instead of blockwise attention)."""
        if self.hooks is None:
            return False
        return site in self._edits or any(fnmatch.fnmatchcase(site, p) for p in self.hooks.capture)

    def __call__(self, site: str, x: jax.Array, *, shift: int = 0) -> jax.Array:
        """Edit then capture ``x`` at ``site``. ``shift``: its first position is column ``offset + shift`` (e.g.
        logits of the chunk's last token only)."""
        if self.hooks is None:
            return x
        self.seen.append(site)
        offset = self.offset + shift if shift else self.offset
        for e in self._edits.get(site, ()):
            x = e.apply(x, offset=offset, slots=self.slots)
        if any(fnmatch.fnmatchcase(site, p) for p in self.hooks.capture):
            self.captured[site] = x
        return x

    def check(self) -> None:
        """After the forward pass: every edit site and capture pattern must have matched a real site."""
        if self.hooks is None:
            return
        seen = set(self.seen)
        bad = [s for s in self._edits if s not in seen]
        bad += [p for p in self.hooks.capture if not any(fnmatch.fnmatchcase(s, p) for s in seen)]
        if bad:
            sample = ", ".join(self.seen[:14])
            raise ValueError(
                f"hook site {bad[0]!r} matches no site of this model: accepted sites are {sample}, ... "
                "(see model.site_names())"
            )
