"""Retrain the iris model and regenerate the fixtures: ``python train.py`` from this directory.

Uses the iris data that ships with scikit-learn, so it needs no network. The
split and the solver are deterministic: rerunning with the same library
versions gives the same coefficients and the same fixtures (the bytes of
model.skops still change, as its zip entries carry timestamps).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import skops.io
from numpy.typing import NDArray
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from stevedore_sklearn_logreg.predictor import TRUSTED_TYPES

logger = logging.getLogger("train")

PACKAGE = Path(__file__).resolve().parent / "stevedore_sklearn_logreg"
RANDOM_STATE = 0
#: Rows held out of training; they become the score fixture, so the score is on unseen data.
HELD_OUT = 30
#: First row of each species in the iris data: one setosa, one versicolor, one virginica.
PREDICT_ROWS = [0, 50, 100]


def split() -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    """Train and held-out rows, stratified so every species is in the held-out set equally."""
    X, y = load_iris(return_X_y=True)
    return tuple(train_test_split(X, y, test_size=HELD_OUT, stratify=y, random_state=RANDOM_STATE))


def train(X: NDArray[np.float64], y: NDArray[np.int64]) -> LogisticRegression:
    # lbfgs needs more than the default 100 iterations on unscaled iris features.
    return LogisticRegression(max_iter=1000, random_state=RANDOM_STATE).fit(X, y)


def save_model(model: LogisticRegression, path: Path) -> None:
    """Write the model, refusing one that needs types the predictor does not trust."""
    skops.io.dump(model, path)
    untrusted = skops.io.get_untrusted_types(file=path)
    if sorted(untrusted) != sorted(TRUSTED_TYPES):
        path.unlink()
        raise SystemExit(f"{path.name} needs trusted types {untrusted}; review them and update TRUSTED_TYPES")


def write_rows(path: Path, rows: list[Any]) -> None:
    # One row per line keeps the fixtures readable and their diffs small.
    lines = ",\n".join("  " + json.dumps(row) for row in rows)
    path.write_text(f"[\n{lines}\n]\n")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    X_train, X_held_out, y_train, y_held_out = split()
    model = train(X_train, y_train)
    save_model(model, PACKAGE / "model.skops")
    X_all, _ = load_iris(return_X_y=True)
    write_rows(PACKAGE / "fixtures" / "predict.json", X_all[PREDICT_ROWS].tolist())
    labelled = [{"x": x, "y": y} for x, y in zip(X_held_out.tolist(), y_held_out.tolist(), strict=True)]
    write_rows(PACKAGE / "fixtures" / "score.json", labelled)
    logger.info("accuracy on the %d held-out rows: %.4f", HELD_OUT, model.score(X_held_out, y_held_out))
    logger.info("wrote %s and the fixtures", PACKAGE / "model.skops")


if __name__ == "__main__":
    main()
