"""Pretrain a small GPT-2 or Llama on a synthetic (or local text) corpus with a BPE tokenizer trained in code.

Thin script over :func:`jaxsafety.train.lm.pretrain`: config -> library -> logs, plots, checkpoints, HF export.

    python experiments/pretrain_lm.py --smoke                        # seconds on CPU
    python experiments/pretrain_lm.py --arch llama --d-model 256 --n-layers 6 --steps 5000
    python experiments/pretrain_lm.py --corpus my_corpus.txt --vocab-size 4096
    python experiments/pretrain_lm.py --run-name my-run              # run again with the same name to resume
    python -m jaxsafety.launch --num-processes 2 experiments/pretrain_lm.py --smoke   # 2 JAX processes
    tensorboard --logdir runs

``--sharding`` (``auto``: data parallel when there is more than one device) splits each batch over every device
of every process (``dp``), or also the parameters and optimizer state (``fsdp``); see
:mod:`jaxsafety.train.sharding` and :mod:`jaxsafety.launch`.

Writes ``runs/pretrain_lm/<run>/``: TensorBoard logs (train loss, lr, grad norm, tokens/s, held-out loss, greedy
samples as text), ``checkpoints/<step>/`` (orbax), ``results.json`` (final train / held-out loss next to the
unigram-entropy baseline a context-free model would reach, tokens/s, parameter count), ``learning_curve.png`` and
``hf/``, the trained model and its tokenizer in HF format (``AutoModelForCausalLM.from_pretrained(<run>/hf)``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxsafety.config import check_choice, check_range, config_to_dict, parse_cli
from jaxsafety.data import CorpusConfig, knowledge_base, text_file_corpus
from jaxsafety.models.generate import SamplingConfig, generate, left_pad
from jaxsafety.models.hf import to_hf
from jaxsafety.train import OptimizerConfig
from jaxsafety.train.experiment import Run, start_run
from jaxsafety.train.lm import PretrainConfig, PretrainResult, pretrain


@dataclasses.dataclass(frozen=True)
class PretrainLMConfig(PretrainConfig):
    """Pretrain a small GPT-2 / Llama LM (fields above run_name: the model and data, see PretrainConfig)."""

    run_name: str | None = None
    out_dir: str = "runs"
    log_every: int = 10
    eval_every: int = 200
    ckpt_every: int = 500
    keep_last: int = 2
    num_samples: int = 3  # greedy samples logged at every evaluation (0: none)
    sample_tokens: int = 32
    export_hf: bool = True
    sharding: str = "auto"  # auto | none | dp | fsdp (over all devices of all processes)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("sharding", self.sharding, ("auto", "none", "dp", "fsdp"))
        for f in ("log_every", "eval_every", "ckpt_every", "keep_last", "sample_tokens"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check_range("num_samples", self.num_samples, ge=0, le=16, integer=True)
        context = self.max_seq_len or self.seq_len
        check_range("sample_tokens", self.sample_tokens, ge=1, le=context - 4, integer=True)

    def pretrain_config(self) -> PretrainConfig:
        """The part of this config that determines the trained model."""
        return PretrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PretrainConfig)})


PRESETS = {
    "smoke": PretrainLMConfig(
        d_model=64,
        n_layers=2,
        n_heads=4,
        vocab_size=384,
        synthetic=CorpusConfig(num_documents=400, num_entities=20),
        seq_len=64,
        batch_size=16,
        steps=40,
        optim=OptimizerConfig(
            name="adamw",
            lr=3e-3,
            b2=0.95,
            weight_decay=0.1,
            schedule="cosine",
            warmup_steps=4,
            grad_clip_norm=1.0,
        ),
        log_every=5,
        eval_every=20,
        ckpt_every=20,
        num_samples=2,
        sample_tokens=16,
    )
}


def sample_prompts(cfg: PretrainLMConfig) -> list[str]:
    """Prompts for the greedy samples: a knowledge-base question, an equation and a story opening (synthetic
    corpus), or the first words of the first documents (text file)."""
    if cfg.corpus == "synthetic":
        person = knowledge_base(cfg.synthetic, cfg.seed)[0]
        prompts = [f"Q: Where does {person.name} live? A:", "7 + 5 =", "Once upon a time,"]
        prompts += [f"{person.name} was born in", f"Q: What does {person.name} do? A:"]
    else:
        prompts = [" ".join(doc.split()[:5]) for doc in text_file_corpus(cfg.corpus)[:5]]
    return (prompts * 16)[: cfg.num_samples]


def greedy_samples(cfg: PretrainLMConfig, model: Any, tokenizer: Any, prompts: list[str]) -> list[str]:
    """Greedy continuations of ``prompts`` (each prefixed with EOS, the document separator the model saw)."""
    if not prompts:
        return []
    width = min(32, (cfg.max_seq_len or cfg.seq_len) - cfg.sample_tokens)
    eos = tokenizer.eos_token_id
    ids = [[eos, *tokenizer.encode(p, add_special_tokens=False)][-width:] for p in prompts]
    tokens, mask = left_pad(ids, tokenizer.pad_token_id, width)
    sampling = SamplingConfig(
        max_new_tokens=cfg.sample_tokens,
        temperature=0.0,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    out = jax.device_get(generate(model, tokens, mask, None, sampling))
    return [
        p + tokenizer.decode(t[m.astype(bool)].tolist(), skip_special_tokens=True)
        for p, t, m in zip(prompts, out.tokens, out.mask)
    ]


def learning_curve(run: Run, baseline: float) -> None:
    """Train and held-out loss against steps, read back from the run's event files (complete across resumes:
    for a step logged twice, by a killed run and its resumption, the later value is kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run.tracker.flush()
    ea = EventAccumulator(str(run.dir), size_guidance={"scalars": 0})
    ea.Reload()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for tag, label, style in (("train/loss", "train (minibatch)", "-"), ("heldout/loss", "held-out", "o-")):
        if tag in ea.Tags()["scalars"]:
            by_step = {e.step: e.value for e in sorted(ea.Scalars(tag), key=lambda e: e.wall_time)}
            steps = sorted(by_step)
            ax.plot(steps, [by_step[s] for s in steps], style, label=label, markersize=4)
    ax.axhline(baseline, color="gray", linestyle="--", label=f"unigram entropy ({baseline:.2f})")
    ax.set_xlabel("step")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title(f"{run.config.arch} pretraining ({run.name})")
    ax.legend()
    fig.tight_layout()
    run.save_figure(fig, "learning_curve", run.config.steps)
    plt.close(fig)


def main(cfg: PretrainLMConfig) -> dict[str, Any]:
    t0 = time.time()
    run = start_run("pretrain_lm", cfg, run_name=cfg.run_name, root=cfg.out_dir)
    prompts = sample_prompts(cfg)
    samples: list[str] = []

    def on_eval(step: int, model: Any, tokenizer: Any, held: dict[str, float]) -> None:
        nonlocal samples
        samples = greedy_samples(cfg, model, tokenizer, prompts)
        if samples:
            run.tracker.text("samples", "\n\n".join(f"    {s}" for s in samples), step)

    with run, run.checkpointer(cfg.ckpt_every, cfg.keep_last) as ckpt:
        res: PretrainResult = pretrain(
            cfg.pretrain_config(),
            tracker=run.tracker,
            checkpointer=ckpt,
            log_every=cfg.log_every,
            eval_every=cfg.eval_every,
            on_eval=on_eval,
            desc="pretrain_lm",
            sharding=cfg.sharding,
        )
        run.tracker.hparams(
            config_to_dict(cfg.pretrain_config()),
            {"hparam/heldout_loss": res.heldout_loss, "hparam/train_eval_loss": res.train_eval_loss},
        )
        hf_dir = run.dir / "hf" if cfg.export_hf else None
        if run.is_main:  # the files of a multi-process run come from process 0
            learning_curve(run, res.unigram_entropy)
            if hf_dir is not None:
                to_hf(res.model, hf_dir, tokenizer=res.tokenizer)
        results = {
            "experiment": "pretrain_lm",
            "run": run.name,
            "arch": cfg.arch,
            "num_params": res.num_params,
            "vocab_size": len(res.tokenizer),
            "steps": cfg.steps,
            "num_train_tokens": res.num_train_tokens,
            "train_loss": res.train_loss,
            "train_eval_loss": res.train_eval_loss,
            "heldout_loss": res.heldout_loss,
            "unigram_entropy": res.unigram_entropy,
            "tokens_per_second": res.tokens_per_second,
            "samples": samples,
            "checkpoint_steps": ckpt.all_steps(),
            "hf_dir": str(hf_dir) if hf_dir is not None else None,
            "backend": jax.default_backend(),
            "num_processes": jax.process_count(),
            "num_devices": jax.device_count(),
        }
        # NaN (e.g. no train step left to time when rerunning a finished run) -> null: strict JSON
        results = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in results.items()}
        if run.is_main:
            print(
                f"[pretrain_lm] held-out loss {res.heldout_loss:.3f} (unigram entropy {res.unigram_entropy:.3f}), "
                f"train {res.train_eval_loss:.3f}, {res.tokens_per_second:,.0f} tokens/s",
                flush=True,
            )
        run.finish(results, t0)
    return results


if __name__ == "__main__":
    main(parse_cli(PretrainLMConfig, sys.argv[1:], presets=PRESETS))
    sys.exit(0)
