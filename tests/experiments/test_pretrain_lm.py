"""experiments/pretrain_lm.py end to end, as a user runs it (a subprocess), and its HF export against torch."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxsafety.config import config_from_dict
from jaxsafety.train.lm import PretrainConfig
from tests.experiments.script_runner import parse_experiment_cli, run_experiment


def _run(*args: str) -> subprocess.CompletedProcess:
    return run_experiment("pretrain_lm.py", *args, timeout=600)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("runs")
    out = _run("--smoke", "--out-dir", str(out_dir), "--run-name", "r1")
    assert out.returncode == 0, out.stderr
    return out_dir / "pretrain_lm" / "r1"


def test_smoke_writes_logs_checkpoints_results(smoke_run: Path):
    res = json.loads((smoke_run / "results.json").read_text())
    cfg = json.loads((smoke_run / "config.json").read_text())
    assert cfg["steps"] == res["steps"] == 40 and res["arch"] == "gpt2"
    assert res["checkpoint_steps"] == [20, 40]
    assert all((smoke_run / "checkpoints" / str(s)).is_dir() for s in (20, 40))
    # the model learned context: held-out loss clearly below the best context-free (unigram) predictor
    assert res["heldout_loss"] < res["unigram_entropy"] - 0.3
    assert res["tokens_per_second"] > 0 and res["num_params"] > 0
    assert (smoke_run / "learning_curve.png").stat().st_size > 1000
    ea = EventAccumulator(str(smoke_run), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    scalars = ea.Tags()["scalars"]
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_second", "heldout/loss"):
        assert tag in scalars, tag
    assert [e.step for e in ea.Scalars("heldout/loss")] == [20, 40]
    loss = ea.Scalars("train/loss")
    assert loss[-1].step == 40 and loss[-1].value < loss[0].value
    # lr at step s was used for update s - 1: linear warmup over 4 updates, then cosine to 0 at update 40
    for e in ea.Scalars("train/lr"):
        k = e.step - 1
        expected = 3e-3 * k / 4 if k < 4 else 3e-3 * 0.5 * (1 + math.cos(math.pi * (k - 4) / 36))
        assert e.value == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert len(res["samples"]) == 2 and res["samples"][1].startswith("7 + 5 =")
    assert any(t.startswith("samples") for t in ea.Tags()["tensors"])


def test_hf_export_matches_checkpoint(smoke_run: Path):
    """The exported HF model (loaded by transformers/torch) gives the logits of our model restored from the
    orbax checkpoint (an independent path from the same weights)."""
    import jax
    import torch
    from flax import nnx
    from transformers import AutoModelForCausalLM

    from jaxsafety.models import GPT2
    from jaxsafety.models.tokenizer import load_tokenizer
    from jaxsafety.train import Checkpointer, make_optimizer

    run_cfg = json.loads((smoke_run / "config.json").read_text())
    assert run_cfg["export_hf"] and (smoke_run / "hf" / "config.json").is_file()
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    cfg = config_from_dict(PretrainConfig, {k: v for k, v in run_cfg.items() if k in names})
    tok = load_tokenizer(smoke_run / "hf")

    def build():  # abstract (shapes only): the checkpoint supplies every value
        model = GPT2(cfg.model_config(len(tok)), rngs=nnx.Rngs(0))
        return model, nnx.Optimizer(model, make_optimizer(cfg.optim, total_steps=cfg.steps), wrt=nnx.Param)

    graphdef, abstract = nnx.split(nnx.eval_shape(build))
    with Checkpointer(smoke_run / "checkpoints") as ckpt:
        state = ckpt.restore(abstract, step=40)
    logits = jax.jit(lambda s, x: nnx.merge(graphdef, s)[0](x))

    ids = np.array([[tok.eos_token_id, *tok.encode("Once upon a time, Anna went to the park.")]], np.int32)
    hf = AutoModelForCausalLM.from_pretrained(smoke_run / "hf", local_files_only=True).eval()
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(np.asarray(logits(state, ids)), ref, atol=1e-4, rtol=0)


def test_bad_flags_exit_with_one_line(tmp_path: Path):
    out = _run("--smoke", "--seq-len", "128", "--max-seq-len", "64", "--out-dir", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip() == "error: max_seq_len=64 is invalid: accepted values are integers >= 128"
    assert not any(tmp_path.iterdir())

    cases = {
        (
            "--batch-size",
            "10",
            "--accum-steps",
            "4",
        ): "accum_steps=4 is invalid: accepted values are divisors of batch_size (10)",
        ("--arch", "bert"): "argument --arch: 'bert' is invalid: accepted values are one of gpt2, llama",
        (
            "--corpus",
            str(tmp_path / "nope.txt"),
        ): "accepted values are 'synthetic' or the path of a text file",
        ("--synthetic.num-documents", "0"): "synthetic.num_documents=0 is invalid",
        ("--sample-tokens", "70"): "sample_tokens=70 is invalid: accepted values are integers >= 1 and <= 60",
    }
    for argv, message in cases.items():
        code, _, err = parse_experiment_cli("pretrain_lm.py", "--smoke", *argv, "--out-dir", str(tmp_path))
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir())
