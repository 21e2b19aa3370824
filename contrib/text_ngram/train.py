"""Refit both models on the shipped text and regenerate their artifacts: ``python train.py`` from this directory.

Needs scikit-learn (for the embedding's TF-IDF and truncated SVD) besides NumPy; the plugin itself, serving, needs
NumPy alone. Deterministic: the counts are exact and the SVD has a fixed random state, so rerunning with the same
library versions gives the same numbers.

- ``stevedore_text_ngram/ngram-lm.npz``: the word vocabulary, the key of each word, and for each order 1..3 the
  n-gram counts (context keys, next word, count), pruned of what the model never needs.
- ``stevedore_text_ngram/ngram-embed.npz``: the terms, their inverse document frequencies and the SVD components.

Both are written with ``numpy.savez_compressed`` and read with ``allow_pickle=False``: fixed-width strings,
integers and floats, no Python objects.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from stevedore_text_ngram import corpus
from stevedore_text_ngram.embedding import Embedder

logger = logging.getLogger("train")

PACKAGE = Path(__file__).resolve().parent / "stevedore_text_ngram"
#: The language model's longest n-gram: a word is predicted from the two before it.
ORDER = 3
#: Trigrams and bigrams seen fewer times are dropped where their context has been seen this often or more: a
#: well-attested context keeps its frequent continuations only, a rare one keeps all it has (else it would back
#: off at once). Keeps the artifact under a megabyte.
RARE = 1
WELL_ATTESTED = 8
#: The embedding: its dimension, and the words a passage gathers (consecutive speeches) for the TF-IDF fit.
DIMENSIONS = 64
PASSAGE_WORDS = 120
MAX_TERMS = 4000
RANDOM_STATE = 0


def ngram_tables(tokens: list[str]) -> dict[str, NDArray[np.generic]]:
    """The language model's arrays from the running text's words."""
    words = sorted(set(tokens))
    word_ids = {word: index for index, word in enumerate(words)}
    keys = sorted({corpus.key(word) for word in words})
    key_ids = {key: index for index, key in enumerate(keys)}
    ids = [word_ids[token] for token in tokens]
    token_keys = [key_ids[corpus.key(token)] for token in tokens]
    arrays: dict[str, NDArray[np.generic]] = {
        "words": np.array(words),
        "keys": np.array(keys),
        "word_key": np.array([key_ids[corpus.key(word)] for word in words], dtype=np.int32),
    }
    for order in range(1, ORDER + 1):
        arrays.update(order_table(order, ids, token_keys))
    return arrays


def order_table(order: int, ids: list[int], token_keys: list[int]) -> dict[str, NDArray[np.generic]]:
    """The counts of one order: rows (context keys..., next word, count), sorted by context then count down."""
    counts = Counter(
        (*token_keys[position - order + 1 : position], ids[position]) for position in range(order - 1, len(ids))
    )
    context_totals: Counter[tuple[int, ...]] = Counter()
    for gram, count in counts.items():
        context_totals[gram[:-1]] += count
    kept = [
        (*gram, count)
        for gram, count in counts.items()
        if order == 1 or count > RARE or context_totals[gram[:-1]] < WELL_ATTESTED
    ]
    kept.sort(key=lambda row: (*row[: order - 1], -row[-1], row[-2]))
    table = np.array(kept, dtype=np.int32).reshape(-1, order + 1)
    return {f"context{order}": table[:, : order - 1], f"next{order}": table[:, -2], f"count{order}": table[:, -1]}


def passages(speeches: list[str]) -> list[str]:
    """Consecutive speeches gathered to about ``PASSAGE_WORDS`` words: a speech alone is often a line, too short
    for words of one subject to meet in it."""
    gathered: list[str] = []
    current: list[str] = []
    for speech in speeches:
        current.append(speech)
        if sum(len(part.split()) for part in current) >= PASSAGE_WORDS:
            gathered.append(" ".join(current))
            current = []
    if current:
        gathered.append(" ".join(current))
    return gathered


def embedding_arrays(texts: list[str]) -> dict[str, NDArray[np.generic]]:
    """TF-IDF (sublinear counts, English stop words out) and a truncated SVD of it, as the arrays ``Embedder``
    reads; checked to embed the training passages as scikit-learn does."""
    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=2, max_df=0.5, max_features=MAX_TERMS)
    matrix = vectorizer.fit_transform(texts)
    svd = TruncatedSVD(n_components=DIMENSIONS, n_iter=10, random_state=RANDOM_STATE).fit(matrix)
    arrays: dict[str, NDArray[np.generic]] = {
        "terms": np.array(vectorizer.get_feature_names_out().tolist()),
        "idf": vectorizer.idf_.astype(np.float32),
        "components": svd.components_.astype(np.float32),
    }
    expected = svd.transform(matrix)
    expected /= np.maximum(np.linalg.norm(expected, axis=1, keepdims=True), 1e-12)
    ours = Embedder.from_arrays(arrays).embed(texts)
    if not np.allclose(ours, expected, atol=1e-4):
        raise SystemExit("the NumPy embedding differs from scikit-learn's: fix embedding.py before shipping")
    logger.info(
        "embedding: %d passages, %d terms, explained variance %.3f",
        len(texts),
        len(arrays["terms"]),
        svd.explained_variance_ratio_.sum(),
    )
    return arrays


def language_model() -> dict[str, NDArray[np.generic]]:
    """The arrays of ``ngram-lm.npz``, from the running text of every speech."""
    return ngram_tables([word for speech in corpus.speeches() for word in corpus.words(speech)])


def embedding() -> dict[str, NDArray[np.generic]]:
    """The arrays of ``ngram-embed.npz``."""
    return embedding_arrays(passages(corpus.speeches()))


def save(path: Path, arrays: dict[str, NDArray[np.generic]]) -> None:
    """Write ``arrays`` as an NPZ file: strings, integers and floats, which load with ``allow_pickle=False``."""
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its allow_pickle


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lm = language_model()
    save(PACKAGE / "ngram-lm.npz", lm)
    logger.info(
        "language model: %d distinct words, %s n-grams by order",
        len(lm["words"]),
        [len(lm[f"next{order}"]) for order in range(1, ORDER + 1)],
    )
    save(PACKAGE / "ngram-embed.npz", embedding())
    for name in ("ngram-lm.npz", "ngram-embed.npz"):
        logger.info("wrote %s (%d kB)", PACKAGE / name, (PACKAGE / name).stat().st_size // 1000)


if __name__ == "__main__":
    main()
