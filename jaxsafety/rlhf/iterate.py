"""The design options of iterated RLHF (Wolf, Kirk, Musolesi 2025, "Reward Model Overoptimisation in Iterated
RLHF", arXiv 2505.18126) as pure functions, and the experiment's config.

Each iteration ``k = 1 .. K``: sample pairs from the current policy, label them with the gold labeller, train a
proxy RM on the preference data *transferred* to this round, optimise a policy from an *initialisation* against a
*reward function* built from the RMs trained so far. The three questions and their options:

- data transfer (:func:`transfer_preferences`): ``last`` (this round's pairs only), ``concat`` (all rounds'),
  ``sample_mix`` (a fixed-size sample from all rounds, as large as one round's data unless set; with repeated
  prompts allowed, or at most one pair per prompt);
- reward function (:func:`combined_reward`, over STACKED RM params and a generic ``score_fn(params, tokens, mask)
  -> [B]``, e.g. ``functools.partial(jaxsafety.rl.reward.score, graphdef)``): ``latest``, ``ensemble_mean``,
  ``worst_case`` (min over the RMs), ``weight_average`` (score with the mean of the params,
  :func:`jaxsafety.rl.reward.average_params`: WARM, Rame et al. 2024);
- policy init (:func:`policy_init`): ``sft`` (restart), ``continue`` (last policy), ``liti`` (linear interpolation
  towards initialisation: ``init_k = (1 - eta) init_{k-1} + eta policy_{k-1}``). The KL penalty's reference is
  the round's init in every case (``sft``: the SFT policy), so ``continue`` is penalised against the previous
  policy; ``d = sqrt(KL)`` for the over-optimisation curves is measured against the SFT policy, a common axis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxsafety.config import check, check_choice, check_range
from jaxsafety.rl.reward import average_params
from jaxsafety.rlhf.task import PreferencePairs, concat_pairs

__all__ = [
    "INITS",
    "REWARD_FNS",
    "TRANSFERS",
    "IteratedRLHFConfig",
    "combined_reward",
    "policy_init",
    "sample_mix_index",
    "transfer_preferences",
    "tree_interpolate",
]

Transfer = Literal["last", "concat", "sample_mix"]
RewardFn = Literal["latest", "ensemble_mean", "worst_case", "weight_average"]
Init = Literal["sft", "continue", "liti"]
TRANSFERS: tuple[str, ...] = ("last", "concat", "sample_mix")
REWARD_FNS: tuple[str, ...] = ("latest", "ensemble_mean", "worst_case", "weight_average")
INITS: tuple[str, ...] = ("sft", "continue", "liti")

ScoreFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


# ---------------------------------------------------------------------------------------------- data transfer
def sample_mix_index(key: jax.Array, prompt_index: np.ndarray, size: int, repeat_prompts: bool) -> np.ndarray:
    """Rows of a pool of pairs to keep for ``sample_mix``: ``size`` distinct rows, uniformly at random.

    ``prompt_index`` int ``[N]``: the prompt of each pooled pair. ``repeat_prompts=True``: a uniform sample of
    rows without replacement (a prompt asked in several rounds may appear several times). ``False``: at most one
    row per prompt: a uniform sample of ``size`` distinct prompts, each with one of its rows drawn uniformly.
    Returns int64 ``[size]`` row indices, sorted (round order kept). Raises ``ConfigError`` if the pool is too
    small (``size`` > rows, or > distinct prompts without repeats)."""
    prompt_index = np.asarray(prompt_index)
    n = prompt_index.shape[0]
    check_range("mix_size", size, ge=1, integer=True)
    k_rows, k_prompts = jax.random.split(key)
    if repeat_prompts:
        check(size <= n, "mix_size", size, f"integers <= the pooled pairs ({n})")
        return np.sort(np.asarray(jax.random.permutation(k_rows, n))[:size])
    prompts = np.unique(prompt_index)
    check(size <= prompts.size, "mix_size", size, f"integers <= the distinct pooled prompts ({prompts.size})")
    chosen = np.asarray(jax.random.permutation(k_prompts, prompts.size))[:size]
    # one row per chosen prompt: rank the rows by a random key, keep each prompt's first
    order = np.lexsort((np.asarray(jax.random.uniform(k_rows, (n,))), prompt_index))
    first = order[
        np.r_[True, prompt_index[order][1:] != prompt_index[order][:-1]]
    ]  # one row per prompt, sorted
    return np.sort(first[chosen])


def transfer_preferences(
    rounds: Sequence[PreferencePairs],
    mode: Transfer,
    key: jax.Array | None = None,
    *,
    mix_size: int | None = None,
    repeat_prompts: bool = True,
) -> PreferencePairs:
    """The RM training data of the current round from the pairs of every round so far (``rounds[-1]`` the newest).

    ``last``: ``rounds[-1]``; ``concat``: all rounds concatenated; ``sample_mix``: ``mix_size`` pairs (None: the
    size of the newest round) sampled from the concatenation with :func:`sample_mix_index` (needs ``key``)."""
    check_choice("transfer", mode, TRANSFERS)
    check(len(rounds) >= 1, "rounds", len(rounds), "at least one round of pairs")
    if mode == "last":
        return rounds[-1]
    pool = concat_pairs(rounds)
    if mode == "concat":
        return pool
    check(key is not None, "key", key, "a PRNG key (sample_mix draws a random subset)")
    size = rounds[-1].num_pairs if mix_size is None else mix_size
    return pool.take(sample_mix_index(key, pool.prompt_index, size, repeat_prompts))


# --------------------------------------------------------------------------------------------- reward function
def tree_interpolate(a: Any, b: Any, eta: float | jax.Array) -> Any:
    """``(1 - eta) a + eta b`` leafwise over two pytrees of one structure (``eta = 0``: ``a``, ``1``: ``b``)."""
    return jax.tree.map(lambda x, y: ((1 - eta) * x + eta * y).astype(jnp.asarray(x).dtype), a, b)


def combined_reward(
    score_fn: ScoreFn,
    stacked_params: Any,
    tokens: jax.Array,
    mask: jax.Array,
    mode: RewardFn,
    valid: jax.Array | None = None,
) -> jax.Array:
    """The reward ``[B]`` of sequences under the RMs trained so far, combined by ``mode``.

    ``score_fn(params, tokens, mask) -> [B]``: one RM's scores (e.g. a merged ``ScoreModel``'s first label);
    ``stacked_params``: the RMs' params stacked on a leading ``[K]`` axis (round order, newest last);
    ``valid`` bool ``[K]`` (None: all): which slots hold a trained RM, so a fixed-size buffer of ``K_max`` RMs keeps
    shapes static under jit across rounds (the valid slots must be a prefix).

    ``latest``: the newest valid RM; ``ensemble_mean``: mean of the valid RMs' scores (one ``vmap`` over the
    stack); ``worst_case``: their minimum; ``weight_average``: one score with the mean of the valid params."""
    check_choice("reward_fn", mode, REWARD_FNS)
    k = jax.tree.leaves(stacked_params)[0].shape[0]
    valid = jnp.ones((k,), bool) if valid is None else jnp.asarray(valid, bool)
    if mode == "weight_average":
        return score_fn(average_params(stacked_params, valid.astype(jnp.float32)), tokens, mask)
    if mode == "latest":
        last = jnp.sum(valid) - 1
        params = jax.tree.map(lambda x: jnp.take(x, last, axis=0), stacked_params)
        return score_fn(params, tokens, mask)
    scores = jax.vmap(score_fn, in_axes=(0, None, None))(stacked_params, tokens, mask)  # [K, B]
    if mode == "ensemble_mean":
        w = valid.astype(scores.dtype)[:, None]
        return jnp.sum(w * scores, axis=0) / jnp.sum(w)
    return jnp.min(jnp.where(valid[:, None], scores, jnp.inf), axis=0)


# ------------------------------------------------------------------------------------------------- policy init
def policy_init(mode: Init, sft: Any, prev_init: Any, prev_policy: Any, eta: float = 0.5) -> tuple[Any, Any]:
    """``(init, reference)`` params of the next round's policy optimisation (pytrees of one structure).

    ``sft``: ``(sft, sft)``; ``continue``: ``(prev_policy, prev_policy)``; ``liti``:
    ``init = (1 - eta) prev_init + eta prev_policy`` and reference = init (Wolf et al.'s LITI; ``eta = 1`` is
    ``continue``, ``eta = 0`` keeps the previous init). In round 1 pass the SFT params for all three."""
    check_choice("policy_init", mode, INITS)
    if mode == "sft":
        return sft, sft
    if mode == "continue":
        return prev_policy, prev_policy
    check_range("liti_eta", eta, ge=0, le=1)
    init = tree_interpolate(prev_init, prev_policy, eta)
    return init, init


# ------------------------------------------------------------------------------------------------------ config
@dataclasses.dataclass(frozen=True)
class IteratedRLHFConfig:
    """One cell of the iterated-RLHF grid (Wolf et al. 2025 defaults where they apply: 4 rounds, 2 samples per
    prompt, the RM data of one round = ``prompts_per_round`` pairs).

    ``num_iterations``: rounds ``K``; ``prompts_per_round``: preference prompts labelled per round;
    ``label_temperature``: Bradley-Terry label noise of the gold labeller (0 = noiseless); ``transfer`` /
    ``mix_size`` (None: ``prompts_per_round``) / ``repeat_prompts``; ``reward_fn``; ``policy_init`` /
    ``liti_eta``; ``rm_members``: the ensemble size of each round's RM (seeds of its init and data order,
    vmapped); ``num_seeds`` independent runs (seeds ``seed .. seed + num_seeds - 1``: policy sampling, labels,
    RMs and PPO), vmapped together."""

    num_iterations: int = 4
    prompts_per_round: int = 256
    label_temperature: float = 0.1
    transfer: Transfer = "concat"
    mix_size: int | None = None
    repeat_prompts: bool = True
    reward_fn: RewardFn = "latest"
    policy_init: Init = "sft"
    liti_eta: float = 0.5
    rm_members: int = 4
    num_seeds: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("num_iterations", self.num_iterations, ge=1, le=64, integer=True)
        check_range("prompts_per_round", self.prompts_per_round, ge=2, integer=True)
        check_range("label_temperature", self.label_temperature, ge=0)
        check_choice("transfer", self.transfer, TRANSFERS)
        if self.mix_size is not None:
            check_range("mix_size", self.mix_size, ge=1, integer=True)
        check(isinstance(self.repeat_prompts, bool), "repeat_prompts", self.repeat_prompts, "True or False")
        check_choice("reward_fn", self.reward_fn, REWARD_FNS)
        check_choice("policy_init", self.policy_init, INITS)
        check_range("liti_eta", self.liti_eta, ge=0, le=1)
        check_range("rm_members", self.rm_members, ge=1, integer=True)
        check_range("num_seeds", self.num_seeds, ge=1, integer=True)
        check_range("seed", self.seed, ge=0, integer=True)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The runs' seeds: ``seed, ..., seed + num_seeds - 1``."""
        return tuple(range(self.seed, self.seed + self.num_seeds))

    @property
    def effective_mix_size(self) -> int:
        """The ``sample_mix`` size: ``mix_size`` or, when None, one round's pairs."""
        return self.prompts_per_round if self.mix_size is None else self.mix_size
