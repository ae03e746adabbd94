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
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.config import check, check_choice, check_range, config_to_dict
from jaxsafety.models import GPT2Config, SamplingConfig, ScoreModel, generate
from jaxsafety.rl.lm_ppo import LMPPO, LMPPOConfig, LMPPOState, make_lm_ppo
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
    "evaluate_policies",
    "evaluate_policy",
    "gold_at_kl",
    "mean_over_seeds",
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
    pairs: PreferencePairs | Sequence[PreferencePairs],
    config: RewardModelConfig,
    key: jax.Array,
    num_models: int,
    backbone: Any = None,
) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """Train one round's proxy RM: ``num_models`` members (seeds) in one vmapped jit on ``pairs`` (prompt +
    response sequences, :func:`jaxsafety.rlhf.pair_sequences`). Returns ``(graphdef, params [E, ...],
    metrics)`` with ``metrics['accuracy']`` ``[E]`` the last-quarter training accuracy per member. ``backbone``: a
    pretrained ``CausalLM`` every member starts from (``config.model`` None then).

    Batched over independent runs: ``pairs`` a sequence of ``S`` pair sets of one size and ``key`` ``[S]`` train
    ``S`` ensembles in the same jit: params ``[S, E, ...]``, accuracy ``[S, E]``."""
    batched = not isinstance(pairs, PreferencePairs)
    sets = list(pairs) if batched else [pairs]
    sizes = {p.num_pairs for p in sets}
    check(len(sizes) == 1, "pairs", f"sets of sizes {sorted(sizes)}", "pair sets of one size (one per run)")
    data = _stack([PreferenceBatch(*pair_sequences(task, p)) for p in sets])
    cfg = dataclasses.replace(config, batch_size=min(config.batch_size, sets[0].num_pairs))
    rms = train_reward_models(cfg, data, key if batched else key[None], num_models, backbone=backbone)
    q = max(1, cfg.num_steps // 4)
    acc = np.asarray(rms.metrics["accuracy"])[..., -q:].mean(-1)
    if batched:
        return rms.graphdef, rms.params, {"accuracy": acc}
    return rms.graphdef, _index(rms.params, 0), {"accuracy": acc[0]}


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def _index(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda x: x[i], tree)


# ------------------------------------------------------------------------------------------------ measurements
@functools.partial(jax.jit, static_argnames=("graphdef", "sampling", "num_samples"))
def _sample_runs(graphdef, params, prompts, prompt_mask, keys, sampling, num_samples):
    """``num_samples`` responses per prompt of ``S`` policies (params leaves ``[S, ...]``) on their own prompts
    ``[S, B, P]``: tokens and mask ``[S, B * num_samples, max_new_tokens]``."""

    def one(p, pr, pm, k):
        gen = generate(nnx.merge(graphdef, p), pr, pm, k, sampling, num_samples=num_samples)
        return gen.tokens, gen.mask

    return jax.vmap(one)(params, prompts, prompt_mask, keys)


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
    ``KL(policy || SFT)`` per response (nats, k3 estimator summed over tokens: >= 0). Floats, or float arrays
    ``[S]`` from :func:`evaluate_policies`."""

    gold: Any
    proxy: Any
    kl: Any


@functools.cache
def _batched(ppo: LMPPO) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(step, evaluate)`` of ``ppo`` over ``S`` independent runs (every argument with a leading ``[S]`` axis but
    the evaluation prompts), each jitted once per ``ppo``."""
    k = ppo.config.num_samples

    def evaluate(params, ref_params, prompts, prompt_mask, key, reward_params):
        def one(p, ref, kk, rp):
            state = LMPPOState(p, None, ref, jnp.float32(0.0), jnp.int32(0))
            ro = ppo.rollout(state, prompts, prompt_mask, kk, rp)
            pr, pm = jnp.repeat(prompts, k, axis=0), jnp.repeat(prompt_mask, k, axis=0)
            gold = gold_reward_fn(None, pr, pm, ro.response, ro.mask)
            return jnp.mean(gold), jnp.mean(ro.score), jnp.mean(ro.kl_k3.sum(-1))

        return jax.vmap(one)(params, ref_params, key, reward_params)

    return jax.jit(jax.vmap(ppo.step)), jax.jit(evaluate)


def evaluate_policies(
    ppo: LMPPO,
    params: Any,
    sft_params: Any,
    prompts: jax.Array,
    prompt_mask: jax.Array,
    keys: jax.Array,
    reward_params: Any,
) -> PolicyEval:
    """Gold, proxy and ``KL(policy || SFT)`` of ``S`` policies at once (``params``, ``sft_params`` and
    ``reward_params`` leaves ``[S, ...]``, ``keys`` ``[S]``; one vmapped :meth:`LMPPO.rollout` each on the same
    held-out prompts, the SFT params as its reference: the KL of the curves is against SFT whatever the
    round's KL reference is). Fields: numpy ``[S]``."""
    gold, proxy, kl = _batched(ppo)[1](params, sft_params, prompts, prompt_mask, keys, reward_params)
    return PolicyEval(np.asarray(gold), np.asarray(proxy), np.asarray(kl))


def evaluate_policy(
    ppo: LMPPO,
    params: Any,
    sft_params: Any,
    prompts: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    reward_params: Any,
) -> PolicyEval:
    """:func:`evaluate_policies` for one policy (unbatched arguments): float fields."""
    one = jax.tree.map(lambda x: x[None], (params, sft_params, key, reward_params))
    e = evaluate_policies(ppo, one[0], one[1], prompts, prompt_mask, one[2], one[3])
    return PolicyEval(float(e.gold[0]), float(e.proxy[0]), float(e.kl[0]))


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


def _fits(bon: dict[str, Any], rl: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {
        "bon_gold": _fit_dict(np.asarray(bon["d"]), np.asarray(bon["gold"]), "bon"),
        "bon_proxy": _fit_dict(np.asarray(bon["d"]), np.asarray(bon["proxy"]), "bon"),
        "rl_gold": _fit_dict(np.asarray(rl["d"]), np.asarray(rl["gold"]), "rl"),
        "rl_proxy": _fit_dict(np.asarray(rl["d"]), np.asarray(rl["proxy"]), "rl"),
    }


def _rl_scalars(gold: float, proxy: float, kl: float) -> dict[str, float]:
    gold, proxy, kl = float(gold), float(proxy), float(kl)
    return {"gold": gold, "proxy": proxy, "kl": kl, "d": kl**0.5, "gap": proxy - gold}


def mean_over_seeds(runs: Sequence[dict[str, Any]], kl_match: float) -> dict[str, Any]:
    """One cell's runs (each ``{"sft_gold", "iterations"}`` as :func:`run_iterated_rlhf` writes per seed, all
    with the same rounds, PPO evaluation steps and best-of-n grid) averaged: per round the mean ``rl`` and
    ``bon`` curves (gold, proxy and KL averaged at each step / ``n``, ``d = sqrt(mean KL)``), the mean ``final``
    and its standard deviation over runs (``final_sd``, ddof 1; 0 for one run), ``gold_at_kl`` the mean of the
    runs' values (NaN ones left out; ``gold_at_kl_runs`` counts the rest), Gao et al.'s fits on the mean curves,
    ``rm_accuracy`` every member of every run, ``label_accuracy`` the mean, ``num_pairs``."""
    check(len(runs) >= 1, "runs", len(runs), "at least one run")
    num_rounds = {len(r["iterations"]) for r in runs}
    check(len(num_rounds) == 1, "runs", f"rounds {sorted(num_rounds)}", "runs with the same number of rounds")
    out = []
    for its in zip(*(r["iterations"] for r in runs), strict=True):
        it0 = its[0]
        for it in its[1:]:
            check(
                it["rl"]["step"] == it0["rl"]["step"] and it["bon"]["n"] == it0["bon"]["n"],
                "runs",
                "curves on other PPO steps or best-of-n grids",
                "runs of one config (the same eval_every, ppo_steps and bon_ns)",
            )
        rl = {"step": list(it0["rl"]["step"])}
        for name in ("gold", "proxy", "kl"):
            rl[name] = np.mean([it["rl"][name] for it in its], axis=0).tolist()
        rl["d"] = np.sqrt(np.maximum(rl["kl"], 0.0)).tolist()
        bon = {name: list(it0["bon"][name]) for name in ("n", "kl", "d")}
        for name in ("gold", "proxy", "gold_ref", "proxy_ref"):
            bon[name] = np.mean([it["bon"][name] for it in its], axis=0).tolist()
        finals = {name: np.asarray([it["final"][name] for it in its]) for name in it0["final"]}
        sd = {k: float(v.std(ddof=1)) if v.size > 1 else 0.0 for k, v in finals.items()}
        at_kl = np.asarray([it["gold_at_kl"] for it in its], np.float64)
        ok = ~np.isnan(at_kl)
        out.append(
            {
                "iteration": it0["iteration"],
                "num_pairs": it0["num_pairs"],
                "label_accuracy": float(np.mean([it["label_accuracy"] for it in its])),
                "rm_accuracy": [a for it in its for a in it["rm_accuracy"]],
                "bon": bon,
                "rl": rl,
                "final": {k: float(v.mean()) for k, v in finals.items()},
                "final_sd": sd,
                "gold_at_kl": float(at_kl[ok].mean()) if ok.any() else float("nan"),
                "gold_at_kl_runs": int(ok.sum()),
                "fits": _fits(bon, rl),
            }
        )
    return {"sft_gold": float(np.mean([r["sft_gold"] for r in runs])), "iterations": out}


def run_iterated_rlhf(
    study: StudyConfig,
    cell: IteratedRLHFConfig,
    *,
    log: Callable[[str, dict[str, float], int], None] = lambda prefix, values, step: None,
    on_step: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """One cell of the grid: ``cell.num_iterations`` rounds of (collect pairs from the current policy with the
    noisy gold labeller -> transfer -> train the round's ``cell.rm_members``-member RM -> best-of-n curve from
    SFT -> PPO from the round's init against the combined proxy, evaluated every ``eval_every`` steps), for the
    ``cell.num_seeds`` runs ``cell.seeds`` at once: their pair sampling, RM training (seeds x members in one
    jit), PPO steps and evaluations are vmapped over runs (run ``s`` uses only ``jax.random.key(seeds[s])``).

    ``log(prefix, scalars, step)`` receives the mean over runs as ``iter<k>/rl/{gold,proxy,kl,d,gap}`` per
    evaluation and ``iter<k>/bon/...`` per ``n``, and with several runs each run's under ``seed<s>/``;
    ``on_step()`` is called after every (batched) PPO step (a progress bar). Returns a JSON-ready dict: the mean
    over runs (:func:`mean_over_seeds`: ``sft_gold`` and ``iterations``, per round: ``bon`` and ``rl`` curves,
    ``final`` gold / proxy / gap / kl and ``final_sd``, ``gold_at_kl``, ``fits`` with R^2, ``rm_accuracy``,
    ``label_accuracy``, ``num_pairs``), ``seeds`` and ``per_seed`` (each run's own ``sft_gold`` and
    ``iterations``, with its own fits)."""
    n_train = study.task.num_prompts - study.eval_prompts
    check(
        cell.prompts_per_round <= n_train,
        "prompts_per_round",
        cell.prompts_per_round,
        f"integers <= the training prompts ({n_train} = task.num_prompts - eval_prompts)",
    )
    seeds = cell.seeds
    num_runs = len(seeds)
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

    # per run: the value head's init key, one evaluation key (common random numbers across evaluations), the rest
    keys = []
    sft_models = []
    for sd in seeds:
        k_model, key = jax.random.split(jax.random.key(sd))
        k_ev, key = jax.random.split(key)
        keys.append((key, k_ev))
        sft_models.append(ScoreModel(lm, 1, rngs=nnx.Rngs(k_model), keep_lm_head=True))
    graphdef = nnx.split(sft_models[0])[0]
    sft = _stack([nnx.split(m)[1] for m in sft_models])  # the SFT policy, one value head per run
    k_ev = jnp.stack([k for _, k in keys])
    buffer = ppo = reward_fn = None
    mode = cell.reward_fn
    gold_sft = np.full(num_runs, np.nan)
    rounds: list[list[PreferencePairs]] = [[] for _ in seeds]
    prev_init = prev_policy = sft
    per_seed: list[list[dict[str, Any]]] = [[] for _ in seeds]
    for it in range(cell.num_iterations):
        ks = [jax.random.split(jax.random.fold_in(key, it), 7) for key, _ in keys]
        k_pick, k_pref, k_lab, k_mix, k_rm, k_bon, k_ppo = (jnp.stack(k) for k in zip(*ks, strict=True))
        # 1. pairs from each run's current policy, gold labels with BT noise
        idx = np.stack(
            [
                np.asarray(jax.random.choice(k, n_train, (cell.prompts_per_round,), replace=False))
                for k in k_pick
            ]
        )
        tokens, masks = _sample_runs(graphdef, prev_policy, prompts[idx], pmask[idx], k_pref, sampling, 2)
        datas, label_acc = [], []
        for s in range(num_runs):
            pr, pm = jnp.repeat(prompts[idx[s]], 2, 0), jnp.repeat(pmask[idx[s]], 2, 0)
            gold = gold_reward_fn(None, pr, pm, tokens[s], masks[s])
            pairs = collect_preferences(
                k_lab[s],
                tokens[s],
                masks[s],
                gold,
                idx[s],
                temperature=cell.label_temperature,
                round_index=it,
            )
            rounds[s].append(pairs)
            label_acc.append(float(np.mean(pairs.gold_chosen >= pairs.gold_rejected)))
            datas.append(
                transfer_preferences(
                    rounds[s],
                    cell.transfer,
                    k_mix[s],
                    mix_size=cell.effective_mix_size,
                    repeat_prompts=cell.repeat_prompts,
                )
            )
        # 2. the round's RMs: runs x rm_members in one vmapped jit
        rm_graphdef, members, rm_metrics = train_round_rm(
            task, datas, rm_cfg, k_rm, cell.rm_members, rm_backbone
        )
        if buffer is None:
            buffer = jax.vmap(lambda m: RMBuffer.empty(m, cell.num_iterations))(members)
            reward_fn = proxy_reward_fn(rm_graphdef, mode)
            ppo = make_lm_ppo(sft_models[0], reward_fn, ppo_cfg)
        buffer = jax.vmap(lambda b, m, it=it: b.insert(it, m))(buffer, members)
        reward_params = (buffer.params, buffer.valid)
        vstep, _ = _batched(ppo)
        prefix = f"iter{it}/"
        # 3a. best-of-n from SFT, per run
        bons = [
            best_of_n_curve(
                sft_models[0],
                reward_fn,
                _index(reward_params, s),
                bon_p,
                bon_m,
                k_bon[s],
                sampling,
                study.bon_ns,
            )
            for s in range(num_runs)
        ]
        for i, n in enumerate(bons[0]["n"]):
            values = {name: float(np.mean([b[name][i] for b in bons])) for name in ("gold", "proxy")}
            log(prefix + "bon/", {**values, "d": float(bons[0]["d"][i])}, int(n))
        # the SFT policy's gold (the zero of every curve) and proxy under this round's reward function, on the
        # evaluation samples (the same key as every evaluation: a policy equal to SFT scores exactly 0)
        ref_eval = evaluate_policies(ppo, sft, sft, ev_p, ev_m, k_ev, reward_params)
        if it == 0:
            gold_sft = ref_eval.gold
        proxy_ref = ref_eval.proxy
        # 3b. PPO from the round's init, KL to the round's reference
        init, ref = policy_init(cell.policy_init, sft, prev_init, prev_policy, cell.liti_eta)
        state = _stack(
            [
                ppo.init(nnx.merge(graphdef, _index(init, s)), ref_params=_index(ref, s))
                for s in range(num_runs)
            ]
        )
        curves = [{"step": [], "gold": [], "proxy": [], "kl": []} for _ in seeds]
        for step in range(study.ppo_steps + 1):
            if step > 0:
                k_s = jax.vmap(lambda k, step=step: jax.random.split(jax.random.fold_in(k, step)))(k_ppo)
                pick = np.stack(
                    [
                        np.asarray(jax.random.choice(k, n_train, (study.ppo_batch,), replace=False))
                        for k in k_s[:, 0]
                    ]
                )
                state, _ = vstep(state, prompts[pick], pmask[pick], k_s[:, 1], reward_params)
                on_step()
            if step % study.eval_every and step != study.ppo_steps:
                continue
            e = evaluate_policies(ppo, state.params, sft, ev_p, ev_m, k_ev, reward_params)
            g, p, kl = e.gold - gold_sft, e.proxy - proxy_ref, np.maximum(e.kl, 0.0)
            for s in range(num_runs):
                for name, v in (("step", step), ("gold", g[s]), ("proxy", p[s]), ("kl", kl[s])):
                    curves[s][name].append(float(v))
                if num_runs > 1:
                    log(f"seed{seeds[s]}/" + prefix + "rl/", _rl_scalars(g[s], p[s], kl[s]), step)
            log(prefix + "rl/", _rl_scalars(g.mean(), p.mean(), kl.mean()), step)
        prev_init, prev_policy = init, state.params
        for s in range(num_runs):
            rl = {name: np.asarray(v) for name, v in curves[s].items()}
            rl["d"] = np.sqrt(rl["kl"])
            final = {"gold": rl["gold"][-1], "proxy": rl["proxy"][-1], "kl": rl["kl"][-1]}
            final["gap"] = final["proxy"] - final["gold"]
            per_seed[s].append(
                {
                    "iteration": it,
                    "num_pairs": datas[s].num_pairs,
                    "label_accuracy": label_acc[s],
                    "rm_accuracy": rm_metrics["accuracy"][s].tolist(),
                    "bon": {name: np.asarray(v).tolist() for name, v in bons[s].items()},
                    "rl": {name: v.tolist() for name, v in rl.items()},
                    "final": {name: float(v) for name, v in final.items()},
                    "gold_at_kl": gold_at_kl(rl["kl"], rl["gold"], study.kl_match),
                    "fits": _fits(bons[s], rl),
                }
            )
    runs = [{"sft_gold": float(gold_sft[s]), "iterations": per_seed[s]} for s in range(num_runs)]
    return {**mean_over_seeds(runs, study.kl_match), "seeds": list(seeds), "per_seed": runs}
