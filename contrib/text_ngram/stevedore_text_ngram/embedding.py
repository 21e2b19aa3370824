"""The embedding at serving time: TF-IDF then the truncated SVD's projection, in NumPy alone (``train.py`` fits
both with scikit-learn and checks this gives its numbers)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from . import corpus

#: Below this norm a vector is taken as zero (a text of no known term) rather than blown up.
TINY = 1e-12


@dataclass(frozen=True)
class Embedder:
    """Terms (by index), their inverse document frequencies and the SVD's term vectors (one row a term)."""

    term_ids: dict[str, int]
    idf: NDArray[np.float64]
    term_vectors: NDArray[np.float64]

    @classmethod
    def load(cls, path: Path) -> Embedder:
        with np.load(path, allow_pickle=False) as arrays:
            return cls.from_arrays(dict(arrays))

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[np.generic]]) -> Embedder:
        terms = [str(term) for term in arrays["terms"]]
        idf = np.asarray(arrays["idf"], dtype=np.float64)
        components = np.asarray(arrays["components"], dtype=np.float64)
        if components.shape != (components.shape[0], len(terms)) or idf.shape != (len(terms),):
            raise ValueError(f"embedding arrays do not fit: {len(terms)} terms, idf {idf.shape}, {components.shape}")
        return cls({term: index for index, term in enumerate(terms)}, idf, np.ascontiguousarray(components.T))

    @property
    def dimensions(self) -> int:
        return int(self.term_vectors.shape[1])

    def embed(self, texts: list[str], dimensions: int | None = None) -> NDArray[np.float64]:
        """One L2-normalised vector a text (zero for a text of no known term), of the first ``dimensions``
        components (all by default): the components come by decreasing variance, so a shorter vector keeps the
        most of it."""
        vectors = np.stack([self.projection(text) for text in texts]) if texts else np.zeros((0, self.dimensions))
        if dimensions is not None:
            vectors = vectors[:, :dimensions]
        normalised: NDArray[np.float64] = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), TINY)
        return normalised

    def projection(self, text: str) -> NDArray[np.float64]:
        """The text's TF-IDF vector (sublinear counts, L2-normalised) projected on the components."""
        counts = Counter(index for term in corpus.terms(text) if (index := self.term_ids.get(term)) is not None)
        if not counts:
            return np.zeros(self.dimensions)
        ids = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
        weights = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * self.idf[ids]
        weights /= np.linalg.norm(weights)
        projected: NDArray[np.float64] = weights @ self.term_vectors[ids]
        return projected
