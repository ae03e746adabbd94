"""The kronfluence peer of the influence benchmark: EK-FAC factors and pairwise scores on a tiny GPT-2, timed.

Runs in its own venv (it imports neither jax nor jaxsafety). kronfluence 1.0.1 requires torchvision, and pip's
torchvision wheel is built against the CUDA torch: beside the CPU ``torch==2.13.0+cpu`` it fails at import
(``operator torchvision::nms does not exist``), and transformers imports torchvision when it is present, so
``GPT2LMHeadModel`` fails too. kronfluence itself never imports torchvision, so the venv drops it::

    python3 -m venv .venv-kron
    .venv-kron/bin/pip install torch==2.13.0 kronfluence==1.0.1 transformers==5.25.0 safetensors numpy
    .venv-kron/bin/pip uninstall -y torchvision

(measured: kronfluence 1.0.1, torch 2.13.0+cpu, transformers 5.25.0, accelerate 1.16.0, numpy 2.4.6).

Inputs (one folder, ``--model-dir``): ``config.json`` + ``model.safetensors`` of a HF ``GPT2LMHeadModel`` (as
``jaxsafety.models.to_hf`` or ``save_pretrained`` write them), ``tokens.npy`` (int ``[n_train, seq_len]``, the
training documents) and ``queries.npy`` (int ``[n_query, seq_len]``). ``--random-init --seed S`` creates all four
(HF's GPT-2 initialisation under ``torch.manual_seed(S)``, dropout 0; tokens uniform in ``[0, vocab)`` from
``numpy.random.default_rng(S)``, training documents first, then queries), so both sides score identical inputs.

What runs. The MLP projections ``transformer.h.{i}.mlp.c_fc`` and ``.c_proj`` (HF ``Conv1D``, ``y = x W + b``
with ``W [in, out]``) are replaced by ``nn.Linear`` holding ``W^T`` and the same bias (kronfluence tracks only
``nn.Linear``/``nn.Conv2d``), and only those are tracked, as in kronfluence's GPT-2 example. The task's train loss
is the summed next-token cross-entropy of a batch (``logits[:, :-1]`` against ``tokens[:, 1:]``); with
``sample=True`` the labels are drawn from the model's own softmax (the true Fisher / GGN, kronfluence's default);
the measurement is the summed next-token cross-entropy of the query. ``Analyzer.fit_all_factors`` with
``FactorArguments(strategy="ekfac")`` (covariances, eigendecomposition in float64, eigenvalue correction), then
``Analyzer.compute_pairwise_scores``; ``torch.manual_seed(--seed)`` before every fit, so each run samples the same
labels.

kronfluence's semantics (read from its source, 1.0.1), which ours must match to be compared:
- ``A`` (input covariance) is averaged over tokens, the input gets a trailing 1 when the layer has a bias (the
  bias is one more input row), ``S`` (output-gradient covariance) is averaged over tokens too; only their
  eigenvectors ``Q_A``, ``Q_S`` enter EK-FAC.
- The eigenvalue correction ``Lambda[o, i] = mean over sequences of (Q_S^T G Q_A)[o, i]^2``, where ``G`` is one
  sequence's gradient (summed over its tokens, sampled labels).
- Damping: the preconditioner is ``Q_S ((Q_S^T V Q_A) / (Lambda + d)) Q_A^T`` with ``d = damping_factor``
  (``ScoreArguments.damping_factor``), an ABSOLUTE value added to every corrected eigenvalue; ``None`` means the
  heuristic ``d = 0.1 * mean(Lambda)`` per tracked module (``HEURISTIC_DAMPING_SCALE``). kronfluence's default is
  ``1e-8``; ``--damping heuristic`` (this script's default) passes ``None``, which is our default (0.1 x mean
  eigenvalue per layer). The damping each module got is written to the JSON (``damping_per_module``).
- ``scores[q, t] = grad f(query q)^T (preconditioner) grad L(train t)``, summed over the tracked modules: positive
  means up-weighting document ``t`` lowers query ``q``'s loss.

Timing. For each ``--threads`` value (``torch.set_num_threads``), ``--warmup`` full runs (factors + scores) are
dropped, then ``--repeats`` runs are timed with a wall clock: ``factors_s`` is ``fit_all_factors`` (timed as its
three calls, whose medians are ``factor_phases_median_s``: covariance, eigendecomposition, lambda),
``scores_s`` is ``compute_pairwise_scores`` (each includes kronfluence writing its safetensors, part of its
design). The medians per thread count are reported, and the thread count with the smaller median total is
``best``. Batch sizes are fixed (``--factor-batch``, ``--train-batch``, ``--query-batch``), so kronfluence's
batch-size search does not run inside the timings.

Outputs in ``--out``: ``scores.npy`` (float32 ``[n_query, n_train]``, from the last timed run of the best
thread count), ``timings.json`` (below) and ``kronfluence/`` (kronfluence's own factor and score files).

Other tracked modules (``--modules``): any ``nn.Linear`` names of the loaded model instead of the MLP projections,
e.g. ``--modules lm_head`` on a HF ``LlamaForCausalLM`` folder (``model_type`` llama, loaded as is: its layers are
already ``nn.Linear``), as ``benchmarks/influence_lds.py`` runs it for the linear datamodeling score.

Invoke::

    .venv-kron/bin/python benchmarks/influence_kronfluence_peer.py --model-dir D --random-init --seed 0
    .venv-kron/bin/python benchmarks/influence_kronfluence_peer.py --model-dir D --out O [--threads 1 2]
    .venv-kron/bin/python benchmarks/influence_kronfluence_peer.py --model-dir LLAMA --out O --modules lm_head \
        --damping 0.004 --threads 1 --repeats 1 --warmup 0
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "cpu_info",
    "load_inputs",
    "main",
    "make_random_inputs",
    "mlp_module_names",
    "run_kronfluence",
    "summed_next_token_loss",
    "swap_mlp_conv1d",
    "tracked_modules",
]

ISA_FLAG = re.compile(
    r"^(sse\S*|ssse3|avx\S*|fma\S*|f16c|amx\S*|bmi\d|popcnt|movbe|aes|vaes|sha\S*|gfni|vpclmulqdq|adx"
    r"|asimd\S*|sve\d*|sme\d*|fphp|bf16|i8mm|dotprod)$"
)
DAMPING_HEURISTIC = "heuristic"


def cpu_info() -> dict[str, Any]:
    """CPU model, vendor, family/model and ISA extensions from the first processor block of /proc/cpuinfo.

    (``benchmarks.harness.machine_info`` records the same fields but imports jax, which this venv lacks.)"""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("vendor_id", "model name", "cpu family", "model", "flags", "Features"):
                fields.setdefault(key, value.strip())
            elif not line.strip() and fields:
                break
    except OSError:
        pass
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    return {
        "cpu": fields.get("model name") or platform.processor() or "unknown",
        "cpu_vendor": fields.get("vendor_id") or platform.machine() or "unknown",
        "cpu_family_model": f"{fields['cpu family']}/{fields['model']}" if "cpu family" in fields else None,
        "cpu_isa": sorted(f for f in flags if ISA_FLAG.match(f)),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def make_random_inputs(
    model_dir: str | Path,
    *,
    seed: int = 0,
    n_embd: int = 128,
    n_layer: int = 2,
    n_head: int = 4,
    vocab: int = 512,
    n_positions: int = 64,
    n_train: int = 512,
    n_query: int = 16,
    seq_len: int = 64,
) -> Path:
    """Write a randomly initialised GPT-2 (``config.json``, ``model.safetensors``), ``tokens.npy`` ``[n_train,
    seq_len]`` and ``queries.npy`` ``[n_query, seq_len]`` (int32, uniform in ``[0, vocab)``) to ``model_dir``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    for name, value in dict(
        n_embd=n_embd, n_layer=n_layer, n_head=n_head, vocab=vocab, n_positions=n_positions, n_train=n_train
    ).items():
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(n_query, int) and n_query >= 1):
        raise ValueError(f"n_query must be a positive int, got {n_query!r}")
    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    if not (isinstance(seq_len, int) and 2 <= seq_len <= n_positions):
        raise ValueError(f"seq_len must be an int in [2, n_positions={n_positions}], got {seq_len!r}")
    model_dir = Path(model_dir)
    if model_dir.exists() and any(model_dir.iterdir()) and not (model_dir / "config.json").exists():
        raise ValueError(
            f"model_dir {model_dir} is not empty and holds no config.json; refusing to write there"
        )
    config = GPT2Config(
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        vocab_size=vocab,
        n_positions=n_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir, safe_serialization=True)
    rng = np.random.default_rng(seed)
    np.save(model_dir / "tokens.npy", rng.integers(0, vocab, size=(n_train, seq_len), dtype=np.int32))
    np.save(model_dir / "queries.npy", rng.integers(0, vocab, size=(n_query, seq_len), dtype=np.int32))
    return model_dir


def mlp_module_names(n_layer: int) -> list[str]:
    """The tracked modules: each block's MLP input and output projections, in block order."""
    return [f"transformer.h.{i}.mlp.{p}" for i in range(n_layer) for p in ("c_fc", "c_proj")]


def swap_mlp_conv1d(model: nn.Module) -> list[str]:
    """Replace each block's ``mlp.c_fc`` / ``mlp.c_proj`` HF ``Conv1D`` (weight ``[in, out]``) with an
    ``nn.Linear`` (weight ``[out, in]`` = the transpose, same bias, dtype and device), in place; returns the
    swapped names."""
    names = mlp_module_names(len(model.transformer.h))
    for block in model.transformer.h:
        for attr in ("c_fc", "c_proj"):
            conv = getattr(block.mlp, attr)
            d_in, d_out = conv.weight.shape
            w = conv.weight
            linear = nn.Linear(d_in, d_out, bias=conv.bias is not None, dtype=w.dtype, device=w.device)
            with torch.no_grad():
                linear.weight.copy_(conv.weight.t())
                if conv.bias is not None:
                    linear.bias.copy_(conv.bias)
            setattr(block.mlp, attr, linear)
    return names


MODEL_TYPES = ("gpt2", "llama")


def load_inputs(
    model_dir: str | Path, tokens: str | Path | None = None, queries: str | Path | None = None
) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """Load the model from ``model_dir`` (eval mode; a GPT-2 gets its MLP ``Conv1D`` swapped for ``nn.Linear``, a
    Llama is loaded as is) and the token arrays (default ``model_dir/tokens.npy`` and ``queries.npy``); validates
    the model type, shapes and the token range."""
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    model_dir = Path(model_dir)
    for f in ("config.json", "model.safetensors"):
        if not (model_dir / f).is_file():
            raise ValueError(
                f"model_dir {model_dir} lacks {f} (a HF GPT2LMHeadModel or LlamaForCausalLM checkpoint is "
                "expected)"
            )
    model_type = json.loads((model_dir / "config.json").read_text()).get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_dir: model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    arrays = []
    for field, path in (
        ("tokens", tokens or model_dir / "tokens.npy"),
        ("queries", queries or model_dir / "queries.npy"),
    ):
        if not Path(path).is_file():
            raise ValueError(f"{field}: no such file {path}")
        arrays.append(np.load(path))
    cls = GPT2LMHeadModel if model_type == "gpt2" else LlamaForCausalLM
    model = cls.from_pretrained(model_dir, dtype=torch.float32)
    vocab = model.config.vocab_size
    n_pos = model.config.n_positions if model_type == "gpt2" else model.config.max_position_embeddings
    for field, arr in zip(("tokens", "queries"), arrays, strict=True):
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{field} must be an int array [n, seq_len], got {arr.dtype} {arr.shape}")
        if not 2 <= arr.shape[1] <= n_pos:
            raise ValueError(f"{field}: seq_len must be in [2, n_positions={n_pos}], got {arr.shape[1]}")
        if arr.min() < 0 or arr.max() >= vocab:
            raise ValueError(
                f"{field}: token ids must be in [0, vocab={vocab}), got [{arr.min()}, {arr.max()}]"
            )
    if model_type == "gpt2":
        swap_mlp_conv1d(model)
    model.eval()
    return model, arrays[0], arrays[1]


def tracked_modules(model: nn.Module, modules: list[str] | None = None) -> list[str]:
    """The modules kronfluence tracks: ``modules`` (checked: each an ``nn.Linear`` of ``model``), or None: every
    GPT-2 block's MLP projections (:func:`mlp_module_names`)."""
    if modules is None:
        if not hasattr(model, "transformer"):
            raise ValueError(
                "modules: None (the GPT-2 MLP projections) needs a GPT-2; name the modules instead"
            )
        return mlp_module_names(len(model.transformer.h))
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    bad = [n for n in modules if n not in linear]
    if not modules or bad or len(set(modules)) != len(modules):
        raise ValueError(
            f"modules={modules!r} is invalid: accepted values are distinct nn.Linear names of the model: "
            + ", ".join(linear)
        )
    return list(modules)


def summed_next_token_loss(model: nn.Module, input_ids: torch.Tensor, sample: bool = False) -> torch.Tensor:
    """Summed next-token cross-entropy of a batch ``[b, T]`` (``logits[:, :-1]`` against ``input_ids[:, 1:]``);
    with ``sample`` the labels are drawn from the model's own (detached) softmax instead (torch's global RNG)."""
    logits = model(input_ids=input_ids).logits[:, :-1, :]
    logits = logits.reshape(-1, logits.shape[-1])
    if sample:
        with torch.no_grad():
            labels = torch.multinomial(torch.softmax(logits.detach(), dim=-1), num_samples=1).flatten()
    else:
        labels = input_ids[:, 1:].reshape(-1)
    return F.cross_entropy(logits, labels, reduction="sum")


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, tokens: np.ndarray) -> None:
        self.tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64))

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[i]}


def _make_task(names: list[str]) -> Any:
    from kronfluence.task import Task

    class LanguageModelingTask(Task):
        def compute_train_loss(self, batch: Any, model: nn.Module, sample: bool = False) -> torch.Tensor:
            return summed_next_token_loss(model, batch["input_ids"], sample=sample)

        def compute_measurement(self, batch: Any, model: nn.Module) -> torch.Tensor:
            return summed_next_token_loss(model, batch["input_ids"], sample=False)

        def get_influence_tracked_modules(self) -> list[str]:
            return list(names)

        def get_attention_mask(self, batch: Any) -> None:
            return None  # no padding: every sequence has seq_len real tokens

    return LanguageModelingTask()


def run_kronfluence(
    model: nn.Module,
    tokens: np.ndarray,
    queries: np.ndarray,
    out_dir: str | Path,
    *,
    threads: list[int],
    repeats: int = 5,
    warmup: int = 1,
    damping: float | None = None,
    seed: int = 0,
    factor_batch: int = 64,
    train_batch: int = 64,
    query_batch: int = 16,
    modules: list[str] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit EK-FAC factors and pairwise scores with kronfluence, timed per thread count (module docstring).

    ``model`` must come from :func:`load_inputs` (MLP layers as ``nn.Linear``). ``damping`` None = kronfluence's
    heuristic 0.1 x mean(Lambda) per module, else the absolute value added to Lambda. ``modules``: the tracked
    ``nn.Linear`` names (None: the GPT-2 MLP projections, :func:`tracked_modules`). Returns the scores
    ``[n_query, n_train]`` (float32) and the timing record."""
    import kronfluence
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments

    names = tracked_modules(model, modules)
    task = _make_task(names)
    model = prepare_model(model, task)
    work = Path(out_dir) / "kronfluence"
    analyzer = Analyzer(
        analysis_name="peer", model=model, task=task, cpu=True, disable_tqdm=True, output_dir=str(work)
    )
    train_ds, query_ds = _Tokens(tokens), _Tokens(queries)
    factor_args = FactorArguments(strategy="ekfac")
    score_args = ScoreArguments(damping_factor=damping)

    def one_run() -> tuple[float, float, list[float]]:
        # Analyzer.fit_all_factors is exactly these three calls (kronfluence 1.0.1); timing them one by one
        # gives its total and the phases
        torch.manual_seed(seed)
        fit = dict(factors_name="ekfac", factor_args=factor_args, overwrite_output_dir=True)
        data = dict(dataset=train_ds, per_device_batch_size=factor_batch)
        t0 = time.perf_counter()
        analyzer.fit_covariance_matrices(**fit, **data)
        t_cov = time.perf_counter()
        analyzer.perform_eigendecomposition(**fit)
        t_eig = time.perf_counter()
        analyzer.fit_lambda_matrices(**fit, **data)
        t1 = time.perf_counter()
        phases = [t_cov - t0, t_eig - t_cov, t1 - t_eig]
        analyzer.compute_pairwise_scores(
            scores_name="pairwise",
            factors_name="ekfac",
            query_dataset=query_ds,
            train_dataset=train_ds,
            per_device_query_batch_size=query_batch,
            per_device_train_batch_size=train_batch,
            score_args=score_args,
            overwrite_output_dir=True,
        )
        return t1 - t0, time.perf_counter() - t1, phases

    per_threads: dict[str, Any] = {}
    best_scores, best_total = None, float("inf")
    for n in threads:
        torch.set_num_threads(n)
        for _ in range(warmup):
            one_run()
        runs = [one_run() for _ in range(repeats)]
        fac = statistics.median(r[0] for r in runs)
        sco = statistics.median(r[1] for r in runs)
        per_threads[str(n)] = {
            "factors_s": [r[0] for r in runs],
            "scores_s": [r[1] for r in runs],
            "factor_phases_median_s": {
                k: statistics.median(r[2][j] for r in runs)
                for j, k in enumerate(("covariance", "eigendecomposition", "lambda"))
            },
            "factors_median_s": fac,
            "scores_median_s": sco,
            "total_median_s": fac + sco,
        }
        if fac + sco < best_total:
            best_total = fac + sco
            best = n
            best_scores = analyzer.load_pairwise_scores("pairwise")["all_modules"].float().numpy().copy()
    lambdas = analyzer.load_lambda_matrices("ekfac")
    damping_per_module = {}
    for name in names:
        lam = lambdas["lambda_matrix"][name].double() / lambdas["num_lambda_processed"][name].double()
        damping_per_module[name] = float(0.1 * lam.mean()) if damping is None else float(damping)
    record = {
        "peer": "kronfluence",
        "strategy": "ekfac",
        "tracked_modules": names,
        "damping": DAMPING_HEURISTIC if damping is None else damping,
        "damping_semantics": "absolute value added to the corrected eigenvalues; heuristic = 0.1 x mean(Lambda)",
        "damping_per_module": damping_per_module,
        "n_train": int(tokens.shape[0]),
        "n_query": int(queries.shape[0]),
        "seq_len": int(tokens.shape[1]),
        "factor_batch": factor_batch,
        "train_batch": train_batch,
        "query_batch": query_batch,
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
        "threads": per_threads,
        "best_threads": best,
        "factors_s": per_threads[str(best)]["factors_median_s"],
        "scores_s": per_threads[str(best)]["scores_median_s"],
        "total_s": per_threads[str(best)]["total_median_s"],
        "versions": {
            "kronfluence": kronfluence.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
    }
    return best_scores, record


def _damping_arg(value: str) -> float | None:
    if value == DAMPING_HEURISTIC:
        return None
    try:
        d = float(value)
    except ValueError:
        d = -1.0
    if not d >= 0:
        raise argparse.ArgumentTypeError(
            f"--damping must be '{DAMPING_HEURISTIC}' or a float >= 0, got {value!r}"
        )
    return d


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {value!r}")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model-dir", required=True, help="HF GPT-2 dir (config.json, model.safetensors) + token files"
    )
    p.add_argument("--tokens", help="training tokens .npy [n_train, seq_len] (default MODEL_DIR/tokens.npy)")
    p.add_argument("--queries", help="query tokens .npy [n_query, seq_len] (default MODEL_DIR/queries.npy)")
    p.add_argument(
        "--out", help="output dir for scores.npy, timings.json, kronfluence/ (omit: only --random-init)"
    )
    p.add_argument(
        "--random-init", action="store_true", help="first write a random GPT-2 + tokens to MODEL_DIR"
    )
    p.add_argument("--seed", type=int, default=0, help="init / data seed, and torch seed for sampled labels")
    p.add_argument("--n-embd", type=_positive, default=128)
    p.add_argument("--n-layer", type=_positive, default=2)
    p.add_argument("--n-head", type=_positive, default=4)
    p.add_argument("--vocab", type=_positive, default=512)
    p.add_argument("--n-positions", type=_positive, default=64)
    p.add_argument("--n-train", type=_positive, default=512)
    p.add_argument("--n-query", type=_positive, default=16)
    p.add_argument("--seq-len", type=_positive, default=64)
    p.add_argument(
        "--damping", type=_damping_arg, default=None, help="'heuristic' (0.1 x mean Lambda) or a float"
    )
    p.add_argument("--threads", type=_positive, nargs="+", default=[1, 2], help="torch thread counts to time")
    p.add_argument("--repeats", type=_positive, default=5, help="timed runs per thread count")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per thread count first")
    p.add_argument("--factor-batch", type=_positive, default=64)
    p.add_argument("--train-batch", type=_positive, default=64)
    p.add_argument("--query-batch", type=_positive, default=16)
    p.add_argument(
        "--modules",
        nargs="+",
        default=None,
        help="tracked nn.Linear names (default: the GPT-2 MLP projections)",
    )
    return p


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """CLI (module docstring). Returns the timing record, or None when only ``--random-init`` ran."""
    args = _parser().parse_args(argv)
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if not args.random_init and args.out is None:
        raise ValueError("give --out (to run kronfluence) and/or --random-init (to write inputs)")
    out = Path(args.out) if args.out is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if args.random_init:
        make_random_inputs(
            args.model_dir,
            seed=args.seed,
            n_embd=args.n_embd,
            n_layer=args.n_layer,
            n_head=args.n_head,
            vocab=args.vocab,
            n_positions=args.n_positions,
            n_train=args.n_train,
            n_query=args.n_query,
            seq_len=args.seq_len,
        )
    if out is None:
        return None
    model, tokens, queries = load_inputs(args.model_dir, args.tokens, args.queries)
    tracked_modules(model, args.modules)  # a bad --modules raises before anything is written
    out.mkdir(parents=True, exist_ok=True)
    scores, record = run_kronfluence(
        model,
        tokens,
        queries,
        out,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        damping=args.damping,
        seed=args.seed,
        factor_batch=args.factor_batch,
        train_batch=args.train_batch,
        query_batch=args.query_batch,
        modules=args.modules,
    )
    record["model_dir"] = str(Path(args.model_dir).resolve())
    record["machine"] = {
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        **cpu_info(),
        # other processes on the machine at the end of the run (1/5/15-minute load averages): the timings are
        # only comparable with runs under similar load
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    np.save(out / "scores.npy", scores.astype(np.float32))
    tmp = out / "timings.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out / "timings.json")
    best = record["best_threads"]
    print(
        f"kronfluence ekfac: factors {record['factors_s']:.3f} s, scores {record['scores_s']:.3f} s "
        f"(median of {args.repeats}, {best} thread(s)); scores {scores.shape} -> {out}"
    )
    return record


if __name__ == "__main__":
    main()
