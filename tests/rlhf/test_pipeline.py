"""jaxsafety.rlhf.pipeline: the RM buffer and proxy reward against per-member loops, best-of-n curve invariants,
policy evaluation's KL against a hand-computed k3 estimator, gold at matched KL against numpy, config errors."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsafety.config import ConfigError
from jaxsafety.models import GPT2, GPT2Config, SamplingConfig, ScoreModel
from jaxsafety.rl.lm_ppo import LMPPOConfig, make_lm_ppo
from jaxsafety.rlhf import IteratedRLHFConfig, RLHFTaskConfig, gold_reward_fn, rlhf_task
from jaxsafety.rlhf.pipeline import (
    RMBuffer,
    StudyConfig,
    best_of_n_curve,
    evaluate_policy,
    gold_at_kl,
    proxy_reward_fn,
    round_score,
    run_iterated_rlhf,
    sft_policy,
)
from jaxsafety.rlhf.task import EOS, PAD
from jaxsafety.train import FinetuneConfig
from jaxsafety.train.pretrained import ArithmeticLMConfig

TASK = RLHFTaskConfig(num_prompts=16, max_operand=9, response_len=4)
VOCAB = 64


def _cfg():
    task = rlhf_task(TASK)
    width = task.prompt_tokens.shape[1] + TASK.response_len
    return task, GPT2Config(vocab_size=VOCAB, max_seq_len=width, d_model=16, n_layers=1, n_heads=2)


def _rm_members(cfg, key, e):
    """``e`` freshly initialised reward models: graphdef and params stacked ``[e, ...]``."""
    models = [ScoreModel(GPT2(cfg, rngs=nnx.Rngs(k)), 1, rngs=nnx.Rngs(k)) for k in jax.random.split(key, e)]
    graphdef = nnx.split(models[0])[0]
    return graphdef, [nnx.split(m)[1] for m in models]


def _stack(states):
    return jax.tree.map(lambda *x: jnp.stack(x), *states)


def test_proxy_reward_matches_per_member_loops():
    task, cfg = _cfg()
    graphdef, members0 = _rm_members(cfg, jax.random.key(0), 2)
    _, members1 = _rm_members(cfg, jax.random.key(1), 2)
    buf = RMBuffer.empty(_stack(members0), 3).insert(0, _stack(members0)).insert(1, _stack(members1))
    np.testing.assert_array_equal(np.asarray(buf.valid), [True, True, False])
    prompt, pmask = jnp.asarray(task.prompt_tokens[:6]), jnp.asarray(task.prompt_mask[:6])
    resp = jax.random.randint(jax.random.key(2), (6, TASK.response_len), 2, 20)
    rmask = jnp.asarray(np.tril(np.ones((6, TASK.response_len)), 1)[:, ::-1].copy(), jnp.int32)
    tokens, mask = jnp.concatenate([prompt, resp], 1), jnp.concatenate([pmask, rmask], 1)

    def score(state):  # one member, merged alone
        return np.asarray(nnx.merge(graphdef, state)(tokens, mask)[:, 0])

    r0 = np.mean([score(s) for s in members0], 0)
    r1 = np.mean([score(s) for s in members1], 0)
    np.testing.assert_allclose(
        np.asarray(round_score(graphdef, _stack(members1), tokens, mask)), r1, rtol=1e-5
    )
    avg = [jax.tree.map(lambda a, b: (a + b) / 2, a, b) for a, b in zip(members0, members1, strict=True)]
    expect = {
        "latest": r1,
        "ensemble_mean": (r0 + r1) / 2,
        "worst_case": np.minimum(r0, r1),
        "weight_average": np.mean([score(s) for s in avg], 0),
    }
    for mode, want in expect.items():
        got = jax.jit(proxy_reward_fn(graphdef, mode))((buf.params, buf.valid), prompt, pmask, resp, rmask)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5, err_msg=mode)
    assert hash(proxy_reward_fn(graphdef, "latest")) is not None


def _policy(cfg, seed):
    return ScoreModel(GPT2(cfg, rngs=nnx.Rngs(seed)), 1, rngs=nnx.Rngs(seed), keep_lm_head=True)


def test_best_of_n_curve_invariants():
    task, cfg = _cfg()
    graphdef, members = _rm_members(cfg, jax.random.key(0), 2)
    buf = RMBuffer.empty(_stack(members), 1).insert(0, _stack(members))
    sampling = SamplingConfig(max_new_tokens=TASK.response_len, eos_token_id=EOS, pad_token_id=PAD)
    ns = (1, 2, 4, 8)
    c = best_of_n_curve(
        _policy(cfg, 3),
        proxy_reward_fn(graphdef, "latest"),
        (buf.params, buf.valid),
        jnp.asarray(task.prompt_tokens),
        jnp.asarray(task.prompt_mask),
        jax.random.key(4),
        sampling,
        ns,
    )
    n = np.asarray(ns, np.float64)
    np.testing.assert_allclose(c["kl"], np.log(n) - (n - 1) / n, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(c["d"], np.sqrt(c["kl"]))
    assert abs(c["gold"][0]) < 1e-5 and abs(c["proxy"][0]) < 1e-5  # n = 1 is the policy itself
    assert np.all(np.diff(c["proxy"]) >= -1e-5)  # E[max of n] of the proxy is nondecreasing in n


def test_evaluate_policy_kl_against_hand_k3():
    task, cfg = _cfg()
    graphdef, members = _rm_members(cfg, jax.random.key(0), 1)
    buf = RMBuffer.empty(_stack(members), 1).insert(0, _stack(members))
    ppo_cfg = LMPPOConfig(max_new_tokens=TASK.response_len, eos_token_id=EOS, pad_token_id=PAD, num_samples=2)
    sft, pol = _policy(cfg, 5), _policy(cfg, 6)
    ppo = make_lm_ppo(sft, proxy_reward_fn(graphdef, "latest"), ppo_cfg)
    sft_params, pol_params = nnx.split(sft)[1], nnx.split(pol)[1]
    prompts, pmask = jnp.asarray(task.prompt_tokens), jnp.asarray(task.prompt_mask)
    key, rp = jax.random.key(7), (buf.params, buf.valid)
    same = evaluate_policy(ppo, sft_params, sft_params, prompts, pmask, key, rp)
    assert same.kl == 0.0
    e = evaluate_policy(ppo, pol_params, sft_params, prompts, pmask, key, rp)
    # independent: the rollout's samples re-scored by full forwards of both models, k3 summed by hand
    ro = ppo.rollout(ppo.init(pol, ref_params=sft_params), prompts, pmask, key, rp)
    p = prompts.shape[1]

    def logp(model):
        logits = np.asarray(model.forward(ro.tokens, ro.attn_mask).logits, np.float64)[:, p - 1 : -1]
        logz = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        logz -= logits.max(-1, keepdims=True)
        return np.take_along_axis(logz, np.asarray(ro.response)[..., None], -1)[..., 0]

    log_r = (logp(sft) - logp(pol)) * np.asarray(ro.mask)
    k3 = ((np.exp(log_r) - 1 - log_r) * np.asarray(ro.mask)).sum(-1).mean()
    assert e.kl > 0
    np.testing.assert_allclose(e.kl, k3, rtol=1e-3)
    gold = gold_reward_fn(None, jnp.repeat(prompts, 2, 0), jnp.repeat(pmask, 2, 0), ro.response, ro.mask)
    np.testing.assert_allclose(e.gold, float(jnp.mean(gold)), rtol=1e-6)


def test_gold_at_kl_against_numpy():
    kl = np.array([0.0, 2.0, 0.5, 1.0])
    gold = np.array([0.0, -1.0, 0.4, 0.2])
    assert gold_at_kl(kl, gold, 0.75) == pytest.approx(0.3)
    assert gold_at_kl(kl, gold, 1.5) == pytest.approx(np.interp(1.5, [0, 0.5, 1, 2], [0, 0.4, 0.2, -1]))
    assert np.isnan(gold_at_kl(kl, gold, 2.5))


def test_config_errors():
    with pytest.raises(ConfigError, match="eval_prompts"):
        StudyConfig(task=RLHFTaskConfig(num_prompts=64, max_operand=30, response_len=5), eval_prompts=64)
    with pytest.raises(ConfigError, match="ppo_batch"):
        StudyConfig(
            task=RLHFTaskConfig(num_prompts=64, max_operand=30, response_len=5), eval_prompts=32, ppo_batch=33
        )
    with pytest.raises(ConfigError, match="prompts_per_round"):  # raised before anything trains
        run_iterated_rlhf(StudyConfig(), IteratedRLHFConfig(prompts_per_round=5000))
    with pytest.raises(ConfigError, match="bon_ns"):
        StudyConfig(bon_ns=(4,))
    with pytest.raises(
        ConfigError, match="response_len"
    ):  # 30 * 30 needs more context than a max_operand=9 LM
        sft_policy(
            ArithmeticLMConfig(d_model=16, n_layers=1, n_heads=2, max_operand=9, steps=100),
            0,
            RLHFTaskConfig(num_prompts=16, max_operand=30, response_len=5),
            FinetuneConfig(steps=1, batch_size=4),
        )


@pytest.mark.slow  # ~60 s on 2 cores (a tiny LM trained and cached on first use)
def test_runs_vmapped_over_seeds_equal_each_run_alone():
    """Run 1 of a 2-seed vmapped cell against seed 1 run alone: the same prompts, pairs and labels (exactly),
    the same RMs (their training accuracy and best-of-n proxy curve, to float rounding); the mean is the mean."""
    study = StudyConfig(
        lm=ArithmeticLMConfig(d_model=32, n_layers=1, n_heads=2, max_operand=9, steps=150),
        task=RLHFTaskConfig(num_prompts=128, max_operand=9, response_len=4),
        sft=FinetuneConfig(steps=20, batch_size=16, chunk_steps=20),
        rm_steps=20,
        rm_batch=16,
        ppo=LMPPOConfig(lr=1e-3, num_samples=2, update_epochs=1),
        ppo_steps=2,
        ppo_batch=8,
        eval_every=1,
        eval_prompts=32,
        bon_ns=(1, 2, 4),
        bon_prompts=16,
    )
    cell = IteratedRLHFConfig(num_iterations=1, prompts_per_round=32, rm_members=2)
    both = run_iterated_rlhf(study, dataclasses.replace(cell, num_seeds=2))
    alone = run_iterated_rlhf(study, dataclasses.replace(cell, seed=1))
    assert both["seeds"] == [0, 1] and alone["seeds"] == [1]
    a, b = both["per_seed"][1]["iterations"][0], alone["per_seed"][0]["iterations"][0]
    assert a["label_accuracy"] == b["label_accuracy"] and a["num_pairs"] == b["num_pairs"]
    np.testing.assert_allclose(a["rm_accuracy"], b["rm_accuracy"], atol=0.05)  # a tie flips under rounding
    np.testing.assert_allclose(a["bon"]["proxy"], b["bon"]["proxy"], atol=2e-2)
    np.testing.assert_allclose(a["bon"]["gold"], b["bon"]["gold"], atol=2e-2)
    assert a["rl"]["kl"][0] == 0.0 and a["rl"]["gold"][0] == 0.0
    assert both["per_seed"][1]["sft_gold"] == pytest.approx(alone["sft_gold"], abs=1e-5)
    m = both["iterations"][0]
    for key in ("gold", "proxy", "kl"):
        want = np.mean([r["iterations"][0]["rl"][key] for r in both["per_seed"]], 0)
        np.testing.assert_allclose(m["rl"][key], want, atol=1e-12)
