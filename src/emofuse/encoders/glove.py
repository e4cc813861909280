"""GloVe word vectors as a text encoder: a user-supplied GloVe text file, read once (cached), one vector per word.

Re-exported by :mod:`emofuse.encoders.handcrafted`, which registers it as ``glove``.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emofuse.encoders.base import Encoder, EncoderError, EncoderOutput, Provenance, settings_fingerprint
from emofuse.layers.pooling import masked_mean

__all__ = ["GLOVE_TOKEN_PATTERN", "GloveEncoder", "clear_glove_cache", "tokenize_words"]

#: Word tokens for GloVe: runs of lower-case letters, digits and apostrophes (``"don't"`` is one token).
GLOVE_TOKEN_PATTERN = r"[a-z0-9']+"
_TOKEN_RE = re.compile(GLOVE_TOKEN_PATTERN)


# ---------------------------------------------------------------------------------------------------
# GloVe


def tokenize_words(text: str) -> list[str]:
    """GloVe word tokens: ``re.findall(r"[a-z0-9']+", text.lower())``."""
    return _TOKEN_RE.findall(text.lower())


@dataclass
class _GloveTable:
    words: dict[str, int]  # word -> row (rows start at 1; row 0 is the zero vector)
    vectors: Tensor  # (V + 1, D) float32
    first_line_sha: str


_GLOVE_CACHE: OrderedDict[tuple[Any, ...], _GloveTable] = OrderedDict()
_GLOVE_CACHE_SIZE = 4


def clear_glove_cache() -> None:
    """Forget every parsed GloVe file kept in this process."""
    _GLOVE_CACHE.clear()


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _parse_glove(path: Path, vocab: frozenset[str] | None) -> _GloveTable:
    """Stream a GloVe text file, keeping only words the tokeniser can produce (and in ``vocab``).

    Keys are lower-cased and the first occurrence wins (GloVe files are sorted by frequency, so a cased
    file such as 840B gives each lower-case token the vector of its most frequent casing). Lines whose
    word contains spaces (a few in 840B, e.g. ``". . ."``) can never match a token and are skipped.
    """
    words: dict[str, int] = {}
    rows: list[np.ndarray] = []
    dim: int | None = None
    first_sha = ""
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n").rstrip(" ")
            if not line.strip():
                continue
            parts = line.split(" ")
            if dim is None:
                dim = len(parts) - 1
                first_sha = hashlib.sha256(line.encode()).hexdigest()[:16]
                if dim < 1:
                    raise EncoderError(f"{path}:{lineno}: malformed GloVe line: a word followed by no values")
            n_values = len(parts) - 1
            if n_values < dim or (n_values > dim and all(_is_float(p) for p in parts[1 : len(parts) - dim])):
                raise EncoderError(
                    f"{path}:{lineno}: malformed GloVe line: expected {dim} values (from line 1), found {n_values}"
                )
            if n_values > dim:  # a multi-word key
                continue
            word = parts[0].lower()
            if word in words or not _TOKEN_RE.fullmatch(word) or (vocab is not None and word not in vocab):
                continue
            try:
                rows.append(np.asarray([float(v) for v in parts[1:]], dtype=np.float32))
            except ValueError as e:
                raise EncoderError(f"{path}:{lineno}: malformed GloVe line: {e}") from None
            words[word] = len(rows)
    if dim is None:
        raise EncoderError(f"GloVe file {path} is empty")
    matrix = np.zeros((len(rows) + 1, dim), dtype=np.float32)
    if rows:
        matrix[1:] = np.stack(rows)
    return _GloveTable(words=words, vectors=torch.from_numpy(matrix), first_line_sha=first_sha)


def _load_glove(path: Path, vocab: frozenset[str] | None) -> _GloveTable:
    """Parsed GloVe vectors, cached per (path, mtime, size, vocab) in this process."""
    if not path.is_file():
        raise EncoderError(f"GloVe file not found: {path}")
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, vocab)
    if key in _GLOVE_CACHE:
        _GLOVE_CACHE.move_to_end(key)
        return _GLOVE_CACHE[key]
    table = _parse_glove(path, vocab)
    _GLOVE_CACHE[key] = table
    while len(_GLOVE_CACHE) > _GLOVE_CACHE_SIZE:
        _GLOVE_CACHE.popitem(last=False)
    return table


class GloveEncoder(Encoder):
    """Static GloVe word vectors (text), no parameters.

    Tokenisation: lower-case, then ``re.findall(r"[a-z0-9']+")``. Unknown words get the zero vector
    (and stay valid in the mask, so they count in the pooled mean).

    Args:
        name: Registered name.
        path: GloVe text file, one ``word v1 ... vD`` per line; ``D`` is read from the first line.
        vocab: Keep only these words (lower-cased) to save memory; ``None`` keeps every word the
            tokeniser can produce.
        max_tokens: Truncate transcripts to this many words (the thesis uses 128); ``None`` = no limit.

    Raises:
        EncoderError: Missing file, or a malformed line (names ``file:line``).
    """

    modality = "text"
    vectors: Tensor

    def __init__(
        self,
        name: str,
        path: str | Path,
        vocab: Iterable[str] | None = None,
        max_tokens: int | None = None,
    ) -> None:
        p = Path(path).expanduser()
        keep = None if vocab is None else frozenset(w.lower() for w in vocab)
        table = _load_glove(p, keep)
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens!r}")
        dim = int(table.vectors.shape[1])
        vocab_sha = hashlib.sha256("\n".join(sorted(table.words)).encode()).hexdigest()[:16]
        settings = {
            "encoder": "glove/v1",
            "file": p.name,
            "size": p.stat().st_size,
            "first_line": table.first_line_sha,
            "dim": dim,
            "vocab": vocab_sha,
            "tokens": GLOVE_TOKEN_PATTERN,
            "max_tokens": max_tokens,
        }
        provenance = Provenance(
            name=name,
            resolved="handcrafted",
            source=str(p),
            architecture=f"GloVe {dim}-d, {len(table.words)} words kept, tokens {GLOVE_TOKEN_PATTERN}",
            fingerprint=settings_fingerprint(settings),
        )
        super().__init__(name, dim, provenance)
        self.path = p
        self.max_tokens = max_tokens
        self.max_input = float(max_tokens) if max_tokens is not None else None
        self.words = table.words
        self.register_buffer("vectors", table.vectors, persistent=False)  # (V + 1, D), row 0 = zeros

    @property
    def vocab_size(self) -> int:
        """Number of words with a vector."""
        return len(self.words)

    def preprocess(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        """Tokenise transcripts and look up word rows.

        Args:
            inputs: ``B`` strings.

        Returns:
            ``input_ids`` ``(B, T)`` int64 (0 = unknown or padding) and ``attention_mask`` ``(B, T)`` bool.

        Raises:
            EncoderError: A non-string or a transcript without word tokens (names its batch index).
        """
        if len(inputs) == 0:
            raise EncoderError(f"{self.name}: empty batch")
        ids: list[list[int]] = []
        for i, text in enumerate(inputs):
            if not isinstance(text, str):
                raise EncoderError(f"{self.name}: transcript {i} must be a string, got {type(text).__name__}")
            tokens = tokenize_words(text)
            if not tokens:
                raise EncoderError(f"{self.name}: transcript {i} is empty (no word tokens in {text!r})")
            ids.append([self.words.get(t, 0) for t in tokens[: self.max_tokens]])
        t_max = max(len(x) for x in ids)
        input_ids = torch.zeros(len(ids), t_max, dtype=torch.long)
        mask = torch.zeros(len(ids), t_max, dtype=torch.bool)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = True
        return {"input_ids": input_ids, "attention_mask": mask}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> EncoderOutput:  # type: ignore[override]
        """Look up word vectors.

        Args:
            input_ids: ``(B, T)`` rows of :attr:`vectors`.
            attention_mask: ``(B, T)`` True at words.

        Returns:
            ``hidden`` ``(B, T, D)``, ``mask`` ``(B, T)``, ``pooled`` ``(B, D)`` = mean over words.
        """
        mask = attention_mask.to(torch.bool)
        hidden = self.vectors[input_ids] * mask.unsqueeze(-1)  # (B, T, D)
        return EncoderOutput(hidden=hidden, mask=mask, pooled=masked_mean(hidden, mask))
