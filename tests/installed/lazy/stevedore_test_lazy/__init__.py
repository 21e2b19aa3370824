"""Many models from one plugin, each holding ``MEBIBYTES`` of memory once loaded, for lazy loading and the memory
budget: ``lazy-NN`` answers ``NN + sum(row)`` for each row, and ``pid`` with the process that ran it; every load
is counted, as a line in a file of ``$LAZY_LOADS_DIR`` named after the model (none: not counted).

``lazy-slow`` takes ``SLOW_LOAD`` seconds to load (first requests that come together); ``lazy-broken`` fails to
load, every time."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from stevedore_server import Predictor

#: Models ``lazy-00`` to ``lazy-49``.
COUNT = 50
MEBIBYTES = 24
SLOW_LOAD = 2.0
ROWS = {"type": "array", "minItems": 1, "items": {"type": "array", "items": {"type": "number"}, "minItems": 1}}


def counted(name: str) -> None:
    directory = os.environ.get("LAZY_LOADS_DIR")
    if directory:
        with open(Path(directory) / name, "a") as loads:
            loads.write(f"{os.getpid()}\n")


class Offset(Predictor):
    """Adds its number to the sum of each row, holding an array of ``MEBIBYTES`` (its pages touched)."""

    predict_schema = ROWS
    predict_fixture = [[1, 2]]

    def __init__(self, number: int, name: str | None = None) -> None:
        super().__init__(name=name or f"lazy-{number:02d}", description=f"adds {number} to the sum of each row")
        self.number = number

    def load(self) -> None:
        counted(self.name)
        self.weights = np.full(MEBIBYTES * 2**20 // 8, float(self.number))

    def run_predict(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        offset = float(self.weights[-1])
        return [{"value": offset + sum(row), "pid": os.getpid()} for row in rows]


class Slow(Offset):
    def load(self) -> None:
        time.sleep(SLOW_LOAD)
        super().load()


class Broken(Offset):
    def load(self) -> None:
        counted(self.name)
        raise RuntimeError("this model's artifact is corrupt")


def models() -> list[Predictor]:
    return [
        *(Offset(number) for number in range(COUNT)),
        Slow(100, "lazy-slow"),
        Broken(200, "lazy-broken"),
    ]
