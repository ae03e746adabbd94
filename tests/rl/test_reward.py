"""Reward modeling (jaxsafety.rl.reward): the Bradley-Terry loss and its gradient against the closed form, the
vmapped ensemble against each member trained alone, a planted preference learned from noisy labels, ECE against a
brute-force numpy loop, the normaliser's statistics, the pair layout, and config errors naming the field."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsafety.config import ConfigError
from jaxsafety.models import GPT2, GPT2Config, ScoreModel
from jaxsafety.rl.reward import (
    PreferenceBatch,
    RewardModelConfig,
    RewardNormalizer,
    average_params,
    bradley_terry_loss,
    calibration,
    combine_rewards,
    evaluate_rewards,
    make_reward_model,
    make_reward_trainer,
    preference_pairs,
    score,
    train_reward_models,
)
from jaxsafety.train import OptimizerConfig

V, P, R = 16, 4, 6  # vocab, prompt length, response length
TINY = GPT2Config(vocab_size=V, max_seq_len=16, d_model=16, n_layers=1, n_heads=2)
PLANTED = 7  # responses containing this token are preferred; other tokens are drawn from [8, V)


def planted_pairs(key: jax.Array, n: int, flip: float = 0.0) -> PreferenceBatch:
    """Pairs whose truly better response holds the token PLANTED at a random position; the other does not.
    ``flip``: fraction of labels flipped (label noise in the training set)."""
    k1, k2, k3, k4, k5, k6 = jax.random.split(key, 6)
    prompt = jax.random.randint(k1, (n, P), 8, V)
    good = jax.random.randint(k2, (n, R), 8, V)
    good = good.at[jnp.arange(n), jax.random.randint(k4, (n,), 0, R)].set(PLANTED)
    bad = jax.random.randint(k3, (n, R), 8, V)
    a_good = jax.random.bernoulli(k5, 0.5, (n,))
    ra, rb = jnp.where(a_good[:, None], good, bad), jnp.where(a_good[:, None], bad, good)
    label = a_good ^ jax.random.bernoulli(k6, flip, (n,))
    ones_p, ones_r = jnp.ones((n, P), jnp.int32), jnp.ones((n, R), jnp.int32)
    return preference_pairs(prompt, ones_p, ra, ones_r, rb, ones_r, label)


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("with_margin", [False, True])
def test_bt_loss_and_gradient_closed_form(eps, with_margin):
    rng = np.random.default_rng(0)
    rc, rr = rng.normal(size=9) * 3, rng.normal(size=9) * 3
    m = rng.uniform(0, 2, size=9) if with_margin else np.zeros(9)
    x = rc - rr - m
    want = np.mean(-(1 - eps) * np_log_sigmoid(x) - eps * np_log_sigmoid(-x))
    sig = 1 / (1 + np.exp(-x))
    want_grad = (sig - (1 - eps)) / 9  # d loss / d r_chosen; d / d r_rejected is its negative

    margin = jnp.asarray(m) if with_margin else None

    def f(a, b):
        return bradley_terry_loss(a, b, label_smoothing=eps, margin=margin)[0]

    loss, acc = bradley_terry_loss(jnp.asarray(rc), jnp.asarray(rr), label_smoothing=eps, margin=margin)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(acc, np.mean(rc > rr), rtol=1e-6)
    gc, gr = jax.grad(f, argnums=(0, 1))(jnp.asarray(rc, jnp.float32), jnp.asarray(rr, jnp.float32))
    np.testing.assert_allclose(gc, want_grad, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gr, -want_grad, rtol=1e-4, atol=1e-7)


def test_bt_loss_scalar_margin_is_a_shift():
    rc, rr = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.0, 1.0, 0.5])
    a = bradley_terry_loss(rc, rr, margin=0.7)[0]
    b = bradley_terry_loss(rc - 0.7, rr)[0]
    np.testing.assert_allclose(a, b, rtol=1e-6)


# --------------------------------------------------------------------------------------------------------------
def test_preference_pairs_layout_and_padding_invariance():
    prompt = jnp.array([[0, 0, 9, 10], [11, 12, 13, 14]])  # row 0 left-padded
    pm = jnp.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    ra, ma = jnp.array([[7, 8, 0], [9, 0, 0]]), jnp.array([[1, 1, 0], [1, 0, 0]])  # right-padded
    rb, mb = jnp.array([[15, 15, 15], [8, 8, 0]]), jnp.array([[1, 1, 1], [1, 1, 0]])
    pairs = preference_pairs(prompt, pm, ra, ma, rb, mb, jnp.array([True, False]))
    np.testing.assert_array_equal(pairs.chosen, np.array([[0, 0, 9, 10, 7, 8, 0], [11, 12, 13, 14, 8, 8, 0]]))
    np.testing.assert_array_equal(
        pairs.rejected, np.array([[0, 0, 9, 10, 15, 15, 15], [11, 12, 13, 14, 9, 0, 0]])
    )
    np.testing.assert_array_equal(pairs.chosen_mask, np.array([[0, 0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 0]]))
    np.testing.assert_array_equal(
        pairs.rejected_mask, np.array([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    )
    # the score of a padded row equals that of the same tokens unpadded
    model = make_reward_model(TINY, key=jax.random.key(0))
    graphdef, params = nnx.split(model)
    got = score(graphdef, params, pairs.chosen, pairs.chosen_mask)
    for i, (t, m) in enumerate(zip(np.asarray(pairs.chosen), np.asarray(pairs.chosen_mask), strict=True)):
        alone = score(graphdef, params, jnp.asarray(t[m == 1])[None])[0]
        np.testing.assert_allclose(got[i], alone, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
def _assert_same_scores(graphdef, a, b, data):
    """Two trained RMs score ``data`` alike up to a constant. Not their parameters: the BT loss is blind to a
    constant score shift (the final LayerNorm's bias along the head) and attention to the key bias, so those
    get float-rounding gradients that Adam's g / sqrt(v) turns into whole lr-sized steps, differently per
    vmap layout."""
    sa, sb = (np.asarray(score(graphdef, p, data.chosen, data.chosen_mask)) for p in (a, b))
    np.testing.assert_allclose(sa - sa.mean(), sb - sb.mean(), rtol=1e-4, atol=1e-5)


def test_ensemble_in_one_vmapped_jit_equals_members_trained_alone():
    cfg = RewardModelConfig(
        model=TINY, optim=OptimizerConfig(lr=3e-3), num_steps=8, batch_size=8, bootstrap=True
    )
    data = planted_pairs(jax.random.key(1), 24)
    key = jax.random.key(5)
    rms = train_reward_models(cfg, data, key, num_models=3)
    assert rms.num_models == 3
    assert rms.metrics["loss"].shape == (3, 8)
    graphdef, train = make_reward_trainer(cfg)
    assert graphdef == rms.graphdef
    train = jax.jit(train)
    keys = jax.random.split(key, 3)
    for i in range(3):
        params, metrics = train(keys[i], data)
        _assert_same_scores(graphdef, rms.member(i), params, data)
        np.testing.assert_allclose(rms.metrics["loss"][i], metrics["loss"], rtol=1e-4, atol=1e-6)
    # members differ (own init, bootstrap and order)
    heads = np.asarray(rms.params["score"]["kernel"][...])
    assert np.abs(heads[0] - heads[1]).max() > 1e-3
    # stacked scoring equals each member's own model
    toks, mask = data.chosen[:5], data.chosen_mask[:5]
    stacked = score(rms.graphdef, rms.params, toks, mask)
    assert stacked.shape == (3, 5)
    for i in range(3):
        np.testing.assert_allclose(
            stacked[i], score(graphdef, rms.member(i), toks, mask), rtol=1e-5, atol=1e-6
        )


def test_batched_runs_equal_each_run_alone():
    """S datasets x E members in one jit (two vmaps) equal the unbatched call per dataset."""
    cfg = RewardModelConfig(model=TINY, optim=OptimizerConfig(lr=3e-3), num_steps=6, batch_size=8)
    datas = [planted_pairs(jax.random.key(10 + s), 16) for s in range(2)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *datas)
    keys = jax.random.split(jax.random.key(3), 2)
    grid = train_reward_models(cfg, stacked, keys, num_models=2)
    assert grid.metrics["loss"].shape == (2, 2, 6)
    for s in range(2):
        alone = train_reward_models(cfg, datas[s], keys[s], num_models=2)
        for i in range(2):
            member = jax.tree.map(lambda x, s=s, i=i: x[s, i], grid.params)
            _assert_same_scores(grid.graphdef, member, alone.member(i), datas[s])
        np.testing.assert_allclose(grid.metrics["loss"][s], alone.metrics["loss"], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="a batch of 3 keys needs data leaves"):
        train_reward_models(cfg, stacked, jax.random.split(jax.random.key(0), 3))


def test_planted_preference_learned_from_noisy_labels():
    """4 members (own init and data order) x 3 data seeds, 256 training pairs with 10% of labels flipped;
    held-out accuracy against the true preference. Measured (jax 0.10.2 CPU, 6 data seeds x 4 members):
    0.977-1.0 after 60 steps (with 20% flipped: 0.855-1.0); untrained models near 0.5. Threshold 0.9."""
    cfg = RewardModelConfig(model=TINY, optim=OptimizerConfig(lr=3e-3), num_steps=60, batch_size=16)
    accs, init_accs = [], []
    for seed in range(3):
        train = planted_pairs(jax.random.key(100 + seed), 256, flip=0.1)
        test = planted_pairs(jax.random.key(200 + seed), 256)
        rms = train_reward_models(cfg, train, jax.random.key(seed), num_models=4)
        accs.append(np.asarray(evaluate_rewards(rms.graphdef, rms.params, test).accuracy))
        fresh = nnx.split(make_reward_model(TINY, key=jax.random.key(seed)))
        init_accs.append(float(evaluate_rewards(*fresh, test).accuracy))
        assert rms.metrics["loss"][:, -10:].mean() < rms.metrics["loss"][:, :10].mean()
    accs = np.concatenate(accs)
    assert accs.min() >= 0.9, accs
    assert max(abs(a - 0.5) for a in init_accs) < 0.25, init_accs


def test_pretrained_backbone_is_copied_into_every_member():
    backbone = GPT2(TINY, rngs=nnx.Rngs(3))
    before = jax.tree.map(np.asarray, nnx.state(backbone, nnx.Param))
    rm = make_reward_model(key=jax.random.key(0), backbone=backbone)
    assert isinstance(rm, ScoreModel) and rm.backbone is not backbone
    jax.tree.map(np.testing.assert_array_equal, nnx.state(rm.backbone, nnx.Param), before)
    # a vanishing learning rate: after training every member's backbone still equals the pretrained weights
    cfg = RewardModelConfig(optim=OptimizerConfig(lr=1e-12), num_steps=2, batch_size=4)
    rms = train_reward_models(
        cfg, planted_pairs(jax.random.key(0), 8), jax.random.key(1), 2, backbone=backbone
    )
    for i in range(2):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, atol=1e-8), rms.member(i)["backbone"], before
        )
    heads = np.asarray(rms.params["score"]["kernel"][...])
    assert np.abs(heads[0] - heads[1]).max() > 1e-3  # heads from the members' own keys
    jax.tree.map(np.testing.assert_array_equal, nnx.state(backbone, nnx.Param), before)  # original untouched


# --------------------------------------------------------------------------------------------------------------
def brute_force_ece(rc, rr, num_bins):
    n = len(rc)
    total = 0.0
    curve = []
    for b in range(num_bins):
        lo, hi = 0.5 + 0.5 * b / num_bins, 0.5 + 0.5 * (b + 1) / num_bins
        confs, hits = [], []
        for c, r in zip(rc, rr, strict=True):
            d = c - r
            conf = 1 / (1 + np.exp(-abs(d)))
            inside = lo <= conf < hi or (b == num_bins - 1 and conf == hi)
            if inside:
                confs.append(conf)
                hits.append(1.0 if d > 0 else 0.0)
        if confs:
            total += len(confs) / n * abs(np.mean(hits) - np.mean(confs))
            curve.append((np.mean(confs), np.mean(hits), len(confs)))
        else:
            curve.append((0.0, 0.0, 0))
    return total, np.array(curve)


@pytest.mark.parametrize("num_bins", [1, 5, 10])
def test_ece_against_brute_force(num_bins):
    rng = np.random.default_rng(num_bins)
    rc = rng.normal(size=300) * 2 + 0.8
    rr = rng.normal(size=300) * 2
    rc[:3] = rr[:3]  # ties: confidence 0.5, counted wrong
    want, curve = brute_force_ece(rc, rr, num_bins)
    cal = calibration(jnp.asarray(rc, jnp.float32), jnp.asarray(rr, jnp.float32), num_bins)
    np.testing.assert_allclose(cal.ece, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cal.confidence, curve[:, 0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cal.accuracy, curve[:, 1], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(cal.count, curve[:, 2])


def test_ece_is_zero_for_a_calibrated_model_in_expectation():
    """Preferences sampled from BT(r) itself: ECE of the true rewards is only sampling noise."""
    rng = np.random.default_rng(0)
    n = 200_000
    d = rng.normal(size=n) * 2
    chosen_is_first = rng.random(n) < 1 / (1 + np.exp(-d))
    rc = np.where(chosen_is_first, d, 0.0)
    rr = np.where(chosen_is_first, 0.0, d)
    assert float(calibration(jnp.asarray(rc), jnp.asarray(rr)).ece) < 0.01
    assert float(calibration(jnp.asarray(3 * rc), jnp.asarray(3 * rr)).ece) > 0.05  # overconfident


# --------------------------------------------------------------------------------------------------------------
def test_normalizer_gives_zero_mean_unit_std_on_reference_set():
    rng = np.random.default_rng(0)
    ref = jnp.asarray(
        rng.normal(size=(3, 500)) * np.array([[2.0], [0.1], [7.0]]) + np.array([[5.0], [-1], [0]])
    )
    norm = RewardNormalizer.fit(ref)
    z = np.asarray(norm(ref))
    np.testing.assert_allclose(z.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(-1), 1, atol=1e-5)
    np.testing.assert_allclose(norm.mean, np.asarray(ref).mean(-1), rtol=1e-5)
    one = RewardNormalizer.fit(ref[1])
    np.testing.assert_allclose(one(ref[1]), z[1], rtol=1e-4, atol=1e-5)


def test_combine_rewards_and_average_params_against_numpy():
    s = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)
    np.testing.assert_allclose(combine_rewards(jnp.asarray(s), "mean"), s.mean(0), rtol=1e-6)
    np.testing.assert_allclose(combine_rewards(jnp.asarray(s), "min"), s.min(0))
    params = {"a": jnp.asarray(s), "b": {"c": jnp.asarray(s[:, :3])}}
    w = np.array([1.0, 2.0, 3.0, 4.0])
    avg = average_params(params, jnp.asarray(w))
    np.testing.assert_allclose(avg["a"], (w[:, None] * s).sum(0) / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(average_params(params)["b"]["c"], s[:, :3].mean(0), rtol=1e-6)
    with pytest.raises(ConfigError, match="how='median'"):
        combine_rewards(jnp.asarray(s), "median")


# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_steps": 0}, "num_steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"model": "gpt2"}, "model"),
        ({"optim": {"lr": 1e-3}}, "optim"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}="):
        RewardModelConfig(**{"model": TINY, **kwargs})


def test_training_input_errors_before_compute():
    data = planted_pairs(jax.random.key(0), 8)
    cfg = RewardModelConfig(model=TINY, batch_size=16)
    with pytest.raises(ConfigError, match=r"^batch_size=16 .* <= the number of training pairs \(8\)"):
        train_reward_models(cfg, data, jax.random.key(0))
    cfg = dataclasses.replace(cfg, batch_size=4)
    with pytest.raises(ConfigError, match=r"^num_models=0"):
        train_reward_models(cfg, data, jax.random.key(0), num_models=0)
    with pytest.raises(ConfigError, match=r"^chosen=.*\[0, 16\)"):
        train_reward_models(cfg, data._replace(chosen=data.chosen.at[0, 0].set(V)), jax.random.key(0))
    with pytest.raises(ValueError, match="rejected_mask has shape"):
        train_reward_models(cfg, data._replace(rejected_mask=data.rejected_mask[:, :3]), jax.random.key(0))
    with pytest.raises(ConfigError, match=r"^model=None"):
        train_reward_models(RewardModelConfig(batch_size=4), data, jax.random.key(0))
    other = dataclasses.replace(TINY, d_model=32)
    with pytest.raises(ConfigError, match=r"^model=.*the pretrained backbone's config"):
        train_reward_models(
            dataclasses.replace(cfg, model=other),
            data,
            jax.random.key(0),
            backbone=GPT2(TINY, rngs=nnx.Rngs(0)),
        )
    with pytest.raises(ConfigError, match=r"^model="):
        make_reward_model(TINY, key=jax.random.key(0), backbone=GPT2(TINY, rngs=nnx.Rngs(0)))
