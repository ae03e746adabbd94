"""The labelled knowledge data (jaxsafety.data.knowledge): document labels against facts recovered from the text by
an independent keyword parser, value spans against the text, questions and answers against the knowledge base,
preference pairs against their stated reasons, determinism in the seed, validation errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.data import CorpusConfig, knowledge_base
from jaxsafety.data.knowledge import (
    CITIES,
    COLOURS,
    KEYS,
    PETS,
    PROFESSIONS,
    RELATIONS,
    KnowledgeConfig,
    PairConfig,
    biography,
    instruction_pairs,
    knowledge_data,
    preference_pairs,
)

CFG = KnowledgeConfig(num_entities=15, num_documents=300, facts_per_document=4)

# keyword -> key, written from the meaning of the sentences (not from the module's templates)
_KEYWORDS = (
    ("best friend", "best_friend"),
    ("mentor", "mentor"),
    ("trained by", "mentor"),
    ("colour", "colour"),
    ("pet", "pet"),
    ("owns a", "pet"),
    ("born", "birth_year"),
    ("birth", "birth_year"),
    ("live", "city"),
    ("home", "city"),
    ("city", "city"),
    ("profession", "profession"),
    ("works as", "profession"),
    ("trade", "profession"),
    ("do?", "profession"),
)
_VOCAB = {"city": CITIES, "profession": PROFESSIONS, "colour": COLOURS, "pet": PETS}


def _parse(doc_text: str, subject: str, names: list[str]) -> list[tuple[str, str, str]]:
    """Facts ``(subject, key, value)`` read off a biography, one per sentence: the key from a keyword, the value
    from the key's vocabulary, a year, or another person's name."""
    facts = []
    for sentence in re.split(r"(?<=\.) ", doc_text):
        assert subject in sentence, sentence
        keys = {k for word, k in _KEYWORDS if word in sentence}
        assert len(keys) == 1, (sentence, keys)
        key = keys.pop()
        rest = sentence.replace(subject, "")
        if key in RELATIONS:
            values = [n for n in names if n != subject and n in rest]
        elif key == "birth_year":
            values = re.findall(r"\b\d{4}\b", rest)
        else:
            values = [v for v in _VOCAB[key] if re.search(rf"\b{v}\b", rest)]
        assert len(values) == 1, (sentence, values)
        facts.append((subject, key, values[0]))
    return facts


@pytest.fixture(scope="module")
def data():
    return knowledge_data(CFG, seed=0)


def test_document_labels_agree_with_the_text(data):
    names = [e.name for e in data.entities]
    truth = {(f.subject, f.key): f.value for f in data.facts}
    stated = set()
    for doc in data.documents:
        parsed = _parse(doc.text, doc.subject, names)
        assert [tuple(m.fact) for m in doc.mentions] == parsed  # labels = what the text says, in order
        for m in doc.mentions:
            assert doc.text[m.start : m.end] == m.fact.value
            assert truth[m.fact.subject, m.fact.key] == m.fact.value  # and it is the knowledge base's fact
            stated.add(m.fact.key)
        assert len({m.fact.key for m in doc.mentions}) == CFG.facts_per_document
    assert stated == set(KEYS)  # 300 documents use every key


def test_knowledge_base_matches_the_corpus_people_and_relations_are_others(data):
    assert data.entities == knowledge_base(CorpusConfig(num_entities=15), 0)  # one set of people per seed
    for e in data.entities:
        rel = data.relations[e.name]
        assert set(rel) == set(RELATIONS) and e.name not in rel.values()
        assert all(v in {x.name for x in data.entities} for v in rel.values())
    assert len(data.facts) == 15 * len(KEYS)


def test_questions_ask_about_their_fact_and_answers_equal_the_knowledge_base(data):
    people = {e.name: e for e in data.entities}
    assert len(data.qa) == len(data.facts)
    for q in data.qa:
        subject = [n for n in people if n in q.question]
        assert subject == [q.fact.subject], q
        key = {k for word, k in _KEYWORDS if word in q.question.lower()}
        if "What does" in q.question or "kind of pet" in q.question or "mentored" in q.question:
            key = {"profession" if "What does" in q.question else "pet" if "pet" in q.question else "mentor"}
        assert key == {q.fact.key}, q
        e = people[q.fact.subject]
        expected = (
            data.relations[e.name][q.fact.key] if q.fact.key in RELATIONS else str(getattr(e, q.fact.key))
        )
        assert q.answer == expected == data.value(e.name, q.fact.key)


def test_instruction_and_preference_pairs(data):
    cfg = PairConfig(prompt_template="Q: {question}\nA:", response_template=" {answer}.")
    ins = instruction_pairs(data.qa, cfg)
    assert [p.prompt for p in ins] == [f"Q: {q.question}\nA:" for q in data.qa]
    assert [p.response for p in ins] == [f" {q.answer}." for q in data.qa]
    pairs = preference_pairs(data, cfg, seed=1)
    assert len(pairs) == len(data.qa)
    reasons = [p.reason for p in pairs]
    assert set(reasons) == {"wrong_value", "off_topic", "non_answer"}
    for p, q in zip(pairs, data.qa, strict=True):
        assert p.prompt == f"Q: {q.question}\nA:" and p.chosen == f" {q.answer}." and p.rejected != p.chosen
        rejected = p.rejected[1:-1]
        person = {k: data.value(q.fact.subject, k) for k in KEYS}
        if p.reason == "non_answer":
            assert rejected == "I don't know"
        elif p.reason == "off_topic":  # a true fact about the same person, of another key
            assert any(person[k] == rejected for k in KEYS if k != q.fact.key)
        else:  # a wrong value from the asked key's domain
            domain = [e.name for e in data.entities] if q.fact.key in RELATIONS else _VOCAB.get(q.fact.key)
            if domain is None:
                assert 1900 <= int(rejected) < 2000
            else:
                assert rejected in domain
            assert rejected not in (q.answer, q.fact.subject)
    only = preference_pairs(data, PairConfig(rejection_reasons=("non_answer",)), seed=1)
    assert {p.reason for p in only} == {"non_answer"}


def test_same_seed_same_data_other_seed_other_data(data):
    again = knowledge_data(CFG, seed=0)
    assert again == data
    other = knowledge_data(CFG, seed=1)
    assert [d.text for d in other.documents] != [d.text for d in data.documents]
    assert other.entities != data.entities
    assert preference_pairs(data, seed=2) == preference_pairs(data, seed=2) != preference_pairs(data, seed=3)


def test_biography_of_attributes_only_needs_no_relations():
    e = knowledge_base(CorpusConfig(num_entities=1), 4)[0]
    doc = biography(np.random.default_rng(0), e, 5)
    assert {m.fact.key for m in doc.mentions} == {"city", "profession", "colour", "pet", "birth_year"}
    assert all(doc.text[m.start : m.end] == m.fact.value for m in doc.mentions)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_entities": 0}, "num_entities"),
        ({"num_entities": 1}, "num_entities"),  # relations need another person
        ({"num_documents": 0}, "num_documents"),
        ({"keys": ("city", "age")}, "keys"),
        ({"keys": ()}, "keys"),
        ({"keys": ("city", "city")}, "keys"),
        ({"keys": ("city", "pet"), "facts_per_document": 3}, "facts_per_document"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}="):
        KnowledgeConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt_template": "no field"}, "prompt_template"),
        ({"prompt_template": "{question} {x}"}, "prompt_template"),
        ({"response_template": "{"}, "response_template"),
        ({"rejection_reasons": ("rude",)}, "rejection_reasons"),
        ({"rejection_reasons": ()}, "rejection_reasons"),
    ],
)
def test_pair_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}="):
        PairConfig(**kwargs)


def test_one_person_without_relations_and_bad_seed():
    cfg = KnowledgeConfig(num_entities=1, num_documents=3, facts_per_document=2, keys=("city", "pet"))
    one = knowledge_data(cfg, seed=0)
    assert one.relations == {one.entities[0].name: {}} and len(one.qa) == 2
    with pytest.raises(ConfigError, match=r"^seed="):
        knowledge_data(CFG, seed=-1)
