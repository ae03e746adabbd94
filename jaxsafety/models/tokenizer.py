"""Tokenizers for the model zoo: load a local HF tokenizer, train a byte-level BPE, pack a corpus into rows.

Tokenizers are HF ``PreTrainedTokenizerFast`` objects (backed by the Rust ``tokenizers`` library), so a tokenizer
trained here is saved with ``tok.save_pretrained(dir)`` next to an HF-format model and loads back with
``AutoTokenizer.from_pretrained(dir)`` (or :func:`load_tokenizer`). Nothing is downloaded: paths are local.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from jaxsafety.config import check, check_range

__all__ = ["encode_corpus", "load_tokenizer", "train_bpe_tokenizer"]

BYTE_ALPHABET_SIZE = 256  # byte-level BPE starts from one token per byte


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved in the local directory ``path`` (``tokenizer.json`` etc.; never downloads).

    If it has no pad token (HF GPT-2 has none), the EOS token doubles as pad token.
    """
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    special_tokens: Sequence[str] = ("<|endoftext|>", "<pad>"),
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer on ``texts``.

    The vocabulary holds ``special_tokens`` (ids ``0..len-1``), the 256 byte symbols, then merges of pairs seen at
    least ``min_frequency`` times, up to ``vocab_size`` entries in all (fewer if the corpus runs out of merges;
    ``len(tok)`` is the real size). ``special_tokens[0]`` is the EOS token and also serves as BOS and UNK (as in
    GPT-2); ``special_tokens[1]``, if given, is the pad token, else EOS doubles as pad. Encoding adds no special
    tokens (no BOS prefix): documents are separated with EOS by :func:`encode_corpus`. Training is deterministic
    in ``texts``. Save with ``tok.save_pretrained(dir)``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    special_tokens = tuple(special_tokens)
    check(len(special_tokens) >= 1, "special_tokens", special_tokens, "a non-empty sequence of strings")
    check_range("vocab_size", vocab_size, ge=BYTE_ALPHABET_SIZE + len(special_tokens), integer=True)
    check_range("min_frequency", min_frequency, ge=1, integer=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    eos = special_tokens[0]
    pad = special_tokens[1] if len(special_tokens) > 1 else eos
    extra = list(special_tokens[2:])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos,
        bos_token=eos,
        unk_token=eos,
        pad_token=pad,
        additional_special_tokens=extra or None,
    )


def encode_corpus(tokenizer: PreTrainedTokenizerFast, texts: Iterable[str], seq_len: int) -> np.ndarray:
    """Pack documents into fixed-length rows for LM training: int32 ``[N, seq_len]``, no padding.

    Scheme (GPT-2 style packing): each document is encoded without special tokens and followed by one EOS, the
    results are concatenated in order into one stream ``d1 EOS d2 EOS ...``, and the stream is cut into
    consecutive rows of ``seq_len`` tokens; the final partial row is dropped. A document may therefore span two
    rows, and a row may hold several documents: attention is not reset at EOS, the model learns that EOS starts
    a new document. Every token is real, so the attention / loss mask of these rows is all ones.

    Raises ``ValueError`` when the corpus holds fewer than ``seq_len`` tokens.
    """
    check_range("seq_len", seq_len, ge=1, integer=True)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos_token: encode_corpus separates documents with EOS")
    docs = list(texts)
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []
    stream = np.fromiter(
        (t for doc in ids for t in (*doc, eos)), dtype=np.int64, count=sum(len(d) + 1 for d in ids)
    )
    n_rows = stream.size // seq_len
    if n_rows == 0:
        raise ValueError(
            f"corpus has {stream.size} tokens, fewer than seq_len={seq_len}: add documents or shorten seq_len"
        )
    return stream[: n_rows * seq_len].reshape(n_rows, seq_len).astype(np.int32)
