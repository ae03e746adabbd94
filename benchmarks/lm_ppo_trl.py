"""The TRL peer of ``benchmarks/lm_ppo.py``: TRL's PPO trainer on a tiny GPT-2, timed by phase. Runs in its own venv.

Why a separate venv. TRL removed ``PPOTrainer`` (moved to ``trl.experimental.ppo`` in 1.10, deleted in 1.13, PR
huggingface/trl#7020); 1.12.0 is the last release that ships it, and it installs beside our torch and transformers
but pulls accelerate and datasets, which the library does not need. Install (torch pinned in the same command, or
pip pulls a multi-GB CUDA torch)::

    python3.11 -m venv .venv-trl
    .venv-trl/bin/pip install trl==1.12.0 torch==2.13.0 transformers==5.25.0

(measured: trl 1.12.0, torch 2.13.0+cpu, transformers 5.25.0, accelerate 1.16.0, datasets 5.2.0, numpy 2.4.6).
This file imports neither jax nor jaxsafety: ``benchmarks/lm_ppo.py`` (main venv) writes the weights and runs it as
``.venv-trl/bin/python benchmarks/lm_ppo_trl.py --policy DIR --score DIR --out FILE [...]``.

What runs. ``trl.experimental.ppo.PPOTrainer`` with
- policy and frozen reference: ``AutoModelForCausalLM.from_pretrained(--policy)`` (two instances);
- value model and reward model: ``AutoModelForSequenceClassification.from_pretrained(--score)`` (two instances,
  ``num_labels=1``; our ``ScoreModel`` exported by ``jaxsafety.models.to_hf``);
- prompts: ``--batch`` x ``--prompt-len`` random tokens in ``[0, vocab)`` (seed 0, no padding); a word-level
  tokenizer whose pad token is id ``vocab`` (outside the model's vocabulary, so a sampled token is never taken for
  padding); no stop token and no EOS in the generation config, so every response has ``--response-len`` tokens;
- one rollout of ``--batch`` sequences per iteration, then ``--epochs`` x ``--minibatches`` optimiser steps
  (``per_device_train_batch_size = batch``, ``gradient_accumulation_steps = 1``, ``num_mini_batches =
  minibatches``: in TRL 1.12 the rollout batch is ``per_device_train_batch_size * gradient_accumulation_steps``
  and each minibatch is one micro-batch and one AdamW step), TRL's defaults otherwise (k1 KL, kl_coef 0.05,
  cliprange 0.2, vf_coef 0.1, gamma 1, lam 0.95, lr 3e-6, no reward whitening).

How it is timed (TRL's ``train()`` is one loop, so its phases are found by wrapping): ``batch_generation`` in
``trl.experimental.ppo.ppo_trainer`` is replaced by a wrapper that times it (``generate_s``: sampling with the KV
cache); the module-level ``forward`` is wrapped so that its first call on the trainable ``PolicyAndValueWrapper``
in an iteration marks the end of the rollout (``rollout_s``: generation plus the reference, value and reward
forwards and GAE) and the start of the update (``update_s``: the PPO epochs, up to ``on_step_end``, which includes
TRL's per-iteration metrics); a ``TrainerCallback.on_step_end`` marks the end of each iteration (``iteration_s``,
end-to-end, measured from the previous ``on_step_end``). ``housekeeping_s`` is the part of an iteration spent in
the trainer's own ``gc.collect()`` and ``empty_cache()`` calls (the module's ``gc`` and ``empty_cache`` are
replaced by timed proxies); it is inside ``rollout_s``/``update_s``/``iteration_s``, reported so that the cost of
TRL's loop is visible next to the cost of its model calls. The first ``--warmup`` iterations are dropped; the
median of the others is reported. Each ``--threads`` value (``torch.set_num_threads``) gets a fresh trainer.

Throughputs count response tokens: ``generate_tok_s = batch * response_len / generate_s``, ``rollout_tok_s`` the
same over ``rollout_s``, ``update_tok_s = epochs * batch * response_len / update_s``, ``end_to_end_tok_s = batch *
response_len / iteration_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

__all__ = ["main", "make_tokenizer", "run_trl"]

TRAINER = "trl.experimental.ppo.PPOTrainer"


def make_tokenizer(vocab: int) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over ids ``0..vocab`` (``t0``..``t{vocab-1}`` plus ``<pad>`` at id
    ``vocab``, outside the model's vocabulary; ``t0`` doubles as unk/eos, which generation never stops on)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)} | {"<pad>": vocab}
    tok = Tokenizer(WordLevel(vocab=words, unk_token="t0"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="t0", eos_token="t0")


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run_trl(
    policy_dir: str,
    score_dir: str,
    *,
    batch: int,
    prompt_len: int,
    response_len: int,
    epochs: int,
    minibatches: int,
    iters: int,
    warmup: int,
    threads: int,
    seed: int = 0,
) -> dict[str, Any]:
    """One PPO run of ``warmup + iters`` iterations at ``threads`` torch threads; per-phase seconds and tokens/s."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as pt

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    ref = AutoModelForCausalLM.from_pretrained(policy_dir)
    value = AutoModelForSequenceClassification.from_pretrained(score_dir, num_labels=1)
    reward = AutoModelForSequenceClassification.from_pretrained(score_dir, num_labels=1)
    vocab = policy.config.vocab_size
    for m in (policy, ref):  # fixed-length responses: nothing to stop on
        m.generation_config.eos_token_id = None
        m.generation_config.bos_token_id = None
        m.generation_config.pad_token_id = vocab
    for m in (policy, ref, value, reward):
        m.config.pad_token_id = vocab
    tokenizer = make_tokenizer(vocab)
    g = torch.Generator().manual_seed(seed)
    n_iters = warmup + iters
    prompts = torch.randint(0, vocab, (batch * n_iters, prompt_len), generator=g)
    dataset = Dataset.from_dict({"input_ids": prompts.tolist()})

    marks: dict[str, list[float]] = {
        "generate": [],
        "rollout": [],
        "update": [],
        "iteration": [],
        "housekeeping": [],
    }
    state = {"t_iter": 0.0, "update_started": False, "t_update": 0.0, "housekeeping": 0.0}

    orig_gen, orig_fwd, orig_gc, orig_empty = pt.batch_generation, pt.forward, pt.gc, pt.empty_cache

    def timed(fn: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*a, **k)
            state["housekeeping"] += time.perf_counter() - t0
            return out

        return call

    timed_gc = types.SimpleNamespace(collect=timed(orig_gc.collect))

    def timed_generation(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = orig_gen(*a, **k)
        marks["generate"].append(time.perf_counter() - t0)
        return out

    def marking_forward(model: Any, *a: Any, **k: Any) -> Any:
        if isinstance(model, pt.PolicyAndValueWrapper) and not state["update_started"]:
            state["update_started"] = True
            state["t_update"] = time.perf_counter()
            marks["rollout"].append(state["t_update"] - state["t_iter"])
        return orig_fwd(model, *a, **k)

    class Marks(TrainerCallback):
        def on_train_begin(self, args: Any, st: Any, control: Any, **kw: Any) -> None:
            state["t_iter"] = time.perf_counter()

        def on_step_end(self, args: Any, st: Any, control: Any, **kw: Any) -> None:
            now = time.perf_counter()
            marks["update"].append(now - state["t_update"])
            marks["iteration"].append(now - state["t_iter"])
            marks["housekeeping"].append(state["housekeeping"])
            state["t_iter"], state["update_started"], state["housekeeping"] = now, False, 0.0

    with tempfile.TemporaryDirectory() as out_dir:
        config = PPOConfig(
            output_dir=out_dir,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            num_mini_batches=minibatches,
            num_ppo_epochs=epochs,
            total_episodes=batch * n_iters,
            response_length=response_len,
            local_rollout_forward_batch_size=batch,
            stop_token=None,
            num_sample_generations=0,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            bf16=False,
            fp16=False,
            seed=seed,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = PPOTrainer(
            args=config,
            processing_class=tokenizer,
            model=policy,
            ref_model=ref,
            reward_model=reward,
            value_model=value,
            train_dataset=dataset,
            callbacks=[Marks()],
        )
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        pt.batch_generation, pt.forward = timed_generation, marking_forward
        pt.gc, pt.empty_cache = timed_gc, timed(orig_empty)
        try:
            t0 = time.perf_counter()
            trainer.train()
            total_s = time.perf_counter() - t0
        finally:
            pt.batch_generation, pt.forward, pt.gc, pt.empty_cache = orig_gen, orig_fwd, orig_gc, orig_empty

    if len(marks["iteration"]) != n_iters or len(marks["generate"]) != n_iters:
        raise RuntimeError(
            f"expected {n_iters} iterations, timed { ({k: len(v) for k, v in marks.items()}) }"
        )
    steady = {k: v[warmup:] for k, v in marks.items()}
    tokens = batch * response_len
    med = {k: _median(v) for k, v in steady.items()}
    return {
        "threads": threads,
        "generate_s": med["generate"],
        "rollout_s": med["rollout"],
        "update_s": med["update"],
        "iteration_s": med["iteration"],
        "housekeeping_s": med["housekeeping"],
        "generate_tok_s": tokens / med["generate"],
        "rollout_tok_s": tokens / med["rollout"],
        "update_tok_s": epochs * tokens / med["update"],
        "end_to_end_tok_s": tokens / med["iteration"],
        "first_iteration_s": marks["iteration"][0],
        "train_total_s": total_s,
        "times_s": steady,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: run TRL PPO at each ``--threads`` value, pick the fastest end-to-end, write JSON to ``--out``/stdout."""
    p = argparse.ArgumentParser(prog="lm_ppo_trl", description=__doc__.split("\n", 1)[0])
    p.add_argument("--policy", required=True, help="HF GPT-2 LM directory (policy and reference)")
    p.add_argument(
        "--score", required=True, help="HF GPT-2 sequence-classification directory (value, reward)"
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--response-len", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--iters", type=int, default=3, help="timed iterations (after --warmup)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--out", default=None, help="JSON file (default: stdout)")
    p.add_argument("--cpu", type=int, default=None, help="pin this process to this CPU (before torch loads)")
    a = p.parse_args(argv)
    if a.cpu is not None:
        os.sched_setaffinity(0, {a.cpu})
    for name in ("batch", "prompt_len", "response_len", "epochs", "minibatches", "iters"):
        if getattr(a, name) < 1:
            p.error(
                f"--{name.replace('_', '-')}={getattr(a, name)} is invalid: accepted values are integers >= 1"
            )
    if a.warmup < 0:
        p.error(f"--warmup={a.warmup} is invalid: accepted values are integers >= 0")
    if a.batch % a.minibatches:
        p.error(f"--minibatches={a.minibatches} is invalid: accepted values divide --batch ({a.batch})")
    threads = [int(t) for t in a.threads.split(",") if t.strip()]
    if not threads or min(threads) < 1:
        p.error(f"--threads={a.threads} is invalid: accepted values are comma-separated integers >= 1")

    import torch
    import transformers
    import trl

    runs = [
        run_trl(
            a.policy,
            a.score,
            batch=a.batch,
            prompt_len=a.prompt_len,
            response_len=a.response_len,
            epochs=a.epochs,
            minibatches=a.minibatches,
            iters=a.iters,
            warmup=a.warmup,
            threads=t,
        )
        for t in threads
    ]
    best = max(runs, key=lambda r: r["end_to_end_tok_s"])
    result = {
        "trainer": TRAINER,
        "algorithm": "ppo",
        "versions": {
            "trl": trl.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "settings": {
            k: getattr(a, k)
            for k in ("batch", "prompt_len", "response_len", "epochs", "minibatches", "iters", "warmup")
        },
        "cpu_pinned": a.cpu,
        "runs": runs,
        "best_threads": best["threads"],
        "best": {k: v for k, v in best.items() if k != "times_s"},
    }
    text = json.dumps(result, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    else:
        print(text)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1:])
