"""Predictors of the good test plugin. Each version of ``alpha`` answers differently, so a test can tell them apart."""

from __future__ import annotations

from typing import Any

from stevedore_server import Predictor

ROWS = {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "number"}}}


class Scaled(Predictor):
    """Predicts each row's sum times ``factor``."""

    factor = 1
    predict_schema = ROWS
    predict_fixture = [[1, 2]]

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [self.factor * sum(row) for row in rows]


class AlphaOne(Scaled):
    name = "alpha"
    version = "1.0"


class AlphaNine(Scaled):
    name = "alpha"
    version = "1.9"
    factor = 9


class AlphaTen(Scaled):
    # PEP 440 puts 1.10 above 1.9; string order would not.
    name = "alpha"
    version = "1.10"
    factor = 10


class Beta(Scaled):
    name = "beta"
    description = "negated row sums"
    factor = -1


def family() -> list[Predictor]:
    """Target of the ``family`` entry point: a callable giving several predictors."""
    return [AlphaOne(), AlphaNine(), AlphaTen(), Beta()]


class Gamma(Predictor):
    """Target of the ``gamma`` entry point: a class. Schemas and fixtures are package data of the wheel."""

    name = "gamma"
    predict_schema = "schemas/rows.json"
    score_schema = "schemas/labelled.json"
    predict_fixture = "fixtures/rows.json"
    score_fixture = "fixtures/labelled.json"

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [max(row) for row in rows]

    def convert_score_input(self, items: list[dict[str, Any]]) -> tuple[list[list[float]], list[float]]:
        return [item["x"] for item in items], [item["y"] for item in items]

    def run_scores(self, rows: list[list[float]], expected: list[float]) -> float:
        """Fraction of rows whose maximum is the label."""
        hits = [predicted == label for predicted, label in zip(self.run_predict(rows), expected, strict=True)]
        return sum(hits) / len(hits)


class Delta(Scaled):
    """Registered through the ``stevedore_register_predictors`` hook, not an entry point."""

    name = "delta"
    factor = 2
