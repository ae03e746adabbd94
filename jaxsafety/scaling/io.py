"""CSV readers for the scaling-law CLI: per-problem sample counts and training runs, checked row by row.

Every problem is reported as a :class:`~jaxsafety.config.ConfigError` naming the file, the row (1-based, the
header is row 1) and the column, e.g. ``samples.csv:row 7:successes=12 is invalid: accepted values are integers
in [0, attempts=10]``, and raised before anything is fitted or written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxsafety.config import ConfigError
from jaxsafety.io import read_csv_rows

__all__ = ["PassKData", "RunsData", "read_curve_csv", "read_passk_csv", "read_runs_csv"]

_TRUE = {"1", "true", "yes", "t", "y"}
_FALSE = {"0", "false", "no", "f", "n"}


class PassKData(NamedTuple):
    """Per-problem counts: ``problem_ids`` ``[P]`` (str, in first-seen order), ``attempts`` and ``successes``
    ``[P]`` (int64)."""

    problem_ids: list[str]
    attempts: np.ndarray
    successes: np.ndarray


class RunsData(NamedTuple):
    """Training runs: ``params`` (N), ``tokens`` (D) and final ``loss`` ``[R]`` (float64)."""

    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray


def _int(where: str, column: str, text: str, lo: int, hi: int | None, hi_name: str | None = None) -> int:
    accepted = f"integers >= {lo}" if hi is None else f"integers in [{lo}, {hi_name or ''}{hi}]"
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}:{column}", text, accepted) from None
    if not (math.isfinite(value) and value.is_integer() and value >= lo and (hi is None or value <= hi)):
        raise ConfigError(f"{where}:{column}", text, accepted)
    return int(value)


def _positive(where: str, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{where}:{column}", text, "finite numbers > 0")
    return value


def _columns(path: Path, header: list[str], layouts: dict[str, tuple[str, ...]]) -> str:
    """The first layout whose columns are all in ``header``."""
    for name, cols in layouts.items():
        if all(col in header for col in cols):
            return name
    accepted = " or ".join("(" + ", ".join(cols) + ")" for cols in layouts.values())
    raise ConfigError(f"{path.name}:columns", header, f"a header with the columns {accepted}")


def read_passk_csv(path: str | Path, *, min_problems: int = 3) -> PassKData:
    """Per-problem ``(attempts, successes)`` from a CSV with either the columns ``problem_id, attempts,
    successes`` (one row per problem; rows repeating a ``problem_id`` are summed, e.g. several sampling runs) or
    ``problem_id, success`` (one row per attempt; ``success`` in 0/1, true/false, yes/no). Other columns are
    ignored. At least ``min_problems`` distinct problems are required (a distribution cannot be fitted to fewer)."""
    path = Path(path)
    header, rows = read_csv_rows(path)
    layout = _columns(
        path,
        header,
        {"counts": ("problem_id", "attempts", "successes"), "attempts": ("problem_id", "success")},
    )
    totals: dict[str, list[int]] = {}
    for number, row in rows:
        where = f"{path.name}:row {number}"
        pid = row["problem_id"]
        if not pid:
            raise ConfigError(f"{where}:problem_id", pid, "a non-empty identifier")
        if layout == "counts":
            attempts = _int(where, "attempts", row["attempts"], 1, None)
            successes = _int(where, "successes", row["successes"], 0, attempts, "attempts=")
        else:
            text = row["success"].lower()
            if text not in _TRUE | _FALSE:
                raise ConfigError(f"{where}:success", row["success"], "0/1, true/false or yes/no")
            attempts, successes = 1, int(text in _TRUE)
        entry = totals.setdefault(pid, [0, 0])
        entry[0] += attempts
        entry[1] += successes
    if len(totals) < min_problems:
        raise ConfigError(
            f"{path.name}:problem_id", f"{len(totals)} distinct", f">= {min_problems} distinct problems"
        )
    counts = np.asarray(list(totals.values()), dtype=np.int64)
    return PassKData(list(totals), counts[:, 0], counts[:, 1])


def read_runs_csv(path: str | Path, *, min_runs: int = 6) -> RunsData:
    """Training runs from a CSV with the columns ``params, tokens, loss`` (N, D and the final loss; all finite and
    > 0). At least ``min_runs`` rows (the Chinchilla form has 5 parameters)."""
    path = Path(path)
    header, rows = read_csv_rows(path)
    _columns(path, header, {"runs": ("params", "tokens", "loss")})
    values = [
        [_positive(f"{path.name}:row {number}", col, row[col]) for col in ("params", "tokens", "loss")]
        for number, row in rows
    ]
    if len(values) < min_runs:
        raise ConfigError(f"{path.name}:rows", len(values), f">= {min_runs} runs (the fit has 5 parameters)")
    arr = np.asarray(values, dtype=np.float64)
    return RunsData(arr[:, 0], arr[:, 1], arr[:, 2])


def read_curve_csv(path: str | Path, *, min_points: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``(compute, loss)`` from a CSV with the columns ``compute, loss`` (finite and > 0; at least
    ``min_points`` rows), for the power law with offset ``L(C) = a C^-b + c``."""
    path = Path(path)
    header, rows = read_csv_rows(path)
    _columns(path, header, {"curve": ("compute", "loss")})
    values = [
        [_positive(f"{path.name}:row {number}", col, row[col]) for col in ("compute", "loss")]
        for number, row in rows
    ]
    if len(values) < min_points:
        raise ConfigError(
            f"{path.name}:rows", len(values), f">= {min_points} points (the fit has 3 parameters)"
        )
    arr = np.asarray(values, dtype=np.float64)
    return arr[:, 0], arr[:, 1]
