"""Small models to compose into pipelines, and a pipeline shipped by this wheel (``PIPELINES``).

Each takes rows of numbers: ``hooked-sum`` sums each row, ``row-max`` takes each row's largest, ``twos`` says 2
for each row, ``picky`` sums each row but fails on a number over 100, ``sleepy`` sums each row after sleeping
its first row's first number of seconds (at most 5), ``ratio`` divides each row's first number by its second
(NaN, which JSON cannot carry, for a second of 0), and ``labeller`` names each row (its answer, strings,
declared by ``output_schema``: no model taking numbers accepts it).
"""

from __future__ import annotations

import math
import time
from typing import Any

from stevedore_server import Predictor

NUMBERS = {"type": "number"}
ROWS = {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": NUMBERS}}
#: Rows of one number each: what hooked-sum gives, taken by the row models too.
FIXTURE = [[1.0, 2.0], [3.0, 4.0]]


class RowModel(Predictor):
    """A model of rows of numbers, one item an answer a row."""

    predict_schema = ROWS
    predict_fixture = FIXTURE
    output_schema = {"type": "array", "items": NUMBERS}
    inline = True

    def predict(self, payload: Any) -> Any:
        return [self.row(list(row)) for row in payload]

    def row(self, values: list[float]) -> Any:
        raise NotImplementedError


class HookedSum(RowModel):
    name = "hooked-sum"
    description = "The sum of each row."

    def row(self, values: list[float]) -> Any:
        return sum(values)


class RowMax(RowModel):
    name = "row-max"
    description = "The largest number of each row."

    def row(self, values: list[float]) -> Any:
        return max(values)


class Twos(RowModel):
    name = "twos"
    description = "2 for each row (a constant voter)."

    def row(self, values: list[float]) -> Any:
        return 2


class Picky(RowModel):
    name = "picky"
    description = "The sum of each row; fails (ValueError) on a number over 100."

    def row(self, values: list[float]) -> Any:
        if max(values) > 100:
            raise ValueError("a number over 100")
        return sum(values)


class Sleepy(RowModel):
    name = "sleepy"
    description = "The sum of each row, after sleeping its first row's first number of seconds (at most 5)."
    inline = False

    predict_fixture = [[0.0, 1.0]]

    def predict(self, payload: Any) -> Any:
        time.sleep(min(max(float(payload[0][0]), 0.0), 5.0))
        return super().predict(payload)

    def row(self, values: list[float]) -> Any:
        return sum(values)


class Ratio(RowModel):
    name = "ratio"
    description = "Each row's first number over its second: NaN (no JSON number) where both are 0."

    def row(self, values: list[float]) -> Any:
        return values[0] / values[1] if values[1] else math.nan


class Labeller(RowModel):
    name = "labeller"
    description = "A name for each row: its strings fit no model that takes numbers."
    output_schema = {"type": "array", "items": {"type": "string"}}

    def row(self, values: list[float]) -> Any:
        return "big" if sum(values) > 5 else "small"


def models() -> list[Predictor]:
    return [HookedSum(), RowMax(), Twos(), Picky(), Sleepy(), Ratio(), Labeller()]


#: The pipelines this wheel ships: the same shape as the settings file's ``[pipelines.NAME]`` tables.
PIPELINES = {
    "shipped-sum": {
        "description": "Each row's sum plus its largest number (shipped by stevedore-test-pipeline)",
        "root": "chain",
        "nodes": {
            "chain": {"type": "sequence", "steps": [{"node": "both"}, {"model": "hooked-sum"}]},
            "both": {
                "type": "ensemble",
                "reducer": "concatenate",
                "steps": [{"model": "hooked-sum"}, {"model": "row-max"}],
            },
        },
    },
}
