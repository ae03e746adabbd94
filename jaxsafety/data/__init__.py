"""Synthetic corpora and tasks shared by studies: one generator interface, seeded, documented.

Generators are pure functions ``generator(config, seed) -> data`` of a frozen, validated config and an integer
seed (same inputs, same output on every machine: numpy streams seeded with ``[seed, stream]``). Modules:

- :mod:`~jaxsafety.data.arithmetic`: the arithmetic task ``a op b`` (distinct problems, with-replacement draws, the
  whole table; instruction / prompt / completion / equation strings);
- :mod:`~jaxsafety.data.corpus`: :func:`synthetic_corpus` (knowledge-base biographies, arithmetic, stories for LM
  pretraining; its people via :func:`knowledge_base`) and :func:`text_file_corpus`.
"""

from jaxsafety.data.arithmetic import (
    ArithmeticProblems,
    all_arithmetic_problems,
    arithmetic_problems,
    draw_arithmetic_problems,
    parse_arithmetic,
)
from jaxsafety.data.corpus import CorpusConfig, Entity, knowledge_base, synthetic_corpus, text_file_corpus

__all__ = [
    "ArithmeticProblems",
    "CorpusConfig",
    "Entity",
    "all_arithmetic_problems",
    "arithmetic_problems",
    "draw_arithmetic_problems",
    "knowledge_base",
    "parse_arithmetic",
    "synthetic_corpus",
    "text_file_corpus",
]
