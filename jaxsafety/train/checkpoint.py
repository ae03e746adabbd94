"""Checkpointing on orbax ``CheckpointManager``: periodic, keep-last-K, atomic, resumable.

Orbax writes each step into a temporary directory and renames it only once every file is complete, so a run killed
mid-save leaves the previous checkpoint intact (its partial temp directory is cleaned up on the next start).
Typed PRNG keys (``jax.random.key``) are stored as their raw key data and re-wrapped on restore, so a training state
holding keys restores exactly and the resumed run continues bit-identically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import jax
import orbax.checkpoint as ocp

from jaxsafety.config import check_range

__all__ = ["Checkpointer"]

S = TypeVar("S")


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _data_to_keys(tree: Any, target: Any) -> Any:
    return jax.tree.map(
        lambda r, t: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r,
        tree,
        target,
    )


class Checkpointer:
    """Save a pytree every ``save_every`` steps into ``directory/<step>``, keeping the newest ``keep_last``.

    ``metadata`` (JSON-serialisable, e.g. the run config) is stored next to every checkpoint. Use as a context
    manager, or call :meth:`close`, so asynchronous saves finish before the process exits.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        save_every: int = 1000,
        keep_last: int = 3,
        async_save: bool = True,
    ):
        check_range("save_every", save_every, ge=1, integer=True)
        check_range("keep_last", keep_last, ge=1, integer=True)
        self.directory = Path(directory).absolute()
        self.save_every = save_every
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep_last,
            save_interval_steps=save_every,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._mgr = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def should_save(self, step: int) -> bool:
        return step % self.save_every == 0

    def save(
        self, step: int, state: Any, *, metadata: Mapping[str, Any] | None = None, force: bool = False
    ) -> bool:
        """Save ``state`` at ``step`` if the interval says so (or ``force``). Returns whether a save started."""
        if not (force or self.should_save(step)):
            return False
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_keys_to_data(state)),
            meta=ocp.args.JsonSave(dict(metadata or {})),
        )
        # the interval is decided here (orbax would also save the very first step it sees)
        return bool(self._mgr.save(int(step), args=args, force=True))

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    def restore(self, target: S, step: int | None = None) -> S:
        """Restore the checkpoint at ``step`` (default: latest) with the structure, dtypes and shardings of ``target``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _keys_to_data(target))
        out = self._mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return _data_to_keys(out["state"], target)

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return dict(self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def restore_latest(self, target: S) -> tuple[int, S] | None:
        """``(step, state)`` of the newest checkpoint, or None when there is none."""
        step = self.latest_step()
        if step is None:
            return None
        return step, self.restore(target, step)

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._mgr.wait_until_finished()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
