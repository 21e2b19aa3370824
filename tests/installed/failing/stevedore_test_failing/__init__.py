"""A model that imports and loads, then fails its self-test."""

from __future__ import annotations

from stevedore_server import Predictor


class Failing(Predictor):
    name = "failing"
    predict_schema = {"type": "array", "items": {"type": "number"}}
    predict_fixture = [1.0]

    def run_predict(self, values: list[float]) -> list[float]:
        raise ZeroDivisionError("the model divides by zero on its own fixture")
