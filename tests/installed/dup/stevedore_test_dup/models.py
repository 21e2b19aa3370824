"""A predictor with the name and version of one in stevedore-test-good: the server must refuse to guess."""

from __future__ import annotations

from stevedore_server import Predictor


class AlphaCopy(Predictor):
    name = "alpha"
    version = "1.10"
    predict_schema = {"type": "array"}
    predict_fixture = [[1]]

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [0.0 for _ in rows]
