"""Progress bars that stay silent when nobody is watching (not a TTY, or in CI)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress", "progress_enabled"]


def progress_enabled(stream: Any = None) -> bool:
    """True when a bar should be drawn: ``stream`` (default stderr) is a TTY and ``CI`` is unset.

    ``JAXSAFETY_PROGRESS=1`` / ``0`` forces bars on / off.
    """
    forced = os.environ.get("JAXSAFETY_PROGRESS")
    if forced is not None:
        return forced.strip().lower() not in ("0", "false", "no", "off", "")
    if os.environ.get("CI"):
        return False
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    enabled: bool | None = None,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual bar with ``total``); disabled per :func:`progress_enabled`."""
    enabled = progress_enabled(kwargs.get("file")) if enabled is None else enabled
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, dynamic_ncols=True, **kwargs)
