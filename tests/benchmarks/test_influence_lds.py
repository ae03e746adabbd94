"""The LDS benchmark of ours vs kronfluence (``benchmarks/influence_lds.py``) and the peer's ``--modules`` mode.

kronfluence lives in its own virtualenv ``.venv-kron`` (CI has only the main venv), so, as in
``test_influence_kronfluence.py``, the peer itself is not run here; what is checked instead:
- the problem's ground truth and exact influence against independent computations on the exported HF model
  (torch): the query losses after retraining one subset, redone by scipy's L-BFGS on torch's hidden states, and
  the exact influence, redone as torch-autograd gradients (with the peer's own loss) through the damped Fisher
  whose expectation over labels is ENUMERATED in numpy (``sum_y p_y g_y g_y^T`` per token);
- the peer's Llama / ``--modules`` mode in the main venv: HF-parity logits of the exported model, the module
  check (a bad name raises before the output folder is written), the import roots of the peer script;
- ``measure`` end to end with that torch reference as a fake peer: every per-seed LDS recomputed with scipy's
  ``spearmanr`` from the returned arrays, the summary and verdict recomputed with numpy, the JSON round trip;
- bad sizes raise a ConfigError naming the field; a missing peer venv raises with the install command.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import spearmanr

from benchmarks import influence_kronfluence_peer as peer
from benchmarks import influence_lds as bench
from benchmarks.harness import write_result
from jaxsafety.config import ConfigError
from tests.benchmarks.peer_imports import import_roots

TINY = bench.LdsConfig(n_train=24, n_query=3, num_subsets=8, chunk_size=8, seeds=(0, 1))


def torch_reference(model_dir: Path, damping: float) -> dict[str, np.ndarray]:
    """On the HF model the peer loads: final hidden states ``[n, T, D]`` of documents and queries (float64), and
    the influence ``[Q, N]`` = (autograd gradients of the peer's summed NLL w.r.t. ``lm_head.weight``) through
    ``(F + damping I)^-1``, ``F`` the mean over documents of the label-enumerated Fisher of the summed NLL."""
    model, tokens, queries = peer.load_inputs(model_dir)
    model = model.double()
    w = model.lm_head.weight  # [V, D]
    v = w.shape[0]

    def grads(docs: np.ndarray) -> np.ndarray:
        rows = []
        for doc in docs:
            loss = peer.summed_next_token_loss(model, torch.as_tensor(doc[None], dtype=torch.long))
            rows.append(torch.autograd.grad(loss, w)[0].flatten())
        return torch.stack(rows).numpy()

    with torch.no_grad():
        h_train = model.model(input_ids=torch.as_tensor(tokens, dtype=torch.long)).last_hidden_state.numpy()
        h_query = model.model(input_ids=torch.as_tensor(queries, dtype=torch.long)).last_hidden_state.numpy()
    fisher = np.zeros((w.numel(), w.numel()))
    for h in h_train[:, :-1].reshape(-1, h_train.shape[-1]):  # every position that predicts a next token
        logits = w.detach().numpy() @ h
        p = np.exp(logits - logits.max())
        p /= p.sum()
        # label y's gradient of -log p_y w.r.t. W [V, D]: (p - e_y) h^T, one row per y
        g = ((p[None, :] - np.eye(v))[:, :, None] * h[None, None, :]).reshape(v, -1)
        fisher += g.T @ (p[:, None] * g)
    fisher /= len(tokens)
    scores = grads(queries) @ np.linalg.solve(fisher + damping * np.eye(len(fisher)), grads(tokens).T)
    return {"scores": scores, "h_train": h_train, "h_query": h_query, "tokens": tokens, "queries": queries}


def lbfgs_query_losses(ref: dict[str, np.ndarray], mask: np.ndarray, l2: float) -> np.ndarray:
    """Retrain the head on the documents in ``mask`` by scipy's L-BFGS (numpy loss and gradient, float64) from
    torch's hidden states; the queries' summed next-token NLL ``[Q]`` under the result."""
    h, tg = ref["h_train"][:, :-1], ref["tokens"][:, 1:]
    d, v = h.shape[-1], int(max(ref["tokens"].max(), ref["queries"].max())) + 1

    def nll_and_grad(x, hh, targets, weight):
        logits = hh @ x.reshape(d, v)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        onehot = np.eye(v)[targets]
        nll = -np.sum(logp * onehot, axis=-1)  # [n, T-1]
        dlogits = (np.exp(logp) - onehot) * weight[:, None, None]
        return np.sum(nll * weight[:, None]), np.einsum("ntd,ntv->dv", hh, dlogits).ravel()

    def objective(x):
        f, g = nll_and_grad(x, h, tg, mask.astype(float))
        return f + 0.5 * l2 * x @ x, g + l2 * x

    res = minimize(objective, np.zeros(d * v), jac=True, method="L-BFGS-B", options=dict(gtol=1e-10))
    assert res.success, res.message
    hq, tq = ref["h_query"][:, :-1], ref["queries"][:, 1:]
    logits = hq @ res.x.reshape(d, v)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, tq[..., None], -1)[..., 0].sum(1)


@pytest.fixture(scope="module")
def problem_dir(tmp_path_factory: pytest.TempPathFactory):
    cfg = dataclasses.replace(TINY, seeds=(0, 1))
    problem = bench.build_problem(cfg, 0)
    return cfg, problem, bench.export_problem(problem, tmp_path_factory.mktemp("lds") / "inputs")


def test_ground_truth_and_exact_influence_match_torch_and_scipy(problem_dir):
    cfg, problem, model_dir = problem_dir
    n, q, m = cfg.n_train, cfg.n_query, cfg.num_subsets
    assert problem.tokens.shape == (n, cfg.seq_len) and problem.queries.shape == (q, cfg.seq_len)
    assert problem.masks.shape == (m, n) and problem.masks.sum(1).tolist() == [n // 2] * m
    assert problem.actual.shape == (m, q) and problem.exact.shape == (q, n)
    assert problem.grad_max < 1e-9  # Newton converged on the full set
    assert problem.hess_err < 1e-9  # the closed-form Hessian Newton used is jax.hessian's
    ref = torch_reference(model_dir, cfg.damping)
    # float32 weights and hidden states on both sides (jax vs torch forward): measured max deviation 1.5e-7 of
    # the largest score (seeds 0, 1); 1e-3 leaves a wide margin, while a wrong damping scale (x N: measured
    # 0.65-0.74 of it), a sign flip or a shifted target are O(1)
    scale = np.abs(ref["scores"]).max()
    np.testing.assert_allclose(problem.exact, ref["scores"], atol=1e-3 * scale, rtol=0)
    # the retraining ground truth: subsets 0 and 1 retrained by L-BFGS from torch's features (float32 features,
    # L-BFGS's own tolerance: measured max relative deviation 1.7e-5 over seeds 0, 1; tolerance 1e-4)
    for j in (0, 1):
        want = lbfgs_query_losses(ref, problem.masks[j], cfg.l2)
        np.testing.assert_allclose(problem.actual[j], want, rtol=1e-4)
    want = lbfgs_query_losses(ref, np.ones(n, bool), cfg.l2)  # the full-data optimum W*, same tolerance
    np.testing.assert_allclose(problem.full_losses, want, rtol=1e-4)


def test_peer_llama_mode_tracks_named_linear_modules(problem_dir, tmp_path):
    _, problem, model_dir = problem_dir
    model, tokens, queries = peer.load_inputs(model_dir)
    np.testing.assert_array_equal(tokens, problem.tokens)
    np.testing.assert_array_equal(queries, problem.queries)
    assert type(model).__name__ == "LlamaForCausalLM" and isinstance(model.lm_head, torch.nn.Linear)
    with torch.no_grad():
        theirs = model(input_ids=torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
    ours = np.asarray(problem.model(jnp.asarray(tokens), jnp.ones(tokens.shape, jnp.int32)))
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)  # float32 HF parity tolerance (conventions)
    assert peer.tracked_modules(model, ["lm_head"]) == ["lm_head"]
    with pytest.raises(ValueError, match=r"modules=\['nope'\] is invalid: .*lm_head"):
        peer.tracked_modules(model, ["nope"])
    with pytest.raises(ValueError, match="needs a GPT-2"):
        peer.tracked_modules(model, None)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="modules="):
        peer.main(["--model-dir", str(model_dir), "--out", str(out), "--modules", "model.norm"])
    assert not out.exists()
    roots = import_roots(peer.__file__)
    assert not roots & {"jax", "jaxsafety", "flax", "optax", "benchmarks"}


@pytest.mark.slow  # two seeds of retraining, four EK-FAC fits each, torch: 17-35 s on the busy 2-core CPU
def test_measure_with_torch_reference_peer_recomputes_with_scipy(tmp_path):
    calls = []

    def fake_peer(cfg, model_dir, out_dir, seed):
        calls.append(seed)
        t0 = time.perf_counter()
        scores = torch_reference(Path(model_dir), cfg.damping)["scores"]
        return scores, {"peer": "torch-exact-fisher", "total_s": time.perf_counter() - t0, "versions": {}}

    payload, arrays = bench.measure(TINY, fake_peer, keep_arrays=True)
    assert calls == list(TINY.seeds) and len(arrays) == len(payload["per_seed"]) == 2
    for rec, arr in zip(payload["per_seed"], arrays, strict=True):
        pred = {meth: -(arr["masks"].astype(float) @ arr[meth].T) for meth in bench.METHODS}
        for meth in bench.METHODS:
            want = [spearmanr(pred[meth][:, j], arr["actual"][:, j]).statistic for j in range(TINY.n_query)]
            np.testing.assert_allclose(rec["lds_per_query"][meth], want, atol=1e-5)
            assert rec["lds_mean"][meth] == pytest.approx(np.mean(want), abs=1e-5)
        rho = spearmanr(arr["ours"].ravel(), arr["kronfluence"].ravel()).statistic
        assert rec["agreement"]["spearman_all"] == pytest.approx(rho, abs=1e-12)
        # the torch peer is the exact influence by another route (see the test above): LDS equal
        np.testing.assert_allclose(
            rec["lds_per_query"]["kronfluence"], rec["lds_per_query"]["exact"], atol=1e-6
        )
        # EK-FAC with one sampled label vs exact: measured Spearman 0.80-0.87 at this size (seeds 0, 1);
        # 0.5 is far below that and far above what a wrong sign (negative) or unrelated scores (~0) give
        assert rec["spearman_exact_vs_ours"] > 0.5
    s = payload["summary"]
    for meth in bench.METHODS:
        per = [r["lds_mean"][meth] for r in payload["per_seed"]]
        assert s["lds"][meth]["mean"] == pytest.approx(np.mean(per))
        assert s["lds"][meth]["sd"] == pytest.approx(np.std(per, ddof=1))
    gap = abs(s["lds"]["ours"]["mean"] - s["lds"]["kronfluence"]["mean"])
    assert s["lds_gap_ours_kronfluence"] == pytest.approx(gap)
    spread = min(s["lds"]["ours"]["sd"], s["lds"]["kronfluence"]["sd"])
    assert s["same_lds_within_noise"] == (gap <= spread)
    paired = [r["lds_mean"]["ours"] - r["lds_mean"]["kronfluence"] for r in payload["per_seed"]]
    noise = [r["lds_mean"]["ours"] - r["lds_mean"]["ours_other_labels"] for r in payload["per_seed"]]
    assert s["paired_gap"] == pytest.approx(abs(np.mean(paired)))
    se = np.std(noise, ddof=1) / np.sqrt(len(noise))
    assert s["label_noise_standard_error"] == pytest.approx(se)
    assert s["paired_gap_within_label_noise"] == (abs(np.mean(paired)) <= 2 * se)
    path = write_result("influence_lds", {"quick": True, **payload}, tmp_path)
    back = json.loads(path.read_text())
    assert back["summary"] == json.loads(json.dumps(s))
    assert back["machine"]["cpu_isa"] is not None and back["settings"]["damping"] == TINY.l2 / TINY.n_train


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("n_train", dict(n_train=3)),
        ("seeds", dict(seeds=(1, 1))),
        ("l2", dict(l2=0.0)),
        ("d_model", dict(d_model=7)),
    ],
)
def test_bad_sizes_name_the_field(field, change):
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(TINY, **change)


def test_missing_peer_venv_says_how_to_create_it(monkeypatch, tmp_path):
    import benchmarks.influence_kronfluence as kron  # the peer runner both influence benchmarks share

    monkeypatch.setattr(kron, "KRON_PYTHON", tmp_path / "nope" / "python")
    with pytest.raises(RuntimeError, match=r"kronfluence==1\.0\.1"):
        bench.kronfluence_scores(TINY, tmp_path, tmp_path / "out", 0)
