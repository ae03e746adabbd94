"""A labelled pretraining corpus of *factual* and *procedural* documents, and queries about it, for studies of which
documents a model's answers draw on (Ruis et al. 2024, "Procedural knowledge in pretraining drives reasoning in
large language models", arXiv 2411.12580).

Document kinds (:data:`KINDS`):

- ``factual``: a biography of one person of the knowledge base (:func:`~jaxsafety.data.knowledge.knowledge_data`:
  made-up names, a city, profession, favourite colour, pet and birth year), labelled with the facts it states;
- one kind per reasoning task (:data:`TASKS`), a document of ``1..max_problems_per_document`` *worked examples*
  ``"Problem: <problem> Solution: <steps> The answer is <r>."`` with fresh numbers:

  - ``two_step``: ``(a + b) * c`` computed in two steps;
  - ``linear``: ``a x + b = c`` solved for ``x`` (subtract, then divide);
  - ``slope``: the slope of the line through two points (rise, run, quotient);

- ``equations``: lines of single-step equations ``12 + 7 = 19.`` (:mod:`jaxsafety.data.arithmetic`): arithmetic
  facts without a procedure;
- ``story``: a short story (:func:`~jaxsafety.data.corpus.synthetic_corpus`'s grammar), unrelated text.

Queries (:func:`procedural_queries`) are a prompt and its completion (the measured part): factual questions
``"Q: <question> A:"`` -> ``" <value>."`` (one per person, over facts the corpus states, in its own question
template), and, per task, new problems
``"Problem: <problem> Solution:"`` -> ``" <steps> The answer is <r>."`` whose problem text no document contains.
Everything is a pure function of ``(config, seed)`` (numpy streams ``[seed, 10 + i]``; the knowledge base of
``seed`` as in :mod:`jaxsafety.data.knowledge`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxsafety.config import check, check_range
from jaxsafety.data.arithmetic import draw_arithmetic_problems
from jaxsafety.data.corpus import CorpusConfig, synthetic_corpus
from jaxsafety.data.knowledge import ATTRIBUTES, Fact, KnowledgeConfig, corpus_question, knowledge_data

__all__ = [
    "KINDS",
    "TASKS",
    "LabelledDocument",
    "Problem",
    "ProceduralConfig",
    "ProceduralQuery",
    "draw_problem",
    "procedural_corpus",
    "procedural_queries",
]

TASKS = ("two_step", "linear", "slope")
KINDS = ("factual", *TASKS, "equations", "story")


class Problem(NamedTuple):
    """One worked problem of ``task``: ``problem`` (the question), ``solution`` (the steps, ending with
    ``"The answer is <answer>."``) and the integer ``answer``."""

    task: str
    problem: str
    solution: str
    answer: int


class LabelledDocument(NamedTuple):
    """A corpus document: ``text``, its ``kind`` (:data:`KINDS`), the facts it states (``factual``) and the
    problems it works (task kinds)."""

    text: str
    kind: str
    facts: tuple[Fact, ...] = ()
    problems: tuple[Problem, ...] = ()


class ProceduralQuery(NamedTuple):
    """A query: ``prompt`` then ``completion`` (the part whose log-probability is measured); ``kind`` is
    ``factual`` or a task; ``answer`` the value / result as it appears in text; ``fact`` for factual queries,
    ``problem`` for reasoning ones."""

    kind: str
    prompt: str
    completion: str
    answer: str
    fact: Fact | None = None
    problem: Problem | None = None

    @property
    def text(self) -> str:
        return self.prompt + self.completion


@dataclasses.dataclass(frozen=True)
class ProceduralConfig:
    """Size and mixture of the corpus (module docstring). ``*_weight``: relative probabilities of a document's
    kind (``procedural_weight`` is split evenly over ``tasks``; a zero weight drops the kind). Problems use
    single-digit numbers ``1..max_operand`` (answers stay small integers, as in the paper's arithmetic queries)."""

    num_documents: int = 6000
    num_entities: int = 60
    facts_per_document: int = 3
    tasks: tuple[str, ...] = TASKS
    max_problems_per_document: int = 2
    max_operand: int = 9
    equations_per_document: int = 4
    factual_weight: float = 0.4
    procedural_weight: float = 0.45
    equations_weight: float = 0.1
    story_weight: float = 0.05

    def __post_init__(self) -> None:
        check_range("num_documents", self.num_documents, ge=1, integer=True)
        check_range("num_entities", self.num_entities, ge=1, le=5000, integer=True)
        check_range("facts_per_document", self.facts_per_document, ge=1, le=len(ATTRIBUTES), integer=True)
        ok = (
            isinstance(self.tasks, tuple)
            and len(self.tasks) >= 1
            and len(set(self.tasks)) == len(self.tasks)
            and all(t in TASKS for t in self.tasks)
        )
        check(ok, "tasks", self.tasks, f"non-empty tuples of distinct tasks from {TASKS}")
        check_range("max_problems_per_document", self.max_problems_per_document, ge=1, integer=True)
        check_range("max_operand", self.max_operand, ge=3, le=99, integer=True)
        check_range("equations_per_document", self.equations_per_document, ge=1, integer=True)
        weights = ("factual_weight", "procedural_weight", "equations_weight", "story_weight")
        for f in weights:
            check_range(f, getattr(self, f), ge=0)
        total = sum(getattr(self, f) for f in weights)
        check(total > 0, "story_weight", self.story_weight, "numbers >= 0 with a positive sum of the weights")

    def kind_weights(self) -> dict[str, float]:
        """Normalised probability of every kind of :data:`KINDS` (0 for tasks not in ``tasks``)."""
        w = {k: 0.0 for k in KINDS}
        w["factual"] = self.factual_weight
        for t in self.tasks:
            w[t] = self.procedural_weight / len(self.tasks)
        w["equations"] = self.equations_weight
        w["story"] = self.story_weight
        total = sum(w.values())
        return {k: v / total for k, v in w.items()}


def draw_problem(rng: np.random.Generator, task: str, max_operand: int = 9) -> Problem:
    """One problem of ``task`` with numbers in ``1..max_operand`` drawn from ``rng`` (integer results)."""
    n = max_operand

    def draw(lo: int = 1, hi: int = n) -> int:
        return int(rng.integers(lo, hi + 1))

    if task == "two_step":
        a, b, c = draw(), draw(), draw()
        s, r = a + b, (a + b) * c
        problem = f"Compute ({a} + {b}) * {c}."
        steps = f"First, {a} + {b} = {s}. Then, {s} * {c} = {r}."
    elif task == "linear":
        a, x, b = draw(2), draw(), draw()
        c, r = a * x + b, x
        problem = f"Solve {a}x + {b} = {c} for x."
        steps = f"Subtract {b} from both sides: {a}x = {a * x}. Divide both sides by {a}: x = {x}."
    elif task == "slope":
        x1, y1, dx, r = draw(0, n), draw(0, n), draw(1, 4), draw(1, 4)
        x2, y2, dy = x1 + dx, y1 + r * dx, r * dx
        problem = f"Find the slope of the line through ({x1}, {y1}) and ({x2}, {y2})."
        steps = (
            f"The rise is {y2} - {y1} = {dy}. The run is {x2} - {x1} = {dx}. The slope is {dy} / {dx} = {r}."
        )
    else:
        raise ValueError(f"task {task!r} is invalid: accepted values are {TASKS}")
    return Problem(task, problem, f"{steps} The answer is {r}.", r)


def _worked(p: Problem) -> str:
    return f"Problem: {p.problem} Solution: {p.solution}"


def procedural_corpus(config: ProceduralConfig, seed: int) -> list[LabelledDocument]:
    """``config.num_documents`` labelled documents, deterministic in ``(config, seed)``: kinds drawn with
    :meth:`ProceduralConfig.kind_weights` (stream ``[seed, 10]``); biographies from
    :func:`~jaxsafety.data.knowledge.knowledge_data` of ``seed``, problems from stream ``[seed, 11]``, equation
    lines from ``[seed, 12]``, stories from :func:`~jaxsafety.data.corpus.synthetic_corpus`."""
    check_range("seed", seed, ge=0, integer=True)
    weights = config.kind_weights()
    kinds = np.random.default_rng([seed, 10]).choice(
        len(KINDS), size=config.num_documents, p=[weights[k] for k in KINDS]
    )
    counts = {k: int(np.sum(kinds == i)) for i, k in enumerate(KINDS)}
    bios = knowledge_data(
        KnowledgeConfig(
            num_entities=config.num_entities,
            num_documents=max(counts["factual"], 1),
            facts_per_document=config.facts_per_document,
            keys=ATTRIBUTES,
        ),
        seed,
    ).documents
    stories = synthetic_corpus(
        CorpusConfig(num_documents=max(counts["story"], 1), kb_weight=0.0, arithmetic_weight=0.0), seed
    )
    problems_rng = np.random.default_rng([seed, 11])
    eq_rng = np.random.default_rng([seed, 12])
    used = {"factual": 0, "story": 0}
    docs = []
    for i in kinds:
        kind = KINDS[i]
        if kind == "factual":
            bio = bios[used["factual"]]
            used["factual"] += 1
            docs.append(LabelledDocument(bio.text, kind, facts=bio.facts))
        elif kind == "story":
            docs.append(LabelledDocument(stories[used["story"]], kind))
            used["story"] += 1
        elif kind == "equations":
            eqs = draw_arithmetic_problems(
                eq_rng, config.equations_per_document, max_operand=config.max_operand
            )
            docs.append(LabelledDocument("\n".join(eqs.equations), kind))
        else:
            n = int(problems_rng.integers(1, config.max_problems_per_document + 1))
            probs = tuple(draw_problem(problems_rng, kind, config.max_operand) for _ in range(n))
            docs.append(LabelledDocument("\n".join(_worked(p) for p in probs), kind, problems=probs))
    return docs


def procedural_queries(
    config: ProceduralConfig,
    seed: int,
    documents: Sequence[LabelledDocument],
    *,
    num_factual: int,
    num_per_task: int,
) -> list[ProceduralQuery]:
    """``num_factual`` factual queries (one per person, a fact that ``documents`` state, asked in the documents'
    own ``Q: ... A: ...`` template, :func:`~jaxsafety.data.knowledge.corpus_question`: questions the model has
    seen asked, as the paper's factual queries are) then ``num_per_task`` reasoning queries per task of
    ``config.tasks`` (distinct problems none of ``documents`` contains), deterministic in ``(config, seed)``
    (stream ``[seed, 13]``). Raises ValueError if the corpus states fewer facts than ``num_factual`` or the
    problem space runs out."""
    check_range("num_factual", num_factual, ge=0, integer=True)
    check_range("num_per_task", num_per_task, ge=0, integer=True)
    stated: dict[str, list[Fact]] = {}  # subject -> the facts the documents state, first statement order
    for d in documents:
        for f in d.facts:
            if f not in stated.setdefault(f.subject, []):
                stated[f.subject].append(f)
    if len(stated) < num_factual:
        raise ValueError(
            f"num_factual={num_factual} is invalid: accepted values are <= {len(stated)} (people with a fact the "
            "corpus states: one query per person)"
        )
    rng = np.random.default_rng([seed, 13])
    queries = []
    for subject in [list(stated)[i] for i in rng.permutation(len(stated))[:num_factual]]:
        fact = stated[subject][rng.integers(len(stated[subject]))]
        prompt, completion = corpus_question(fact)
        queries.append(ProceduralQuery("factual", prompt, completion, fact.value, fact=fact))
    corpus_text = "\n".join(d.text for d in documents)
    for task in config.tasks:
        seen: set[str] = set()
        for _ in range(200 * max(num_per_task, 1)):
            if len(seen) == num_per_task:
                break
            p = draw_problem(rng, task, config.max_operand)
            if p.problem in seen or p.problem in corpus_text:
                continue
            seen.add(p.problem)
            queries.append(
                ProceduralQuery(
                    task, f"Problem: {p.problem} Solution:", f" {p.solution}", str(p.answer), problem=p
                )
            )
        if len(seen) < num_per_task:
            raise ValueError(
                f"num_per_task={num_per_task} is invalid: only {len(seen)} {task} problems are absent from the "
                "corpus (raise max_operand or lower num_documents)"
            )
    return queries
