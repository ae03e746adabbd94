"""Reward modeling on the zoo's :class:`~jaxsafety.models.ScoreModel`: the Bradley-Terry pairwise loss, ensembles
of reward models trained in one vmapped jit, evaluation (accuracy, calibration) and reward normalisation.

A reward model is a backbone :class:`~jaxsafety.models.CausalLM` plus a linear scalar head read at the last real
token of each row (``model(tokens, mask) -> [B, 1]``), trained on preference pairs with the Bradley-Terry
likelihood ``P(chosen > rejected) = sigmoid(r_c - r_r)`` (Bradley & Terry 1952; Christiano et al. 2017;
Ouyang et al. 2022), as TRL's ``RewardTrainer``::

    from jaxsafety.rl.reward import (PreferenceBatch, RewardModelConfig, RewardNormalizer, evaluate_rewards,
                                     score, train_reward_models)
    cfg = RewardModelConfig(model=GPT2Config(vocab_size=64, max_seq_len=32, d_model=32, n_layers=2, n_heads=2),
                            optim=OptimizerConfig(lr=1e-3), num_steps=300, batch_size=32)
    rms = train_reward_models(cfg, train_pairs, jax.random.key(0), num_models=4)   # one jit, 4 members
    ev = evaluate_rewards(rms.graphdef, rms.params, heldout_pairs)                 # accuracy, ECE per member
    norm = RewardNormalizer.fit(score(rms.graphdef, rms.params, ref_tokens, ref_mask))  # [4, N] -> per member
    r = norm(score(rms.graphdef, rms.params, tokens, mask))                         # [4, B], 0/1 on the ref set

Data layout (:class:`PreferenceBatch`): each pair is two full sequences ``prompt + response`` of one common length
``T``, ``chosen`` the preferred one, each with its attention mask; rows may be left-padded (the prompt) and
right-padded (the response) at once, since the score is read at the rightmost real token and positions come from
the mask. :func:`preference_pairs` builds that layout from a left-padded prompt and two right-padded responses.

Ensembles (:func:`train_reward_models`) stack the members' parameters on a leading axis: ``jax.vmap`` over the
members' keys of one PureJaxRL-style ``train(key, data)`` (:func:`make_reward_trainer`); each member's key fixes its
head/backbone initialisation, its bootstrap resample of the pairs and its minibatch order, so member ``i`` equals
``make_reward_trainer(cfg)(jax.random.split(key, E)[i], data)`` trained alone.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jaxsafety.config import ConfigError, check, check_choice, check_range
from jaxsafety.models import GPT2, CausalLM, GPT2Config, Llama, LlamaConfig, ScoreModel
from jaxsafety.train import OptimizerConfig, make_optimizer

__all__ = [
    "Calibration",
    "PreferenceBatch",
    "RewardEval",
    "RewardModelConfig",
    "RewardModels",
    "RewardNormalizer",
    "average_params",
    "bradley_terry_loss",
    "calibration",
    "combine_rewards",
    "evaluate_rewards",
    "make_reward_model",
    "make_reward_trainer",
    "preference_pairs",
    "score",
    "train_reward_models",
]


# ---------------------------------------------------------------------------------------------------------------
# loss
def bradley_terry_loss(
    r_chosen: jax.Array,
    r_rejected: jax.Array,
    *,
    label_smoothing: float = 0.0,
    margin: jax.Array | float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Bradley-Terry negative log-likelihood of the preferences, and the pairwise accuracy.

    With ``x = r_chosen - r_rejected - margin`` (``[B]``; ``margin`` a scalar or ``[B]``, as Llama-2's
    preference-strength margin and TRL's ``margin`` column), the loss is the mean over pairs of
    ``-(1 - eps) log sigmoid(x) - eps log sigmoid(-x)`` with ``eps = label_smoothing`` (the conservative /
    label-smoothed BT loss of TRL's DPO and reward trainers: each label is taken to be flipped with probability
    ``eps``). Accuracy is the fraction of pairs with ``r_chosen > r_rejected`` (margin not subtracted).

    Returns ``(loss, accuracy)``, both scalars.
    """
    x = r_chosen - r_rejected
    if margin is not None:
        x = x - margin
    loss = -jax.nn.log_sigmoid(x)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * jax.nn.log_sigmoid(-x)
    acc = (r_chosen > r_rejected).astype(jnp.float32)
    return loss.mean(), acc.mean()


# ---------------------------------------------------------------------------------------------------------------
# data
class PreferenceBatch(NamedTuple):
    """Preference pairs: ``chosen`` / ``rejected`` token ids ``[N, T]`` (full ``prompt + response`` sequences of
    one length ``T``) with their attention masks ``[N, T]`` (1 = real token; any mix of left and right padding),
    and an optional per-pair ``margin`` ``[N]`` subtracted inside the BT loss."""

    chosen: jax.Array
    chosen_mask: jax.Array
    rejected: jax.Array
    rejected_mask: jax.Array
    margin: jax.Array | None = None

    @property
    def num_pairs(self) -> int:
        """Number of pairs ``N``."""
        return self.chosen.shape[0]

    def take(self, idx: jax.Array) -> PreferenceBatch:
        """The pairs at indices ``idx`` (any integer array)."""
        return jax.tree.map(lambda x: x[idx], self)

    def validate(self) -> None:
        """Raise ValueError unless every field has the shape described above."""
        shape = self.chosen.shape
        if len(shape) != 2:
            raise ValueError(f"chosen must be [N, T] token ids, got shape {shape}")
        for name in ("chosen_mask", "rejected", "rejected_mask"):
            s = getattr(self, name).shape
            if s != shape:
                raise ValueError(f"{name} has shape {s}: accepted shape is chosen's {shape}")
        if self.margin is not None and self.margin.shape != shape[:1]:
            raise ValueError(f"margin has shape {self.margin.shape}: accepted shape is [N] = {shape[:1]}")


def preference_pairs(
    prompt: jax.Array,
    prompt_mask: jax.Array,
    response_a: jax.Array,
    mask_a: jax.Array,
    response_b: jax.Array,
    mask_b: jax.Array,
    a_preferred: jax.Array,
    margin: jax.Array | None = None,
) -> PreferenceBatch:
    """Pairs from a left-padded ``prompt [N, P]`` and two right-padded responses ``[N, R]`` (masks alike):
    sequences ``[prompt | response]`` of length ``P + R``; ``a_preferred [N]`` (bool) says which one is chosen."""
    seq_a = jnp.concatenate([prompt, response_a], axis=1)
    seq_b = jnp.concatenate([prompt, response_b], axis=1)
    m_a = jnp.concatenate([prompt_mask, mask_a], axis=1).astype(jnp.int32)
    m_b = jnp.concatenate([prompt_mask, mask_b], axis=1).astype(jnp.int32)
    pick = a_preferred.astype(bool)[:, None]
    return PreferenceBatch(
        jnp.where(pick, seq_a, seq_b),
        jnp.where(pick, m_a, m_b),
        jnp.where(pick, seq_b, seq_a),
        jnp.where(pick, m_b, m_a),
        margin,
    )


# ---------------------------------------------------------------------------------------------------------------
# config and model
@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
    """A reward model and how to train it.

    ``model``: the backbone architecture (a :class:`GPT2Config` / :class:`LlamaConfig`); None when the backbone is
    given pretrained (its config is then used). ``num_steps`` optimizer steps on minibatches of ``batch_size``
    pairs drawn without replacement within a step; ``bootstrap`` makes each ensemble member train on its own
    resample (with replacement) of the pairs (Efron 1979; the bootstrapped ensembles of Coste et al. 2024).
    """

    model: GPT2Config | LlamaConfig | None = None
    optim: OptimizerConfig = OptimizerConfig(lr=1e-3)
    num_steps: int = 200
    batch_size: int = 32
    label_smoothing: float = 0.0
    bootstrap: bool = False

    def __post_init__(self) -> None:
        check(
            self.model is None or isinstance(self.model, GPT2Config | LlamaConfig),
            "model",
            type(self.model).__name__,
            "a GPT2Config, a LlamaConfig, or None (with a pretrained backbone)",
        )
        check(
            isinstance(self.optim, OptimizerConfig), "optim", type(self.optim).__name__, "an OptimizerConfig"
        )
        check_range("num_steps", self.num_steps, ge=1, integer=True)
        check_range("batch_size", self.batch_size, ge=1, integer=True)
        check_range("label_smoothing", self.label_smoothing, ge=0, lt=0.5)
        check_choice("bootstrap", self.bootstrap, (False, True))


def _lm_class(model_config: GPT2Config | LlamaConfig) -> type[CausalLM]:
    return GPT2 if isinstance(model_config, GPT2Config) else Llama


def make_reward_model(
    model_config: GPT2Config | LlamaConfig | None = None,
    *,
    key: jax.Array,
    backbone: CausalLM | None = None,
) -> ScoreModel:
    """A fresh :class:`ScoreModel` (one scalar label): a new backbone of ``model_config`` initialised from
    ``key``, or a copy of the weights of the pretrained ``backbone`` (e.g. the SFT policy; the original is not
    shared or modified) with a new head from ``key`` (normal, std ``1/sqrt(d_model + 1)``, as HF)."""
    if (model_config is None) == (backbone is None):
        raise ConfigError("model", model_config, "exactly one of a model config and a pretrained backbone")
    k_lm, k_head = jax.random.split(key)
    if backbone is None:
        check(
            isinstance(model_config, GPT2Config | LlamaConfig),
            "model",
            type(model_config).__name__,
            "a GPT2Config or LlamaConfig",
        )
        lm = _lm_class(model_config)(model_config, rngs=nnx.Rngs(k_lm))
    else:
        check(
            isinstance(backbone, CausalLM),
            "backbone",
            type(backbone).__name__,
            "a CausalLM (GPT2, Llama); for a ScoreModel pass its .backbone",
        )
        lm = nnx.clone(backbone)
    return ScoreModel(lm, 1, rngs=nnx.Rngs(k_head))


class RewardModels(NamedTuple):
    """Trained reward models: ``graphdef`` + ``params`` (an ``nnx.State``, every leaf stacked on a leading member
    axis ``[E, ...]``), and the training curves ``metrics['loss' | 'accuracy']`` ``[E, num_steps]`` (minibatch
    BT loss and accuracy before each step). ``nnx.merge(graphdef, member(params, i))`` gives member ``i``. From a
    call batched over datasets the leaves are ``[S, E, ...]`` (metrics ``[S, E, num_steps]``): index the run
    first; ``num_models`` and ``member`` read the leading axis."""

    graphdef: Any
    params: Any
    metrics: dict[str, jax.Array]

    @property
    def num_models(self) -> int:
        """Ensemble size ``E``."""
        return int(jax.tree.leaves(self.params)[0].shape[0])

    def member(self, i: int) -> Any:
        """The parameters of member ``i`` (unstacked)."""
        return jax.tree.map(lambda x: x[i], self.params)


def _model_config(config: RewardModelConfig, backbone: CausalLM | None) -> GPT2Config | LlamaConfig:
    if backbone is None:
        check(
            config.model is not None,
            "model",
            None,
            "a GPT2Config or LlamaConfig when no pretrained backbone is given",
        )
        return config.model
    check(
        config.model is None or config.model == backbone.config,
        "model",
        config.model,
        "None or the pretrained backbone's config",
    )
    return backbone.config


def _split_params(model: ScoreModel) -> tuple[Any, Any]:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError("the reward model holds non-parameter state; only nnx.Param leaves are supported")
    return graphdef, params


def make_reward_trainer(
    config: RewardModelConfig, *, backbone: CausalLM | None = None
) -> tuple[Any, Callable[[jax.Array, PreferenceBatch], tuple[Any, dict[str, jax.Array]]]]:
    """PureJaxRL-style ``(graphdef, train)`` with ``train(key, data) -> (params, metrics)`` one whole training run
    of one reward model (pure and jittable; vmap it over keys for an ensemble, as :func:`train_reward_models`).

    ``key`` is split into (init, bootstrap, order): the model's initialisation (:func:`make_reward_model`; with a
    pretrained ``backbone`` only the head is random), the bootstrap resample of the ``N`` pairs (when
    ``config.bootstrap``) and the minibatch of ``batch_size`` distinct pool entries drawn at each step. One step
    is one AdamW/SGD/Lion update of :func:`jaxsafety.train.make_optimizer` on the mean BT loss (chosen and
    rejected rows run through the model in one forward pass). ``metrics['loss' | 'accuracy']`` ``[num_steps]``.
    """
    model_config = _model_config(config, backbone)
    abstract = nnx.eval_shape(lambda: make_reward_model(model_config, key=jax.random.key(0)))
    graphdef, _ = _split_params(abstract)
    backbone_params = None if backbone is None else nnx.state(backbone, nnx.Param)
    tx = make_optimizer(config.optim, total_steps=config.num_steps)
    smoothing = config.label_smoothing

    def init(key: jax.Array) -> Any:
        model = make_reward_model(model_config, key=key)
        if backbone_params is not None:
            nnx.update(model.backbone, backbone_params)
        return _split_params(model)[1]

    def loss_fn(params: Any, batch: PreferenceBatch) -> tuple[jax.Array, jax.Array]:
        model = nnx.merge(graphdef, params)
        tokens = jnp.concatenate([batch.chosen, batch.rejected], axis=0)
        mask = jnp.concatenate([batch.chosen_mask, batch.rejected_mask], axis=0)
        r = model(tokens, mask)[:, 0]
        r_c, r_r = jnp.split(r, 2)
        return bradley_terry_loss(r_c, r_r, label_smoothing=smoothing, margin=batch.margin)

    def train(key: jax.Array, data: PreferenceBatch) -> tuple[Any, dict[str, jax.Array]]:
        n = data.chosen.shape[0]
        k_init, k_boot, k_order = jax.random.split(key, 3)
        params = init(k_init)
        opt_state = tx.init(params)
        pool = jax.random.randint(k_boot, (n,), 0, n) if config.bootstrap else jnp.arange(n)

        def step(carry, k):
            params, opt_state = carry
            idx = pool[jax.random.choice(k, n, (config.batch_size,), replace=False)]
            (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, data.take(idx))
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), {"loss": loss, "accuracy": acc}

        (params, _), metrics = jax.lax.scan(
            step, (params, opt_state), jax.random.split(k_order, config.num_steps)
        )
        return params, metrics

    return graphdef, train


@functools.partial(jax.jit, static_argnums=(0, 3))
def _train_grid(config, data, keys, backbone_graphdef, backbone_state):
    """``S`` ensembles: ``keys`` ``[S, E]``, ``data`` leaves ``[S, N, ...]`` -> params ``[S, E, ...]``."""
    backbone = None if backbone_graphdef is None else nnx.merge(backbone_graphdef, backbone_state)
    _, train = make_reward_trainer(config, backbone=backbone)
    return jax.vmap(jax.vmap(train, in_axes=(0, None)), in_axes=(0, 0))(keys, data)


def train_reward_models(
    config: RewardModelConfig,
    data: PreferenceBatch,
    key: jax.Array,
    num_models: int = 1,
    *,
    backbone: CausalLM | None = None,
) -> RewardModels:
    """Train an ensemble of ``num_models`` reward models in one jitted ``jax.vmap`` over the member keys
    ``jax.random.split(key, num_models)`` (see :func:`make_reward_trainer`; member ``i`` equals ``train`` run
    alone on key ``i``). ``backbone``: a pretrained :class:`CausalLM` whose weights every member starts from.

    Batched over independent runs: with ``data`` leaves ``[S, N, ...]`` (``S`` datasets of one shape) and ``key``
    ``[S]``, trains ``S`` ensembles in the same jit (a second ``vmap``): params ``[S, E, ...]``, metrics
    ``[S, E, num_steps]``; ensemble ``s`` equals the unbatched call on ``data[s]``, ``key[s]``.

    Raises :class:`ConfigError` (before any compute) when ``num_models < 1`` or ``batch_size`` exceeds the
    number of pairs, ValueError when ``data``'s shapes disagree (or ``key``'s batch is not ``data``'s).
    """
    check_range("num_models", num_models, ge=1, integer=True)
    batched = jnp.ndim(key) == 1
    if batched and (data.chosen.ndim != 3 or data.chosen.shape[0] != key.shape[0]):
        raise ValueError(
            f"a batch of {key.shape[0]} keys needs data leaves [S={key.shape[0]}, N, T]: chosen has shape "
            f"{data.chosen.shape}"
        )
    one = jax.tree.map(lambda x: x[0], data) if batched else data
    one.validate()
    check(
        config.batch_size <= one.num_pairs,
        "batch_size",
        config.batch_size,
        f"integers <= the number of training pairs ({one.num_pairs})",
    )
    model_config = _model_config(config, backbone)
    vocab = model_config.vocab_size
    for name in ("chosen", "rejected"):
        toks = getattr(data, name)
        lo, hi = int(jnp.min(toks)), int(jnp.max(toks))
        check(lo >= 0 and hi < vocab, name, f"token ids in [{lo}, {hi}]", f"token ids in [0, {vocab})")
    check(
        one.chosen.shape[1] <= model_config.max_seq_len,
        "data",
        f"sequence length {one.chosen.shape[1]}",
        f"lengths <= max_seq_len ({model_config.max_seq_len})",
    )
    keys = jax.vmap(lambda k: jax.random.split(k, num_models))(key if batched else key[None])
    grid = data if batched else jax.tree.map(lambda x: x[None], data)
    bgd, bstate = (None, None) if backbone is None else nnx.split(backbone)
    params, metrics = _train_grid(config, grid, keys, bgd, bstate)
    if not batched:
        params, metrics = jax.tree.map(lambda x: x[0], (params, metrics))
    graphdef, _ = make_reward_trainer(config, backbone=backbone)
    return RewardModels(graphdef, params, metrics)


# ---------------------------------------------------------------------------------------------------------------
# scoring
def _is_stacked(params: Any) -> bool:
    return jax.tree.leaves(params["score"])[0].ndim == 3  # head kernel: [D, 1], or [E, D, 1] for an ensemble


@functools.partial(jax.jit, static_argnums=0)
def score(graphdef: Any, params: Any, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Rewards of the sequences ``tokens [B, T]`` (``mask`` [B, T], default all real): ``[B]`` for one model's
    params, ``[E, B]`` for an ensemble's stacked params (every member scores the same sequences). Jitted."""

    def one(p):
        return nnx.merge(graphdef, p)(tokens, mask)[:, 0]

    return jax.vmap(one)(params) if _is_stacked(params) else one(params)


def combine_rewards(scores: jax.Array, how: Literal["mean", "min", "max"] = "mean") -> jax.Array:
    """One reward from an ensemble's ``scores [E, B]`` -> ``[B]``: the mean (ensemble), the minimum (worst-case,
    conservative optimisation; Coste et al. 2024) or the maximum."""
    check_choice("how", how, ("mean", "min", "max"))
    return {"mean": jnp.mean, "min": jnp.min, "max": jnp.max}[how](scores, axis=0)


def average_params(params: Any, weights: jax.Array | None = None) -> Any:
    """Weight-averaged parameters of stacked members ``[E, ...]`` -> one model's (uniform, or ``weights [E]``
    normalised to sum 1): the weight-averaged reward model (Ramé et al. 2024, WARM)."""
    if weights is None:
        return jax.tree.map(lambda x: x.mean(0), params)
    w = jnp.asarray(weights, jnp.float32)
    w = w / w.sum()
    return jax.tree.map(lambda x: jnp.tensordot(w, x, axes=1).astype(x.dtype), params)


# ---------------------------------------------------------------------------------------------------------------
# evaluation
class Calibration(NamedTuple):
    """Reliability of ``P(chosen preferred) = sigmoid(r_c - r_r)``: ``ece`` (scalar) and, per confidence bin
    (``[num_bins]``), its mean ``confidence``, ``accuracy`` (0 in empty bins) and ``count``."""

    ece: jax.Array
    confidence: jax.Array
    accuracy: jax.Array
    count: jax.Array


def calibration(r_chosen: jax.Array, r_rejected: jax.Array, num_bins: int = 10) -> Calibration:
    """Expected calibration error of the BT preference probabilities (top-label ECE, Guo et al. 2017).

    For each pair the model predicts the response with the higher reward, with confidence
    ``sigmoid(|r_c - r_r|)`` in [0.5, 1]; it is correct when ``r_c > r_r``. Pairs fall into ``num_bins``
    equal-width bins over [0.5, 1] (the last bin closed); ``ECE = sum_b (n_b / N) |acc_b - conf_b|``. The curve
    (``confidence`` vs ``accuracy`` per bin) is the reliability diagram. Inputs ``[N]``.
    """
    check_range("num_bins", num_bins, ge=1, integer=True)
    d = r_chosen - r_rejected
    conf = jax.nn.sigmoid(jnp.abs(d))
    correct = (d > 0).astype(jnp.float32)
    b = jnp.clip(jnp.floor((conf - 0.5) * 2 * num_bins), 0, num_bins - 1).astype(jnp.int32)
    count = jnp.zeros(num_bins).at[b].add(1.0)
    conf_sum = jnp.zeros(num_bins).at[b].add(conf)
    acc_sum = jnp.zeros(num_bins).at[b].add(correct)
    safe = jnp.maximum(count, 1.0)
    ece = jnp.abs(acc_sum - conf_sum).sum() / d.shape[0]
    return Calibration(ece, conf_sum / safe, acc_sum / safe, count)


class RewardEval(NamedTuple):
    """Held-out evaluation (scalars, or ``[E]`` / ``[E, num_bins]`` for an ensemble): BT ``loss``, pairwise
    ``accuracy``, and the :class:`Calibration` of ``sigmoid(r_c - r_r)``."""

    loss: jax.Array
    accuracy: jax.Array
    calibration: Calibration


@functools.partial(jax.jit, static_argnums=(0, 3))
def evaluate_rewards(graphdef: Any, params: Any, data: PreferenceBatch, num_bins: int = 10) -> RewardEval:
    """Score held-out pairs with one model or an ensemble (stacked params) and evaluate each model. Jitted."""
    data.validate()
    r_c = score(graphdef, params, data.chosen, data.chosen_mask)
    r_r = score(graphdef, params, data.rejected, data.rejected_mask)

    def ev(c, r):
        loss, acc = bradley_terry_loss(c, r)
        return RewardEval(loss, acc, calibration(c, r, num_bins))

    return jax.vmap(ev)(r_c, r_r) if r_c.ndim == 2 else ev(r_c, r_r)


# ---------------------------------------------------------------------------------------------------------------
# normalisation
@struct.dataclass
class RewardNormalizer:
    """Affine reward normalisation ``(r - mean) / std`` with the statistics of a reference set, typically rewards
    of samples from the initial (SFT) policy, so that policy scores mean 0 and std 1 (Ziegler et al. 2019;
    Gao et al. 2022 normalise the gold reward likewise). ``mean``/``std`` have the rewards' leading shape (``[]``
    for one model, ``[E]`` per ensemble member). Per-batch whitening of rewards or advantages (TRL's
    ``whiten``) is :func:`jaxsafety.rl.normalize_advantages`."""

    mean: jax.Array
    std: jax.Array

    @staticmethod
    def fit(rewards: jax.Array, eps: float = 1e-8) -> RewardNormalizer:
        """Statistics of reference ``rewards [..., N]`` over the last axis (population std, plus ``eps``)."""
        return RewardNormalizer(rewards.mean(-1), rewards.std(-1) + eps)

    def __call__(self, rewards: jax.Array) -> jax.Array:
        """Normalised ``rewards [..., B]`` (leading shape that of the statistics)."""
        return (rewards - self.mean[..., None]) / self.std[..., None]
