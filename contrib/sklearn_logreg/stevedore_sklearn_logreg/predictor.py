"""The iris predictors: a scikit-learn LogisticRegression loaded from a skops file."""

from __future__ import annotations

from typing import Any

import numpy as np
import skops.io
from numpy.typing import NDArray

from stevedore_server import Predictor

#: Types outside skops' defaults that model.skops may hold, as reported by
#: ``skops.io.get_untrusted_types(file=...)``; train.py refuses to write a model
#: that needs more. A LogisticRegression needs none.
TRUSTED_TYPES: list[str] = []


class LogReg(Predictor):
    """Iris species as class labels: 0 setosa, 1 versicolor, 2 virginica."""

    name = "iris"
    version = "1"
    description = (
        "Logistic regression on the iris measurements (sepal length, sepal width, petal length, "
        "petal width, in cm); predicts the species as 0 setosa, 1 versicolor, 2 virginica."
    )
    predict_schema = "schemas/predict.json"
    score_schema = "schemas/score.json"
    predict_fixture = "fixtures/predict.json"
    score_fixture = "fixtures/score.json"
    artifact = "model.skops"
    # V2 requests hand over the decoded NumPy array itself: no lists made, and convert_prediction_input
    # below takes arrays and lists alike.
    numpy_input = True
    # predict is a pure computation of about 0.1 ms that never waits: the server may run it on the event loop.
    inline = True

    def load(self) -> None:
        # skops rather than pickle: loading cannot run code beyond the listed types.
        self.model = skops.io.load(self.resource_path(self.artifact), trusted=TRUSTED_TYPES)

    def convert_prediction_input(self, x: list[list[float]]) -> NDArray[np.float64]:
        return np.asarray(x, dtype=float)

    def convert_score_input(self, in_object: list[dict[str, Any]]) -> tuple[NDArray[np.float64], NDArray[Any]]:
        X = [item["x"] for item in in_object]
        y = [item["y"] for item in in_object]
        return np.asarray(X, dtype=float), np.array(y)

    def run_scores(self, X: NDArray[np.float64], y: NDArray[Any]) -> float:
        """Mean accuracy on the labelled rows."""
        return self.model.score(X, y)

    def run_predict(self, X: NDArray[np.float64]) -> NDArray[Any]:
        # The array is the output (the default convert_output): the server writes NumPy arrays to JSON and to
        # V2 tensors itself, faster than from a list.
        return self.model.predict(X)


class LogRegProba(LogReg):
    """The same model, giving the probability of each of the three species."""

    name = "iris-proba"
    description = (
        "Logistic regression on the iris measurements (cm); predicts, per row, the probabilities "
        "of the species [setosa, versicolor, virginica]. Score is the accuracy of the most likely class."
    )

    def run_predict(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.model.predict_proba(X)


def predictors() -> list[Predictor]:
    """Target of the ``iris`` entry point: every model this distribution serves."""
    return [LogReg(), LogRegProba()]
