"""The task's gold reward against hand-made token sequences and an independent string parser; SFT rows; the
Bradley-Terry labeller's frequencies against the sigmoid; preference collection."""

import functools

import jax
import numpy as np
import pytest
from scipy import stats

from jaxsafety.config import ConfigError
from jaxsafety.rlhf import (
    GoldConfig,
    RLHFTaskConfig,
    answers_from_prompts,
    collect_preferences,
    gold_reward,
    gold_reward_fn,
    gold_terms,
    label_preferences,
    pair_sequences,
    rlhf_task,
    sft_data,
    task_tokenizer,
    with_prompts,
)
from jaxsafety.rlhf.task import MAX_ANSWER_DIGITS

TOK = task_tokenizer()
WIDTH = 8


def _responses(texts, width=WIDTH, real=None):
    """Right-padded response rows; ``real[i]`` real tokens (None: the whole text)."""
    tokens = np.zeros((len(texts), width), np.int32)
    mask = np.zeros_like(tokens)
    for i, t in enumerate(texts):
        ids = TOK.encode(t)
        tokens[i, : len(ids)] = ids
        mask[i, : len(ids) if real is None else real[i]] = 1
    return tokens, mask


def _answers(values, width=4):
    digits = np.zeros((len(values), width), np.int32)
    for i, v in enumerate(values):
        digits[i, : len(str(v))] = [TOK.token_id(c) for c in str(v)]
    return digits, np.array([len(str(v)) for v in values], np.int32)


NO_CLOSE = GoldConfig(closeness=0.0)


def test_gold_reward_on_hand_made_sequences():
    # answer 31; weights exact 1, partial 1, closeness 0 (tested below), format 0.5, length 0.25 per digit (cap 3)
    cases = {
        " 31.": 2.0,  # exact: 1 + 1
        " 32.": 0.5,  # first digit right
        " 3.": 0.5 - 0.25,  # one digit right, one digit short
        " 311.": 1.0 - 0.25,  # both right, one digit too many
        "31.": -0.5,  # no leading space: bad format, digits not at their positions
        " 3+1.": 0.5 - 0.5,  # a non-digit in the body: bad format; '3' right; two digits
        " 31.99": 2.0,  # everything after EOS is ignored
        " 1111111": 0.5
        - 0.5
        - 0.75,  # no EOS: bad format; '1' right at position 2; 7 digits (gap capped at 3)
        ".": -0.5 - 0.5,  # empty body: bad format, 2 digits missing
    }
    tokens, mask = _responses(list(cases))
    digits, lengths = _answers([31] * len(cases))
    got = np.asarray(gold_reward(tokens, mask, digits, lengths, NO_CLOSE))
    np.testing.assert_allclose(got, list(cases.values()), atol=1e-6)
    terms = gold_terms(tokens, mask, digits, lengths)
    assert terms.exact.tolist() == [True, False, False, False, False, False, True, False, False]
    assert terms.format_ok.tolist() == [True, True, True, True, False, False, True, False, False]


def test_gold_reward_ignores_padding_and_respects_the_mask():
    # " 31" then garbage the mask excludes: no EOS among the real tokens
    tokens, mask = _responses([" 31.", " 31"], real=[3, 3])
    digits, lengths = _answers([31, 31])
    got = np.asarray(gold_reward(tokens, mask, digits, lengths, NO_CLOSE))
    np.testing.assert_allclose(got, [1.0 - 0.5, 1.0 - 0.5], atol=1e-6)  # all digits right, no EOS
    cfg = GoldConfig(exact=2.0, partial=0.0, closeness=0.0, format=1.0, length=0.0)
    t2, m2 = _responses([" 7.", " 70."])
    d2, l2 = _answers([7, 7])
    np.testing.assert_allclose(gold_reward(t2, m2, d2, l2, cfg), [2.0, 0.0], atol=1e-6)


def test_gold_closeness_term_by_hand():
    # answer 31: closeness = 1 - min(|x - 31| / 32, 1) for a well-formed answer x, else 0
    tokens, mask = _responses([" 31.", " 30.", " 62.", " 100.", " 0.", "31.", " 30"])
    digits, lengths = _answers([31] * 7)
    terms = gold_terms(tokens, mask, digits, lengths)
    np.testing.assert_allclose(
        terms.closeness, [1.0, 1 - 1 / 32, 1 - 31 / 32, 0.0, 1 - 31 / 32, 0.0, 0.0], atol=1e-6
    )
    only = GoldConfig(exact=0.0, partial=0.0, closeness=2.0, format=0.0, length=0.0)
    np.testing.assert_allclose(
        gold_reward(tokens, mask, digits, lengths, only), 2 * terms.closeness, atol=1e-6
    )


def _gold_reference(text: str, answer: int, cfg: GoldConfig) -> float:
    """An independent string implementation of the documented gold reward."""
    has_eos = "." in text
    body = text.split(".")[0]
    a = str(answer)
    format_ok = has_eos and len(body) >= 2 and body[0] == " " and body[1:].isdigit()
    lead = body[:1] == " "
    hits = sum(1 for j, c in enumerate(a) if lead and 1 + j < len(body) and body[1 + j] == c)
    n_digits = sum(c.isdigit() for c in body)
    exact = format_ok and body[1:] == a
    gap = abs(n_digits - len(a))
    close = 1 - min(abs(int(body[1:]) - answer) / (answer + 1), 1) if format_ok else 0.0
    return (
        cfg.exact * exact
        + cfg.partial * hits / len(a)
        + cfg.closeness * close
        - cfg.format * (not format_ok)
        - cfg.length * min(gap, cfg.length_cap)
    )


def test_gold_reward_matches_a_string_reference_on_random_sequences():
    rng = np.random.default_rng(0)
    chars = "0123456789 +."
    texts, answers, real = [], [], []
    for _ in range(400):
        ans = int(rng.integers(0, 1000))
        if rng.uniform() < 0.4:  # near-correct responses with edits
            t = list(f" {ans}.")
            for _ in range(int(rng.integers(0, 3))):
                t[int(rng.integers(len(t)))] = chars[int(rng.integers(len(chars)))]
            t = "".join(t)
        else:
            t = "".join(chars[int(i)] for i in rng.integers(0, len(chars), int(rng.integers(1, WIDTH + 1))))
        texts.append(t[:WIDTH])
        answers.append(ans)
        real.append(len(t[:WIDTH]))
    tokens, mask = _responses(texts)
    digits, lengths = _answers(answers)
    cfg = GoldConfig(exact=1.5, partial=0.7, closeness=0.9, format=0.3, length=0.2, length_cap=2)
    got = np.asarray(gold_reward(tokens, mask, digits, lengths, cfg))
    want = np.array([_gold_reference(t, a, cfg) for t, a in zip(texts, answers)])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_task_prompts_answers_and_sft_rows():
    cfg = RLHFTaskConfig(num_prompts=16, max_operand=12, seed=3, response_len=6)
    task = rlhf_task(cfg)
    p = task.problems
    for i in range(task.num_prompts):
        assert TOK.decode(task.prompt_tokens[i][task.prompt_mask[i] > 0]) == p.prompts[i]
        assert task.prompt_tokens[i][task.prompt_mask[i] > 0][0] == TOK.bos_token_id
        assert TOK.decode(task.answer_digits[i]) == str(p.answers[i])
        assert task.answer_len[i] == len(str(p.answers[i]))
    assert (task.prompt_mask[:, -1] == 1).all()  # left-padded
    data = sft_data(task)
    assert data.num_rows == 16
    # the SFT response (the loss-masked tokens) is exactly the gold-optimal response of its prompt
    resp = np.zeros((16, cfg.response_len), np.int32)
    rmask = np.zeros_like(resp)
    for i in range(16):
        r = data.tokens[i][data.loss_mask[i] > 0]
        resp[i, : r.size], rmask[i, : r.size] = r, 1
        assert TOK.decode(data.tokens[i][data.mask[i] > 0]) == p.equations[i]
    terms = gold_terms(resp, rmask, task.answer_digits, task.answer_len)
    assert terms.exact.all()
    # prompt + response rows for a reward model
    full, fmask = with_prompts(task, np.array([2, 0]), resp[[2, 0]], rmask[[2, 0]])
    assert TOK.decode(np.asarray(full[0])[np.asarray(fmask[0]) > 0]) == p.equations[2]
    assert full.shape == (2, task.prompt_tokens.shape[1] + cfg.response_len)


def test_task_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="response_len"):
        RLHFTaskConfig(max_operand=30, ops=("*",), response_len=4)  # 900 needs 3 digits + space + EOS
    with pytest.raises(ConfigError, match="ops"):
        RLHFTaskConfig(ops=("/",))
    with pytest.raises(ConfigError, match="length_cap"):
        GoldConfig(length_cap=0)
    with pytest.raises(ConfigError, match="partial"):
        GoldConfig(partial=-1.0)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_label_noise_frequencies_follow_the_bradley_terry_sigmoid(temperature):
    diffs = np.array([-2.0, -0.5, 0.0, 0.3, 1.0, 3.0])
    n = 20_000
    r_a = np.repeat(diffs, n)
    labels = np.asarray(label_preferences(r_a, np.zeros_like(r_a), jax.random.key(0), temperature))
    wins = labels.reshape(len(diffs), n).sum(axis=1)
    p = 1 / (1 + np.exp(-diffs / temperature))
    for k, pi in zip(wins, p):
        # two-sided exact binomial test; a correct sampler fails one of these 12 tests with prob. ~1e-3
        assert stats.binomtest(int(k), n, pi).pvalue > 1e-4, (k / n, pi)
        assert abs(k / n - pi) < 4.5 * np.sqrt(pi * (1 - pi) / n) + 1e-9


def test_label_noise_temperature_zero_is_noiseless_and_negative_is_rejected():
    a = np.array([1.0, 0.0, 0.5] * 4000)
    b = np.array([0.0, 1.0, 0.5] * 4000)
    labels = np.asarray(label_preferences(a, b, jax.random.key(1), 0.0)).reshape(-1, 3)
    assert labels[:, 0].all() and not labels[:, 1].any()
    assert stats.binomtest(int(labels[:, 2].sum()), labels.shape[0], 0.5).pvalue > 1e-4  # ties: a fair coin
    with pytest.raises(ConfigError, match="temperature"):
        label_preferences(a, b, jax.random.key(1), -1.0)


def test_collect_preferences_pairs_samples_and_picks_the_labelled_winner():
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 18, (8, 5)).astype(np.int32)
    mask = (rng.uniform(size=(8, 5)) < 0.8).astype(np.int32)
    gold = rng.normal(size=8).astype(np.float32)
    key = jax.random.key(4)
    pairs = collect_preferences(
        key, tokens, mask, gold, np.array([7, 3, 5, 1]), temperature=0.7, round_index=2
    )
    a_wins = np.asarray(label_preferences(gold[0::2], gold[1::2], key, 0.7))
    for i in range(4):
        a, b = 2 * i, 2 * i + 1
        win, lose = (a, b) if a_wins[i] else (b, a)
        np.testing.assert_array_equal(pairs.chosen[i], tokens[win])
        np.testing.assert_array_equal(pairs.rejected_mask[i], mask[lose])
        assert pairs.gold_chosen[i] == gold[win] and pairs.gold_rejected[i] == gold[lose]
    assert pairs.prompt_index.tolist() == [7, 3, 5, 1] and pairs.round.tolist() == [2] * 4
    # full sequences for a reward model: each pair's prompt, then its response
    task = rlhf_task(RLHFTaskConfig(num_prompts=8, max_operand=5, response_len=5))
    ch, chm, rj, rjm = (np.asarray(x) for x in pair_sequences(task, pairs))
    tp = task.prompt_tokens.shape[1]
    for i, p in enumerate([7, 3, 5, 1]):
        np.testing.assert_array_equal(ch[i, :tp], task.prompt_tokens[p])
        np.testing.assert_array_equal(rjm[i, :tp], task.prompt_mask[p])
        np.testing.assert_array_equal(ch[i, tp:], pairs.chosen[i])
        np.testing.assert_array_equal(rj[i, tp:], pairs.rejected[i])
        np.testing.assert_array_equal(chm[i, tp:], pairs.chosen_mask[i])
    with pytest.raises(ValueError, match="two samples per prompt"):
        collect_preferences(key, tokens, mask, gold, np.array([0, 1, 2]))


def test_answers_from_prompts_reads_the_problem_back_from_its_tokens():
    task = rlhf_task(RLHFTaskConfig(num_prompts=300, max_operand=9999, seed=5, response_len=10))
    digits, length = answers_from_prompts(task.prompt_tokens, task.prompt_mask)
    want = np.zeros((300, MAX_ANSWER_DIGITS), np.int32)
    want[:, : task.answer_digits.shape[1]] = task.answer_digits
    np.testing.assert_array_equal(digits, want)
    np.testing.assert_array_equal(length, task.answer_len)
    # right padding reads the same (the mask, not the layout, selects the tokens)
    rows = [TOK.encode(p, bos=True) for p in ["0 * 0 =", "9999 * 9999 =", "10 - 10 ="]]
    tok = np.zeros((3, 16), np.int32)
    mask = np.zeros_like(tok)
    for i, r in enumerate(rows):
        tok[i, : len(r)], mask[i, : len(r)] = r, 1
    d, n = answers_from_prompts(tok, mask)
    assert [TOK.decode(x) for x in np.asarray(d)] == ["0", "99980001", "0"] and n.tolist() == [1, 8, 1]


def test_gold_reward_fn_plugs_into_best_of_n():
    from flax import nnx

    from jaxsafety.models import GPT2, GPT2Config, SamplingConfig
    from jaxsafety.rl.lm_ppo import best_of_n

    task = rlhf_task(RLHFTaskConfig(num_prompts=6, max_operand=9, ops=("+",), response_len=4))
    model = GPT2(GPT2Config(vocab_size=TOK.vocab_size, max_seq_len=16, d_model=16, n_layers=1, n_heads=2),
                 rngs=nnx.Rngs(0))  # fmt: skip
    fn = functools.partial(gold_reward_fn, config=GoldConfig(length=0.5))
    sampling = SamplingConfig(max_new_tokens=4, eos_token_id=TOK.eos_token_id)
    out = best_of_n(model, fn, task.prompt_tokens, task.prompt_mask, jax.random.key(0), 4, sampling)
    want = gold_reward(out.tokens, out.mask, task.answer_digits, task.answer_len, GoldConfig(length=0.5))
    np.testing.assert_allclose(out.score, want, atol=1e-6)
    np.testing.assert_allclose(out.score, np.asarray(out.scores).max(1), atol=1e-6)
