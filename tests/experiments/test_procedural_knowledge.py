"""experiments/procedural_knowledge.py end to end (as a user runs it): its summary recomputed here from the saved
influence matrix, queries and documents with plain loops; and its config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxsafety.influence import load_scores
from tests.experiments.script_runner import parse_experiment_cli, run_experiment


@pytest.mark.slow  # ~45 s on 2 CPU cores (the smoke LM trains in ~15 s, then is cached)
def test_smoke_summary_matches_its_scores(tmp_path: Path):
    out = run_experiment(
        "procedural_knowledge.py", "--smoke", "--out-dir", str(tmp_path), "--run-name", "s", timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "procedural_knowledge" / "s"
    res = json.loads((run / "results.json").read_text())
    scores, meta = load_scores(run / "scores.safetensors")
    queries = json.loads((run / "queries.json").read_text())
    docs = json.loads((run / "documents.json").read_text())
    assert scores.shape == (len(queries), len(docs)) == (res["num_queries"], res["num_documents"])
    assert np.all(np.isfinite(scores)) and meta["strategy"] == "ekfac"
    kinds = [q["kind"] for q in queries]
    assert kinds == ["factual"] * 6 + [t for t in ("two_step", "linear", "slope") for _ in range(3)]
    summary = res["summary"]
    # correlations: Pearson r over every pair of queries
    within: dict[str, list[float]] = {}
    across: list[float] = []
    for i in range(len(queries)):
        for j in range(i + 1, len(queries)):
            r = stats.pearsonr(scores[i], scores[j])[0]
            if kinds[i] == kinds[j]:
                within.setdefault(kinds[i], []).append(r)
            elif "factual" not in (kinds[i], kinds[j]):
                across.append(r)
    c = summary["correlation"]
    assert c["factual_within"] == pytest.approx(np.mean(within["factual"]))
    assert c["reasoning_across_mean"] == pytest.approx(np.mean(across))
    assert c["reasoning_within_mean"] == pytest.approx(
        np.mean([np.mean(within[t]) for t in ("two_step", "linear", "slope")])
    )
    # answer in the top k: the query's fact stated / final answer written by one of its k best documents
    for k in (5, 20):
        hits = {"factual": [], "reasoning": []}
        for i, q in enumerate(queries):
            top = np.argsort(-scores[i], kind="stable")[:k]
            if q["kind"] == "factual":
                hit = any(q["fact"] in docs[n]["facts"] for n in top)
            else:
                hit = any(f"The answer is {q['answer']}." in docs[n]["text"] for n in top)
            hits["factual" if q["kind"] == "factual" else "reasoning"].append(hit)
            assert res["queries"][i][f"answer_in_top_{k}"] == hit
        for g, h in hits.items():
            assert summary["answer_in_top_k"][str(k)][g]["hit_rate"] == pytest.approx(np.mean(h))
            assert 0 <= summary["answer_in_top_k"][str(k)][g]["chance"] <= 1
        # composition of the top k and influence per nat
        for t in ("two_step", "linear", "slope"):
            rows = [i for i, kd in enumerate(kinds) if kd == t]
            share = np.mean(
                [[docs[n]["kind"] == t for n in np.argsort(-scores[i], kind="stable")[:k]] for i in rows]
            )
            assert summary["same_task_in_top_k"][str(k)][t] == pytest.approx(share)
        per_nat = [
            np.sort(scores[i])[::-1][:k].sum() / res["queries"][i]["nats"] for i in range(len(queries))
        ]
        fact = [p for p, kd in zip(per_nat, kinds, strict=True) if kd == "factual"]
        assert summary["influence_per_nat"][str(k)]["factual"] == pytest.approx(np.mean(fact))
    assert all(q["nats"] > 0 for q in res["queries"])
    assert res["timings"]["factors_s"] > 0 and res["timings"]["scores_s"] > 0
    for png in ("correlations.png", "procedural_knowledge.png"):
        assert (run / png).stat().st_size > 5000
    ea = EventAccumulator(str(run), size_guidance={"tensors": 0})
    ea.Reload()
    texts = [t for t in ea.Tags()["tensors"] if t.startswith("top_documents/")]
    assert len(texts) == len(queries)
    assert "correlation across reasoning tasks" in out.stdout and not math.isnan(c["reasoning_across_mean"])


@pytest.mark.parametrize(
    "args, message",
    [
        (("--layers", "attn"), "layers='attn' is invalid"),
        (("--strategy", "exact"), "strategy='exact' is invalid"),
        (("--top-k", "0"), "top_k=(0,) is invalid"),
        (("--corpus.tasks", "cube"), "tasks="),
        (("--damping-factor", "-1"), "damping_factor=-1"),
        (("--seq-len", "1"), "seq_len=1 is invalid"),
    ],
)
def test_bad_flags_exit_with_one_line(tmp_path: Path, args, message):
    code, _, err = parse_experiment_cli(
        "procedural_knowledge.py", "--smoke", "--out-dir", str(tmp_path), *args
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "procedural_knowledge").exists()
