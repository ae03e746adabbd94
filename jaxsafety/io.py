"""Files in and out, in one place: atomic writes (JSON, text, bytes, figures), checked CSV reading, output-path
checks and the cache directory.

- :func:`write_atomic` writes through a temp file in the target's folder and ``os.replace``: a reader never sees a
  half-written file, and a writer that fails (a serialiser error, a full disk, Ctrl-C) leaves the old file as it
  was and no temp file behind. :func:`write_json_atomic` (JSON with numpy / jax arrays, paths and dataclass
  configs) and :func:`save_figure` (matplotlib figure as PNG) are built on it.
- :func:`read_csv_rows` reads a CSV's header and rows, checked before anything is computed; its errors, and those
  of the readers built on it, name ``<file>:row N[:<column>]`` (the header is row 1).
- :func:`check_output_path`: a CLI output path's suffix, checked before anything is computed or written.
- :func:`cache_dir`: ``root``, else ``$JAXSAFETY_CACHE``, else ``~/.cache/jaxsafety``; the trained-model cache
  (:mod:`jaxsafety.train.pretrained`) and JAX's compilation cache (:func:`jaxsafety.xla_flags.enable_compilation_cache`)
  live under it.

This module imports neither jax nor matplotlib at import time (:mod:`jaxsafety.xla_flags` uses it before JAX
starts).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxsafety.config import ConfigError, config_to_dict

__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "check_output_path",
    "read_csv_rows",
    "save_figure",
    "write_atomic",
    "write_json_atomic",
]

CACHE_ENV = "JAXSAFETY_CACHE"


# ----------------------------------------------------------------------------------------------------------------
# atomic writes


def _file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open(path, "w")`` would give (``mkstemp`` makes ``0o600``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | os.PathLike, content: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``path`` through a temp file beside it and ``os.replace``; returns ``Path(path)``.

    ``content``: bytes, text (UTF-8), or a function that fills the temp file given its path (e.g. a CSV writer
    that takes a path). Parent folders are created. If writing fails, the exception propagates, ``path`` keeps
    its old content (or stays absent) and the temp file is removed. The file gets the mode a plain ``open`` would
    give it (``0o666`` less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _json_default(x: Any) -> Any:
    """JSON for what ``json`` cannot encode: arrays (numpy, jax) as nested lists, numpy scalars as Python
    numbers, paths as strings, dataclass configs as dicts."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return config_to_dict(x)
    if hasattr(x, "__array__"):  # jax.Array (not imported here: see the module docstring)
        return np.asarray(x).tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON (numpy / jax arrays as lists, paths as strings, dataclasses as dicts)
    atomically (:func:`write_atomic`). ``data`` is serialised before any file is created, so a value that cannot
    be serialised raises ``TypeError`` and touches nothing."""
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    return write_atomic(path, text)


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Save the matplotlib figure ``fig`` as a PNG at ``path`` (``dpi``, tight bounding box) atomically
    (:func:`write_atomic`) and close it (also when saving fails); returns ``Path(path)``."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return write_atomic(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------------------------
# checked inputs and outputs


def read_csv_rows(
    path: str | os.PathLike, field: str = "input"
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A CSV file's header (lower-cased, stripped) and ``(row number, row dict)`` pairs (the header is row 1;
    blank lines are skipped; values stripped), checked before anything is computed: a missing or empty file, a
    file without data rows or a row with the wrong number of values raises :class:`~jaxsafety.config.ConfigError`
    naming ``field`` or ``<file>:row N``. Readers built on it name a bad value ``<file>:row N:<column>``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(field, str(path), "the path of an existing CSV file")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if not header:
            raise ConfigError(field, str(path), "a CSV file with a header row (it is empty)")
        rows = []
        for number, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise ConfigError(
                    f"{path.name}:row {number}",
                    ",".join(values),
                    f"{len(header)} comma-separated values ({header})",
                )
            rows.append((number, {h: v.strip() for h, v in zip(header, values, strict=True)}))
    if not rows:
        raise ConfigError(field, str(path), "a CSV file with at least one data row")
    return header, rows


def check_output_path(field: str, path: str | os.PathLike, suffix: str) -> None:
    """An output file: ``path`` must end in ``suffix`` (e.g. ``".json"``, any case) and not be a directory;
    raises :class:`~jaxsafety.config.ConfigError` naming ``field`` before anything is computed or written."""
    out = Path(path)
    if out.suffix.lower() != suffix:
        raise ConfigError(field, str(out), f"a path ending in {suffix}")
    if out.is_dir():
        raise ConfigError(field, str(out), "a file path (it is a directory)")


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``root`` if given, else ``$JAXSAFETY_CACHE`` if set and non-empty, else
    ``~/.cache/jaxsafety``. Not created here."""
    if root is not None:
        return Path(root)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "jaxsafety"
