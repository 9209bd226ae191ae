"""Tokenizers: text to padded token ids, with a vocabulary fitted on training texts.

Id 0 is ``<pad>`` and id 1 is ``<unk>``. The vocabulary is ordered by decreasing frequency then
by token, so it is deterministic and tokens never seen in fitting map to ``<unk>``. A tokenizer
saved with :meth:`~Tokenizer.to_dict` and restored with :func:`tokenizer_from_dict` reproduces
the encoding exactly.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, SpecError

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
SPECIALS = (PAD, UNK)
WORD_PATTERN = r"[a-z0-9]+"


class Tokenizer:
    """Shared vocabulary logic: fit on texts, encode to padded ids, save/restore as a dict."""

    kind = ""

    def __init__(self, max_len: int, lowercase: bool = True, vocab: Sequence[str] | None = None) -> None:
        if int(max_len) < 1:
            raise SpecError(f"{self.kind} tokenizer: max_len must be at least 1, got {max_len}")
        self.max_len = int(max_len)
        self.lowercase = bool(lowercase)
        self.vocab: list[str] = []
        self.index: dict[str, int] = {}
        if vocab is not None:
            self._set_vocab(list(vocab))

    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    def _set_vocab(self, vocab: list[str]) -> None:
        if tuple(vocab[:2]) != SPECIALS:
            raise InputError(f"{self.kind} tokenizer: a vocabulary must start with {PAD!r}, {UNK!r}")
        if len(set(vocab)) != len(vocab):
            raise InputError(f"{self.kind} tokenizer: the vocabulary has duplicate tokens")
        self.vocab = vocab
        self.index = {t: i for i, t in enumerate(vocab)}

    def fit(self, texts: Iterable[str], min_count: int = 1, max_vocab: int | None = None) -> Tokenizer:
        """Build the vocabulary from ``texts``: tokens seen at least ``min_count`` times, most
        frequent first (ties by token), at most ``max_vocab`` entries including the two specials."""
        if max_vocab is not None and max_vocab < 3:
            raise SpecError(f"{self.kind} tokenizer: max_vocab must be at least 3, got {max_vocab}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(self.split(text))
        for special in SPECIALS:
            counts.pop(special, None)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        if max_vocab is not None:
            kept = kept[: max_vocab - len(SPECIALS)]
        self._set_vocab([*SPECIALS, *kept])
        return self

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids, N×max_len int64: truncated to ``max_len`` tokens, padded with ``PAD_ID``."""
        if not self.vocab:
            raise InputError(f"{self.kind} tokenizer: fit it (or load a vocabulary) before encoding")
        out = np.zeros((len(texts), self.max_len), dtype=np.int64)
        get = self.index.get
        for row, text in enumerate(texts):
            ids = [get(t, UNK_ID) for t in self.split(text)[: self.max_len]]
            out[row, : len(ids)] = ids
        return out

    def decode(self, ids: np.ndarray) -> list[list[str]]:
        """The tokens of each row, padding removed (unknown tokens come back as ``<unk>``)."""
        return [[self.vocab[i] for i in row if i != PAD_ID] for row in np.asarray(ids).tolist()]

    def settings(self) -> dict[str, Any]:
        """The tokenizer without its vocabulary (what ``info["tokenizer"]`` records)."""
        return {"kind": self.kind, "max_len": self.max_len, "lowercase": self.lowercase}

    def to_dict(self) -> dict[str, Any]:
        return {**self.settings(), "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        if d.get("kind") != cls.kind:
            raise InputError(f"tokenizer kind is {d.get('kind')!r}, expected {cls.kind!r}")
        return cls(**{k: v for k, v in d.items() if k != "kind"})


class CharTokenizer(Tokenizer):
    """One token per character (after optional lowercasing and NFC normalisation)."""

    kind = "char"

    def split(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFC", text)
        return list(text.lower() if self.lowercase else text)


class WordTokenizer(Tokenizer):
    """Words are the matches of a regex (default ``[a-z0-9]+`` on lowercased text)."""

    kind = "word"

    def __init__(
        self,
        max_len: int,
        lowercase: bool = True,
        vocab: Sequence[str] | None = None,
        pattern: str = WORD_PATTERN,
    ) -> None:
        super().__init__(max_len, lowercase, vocab)
        self.pattern = pattern
        self._regex = re.compile(pattern)

    def split(self, text: str) -> list[str]:
        return self._regex.findall(text.lower() if self.lowercase else text)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "pattern": self.pattern}


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Restore a tokenizer saved with ``to_dict`` (char or word, by its ``kind``)."""
    kinds: dict[str, type[Tokenizer]] = {CharTokenizer.kind: CharTokenizer, WordTokenizer.kind: WordTokenizer}
    if d.get("kind") not in kinds:
        raise InputError(f"unknown tokenizer kind {d.get('kind')!r}; known: {', '.join(kinds)}")
    return kinds[d["kind"]].from_dict(d)
