"""The kronfluence peer's own pieces (``benchmarks/influence_kronfluence_peer.py``), run in the main venv.

kronfluence itself lives in ``.venv-kron`` (not installed here), so these tests check what the peer adds around
it: the ``Conv1D -> nn.Linear`` swap (against HF's own forward), the task loss (against a numpy log-softmax), the
random inputs (readable by our ``from_hf`` with HF-parity logits, so both sides score the same model), input
validation, and that the script imports neither jax nor jaxsafety.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from benchmarks import influence_kronfluence_peer as peer
from jaxsafety.models import from_hf
from tests.benchmarks.peer_imports import import_roots

IDS = dict(bos_token_id=0, eos_token_id=0)  # inside the tiny vocabulary (HF warns otherwise)
TINY = dict(n_embd=16, n_layer=2, n_head=2, vocab=32, n_positions=8, n_train=6, n_query=3, seq_len=8)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return peer.make_random_inputs(tmp_path_factory.mktemp("peer") / "m", seed=1, **TINY)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_swap_keeps_logits_and_transposes_weights():
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=32, n_positions=8, **IDS)
    hf = GPT2LMHeadModel(cfg).double().eval()
    ids = torch.randint(0, 32, (3, 8))
    swapped = copy.deepcopy(hf)
    names = peer.swap_mlp_conv1d(swapped)
    assert names == [f"transformer.h.{i}.mlp.{p}" for i in range(2) for p in ("c_fc", "c_proj")]
    mods = dict(swapped.named_modules())
    orig = dict(hf.named_modules())
    for n in names:
        assert isinstance(mods[n], nn.Linear)
        assert torch.equal(mods[n].weight, orig[n].weight.t())
        assert torch.equal(mods[n].bias, orig[n].bias)
    with torch.no_grad():
        a, b = hf(input_ids=ids).logits, swapped(input_ids=ids).logits
    # float64: x @ W and linear(x, W^T) differ only by summation order (~1e-15 relative)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert a.abs().max() > 0.1


def test_summed_next_token_loss_matches_numpy():
    torch.manual_seed(1)
    hf = GPT2LMHeadModel(
        GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=32, n_positions=8, **IDS)
    ).double()
    hf.eval()
    ids = torch.randint(0, 32, (2, 8))
    loss = peer.summed_next_token_loss(hf, ids)
    with torch.no_grad():
        logp = _log_softmax(hf(input_ids=ids).logits.numpy())
    want = -sum(logp[b, t, int(ids[b, t + 1])] for b in range(2) for t in range(7))  # brute-force loop
    np.testing.assert_allclose(loss.item(), want, rtol=1e-12)


class _Peaked(nn.Module):
    """Logits with a +60 spike at a fixed token per position: softmax puts all but ~1e-26 of the mass there, so a
    sampled label equals the spike's token (with probability 1 - 1e-24 per position)."""

    def __init__(self, spikes: torch.Tensor, vocab: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(60.0 * nn.functional.one_hot(spikes, vocab).double())

    def forward(self, input_ids: torch.Tensor) -> object:
        return type("Out", (), {"logits": self.logits})()


def test_sampled_loss_uses_model_labels_not_data():
    torch.manual_seed(2)
    spikes = torch.randint(0, 32, (2, 8))
    model = _Peaked(spikes, 32)
    ids = torch.zeros_like(spikes)
    ids[:, 1:] = (spikes[:, :-1] + 1) % 32  # each data label (next token) differs from the model's spike
    sampled = peer.summed_next_token_loss(model, ids, sample=True)
    true = peer.summed_next_token_loss(model, ids, sample=False)
    logp = _log_softmax(model.logits.detach().numpy())
    want_sampled = -sum(logp[b, t, int(spikes[b, t])] for b in range(2) for t in range(7))
    want_true = -sum(logp[b, t, int(ids[b, t + 1])] for b in range(2) for t in range(7))
    np.testing.assert_allclose(sampled.item(), want_sampled, rtol=1e-12, atol=1e-20)
    np.testing.assert_allclose(true.item(), want_true, rtol=1e-12)
    assert true.item() > 800 > 1e-6 > sampled.item()  # 14 positions x ~60 nats vs ~0


def test_random_inputs_shapes_determinism_and_our_loader(tiny_dir: Path, tmp_path: Path):
    tokens, queries = np.load(tiny_dir / "tokens.npy"), np.load(tiny_dir / "queries.npy")
    assert tokens.shape == (6, 8) and queries.shape == (3, 8)
    assert tokens.dtype == queries.dtype == np.int32
    assert tokens.min() >= 0 and max(tokens.max(), queries.max()) < 32
    cfg = json.loads((tiny_dir / "config.json").read_text())
    assert (cfg["n_embd"], cfg["n_layer"], cfg["n_head"], cfg["vocab_size"], cfg["n_positions"]) == (
        16,
        2,
        2,
        32,
        8,
    )
    again = peer.make_random_inputs(tmp_path / "again", seed=1, **TINY)
    for f in ("tokens.npy", "queries.npy", "model.safetensors"):
        assert (again / f).read_bytes() == (tiny_dir / f).read_bytes(), f
    # the peer's model (MLP swapped) and ours loaded from the same files give the same logits
    model, tok, _ = peer.load_inputs(tiny_dir)
    with torch.no_grad():
        theirs = model(input_ids=torch.as_tensor(tok, dtype=torch.long)).logits.numpy()
    ours = np.asarray(from_hf(tiny_dir)(jnp.asarray(tok), jnp.ones(tok.shape, jnp.int32)))
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)  # float32 HF parity tolerance (conventions)
    assert np.abs(theirs).max() > 0.01


def test_bad_inputs_raise_before_compute(tiny_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"--out.*--random-init"):
        peer.main(["--model-dir", str(tiny_dir)])
    with pytest.raises(SystemExit):
        peer.main(["--model-dir", str(tiny_dir), "--out", str(tmp_path / "o"), "--damping", "-1"])
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match=r"lacks config\.json"):
        peer.load_inputs(tmp_path)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((2, 8), 32, np.int32))
    with pytest.raises(ValueError, match=r"tokens: token ids must be in \[0, vocab=32\)"):
        peer.load_inputs(tiny_dir, tokens=bad)
    np.save(bad, np.zeros((2, 9), np.int32))
    with pytest.raises(ValueError, match=r"queries: seq_len must be in \[2, n_positions=8\]"):
        peer.load_inputs(tiny_dir, queries=bad)
    with pytest.raises(ValueError, match=r"n_embd .* multiple of n_head"):
        peer.make_random_inputs(tmp_path / "x", n_embd=10, n_head=4)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        peer.make_random_inputs(tmp_path / "y")


def test_peer_script_imports_neither_jax_nor_jaxsafety():
    roots = import_roots(peer.__file__)
    assert {"torch", "kronfluence", "transformers"} <= roots
    assert not roots & {"jax", "jaxsafety", "flax", "optax", "benchmarks"}
