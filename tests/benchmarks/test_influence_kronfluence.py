"""The ours-vs-kronfluence influence benchmark (``benchmarks/influence_kronfluence.py``) without kronfluence.

kronfluence lives in its own virtualenv ``.venv-kron`` (its torchvision requirement breaks beside the CPU
torch of the main venv, see ``benchmarks/influence_kronfluence_peer.py``); CI has only the main venv, so the
peer itself is not run here. What is checked instead, on a tiny GPT-2:
- our half reads the shared inputs and scores the same quantity with the same sign as the peer's task: with
  the identity curvature, ours equals ``grad f_q . grad L_t`` over the MLP projections' weights and biases,
  computed independently with torch autograd on the HF model the peer loads (``peer.load_inputs``, its own
  loss);
- ``spearman`` against a brute-force rank computation (average ranks for ties);
- ``compare`` on exact transforms (a monotone odd map: all agreement 1; a sign flip: -1, no equal signs);
- ``measure`` end to end with a fake peer (the torch reference above and a made-up timing record): the
  interleaved rounds, the best-thread choice, the ratios and the JSON written by the harness;
- bad sizes raise a ConfigError naming the field; a missing peer venv raises with the install command.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

from benchmarks import influence_kronfluence as bench
from benchmarks import influence_kronfluence_peer as peer
from benchmarks.harness import write_result
from jaxsafety.config import ConfigError

TINY = bench.BenchConfig(16, 1, 2, 32, 8, n_train=8, n_query=3, seq_len=8, rounds=2, chunk_size=4, seed=3)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bench.write_inputs(TINY, tmp_path_factory.mktemp("kron") / "inputs")


def torch_gradient_dots(model_dir: Path) -> np.ndarray:
    """``[n_query, n_train]`` dot products of per-document gradients of the summed next-token NLL w.r.t. every
    tracked MLP weight and bias, by torch autograd on the HF model the peer runs (float64)."""
    model, tokens, queries = peer.load_inputs(model_dir)
    model = model.double()
    mods = dict(model.named_modules())
    params = [
        p for n in peer.mlp_module_names(len(model.transformer.h)) for p in (mods[n].weight, mods[n].bias)
    ]

    def grads(docs: np.ndarray) -> torch.Tensor:
        rows = []
        for doc in docs:
            loss = peer.summed_next_token_loss(model, torch.as_tensor(doc[None], dtype=torch.long))
            rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
        return torch.stack(rows)

    return (grads(queries) @ grads(tokens).T).numpy()


@pytest.fixture(scope="module")
def reference(tiny_dir: Path) -> np.ndarray:
    return torch_gradient_dots(tiny_dir)


def test_ours_identity_scores_equal_torch_gradient_dot_products(tiny_dir, reference):
    model, tokens, queries = bench.load_ours(tiny_dir)
    assert tokens.shape == (TINY.n_train, TINY.seq_len) and queries.shape == (TINY.n_query, TINY.seq_len)
    config = bench.influence_config("identity", chunk_size=TINY.chunk_size)
    scores, _, fac_s, sco_s = bench.ours_round(model, tokens, queries, config, jax.random.key(0))
    assert scores.shape == reference.shape == (TINY.n_query, TINY.n_train)
    assert fac_s >= 0 and sco_s > 0
    # float32 ours vs float64 torch: measured max error 1.5e-7 of the largest score, so 1e-4 leaves a wide
    # margin; dropping the bias rows (include_bias=False) measured 0.98 of it, a sign flip or a missing layer
    # is O(1) too
    scale = np.abs(reference).max()
    np.testing.assert_allclose(scores, reference, atol=1e-4 * scale, rtol=0)
    assert bench.spearman(scores, reference) > 0.999


def _brute_ranks(x: np.ndarray) -> np.ndarray:
    return np.array([np.sum(x < v) + (np.sum(x == v) + 1) / 2 for v in x])


def test_spearman_matches_brute_force_ranks():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, 40).astype(float)  # many ties
    b = a + rng.normal(size=40)
    ra, rb = _brute_ranks(a), _brute_ranks(b)
    want = np.corrcoef(ra, rb)[0, 1]
    assert bench.spearman(a, b) == pytest.approx(want, abs=1e-12)
    assert bench.spearman(a.reshape(4, 10), b.reshape(4, 10)) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="same size"):
        bench.spearman(a, b[:-1])


def test_compare_on_exact_transforms():
    ours = np.random.default_rng(1).normal(size=(4, 30))
    same = bench.compare(ours, 2 * ours + ours**3)  # strictly increasing and odd: ranks and signs kept
    assert same["spearman_all"] == pytest.approx(1.0)
    assert same["spearman_per_query"] == pytest.approx([1.0] * 4)
    assert same["same_sign_fraction"] == 1.0
    flipped = bench.compare(ours, -3 * ours)
    assert flipped["spearman_all"] == pytest.approx(-1.0)
    assert flipped["spearman_per_query_median"] == pytest.approx(-1.0)
    assert flipped["same_sign_fraction"] == 0.0
    assert flipped["scale_theirs_over_ours"] == pytest.approx(-3.0)
    with pytest.raises(ValueError, match="n_query, n_train"):
        bench.compare(ours, ours[:, :-1])


def test_measure_with_fake_peer_writes_the_json(tmp_path, reference):
    calls = []
    made_up = {"1": (0.5, 0.25), "2": (0.75, 0.5)}  # (factors_s, scores_s) per torch thread count

    def fake_peer(bc, model_dir, out_dir):
        calls.append(torch_gradient_dots(Path(model_dir)))  # the folder is gone once measure returns
        threads = {n: {"factors_median_s": f, "scores_median_s": s} for n, (f, s) in made_up.items()}
        record = {"peer": "fake", "strategy": "identity", "threads": threads, "versions": {"fake": "0"}}
        return calls[-1], record

    bc = dataclasses.replace(TINY, rounds=2)
    res = bench.measure(bc, fake_peer, bench.influence_config("identity", chunk_size=bc.chunk_size))
    assert len(calls) == 2  # one peer call per round, on the inputs written for this run
    np.testing.assert_allclose(calls[0], reference)  # same seed -> the same inputs as the fixture's
    assert res["agreement"]["spearman_all"] > 0.999
    assert res["agreement"]["same_sign_fraction"] == 1.0
    # identity curvature samples no labels: another key must give the same scores
    assert res["agreement_ours_vs_ours_other_labels"]["spearman_all"] == pytest.approx(1.0)
    assert res["peer"]["best_threads"] == 1 and res["peer"]["total_median_s"] == 0.75
    ours = res["ours"]
    assert set(ours["modes"]) == {"all_cores", "one_core"}
    best = ours["modes"][ours["best_mode"]]
    assert all(best["total_median_s"] <= m["total_median_s"] for m in ours["modes"].values())
    assert len(ours["factors_s"]) == len(ours["scores_s"]) == 2 and ours["factors_s"] == best["factors_s"]
    assert ours["total_median_s"] == pytest.approx(np.median(ours["factors_s"]) + np.median(ours["scores_s"]))
    assert res["speed_ratio_peer_over_ours"]["total"] == pytest.approx(0.75 / ours["total_median_s"])
    assert res["ours_config"]["layers"] == ["blocks.0.mlp.up", "blocks.0.mlp.down"]
    assert isinstance(res["loaded"], bool) and len(res["load_avg"]["start"]) == 3
    path = write_result("influence_kronfluence", {"quick": True, **res}, tmp_path)
    back = json.loads(path.read_text())
    assert back["agreement"]["spearman_all"] == res["agreement"]["spearman_all"]
    assert back["machine"]["cpu_isa"] is not None and back["settings"]["n_train"] == TINY.n_train


@pytest.mark.parametrize(
    ("field", "change"),
    [("seq_len", dict(seq_len=9)), ("n_embd", dict(n_embd=15)), ("rounds", dict(rounds=0))],
)
def test_bad_sizes_name_the_field(field, change):
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(TINY, **change)


def test_missing_peer_venv_says_how_to_create_it(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "KRON_PYTHON", tmp_path / "nope" / "python")
    with pytest.raises(RuntimeError, match=r"kronfluence==1\.0\.1"):
        bench.kronfluence_peer(TINY, tmp_path, tmp_path / "out")
