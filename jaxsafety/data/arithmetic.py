"""The arithmetic task shared by the corpus, the inference-scaling study and the LM judge: problems ``a op b`` with
operands in ``[0, max_operand]`` and integer answers ``>= 0``, in one set of surface forms.

One problem has four strings (:class:`ArithmeticProblems`):

- ``instructions``: ``"12 + 7"`` (what a judge is asked about);
- ``prompts``: ``"12 + 7 ="`` (what an LM completes);
- ``completions``: ``" 19."`` (the exact completion counted as a success; :data:`TERMINATOR` ends it);
- ``equations``: ``"12 + 7 = 19."`` (prompt + completion: the training / corpus line).

The problem distribution: operator uniform over ``ops``, operands uniform in ``[0, max_operand]``, swapped for
``-`` when ``b > a`` (answers stay ``>= 0``). Three ways to get problems from it, all deterministic in their seed:
:func:`draw_arithmetic_problems` (with replacement, from a numpy ``Generator`` the caller owns),
:func:`arithmetic_problems` (distinct problems, order of first draw) and :func:`all_arithmetic_problems` (the
whole ``len(ops) * (max_operand + 1)^2`` table, whose uniform rows are draws from the distribution).
:func:`parse_arithmetic` reads instructions back into problems.

Character tokenization (:class:`~jaxsafety.models.tokenizer.CharTokenizer` over :data:`ALPHABET`, EOS the
terminator) makes every answer's token sequence its decimal digits, unique, so the probability of a completion is
one product of per-token probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxsafety.config import ConfigError, check, check_range

__all__ = [
    "ALPHABET",
    "OPS",
    "TERMINATOR",
    "ArithmeticProblems",
    "all_arithmetic_problems",
    "arithmetic_problems",
    "check_ops",
    "draw_arithmetic_problems",
    "evaluate",
    "num_distinct_problems",
    "parse_arithmetic",
]

OPS = ("+", "-", "*")
TERMINATOR = "."  # ends every completion and equation line; the sampler's EOS token
ALPHABET = "0123456789 +-*=" + TERMINATOR  # every character of the task's strings
MAX_OPERAND = 10**9  # products stay exact in int64


def check_ops(ops: Sequence[str] | str, field: str = "ops", *, allow_empty: bool = False) -> tuple[str, ...]:
    """``ops`` as a tuple (a list from YAML / CLI or one operator string is accepted; configs stay hashable);
    raises :class:`~jaxsafety.config.ConfigError` naming ``field`` unless the operators are distinct members of
    :data:`OPS` (and at least one, unless ``allow_empty``)."""
    ops_t = tuple(ops) if isinstance(ops, list | tuple) else (ops,)
    ok = (allow_empty or len(ops_t) >= 1) and len(set(ops_t)) == len(ops_t) and all(o in OPS for o in ops_t)
    many = "a tuple" if allow_empty else "a non-empty tuple"
    check(ok, field, ops, f"{many} of distinct operators from '+', '-', '*'")
    return ops_t


def evaluate(a: int, op: str, b: int) -> int:
    """``a op b`` for ``op`` in :data:`OPS`."""
    if op not in OPS:
        raise ConfigError("op", op, "one of '+', '-', '*'")
    return a + b if op == "+" else a - b if op == "-" else a * b


def num_distinct_problems(max_operand: int, ops: Sequence[str] = OPS) -> int:
    """Distinct problems with operands in ``[0, max_operand]``: ``(m + 1)^2`` per operator, ``(m + 1)(m + 2) / 2``
    for subtraction (only ``a >= b``)."""
    m = max_operand + 1
    return sum(m * (m + 1) // 2 if op == "-" else m * m for op in check_ops(ops))


class ArithmeticProblems(NamedTuple):
    """``P`` arithmetic problems ``a op b`` with answers ``a op b >= 0`` (module docstring for the four strings)."""

    a: np.ndarray  # [P] int64 left operand
    op: tuple[str, ...]  # [P] operator, one of OPS
    b: np.ndarray  # [P] int64 right operand
    answers: np.ndarray  # [P] int64

    @property
    def num_problems(self) -> int:
        return int(self.answers.shape[0])

    @property
    def instructions(self) -> tuple[str, ...]:
        """``"a op b"``."""
        return tuple(f"{a} {o} {b}" for a, o, b in zip(self.a.tolist(), self.op, self.b.tolist()))

    @property
    def prompts(self) -> tuple[str, ...]:
        """``"a op b ="``."""
        return tuple(f"{s} =" for s in self.instructions)

    @property
    def completions(self) -> tuple[str, ...]:
        """``" answer."``: the exact completion of :attr:`prompts` counted as a success."""
        return tuple(f" {c}{TERMINATOR}" for c in self.answers.tolist())

    @property
    def equations(self) -> tuple[str, ...]:
        """``"a op b = answer."``: prompt + completion."""
        return tuple(p + c for p, c in zip(self.prompts, self.completions))

    def take(self, index: np.ndarray | Sequence[int]) -> ArithmeticProblems:
        """The problems at ``index`` (any integer index array, repeats allowed)."""
        idx = np.asarray(index, np.int64)
        return ArithmeticProblems(
            self.a[idx], tuple(self.op[i] for i in idx.tolist()), self.b[idx], self.answers[idx]
        )


def _problems(op_idx: np.ndarray, a: np.ndarray, b: np.ndarray, ops: tuple[str, ...]) -> ArithmeticProblems:
    """Problems from operator indices and operands, swapping ``a, b`` for ``-`` when ``b > a``."""
    swap = (np.asarray(ops)[op_idx] == "-") & (b > a)
    a, b = np.where(swap, b, a).astype(np.int64), np.where(swap, a, b).astype(np.int64)
    op = tuple(ops[i] for i in np.asarray(op_idx).tolist())
    answers = np.asarray([evaluate(x, o, y) for x, o, y in zip(a.tolist(), op, b.tolist())], np.int64)
    return ArithmeticProblems(a, op, b, answers)


def _check_task(max_operand: int, ops: Sequence[str]) -> tuple[str, ...]:
    check_range("max_operand", max_operand, ge=1, le=MAX_OPERAND, integer=True)
    return check_ops(ops)


def draw_arithmetic_problems(
    rng: np.random.Generator, size: int, *, max_operand: int, ops: Sequence[str] = OPS
) -> ArithmeticProblems:
    """``size`` problems drawn with replacement from the problem distribution with the caller's numpy ``rng``:
    both operands first (``rng.integers(0, max_operand + 1, size=(2, size))``), then the operators
    (``rng.integers(len(ops), size=size)``). This draw order is part of the contract: the synthetic corpus and the
    LM judge's task interleave these draws with their own and their published data depend on it."""
    ops_t = _check_task(max_operand, ops)
    check_range("size", size, ge=0, integer=True)
    a, b = rng.integers(0, max_operand + 1, size=(2, size))
    op_idx = rng.integers(len(ops_t), size=size)
    return _problems(op_idx, a, b, ops_t)


def arithmetic_problems(
    num_problems: int, *, seed: int, max_operand: int, ops: Sequence[str] = OPS
) -> ArithmeticProblems:
    """``num_problems`` *distinct* problems drawn without replacement from the problem distribution, in order of
    first draw; deterministic in ``seed`` (numpy stream ``[seed, 11]``, batches of ``2 num_problems`` draws with
    the operators drawn before the operands). Raises :class:`~jaxsafety.config.ConfigError` naming the bad field
    (also when ``num_problems`` exceeds :func:`num_distinct_problems`)."""
    check_range("seed", seed, ge=0, integer=True)
    ops_t = _check_task(max_operand, ops)
    check_range(
        "num_problems", num_problems, ge=1, le=num_distinct_problems(max_operand, ops_t), integer=True
    )
    rng = np.random.default_rng([seed, 11])
    seen: dict[tuple[int, int, int], None] = {}  # insertion-ordered set: deterministic
    while len(seen) < num_problems:
        op_idx = rng.integers(len(ops_t), size=2 * num_problems)
        a, b = rng.integers(0, max_operand + 1, size=(2, 2 * num_problems))
        batch = _problems(op_idx, a, b, ops_t)
        for key in zip(op_idx.tolist(), batch.a.tolist(), batch.b.tolist()):
            seen.setdefault(key, None)
            if len(seen) == num_problems:
                break
    op_idx, a, b = (np.asarray(x, np.int64) for x in zip(*seen))
    return _problems(op_idx, a, b, ops_t)


def all_arithmetic_problems(max_operand: int, ops: Sequence[str] = OPS) -> ArithmeticProblems:
    """Every ``(op, a, b)`` cell of the ``len(ops) * (max_operand + 1)^2`` table in C order (operator slowest, then
    ``a``, then ``b``), subtraction cells with ``b > a`` holding the swapped problem: a uniform draw of a row is a
    draw from the problem distribution (so the ``a >= b`` subtraction problems off the diagonal appear twice)."""
    ops_t = _check_task(max_operand, ops)
    m = max_operand + 1
    op_idx, a, b = (
        x.ravel() for x in np.meshgrid(np.arange(len(ops_t)), np.arange(m), np.arange(m), indexing="ij")
    )
    return _problems(op_idx, a, b, ops_t)


def parse_arithmetic(instructions: Sequence[str], field: str = "instructions") -> ArithmeticProblems:
    """Problems from instructions ``"a op b"`` (non-negative integers, one space around ``op`` in :data:`OPS`, a
    non-negative answer). Raises :class:`~jaxsafety.config.ConfigError` naming ``field`` and the first bad string."""
    a, op, b = [], [], []
    for s in instructions:
        parts = s.split(" ")
        ok = len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit() and parts[1] in OPS
        ok = ok and evaluate(int(parts[0]), parts[1], int(parts[2])) >= 0
        check(ok, field, s, "strings 'a op b' (non-negative integers, op one of '+', '-', '*', answer >= 0)")
        a.append(int(parts[0]))
        op.append(parts[1])
        b.append(int(parts[2]))
    a_arr, b_arr = np.asarray(a, np.int64), np.asarray(b, np.int64)
    answers = np.asarray([evaluate(x, o, y) for x, o, y in zip(a, op, b)], np.int64)
    return ArithmeticProblems(a_arr, tuple(op), b_arr, answers)
