"""Synthetic corpora and tasks shared by studies: one generator interface, seeded, documented.

Generators are pure functions ``generator(config, seed) -> data`` of a frozen, validated config and an integer
seed (same inputs, same output on every machine: numpy streams seeded with ``[seed, stream]``). Modules:

- :mod:`~jaxsafety.data.arithmetic`: the arithmetic task ``a op b`` (distinct problems, with-replacement draws, the
  whole table; instruction / prompt / completion / equation strings);
- :mod:`~jaxsafety.data.knowledge`: a knowledge base of people with attributes and relations, documents labelled
  with the facts they state (and the values' character spans), question-answer pairs, instruction pairs and
  preference pairs with the reason the rejected response is worse;
- :mod:`~jaxsafety.data.corpus`: :func:`synthetic_corpus` (the knowledge base's biographies, arithmetic, stories
  for LM pretraining) and :func:`text_file_corpus`.
"""

from jaxsafety.data.arithmetic import (
    ArithmeticProblems,
    all_arithmetic_problems,
    arithmetic_problems,
    draw_arithmetic_problems,
    parse_arithmetic,
)
from jaxsafety.data.corpus import CorpusConfig, synthetic_corpus, text_file_corpus
from jaxsafety.data.knowledge import (
    Entity,
    Fact,
    KnowledgeConfig,
    KnowledgeData,
    PairConfig,
    instruction_pairs,
    knowledge_base,
    knowledge_data,
    preference_pairs,
)

__all__ = [
    "ArithmeticProblems",
    "CorpusConfig",
    "Entity",
    "Fact",
    "KnowledgeConfig",
    "KnowledgeData",
    "PairConfig",
    "all_arithmetic_problems",
    "arithmetic_problems",
    "draw_arithmetic_problems",
    "instruction_pairs",
    "knowledge_base",
    "knowledge_data",
    "parse_arithmetic",
    "preference_pairs",
    "synthetic_corpus",
    "text_file_corpus",
]
