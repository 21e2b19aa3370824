"""Predictors used by the tests: small, real, and each broken in one known way."""

from __future__ import annotations

import math
import threading
from typing import Any

from stevedore_server import Predictor

ROWS = {"type": "array", "minItems": 1, "items": {"type": "array", "items": {"type": "number"}, "minItems": 1}}
LABELLED = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["x", "y"],
        "additionalProperties": False,
        "properties": {"x": ROWS["items"], "y": {"type": "number"}},
    },
}


class RowSum(Predictor):
    """Predicts the sum of each row; score is the fraction of rows whose sum equals y."""

    name = "rowsum"
    description = "sums rows"
    predict_schema = ROWS
    score_schema = LABELLED
    predict_fixture = [[1, 2]]
    score_fixture = [{"x": [1, 2], "y": 3}, {"x": [1, 1], "y": 5}]

    def load(self) -> None:
        self.model = sum

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [self.model(row) for row in rows]

    def convert_score_input(self, items: list[dict[str, Any]]) -> tuple[Any, ...]:
        return [item["x"] for item in items], [item["y"] for item in items]

    def run_scores(self, rows: list[list[float]], expected: list[float]) -> float:
        hits = [p == y for p, y in zip(self.run_predict(rows), expected, strict=True)]
        return sum(hits) / len(hits)


class NoScore(RowSum):
    name = "noscore"
    score_schema = None


class RaisesOnNegative(RowSum):
    """Healthy on its fixture; raises on a request with a negative number."""

    name = "fragile"

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        if any(value < 0 for row in rows for value in row):
            raise ValueError("negative input: secret internal detail")
        return super().run_predict(rows)


class BadFixture(RowSum):
    name = "badfixture"
    predict_fixture = [["not a number"]]


class FailsLoad(RowSum):
    name = "failsload"

    def load(self) -> None:
        raise OSError("artifact missing")


class NotJSON(RowSum):
    name = "notjson"

    def run_predict(self, rows: list[list[float]]) -> Any:
        return [object() for _ in rows]


class Slow(RowSum):
    """Blocks on the row ``[5]`` until released, to prove model code runs off the event loop."""

    name = "slow"
    started = threading.Event()
    release = threading.Event()

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        if rows == [[5]]:
            self.started.set()
            self.release.wait(timeout=10)
        return super().run_predict(rows)


class NaNScore(RowSum):
    name = "nanscore"

    def run_scores(self, rows: list[list[float]], expected: list[float]) -> float:
        return math.nan
