"""The synthetic corpus generator and the text-file reader (jaxsafety.data.corpus)."""

from __future__ import annotations

import re

import pytest

from jaxsafety.config import ConfigError
from jaxsafety.data import CorpusConfig, knowledge_base, synthetic_corpus, text_file_corpus
from jaxsafety.data.knowledge import CITIES, COLOURS, PETS, PROFESSIONS

CFG = CorpusConfig(num_documents=600, num_entities=30)


def test_deterministic_in_seed():
    a, b, c = synthetic_corpus(CFG, 0), synthetic_corpus(CFG, 0), synthetic_corpus(CFG, 1)
    assert a == b and a != c
    assert len(a) == CFG.num_documents and all(isinstance(d, str) and d for d in a)
    assert knowledge_base(CFG, 3) == knowledge_base(CFG, 3) != knowledge_base(CFG, 4)


def test_knowledge_base_names_unique():
    kb = knowledge_base(CorpusConfig(num_entities=500), 0)
    assert len({e.name for e in kb}) == 500
    assert all(1900 <= e.birth_year < 2000 for e in kb)


def test_arithmetic_documents_are_correct():
    cfg = CorpusConfig(num_documents=200, kb_weight=0, story_weight=0, max_operand=15)
    n = 0
    for doc in synthetic_corpus(cfg, 0):
        lines = doc.split("\n")
        assert len(lines) == cfg.equations_per_document
        for line in lines:
            m = re.fullmatch(r"(\d+) ([-+*]) (\d+) = (\d+)\.", line)
            assert m, line
            a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
            assert a <= 15 and b <= 15
            assert c == {"+": a + b, "-": a - b, "*": a * b}[op]
            n += 1
    assert n == 200 * cfg.equations_per_document


def test_biographies_state_true_facts():
    """Every attribute value that a biography mentions is that entity's value in the knowledge base."""
    cfg = CorpusConfig(num_documents=300, num_entities=20, arithmetic_weight=0, story_weight=0)
    kb = {e.name: e for e in knowledge_base(cfg, 5)}
    seen = set()
    for doc in synthetic_corpus(cfg, 5):
        names = [n for n in kb if n in doc]
        assert len(names) == 1, doc
        e = kb[names[0]]
        seen.add(e.name)
        # the name appears once per fact
        assert doc.count(e.name) >= cfg.facts_per_document
        for values, truth in ((CITIES, e.city), (PROFESSIONS, e.profession), (PETS, e.pet)):
            assert {v for v in values if re.search(rf"\b{v}\b", doc)} <= {truth}, doc
        colours = {v for v in COLOURS if re.search(rf"\b{v}\b", doc.replace(e.name, ""))}
        assert colours <= {e.colour}, doc
        years = set(re.findall(r"\b(1[89]\d\d)\b", doc))
        assert years <= {str(e.birth_year)}, doc
    assert len(seen) == 20  # 300 documents cover every person


def test_stories_keep_characters_consistent():
    cfg = CorpusConfig(num_documents=100, kb_weight=0, arithmetic_weight=0)
    for doc in synthetic_corpus(cfg, 2):
        assert doc.endswith("The end.")
        first = re.match(r".*?, (\w+) (?:went|walked)", doc)[1]
        assert doc.count(first) >= 3  # the protagonist recurs: predictable by copying from context


def test_mixture_weights():
    docs = synthetic_corpus(CorpusConfig(num_documents=1000), 0)
    arith = sum(bool(re.fullmatch(r"[\d+\-*= .\n]+", d)) for d in docs)
    stories = sum(d.endswith("The end.") for d in docs)
    # binomial(1000, p): 6 standard deviations is < 90
    assert abs(arith - 300) < 90 and abs(stories - 300) < 90 and abs(1000 - arith - stories - 400) < 90


def test_config_validation():
    with pytest.raises(ConfigError, match=r"num_documents=0 is invalid: accepted values are integers >= 1"):
        CorpusConfig(num_documents=0)
    with pytest.raises(ConfigError, match="kb \\+ arithmetic \\+ story > 0"):
        CorpusConfig(kb_weight=0, arithmetic_weight=0, story_weight=0)
    with pytest.raises(ConfigError, match="facts_per_document"):
        CorpusConfig(facts_per_document=6)


def test_text_file_corpus(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("First paragraph\nstill first.\n\n\n  Second one.  \n \nThird.\n")
    assert text_file_corpus(p) == ["First paragraph\nstill first.", "Second one.", "Third."]
    p.write_text("doc one\n\nsame doc<|endoftext|>doc two<|endoftext|>\n")
    assert text_file_corpus(p) == ["doc one\n\nsame doc", "doc two"]
