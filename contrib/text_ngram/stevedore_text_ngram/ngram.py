"""The language model at serving time: n-gram tables turned at load into one lookup a context, and the sampling
of the next word from the longest context the text has seen (backoff)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from . import corpus


@dataclass(frozen=True)
class Continuations:
    """The words seen after one context, most frequent first, with their probabilities (and cumulated, to sample
    by bisection at temperature 1)."""

    words: NDArray[np.intp]
    probabilities: NDArray[np.float64]
    cumulated: NDArray[np.float64]

    @classmethod
    def of(cls, words: NDArray[np.generic], counts: NDArray[np.generic]) -> Continuations:
        probabilities = counts.astype(np.float64) / counts.sum()
        cumulated = np.cumsum(probabilities)
        cumulated[-1] = 1.0  # no draw falls past the last word for a rounding error
        return cls(words.astype(np.intp), probabilities, cumulated)

    def choose(self, rng: np.random.Generator | None, temperature: float, top_p: float) -> int:
        """A word: the most frequent without ``rng`` (greedy), else drawn at ``temperature`` from the smallest set
        of most frequent words whose probability reaches ``top_p`` (nucleus sampling)."""
        if rng is None or len(self.words) == 1:
            return int(self.words[0])
        if temperature == 1.0 and top_p >= 1.0:
            return int(self.words[int(np.searchsorted(self.cumulated, rng.random(), side="right"))])
        # In log space: a small temperature raises the probabilities to a large power.
        logits = np.log(self.probabilities) / temperature
        weights = np.exp(logits - logits[0])
        cumulated = np.cumsum(weights / weights.sum())
        kept = int(np.searchsorted(cumulated, top_p, side="left")) + 1 if top_p < 1.0 else len(weights)
        limit = cumulated[min(kept, len(weights)) - 1]
        return int(self.words[int(np.searchsorted(cumulated[:kept], rng.random() * limit, side="right"))])


class NgramModel:
    """Words, the key each is looked up by, and the continuations of every context of up to ``order - 1`` keys."""

    def __init__(
        self, words: list[str], keys: list[str], word_key: list[int], tables: dict[tuple[int, ...], Continuations]
    ) -> None:
        self.words = words
        #: Each word as a piece of text: with the space before it.
        self.pieces = [" " + word for word in words]
        self.key_ids = {key: index for index, key in enumerate(keys)}
        self.word_key = word_key
        self.tables = tables
        self.order = 1 + max(len(context) for context in tables)

    @classmethod
    def load(cls, path: Path) -> NgramModel:
        with np.load(path, allow_pickle=False) as arrays:
            tables: dict[tuple[int, ...], Continuations] = {}
            order = 1
            while f"next{order}" in arrays:
                tables.update(contexts(arrays[f"context{order}"], arrays[f"next{order}"], arrays[f"count{order}"]))
                order += 1
            words = [str(word) for word in arrays["words"]]
            keys = [str(key) for key in arrays["keys"]]
            return cls(words, keys, arrays["word_key"].tolist(), tables)

    def context_of(self, text: str) -> list[int | None]:
        """The keys of the last words of ``text`` (None for a word the text never had)."""
        return [self.key_ids.get(corpus.key(word)) for word in corpus.words(text)[-(self.order - 1) :]]

    def continuations(self, context: list[int | None]) -> Continuations:
        """Those of the longest known suffix of ``context``: backoff, down to the words' own frequencies."""
        for start in range(len(context)):
            suffix = context[start:]
            if None not in suffix and (found := self.tables.get(tuple(suffix))) is not None:  # type: ignore[arg-type]
                return found
        return self.tables[()]

    def next_word(
        self, context: list[int | None], rng: np.random.Generator | None, temperature: float, top_p: float
    ) -> int:
        """Choose the next word and shift it into ``context`` (kept to ``order - 1`` keys)."""
        word = self.continuations(context).choose(rng, temperature, top_p)
        context.append(self.word_key[word])
        del context[: len(context) - (self.order - 1)]
        return word


def contexts(
    context_keys: NDArray[np.generic], next_words: NDArray[np.generic], counts: NDArray[np.generic]
) -> dict[tuple[int, ...], Continuations]:
    """The continuations of each context of one order's table (rows sorted by context, then count down)."""
    if len(next_words) == 0:
        return {}
    if context_keys.shape[1] == 0:
        return {(): Continuations.of(next_words, counts)}
    # Where the context changes from one row to the next: the tables are sorted by context.
    changes = np.flatnonzero(np.any(context_keys[1:] != context_keys[:-1], axis=1)) + 1
    bounds = [0, *changes.tolist(), len(next_words)]
    return {
        tuple(context_keys[start].tolist()): Continuations.of(next_words[start:end], counts[start:end])
        for start, end in itertools.pairwise(bounds)
    }
