"""Tokenizers for the model zoo: a character-level tokenizer for synthetic tasks; load a local HF tokenizer, train a
byte-level BPE, pack a corpus into rows.

:class:`CharTokenizer` (pad 0, BOS 1, then one id per character) is for tasks over a small alphabet, where a
number's tokens must be its digits (arithmetic; see :mod:`jaxsafety.data.arithmetic`). The other tokenizers are HF
``PreTrainedTokenizerFast`` objects (backed by the Rust ``tokenizers`` library), so a tokenizer trained here is
saved with ``tok.save_pretrained(dir)`` next to an HF-format model and loads back with
``AutoTokenizer.from_pretrained(dir)`` (or :func:`load_tokenizer`). Nothing is downloaded: paths are local.
``transformers`` is imported only by the functions that need it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from jaxsafety.config import ConfigError, check, check_range

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["CharTokenizer", "encode_corpus", "load_tokenizer", "train_bpe_tokenizer"]

BYTE_ALPHABET_SIZE = 256  # byte-level BPE starts from one token per byte


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
    """Character-level tokenizer: id 0 = pad, 1 = BOS, then ``2 + i`` for character ``alphabet[i]``.

    Every string over ``alphabet`` has exactly one encoding (one token per character), so the probability of a
    string is one product of next-token probabilities; digits are single tokens, so a number's tokens are its
    decimal digits (a BPE would merge frequent digit strings and make an answer's tokens depend on the number).
    ``eos`` (None: no EOS) is a character of ``alphabet`` that ends a sequence: generation stops after it
    (:data:`jaxsafety.data.arithmetic.TERMINATOR` for arithmetic). Frozen and hashable: usable as a static
    argument and a config field. Shapes: ``encode`` gives a list, :meth:`encode_batch` int32 ``[B, width]``.
    """

    alphabet: str
    eos: str | None = None

    pad_token_id: ClassVar[int] = 0
    bos_token_id: ClassVar[int] = 1
    num_special: ClassVar[int] = 2

    def __post_init__(self) -> None:
        check(
            isinstance(self.alphabet, str)
            and len(self.alphabet) >= 1
            and len(set(self.alphabet)) == len(self.alphabet),
            "alphabet",
            self.alphabet,
            "a non-empty string of distinct characters",
        )
        if self.eos is not None:
            check(
                self.eos in tuple(self.alphabet),
                "eos",
                self.eos,
                f"None or one character of {self.alphabet!r}",
            )

    @classmethod
    def from_texts(cls, texts: Iterable[str], *, eos: str | None = None) -> CharTokenizer:
        """The tokenizer whose alphabet is the sorted set of characters of ``texts`` (plus ``eos``)."""
        chars = {c for t in texts for c in t}
        if eos is not None:
            chars.add(eos)
        return cls("".join(sorted(chars)), eos)

    @property
    def vocab_size(self) -> int:
        return self.num_special + len(self.alphabet)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def eos_token_id(self) -> int | None:
        """Id of ``eos`` (None when the tokenizer has no EOS)."""
        return None if self.eos is None else self.token_id(self.eos)

    def token_id(self, char: str) -> int:
        """Id of one character of ``alphabet``; ``ValueError`` for anything else."""
        i = self.alphabet.find(char) if isinstance(char, str) and len(char) == 1 else -1
        if i < 0:
            raise ValueError(
                f"char={char!r} is invalid: accepted values are single characters of the alphabet {self.alphabet!r}"
            )
        return self.num_special + i

    def encode(self, text: str, *, bos: bool = False) -> list[int]:
        """Token ids of ``text``, one per character, with a leading BOS if ``bos``."""
        return [self.bos_token_id] * bos + [self.token_id(c) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, skipping pad and BOS."""
        return "".join(self.alphabet[i - self.num_special] for i in map(int, ids) if i >= self.num_special)

    def encode_batch(
        self, texts: Sequence[str], *, bos: bool = True, width: int | None = None, left: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Padded rows: ``tokens, mask`` int32 ``[len(texts), width]`` (``width`` None: the longest row), rows
        ``[BOS] + text`` (BOS if ``bos``) LEFT-padded if ``left`` (the prompt layout of
        :func:`~jaxsafety.models.generate.generate`), else RIGHT-padded (teacher forcing), pad id 0, mask 1 on real
        tokens. Raises :class:`~jaxsafety.config.ConfigError` (field ``width``) if a row does not fit."""
        rows = [self.encode(t, bos=bos) for t in texts]
        longest = max((len(r) for r in rows), default=0)
        width = longest if width is None else width
        if width < longest:
            raise ConfigError("width", width, f"at least the longest row ({longest} tokens)")
        tokens = np.full((len(rows), width), self.pad_token_id, np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            cols = slice(width - len(r), width) if left else slice(0, len(r))
            tokens[i, cols] = r
            mask[i, cols] = 1
        return tokens, mask


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved in the local directory ``path`` (``tokenizer.json`` etc.; never downloads).

    If it has no pad token (HF GPT-2 has none), the EOS token doubles as pad token.
    """
    from transformers import AutoTokenizer

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
    from transformers import PreTrainedTokenizerFast

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
