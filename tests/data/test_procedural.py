"""The labelled factual + procedural corpus: labels checked against the text and against arithmetic redone here."""

from __future__ import annotations

import re

import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.data import knowledge_base
from jaxsafety.data.procedural import (
    KINDS,
    TASKS,
    ProceduralConfig,
    draw_problem,
    procedural_corpus,
    procedural_queries,
)

CFG = ProceduralConfig(num_documents=1500, num_entities=30)


def _ints(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"-?\d+", text)]


def _check_problem(p) -> None:
    """Redo the problem's arithmetic from its text (independently of the generator's formulas)."""
    nums, steps = _ints(p.problem), _ints(p.solution)
    if p.task == "two_step":
        a, b, c = nums
        assert steps == [a, b, a + b, a + b, c, (a + b) * c, (a + b) * c]
    elif p.task == "linear":
        a, b, c = nums  # "Solve {a}x + {b} = {c} for x."
        x = (c - b) / a
        assert x == int(x) and p.answer == x
        assert steps == [b, a, c - b, a, x, x]
    else:
        x1, y1, x2, y2 = nums
        assert p.answer == (y2 - y1) / (x2 - x1)
        assert steps == [y2, y1, y2 - y1, x2, x1, x2 - x1, y2 - y1, x2 - x1, p.answer, p.answer]
    assert p.solution.endswith(f"The answer is {p.answer}.")


def test_documents_match_their_labels():
    docs = procedural_corpus(CFG, seed=3)
    assert len(docs) == CFG.num_documents and {d.kind for d in docs} == set(KINDS)
    people = {e.name: e for e in knowledge_base(CFG, 3)}
    for d in docs:
        if d.kind == "factual":
            assert d.facts and not d.problems
            for f in d.facts:  # each stated fact is the person's true attribute, and appears in the text
                assert (
                    people[f.subject].attribute(f.key) == f.value
                    and f.value in d.text
                    and f.subject in d.text
                )
        elif d.kind in TASKS:
            assert 1 <= len(d.problems) <= CFG.max_problems_per_document and not d.facts
            assert d.text == "\n".join(f"Problem: {p.problem} Solution: {p.solution}" for p in d.problems)
            for p in d.problems:
                assert p.task == d.kind
                _check_problem(p)
        elif d.kind == "equations":
            lines = d.text.split("\n")
            assert len(lines) == CFG.equations_per_document
            for line in lines:
                a, op, b, eq, c = line.rstrip(".").split()
                assert (
                    eq == "="
                    and int(c) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
                )
        else:
            assert d.text.endswith("The end.")


def test_deterministic_and_kind_frequencies_follow_the_weights():
    a, b = procedural_corpus(CFG, 0), procedural_corpus(CFG, 0)
    assert a == b and procedural_corpus(CFG, 1) != a
    w = CFG.kind_weights()
    assert sum(w.values()) == pytest.approx(1.0)
    n = 6000
    docs = procedural_corpus(ProceduralConfig(num_documents=n, num_entities=30), 0)
    for k in KINDS:  # binomial: within 5 standard deviations
        share = np.mean([d.kind == k for d in docs])
        assert abs(share - w[k]) < 5 * np.sqrt(w[k] * (1 - w[k]) / n), k
    only = procedural_corpus(
        ProceduralConfig(
            num_documents=200, tasks=("slope",), factual_weight=0.0, equations_weight=0.0, story_weight=0.0
        ),
        0,
    )
    assert {d.kind for d in only} == {"slope"}


def test_problems_draw_every_task():
    rng = np.random.default_rng(0)
    for task in TASKS:
        for _ in range(200):
            _check_problem(draw_problem(rng, task, 9))
    with pytest.raises(ValueError, match="task 'cube' is invalid"):
        draw_problem(rng, "cube")


def test_queries_are_about_stated_facts_and_unseen_problems():
    docs = procedural_corpus(CFG, 0)
    qs = procedural_queries(CFG, 0, docs, num_factual=10, num_per_task=5)
    assert [q.kind for q in qs] == ["factual"] * 10 + [t for t in TASKS for _ in range(5)]
    stated = {f for d in docs for f in d.facts}
    text = "\n".join(d.text for d in docs)
    num_asked = 0
    for q in qs:
        if q.kind == "factual":
            assert q.fact in stated and q.fact.value == q.answer and q.answer in q.completion
            assert q.prompt.startswith("Q: ") and q.prompt.endswith(" A:") and q.fact.subject in q.prompt
            # the corpus's own question: wherever a biography asks this fact, it reads prompt + completion
            asked = [
                sentence
                for d in docs
                if q.fact in d.facts
                for sentence in re.findall(r"Q: .*? A: .*?\.(?= |$)", d.text)
                if q.fact.subject in sentence and q.answer in sentence
            ]
            assert all(a == q.text for a in asked), (asked, q.text)
            num_asked += len(asked)
        else:
            _check_problem(q.problem)
            assert q.problem.problem not in text  # never seen verbatim
            assert (
                q.prompt == f"Problem: {q.problem.problem} Solution:"
                and q.completion == " " + q.problem.solution
            )
    assert num_asked >= 3  # (measured: the documents ask these facts in Q: form several times)
    assert len({q.prompt for q in qs}) == len(qs)
    assert len({q.fact.subject for q in qs[:10]}) == 10  # one factual query per person
    assert qs == procedural_queries(CFG, 0, docs, num_factual=10, num_per_task=5)
    with pytest.raises(ValueError, match="num_factual=31 is invalid"):  # 30 people
        procedural_queries(CFG, 0, docs, num_factual=31, num_per_task=1)
    with pytest.raises(ValueError, match="num_factual=100000 is invalid"):
        procedural_queries(CFG, 0, docs, num_factual=100000, num_per_task=1)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"tasks": ("slope", "cube")}, "tasks"),
        ({"tasks": ()}, "tasks"),
        ({"max_operand": 2}, "max_operand"),
        ({"factual_weight": -1.0}, "factual_weight"),
        (
            {"factual_weight": 0.0, "procedural_weight": 0.0, "equations_weight": 0.0, "story_weight": 0.0},
            "story_weight",
        ),
        ({"num_documents": 0}, "num_documents"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"^{field}="):
        ProceduralConfig(**kwargs)
