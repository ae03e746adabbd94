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

:class:`Hooks` says what to capture (site names or ``fnmatch`` patterns) and which :class:`Edit` to apply where.
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
from flax import struct

__all__ = ["Edit", "HookContext", "Hooks", "add", "project_out", "replace", "scale"]

EDIT_KINDS = ("add", "project_out", "replace", "scale", "fn")


@struct.dataclass
class Edit:
    """One intervention at one site.

    kind:
      ``add``          x + value                 (value broadcasts against x, e.g. [D], [T, D], [B, T, D])
      ``project_out``  x - (x . u) u for each row u of orthonormalised ``value`` ([D] or [K, D])
      ``replace``      value                     (broadcast to x's shape)
      ``scale``        x * value
      ``fn``           fn(x, value)              (any jittable function; ``fn`` is static)
    ``mask`` (optional, [B, T] or [T], bool or float): apply only where true (leading axes of x); a float mask
    interpolates ``x + mask * (edited - x)``.
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

    def apply(self, x: jax.Array) -> jax.Array:
        if self.kind == "add":
            out = x + jnp.asarray(self.value, x.dtype)
        elif self.kind == "scale":
            out = x * jnp.asarray(self.value, x.dtype)
        elif self.kind == "replace":
            out = jnp.broadcast_to(jnp.asarray(self.value, x.dtype), x.shape)
        elif self.kind == "project_out":
            u = jnp.asarray(self.value, jnp.float32)
            u = u[None] if u.ndim == 1 else u
            q, _ = jnp.linalg.qr(u.T)  # [D, K] orthonormal basis of the directions
            xf = x.astype(jnp.float32)
            out = (xf - (xf @ q) @ q.T).astype(x.dtype)
        else:
            out = self.fn(x, self.value)
        if self.mask is None:
            return out
        m = jnp.asarray(self.mask)
        if m.ndim == 1:
            m = m[None]
        m = m.reshape(m.shape + (1,) * (x.ndim - m.ndim))
        if m.dtype == jnp.bool_:
            return jnp.where(m, out, x)
        return x + m.astype(x.dtype) * (out - x)


def add(site: str, vector: Any, *, mask: Any = None) -> Edit:
    """Add ``vector`` at ``site`` (activation steering, ActAdd / CAA)."""
    return Edit(site=site, kind="add", value=vector, mask=mask)


def project_out(site: str, directions: Any, *, mask: Any = None) -> Edit:
    """Remove the component along ``directions`` ([D] or [K, D]) at ``site`` (directional ablation)."""
    return Edit(site=site, kind="project_out", value=directions, mask=mask)


def replace(site: str, value: Any, *, mask: Any = None) -> Edit:
    """Overwrite the activation at ``site`` with ``value`` (activation patching)."""
    return Edit(site=site, kind="replace", value=value, mask=mask)


def scale(site: str, factor: Any, *, mask: Any = None) -> Edit:
    """Multiply the activation at ``site`` by ``factor`` (e.g. per-head zero ablation with [H, 1] factors)."""
    return Edit(site=site, kind="scale", value=factor, mask=mask)


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
    """Trace-time recorder a model threads through its forward pass; collects captured activations."""

    def __init__(self, hooks: Hooks | None):
        self.hooks = hooks
        self.captured: dict[str, jax.Array] = {}
        self.seen: list[str] = []
        self._edits: dict[str, list[Edit]] = {}
        if hooks is not None:
            for e in hooks.edits:
                self._edits.setdefault(e.site, []).append(e)

    def __call__(self, site: str, x: jax.Array) -> jax.Array:
        if self.hooks is None:
            return x
        self.seen.append(site)
        for e in self._edits.get(site, ()):
            x = e.apply(x)
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
