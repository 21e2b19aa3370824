"""Models for the MCP tests (``test_mcp.py``), found by a server through an entry point recorded on its
``PYTHONPATH`` (``models``): one taking an object (its schema is the tool's as it is) with an output schema, one
without a description, one hidden from the tools by its settings, one that fails on a negative value, one
held back at startup (``--load-models``) and loaded later through the model repository, and one loaded on its
first call."""

from __future__ import annotations

from stevedore_server import Predictor

ROWS = {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "number"}}}


class Adder(Predictor):
    """An object in, a number out: the tool's input schema is the predict schema itself."""

    name = "adder"
    version = "2.1"
    description = "Adds a and b."
    predict_schema = {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    predict_fixture = {"a": 1, "b": 2}
    output_schema = {"type": "number"}

    def run_predict(self, pair: dict[str, float]) -> float:
        return float(pair["a"] + pair["b"])


class RowSums(Predictor):
    name = "row-sums"
    version = "1.0"
    predict_schema = ROWS
    predict_fixture = [[1, 2]]

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        if any(value < 0 for row in rows for value in row):
            raise ValueError("a negative value, which this model refuses to sum")
        return [float(sum(row)) for row in rows]


class Hidden(RowSums):
    name = "hidden-sums"
    description = "Row sums no agent should see."


class Late(RowSums):
    name = "late-sums"
    description = "Row sums, loaded after the server started."


class LazySums(RowSums):
    name = "lazy-sums"
    description = "Row sums, loaded on the first call (load = lazy)."


def models() -> list[Predictor]:
    return [Adder(), RowSums(), Hidden(), Late(), LazySums()]
