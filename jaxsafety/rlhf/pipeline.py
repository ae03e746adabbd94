"""The iterated-RLHF pipeline of the gold/proxy study, end to end (Gao et al. 2022; Wolf, Kirk, Musolesi 2025).

Pieces, each usable alone (the experiment ``experiments/iterated_rlhf.py`` strings them together with
:func:`run_iterated_rlhf`):

- :func:`sft_policy`: the policy: an arithmetic-trained GPT-2 (:func:`jaxsafety.train.arithmetic_lm`, cached)
  fine-tuned on the task's instruction/response rows through :func:`jaxsafety.train.finetune`, cached through
  :func:`jaxsafety.train.trained_model` (kind ``"rlhf_sft"``). It is the KL reference and the initial policy.
- proxy reward models: one ROUND's RM is an ensemble of ``E`` members (seeds) trained in one vmapped jit
  (:func:`jaxsafety.rl.reward.train_reward_models`) and scored as the mean of its members; the rounds' RMs live
  in a fixed-size buffer ``[K, E, ...]`` (:class:`RMBuffer`) whose valid prefix the reward function combines
  (:func:`jaxsafety.rlhf.combined_reward`), so every round reuses the compiled PPO step.
- :func:`proxy_reward_fn`: the ``reward_fn`` of :func:`jaxsafety.rl.lm_ppo.make_lm_ppo` (hashable).
- :func:`best_of_n_curve`: gold and proxy of best-of-n from the SFT policy for ``n`` on a grid, with the unbiased
  estimator over all ``n``-subsets of ``n_max`` samples, against ``d = sqrt(KL_bon(n))``.
- :func:`evaluate_policy`: gold, proxy and ``KL(policy || SFT)`` (sum of the per-token k3 estimator, >= 0) of a
  policy's samples on held-out prompts.
- :func:`gold_at_kl`: gold reward interpolated at a common KL (compare options at matched KL).

Gold is normalised so the SFT policy scores 0 (:func:`jaxsafety.rlhf.normalize_gold`); the proxy likewise (its
mean on the SFT policy's samples, under the round's reward function, is subtracted), so ``gap = proxy - gold``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.config import check, check_choice, check_range, config_to_dict
from jaxsafety.models import GPT2Config, SamplingConfig, ScoreModel, generate
from jaxsafety.rl.lm_ppo import LMPPO, LMPPOConfig, make_lm_ppo
from jaxsafety.rl.reward import PreferenceBatch, RewardModelConfig, train_reward_models
from jaxsafety.rlhf.fits import best_of_n_expectation, fit_overoptimization, kl_best_of_n, normalize_gold
from jaxsafety.rlhf.iterate import IteratedRLHFConfig, combined_reward, policy_init, transfer_preferences
from jaxsafety.rlhf.task import (
    EOS,
    PAD,
    PreferencePairs,
    RLHFTask,
    RLHFTaskConfig,
    collect_preferences,
    gold_reward_fn,
    pair_sequences,
    rlhf_task,
    sft_data,
)
from jaxsafety.train import FinetuneConfig, OptimizerConfig, finetune
from jaxsafety.train.pretrained import ArithmeticLMConfig, arithmetic_lm, trained_model

__all__ = [
    "PolicyEval",
    "RMBuffer",
    "StudyConfig",
    "best_of_n_curve",
    "evaluate_policy",
    "gold_at_kl",
    "proxy_reward_fn",
    "round_score",
    "run_iterated_rlhf",
    "sft_policy",
    "train_round_rm",
]


# ------------------------------------------------------------------------------------------------- the policy
def sft_policy(
    lm: ArithmeticLMConfig, lm_seed: int, task: RLHFTaskConfig, sft: FinetuneConfig
) -> tuple[Any, bool]:
    """``(model, from_cache)``: the SFT policy (a zoo ``GPT2`` / ``Llama``): :func:`arithmetic_lm` ``(lm, seed=
    lm_seed)`` fine-tuned with ``sft`` on the instruction/response rows of every prompt of the task
    (:func:`jaxsafety.rlhf.sft_data`), cached by :func:`trained_model` under kind ``"rlhf_sft"`` (keyed by the
    three configs and the seed). Raises ``ConfigError`` when the task's prompt + response do not fit the LM's
    context."""
    t = rlhf_task(task)
    width = t.prompt_tokens.shape[1] + task.response_len
    check(
        width <= lm.seq_len,
        "response_len",
        task.response_len,
        f"lengths with prompt ({t.prompt_tokens.shape[1]}) + response <= the LM's context ({lm.seq_len})",
    )

    def train() -> tuple[Any, dict[str, Any]]:
        base = arithmetic_lm(lm, seed=lm_seed).model
        result = finetune(base, sft_data(t, width=lm.seq_len), sft, progress=False)
        return result.model, {"losses": result.losses.tolist()}

    spec = {
        "lm": config_to_dict(lm),
        "lm_seed": lm_seed,
        "task": config_to_dict(task),
        "sft": config_to_dict(sft),
    }
    out = trained_model("rlhf_sft", spec, train)
    return out.model, out.from_cache


# ------------------------------------------------------------------------------------------ proxy reward models
class RMBuffer(NamedTuple):
    """The proxy RMs of the rounds so far: ``params`` an ``nnx.State`` with leaves ``[K, E, ...]`` (round ``k``'s
    ensemble of ``E`` members at slot ``k``), ``valid`` bool ``[K]`` (a prefix: the rounds trained so far)."""

    params: Any
    valid: jax.Array

    @staticmethod
    def empty(member_params: Any, num_rounds: int) -> RMBuffer:
        """A buffer of ``num_rounds`` slots shaped like one round's stacked ``[E, ...]`` params (zeros)."""
        check_range("num_rounds", num_rounds, ge=1, integer=True)
        params = jax.tree.map(lambda x: jnp.zeros((num_rounds, *x.shape), x.dtype), member_params)
        return RMBuffer(params, jnp.zeros((num_rounds,), bool))

    def insert(self, k: int, member_params: Any) -> RMBuffer:
        """The buffer with round ``k``'s ``[E, ...]`` params at slot ``k`` (marked valid)."""
        params = jax.tree.map(lambda b, x: b.at[k].set(x), self.params, member_params)
        return RMBuffer(params, self.valid.at[k].set(True))


def round_score(graphdef: Any, member_params: Any, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """One round's RM score ``[B]`` of full sequences ``tokens`` / ``mask`` ``[B, T]``: the mean over its ``E``
    members (leaves ``[E, ...]``) of ``ScoreModel(tokens, mask)[:, 0]``."""

    def one(p):
        return nnx.merge(graphdef, p)(tokens, mask)[:, 0]

    return jnp.mean(jax.vmap(one)(member_params), axis=0)


def _proxy_reward(graphdef, mode, reward_params, prompt, prompt_mask, response, response_mask):
    params, valid = reward_params
    tokens = jnp.concatenate([prompt, response], axis=1).astype(jnp.int32)
    mask = jnp.concatenate([prompt_mask, response_mask], axis=1).astype(jnp.int32)
    score_fn = functools.partial(round_score, graphdef)
    return combined_reward(score_fn, params, tokens, mask, mode, valid)


def proxy_reward_fn(graphdef: Any, mode: str) -> Callable[..., jax.Array]:
    """The proxy reward with the ``reward_fn`` signature of :func:`jaxsafety.rl.lm_ppo.make_lm_ppo`:
    ``fn((buffer.params, buffer.valid), prompt, prompt_mask, response, response_mask) -> [R]``, the rounds' RMs
    (each the mean of its members, :func:`round_score`) combined by ``mode`` (:func:`combined_reward`: latest,
    ensemble_mean, worst_case, weight_average). Hashable (a ``functools.partial``)."""
    return functools.partial(_proxy_reward, graphdef, mode)


def train_round_rm(
    task: RLHFTask,
    pairs: PreferencePairs,
    config: RewardModelConfig,
    key: jax.Array,
    num_models: int,
    backbone: Any = None,
) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """Train one round's proxy RM: ``num_models`` members (seeds) in one vmapped jit on ``pairs`` (prompt +
    response sequences, :func:`jaxsafety.rlhf.pair_sequences`). Returns ``(graphdef, params [E, ...],
    metrics)`` with ``metrics['accuracy']`` ``[E]`` the last-quarter training accuracy per member. ``backbone``: a
    pretrained ``CausalLM`` every member starts from (``config.model`` None then)."""
    c, cm, r, rm = pair_sequences(task, pairs)
    cfg = dataclasses.replace(config, batch_size=min(config.batch_size, pairs.num_pairs))
    rms = train_reward_models(cfg, PreferenceBatch(c, cm, r, rm), key, num_models, backbone=backbone)
    q = max(1, cfg.num_steps // 4)
    acc = np.asarray(rms.metrics["accuracy"])[:, -q:].mean(-1)
    return rms.graphdef, rms.params, {"accuracy": acc}


# ------------------------------------------------------------------------------------------------ measurements
@functools.partial(jax.jit, static_argnames=("reward_fn", "sampling", "n_max", "policy_graphdef"))
def _bon_samples(
    policy_graphdef, policy_params, reward_fn, reward_params, prompts, prompt_mask, key, sampling, n_max
):
    policy = nnx.merge(policy_graphdef, policy_params)
    gen = generate(policy, prompts, prompt_mask, key, sampling, num_samples=n_max)
    pr = jnp.repeat(prompts, n_max, axis=0)
    pm = jnp.repeat(prompt_mask, n_max, axis=0)
    proxy = reward_fn(reward_params, pr, pm, gen.tokens, gen.mask).reshape(-1, n_max)
    gold = gold_reward_fn(None, pr, pm, gen.tokens, gen.mask).reshape(-1, n_max)
    return proxy, gold


def best_of_n_curve(
    policy: Any,
    reward_fn: Callable[..., jax.Array],
    reward_params: Any,
    prompts: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    sampling: SamplingConfig,
    ns: tuple[int, ...],
) -> dict[str, np.ndarray]:
    """Best-of-n by the proxy from ``policy`` (a ``CausalLM`` or ``ScoreModel(keep_lm_head=True)``) on prompts
    ``[B, P]``: ``max(ns)`` samples per prompt, and for each ``n`` in ``ns`` the unbiased expectation over all
    ``n``-subsets (:func:`jaxsafety.rlhf.best_of_n_expectation`) of the gold and proxy of the proxy-best sample,
    averaged over prompts, both normalised (:func:`jaxsafety.rlhf.normalize_gold`) by the same samples' means, so
    ``n = 1`` (the policy itself) scores 0 (``gold_ref`` / ``proxy_ref``: those means).
    Returns ``n``, ``kl`` (``KL_bon(n)``), ``d = sqrt(kl)``, ``gold``, ``proxy``: float arrays ``[len(ns)]``."""
    n_max = max(ns)
    graphdef, params = nnx.split(policy)
    proxy, gold = _bon_samples(
        graphdef, params, reward_fn, reward_params, prompts, prompt_mask, key, sampling, n_max
    )
    gold_n, proxy_n = normalize_gold(gold, gold), normalize_gold(proxy, proxy)
    g = [float(jnp.mean(best_of_n_expectation(proxy, gold_n, n))) for n in ns]
    p = [float(jnp.mean(best_of_n_expectation(proxy, proxy_n, n))) for n in ns]
    kl = np.asarray(kl_best_of_n(jnp.asarray(ns)), np.float64)
    return {
        "n": np.asarray(ns),
        "kl": kl,
        "d": np.sqrt(kl),
        "gold": np.asarray(g),
        "proxy": np.asarray(p),
        "gold_ref": float(jnp.mean(gold)),
        "proxy_ref": float(jnp.mean(proxy)),
    }


class PolicyEval(NamedTuple):
    """Means over the samples of :func:`evaluate_policy`: raw ``gold`` and ``proxy`` scores and ``kl`` =
    ``KL(policy || SFT)`` per response (nats, k3 estimator summed over tokens: >= 0)."""

    gold: float
    proxy: float
    kl: float


def evaluate_policy(
    ppo: LMPPO,
    params: Any,
    sft_params: Any,
    prompts: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    reward_params: Any,
) -> PolicyEval:
    """Gold, proxy and ``KL(policy || SFT)`` of the policy ``params`` (the PPO state's ``ScoreModel`` params) on
    held-out prompts, through one :meth:`LMPPO.rollout` with the SFT params as its reference (the KL of the
    curves is against SFT whatever the round's KL reference is)."""
    state = ppo.init(nnx.merge(ppo.graphdef, params), ref_params=sft_params)
    ro = ppo.rollout(state, prompts, prompt_mask, key, reward_params)
    k = ppo.config.num_samples
    pr = jnp.repeat(prompts, k, axis=0)
    pm = jnp.repeat(prompt_mask, k, axis=0)
    gold = gold_reward_fn(None, pr, pm, ro.response, ro.mask)
    return PolicyEval(float(jnp.mean(gold)), float(jnp.mean(ro.score)), float(jnp.mean(ro.kl_k3.sum(-1))))


def gold_at_kl(kl: np.ndarray, gold: np.ndarray, target: float) -> float:
    """Gold at ``KL = target``, linearly interpolated along a curve's points sorted by KL (``kl``, ``gold``
    ``[S]``); NaN when ``target`` lies outside ``[min kl, max kl]``."""
    kl, gold = np.asarray(kl, np.float64), np.asarray(gold, np.float64)
    order = np.argsort(kl, kind="stable")
    kl, gold = kl[order], gold[order]
    if kl.size == 0 or target < kl[0] or target > kl[-1]:
        return float("nan")
    return float(np.interp(target, kl, gold))


# ------------------------------------------------------------------------------------------------- the study
@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What the iterated-RLHF study needs besides one cell's options (:class:`IteratedRLHFConfig`).

    ``lm`` / ``lm_seed`` / ``sft``: the SFT policy (:func:`sft_policy`); ``task``: prompts and gold;
    ``rm_*``: the proxy RMs (:class:`jaxsafety.rl.reward.RewardModelConfig`: GPT-2 backbones of
    ``rm_d_model`` x ``rm_layers`` trained from scratch with ``rm_init="scratch"``, or with ``"sft"`` the SFT
    policy's backbone with a new head, as in Gao et al. and Wolf et al.; the gold is programmatic); ``ppo``: LM PPO (EOS/pad ids and
    ``max_new_tokens`` are set from the task); ``ppo_steps`` per round, ``ppo_batch`` prompts per step,
    ``eval_every`` steps, ``eval_prompts`` held out (the last rows of the task); ``bon_ns`` the best-of-n grid
    and ``bon_prompts``; ``kl_match``: the KL (nats) for "gold at matched KL"."""

    lm: ArithmeticLMConfig = ArithmeticLMConfig(max_operand=30, steps=300)
    lm_seed: int = 0
    task: RLHFTaskConfig = RLHFTaskConfig(num_prompts=2048, max_operand=30, response_len=5)
    sft: FinetuneConfig = FinetuneConfig(steps=50, batch_size=32, chunk_steps=50)
    rm_steps: int = 1500
    rm_batch: int = 32
    rm_optim: OptimizerConfig = OptimizerConfig(lr=3e-4)
    rm_d_model: int = 32
    rm_layers: int = 1
    rm_init: str = "sft"
    ppo: LMPPOConfig = LMPPOConfig(
        lr=1e-4, kl_coef=0.02, num_samples=4, update_epochs=2, estimator="rloo", vf_coef=0.0
    )
    ppo_steps: int = 150
    ppo_batch: int = 32
    eval_every: int = 10
    eval_prompts: int = 128
    bon_ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    bon_prompts: int = 64
    kl_match: float = 1.0

    def __post_init__(self) -> None:
        for f in (
            "ppo_steps",
            "ppo_batch",
            "eval_every",
            "eval_prompts",
            "bon_prompts",
            "rm_d_model",
            "rm_layers",
            "rm_steps",
            "rm_batch",
        ):
            check_range(f, getattr(self, f), ge=1, integer=True)
        check(
            len(self.bon_ns) >= 2 and all(isinstance(n, int) and n >= 1 for n in self.bon_ns),
            "bon_ns",
            self.bon_ns,
            "tuples of >= 2 integers >= 1",
        )
        check_range("kl_match", self.kl_match, gt=0)
        check_choice("rm_init", self.rm_init, ("sft", "scratch"))
        check(
            self.ppo_batch <= self.task.num_prompts - self.eval_prompts,
            "ppo_batch",
            self.ppo_batch,
            "integers <= the training prompts (task.num_prompts - eval_prompts)",
        )
        check(
            self.eval_prompts < self.task.num_prompts,
            "eval_prompts",
            self.eval_prompts,
            f"integers < task.num_prompts ({self.task.num_prompts})",
        )


def _fit_dict(d: np.ndarray, r: np.ndarray, form: str) -> dict[str, float]:
    f = fit_overoptimization(jnp.asarray(d), jnp.asarray(r), form)
    return {"alpha": float(f.alpha), "beta": float(f.beta), "r2": float(f.r2)}


def run_iterated_rlhf(
    study: StudyConfig,
    cell: IteratedRLHFConfig,
    *,
    log: Callable[[str, dict[str, float], int], None] = lambda prefix, values, step: None,
    on_step: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """One cell of the grid: ``cell.num_iterations`` rounds of (collect pairs from the current policy with the
    noisy gold labeller -> transfer -> train the round's ``cell.num_seeds``-member RM -> best-of-n curve from SFT
    -> PPO from the round's init against the combined proxy, evaluated every ``eval_every`` steps).

    ``log(prefix, scalars, step)`` receives ``iter<k>/rl/{gold,proxy,kl,d,gap}`` per evaluation and
    ``iter<k>/bon/...`` per ``n``; ``on_step()`` is called after every PPO step (a progress bar). Returns a JSON-
    ready dict: ``iterations`` (per round: ``bon`` and ``rl`` curves, ``final`` gold / proxy / gap / kl,
    ``gold_at_kl``, ``fits`` with R^2, ``rm_accuracy``, ``label_accuracy``, ``num_pairs``) and ``sft_gold``."""
    n_train = study.task.num_prompts - study.eval_prompts
    check(
        cell.prompts_per_round <= n_train,
        "prompts_per_round",
        cell.prompts_per_round,
        f"integers <= the training prompts ({n_train} = task.num_prompts - eval_prompts)",
    )
    key = jax.random.key(cell.seed)
    task = rlhf_task(study.task)
    lm, _ = sft_policy(study.lm, study.lm_seed, study.task, study.sft)
    vocab, width = lm.config.vocab_size, task.prompt_tokens.shape[1] + study.task.response_len
    rm_cfg = RewardModelConfig(
        num_steps=study.rm_steps,
        batch_size=study.rm_batch,
        optim=study.rm_optim,
        model=None
        if study.rm_init == "sft"
        else GPT2Config(
            vocab_size=vocab, max_seq_len=width, d_model=study.rm_d_model, n_layers=study.rm_layers, n_heads=2
        ),
    )
    rm_backbone = lm if study.rm_init == "sft" else None
    ppo_cfg = dataclasses.replace(
        study.ppo, max_new_tokens=study.task.response_len, eos_token_id=EOS, pad_token_id=PAD
    )
    sampling = ppo_cfg.sampling
    prompts, pmask = jnp.asarray(task.prompt_tokens), jnp.asarray(task.prompt_mask)
    ev_p, ev_m = prompts[n_train:], pmask[n_train:]
    bon_p, bon_m = ev_p[: study.bon_prompts], ev_m[: study.bon_prompts]

    k_model, key = jax.random.split(key)
    sft_model = ScoreModel(lm, 1, rngs=nnx.Rngs(k_model), keep_lm_head=True)
    graphdef, sft_params = nnx.split(sft_model)
    rm_graphdef = buffer = ppo = None
    mode = cell.reward_fn
    k_ev, key = jax.random.split(key)  # one evaluation key for every evaluation: common random numbers
    gold_sft = float("nan")
    rounds: list[PreferencePairs] = []
    prev_init = prev_policy = sft_params
    iterations = []
    for it in range(cell.num_iterations):
        k_it = jax.random.fold_in(key, it)
        k_pick, k_pref, k_lab, k_mix, k_rm, k_bon, k_ppo = jax.random.split(k_it, 7)
        # 1. pairs from the current policy, gold labels with BT noise
        idx = np.asarray(jax.random.choice(k_pick, n_train, (cell.prompts_per_round,), replace=False))
        policy = nnx.merge(graphdef, prev_policy)
        gen = generate(policy, prompts[idx], pmask[idx], k_pref, sampling, num_samples=2)
        pr, pm = jnp.repeat(prompts[idx], 2, 0), jnp.repeat(pmask[idx], 2, 0)
        gold = gold_reward_fn(None, pr, pm, gen.tokens, gen.mask)
        pairs = collect_preferences(
            k_lab, gen.tokens, gen.mask, gold, idx, temperature=cell.label_temperature, round_index=it
        )
        rounds.append(pairs)
        label_acc = float(np.mean(pairs.gold_chosen >= pairs.gold_rejected))
        data = transfer_preferences(
            rounds, cell.transfer, k_mix, mix_size=cell.effective_mix_size, repeat_prompts=cell.repeat_prompts
        )
        # 2. the round's RM: num_seeds members in one vmapped jit
        rm_graphdef, members, rm_metrics = train_round_rm(
            task, data, rm_cfg, k_rm, cell.num_seeds, rm_backbone
        )
        if buffer is None:
            buffer = RMBuffer.empty(members, cell.num_iterations)
            reward_fn = proxy_reward_fn(rm_graphdef, mode)
            ppo = make_lm_ppo(sft_model, reward_fn, ppo_cfg)
        buffer = buffer.insert(it, members)
        reward_params = (buffer.params, buffer.valid)
        # 3a. best-of-n from SFT
        bon = best_of_n_curve(
            sft_model, reward_fn, reward_params, bon_p, bon_m, k_bon, sampling, study.bon_ns
        )
        prefix = f"iter{it}/"
        for i, n in enumerate(bon["n"]):
            log(prefix + "bon/", {"gold": bon["gold"][i], "proxy": bon["proxy"][i], "d": bon["d"][i]}, int(n))
        # the SFT policy's gold (the zero of every curve) and proxy under this round's reward function, on the
        # evaluation samples (the same key as every evaluation: a policy equal to SFT scores exactly 0)
        ref_eval = evaluate_policy(ppo, sft_params, sft_params, ev_p, ev_m, k_ev, reward_params)
        if it == 0:
            gold_sft = ref_eval.gold
        proxy_ref = ref_eval.proxy
        # 3b. PPO from the round's init, KL to the round's reference
        init, ref = policy_init(cell.policy_init, sft_params, prev_init, prev_policy, cell.liti_eta)
        state = ppo.init(nnx.merge(graphdef, init), ref_params=ref)
        curve: dict[str, list[float]] = {"step": [], "gold": [], "proxy": [], "kl": []}

        for s in range(study.ppo_steps + 1):
            if s > 0:
                k_s = jax.random.fold_in(k_ppo, s)
                k_pi, k_step = jax.random.split(k_s)
                pi = jax.random.choice(k_pi, n_train, (study.ppo_batch,), replace=False)
                state, _ = ppo.step(state, prompts[pi], pmask[pi], k_step, reward_params)
                on_step()
            if s % study.eval_every and s != study.ppo_steps:
                continue
            e = evaluate_policy(ppo, state.params, sft_params, ev_p, ev_m, k_ev, reward_params)
            g, p, kl = e.gold - gold_sft, e.proxy - proxy_ref, max(e.kl, 0.0)
            for name, v in (("step", s), ("gold", g), ("proxy", p), ("kl", kl)):
                curve[name].append(float(v))
            log(prefix + "rl/", {"gold": g, "proxy": p, "kl": kl, "d": kl**0.5, "gap": p - g}, s)
        prev_init, prev_policy = init, state.params
        rl = {name: np.asarray(v) for name, v in curve.items()}
        rl["d"] = np.sqrt(rl["kl"])
        fits = {
            "bon_gold": _fit_dict(bon["d"], bon["gold"], "bon"),
            "bon_proxy": _fit_dict(bon["d"], bon["proxy"], "bon"),
            "rl_gold": _fit_dict(rl["d"], rl["gold"], "rl"),
            "rl_proxy": _fit_dict(rl["d"], rl["proxy"], "rl"),
        }
        final = {"gold": rl["gold"][-1], "proxy": rl["proxy"][-1], "kl": rl["kl"][-1]}
        final["gap"] = final["proxy"] - final["gold"]
        iterations.append(
            {
                "iteration": it,
                "num_pairs": data.num_pairs,
                "label_accuracy": label_acc,
                "rm_accuracy": rm_metrics["accuracy"].tolist(),
                "bon": {name: np.asarray(v).tolist() for name, v in bon.items()},
                "rl": {name: v.tolist() for name, v in rl.items()},
                "final": {name: float(v) for name, v in final.items()},
                "gold_at_kl": gold_at_kl(rl["kl"], rl["gold"], study.kl_match),
                "fits": fits,
            }
        )
    return {"sft_gold": gold_sft, "iterations": iterations}
