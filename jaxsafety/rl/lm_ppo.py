"""RLHF for the model zoo: PPO with a per-token KL penalty to a frozen reference (Ziegler et al. 2019, Stiennon et
al. 2020, Ouyang et al. 2022), RLOO (Ahmadian et al. 2024) on the same rollouts, and best-of-n sampling.

Design (TRL's ``PPOTrainer`` / ``RLOOTrainer`` conventions, written for jit):

- Policy and value share ONE backbone: a :class:`~jaxsafety.models.ScoreModel` with ``keep_lm_head=True`` gives
  the LM logits and per-token values (``forward(...).token_scores``) in one forward. The frozen reference is a
  copy of the policy's parameters at :meth:`LMPPO.init` (the SFT model; or any parameters of the same structure,
  e.g. LITI's interpolated init), evaluated through the same graph (its value head is unused).
- Rollout (:meth:`LMPPO.rollout`): LEFT-padded prompts ``[B, P]``, ``num_samples`` continuations per prompt through
  :func:`jaxsafety.models.generate` (KV cache, prompt-major rows ``R = B * num_samples``). Tokens after the first
  EOS are padding with response mask 0 (``generate`` does this). Then one forward of policy and reference over
  ``[prompt | response]``: log-probs at temperature ``T`` (logits / T, as TRL), entropies and values of the
  ``N`` response positions (``[R, N]``).
- Rewards: a scalar score per response from ``reward_fn(reward_params, prompt, prompt_mask, response,
  response_mask) -> [R]`` (any jax-traceable function: a reward-model scorer with its parameters passed as
  ``reward_params``, so new reward models reuse the compiled step, or a programmatic function of the tokens);
  minus ``missing_eos_penalty`` for responses without EOS; optionally clipped to ``[-reward_clip, reward_clip]``.
  The per-token reward is ``-beta * kl_t`` with ``kl_t = logp_policy - logp_ref`` (k1; ``kl_penalty="k3"`` uses
  ``(r - 1) - log r``, ``r = p_ref / p_policy``), plus the score on the last real response token. ``beta`` is
  fixed, or adapted by Ziegler et al.'s proportional controller (:func:`adaptive_kl_update`, TRL's
  ``AdaptiveKLController``) when ``kl_target`` is set. ``whiten_rewards``: TRL's masked whitening of the token
  rewards without shifting their mean.
- Advantages: ``estimator="ppo"``: GAE over tokens (:func:`jaxsafety.rl.gae_advantages` on ``[N, R]``, the episode
  terminating at each row's last real token; padding gets advantage, value and return 0). ``estimator="rloo"``:
  ``k = num_samples >= 2`` samples per prompt, sequence reward ``score - beta * sum_t kl_t``, leave-one-out baseline
  ``A_i = r_i - mean_{j != i} r_j`` (:func:`rloo_advantages`), broadcast to every response token; no value head
  (``vf_coef = 0``; values and returns are 0), PPO-clip on the token level.
- The update is THE PPO update of the project, :func:`jaxsafety.rl.make_ppo_update` with ``mask_key="mask"``
  (masked token means, per-minibatch masked advantage normalisation), on ``apply_fn(params, minibatch) -> (logp,
  entropy, value)`` ``[b, N]``.
- :meth:`LMPPO.step` ``(state, prompts, prompt_mask, key, reward_params) -> (state, metrics)``: rollout, rewards,
  advantages, update, KL controller, in one jitted program. :meth:`LMPPO.sharded_update` runs the update under
  :func:`jaxsafety.train.sharding.jit_sharded` data parallelism (the batch split over devices, parameters
  replicated, gradients all-reduced by XLA).
- :func:`best_of_n`: ``n`` samples per prompt through ``generate(num_samples=n)``, the highest-scoring one kept;
  :func:`best_of_n_kl` is its analytic KL to the sampling policy, ``log n - (n - 1) / n`` (Stiennon et al. 2020;
  exact for continuous rewards without ties, an upper bound on discrete ones: Beirami et al. 2024).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxsafety.config import check, check_choice, check_range
from jaxsafety.models.generate import SamplingConfig, generate
from jaxsafety.models.heads import ScoreModel
from jaxsafety.rl.gae import gae_advantages
from jaxsafety.rl.losses import masked_mean
from jaxsafety.rl.update import PPOHyperparams, make_ppo_update
from jaxsafety.train.sharding import jit_sharded

__all__ = [
    "LMPPO",
    "BestOfN",
    "LMPPOConfig",
    "LMPPOState",
    "LMRollout",
    "RewardFn",
    "adaptive_kl_update",
    "best_of_n",
    "best_of_n_kl",
    "make_lm_ppo",
    "masked_whiten",
    "rloo_advantages",
]

RewardFn = Callable[[Any, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
ESTIMATORS = ("ppo", "rloo")
KL_PENALTIES = ("k1", "k3")


@dataclasses.dataclass(frozen=True)
class LMPPOConfig(PPOHyperparams):
    """LM PPO / RLOO. The loss, GAE and optimiser fields come from :class:`~jaxsafety.rl.update.PPOHyperparams`;
    defaults here follow TRL's PPO (``gamma = 1``, ``lam = 0.95``, ``clip = 0.2``, ``vf_coef = 0.1``, no entropy
    bonus, 4 epochs, ``lr = 1e-5`` for pretrained models: raise it for tiny ones).

    max_new_tokens, temperature  sampling (``generate``; no top-k / top-p: the PPO ratio needs the sampler's
                                 own likelihood, which log-softmax(logits / temperature) is)
    eos_token_id, pad_token_id   end of response (None = never ends early) and the id written after it
    num_samples                  continuations per prompt (>= 2 for RLOO)
    estimator                    "ppo" (GAE with the value head) or "rloo" (leave-one-out baseline, needs
                                 ``vf_coef = 0``)
    kl_coef                      beta, the initial KL coefficient
    kl_target, kl_horizon        adaptive beta (Ziegler et al. 2019) when kl_target is set: the target sequence KL
    kl_penalty                   "k1" (``logp - logp_ref``, TRL's default) or "k3" per-token estimator in the reward
    missing_eos_penalty          subtracted from the score of responses without EOS (None = off)
    reward_clip                  clip scores to ``[-c, c]`` (None = off)
    whiten_rewards               whiten the token rewards (masked, mean kept; TRL's ``whiten_rewards``)
    """

    max_new_tokens: int = 16
    temperature: float = 1.0
    eos_token_id: int | None = None
    pad_token_id: int = 0
    num_samples: int = 1
    estimator: str = "ppo"
    kl_coef: float = 0.05
    kl_target: float | None = None
    kl_horizon: float = 10_000.0
    kl_penalty: str = "k1"
    missing_eos_penalty: float | None = None
    reward_clip: float | None = None
    whiten_rewards: bool = False
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    clip_value: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.1
    lr: float = 1e-5
    max_grad_norm: float = 1.0
    update_epochs: int = 4
    num_minibatches: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("max_new_tokens", self.max_new_tokens, ge=1, integer=True)
        check_range("temperature", self.temperature, gt=0)
        check_range("num_samples", self.num_samples, ge=1, integer=True)
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_choice("kl_penalty", self.kl_penalty, KL_PENALTIES)
        check_range("kl_coef", self.kl_coef, ge=0)
        if self.kl_target is not None:
            check_range("kl_target", self.kl_target, gt=0)
        check_range("kl_horizon", self.kl_horizon, gt=0)
        if self.reward_clip is not None:
            check_range("reward_clip", self.reward_clip, gt=0)
        if self.missing_eos_penalty is not None:
            check(
                self.eos_token_id is not None,
                "missing_eos_penalty",
                self.missing_eos_penalty,
                "None when eos_token_id is None",
            )
        if self.estimator == "rloo":
            check(
                self.num_samples >= 2, "num_samples", self.num_samples, "integers >= 2 with estimator='rloo'"
            )
            check(self.vf_coef == 0, "vf_coef", self.vf_coef, "0 with estimator='rloo' (no value head)")
        # SamplingConfig validates eos / pad ids
        self.sampling  # noqa: B018

    @property
    def sampling(self) -> SamplingConfig:
        """The :class:`~jaxsafety.models.SamplingConfig` of the rollouts."""
        return SamplingConfig(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )


class LMPPOState(NamedTuple):
    """Policy + value parameters (``nnx.State`` of the ScoreModel), their optimiser state, the frozen reference
    parameters (same structure), the KL coefficient ``beta`` (scalar) and the number of steps taken."""

    params: Any
    opt_state: optax.OptState
    ref_params: Any
    kl_coef: jax.Array
    step: jax.Array


class LMRollout(NamedTuple):
    """One batch of rollouts; ``R = B * num_samples`` rows (prompt-major), ``N = max_new_tokens``.

    tokens, attn_mask  ``[R, P + N]`` prompt (left-padded) then response (right-padded) and their mask
    response, mask     ``[R, N]`` response tokens and the response mask (1 up to and including EOS)
    logp, ref_logp     ``[R, N]`` log-probs of the response tokens (at the sampling temperature) under the policy
                       and the reference; 0 at padding
    entropy, value     ``[R, N]`` policy entropy and value of the state before each response token; 0 at padding
    kl_k1, kl_k3       ``[R, N]`` per-token KL estimators of KL(policy || ref): ``logp - ref_logp`` and
                       ``(r - 1) - log r`` with ``r = exp(ref_logp - logp)``; 0 at padding
    score              ``[R]`` the reward function's score (after the EOS penalty and clipping)
    has_eos            ``[R]`` bool: the response ended with EOS
    """

    tokens: jax.Array
    attn_mask: jax.Array
    response: jax.Array
    mask: jax.Array
    logp: jax.Array
    ref_logp: jax.Array
    entropy: jax.Array
    value: jax.Array
    kl_k1: jax.Array
    kl_k3: jax.Array
    score: jax.Array
    has_eos: jax.Array


def masked_whiten(x: jax.Array, mask: jax.Array, *, shift_mean: bool = True, eps: float = 1e-8) -> jax.Array:
    """``(x - mean) / std`` over the entries with ``mask`` != 0 (the mean added back when ``shift_mean`` is False),
    TRL's ``masked_whiten`` (it uses the unbiased variance); masked-out entries come back as 0."""
    m = mask.astype(x.dtype)
    mean = masked_mean(x, m)
    n = m.sum()
    var = masked_mean(jnp.square(x - mean), m) * n / jnp.maximum(n - 1.0, 1.0)
    out = (x - mean) * jax.lax.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return jnp.where(m > 0, out, 0.0)


def adaptive_kl_update(
    kl_coef: jax.Array, kl: jax.Array, n_steps: int, *, target: float, horizon: float
) -> jax.Array:
    """Ziegler et al. (2019) adaptive KL coefficient (TRL's ``AdaptiveKLController``):
    ``e = clip(kl / target - 1, -0.2, 0.2)``, ``beta <- beta * (1 + e * n_steps / horizon)``, where ``kl`` is the
    current mean sequence KL and ``n_steps`` the number of samples it was measured on."""
    err = jnp.clip(kl / target - 1.0, -0.2, 0.2)
    return kl_coef * (1.0 + err * n_steps / horizon)


def rloo_advantages(rewards: jax.Array, k: int) -> jax.Array:
    """Leave-one-out advantages ``A_i = r_i - mean_{j != i} r_j`` within each group of ``k`` consecutive rows
    (prompt-major, as :func:`~jaxsafety.models.generate` with ``num_samples=k`` lays them out). ``rewards [R]``,
    ``R`` divisible by ``k >= 2``; returns ``[R]``."""
    check_range("k", k, ge=2, integer=True)
    r = rewards.reshape(-1, k)
    baseline = (r.sum(1, keepdims=True) - r) / (k - 1)
    return (r - baseline).reshape(rewards.shape)


def best_of_n_kl(n: int | jax.Array) -> jax.Array:
    """Analytic KL(best-of-n || base) = ``log n - (n - 1) / n`` (Stiennon et al. 2020, appendix G.3)."""
    n = jnp.asarray(n, jnp.float32)
    return jnp.log(n) - (n - 1.0) / n


def _response_stats(
    model: ScoreModel, tokens: jax.Array, attn_mask: jax.Array, p: int, temperature: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Log-probs of the ``N`` response tokens (columns ``p ..``), per-token entropies and values ``[R, N]``.
    Position ``p - 1 + j`` predicts response token ``j``: the prompt is left-padded, so its last column is real
    in every row, and the response follows it contiguously."""
    out = model.forward(tokens, attn_mask)
    logits = out.logits[:, p - 1 : -1].astype(jnp.float32) / temperature
    logz = jax.nn.log_softmax(logits, axis=-1)
    resp = tokens[:, p:]
    logp = jnp.take_along_axis(logz, resp[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logz) * logz, axis=-1)
    value = out.token_scores[:, p - 1 : -1, 0]
    return logp, entropy, value


class LMPPO(NamedTuple):
    """The LM PPO / RLOO algorithm built by :func:`make_lm_ppo` (all members pure; ``step`` and ``update`` jitted).

    init(model, ref_params=None, num_updates=None) -> LMPPOState
    rollout(state, prompts, prompt_mask, key, reward_params=None) -> LMRollout
    advantages(state, rollout) -> (batch, token_rewards): the batch of ``make_ppo_update`` (keys tokens,
        attn_mask, mask, logp, value, adv, ret) and the per-token rewards ``[R, N]``
    update(state, batch, key) -> (state, metrics): THE PPO update on a batch (no KL controller)
    step(state, prompts, prompt_mask, key, reward_params=None) -> (state, metrics): one whole iteration
    sharded_update(state, mesh, mode="dp") -> fn((state, key), batch) -> ((state, key), metrics) under jit_sharded
    """

    config: LMPPOConfig
    graphdef: Any
    tx: optax.GradientTransformation
    init: Callable[..., LMPPOState]
    rollout: Callable[..., LMRollout]
    advantages: Callable[..., tuple[dict[str, jax.Array], jax.Array]]
    update: Callable[..., tuple[LMPPOState, dict[str, jax.Array]]]
    step: Callable[..., tuple[LMPPOState, dict[str, jax.Array]]]
    sharded_update: Callable[..., Callable]


def make_lm_ppo(
    model: ScoreModel,
    reward_fn: RewardFn,
    config: LMPPOConfig = LMPPOConfig(),  # frozen: a shared default is safe
    *,
    num_updates: int | None = None,
) -> LMPPO:
    """Build LM PPO / RLOO for ``model`` (a ``ScoreModel(backbone, keep_lm_head=True)``: LM head and value head on
    one backbone) and ``reward_fn(reward_params, prompt [R, P], prompt_mask [R, P], response [R, N],
    response_mask [R, N]) -> scores [R]`` (jax-traceable). ``num_updates``: run length, needed with ``anneal_lr``.
    Only ``model``'s graph is kept; its parameters enter through :meth:`LMPPO.init`."""
    check(
        isinstance(model, ScoreModel) and model.keep_lm_head,
        "model",
        type(model).__name__,
        "a ScoreModel(backbone, keep_lm_head=True) (policy logits and per-token values from one backbone)",
    )
    check(isinstance(config, LMPPOConfig), "config", type(config).__name__, "an LMPPOConfig")
    check(
        callable(reward_fn),
        "reward_fn",
        reward_fn,
        "a callable (reward_params, prompt, prompt_mask, response, response_mask) -> scores [R]",
    )
    cfg = config
    graphdef, _ = nnx.split(model)
    tx = cfg.optimizer(num_updates)
    sampling = cfg.sampling
    k = cfg.num_samples
    rloo = cfg.estimator == "rloo"

    def init(model: ScoreModel, ref_params: Any = None) -> LMPPOState:
        _, params = nnx.split(model)
        ref = params if ref_params is None else ref_params  # jax arrays are immutable: sharing is a copy
        check(
            jax.tree.structure(ref) == jax.tree.structure(params),
            "ref_params",
            "a state of another structure",
            "None or the nnx.State of a model with the policy's graph",
        )
        return LMPPOState(params, tx.init(params), ref, jnp.float32(cfg.kl_coef), jnp.int32(0))

    def rollout(
        state: LMPPOState,
        prompts: jax.Array,
        prompt_mask: jax.Array,
        key: jax.Array,
        reward_params: Any = None,
    ) -> LMRollout:
        policy = nnx.merge(graphdef, state.params)
        p = prompts.shape[1]
        gen = generate(policy, prompts, prompt_mask, key, sampling, num_samples=k)
        prompts_r = jnp.repeat(prompts, k, axis=0)
        pmask_r = jnp.repeat(prompt_mask.astype(jnp.int32), k, axis=0)
        tokens = jnp.concatenate([prompts_r, gen.tokens], axis=1)
        attn = jnp.concatenate([pmask_r, gen.mask], axis=1)
        mask = gen.mask.astype(jnp.float32)
        logp, entropy, value = _response_stats(policy, tokens, attn, p, cfg.temperature)
        ref_logp, _, _ = _response_stats(
            nnx.merge(graphdef, state.ref_params), tokens, attn, p, cfg.temperature
        )
        logp, ref_logp = jax.lax.stop_gradient((logp * mask, ref_logp * mask))
        log_r = ref_logp - logp
        kl_k1 = -log_r
        kl_k3 = (jnp.expm1(log_r) - log_r) * mask
        score = reward_fn(reward_params, prompts_r, pmask_r, gen.tokens, gen.mask).astype(jnp.float32)
        check(
            score.shape == (tokens.shape[0],),
            "reward_fn",
            f"scores of shape {score.shape}",
            f"a function returning scores of shape [R] = ({tokens.shape[0]},)",
        )
        eos = jnp.asarray(sampling.eos_ids, jnp.int32)
        last = jnp.maximum(gen.lengths - 1, 0)
        last_tok = jnp.take_along_axis(gen.tokens, last[:, None], axis=1)[:, 0]
        has_eos = jnp.isin(last_tok, eos) & (gen.lengths > 0) if eos.size else jnp.zeros(score.shape, bool)
        if cfg.missing_eos_penalty is not None:
            score = score - cfg.missing_eos_penalty * (~has_eos)
        if cfg.reward_clip is not None:
            score = jnp.clip(score, -cfg.reward_clip, cfg.reward_clip)
        return LMRollout(
            tokens,
            attn,
            gen.tokens,
            gen.mask,
            logp,
            ref_logp,
            entropy * mask,
            value * mask,
            kl_k1,
            kl_k3,
            score,
            has_eos,
        )

    def advantages(state: LMPPOState, ro: LMRollout) -> tuple[dict[str, jax.Array], jax.Array]:
        mask = ro.mask.astype(jnp.float32)
        kl = ro.kl_k1 if cfg.kl_penalty == "k1" else ro.kl_k3
        lengths = ro.mask.sum(-1)
        last = jax.nn.one_hot(jnp.maximum(lengths - 1, 0), ro.mask.shape[1]) * (lengths > 0)[:, None]
        rewards = -state.kl_coef * kl * mask + last * ro.score[:, None]
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        if rloo:
            adv = rloo_advantages(rewards.sum(-1), k)[:, None] * mask
            value = ret = jnp.zeros_like(adv)
        else:
            value = ro.value * mask
            next_value = jnp.concatenate([value[:, 1:], jnp.zeros_like(value[:, :1])], axis=1)
            end = (
                jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1) == 0
            )  # no real next token
            adv, ret = gae_advantages(
                rewards.T, value.T, next_value.T, end.T, end.T, gamma=cfg.gamma, lam=cfg.gae_lambda
            )
            adv, ret = adv.T * mask, ret.T * mask
        batch = {
            "tokens": ro.tokens,
            "attn_mask": ro.attn_mask,
            "mask": mask,
            "logp": ro.logp,
            "value": value,
            "adv": adv,
            "ret": ret,
        }
        return batch, rewards

    def apply_fn(params: Any, mb: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        p = mb["tokens"].shape[1] - mb["mask"].shape[1]
        logp, entropy, value = _response_stats(
            nnx.merge(graphdef, params), mb["tokens"], mb["attn_mask"], p, cfg.temperature
        )
        return logp, entropy, (jnp.zeros_like(value) if rloo else value)

    ppo_update = make_ppo_update(apply_fn, tx, cfg, mask_key="mask")

    def update_fn(state: LMPPOState, batch: dict[str, jax.Array], key: jax.Array):
        params, opt_state, metrics = ppo_update(state.params, state.opt_state, batch, key)
        return state._replace(params=params, opt_state=opt_state), metrics

    def step_fn(
        state: LMPPOState,
        prompts: jax.Array,
        prompt_mask: jax.Array,
        key: jax.Array,
        reward_params: Any = None,
    ) -> tuple[LMPPOState, dict[str, jax.Array]]:
        k_roll, k_upd = jax.random.split(key)
        ro = rollout(state, prompts, prompt_mask, k_roll, reward_params)
        batch, rewards = advantages(state, ro)
        new, upd = update_fn(state, batch, k_upd)
        mask = ro.mask.astype(jnp.float32)
        seq_k1, seq_k3 = ro.kl_k1.sum(-1), ro.kl_k3.sum(-1)
        kl_coef = state.kl_coef
        if cfg.kl_target is not None:
            kl_coef = adaptive_kl_update(
                kl_coef, seq_k1.mean(), ro.mask.shape[0], target=cfg.kl_target, horizon=cfg.kl_horizon
            )
        metrics = {
            "score": ro.score.mean(),
            "reward": (rewards * mask).sum(-1).mean(),
            "non_score_reward": (-state.kl_coef * (ro.kl_k1 if cfg.kl_penalty == "k1" else ro.kl_k3))
            .sum(-1)
            .mean(),
            "kl_k1_token": masked_mean(ro.kl_k1, mask),
            "kl_k3_token": masked_mean(ro.kl_k3, mask),
            "kl_k1_seq": seq_k1.mean(),
            "kl_k3_seq": seq_k3.mean(),
            "entropy": masked_mean(ro.entropy, mask),
            "response_length": mask.sum(-1).mean(),
            "eos_fraction": ro.has_eos.mean(),
            "kl_coef": state.kl_coef,
            **{f"ppo/{name}": v for name, v in upd.items()},
        }
        return new._replace(kl_coef=kl_coef, step=state.step + 1), metrics

    def sharded_update(state: LMPPOState, mesh: Any, mode: str = "dp") -> Callable:
        def fn(carry: tuple[LMPPOState, jax.Array], batch: dict[str, jax.Array]):
            st, key = carry
            key, sub = jax.random.split(key)
            st, metrics = update_fn(st, batch, sub)
            return (st, key), metrics

        return jit_sharded(fn, (state, jax.random.key(0)), mesh, mode)

    return LMPPO(
        cfg,
        graphdef,
        tx,
        init,
        jax.jit(rollout),
        jax.jit(advantages),
        jax.jit(update_fn),
        jax.jit(step_fn),
        sharded_update,
    )


class BestOfN(NamedTuple):
    """Result of :func:`best_of_n`: the chosen response per prompt and all scores."""

    tokens: jax.Array  # [B, N] best response (right-padded)
    mask: jax.Array  # [B, N]
    score: jax.Array  # [B] its score
    scores: jax.Array  # [B, n] the scores of all n samples
    index: jax.Array  # [B] which sample won (first on ties)


@functools.partial(jax.jit, static_argnames=("graphdef", "reward_fn", "sampling", "n"))
def _best_of_n_jit(graphdef, reward_fn, sampling, n, state, prompts, prompt_mask, key, reward_params):
    model = nnx.merge(graphdef, state)
    gen = generate(model, prompts, prompt_mask, key, sampling, num_samples=n)
    pr = jnp.repeat(prompts, n, axis=0)
    pm = jnp.repeat(prompt_mask, n, axis=0)
    scores = reward_fn(reward_params, pr, pm, gen.tokens, gen.mask).astype(jnp.float32).reshape(-1, n)
    idx = jnp.argmax(scores, axis=1)
    rows = jnp.arange(scores.shape[0]) * n + idx
    return BestOfN(gen.tokens[rows], gen.mask[rows], scores[jnp.arange(scores.shape[0]), idx], scores, idx)


def best_of_n(
    model: Any,
    reward_fn: RewardFn,
    prompts: jax.Array,
    prompt_mask: jax.Array | None,
    key: jax.Array,
    n: int,
    sampling: SamplingConfig | None = None,
    reward_params: Any = None,
) -> BestOfN:
    """Best-of-n: ``n`` samples per LEFT-padded prompt ``[B, P]`` through ``generate(num_samples=n)`` (one prefill
    per prompt), scored by ``reward_fn`` (as in :func:`make_lm_ppo`), the highest-scoring kept. Its KL to the
    sampling distribution is :func:`best_of_n_kl` (``log n - (n - 1) / n``). ``reward_fn`` must be hashable (a
    module-level function or a ``functools.partial``): it is a static argument of the jitted program."""
    check_range("n", n, ge=1, integer=True)
    sampling = SamplingConfig() if sampling is None else sampling
    check(isinstance(sampling, SamplingConfig), "sampling", type(sampling).__name__, "a SamplingConfig")
    prompts = jnp.asarray(prompts, jnp.int32)
    prompt_mask = (
        jnp.ones(prompts.shape, jnp.int32) if prompt_mask is None else jnp.asarray(prompt_mask, jnp.int32)
    )
    graphdef, state = nnx.split(model)
    return _best_of_n_jit(graphdef, reward_fn, sampling, n, state, prompts, prompt_mask, key, reward_params)
