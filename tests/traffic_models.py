"""Two versions of one model for the traffic tests (``test_traffic.py``), found by a server through an entry point
recorded on its ``PYTHONPATH`` (``wines``): version 1.0.0 answers each row's sum, 2.0.0 the sum rounded to one
decimal, so that a shadow's answer is equal on rows of whole numbers and different on others."""

from __future__ import annotations

import logging
import time

from stevedore_server import Predictor

ROWS = {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "number"}}}


class WineOne(Predictor):
    name = "wine"
    version = "1.0.0"
    predict_schema = ROWS
    predict_fixture = [[1, 2]]

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [float(sum(row)) for row in rows]


class WineTwo(WineOne):
    version = "2.0.0"

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [round(float(sum(row)), 1) for row in rows]


class Failing(WineOne):
    """A shadow that fails on every row whose first value is negative (and passes its self-test)."""

    name = "wine-failing"

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        if any(row[0] < 0 for row in rows):
            raise ValueError("negative first value")
        return super().run_predict(rows)


class Slow(WineOne):
    """Takes as many seconds as its first row's first value: a request that keeps the server busy."""

    name = "wine-slow"
    predict_fixture = [[0, 0]]

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        logging.getLogger("tests.wine-slow").warning("wine-slow: sleeping %s s", rows[0][0])  # the test waits for it
        time.sleep(rows[0][0])
        return super().run_predict(rows)


def wines() -> list[Predictor]:
    return [WineOne(), WineTwo(), Failing(), Slow()]
