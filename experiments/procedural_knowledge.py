"""Which pretraining documents drive a small LM's factual answers and its reasoning? EK-FAC influence over the whole
pretraining corpus (Grosse et al. 2023), the study of Ruis et al. 2024 (arXiv 2411.12580) small and offline.

A GPT-2 is pretrained (:func:`jaxsafety.train.pretrained_lm`, cached) on :func:`jaxsafety.data.procedural_corpus`:
biographies of made-up people (factual documents), worked examples of three reasoning tasks - ``(a + b) * c`` in
two steps, solving ``a x + b = c``, the slope through two points - with fresh numbers (procedural documents), plus
single-step equation lines and stories. Queries are factual questions (``"Q: Which pet does X have? A:"`` ->
``" a cat."``) over facts the corpus states, and new problems of each task (no document contains them) with
their worked solutions; the influence target is the completion's NLL. EK-FAC factors are fitted on the training
documents (MLP layers, sampled-label Fisher) and every query is scored against every document. Reported as in the
paper:

- correlation of two queries' influence over the corpus, within a reasoning task vs across tasks vs factual;
- answer in the top k: a factual query's fact stated by a top-k document / a reasoning query's final answer
  (``"The answer is <r>."``) in a top-k document, next to the chance under a random ranking;
- summed influence of the top-k documents per nat of the completion (factual vs reasoning);
- which document kinds fill the top k, per query kind.

    python experiments/procedural_knowledge.py --smoke         # under 2 minutes on CPU
    python experiments/procedural_knowledge.py                 # the default: 6k documents, 40 + 39 queries
    python experiments/procedural_knowledge.py --corpus.num-documents 12000 --steps 6000
    tensorboard --logdir runs

Writes ``runs/procedural_knowledge/<run>/``: ``results.json`` (the summary tables, per-query numbers, timings),
``scores.safetensors`` (the ``[queries, documents]`` influence matrix), ``queries.json`` and ``documents.json``
(texts and labels in matrix order), ``correlations.png`` (the query x query correlation matrix) and
``procedural_knowledge.png`` (the four headline panels), TensorBoard text ``top_documents/<query>`` (each query's
top documents with their scores and the token-wise influence of the first) and scalars.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from flax import nnx

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxsafety.config import check, check_choice, check_range, config_to_dict, parse_cli, print_table
from jaxsafety.data.procedural import KINDS, ProceduralConfig, procedural_corpus, procedural_queries
from jaxsafety.influence import (
    STRATEGIES,
    InfluenceConfig,
    fit_factors,
    length_sorted_chunks,
    next_token_loss,
    pairwise_scores,
    query_gradients,
    save_scores,
    token_influence,
)
from jaxsafety.influence.analysis import (
    influence_per_nat,
    score_correlations,
    top_k_composition,
    top_k_hits,
    top_k_indices,
)
from jaxsafety.io import cache_dir, write_atomic, write_json_atomic
from jaxsafety.models import linear_layers
from jaxsafety.train import OptimizerConfig, progress
from jaxsafety.train.experiment import Run, start_run
from jaxsafety.train.finetune import sft_rows
from jaxsafety.train.lm import PretrainConfig, pretrain_documents
from jaxsafety.train.pretrained import pretrained_lm
from jaxsafety.xla_flags import enable_compilation_cache, prefer_fast_compile

LAYER_SETS = ("mlp", "all")


@dataclasses.dataclass(frozen=True)
class ProceduralKnowledgeConfig:
    """The corpus, the LM pretrained on it, the queries and the influence computation.

    ``corpus``: :class:`jaxsafety.data.ProceduralConfig`. Model and pretraining: ``arch`` .. ``warmup_steps`` (a
    :class:`jaxsafety.train.lm.PretrainConfig` on the corpus file; cached by content). Queries: ``num_factual``
    factual, ``num_per_task`` per reasoning task. Influence: ``strategy`` (:data:`jaxsafety.influence.STRATEGIES`),
    ``layers`` (``mlp``: every MLP dense layer; ``all``: MLP and attention projections), ``damping_factor``,
    ``num_label_samples``, ``chunk_size``. ``top_k``: the k of the answer-in-top-k, composition and per-nat
    measures (the first is the headline); ``num_logged``: top documents per query in TensorBoard."""

    run_name: str | None = None
    out_dir: str = "runs"
    seed: int = 0
    corpus: ProceduralConfig = ProceduralConfig()
    arch: str = "gpt2"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    vocab_size: int = 1024
    seq_len: int = 128
    batch_size: int = 32
    steps: int = 3000
    lr: float = 1e-3
    warmup_steps: int = 100
    num_factual: int = 40
    num_per_task: int = 13
    strategy: str = "ekfac"
    layers: str = "mlp"
    damping_factor: float = 0.1
    num_label_samples: int = 1
    chunk_size: int = 32
    top_k: tuple[int, ...] = (10, 50, 200)
    num_logged: int = 8

    def __post_init__(self) -> None:
        check_range("seed", self.seed, ge=0, integer=True)
        check_range("num_factual", self.num_factual, ge=0, integer=True)
        check_range("num_per_task", self.num_per_task, ge=0, integer=True)
        check(
            self.num_factual + self.num_per_task * len(self.corpus.tasks) >= 2,
            "num_per_task",
            self.num_per_task,
            "integers giving at least 2 queries with num_factual",
        )
        check_choice("layers", self.layers, LAYER_SETS)
        check_choice("strategy", self.strategy, STRATEGIES)
        ok = isinstance(self.top_k, tuple) and len(self.top_k) >= 1
        ok = ok and all(isinstance(k, int) and 1 <= k <= self.corpus.num_documents for k in self.top_k)
        check(ok, "top_k", self.top_k, "non-empty tuples of integers in [1, corpus.num_documents]")
        check_range("num_logged", self.num_logged, ge=0, integer=True)
        self.influence_config()  # raises ConfigError naming the influence field
        # the pretraining fields are checked by PretrainConfig (the corpus file is only a placeholder here)
        PretrainConfig(**self._pretrain_fields())

    def _pretrain_fields(self) -> dict[str, Any]:
        optim = OptimizerConfig(
            name="adamw",
            lr=self.lr,
            b2=0.95,
            weight_decay=0.1,
            schedule="cosine",
            warmup_steps=self.warmup_steps,
            grad_clip_norm=1.0,
        )
        keys = (
            "arch",
            "d_model",
            "n_layers",
            "n_heads",
            "vocab_size",
            "seq_len",
            "batch_size",
            "steps",
            "seed",
        )
        return {**{k: getattr(self, k) for k in keys}, "optim": optim}

    def pretrain_config(self, corpus_path: str) -> PretrainConfig:
        """The LM's :class:`PretrainConfig` on the corpus file ``corpus_path``."""
        return PretrainConfig(corpus=corpus_path, **self._pretrain_fields())

    def influence_config(self) -> InfluenceConfig:
        return InfluenceConfig(
            strategy=self.strategy,
            damping_factor=self.damping_factor,
            num_label_samples=self.num_label_samples,
            chunk_size=self.chunk_size,
        )


PRESETS = {
    "smoke": ProceduralKnowledgeConfig(
        corpus=ProceduralConfig(num_documents=400, num_entities=12),
        d_model=64,
        n_layers=2,
        vocab_size=384,
        seq_len=160,
        batch_size=16,
        steps=60,
        lr=3e-3,
        warmup_steps=6,
        num_factual=6,
        num_per_task=3,
        top_k=(5, 20),
        num_logged=3,
    )
}


# ----------------------------------------------------------------------------------------------------------------
# corpus, model, data


def corpus_file(texts: list[str]) -> str:
    """The corpus as one text file (documents separated by ``<|endoftext|>``, as
    :func:`jaxsafety.data.text_file_corpus` reads it), stored under the cache by content so that the same corpus
    keys the same cached LM from any run."""
    text = "\n<|endoftext|>\n".join(texts) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = cache_dir() / "corpora" / f"procedural-{digest}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    return str(path)


def layer_names(model: Any, which: str) -> tuple[str, ...] | None:
    """The influence layers: None (every MLP layer, InfluenceConfig's default) or every MLP and attention
    projection."""
    if which == "mlp":
        return None  # InfluenceConfig's default
    return tuple(
        layer.name for layer in linear_layers(model) if ".mlp." in layer.name or ".attn." in layer.name
    )


@nnx.jit
def _query_nats(model: Any, batch: dict[str, jax.Array]) -> jax.Array:
    return next_token_loss(model(batch["tokens"], batch["attention_mask"]), batch)


def as_batch(rows: Any) -> dict[str, jax.Array]:
    """Influence batch (``tokens``, ``attention_mask``, ``loss_mask``) of :func:`sft_rows` output."""
    return {
        "tokens": jnp.asarray(rows.tokens),
        "attention_mask": jnp.asarray(rows.mask),
        "loss_mask": jnp.asarray(rows.loss_mask),
    }


def with_progress(batches: list[dict[str, jax.Array]], desc: str):
    """A re-iterable of ``batches`` that draws a progress bar on every pass."""
    return lambda: iter(progress(batches, desc=desc, leave=False))


# ----------------------------------------------------------------------------------------------------------------
# analysis


def relevance(queries: list, docs: list) -> np.ndarray:
    """``[Q, N]``: document n states factual query q's fact / contains reasoning query q's final answer."""
    rel = np.zeros((len(queries), len(docs)), bool)
    for i, q in enumerate(queries):
        if q.kind == "factual":
            rel[i] = [q.fact in d.facts for d in docs]
        else:
            needle = f"The answer is {q.answer}."
            rel[i] = [needle in d.text for d in docs]
    return rel


def group_mean(values: np.ndarray, groups: np.ndarray, name: str) -> float:
    sel = groups == name
    return float(np.mean(values[sel])) if sel.any() else float("nan")


def analyse(cfg: ProceduralKnowledgeConfig, scores: np.ndarray, queries: list, docs: list, nats: np.ndarray):
    kinds = np.array([q.kind for q in queries])
    kind_of = np.where(kinds == "factual", "factual", "reasoning")
    tasks = [t for t in cfg.corpus.tasks if (kinds == t).any()]
    corr = score_correlations(scores, list(kinds))
    reasoning_within = [corr["within"][t] for t in tasks if corr["pairs"].get(t, 0)]
    reasoning_across = [
        v for k, v in corr["across"].items() if "factual" not in k.split("|") and corr["pairs"][k]
    ]
    rel = relevance(queries, docs)
    hits = {}
    for k in cfg.top_k:
        hit, chance = top_k_hits(scores, rel, k)
        hits[k] = {"hit": hit, "chance": chance}
    doc_kinds = [d.kind for d in docs]
    k0 = cfg.top_k[0]
    composition = {k: top_k_composition(scores, doc_kinds, k, KINDS) for k in cfg.top_k}
    per_nat = {k: influence_per_nat(scores, nats, k) for k in cfg.top_k}
    summary = {
        "correlation": {
            "within_task": corr["within"],
            "across_tasks": corr["across"],
            "pairs": corr["pairs"],
            "reasoning_within_mean": float(np.mean(reasoning_within)) if reasoning_within else float("nan"),
            "reasoning_across_mean": float(np.mean(reasoning_across)) if reasoning_across else float("nan"),
            "factual_within": corr["within"].get("factual", float("nan")),
        },
        "answer_in_top_k": {
            str(k): {
                g: {
                    "hit_rate": group_mean(h["hit"].astype(float), kind_of, g),
                    "chance": group_mean(h["chance"], kind_of, g),
                }
                for g in ("factual", "reasoning")
            }
            for k, h in hits.items()
        },
        "influence_per_nat": {
            str(k): {g: group_mean(v, kind_of, g) for g in ("factual", "reasoning")}
            for k, v in per_nat.items()
        },
        "query_nats": {g: group_mean(nats, kind_of, g) for g in ("factual", "reasoning")},
        "top_k_composition": {
            str(k): {
                qk: dict(zip(KINDS, [float(x) for x in c[kinds == qk].mean(axis=0)], strict=True))
                for qk in ("factual", *tasks)
            }
            for k, c in composition.items()
        },
        "same_task_in_top_k": {
            str(k): {t: float(c[kinds == t][:, KINDS.index(t)].mean()) for t in tasks}
            for k, c in composition.items()
        },
        "corpus_share": {kd: float(np.mean(np.array(doc_kinds) == kd)) for kd in KINDS},
    }
    per_query = [
        {
            "kind": q.kind,
            "prompt": q.prompt,
            "completion": q.completion,
            "nats": float(nats[i]),
            "relevant_documents": int(rel[i].sum()),
            **{f"answer_in_top_{k}": bool(hits[k]["hit"][i]) for k in cfg.top_k},
            **{f"chance_top_{k}": float(hits[k]["chance"][i]) for k in cfg.top_k},
            f"influence_per_nat_top_{k0}": float(per_nat[k0][i]),
        }
        for i, q in enumerate(queries)
    ]
    # the headline figure's per-query values: top-k0 influence per nat, split by query kind
    per_nat_by_kind = {g: per_nat[k0][kind_of == g] for g in ("factual", "reasoning")}
    return summary, per_query, corr["matrix"], per_nat_by_kind


# ----------------------------------------------------------------------------------------------------------------
# figures and logs


def correlation_figure(run: Run, matrix: np.ndarray, kinds: list[str]) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    edges = [i for i in range(1, len(kinds)) if kinds[i] != kinds[i - 1]]
    for e in edges:
        ax.axhline(e - 0.5, color="k", lw=0.6)
        ax.axvline(e - 0.5, color="k", lw=0.6)
    starts = [0, *edges]
    ends = [*edges, len(kinds)]
    ax.set_xticks([(s + e - 1) / 2 for s, e in zip(starts, ends, strict=True)])
    ax.set_xticklabels([kinds[s] for s in starts], rotation=30)
    ax.set_yticks([(s + e - 1) / 2 for s, e in zip(starts, ends, strict=True)])
    ax.set_yticklabels([kinds[s] for s in starts])
    fig.colorbar(im, ax=ax, label="Pearson r of influence over the corpus")
    ax.set_title("Query x query correlation of document influence")
    fig.tight_layout()
    run.save_figure(fig, "correlations")


def headline_figure(run: Run, cfg: ProceduralKnowledgeConfig, summary: dict, per_nat: dict) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    c = summary["correlation"]
    ax = axes[0, 0]
    labels = [*c["within_task"].keys()]
    ax.bar(labels, [c["within_task"][g] for g in labels], color="C0", label="within kind")
    ax.axhline(c["reasoning_across_mean"], color="C3", ls="--", label="across reasoning tasks")
    ax.set_ylabel("mean Pearson r between queries")
    ax.set_title("Influence correlation")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ks = [str(k) for k in cfg.top_k]
    x = np.arange(len(ks))
    for j, g in enumerate(("factual", "reasoning")):
        hit = [summary["answer_in_top_k"][k][g]["hit_rate"] for k in ks]
        chance = [summary["answer_in_top_k"][k][g]["chance"] for k in ks]
        ax.bar(x + (j - 0.5) * 0.38, hit, 0.36, color=f"C{j}", label=f"{g}")
        ax.scatter(x + (j - 0.5) * 0.38, chance, color="k", marker="_", s=200, zorder=3)
    ax.set_xticks(x, [f"top {k}" for k in ks])
    ax.set_ylabel("queries with the answer in the top k")
    ax.set_title("Answer in top-k documents (black: random ranking)")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    comp = summary["top_k_composition"][ks[0]]
    bottom = np.zeros(len(comp))
    for j, kd in enumerate(KINDS):
        vals = np.array([comp[qk][kd] for qk in comp])
        ax.bar(list(comp), vals, bottom=bottom, color=f"C{j}", label=kd)
        bottom += vals
    ax.set_ylabel(f"share of the top {ks[0]} documents")
    ax.set_title("Document kinds at the top, per query kind")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1, 1]
    data = [per_nat["factual"], per_nat["reasoning"]]
    ax.boxplot(data, tick_labels=["factual", "reasoning"])
    ax.set_ylabel(f"summed influence of the top {ks[0]} / nats")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title("Influence per nat of the completion")
    fig.tight_layout()
    run.save_figure(fig, "procedural_knowledge")


def log_top_documents(
    run: Run,
    cfg: ProceduralKnowledgeConfig,
    lm: Any,
    factors: Any,
    qg: Any,
    scores: np.ndarray,
    queries: list,
    docs: list,
    doc_rows: dict[str, jax.Array],
) -> None:
    """TensorBoard text per query: its top documents (score, kind, text) and the token-wise influence of the
    first (the 5 tokens with the largest contributions in bold)."""
    if cfg.num_logged == 0:
        return
    top = top_k_indices(scores, cfg.num_logged)
    first = {k: v[top[:, 0]] for k, v in doc_rows.items()}  # every query's top document
    per_token = []  # [Q, T]: query i's influence on the tokens of its own top document, 8 queries per call
    for lo in range(0, len(queries), 8):
        sub = jax.tree.map(lambda a, lo=lo: a[lo : lo + 8], qg)
        docs_sub = {k: v[lo : lo + 8] for k, v in first.items()}
        out = np.asarray(token_influence(lm.model, factors, sub, docs_sub, cfg.influence_config()))
        per_token.extend(out[j, j] for j in range(out.shape[0]))
    for i, q in enumerate(queries):
        lines = [f"**{q.kind}**: `{q.prompt}` -> `{q.completion}`", "", "| rank | score | kind | document |"]
        lines.append("|---|---|---|---|")
        for r, n in enumerate(top[i]):
            text = docs[n].text.replace("\n", " / ").replace("|", "/")
            lines.append(f"| {r + 1} | {scores[i, n]:.3g} | {docs[n].kind} | {text} |")
        real = np.asarray(first["attention_mask"][i]).astype(bool)
        ids = np.asarray(first["tokens"][i])[real]
        contrib = per_token[i][real]
        strong = set(np.argsort(-contrib)[:5].tolist())
        words = [lm.tokenizer.decode([int(t)]) for t in ids]
        marked = "".join(f"**{w}**" if j in strong and w.strip() else w for j, w in enumerate(words))
        lines += ["", f"token-wise influence of the top document (5 largest in bold): {marked}"]
        run.tracker.text(f"top_documents/{i:03d}_{q.kind}", "\n".join(lines), 0)


# ----------------------------------------------------------------------------------------------------------------
# main


def main(cfg: ProceduralKnowledgeConfig) -> dict[str, Any]:
    t_start = time.time()
    enable_compilation_cache()
    run = start_run("procedural_knowledge", cfg, run_name=cfg.run_name, root=cfg.out_dir)
    timings: dict[str, float] = {}
    with run:
        all_docs = procedural_corpus(cfg.corpus, cfg.seed)
        path = corpus_file([d.text for d in all_docs])
        pcfg = cfg.pretrain_config(path)
        t = time.time()
        lm = pretrained_lm(pcfg)
        timings["pretrain_or_load_s"] = time.time() - t
        by_text = {d.text: d for d in all_docs}
        docs = [by_text[text] for text in pretrain_documents(pcfg)[0]]
        queries = procedural_queries(
            cfg.corpus, cfg.seed, docs, num_factual=cfg.num_factual, num_per_task=cfg.num_per_task
        )
        print(
            f"[procedural_knowledge] LM {lm.info['num_params']:,} params, held-out loss "
            f"{lm.info['heldout_loss']:.3f} ({'cached' if lm.from_cache else 'trained'}); {len(docs)} training "
            f"documents, {len(queries)} queries",
            flush=True,
        )
        doc_rows = as_batch(
            sft_rows(lm.tokenizer, [""] * len(docs), [d.text for d in docs], bos=True, eos=True)
        )
        q_rows = as_batch(
            sft_rows(
                lm.tokenizer,
                [q.prompt for q in queries],
                [q.completion for q in queries],
                bos=True,
                eos=False,
            )
        )
        context = lm.model.config.max_seq_len
        width = max(doc_rows["tokens"].shape[1], q_rows["tokens"].shape[1])
        check(
            width <= context,
            "seq_len",
            cfg.seq_len,
            f"integers >= the longest document or query ({width} tokens)",
        )
        nats = np.asarray(_query_nats(lm.model, q_rows))

        icfg = dataclasses.replace(cfg.influence_config(), layers=layer_names(lm.model, cfg.layers))
        order, doc_batches = length_sorted_chunks(doc_rows, cfg.chunk_size)  # chunks cut to their longest
        t = time.time()
        factors = fit_factors(lm.model, with_progress(doc_batches, "factors"), icfg, jax.random.key(cfg.seed))
        jax.block_until_ready(factors)
        timings["factors_s"] = time.time() - t
        t = time.time()
        qg = query_gradients(lm.model, factors, q_rows, icfg)
        sorted_scores = pairwise_scores(lm.model, factors, qg, with_progress(doc_batches, "scores"), icfg)
        scores = np.empty(sorted_scores.shape, np.float32)
        scores[:, order] = np.asarray(sorted_scores)  # back to the documents' order
        timings["scores_s"] = time.time() - t

        summary, per_query, matrix, per_nat_by_kind = analyse(cfg, scores, queries, docs, nats)
        save_scores(run.dir / "scores.safetensors", scores, {"strategy": cfg.strategy, "layers": cfg.layers})
        write_json_atomic(run.dir / "queries.json", [q._asdict() for q in queries])
        write_json_atomic(run.dir / "documents.json", [d._asdict() for d in docs])
        correlation_figure(run, matrix, [q.kind for q in queries])
        headline_figure(run, cfg, summary, per_nat_by_kind)
        log_top_documents(run, cfg, lm, factors, qg, scores, queries, docs, doc_rows)
        log_scalars(run, summary)
        print_summary(cfg, summary)
        results = {
            "experiment": "procedural_knowledge",
            "run": run.name,
            "model": {**{k: lm.info[k] for k in ("num_params", "heldout_loss", "unigram_entropy")}},
            "corpus_file": path,
            "num_documents": len(docs),
            "num_queries": len(queries),
            "influence": config_to_dict(icfg),
            "timings": timings,
            "summary": summary,
            "queries": per_query,
        }
        run.finish(results, t_start)
    return results


def log_scalars(run: Run, summary: dict) -> None:
    c = summary["correlation"]
    run.tracker.scalar("correlation/reasoning_within", c["reasoning_within_mean"], 0)
    run.tracker.scalar("correlation/reasoning_across", c["reasoning_across_mean"], 0)
    run.tracker.scalar("correlation/factual_within", c["factual_within"], 0)
    for k, groups in summary["answer_in_top_k"].items():
        for g, v in groups.items():
            run.tracker.scalar(f"answer_in_top_{k}/{g}", v["hit_rate"], 0)
            run.tracker.scalar(f"answer_in_top_{k}/{g}_chance", v["chance"], 0)
    for k, groups in summary["influence_per_nat"].items():
        for g, v in groups.items():
            run.tracker.scalar(f"influence_per_nat_top_{k}/{g}", v, 0)


def print_summary(cfg: ProceduralKnowledgeConfig, summary: dict) -> None:
    c = summary["correlation"]
    rows = [["correlation within a reasoning task", f"{c['reasoning_within_mean']:.3f}", "", ""]]
    rows.append(["correlation across reasoning tasks", f"{c['reasoning_across_mean']:.3f}", "", ""])
    rows.append(["correlation between factual queries", f"{c['factual_within']:.3f}", "", ""])
    for k in cfg.top_k:
        a = summary["answer_in_top_k"][str(k)]
        rows.append(
            [
                f"answer in top {k} (chance)",
                "",
                f"{a['factual']['hit_rate']:.2f} ({a['factual']['chance']:.2f})",
                f"{a['reasoning']['hit_rate']:.2f} ({a['reasoning']['chance']:.2f})",
            ]
        )
        p = summary["influence_per_nat"][str(k)]
        rows.append([f"top-{k} influence per nat", "", f"{p['factual']:.3g}", f"{p['reasoning']:.3g}"])
    print_table(["measure", "all", "factual", "reasoning"], rows)


if __name__ == "__main__":
    config = parse_cli(ProceduralKnowledgeConfig, sys.argv[1:], presets=PRESETS)
    if "--smoke" in sys.argv[1:]:
        prefer_fast_compile()  # smoke sizes are compile-bound
    main(config)
    sys.exit(0)
