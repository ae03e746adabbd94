"""One process of the multi-host tests: pretrains a tiny LM through :func:`jaxsafety.train.lm.pretrain` (or, with
``--task finetune``, fine-tunes one with LoRA through :func:`jaxsafety.train.finetune.finetune`).

Run under ``python -m jaxsafety.launch --num-processes N`` (a multi-process job) or directly (one process; the
test sets the forced device count). Process 0 writes ``<out>/result.npz`` (the per-step losses and every leaf of
the final train state) and ``<out>/info.json``. ``--kill-at K``: process 1 writes the time to
``<out>/killed_at`` and SIGKILLs itself at step K, like a host lost mid-run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxsafety.data import CorpusConfig
from jaxsafety.distributed import is_main, to_host
from jaxsafety.models import GPT2, CharTokenizer, GPT2Config
from jaxsafety.train import OptimizerConfig
from jaxsafety.train.checkpoint import Checkpointer
from jaxsafety.train.finetune import FinetuneConfig, LoRAConfig, finetune, sft_rows
from jaxsafety.train.lm import PretrainConfig, pretrain
from jaxsafety.train.sharding import make_mesh, shard_state
from jaxsafety.train.tracker import NoOpTracker, make_tracker

CONFIG = PretrainConfig(
    d_model=32,
    n_layers=2,
    n_heads=2,
    vocab_size=300,
    synthetic=CorpusConfig(num_documents=120, num_entities=8),
    seq_len=32,
    batch_size=8,
    steps=6,
    optim=OptimizerConfig(
        name="adamw", lr=1e-3, b2=0.95, weight_decay=0.1, schedule="cosine", warmup_steps=2
    ),
)


def run_finetune(out: Path, sharding: str) -> None:
    """LoRA SFT of a tiny GPT-2 on 16 rows, 6 steps of 8 rows, 3 steps per jitted chunk."""
    tok = CharTokenizer("abcdefgh=.", eos=".")
    prompts = ["ab=", "cdef=", "g=", "hab=", "ba=", "fed=", "c=", "ggh="] * 2
    responses = ["ba.", "fedc.", "g.", "bah.", "ab.", "def.", "cccc.", "h."] * 2
    data = sft_rows(tok, prompts, responses, bos=False, eos=False)
    cfg = GPT2Config(vocab_size=tok.vocab_size, max_seq_len=12, d_model=32, n_layers=2, n_heads=2)
    model = GPT2(cfg, rngs=nnx.Rngs(0))
    config = FinetuneConfig(
        steps=6, batch_size=8, optim=OptimizerConfig(lr=1e-2), chunk_steps=3, lora=LoRAConfig(rank=4)
    )
    res = finetune(model, data, config, progress=False, sharding=sharding)
    if is_main():
        leaves = {f"leaf{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(nnx.state(res.model)))}
        np.savez(out / "result.npz", losses=res.losses.astype(np.float64), **leaves)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--task", default="pretrain", choices=("pretrain", "finetune"))
    p.add_argument("--sharding", default="fsdp")
    p.add_argument("--steps", type=int, default=CONFIG.steps)
    p.add_argument("--ckpt", default=None)
    p.add_argument("--kill-at", type=int, default=-1)
    a = p.parse_args()
    out = Path(a.out)
    if a.task == "finetune":
        run_finetune(out, a.sharding)
        return
    cfg = PretrainConfig(**{**CONFIG.__dict__, "steps": a.steps})

    def on_eval(step, model, tokenizer, held):
        if step == a.kill_at and jax.process_index() == 1:
            (out / "killed_at").write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)

    ckpt = Checkpointer(a.ckpt, save_every=3, keep_last=5) if a.ckpt else None
    res = pretrain(
        cfg,
        checkpointer=ckpt,
        log_every=1,
        eval_every=2 if a.kill_at > 0 else None,
        on_eval=on_eval,
        sharding=a.sharding,
    )
    if ckpt is not None:
        ckpt.close()
    # FSDP across processes: each device holds 1/n of every large array (placed by every process together)
    sharded = shard_state(res.state, make_mesh(), "fsdp")
    fraction = max(
        x.addressable_shards[0].data.size / x.size for x in jax.tree.leaves(sharded) if x.size >= 1024
    )
    host = to_host(sharded)  # all-gathered back: must equal the state it came from
    roundtrip = max(
        float(np.abs(np.asarray(x) - np.asarray(y)).max())
        for x, y in zip(jax.tree.leaves(host), jax.tree.leaves(res.state))
    )
    info = {
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "fsdp_max_shard_fraction": fraction,
        "roundtrip_diff": roundtrip,
        "tracker_noop": isinstance(make_tracker("probe", "probe", root=str(out / "probe")), NoOpTracker),
    }
    (out / f"info_p{jax.process_index()}.json").write_text(json.dumps(info))
    if is_main():
        losses = np.array([h["loss"] for h in res.history], np.float64)
        leaves = {f"leaf{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(res.state))}
        np.savez(out / "result.npz", losses=losses, **leaves)


if __name__ == "__main__":
    main()
