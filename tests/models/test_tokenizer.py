"""Byte-level BPE training, local loading and corpus packing (jaxsafety.models.tokenizer)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.models.tokenizer import CharTokenizer, encode_corpus, load_tokenizer, train_bpe_tokenizer

TEXTS = [
    "The cat sat on the mat. The dog sat on the log.",
    "12 + 7 = 19.\n3 * 4 = 12.",
    "Once upon a time, Anna went to the park. There she met Ben.",
    "Ben gave Anna a red ball, and Anna was happy. The end.",
] * 20


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(TEXTS, 300)


def test_special_tokens_and_vocab(tok):
    assert tok.convert_ids_to_tokens([0, 1]) == ["<|endoftext|>", "<pad>"]
    assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (0, 0, 1)
    assert 258 < len(tok) <= 300  # 2 specials + 256 bytes + some merges
    assert tok.encode("the cat", add_special_tokens=False) == tok("the cat")["input_ids"]  # no BOS added
    assert len(tok.encode(" the", add_special_tokens=False)) == 1  # a frequent word was merged


@pytest.mark.parametrize("text", ["The cat sat.", "  two  spaces\nand tabs\t!", "ünïcödé ✓ 日本", "🙂"])
def test_byte_level_roundtrip_is_lossless(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert tok.unk_token_id not in ids or text == ""  # bytes cover everything: nothing maps to UNK


def test_training_is_deterministic_and_saves_loads(tok, tmp_path):
    again = train_bpe_tokenizer(list(TEXTS), 300)
    assert json.loads(again.backend_tokenizer.to_str()) == json.loads(tok.backend_tokenizer.to_str())
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    text = "Anna went to the park. 12 + 7 = 19."
    assert loaded.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert (loaded.eos_token_id, loaded.pad_token_id) == (0, 1)


def test_single_special_token_doubles_as_pad(tmp_path):
    t = train_bpe_tokenizer(TEXTS, 280, special_tokens=("<eos>",))
    assert t.eos_token_id == t.pad_token_id == 0


def test_bad_arguments():
    with pytest.raises(ConfigError, match=r"vocab_size=100 is invalid: accepted values are integers >= 258"):
        train_bpe_tokenizer(TEXTS, 100)
    with pytest.raises(ConfigError, match="min_frequency"):
        train_bpe_tokenizer(TEXTS, 300, min_frequency=0)


def test_encode_corpus_packs_documents_with_eos(tok):
    docs = ["The cat sat on the mat.", "12 + 7 = 19.", "Anna met Ben."] * 5
    seq_len = 7
    rows = encode_corpus(tok, docs, seq_len)
    # independent construction: per-document encode, EOS after each, concatenate, cut, drop the tail
    stream = []
    for d in docs:
        stream += [*tok.encode(d, add_special_tokens=False), tok.eos_token_id]
    n = len(stream) // seq_len
    assert rows.dtype == np.int32 and rows.shape == (n, seq_len)
    np.testing.assert_array_equal(rows.ravel(), stream[: n * seq_len])
    assert (rows == tok.eos_token_id).sum() == stream[: n * seq_len].count(tok.eos_token_id)


def test_encode_corpus_too_short(tok):
    with pytest.raises(ValueError, match="fewer than seq_len=1000"):
        encode_corpus(tok, ["short"], 1000)


# ----------------------------------------------------------------------------------------------------------------
# the character tokenizer


def test_char_tokenizer_round_trip_and_ids():
    tok = CharTokenizer("0123456789 +-*=.", eos=".")
    text = "12 * 7 = 84."
    ids = tok.encode(text)
    assert ids == [2 + "0123456789 +-*=.".index(c) for c in text]  # one id per character, after pad and BOS
    assert tok.encode(text, bos=True) == [tok.bos_token_id, *ids]
    assert tok.decode([tok.bos_token_id, *ids, tok.pad_token_id]) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, tok.encode(".")[0])
    assert tok.vocab_size == len(tok) == 18
    assert CharTokenizer("ab").eos_token_id is None
    assert CharTokenizer.from_texts(["ba", "ca"], eos="\n") == CharTokenizer("\nabc", eos="\n")
    assert hash(tok) == hash(CharTokenizer("0123456789 +-*=.", eos="."))  # frozen: a static jit argument
    with pytest.raises(ValueError, match="char='/'"):
        tok.encode("1 / 2")


def test_char_tokenizer_batches_against_a_loop():
    tok = CharTokenizer("abc")
    texts = ["a", "abc", "cb"]
    for left in (False, True):
        tokens, mask = tok.encode_batch(texts, width=6, left=left)
        assert tokens.shape == mask.shape == (3, 6) and tokens.dtype == mask.dtype == np.int32
        for row, m, text in zip(tokens.tolist(), mask.tolist(), texts, strict=True):
            ids = [1, *(2 + "abc".index(c) for c in text)]
            pad = [0] * (6 - len(ids))
            assert row == (pad + ids if left else ids + pad)
            assert m == ([0] * len(pad) + [1] * len(ids) if left else [1] * len(ids) + [0] * len(pad))
    tokens, _ = tok.encode_batch(texts, bos=False)
    assert tokens.shape == (3, 3) and tokens[0].tolist() == [2, 0, 0]
    with pytest.raises(ConfigError, match=r"^width=3 .*at least the longest row \(4 tokens\)"):
        tok.encode_batch(texts, width=3)


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"alphabet": "aa"}, "alphabet"), ({"alphabet": ""}, "alphabet"),
                          ({"alphabet": "ab", "eos": "c"}, "eos"), ({"alphabet": "ab", "eos": "ab"}, "eos")]
)  # fmt: skip
def test_char_tokenizer_validation(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}="):
        CharTokenizer(**kwargs)
