"""Iterated-RLHF options by hand: data transfer (sizes, rounds, repeated prompts), reward combinators against a
Python loop over the models, weight averaging and LITI against explicit arithmetic, the config's validation."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsafety.config import ConfigError, parse_cli
from jaxsafety.models import GPT2Config
from jaxsafety.rl.reward import average_params, make_reward_model, score
from jaxsafety.rlhf import (
    IteratedRLHFConfig,
    PreferencePairs,
    combined_reward,
    policy_init,
    sample_mix_index,
    transfer_preferences,
    tree_interpolate,
)


def _round(k, prompts, width=3):
    n = len(prompts)
    tok = np.full((n, width), k, np.int32)
    return PreferencePairs(
        np.asarray(prompts, np.int32), tok, np.ones_like(tok), tok + 1, np.ones_like(tok),
        np.zeros(n, np.float32), np.zeros(n, np.float32), np.full(n, k, np.int32),
    )  # fmt: skip


ROUNDS = [_round(0, [0, 1, 2, 3]), _round(1, [2, 3, 4, 5]), _round(2, [4, 5, 6, 7])]


def test_transfer_last_and_concat():
    last = transfer_preferences(ROUNDS, "last")
    assert last.round.tolist() == [2] * 4 and last.prompt_index.tolist() == [4, 5, 6, 7]
    cat = transfer_preferences(ROUNDS, "concat")
    assert cat.num_pairs == 12 and cat.round.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert cat.prompt_index.tolist() == [0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7]
    np.testing.assert_array_equal(cat.chosen[:, 0], cat.round)  # rows stay whole
    assert transfer_preferences(ROUNDS[:1], "concat").num_pairs == 4


def test_sample_mix_with_repeated_prompts():
    counts = np.zeros(3)
    repeats = 0
    for s in range(200):
        mix = transfer_preferences(ROUNDS, "sample_mix", jax.random.key(s), repeat_prompts=True)
        assert mix.num_pairs == 4  # one round's size by default
        rows = {(p, r) for p, r in zip(mix.prompt_index.tolist(), mix.round.tolist())}
        assert len(rows) == 4  # distinct pooled rows
        np.testing.assert_array_equal(mix.chosen[:, 0], mix.round)
        counts += np.bincount(mix.round, minlength=3)
        repeats += len(set(mix.prompt_index.tolist())) < 4
    # every round is sampled in proportion to its size (1/3 each; 800 rows, sd ~ 13)
    assert np.all(np.abs(counts - 800 / 3) < 60), counts
    assert repeats > 0  # prompts 2..5 sit in two rounds: a repeat happens in some draws
    mix = transfer_preferences(ROUNDS, "sample_mix", jax.random.key(0), mix_size=12)
    assert sorted(zip(mix.round.tolist(), mix.prompt_index.tolist())) == sorted(
        zip([0] * 4 + [1] * 4 + [2] * 4, [0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7])
    )


def test_sample_mix_without_repeated_prompts():
    seen_rounds = {p: set() for p in range(8)}
    for s in range(100):
        mix = transfer_preferences(ROUNDS, "sample_mix", jax.random.key(s), mix_size=6, repeat_prompts=False)
        assert mix.num_pairs == 6 and len(set(mix.prompt_index.tolist())) == 6
        for p, r in zip(mix.prompt_index.tolist(), mix.round.tolist()):
            seen_rounds[p].add(r)
    # prompts asked in two rounds come from either round
    assert seen_rounds[2] == {0, 1} and seen_rounds[5] == {1, 2} and seen_rounds[0] == {0}
    idx = sample_mix_index(jax.random.key(0), np.array([0, 0, 1, 1]), 2, repeat_prompts=False)
    assert sorted(np.array([0, 0, 1, 1])[idx].tolist()) == [0, 1]
    with pytest.raises(ConfigError, match="mix_size"):
        transfer_preferences(ROUNDS, "sample_mix", jax.random.key(0), mix_size=9, repeat_prompts=False)
    with pytest.raises(ConfigError, match="mix_size"):
        transfer_preferences(ROUNDS, "sample_mix", jax.random.key(0), mix_size=13)
    with pytest.raises(ConfigError, match="transfer"):
        transfer_preferences(ROUNDS, "union")
    with pytest.raises(ConfigError, match="key"):
        transfer_preferences(ROUNDS, "sample_mix")


def _score(params, tokens, mask):
    """A nonlinear toy RM: tanh of the masked mean embedding, dotted with u (so weight averaging != averaging)."""
    emb = params["emb"][tokens] * mask[..., None]
    h = jnp.tanh(emb.sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1) + params["b"])
    return h @ params["u"]


def _models(k, vocab=11, hidden=5, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {"emb": rng.normal(size=(vocab, hidden)), "b": rng.normal(size=hidden), "u": rng.normal(size=hidden)}
        for _ in range(k)
    ]


def _stack(models):
    return jax.tree.map(lambda *x: jnp.stack([jnp.asarray(v, jnp.float32) for v in x]), *models)


@pytest.mark.parametrize("mode", ["latest", "ensemble_mean", "worst_case", "weight_average"])
def test_combined_reward_matches_a_loop_over_the_models(mode):
    models = _models(3)
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, 11, (6, 4)))
    mask = jnp.asarray((rng.uniform(size=(6, 4)) < 0.8).astype(np.float32))

    def loop(ms):
        scores = np.stack([np.asarray(_score(jax.tree.map(jnp.asarray, m), tokens, mask)) for m in ms])
        if mode == "latest":
            return scores[-1]
        if mode == "ensemble_mean":
            return scores.mean(0)
        if mode == "worst_case":
            return scores.min(0)
        avg = {k: sum(np.asarray(m[k]) for m in ms) / len(ms) for k in ms[0]}
        return np.asarray(_score(jax.tree.map(jnp.asarray, avg), tokens, mask))

    got = combined_reward(_score, _stack(models), tokens, mask, mode)
    np.testing.assert_allclose(got, loop(models), rtol=1e-5, atol=1e-5)
    # a fixed buffer of 3 slots with 2 trained RMs = the first 2 alone, under jit
    fn = jax.jit(combined_reward, static_argnums=(0, 4))
    got2 = fn(_score, _stack(models), tokens, mask, mode, jnp.array([True, True, False]))
    np.testing.assert_allclose(got2, loop(models[:2]), rtol=1e-5, atol=1e-5)
    if mode == "weight_average":  # a nonlinear RM: averaging weights is not averaging scores
        ensemble = np.mean(
            [np.asarray(_score(jax.tree.map(jnp.asarray, m), tokens, mask)) for m in models], 0
        )
        assert np.max(np.abs(np.asarray(got) - ensemble)) > 1e-2
    with pytest.raises(ConfigError, match="reward_fn"):
        combined_reward(_score, _stack(models), tokens, mask, "median")


def test_weight_average_and_interpolate_are_explicit_arithmetic():
    a, b, c = _models(3, seed=2)
    avg = average_params(_stack([a, b, c]))
    for k in a:
        np.testing.assert_allclose(avg[k], (a[k] + b[k] + c[k]) / 3, rtol=1e-5, atol=1e-6)
    wavg = average_params(_stack([a, b, c]), jnp.array([1.0, 3.0, 0.0]))
    for k in a:
        np.testing.assert_allclose(wavg[k], (a[k] + 3 * b[k]) / 4, rtol=1e-5, atol=1e-6)
    mid = tree_interpolate(a, b, 0.25)
    for k in a:
        np.testing.assert_allclose(mid[k], 0.75 * a[k] + 0.25 * b[k], rtol=1e-6)
    # nnx parameter states are pytrees too (what the policy's and RM's params are)
    s1 = nnx.state(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), nnx.Param)
    s2 = nnx.state(nnx.Linear(3, 2, rngs=nnx.Rngs(1)), nnx.Param)
    s3 = tree_interpolate(s1, s2, 0.5)
    np.testing.assert_allclose(s3["kernel"][...], (s1["kernel"][...] + s2["kernel"][...]) / 2, rtol=1e-6)


def test_combined_reward_with_zoo_reward_models():
    # the scorer of rl.reward over stacked ScoreModel params (what the experiment plugs in)
    cfg = GPT2Config(vocab_size=18, max_seq_len=8, d_model=16, n_layers=1, n_heads=2)
    models = [make_reward_model(cfg, key=jax.random.key(i)) for i in range(3)]
    graphdef = nnx.split(models[0])[0]
    states = [nnx.split(m)[1] for m in models]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *states)
    tokens = jnp.asarray(np.random.default_rng(0).integers(2, 18, (5, 8)), jnp.int32)
    mask = jnp.ones_like(tokens).at[:, 6:].set(0)
    score_fn = functools.partial(score, graphdef)
    each = np.stack([np.asarray(score(graphdef, st, tokens, mask)) for st in states])
    np.testing.assert_allclose(combined_reward(score_fn, stacked, tokens, mask, "ensemble_mean"), each.mean(0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(combined_reward(score_fn, stacked, tokens, mask, "worst_case"), each.min(0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(
        combined_reward(score_fn, stacked, tokens, mask, "latest"), each[-1], rtol=1e-5
    )
    avg = jax.tree.map(lambda *x: sum(x) / 3, *states)
    np.testing.assert_allclose(combined_reward(score_fn, stacked, tokens, mask, "weight_average"),
                               score(graphdef, avg, tokens, mask), rtol=1e-4, atol=1e-5)  # fmt: skip


def test_policy_init_options_and_a_liti_chain():
    sft, p1, p2 = ({"w": np.array([float(v), -float(v)])} for v in (1, 5, 9))
    assert policy_init("sft", sft, p1, p2) == (sft, sft)
    assert policy_init("continue", sft, p1, p2) == (p2, p2)
    eta = 0.3
    # round 1 from SFT; round 2: init = (1 - eta) sft + eta p1; round 3: (1 - eta) init_2 + eta p2
    init2, ref2 = policy_init("liti", sft, sft, p1, eta)
    np.testing.assert_allclose(init2["w"], [0.7 * 1 + 0.3 * 5, -(0.7 * 1 + 0.3 * 5)])
    assert ref2 is init2  # the KL reference is the init
    init3, _ = policy_init("liti", sft, init2, p2, eta)
    want = 0.7 * (0.7 * 1 + 0.3 * 5) + 0.3 * 9
    np.testing.assert_allclose(init3["w"], [want, -want], rtol=1e-6)
    np.testing.assert_allclose(policy_init("liti", sft, init2, p2, 1.0)[0]["w"], p2["w"])
    np.testing.assert_allclose(policy_init("liti", sft, init2, p2, 0.0)[0]["w"], init2["w"])
    with pytest.raises(ConfigError, match="liti_eta"):
        policy_init("liti", sft, sft, p1, 1.5)
    with pytest.raises(ConfigError, match="policy_init"):
        policy_init("restart", sft, sft, p1)


def test_iterated_rlhf_config_validates_and_is_hashable():
    cfg = IteratedRLHFConfig()
    assert (cfg.num_iterations, cfg.transfer, cfg.reward_fn, cfg.policy_init) == (
        4,
        "concat",
        "latest",
        "sft",
    )
    assert hash(cfg) == hash(IteratedRLHFConfig())
    assert dataclasses.replace(cfg, transfer="sample_mix").effective_mix_size == cfg.prompts_per_round
    for field, value in [
        ("transfer", "all"),
        ("reward_fn", "max"),
        ("policy_init", "random"),
        ("liti_eta", 2.0),
        ("num_iterations", 0),
        ("mix_size", 0),
        ("label_temperature", -0.1),
        ("repeat_prompts", "yes"),
    ]:
        with pytest.raises(ConfigError, match=field):
            IteratedRLHFConfig(**{field: value})
    cli = parse_cli(
        IteratedRLHFConfig, ["--transfer", "sample_mix", "--mix-size", "64", "--repeat-prompts", "false"]
    )
    assert (cli.transfer, cli.mix_size, cli.repeat_prompts) == ("sample_mix", 64, False)
