"""A labelled synthetic knowledge base: people with attributes and relations, documents that carry the facts they
state as labels, question-answer pairs, and instruction / preference pairs built from them.

Studies that ask what a model knows (unlearning, influence, probing, steering, reward models) need text whose
facts are known exactly. Here every fact is a triple :class:`Fact` ``(subject, key, value)``:

- **people** (:func:`knowledge_base`): fictional names (two made-up words, so nothing is known from real text),
  each with a city, profession, favourite colour, pet and birth year (:data:`ATTRIBUTES`), drawn uniformly;
- **relations** (:data:`RELATIONS`): each person's ``best_friend`` and ``mentor``, another person drawn uniformly;
- **documents** (:class:`Document`): a biography of one person stating ``facts_per_document`` distinct facts in
  templates drawn at random (declarative sentences and ``Q: ... A: ...`` pairs); ``document.mentions`` label each
  stated fact with the character span of its value (``text[start:end] == fact.value``);
- **questions** (:class:`QAPair`): one question per fact of the knowledge base, its answer the fact's value;
- **instruction pairs** (:func:`instruction_pairs`): prompt / response strings from the questions;
- **preference pairs** (:func:`preference_pairs`): a prompt, a chosen (correct) and a rejected response, and the
  reason the rejected one is worse: ``wrong_value`` (another value of the asked attribute), ``off_topic`` (a true
  value of another attribute of the same person) or ``non_answer`` (a refusal).

Everything is a pure function of ``(config, seed)`` through numpy streams ``[seed, stream]`` (people 0, as the
pretraining corpus of :mod:`jaxsafety.data.corpus`, which shares the people and the attribute templates;
relations 2, documents 3, question templates 4, preference pairs 5): the same seed gives the same data on every
machine and process.

Example::

    data = knowledge_data(KnowledgeConfig(num_entities=20, num_documents=100), seed=0)
    doc = data.documents[0]
    doc.text     # "By profession, Dutoulous Gaistan is a teacher. Dutoulous Gaistan has a pet cat. The city of ..."
    doc.mentions[0]  # Mention(Fact("Dutoulous Gaistan", "profession", "teacher"), start=38, end=45)
    data.qa[0]   # QAPair("Where does Voliba Drux live?", "Duncairn", Fact("Voliba Drux", "city", "Duncairn"))
    preference_pairs(data, seed=0)[1]  # prompt "Question: What is the profession of Voliba Drux?\nAnswer:",
                                       # chosen " doctor", rejected " Rouste Dru", reason "off_topic"
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxsafety.config import check, check_range

__all__ = [
    "ATTRIBUTES",
    "CITIES",
    "COLOURS",
    "KEYS",
    "PETS",
    "PROFESSIONS",
    "REJECTION_REASONS",
    "RELATIONS",
    "Document",
    "Entity",
    "Fact",
    "InstructionPair",
    "KnowledgeConfig",
    "KnowledgeData",
    "Mention",
    "PairConfig",
    "PreferencePair",
    "QAPair",
    "a_or_an",
    "biography",
    "corpus_question",
    "instruction_pairs",
    "knowledge_base",
    "knowledge_data",
    "preference_pairs",
]

# ----------------------------------------------------------------------------------------------------------------
# vocabularies (fixed lists: surface forms never depend on anything but the seed)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "th", "x")
CITIES = (
    "Varnholm",
    "Quillbridge",
    "Ostrava Vale",
    "Miradel",
    "Thornwick",
    "Saltmere",
    "Kestrel Bay",
    "Duncairn",
    "Elmsford",
    "Orrin Falls",
    "Pellinor",
    "Greyhaven",
)
PROFESSIONS = (
    "baker",
    "pilot",
    "astronomer",
    "carpenter",
    "doctor",
    "engineer",
    "gardener",
    "librarian",
    "musician",
    "painter",
    "teacher",
    "writer",
)
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "silver", "black")
PETS = ("cat", "dog", "parrot", "rabbit", "tortoise", "goldfish", "hamster", "owl")
BIRTH_YEARS = (1900, 2000)  # [low, high)
ATTRIBUTES = ("city", "profession", "colour", "pet", "birth_year")
RELATIONS = ("best_friend", "mentor")
KEYS = ATTRIBUTES + RELATIONS
REJECTION_REASONS = ("wrong_value", "off_topic", "non_answer")
NON_ANSWER = "I don't know"  # filled into response_template like an answer

# statement templates: ``{name}`` is the subject; the value's field is ``{<key>}`` (``{a_profession}``: the
# profession with its article, whose span is the profession word)
_FACT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "city": (
        "{name} lives in {city}.",
        "{name} has a home in {city}.",
        "The city of {city} is where {name} lives.",
        "Q: Where does {name} live? A: {city}.",
    ),
    "profession": (
        "{name} works as {a_profession}.",
        "By profession, {name} is {a_profession}.",
        "{name} is {a_profession} by trade.",
        "Q: What does {name} do? A: {name} is {a_profession}.",
    ),
    "colour": (
        "The favourite colour of {name} is {colour}.",
        "{name} likes the colour {colour} best.",
        "Q: What is the favourite colour of {name}? A: {colour}.",
    ),
    "pet": (
        "{name} owns a {pet}.",
        "{name} has a pet {pet}.",
        "Q: Which pet does {name} have? A: a {pet}.",
    ),
    "birth_year": (
        "{name} was born in {birth_year}.",
        "The birth year of {name} is {birth_year}.",
        "Q: When was {name} born? A: in {birth_year}.",
    ),
    "best_friend": (
        "The best friend of {name} is {best_friend}.",
        "{name} spends every weekend with {best_friend}, a best friend since school.",
        "Q: Who is the best friend of {name}? A: {best_friend}.",
    ),
    "mentor": (
        "The mentor of {name} is {mentor}.",
        "{name} was trained by {mentor}, a mentor for many years.",
        "Q: Who mentored {name}? A: {mentor}.",
    ),
}
_VALUE_FIELD = {**{k: k for k in KEYS}, "profession": "a_profession"}

_QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "city": ("Where does {name} live?", "In which city does {name} live?"),
    "profession": ("What does {name} do for a living?", "What is the profession of {name}?"),
    "colour": ("What is the favourite colour of {name}?", "Which colour does {name} like best?"),
    "pet": ("Which pet does {name} have?", "What kind of pet does {name} own?"),
    "birth_year": ("When was {name} born?", "In which year was {name} born?"),
    "best_friend": ("Who is the best friend of {name}?",),
    "mentor": ("Who is the mentor of {name}?", "Who mentored {name}?"),
}


# ----------------------------------------------------------------------------------------------------------------
# people and facts


@dataclasses.dataclass(frozen=True)
class Entity:
    """One fictional person of the knowledge base and their (fixed) attributes."""

    name: str
    city: str
    profession: str
    colour: str
    pet: str
    birth_year: int

    def attribute(self, key: str) -> str:
        """The attribute ``key`` (one of :data:`ATTRIBUTES`) as it appears in text."""
        return str(getattr(self, key))


class Fact(NamedTuple):
    """``subject``'s ``key`` (one of :data:`KEYS`) is ``value`` (as it appears in text)."""

    subject: str
    key: str
    value: str


class Mention(NamedTuple):
    """A fact stated by a document; ``text[start:end] == fact.value``."""

    fact: Fact
    start: int
    end: int


class Document(NamedTuple):
    """A biography of ``subject``; ``mentions`` label every fact it states, in order of appearance."""

    text: str
    subject: str
    mentions: tuple[Mention, ...]

    @property
    def facts(self) -> tuple[Fact, ...]:
        return tuple(m.fact for m in self.mentions)


class QAPair(NamedTuple):
    """A question about ``fact`` whose answer is ``fact.value``."""

    question: str
    answer: str
    fact: Fact


class InstructionPair(NamedTuple):
    """An instruction-tuning row: ``prompt`` then ``response`` (built by :func:`instruction_pairs`)."""

    prompt: str
    response: str
    fact: Fact


class PreferencePair(NamedTuple):
    """``chosen`` answers ``prompt`` correctly; ``rejected`` is worse for ``reason`` (:data:`REJECTION_REASONS`)."""

    prompt: str
    chosen: str
    rejected: str
    reason: str
    fact: Fact


def _syllable_word(rng: np.random.Generator, n_syllables: int) -> str:
    parts = [
        _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] for _ in range(n_syllables)
    ]
    parts[-1] += _CODAS[rng.integers(len(_CODAS))]
    return "".join(parts).capitalize()


def knowledge_base(config: Any, seed: int) -> list[Entity]:
    """The ``config.num_entities`` people (unique names) of the knowledge base of ``seed``, for any config with a
    ``num_entities`` field (:class:`KnowledgeConfig`, :class:`~jaxsafety.data.corpus.CorpusConfig`: the same seed
    gives the same people to both). Names are two pronounceable made-up words (``"Dravin Kolu"``); attributes are
    drawn uniformly and independently (numpy stream ``[seed, 0]``)."""
    rng = np.random.default_rng([seed, 0])
    names: dict[str, None] = {}  # insertion-ordered set
    while len(names) < config.num_entities:
        name = (
            f"{_syllable_word(rng, int(rng.integers(2, 4)))} {_syllable_word(rng, int(rng.integers(1, 3)))}"
        )
        names.setdefault(name)
    return [
        Entity(
            name=name,
            city=CITIES[rng.integers(len(CITIES))],
            profession=PROFESSIONS[rng.integers(len(PROFESSIONS))],
            colour=COLOURS[rng.integers(len(COLOURS))],
            pet=PETS[rng.integers(len(PETS))],
            birth_year=int(rng.integers(*BIRTH_YEARS)),
        )
        for name in names
    ]


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article: ``"a baker"``, ``"an engineer"``."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _render(template: str, fields: Mapping[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """``template.format(**fields)`` and the character span of each replacement field (the last one per name)."""
    out, spans, pos = [], {}, 0
    for literal, field, _, _ in string.Formatter().parse(template):
        out.append(literal)
        pos += len(literal)
        if field is not None:
            value = fields[field]
            spans[field] = (pos, pos + len(value))
            out.append(value)
            pos += len(value)
    return "".join(out), spans


def biography(
    rng: np.random.Generator,
    entity: Entity,
    n_facts: int,
    *,
    keys: Sequence[str] = ATTRIBUTES,
    relations: Mapping[str, str] | None = None,
) -> Document:
    """A document stating ``n_facts`` distinct facts of ``entity`` (keys drawn without replacement from ``keys``
    with ``rng.permutation``, then one template per key with ``rng.integers``), sentences joined by spaces, with
    the value span of each stated fact. ``relations``: the person's relation values (``{"mentor": name}``), needed
    when ``keys`` holds relations. The draw order is part of the contract: the pretraining corpus interleaves
    these draws with its own."""
    chosen = [keys[i] for i in rng.permutation(len(keys))[:n_facts]]
    fields = {"name": entity.name, "a_profession": a_or_an(entity.profession)}
    fields.update({k: entity.attribute(k) for k in ATTRIBUTES})
    fields.update(relations or {})
    parts, mentions, pos = [], [], 0
    for k in chosen:
        templates = _FACT_TEMPLATES[k]
        text, spans = _render(templates[rng.integers(len(templates))], fields)
        start, end = spans[_VALUE_FIELD[k]]
        if k == "profession":  # the span of the profession word inside "a baker" / "an engineer"
            start = end - len(entity.profession)
        mentions.append(Mention(Fact(entity.name, k, fields[k]), pos + start, pos + end))
        parts.append(text)
        pos += len(text) + 1
    return Document(" ".join(parts), entity.name, tuple(mentions))


def corpus_question(fact: Fact) -> tuple[str, str]:
    """``fact`` asked in the documents' own ``Q: ... A: ...`` template (the phrasing a model trained on biographies
    has seen), split into the prompt ``"Q: <question> A:"`` and the completion (``" Duncairn."``,
    ``" Voliba Drux is a baker."``, ``" a cat."``, ``" in 1950."``)."""
    template = next(t for t in _FACT_TEMPLATES[fact.key] if t.startswith("Q: "))
    question, answer = template.split(" A:", 1)
    fields = {"name": fact.subject, fact.key: fact.value}
    if fact.key == "profession":
        fields["a_profession"] = a_or_an(fact.value)
    return question.format(**fields) + " A:", answer.format(**fields)


# ----------------------------------------------------------------------------------------------------------------
# the generator


@dataclasses.dataclass(frozen=True)
class KnowledgeConfig:
    """Size of the knowledge base and its documents (module docstring). ``keys``: the attributes and relations
    that documents state and questions ask about (a non-empty subset of :data:`KEYS`); ``facts_per_document``
    distinct ones per document."""

    num_entities: int = 50
    num_documents: int = 500
    facts_per_document: int = 3
    keys: tuple[str, ...] = KEYS

    def __post_init__(self) -> None:
        keys = tuple(self.keys) if isinstance(self.keys, list | tuple) else (self.keys,)
        object.__setattr__(self, "keys", keys)  # a list from YAML / CLI: the config stays hashable
        ok = len(keys) >= 1 and len(set(keys)) == len(keys) and all(k in KEYS for k in keys)
        check(ok, "keys", self.keys, f"a non-empty tuple of distinct keys from {KEYS}")
        has_relation = any(k in RELATIONS for k in keys)
        check_range("num_entities", self.num_entities, ge=2 if has_relation else 1, le=5000, integer=True)
        check_range("num_documents", self.num_documents, ge=1, integer=True)
        check_range("facts_per_document", self.facts_per_document, ge=1, le=len(keys), integer=True)


class KnowledgeData(NamedTuple):
    """What :func:`knowledge_data` returns: the people, their ``relations[name][relation] = other name``, every
    fact over ``config.keys`` (person-major, keys in ``config.keys`` order), the documents and one question per
    fact (in the order of ``facts``)."""

    config: KnowledgeConfig
    entities: list[Entity]
    relations: dict[str, dict[str, str]]
    facts: list[Fact]
    documents: list[Document]
    qa: list[QAPair]

    def value(self, subject: str, key: str) -> str:
        """The knowledge base's value of ``subject``'s ``key``."""
        if key in RELATIONS:
            return self.relations[subject][key]
        return next(e for e in self.entities if e.name == subject).attribute(key)


def _relations(entities: list[Entity], seed: int) -> dict[str, dict[str, str]]:
    """Each person's relations: another person drawn uniformly (numpy stream ``[seed, 2]``)."""
    rng = np.random.default_rng([seed, 2])
    n = len(entities)
    out: dict[str, dict[str, str]] = {e.name: {} for e in entities}  # one person: nobody to relate to
    if n > 1:
        for i, e in enumerate(entities):
            others = (i + 1 + rng.integers(n - 1, size=len(RELATIONS))) % n  # uniform over the other people
            out[e.name] = {r: entities[j].name for r, j in zip(RELATIONS, others.tolist(), strict=True)}
    return out


def knowledge_data(config: KnowledgeConfig, seed: int) -> KnowledgeData:
    """The knowledge base, documents and questions of ``(config, seed)`` (module docstring); deterministic."""
    check_range("seed", seed, ge=0, integer=True)
    entities = knowledge_base(config, seed)
    relations = _relations(entities, seed)
    facts = [
        Fact(e.name, k, relations[e.name][k] if k in RELATIONS else e.attribute(k))
        for e in entities
        for k in config.keys
    ]
    rng = np.random.default_rng([seed, 3])
    documents = []
    for _ in range(config.num_documents):
        e = entities[rng.integers(len(entities))]
        documents.append(
            biography(rng, e, config.facts_per_document, keys=config.keys, relations=relations[e.name])
        )
    rng = np.random.default_rng([seed, 4])
    qa = []
    for f in facts:
        templates = _QUESTION_TEMPLATES[f.key]
        qa.append(QAPair(templates[rng.integers(len(templates))].format(name=f.subject), f.value, f))
    return KnowledgeData(config, entities, relations, facts, documents, qa)


# ----------------------------------------------------------------------------------------------------------------
# instruction and preference pairs


@dataclasses.dataclass(frozen=True)
class PairConfig:
    """How questions become training pairs: ``prompt_template`` (with ``{question}``) and ``response_template``
    (with ``{answer}``); the rejected responses of :func:`preference_pairs` are drawn uniformly over
    ``rejection_reasons`` (a non-empty subset of :data:`REJECTION_REASONS`)."""

    prompt_template: str = "Question: {question}\nAnswer:"
    response_template: str = " {answer}"
    rejection_reasons: tuple[str, ...] = REJECTION_REASONS

    def __post_init__(self) -> None:
        for field, name in (("prompt_template", "question"), ("response_template", "answer")):
            template = getattr(self, field)
            try:
                names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
            except (ValueError, TypeError):
                names = []
            check(names == [name], field, template, f"a string with exactly one {{{name}}} field")
        reasons = self.rejection_reasons
        reasons = tuple(reasons) if isinstance(reasons, list | tuple) else (reasons,)
        object.__setattr__(self, "rejection_reasons", reasons)
        ok = (
            len(reasons) >= 1
            and len(set(reasons)) == len(reasons)
            and all(r in REJECTION_REASONS for r in reasons)
        )
        check(ok, "rejection_reasons", self.rejection_reasons, f"a non-empty tuple from {REJECTION_REASONS}")


def instruction_pairs(qa: Sequence[QAPair], config: PairConfig = PairConfig()) -> list[InstructionPair]:
    """One instruction pair per question: the prompt and response templates of ``config`` filled in."""
    return [
        InstructionPair(
            config.prompt_template.format(question=q.question),
            config.response_template.format(answer=q.answer),
            q.fact,
        )
        for q in qa
    ]


def _domain(data: KnowledgeData, key: str) -> list[str]:
    """Every value ``key`` can take (as text): the vocabulary, the year range, or the people's names."""
    if key in RELATIONS:
        return [e.name for e in data.entities]
    if key == "birth_year":
        return [str(y) for y in range(*BIRTH_YEARS)]
    return list({"city": CITIES, "profession": PROFESSIONS, "colour": COLOURS, "pet": PETS}[key])


def preference_pairs(
    data: KnowledgeData, config: PairConfig = PairConfig(), *, seed: int
) -> list[PreferencePair]:
    """One preference pair per question of ``data``: the chosen response states the true answer, the rejected one
    is worse for a reason drawn uniformly from ``config.rejection_reasons`` (numpy stream ``[seed, 5]``):

    - ``wrong_value``: another value of the asked key, uniform over its domain minus the truth (another city,
      year, person...);
    - ``off_topic``: the same person's true value of another key of ``data.config.keys`` (uniform over the keys
      whose value differs from the answer; ``wrong_value`` when there is none);
    - ``non_answer``: ``"I don't know"`` (in the response template).
    """
    check_range("seed", seed, ge=0, integer=True)
    rng = np.random.default_rng([seed, 5])
    pairs = []
    for q in data.qa:
        reason = config.rejection_reasons[rng.integers(len(config.rejection_reasons))]
        # other keys whose value differs from the answer (two relations may name the same person)
        others = [
            k for k in data.config.keys if k != q.fact.key and data.value(q.fact.subject, k) != q.answer
        ]
        if reason == "off_topic" and not others:
            reason = "wrong_value"
        if reason == "wrong_value":
            domain = [v for v in _domain(data, q.fact.key) if v != q.answer and v != q.fact.subject]
            answer = domain[rng.integers(len(domain))]
        elif reason == "off_topic":
            answer = data.value(q.fact.subject, others[rng.integers(len(others))])
        else:
            answer = NON_ANSWER
        pairs.append(
            PreferencePair(
                config.prompt_template.format(question=q.question),
                config.response_template.format(answer=q.answer),
                config.response_template.format(answer=answer),
                reason,
                q.fact,
            )
        )
    return pairs
