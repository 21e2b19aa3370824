"""What the bench models compute, with no import of stevedore-server: LitServe's environment runs it too.

- ``pieces``: ``max_tokens`` short pieces of text (default 10,000, LitServe's stream-speed test's count) with no
  work between them: what is left of a stream's time is the server's.
- ``HashedEncoder``: an embedding with a cost a call like a small neural encoder's: each text's words hashed into
  2,048 features, then two dense layers (2,048 x 1,024, tanh, 1,024 x 256: 9 MB of float32 weights read a call),
  L2-normalised. One call for 32 texts costs far less than 32 calls of one, which is what batching buys.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

#: LitServe's stream-speed test streams 10,000 tokens.
DEFAULT_TOKENS = 10_000
PIECE = " tok"
FEATURES = 2048
HIDDEN = 1024
DIMENSIONS = 256


def pieces(max_tokens: int | None) -> Iterator[str]:
    for _ in range(max_tokens or DEFAULT_TOKENS):
        yield PIECE


class HashedEncoder:
    def __init__(self) -> None:
        generator = np.random.default_rng(30)
        self.first = generator.standard_normal((FEATURES, HIDDEN), dtype=np.float32) / np.sqrt(FEATURES)
        self.second = generator.standard_normal((HIDDEN, DIMENSIONS), dtype=np.float32) / np.sqrt(HIDDEN)

    def embed(self, texts: list[str]) -> np.ndarray[Any, Any]:
        """A unit vector a text."""
        vectors = np.tanh(features(texts) @ self.first) @ self.second
        normalised: np.ndarray[Any, Any] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return normalised


def features(texts: list[str]) -> np.ndarray[Any, Any]:
    """Bag of words, each word counted in the column of its CRC-32 (stable from one process to the next)."""
    counts = np.zeros((len(texts), FEATURES), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            counts[row, zlib.crc32(word.encode()) % FEATURES] += 1.0
    counts[:, 0] += 1.0  # a bias feature: an empty text still has a direction
    return counts
