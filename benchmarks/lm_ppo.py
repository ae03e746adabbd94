"""LM PPO end-to-end (rollout + update) on a tiny GPT-2: ours (:mod:`jaxsafety.rl.lm_ppo`) vs TRL's ``PPOTrainer``.

What is compared. One model is built here: ``ScoreModel(GPT2(cfg, nnx.Rngs(0)), 1, rngs=nnx.Rngs(1),
keep_lm_head=True)``. Its backbone is exported with :func:`~jaxsafety.models.to_hf` as a ``GPT2LMHeadModel``
directory (TRL's policy and frozen reference) and the whole ScoreModel as a ``GPT2ForSequenceClassification``
directory (TRL's value model and reward model), so both sides start from identical float32 weights:

- ours: :func:`jaxsafety.rl.make_lm_ppo` on that ScoreModel (policy logits and per-token values from ONE backbone,
  the reference a frozen copy of its parameters), the reward a second copy of the ScoreModel scoring ``[prompt |
  response]`` at its last token (what TRL's ``get_reward`` does); phases timed as the jitted
  ``rollout`` (KV-cache sampling + policy/reference/value forwards + reward), ``advantages`` + ``update`` (the PPO
  epochs) and ``step`` (one whole iteration in one program, the end-to-end figure); generation alone is
  :func:`jaxsafety.models.generate` jitted on the policy;
- TRL: ``benchmarks/lm_ppo_trl.py`` in the separate virtualenv ``.venv-trl`` (TRL 1.12.0, the last release with
  ``PPOTrainer``, under ``trl.experimental.ppo``; install command in that file), run as a subprocess; it times
  TRL's phases by wrapping its module functions (see its docstring). TRL's ``PPOTrainer`` needs a value model
  separate from the policy, so its update runs two backbones where ours runs one: the JSON says so
  (``value_model``).

Same settings on both sides: batch of ``batch`` prompts of ``prompt_len`` random tokens, ``response_len`` sampled
tokens (temperature 1, no EOS: every response is full length), ``epochs`` x ``minibatches`` PPO steps per
iteration, k1 KL penalty 0.05, gamma 1, lambda 0.95, clip 0.2, vf_coef 0.1, lr 3e-6. Throughputs count response
tokens: rollout and end-to-end ``batch * response_len`` per iteration, update ``epochs * batch * response_len``.
TRL's figures are the faster of 1 and 2 torch threads; ours uses XLA's default thread pool (both cores).

How it is timed. TRL runs in its own process, so calls cannot be interleaved round by round: ours is timed
first, then TRL, with the os load average recorded before and after each (``load_avg``). Ours: AOT compile time
apart, then the median of ``repeats`` steady calls (harness ``time_jitted``). TRL: the median over iterations
after a warm-up iteration. Full runs add ``single_core``: ours and TRL (1 torch thread) re-run in subprocesses
pinned to the same one CPU (ours then runs one XLA thread), a per-core ratio that moves less with the machine's
load. TRL's per-iteration ``housekeeping_s`` (the trainer's own ``gc.collect()`` and
``empty_cache()`` calls) is inside its end-to-end time and reported, with the end-to-end rate without it, so the
ratio can be read both ways.

``python -m benchmarks.lm_ppo [--quick]`` writes ``benchmarks/results/lm_ppo.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.harness import cli_main, time_jitted
from jaxsafety.config import check, check_range
from jaxsafety.models import GPT2, GPT2Config, to_hf
from jaxsafety.models.heads import ScoreModel

__all__ = [
    "TRL_PYTHON",
    "TRL_SCRIPT",
    "BenchConfig",
    "bench_config",
    "export_weights",
    "make_models",
    "ours",
    "reward_scorer",
    "run",
    "single_core",
    "trl",
]

REPO = Path(__file__).resolve().parent.parent
TRL_PYTHON = REPO / ".venv-trl" / "bin" / "python"
TRL_SCRIPT = Path(__file__).resolve().parent / "lm_ppo_trl.py"
TRL_INSTALL = (
    "python3.11 -m venv .venv-trl && .venv-trl/bin/pip install trl==1.12.0 torch==2.13.0 transformers==5.25.0"
)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Model and PPO sizes of one benchmark row (validated: positive integers, ``minibatches`` divides ``batch``,
    ``prompt_len + response_len <= model.max_seq_len``)."""

    model: GPT2Config
    batch: int
    prompt_len: int
    response_len: int
    epochs: int
    minibatches: int
    iters: int  # timed iterations (TRL) / steady calls (ours)

    def __post_init__(self) -> None:
        for f in ("batch", "prompt_len", "response_len", "epochs", "minibatches", "iters"):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check(
            self.batch % self.minibatches == 0,
            "minibatches",
            self.minibatches,
            f"divisors of batch ({self.batch})",
        )
        check(
            self.prompt_len + self.response_len <= self.model.max_seq_len,
            "response_len",
            self.response_len,
            f"integers <= model.max_seq_len - prompt_len ({self.model.max_seq_len - self.prompt_len})",
        )

    def settings(self) -> dict[str, Any]:
        """The JSON record of this row."""
        d = dataclasses.asdict(self)
        d["model"] = {k: v for k, v in dataclasses.asdict(self.model).items() if k in _MODEL_KEYS}
        return d


_MODEL_KEYS = ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads")


def bench_config(quick: bool) -> BenchConfig:
    """``quick``: GPT-2 1 layer x 32 wide, vocab 64, batch 8 x (8 + 16) tokens, 2 x 2 PPO steps. Full: 2 layers x
    64 wide, vocab 512, batch 32 x (16 + 48) tokens, 4 epochs x 4 minibatches."""
    if quick:
        model = GPT2Config(vocab_size=64, max_seq_len=32, d_model=32, n_layers=1, n_heads=2)
        return BenchConfig(model, batch=8, prompt_len=8, response_len=16, epochs=2, minibatches=2, iters=2)
    model = GPT2Config(vocab_size=512, max_seq_len=128, d_model=64, n_layers=2, n_heads=4)
    return BenchConfig(model, batch=32, prompt_len=16, response_len=48, epochs=4, minibatches=4, iters=5)


def make_models(cfg: GPT2Config) -> tuple[ScoreModel, ScoreModel]:
    """(policy+value, reward): two ``ScoreModel(GPT2(cfg, Rngs(0)), 1, rngs=Rngs(1), keep_lm_head=True)`` with
    identical weights (the reward model is a separate copy, as TRL's is)."""

    def one() -> ScoreModel:
        return ScoreModel(GPT2(cfg, rngs=nnx.Rngs(0)), 1, rngs=nnx.Rngs(1), keep_lm_head=True)

    return one(), one()


def export_weights(model: ScoreModel, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``model``'s backbone as a HF causal-LM directory and the whole ScoreModel as a HF
    sequence-classification directory under ``directory``; returns ``(policy_dir, score_dir)``.

    No BOS/EOS in config.json (GPT-2's default 50256 lies outside a small vocabulary, and the benchmark samples
    fixed-length responses); ``pad_token_id = vocab_size`` (outside the vocabulary, what the TRL side's tokenizer
    pads with)."""
    directory = Path(directory)
    special = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": model.config.vocab_size}
    policy_dir = to_hf(model.backbone, directory / "policy", extra_config=special)
    score_dir = to_hf(model, directory / "score", extra_config=special)
    return policy_dir, score_dir


def _prompts(bc: BenchConfig) -> jax.Array:
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.integers(0, bc.model.vocab_size, (bc.batch, bc.prompt_len)), jnp.int32)


def reward_scorer(reward: ScoreModel) -> tuple[Any, Any]:
    """``(reward_fn, reward_params)`` for :func:`jaxsafety.rl.make_lm_ppo`: ``reward_fn(params, prompt [R, P],
    prompt_mask, response [R, N], response_mask) -> [R]``, the ScoreModel's score of ``[prompt | response]`` at its
    last unmasked token (TRL's ``get_reward`` on the reward model, as ``GPT2ForSequenceClassification`` pools)."""
    graph, params = nnx.split(reward)

    def reward_fn(params: Any, prompt: jax.Array, pmask: jax.Array, response: jax.Array, rmask: jax.Array):
        model = nnx.merge(graph, params)
        tokens = jnp.concatenate([prompt, response], axis=1)
        mask = jnp.concatenate([pmask.astype(bool), rmask.astype(bool)], axis=1)
        return model(tokens, mask)[:, 0]

    return reward_fn, params


def ours(bc: BenchConfig, policy: ScoreModel, reward: ScoreModel) -> dict[str, Any]:
    """Time our LM PPO on ``bc``: generation, rollout, update (advantages + PPO epochs) and one whole step."""
    from jaxsafety.models.generate import generate
    from jaxsafety.rl.lm_ppo import LMPPOConfig, make_lm_ppo

    cfg = LMPPOConfig(
        max_new_tokens=bc.response_len,
        temperature=1.0,
        eos_token_id=None,
        pad_token_id=0,
        kl_coef=0.05,
        kl_penalty="k1",
        gamma=1.0,
        gae_lambda=0.95,
        clip_eps=0.2,
        vf_coef=0.1,
        ent_coef=0.0,
        lr=3e-6,
        update_epochs=bc.epochs,
        num_minibatches=bc.minibatches,
    )
    reward_fn, reward_params = reward_scorer(reward)
    algo = make_lm_ppo(policy, reward_fn, cfg)
    state = algo.init(policy)
    prompts = _prompts(bc)
    pmask = jnp.ones(prompts.shape, jnp.int32)
    key = jax.random.key(0)
    graphdef = algo.graphdef
    gen = jax.jit(lambda params, p, m, k: generate(nnx.merge(graphdef, params), p, m, k, cfg.sampling).tokens)

    def update(state: Any, ro: Any, key: jax.Array) -> Any:
        b, _ = algo.advantages(state, ro)
        return algo.update(state, b, key)

    update_j = jax.jit(update)
    reps = bc.iters
    t_gen = time_jitted(gen, state.params, prompts, pmask, key, repeats=reps)
    t_roll = time_jitted(algo.rollout, state, prompts, pmask, key, reward_params, repeats=reps)
    ro = algo.rollout(
        state, prompts, pmask, key, reward_params
    )  # the update's input (after the timed compile)
    t_upd = time_jitted(update_j, state, ro, key, repeats=reps)
    t_step = time_jitted(algo.step, state, prompts, pmask, key, reward_params, repeats=reps)
    tokens = bc.batch * bc.response_len
    return {
        "generate_s": t_gen.median_s,
        "rollout_s": t_roll.median_s,
        "update_s": t_upd.median_s,
        "iteration_s": t_step.median_s,
        "generate_tok_s": tokens / t_gen.median_s,
        "rollout_tok_s": tokens / t_roll.median_s,
        "update_tok_s": bc.epochs * tokens / t_upd.median_s,
        "end_to_end_tok_s": tokens / t_step.median_s,
        "compile_s": {
            "generate": t_gen.compile_s,
            "rollout": t_roll.compile_s,
            "update": t_upd.compile_s,
            "step": t_step.compile_s,
        },
        "timings": {
            "generate": t_gen.to_dict(),
            "rollout": t_roll.to_dict(),
            "update": t_upd.to_dict(),
            "step": t_step.to_dict(),
        },
    }


def trl(
    bc: BenchConfig, policy_dir: Path, score_dir: Path, threads: str = "1,2", cpu: int | None = None
) -> dict[str, Any]:
    """Run ``lm_ppo_trl.py`` in ``.venv-trl`` on the exported weights (pinned to ``cpu`` if given); its JSON
    (raises if the venv is missing)."""
    if not TRL_PYTHON.exists():
        raise RuntimeError(f"TRL peer venv {TRL_PYTHON} is missing: create it with `{TRL_INSTALL}`")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "trl.json"
        cmd = [
            str(TRL_PYTHON),
            str(TRL_SCRIPT),
            f"--policy={policy_dir}",
            f"--score={score_dir}",
            f"--batch={bc.batch}",
            f"--prompt-len={bc.prompt_len}",
            f"--response-len={bc.response_len}",
            f"--epochs={bc.epochs}",
            f"--minibatches={bc.minibatches}",
            f"--iters={bc.iters}",
            "--warmup=1",
            f"--threads={threads}",
            f"--out={out}",
        ] + ([f"--cpu={cpu}"] if cpu is not None else [])
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"TRL peer failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


def _ratios(ours_res: dict[str, Any], peer: dict[str, Any], tokens: int) -> dict[str, float]:
    keys = ("generate_tok_s", "rollout_tok_s", "update_tok_s", "end_to_end_tok_s")
    ratios = {k: ours_res[k] / peer[k] for k in keys}
    ratios["end_to_end_vs_trl_without_housekeeping"] = ours_res["end_to_end_tok_s"] / (
        tokens / (peer["iteration_s"] - peer["housekeeping_s"])
    )
    return ratios


def single_core(quick: bool, policy_dir: Path, score_dir: Path) -> dict[str, Any] | None:
    """Ours and TRL (1 torch thread) each re-run in a subprocess pinned to the same one CPU.

    Pinned before jax is imported, XLA runs one thread; the ratio is then per-core efficiency and moves less with
    the load other processes put on the machine than the all-core one. None when this process has one CPU."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return None
    cpu = cpus[-1]
    bc = bench_config(quick)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ours.json"
        # the child pins itself before importing jax (no preexec_fn: forking a threaded process)
        code = (
            f"import os; os.sched_setaffinity(0, {{{cpu}}}); import json, sys; "
            f"from benchmarks import lm_ppo as m; bc = m.bench_config({quick}); "
            f"json.dump(m.ours(bc, *m.make_models(bc.model)), open(sys.argv[1], 'w'), default=float)"
        )
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=REPO)
        ours_res = json.loads(out.read_text())
    trl_res = trl(bc, policy_dir, score_dir, threads="1", cpu=cpu)
    ratios = _ratios(ours_res, trl_res["best"], bc.batch * bc.response_len)
    print("[lm_ppo] [1 core] ours/TRL: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    return {"cpu": cpu, "ours": ours_res, "trl": trl_res, "ratios_ours_over_trl": ratios}


def run(quick: bool = False) -> dict[str, Any]:
    """Build the model, export it, time ours then TRL; the JSON payload (settings, both sides, ratios)."""
    bc = bench_config(quick)
    policy, reward = make_models(bc.model)
    load = {"start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        policy_dir, score_dir = export_weights(policy, tmp)
        ours_res = ours(bc, policy, reward)
        load["after_ours"] = os.getloadavg()
        trl_res = trl(bc, policy_dir, score_dir)
        load["after_trl"] = os.getloadavg()
        one_core = None if quick else single_core(quick, policy_dir, score_dir)
        load["after_single_core"] = os.getloadavg()
    peer = trl_res["best"]
    tokens = bc.batch * bc.response_len
    peer_no_hk = tokens / (peer["iteration_s"] - peer["housekeeping_s"])
    ratios = _ratios(ours_res, peer, tokens)
    summary = ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    print(f"[lm_ppo] ours/TRL ({trl_res['trainer']} {trl_res['versions']['trl']}): {summary}")
    return {
        "settings": bc.settings(),
        "peer_trainer": trl_res["trainer"],
        "peer_algorithm": trl_res["algorithm"],
        "peer_versions": trl_res["versions"],
        "value_model": "ours: value head on the policy's backbone (ScoreModel keep_lm_head); "
        "TRL: separate value backbone (PPOTrainer's value_model)",
        "tokens_counted": "response tokens: batch * response_len per iteration (update: times epochs)",
        "ours": ours_res,
        "trl": trl_res,
        "trl_end_to_end_without_housekeeping_tok_s": peer_no_hk,
        "ratios_ours_over_trl": ratios,
        "single_core": one_core,
        "load_avg": load,
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    cli_main("lm_ppo", run)
