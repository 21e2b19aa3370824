"""``lazy-00`` to ``lazy-NN``: small models, each holding ``MEBIBYTES`` of memory once loaded, for the benchmark of
lazy models within a memory budget (``LAZY=1 make bench``).

``lazy-NN`` answers ``NN + sum(row)`` for each row, so the benchmark can tell that the right model answered. How
many models the plugin declares is ``$BENCH_LAZY_MODELS`` (default 50): the benchmark serves 5 loaded at startup
against 50 loaded lazily within a budget that holds 5. The work of a call is a few microseconds: what is measured
is the server's, and the loads'.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from stevedore_server import Predictor

MEBIBYTES = 24
DEFAULT_COUNT = 50
ROWS = {"type": "array", "minItems": 1, "items": {"type": "array", "items": {"type": "number"}, "minItems": 1}}


class Offset(Predictor):
    """Adds its number to the sum of each row, holding an array of ``MEBIBYTES`` (its pages touched)."""

    predict_schema = ROWS

    def __init__(self, number: int) -> None:
        super().__init__(name=f"lazy-{number:02d}", description=f"adds {number} to the sum of each row")
        self.number = number
        self.predict_fixture = [[1, 2]]

    def load(self) -> None:
        self.weights = np.full(MEBIBYTES * 2**20 // 8, float(self.number))

    def run_predict(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        offset = float(self.weights[-1])
        return [{"value": offset + sum(row)} for row in rows]


def models() -> list[Predictor]:
    count = int(os.environ.get("BENCH_LAZY_MODELS", DEFAULT_COUNT))
    return [Offset(number) for number in range(count)]
