"""Text corpora for language-model pretraining: a seeded synthetic English-like corpus and local text files.

The synthetic corpus is built so that a tiny LM has something to learn beyond token frequencies, and so that
studies built on the trained model (unlearning, influence, probing) know exactly which facts it saw:

- **knowledge base** (:func:`~jaxsafety.data.knowledge.knowledge_base`, shared with the labelled knowledge data
  of :mod:`jaxsafety.data.knowledge`): fictional people, each with a fixed city, profession, favourite
  colour, pet and birth year. A biography document states a few of one person's attributes in templates drawn at
  random (declarative sentences and ``Q: ... A: ...`` pairs), so an attribute is predictable only by memorising the
  fact, the template only by learning its phrasing;
- **arithmetic**: lines of correct equations ``12 + 7 = 19.``, ``15 - 4 = 11.``, ``6 * 3 = 18.`` with operands in
  ``[0, max_operand]`` (subtraction never goes below zero), from :mod:`jaxsafety.data.arithmetic`;
- **stories**: short stories from a small grammar in which the two characters' names recur (learnable by copying
  from context, i.e. induction) and pronouns agree with the character.

Everything is a pure function of ``(config, seed)``: numpy ``Generator`` streams seeded with ``[seed, stream]``,
no Python ``hash`` and no set iteration, so the same seed gives the same corpus on every machine and process.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from jaxsafety.config import check, check_range
from jaxsafety.data.arithmetic import draw_arithmetic_problems
from jaxsafety.data.knowledge import ATTRIBUTES, Entity, a_or_an, biography, knowledge_base

__all__ = ["CorpusConfig", "synthetic_corpus", "text_file_corpus"]

# ----------------------------------------------------------------------------------------------------------------
# story vocabularies (fixed lists: the corpus's surface forms never depend on anything but the seed)

_CHARACTERS = (
    ("Anna", "she", "her"),
    ("Ben", "he", "his"),
    ("Clara", "she", "her"),
    ("David", "he", "his"),
    ("Emma", "she", "her"),
    ("Felix", "he", "his"),
    ("Grace", "she", "her"),
    ("Hugo", "he", "his"),
    ("Iris", "she", "her"),
    ("Jonas", "he", "his"),
    ("Lena", "she", "her"),
    ("Max", "he", "his"),
)
_PLACES = ("park", "market", "library", "river", "forest", "school", "beach", "garden")
_ADJECTIVES = ("red", "old", "shiny", "small", "big", "wooden", "soft", "strange")
_OBJECTS = ("ball", "book", "coin", "kite", "box", "hat", "map", "lamp")
_FEELINGS = ("happy", "glad", "excited", "proud")
_STORY_OPENINGS = (
    "Once upon a time, {A} went to the {place}.",
    "One day, {A} walked to the {place}.",
    "On a sunny morning, {A} went to the {place}.",
)
_STORY_MEETINGS = ("There {a_pron} met {B}.", "At the {place}, {A} saw {B}.")
_STORY_OBJECTS = ("{B} had {a_adj} {obj}.", "{B} was holding {a_adj} {obj}.")
_STORY_ASKS = (
    "{A} asked {B} for the {obj}, and {B} gave it to {A}.",
    "{A} wanted the {obj}, so {B} gave the {obj} to {A}.",
)
_STORY_ENDINGS = (
    "{A} was very {feeling}. The end.",
    "{A} took the {adj} {obj} home and {a_pron} was {feeling}. The end.",
    "{A} put the {obj} in {a_poss} bag and went home. The end.",
)


# ----------------------------------------------------------------------------------------------------------------
# config


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Size and mixture of the synthetic corpus (see the module docstring for the three document kinds).

    ``*_weight`` are relative probabilities of a document's kind (normalised; a zero weight drops that kind).
    """

    num_documents: int = 4000
    num_entities: int = 100  # people in the knowledge base
    facts_per_document: int = 3  # attributes stated per biography (<= 5)
    equations_per_document: int = 4
    max_operand: int = 20
    kb_weight: float = 0.4
    arithmetic_weight: float = 0.3
    story_weight: float = 0.3

    def __post_init__(self) -> None:
        check_range("num_documents", self.num_documents, ge=1, integer=True)
        check_range("num_entities", self.num_entities, ge=1, le=5000, integer=True)
        check_range("facts_per_document", self.facts_per_document, ge=1, le=len(ATTRIBUTES), integer=True)
        check_range("equations_per_document", self.equations_per_document, ge=1, integer=True)
        check_range("max_operand", self.max_operand, ge=1, integer=True)
        for f in ("kb_weight", "arithmetic_weight", "story_weight"):
            check_range(f, getattr(self, f), ge=0)
        total = self.kb_weight + self.arithmetic_weight + self.story_weight
        check(total > 0, "story_weight", self.story_weight, "numbers >= 0 with kb + arithmetic + story > 0")


# ----------------------------------------------------------------------------------------------------------------
# documents


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[rng.integers(len(options))]


def _biography(rng: np.random.Generator, entity: Entity, n_facts: int) -> str:
    return biography(rng, entity, n_facts, keys=ATTRIBUTES).text


def _equation(rng: np.random.Generator, max_operand: int) -> str:
    return draw_arithmetic_problems(rng, 1, max_operand=max_operand).equations[0]


def _story(rng: np.random.Generator) -> str:
    i, j = rng.choice(len(_CHARACTERS), size=2, replace=False)
    (a, a_pron, a_poss), (b, _, _) = _CHARACTERS[i], _CHARACTERS[j]
    adj = _pick(rng, _ADJECTIVES)
    fields = {
        "A": a,
        "B": b,
        "a_pron": a_pron,
        "a_poss": a_poss,
        "place": _pick(rng, _PLACES),
        "adj": adj,
        "a_adj": a_or_an(adj),
        "obj": _pick(rng, _OBJECTS),
        "feeling": _pick(rng, _FEELINGS),
    }
    parts = (_STORY_OPENINGS, _STORY_MEETINGS, _STORY_OBJECTS, _STORY_ASKS, _STORY_ENDINGS)
    return " ".join(_pick(rng, p).format(**fields) for p in parts)


def synthetic_corpus(config: CorpusConfig, seed: int) -> list[str]:
    """``config.num_documents`` documents (plain strings, no special tokens), deterministic in ``(config, seed)``.

    Each document is a biography of one :func:`knowledge_base` entity, a few lines of arithmetic, or a story,
    with probabilities proportional to the ``*_weight`` fields.
    """
    kb = knowledge_base(config, seed)
    rng = np.random.default_rng([seed, 1])
    weights = np.array([config.kb_weight, config.arithmetic_weight, config.story_weight], np.float64)
    kinds = rng.choice(3, size=config.num_documents, p=weights / weights.sum())
    docs = []
    for kind in kinds:
        if kind == 0:
            docs.append(_biography(rng, kb[rng.integers(len(kb))], config.facts_per_document))
        elif kind == 1:
            docs.append(
                "\n".join(_equation(rng, config.max_operand) for _ in range(config.equations_per_document))
            )
        else:
            docs.append(_story(rng))
    return docs


def text_file_corpus(path: str | Path, *, separator: str = "<|endoftext|>") -> list[str]:
    """Documents of a local UTF-8 text file, in file order.

    If the file contains ``separator`` the documents are the pieces between separators; otherwise they are the
    paragraphs, i.e. the pieces between runs of blank lines. Pieces are stripped and empty ones dropped.
    """
    text = Path(path).read_text(encoding="utf-8")
    pieces = text.split(separator) if separator and separator in text else re.split(r"\n\s*\n", text)
    docs = [p.strip() for p in pieces]
    return [d for d in docs if d]
