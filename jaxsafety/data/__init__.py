"""Synthetic corpora and tasks shared by studies: one generator interface, seeded, documented.

Generators are pure functions ``generator(config, seed) -> data`` of a frozen, validated config and an integer
seed (same inputs, same output on every machine). So far: :func:`synthetic_corpus` (knowledge-base biographies,
arithmetic, stories for LM pretraining; its facts via :func:`knowledge_base`) and :func:`text_file_corpus`.
"""

from jaxsafety.data.corpus import CorpusConfig, Entity, knowledge_base, synthetic_corpus, text_file_corpus

__all__ = ["CorpusConfig", "Entity", "knowledge_base", "synthetic_corpus", "text_file_corpus"]
