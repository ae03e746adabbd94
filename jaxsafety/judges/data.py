"""Pairwise judge comparisons: the one data model every judge metric and tournament reads and writes.

A comparison record says that on instruction ``instruction`` a judge saw the responses of models ``model_a`` and
``model_b`` and gave ``prob_a``, the probability that ``model_a``'s response is better (a soft judge's probability,
or a hard verdict 1 / 0.5 / 0 for a / tie / b). ``position`` records which response the judge was shown first
(0: ``model_a``'s, 1: ``model_b``'s), so that position bias can be measured and removed
(:mod:`jaxsafety.judges.metrics`).

CSV layout (:func:`read_comparisons_csv`, :func:`to_csv`): a header row with ``model_a, model_b`` and either
``prob_a`` (a number in [0, 1]) or ``winner`` (``a``, ``b`` or ``tie``); optional ``instruction`` (any
identifier; without it every row is one instruction, ``default``) and ``position`` (0 or 1; without it 0).
Model and instruction names are mapped to indices in first-seen order. Every problem is reported as a
:class:`~jaxsafety.config.ConfigError` naming the file, the row (1-based, the header is row 1) and the column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxsafety.config import ConfigError
from jaxsafety.io import read_csv_rows

__all__ = ["Comparisons", "concat_comparisons", "make_comparisons", "read_comparisons_csv", "to_csv"]

_WINNER_PROB = {"a": 1.0, "b": 0.0, "tie": 0.5}


class Comparisons(NamedTuple):
    """``N`` pairwise judgements, one per entry of each array.

    - ``model_a``, ``model_b``: ``[N]`` int64 model indices into ``model_names`` (never equal).
    - ``instruction``: ``[N]`` int64 indices into ``instruction_names``.
    - ``prob_a``: ``[N]`` float64 in [0, 1], p(``model_a`` wins); hard verdicts are 1 / 0.5 / 0.
    - ``position``: ``[N]`` int8, 0 when ``model_a``'s response was shown first, 1 when ``model_b``'s was.
    - ``model_names``, ``instruction_names``: tuples of str.
    """

    model_a: np.ndarray
    model_b: np.ndarray
    instruction: np.ndarray
    prob_a: np.ndarray
    position: np.ndarray
    model_names: tuple[str, ...]
    instruction_names: tuple[str, ...]

    @property
    def num_models(self) -> int:
        return len(self.model_names)

    @property
    def num_instructions(self) -> int:
        return len(self.instruction_names)

    @property
    def num_comparisons(self) -> int:
        """``N`` (``len()`` of a NamedTuple is its field count, so it is not overridden)."""
        return int(self.model_a.shape[0])


def _default_names(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}_{i}" for i in range(count))


def make_comparisons(
    model_a: Sequence[int] | np.ndarray,
    model_b: Sequence[int] | np.ndarray,
    instruction: Sequence[int] | np.ndarray,
    prob_a: Sequence[float] | np.ndarray,
    position: Sequence[int] | np.ndarray | None = None,
    *,
    num_models: int | None = None,
    num_instructions: int | None = None,
    model_names: Sequence[str] | None = None,
    instruction_names: Sequence[str] | None = None,
) -> Comparisons:
    """Validated :class:`Comparisons` from arrays. Names default to ``model_{i}`` / ``instr_{j}`` for
    ``num_models`` / ``num_instructions`` entries (default: one past the largest index seen); ``position``
    defaults to 0. Raises :class:`ConfigError` for shape mismatches, self-comparisons, indices out of range and
    ``prob_a`` outside [0, 1] or NaN."""
    a = np.asarray(model_a, dtype=np.int64).reshape(-1)
    b = np.asarray(model_b, dtype=np.int64).reshape(-1)
    ins = np.asarray(instruction, dtype=np.int64).reshape(-1)
    p = np.asarray(prob_a, dtype=np.float64).reshape(-1)
    pos = np.zeros_like(a, dtype=np.int8) if position is None else np.asarray(position).reshape(-1)
    n = a.shape[0]
    for name, arr in (("model_b", b), ("instruction", ins), ("prob_a", p), ("position", pos)):
        if arr.shape[0] != n:
            raise ConfigError(name, f"{arr.shape[0]} entries", f"as many entries as model_a ({n})")
    if model_names is None:
        count = num_models if num_models is not None else int(max(a.max(initial=-1), b.max(initial=-1)) + 1)
        model_names = _default_names("model", count)
    if instruction_names is None:
        count = num_instructions if num_instructions is not None else int(ins.max(initial=-1) + 1)
        instruction_names = _default_names("instr", count)
    model_names, instruction_names = tuple(model_names), tuple(instruction_names)
    for name, arr, hi in (
        ("model_a", a, len(model_names)),
        ("model_b", b, len(model_names)),
        ("instruction", ins, len(instruction_names)),
    ):
        bad = np.flatnonzero((arr < 0) | (arr >= hi))
        if bad.size:
            raise ConfigError(f"{name}[{bad[0]}]", int(arr[bad[0]]), f"integers in [0, {hi - 1}]")
    same = np.flatnonzero(a == b)
    if same.size:
        raise ConfigError(f"model_b[{same[0]}]", int(b[same[0]]), "a model different from model_a")
    bad = np.flatnonzero(~((p >= 0.0) & (p <= 1.0)))  # NaN fails both comparisons
    if bad.size:
        raise ConfigError(f"prob_a[{bad[0]}]", float(p[bad[0]]), "numbers in [0, 1]")
    bad = np.flatnonzero((pos != 0) & (pos != 1))
    if bad.size:
        raise ConfigError(f"position[{bad[0]}]", pos[bad[0]].item(), "0 (a shown first) or 1 (b shown first)")
    return Comparisons(a, b, ins, p, pos.astype(np.int8), model_names, instruction_names)


def concat_comparisons(parts: Sequence[Comparisons]) -> Comparisons:
    """Records of ``parts`` (which must share names) one after the other."""
    if not parts:
        raise ConfigError("parts", "[]", "at least one Comparisons")
    first = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        if part.model_names != first.model_names or part.instruction_names != first.instruction_names:
            raise ConfigError(f"parts[{i}]", "other names", "Comparisons sharing model and instruction names")
    return Comparisons(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in Comparisons._fields[:5]),
        first.model_names,
        first.instruction_names,
    )


def read_comparisons_csv(path: str | Path) -> Comparisons:
    """:class:`Comparisons` from a CSV (layout in the module docstring). ``prob_a`` is used when both it and
    ``winner`` are present. Errors name ``file:row N:column``, e.g. ``judge.csv:row 4:winner='c' is invalid:
    accepted values are a, b or tie``."""
    path = Path(path)
    header, rows = read_csv_rows(path)
    missing = [c for c in ("model_a", "model_b") if c not in header]
    if missing or ("prob_a" not in header and "winner" not in header):
        raise ConfigError(
            f"{path.name}:columns",
            header,
            "a header with model_a, model_b and prob_a or winner (optional: instruction, position)",
        )
    models: dict[str, int] = {}
    instructions: dict[str, int] = {}
    records = []
    for number, row in rows:
        where = f"{path.name}:row {number}"
        names = []
        for col in ("model_a", "model_b"):
            if not row[col]:
                raise ConfigError(f"{where}:{col}", row[col], "a non-empty model name")
            names.append(row[col])
        if names[0] == names[1]:
            raise ConfigError(f"{where}:model_b", names[1], f"a model different from model_a={names[0]!r}")
        if "prob_a" in header:
            try:
                p = float(row["prob_a"])
            except ValueError:
                p = math.nan
            if not (0.0 <= p <= 1.0):  # also rejects NaN and inf
                raise ConfigError(f"{where}:prob_a", row["prob_a"], "numbers in [0, 1]")
        else:
            label = row["winner"].lower()
            if label not in _WINNER_PROB:
                raise ConfigError(f"{where}:winner", row["winner"], "a, b or tie")
            p = _WINNER_PROB[label]
        instr = row.get("instruction", "default")
        if not instr:
            raise ConfigError(f"{where}:instruction", instr, "a non-empty identifier")
        pos = row.get("position", "0")
        if pos not in ("0", "1"):
            raise ConfigError(f"{where}:position", pos, "0 (model_a shown first) or 1 (model_b shown first)")
        ia = models.setdefault(names[0], len(models))
        ib = models.setdefault(names[1], len(models))
        records.append((ia, ib, instructions.setdefault(instr, len(instructions)), p, int(pos)))
    a, b, ins, p, pos = zip(*records, strict=True)
    return Comparisons(
        np.asarray(a, dtype=np.int64),
        np.asarray(b, dtype=np.int64),
        np.asarray(ins, dtype=np.int64),
        np.asarray(p, dtype=np.float64),
        np.asarray(pos, dtype=np.int8),
        tuple(models),
        tuple(instructions),
    )


def to_csv(comparisons: Comparisons, path: str | Path) -> None:
    """Write ``comparisons`` as ``model_a, model_b, instruction, prob_a, position`` (names, not indices;
    ``prob_a`` with full float precision so :func:`read_comparisons_csv` reads back the same values)."""
    c = comparisons
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model_a", "model_b", "instruction", "prob_a", "position"])
        for a, b, ins, p, pos in zip(
            c.model_a.tolist(),
            c.model_b.tolist(),
            c.instruction.tolist(),
            c.prob_a.tolist(),
            c.position.tolist(),
            strict=True,
        ):
            writer.writerow([c.model_names[a], c.model_names[b], c.instruction_names[ins], repr(p), pos])
