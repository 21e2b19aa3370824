"""Predictors used by the tests: small, real, and each broken in one known way."""

from __future__ import annotations

import math
import os
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


class Held(RowSum):
    """Holds a call with the row ``[5]`` until released (a minute at most), telling when such a call starts and
    when it ends: what answers while it is held ran beside it, however slow the machine. Its events are its own,
    so each test starts from a fresh instance."""

    name = "held"
    #: Seconds a call is held at most: only a broken run gets there, and then the test fails instead of hanging.
    limit = 60.0

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        self.started = threading.Event()
        self.release = threading.Event()
        self.ended = threading.Event()

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        if [5] in rows:
            self.started.set()
            try:
                self.release.wait(timeout=self.limit)
            finally:
                self.ended.set()
        return super().run_predict(rows)


class NaNScore(RowSum):
    name = "nanscore"

    def run_scores(self, rows: list[list[float]], expected: list[float]) -> float:
        return math.nan


class NaNOnRequest(RowSum):
    """Overflows to infinity, then NaN, on huge inputs."""

    name = "nan-on-request"

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [float(sum(row)) - float(sum(row)) if sum(row) > 1e308 else sum(row) for row in rows]


class TwoInputs(Predictor):
    """Declares two V2 inputs and two outputs; gets an object keyed by input name."""

    name = "two-inputs"
    predict_schema = {
        "type": "object",
        "required": ["a", "b"],
        "properties": {"a": ROWS, "b": {"type": "array", "items": {"type": "integer"}}},
    }
    predict_fixture = {"a": [[1.5, 2.5]], "b": [1]}
    tensor_inputs = [
        {"name": "a", "datatype": "FP64", "shape": [-1, 2]},
        {"name": "b", "datatype": "INT64", "shape": [-1]},
    ]
    tensor_outputs = [
        {"name": "sum", "datatype": "FP64", "shape": [-1]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]

    def run_predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        sums = [sum(row) + offset for row, offset in zip(payload["a"], payload["b"], strict=True)]
        return {"sum": sums, "label": ["big" if total > 5 else "small" for total in sums]}


class ArrayInput(RowSum):
    """Opts in to NumPy arrays from V2 tensors and records what it received."""

    name = "arrays"
    numpy_input = True
    received: list[type] = []

    def run_predict(self, rows: Any) -> Any:
        type(self).received.append(type(rows))
        return [float(sum(row)) for row in rows]


class Positive(RowSum):
    """A schema saying more than shape and type: every number at least 0."""

    name = "positive"
    predict_schema = {"type": "array", "items": {"type": "array", "items": {"type": "number", "minimum": 0}}}
    numpy_input = True


class Words(Predictor):
    """Strings in, string lengths out."""

    name = "words"
    predict_schema = {"type": "array", "items": {"type": "string"}}
    predict_fixture = ["hello"]

    def run_predict(self, words: list[str]) -> list[int]:
        return [len(word) for word in words]


class ObjectPayload(Predictor):
    """No tensor interface: its schema is an object and it declares no tensors."""

    name = "object-payload"
    predict_schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    predict_fixture = {"text": "hi"}

    def run_predict(self, payload: dict[str, str]) -> str:
        return payload["text"].upper()


class RangeOfRows(ArrayInput):
    """NumPy input, and a schema allowing one to three rows: more than a tensor shape says."""

    name = "range-of-rows"
    predict_schema = {
        "type": "array",
        "minItems": 1,
        "maxItems": 3,
        "items": {"type": "array", "items": {"type": "number"}},
    }


class Nullable(RowSum):
    """A schema whose element type is a list: no tensor, and no crash."""

    name = "nullable"
    predict_schema = {"type": "array", "items": {"type": "array", "items": {"type": ["number", "null"]}}}


class Batched(RowSum):
    """Batches up to 8 requests; records the rows of each model call; blocks on a row [5] until released."""

    name = "batched"
    max_batch_size = 8
    max_batch_time = 0.05
    calls: list[list[list[float]]] = []
    started = threading.Event()
    release = threading.Event()

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        type(self).calls.append(rows)
        if [5] in rows:
            self.started.set()
            self.release.wait(timeout=10)
        if [13] in rows:
            raise ValueError("unlucky row")
        if [7] in rows:
            return [0.0]  # one item for many rows: the batch cannot be split
        return super().run_predict(rows)


#: Markup a plugin could try to write into the web console: shown as text, it runs nothing.
HOSTILE = '<script>alert("script")</script>"><img src=x onerror=alert("img")>'


class Hostile(RowSum):
    """Every string it gives is markup: description, schema titles and descriptions, an enum, a property name,
    its fixture and its predictions."""

    name = "hostile"
    description = HOSTILE
    predict_schema = {
        "title": HOSTILE,
        "description": HOSTILE,
        "type": "object",
        "required": ["amount"],
        "properties": {
            "amount": {"type": "number", "title": HOSTILE, "description": HOSTILE, "maximum": 10},
            "kind": {"title": HOSTILE, "enum": [HOSTILE, "plain"]},
            HOSTILE: {"type": "boolean"},
        },
    }
    predict_fixture = {"amount": 1, "kind": HOSTILE, HOSTILE: True}
    score_schema = None

    def run_predict(self, payload: dict[str, Any]) -> list[str]:
        return [HOSTILE, str(payload.get("kind"))]


class HostileFailing(Hostile):
    """Fails its self-test with markup in the reason."""

    name = "hostile-failing"

    def run_predict(self, payload: dict[str, Any]) -> list[str]:
        raise ValueError(HOSTILE)


def hostile_models() -> list[Predictor]:
    """Target of the hostile test plugin's entry point (``tests/test_console_browser.py``)."""
    return [Hostile(), HostileFailing()]


def hostile_plugin() -> list[Predictor]:
    """An entry point that fails with markup in its error."""
    raise RuntimeError(HOSTILE)


#: The variable naming the file ``CountsCalls`` writes to, one line a call.
COUNTED_CALLS = "COUNTED_CALLS_FILE"


class CountsCalls(RowSum):
    """Writes a line to the file named by ``COUNTED_CALLS_FILE`` each time its model code runs (``predict`` or
    ``score``; a score runs predict too): the calls of a server in another process, counted from outside it."""

    name = "counted"

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        record_call("predict")
        return super().run_predict(rows)

    def run_scores(self, rows: list[list[float]], expected: list[float]) -> float:
        record_call("score")
        return super().run_scores(rows, expected)


def record_call(kind: str) -> None:
    # Appended and closed at once: each line is whole on disk before the call returns, for a reader elsewhere.
    with open(os.environ[COUNTED_CALLS], "a") as calls:
        calls.write(kind + "\n")
