"""The one PPO update (jaxsafety.rl.update): against a reference written out here (its own loss formulas, a
plain optax chain and Python loops over epochs and minibatches), masking against dropping the masked entries, and
each caller's update (gymnax trainer, M-FOS meta-PPO, Shaper's naive learners) against the helper on one batch."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from envs import tensor_game
from jaxsafety.config import ConfigError
from jaxsafety.rl import (
    ActorCritic,
    GRUActorCritic,
    PPOConfig,
    PPOHyperparams,
    gae_advantages,
    make_policy,
    make_ppo_update,
    make_train,
    ppo_loss,
)
from jaxsafety.shaping import (
    MetaPPOConfig,
    MFOSConfig,
    NaivePPOConfig,
    SampledGameConfig,
    make_mfos_ppo,
    make_sampled_trial,
)

OBS, ACTIONS = 5, 3


def tree_max_diff(a, b) -> float:
    return max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def linear_policy(key: jax.Array) -> dict[str, jax.Array]:
    k1, k2 = jax.random.split(key)
    return {
        "pi": 0.3 * jax.random.normal(k1, (OBS, ACTIONS)),
        "v": 0.3 * jax.random.normal(k2, (OBS,)),
        "b": jnp.zeros(ACTIONS),
    }


def apply_linear(params: dict, mb: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    logits = mb["obs"] @ params["pi"] + params["b"]
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, mb["action"][..., None], -1)[..., 0]
    entropy = -(jnp.exp(logp_all) * logp_all).sum(-1)
    return logp, entropy, mb["obs"] @ params["v"]


def random_batch(key: jax.Array, shape: tuple[int, ...]) -> dict[str, jax.Array]:
    ks = jax.random.split(key, 6)
    return {
        "obs": jax.random.normal(ks[0], (*shape, OBS)),
        "action": jax.random.randint(ks[1], shape, 0, ACTIONS),
        "logp": jnp.log(jax.random.uniform(ks[2], shape, minval=0.2, maxval=0.5)),
        "value": jax.random.normal(ks[3], shape),
        "adv": jax.random.normal(ks[4], shape) + 0.3,
        "ret": jax.random.normal(ks[5], shape),
    }


def reference_loss(params: dict, mb: dict, hp: PPOHyperparams) -> jax.Array:
    """PPO's clipped objective written out from the paper (and ppo2's value clip), independent of rl.losses."""
    logp, entropy, value = apply_linear(params, mb)
    a = mb["adv"]
    a = (a - a.mean()) / (a.std() + 1e-8)
    ratio = jnp.exp(logp - mb["logp"])
    pg = -jnp.mean(jnp.minimum(ratio * a, jnp.clip(ratio, 1 - hp.clip_eps, 1 + hp.clip_eps) * a))
    v_clip = mb["value"] + jnp.clip(value - mb["value"], -hp.clip_eps, hp.clip_eps)
    vl = 0.5 * jnp.mean(jnp.maximum((value - mb["ret"]) ** 2, (v_clip - mb["ret"]) ** 2))
    return pg + hp.vf_coef * vl - hp.ent_coef * entropy.mean()


def reference_update(params, batch, key, hp: PPOHyperparams, axis: int):
    """Python loops over epochs and minibatches with optax's plain clip + Adam (no flattening)."""
    tx = optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.adam(hp.lr, eps=1e-5))
    opt = tx.init(params)
    n = batch["adv"].shape[axis]
    size = n // hp.num_minibatches

    @jax.jit
    def step(params, opt, mb):
        updates, opt = tx.update(jax.grad(reference_loss)(params, mb, hp), opt, params)
        return optax.apply_updates(params, updates), opt

    for ek in jax.random.split(key, hp.update_epochs):
        perm = np.asarray(jax.random.permutation(ek, n))
        for j in range(hp.num_minibatches):
            idx = perm[j * size : (j + 1) * size]
            mb = {k: jnp.take(v, idx, axis=axis) for k, v in batch.items()}
            params, opt = step(params, opt, mb)
    return params


@pytest.mark.parametrize("axis,shape", [(0, (64,)), (1, (6, 8))])
def test_update_equals_a_reference_loop(axis: int, shape: tuple[int, ...]):
    hp = PPOHyperparams(update_epochs=3, num_minibatches=4, lr=3e-2, ent_coef=0.05, max_grad_norm=0.5)
    params = linear_policy(jax.random.key(0))
    batch = random_batch(jax.random.key(1), shape)
    update = jax.jit(make_ppo_update(apply_linear, hp.optimizer(), hp, minibatch_axis=axis))
    ours, _, metrics = update(params, hp.optimizer().init(params), batch, jax.random.key(2))
    ref = reference_update(params, batch, jax.random.key(2), hp, axis)
    moved = tree_max_diff(ref, params)
    assert moved > 0.05  # the update did something ...
    assert tree_max_diff(ours, ref) < 1e-5 * max(1.0, moved)  # ... and the same thing
    assert set(metrics) == {
        "loss",
        "policy_loss",
        "value_loss",
        "entropy",
        "approx_kl",
        "approx_kl_k1",
        "clip_fraction",
    }
    assert all(m.shape == () for m in metrics.values())


def test_metrics_are_the_minibatch_means_of_the_loss():
    """One epoch, one minibatch: the reported loss is the loss at the starting parameters."""
    hp = PPOHyperparams(update_epochs=1, num_minibatches=1)
    params = linear_policy(jax.random.key(3))
    batch = random_batch(jax.random.key(4), (32,))
    update = jax.jit(make_ppo_update(apply_linear, hp.optimizer(), hp))
    _, _, metrics = update(params, hp.optimizer().init(params), batch, jax.random.key(5))
    assert float(metrics["loss"]) == pytest.approx(
        float(reference_loss(params, batch, hp)), rel=1e-5, abs=1e-6
    )
    logp, _, _ = apply_linear(params, batch)
    assert float(metrics["approx_kl_k1"]) == pytest.approx(float(jnp.mean(batch["logp"] - logp)), abs=1e-6)


def test_masked_loss_equals_the_loss_on_the_kept_entries():
    """A mask is the same as dropping the masked-out entries: loss, diagnostics and gradient."""
    hp = PPOHyperparams(ent_coef=0.05)
    params = linear_policy(jax.random.key(6))
    batch = random_batch(jax.random.key(7), (4, 10))  # [B, T] as for token sequences
    mask = jax.random.bernoulli(jax.random.key(8), 0.6, (4, 10))
    keep = np.asarray(mask)
    compact = {k: v[keep] for k, v in batch.items()}

    def loss(p, b, m):
        logp, ent, value = apply_linear(p, b)
        return ppo_loss(logp, ent, value, b, hp, m)

    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (l_masked, aux_m), g_masked = value_and_grad(params, batch, mask)
    (l_kept, aux_k), g_kept = value_and_grad(params, compact, None)
    assert float(l_masked) == pytest.approx(float(l_kept), rel=1e-5)
    for k in aux_k:
        assert float(aux_m[k]) == pytest.approx(float(aux_k[k]), rel=1e-4, abs=1e-6), k
    assert tree_max_diff(g_masked, g_kept) < 1e-5


def test_masked_update_ignores_what_is_under_the_mask():
    hp = PPOHyperparams(update_epochs=2, num_minibatches=2, lr=1e-2)
    params = linear_policy(jax.random.key(9))
    batch = random_batch(jax.random.key(10), (8, 6))
    batch["mask"] = jnp.arange(6)[None, :] < jax.random.randint(jax.random.key(11), (8, 1), 2, 7)
    garbage = random_batch(jax.random.key(12), (8, 6))
    scrambled = {
        k: jnp.where(
            batch["mask"] if v.ndim == 2 else batch["mask"][..., None],
            v,
            garbage[k] if k == "action" else 1e3 * garbage[k],
        )
        for k, v in batch.items()
        if k != "mask"
    }
    scrambled["mask"] = batch["mask"]
    update = jax.jit(make_ppo_update(apply_linear, hp.optimizer(), hp, mask_key="mask"))
    opt = hp.optimizer().init(params)
    a, _, _ = update(params, opt, batch, jax.random.key(13))
    b, _, _ = update(params, opt, scrambled, jax.random.key(13))
    assert tree_max_diff(a, params) > 1e-3
    assert tree_max_diff(a, b) < 1e-6


def test_update_input_errors_name_the_field():
    hp = PPOHyperparams(num_minibatches=3)
    params = linear_policy(jax.random.key(0))
    update = make_ppo_update(apply_linear, hp.optimizer(), hp)
    opt = hp.optimizer().init(params)
    with pytest.raises(
        ConfigError, match=r"num_minibatches=3 is invalid: accepted values are divisors .*\(64\)"
    ):
        update(params, opt, random_batch(jax.random.key(0), (64,)), jax.random.key(1))
    batch = random_batch(jax.random.key(0), (63,))
    del batch["ret"]
    with pytest.raises(ConfigError, match=r"batch=.* accepted values are dicts with a 'ret' entry"):
        update(params, opt, batch, jax.random.key(1))
    ragged = {**random_batch(jax.random.key(0), (63,)), "ret": jnp.zeros(60)}
    with pytest.raises(ConfigError, match="share one length along minibatch_axis=0"):
        update(params, opt, ragged, jax.random.key(1))
    with pytest.raises(ConfigError, match="num_updates=None is invalid"):
        PPOHyperparams(anneal_lr=True).optimizer()


@pytest.mark.parametrize("cls", [PPOHyperparams, PPOConfig, MetaPPOConfig, NaivePPOConfig])
@pytest.mark.parametrize(
    "field,value,accepted",
    [
        ("update_epochs", 0, "integers >= 1"),
        ("gae_lambda", 1.5, "numbers >= 0 and <= 1"),
        ("vf_coef", -1.0, "numbers >= 0"),
        ("ent_coef", -0.1, "numbers >= 0"),
        ("max_grad_norm", 0.0, "numbers > 0"),
    ],
)
def test_every_ppo_config_validates_the_shared_fields(cls, field: str, value, accepted: str):
    with pytest.raises(ConfigError, match=f"{field}={value!r} is invalid: accepted values are {accepted}"):
        cls(**{field: value})


# ---------------------------------------------------------------------------------------------------------------
# each caller's update is the helper's


def test_gymnax_trainer_update_is_the_helper():
    cfg = PPOConfig(num_envs=4, num_steps=16, total_timesteps=4 * 16 * 3, num_minibatches=4, lr=1e-2)
    train = make_train(cfg)
    model, _, _ = make_policy(cfg, jax.random.key(0))
    graphdef, params = nnx.split(model, nnx.Param)

    def apply(p, mb):
        dist, value = nnx.merge(graphdef, p)(mb["obs"])
        return dist.log_prob(mb["action"]), dist.entropy(), value

    batch = random_batch(jax.random.key(1), (64,))
    batch["obs"] = jax.random.normal(jax.random.key(2), (64, 4))
    batch["action"] = jax.random.randint(jax.random.key(3), (64,), 0, 2)
    tx = cfg.optimizer(cfg.num_updates)
    ours, _, m_ours = jax.jit(train.ppo_update)(params, tx.init(params), batch, jax.random.key(4))
    ref, _, m_ref = jax.jit(make_ppo_update(apply, tx, cfg))(
        params, tx.init(params), batch, jax.random.key(4)
    )
    assert tree_max_diff(ours, params) > 1e-3
    assert tree_max_diff(ours, ref) < 1e-6
    assert tree_max_diff(m_ours, m_ref) < 1e-6


def test_mfos_meta_ppo_update_is_the_helper_after_gae():
    config, ppo = MFOSConfig(trial_length=6, hidden=(8,)), MetaPPOConfig(num_trials=4, lr=1e-2, ent_coef=0.01)
    train, graphdef = make_mfos_ppo(tensor_game.ipd(2), [True, False], config, ppo)
    s = 2**2 + 1
    b, t = ppo.num_trials, config.trial_length
    params = nnx.split(ActorCritic(2 * s, s, action_kind="gaussian", hidden=(8,), rngs=nnx.Rngs(0)))[1]
    ks = jax.random.split(jax.random.key(5), 5)
    data = {
        "obs": jax.random.uniform(ks[0], (b, t, 2 * s)),
        "action": jax.random.normal(ks[1], (b, t, s)),
        "logp": jax.random.normal(ks[2], (b, t)) - 5.0,
        "value": jax.random.normal(ks[3], (b, t)),
        "reward": jax.random.normal(ks[4], (b, t)),
    }
    tx = ppo.optimizer(ppo.iterations)
    ours, _, _ = jax.jit(train.ppo_update)(params, tx.init(params), data, jax.random.key(6))

    # the helper on the flattened trials, with GAE that stops at each trial's end
    nxt = jnp.concatenate([data["value"][:, 1:], jnp.zeros((b, 1))], axis=1)
    done = jnp.zeros((b, t)).at[:, -1].set(1.0)
    adv, ret = gae_advantages(
        data["reward"].T, data["value"].T, nxt.T, done.T, done.T, gamma=ppo.gamma, lam=ppo.gae_lambda
    )
    flat = {k: v.reshape(b * t, *v.shape[2:]) for k, v in data.items() if k != "reward"}
    flat.update(adv=adv.T.reshape(-1), ret=ret.T.reshape(-1))

    def apply(p, mb):
        dist, value = nnx.merge(graphdef, p)(mb["obs"])
        return dist.log_prob(mb["action"]), dist.entropy(), value

    ref, _, _ = jax.jit(make_ppo_update(apply, tx, ppo))(params, tx.init(params), flat, jax.random.key(6))
    assert tree_max_diff(ours, params) > 1e-3
    assert tree_max_diff(ours, ref) < 1e-6


@pytest.mark.parametrize("network", ["gru", "mlp"])
def test_shaper_naive_update_is_the_helper_over_whole_episodes(network: str):
    naive = NaivePPOConfig(network=network, hidden=8, lr=1e-2)
    cfg = SampledGameConfig(num_envs=4, episode_length=5, num_episodes=2, naive=naive)
    trial, _, _ = make_sampled_trial(tensor_game.ipd(2), [False, False], cfg)
    s = 2**2 + 1
    model = (
        GRUActorCritic(s, 2, 8, rngs=nnx.Rngs(1))
        if network == "gru"
        else ActorCritic(s, 2, hidden=(8,), rngs=nnx.Rngs(1))
    )
    graphdef, params = nnx.split(model)
    t, e = cfg.episode_length, cfg.num_envs
    ks = jax.random.split(jax.random.key(7), 5)
    data = {
        "obs": jax.nn.one_hot(jax.random.randint(ks[0], (t, e), 0, s), s),
        "action": jax.random.randint(ks[1], (t, e), 0, 2),
        "logp": jnp.log(jax.random.uniform(ks[2], (t, e), minval=0.3, maxval=0.7)),
        "value": jax.random.normal(ks[3], (t, e)),
        "reward": jax.random.normal(ks[4], (t, e)),
    }
    tx = naive.optimizer()
    ours, _ = jax.jit(trial.ppo_update)(params, tx.init(params), data, jax.random.key(8))

    nxt = jnp.concatenate([data["value"][1:], jnp.zeros((1, e))])
    done = jnp.zeros((t, e)).at[-1].set(1.0)
    adv, ret = gae_advantages(
        data["reward"], data["value"], nxt, done, done, gamma=naive.gamma, lam=naive.gae_lambda
    )
    batch = {**data, "adv": adv, "ret": ret}

    def apply(p, mb):  # whole episodes from the zero state (recurrent), or the memory-one MLP
        m = nnx.merge(graphdef, p)
        if network == "gru":
            _, dist, value = m.unroll(m.initial_state(mb["obs"].shape[1:2]), mb["obs"])
        else:
            dist, value = m(mb["obs"])
        return dist.log_prob(mb["action"]), dist.entropy(), value

    update = make_ppo_update(apply, tx, naive, minibatch_axis=1)
    ref, _, _ = jax.jit(update)(params, tx.init(params), batch, jax.random.key(8))
    assert tree_max_diff(ours, params) > 1e-3
    assert tree_max_diff(ours, ref) < 1e-6


def test_configs_share_one_field_set():
    """The three PPO configs carry PPOHyperparams' fields (only defaults differ)."""
    shared = {f.name for f in dataclasses.fields(PPOHyperparams)}
    for cls in (PPOConfig, MetaPPOConfig, NaivePPOConfig):
        assert shared <= {f.name for f in dataclasses.fields(cls)}
        assert issubclass(cls, PPOHyperparams)


def test_loss_rejects_mismatched_shapes():
    """A [B, 1] value against [B] targets would silently broadcast to [B, B]."""
    hp = PPOHyperparams()
    batch = random_batch(jax.random.key(0), (8,))
    logp = batch["logp"]
    with pytest.raises(AssertionError, match=r"ppo_loss: logp, value, batch\['logp'\]"):
        ppo_loss(logp, jnp.ones(8), batch["value"][:, None], batch, hp)
    with pytest.raises(AssertionError, match="must have one shape"):
        ppo_loss(logp, jnp.ones(8), batch["value"], batch, hp, mask=jnp.ones((8, 1)))
