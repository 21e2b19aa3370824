"""Predictors of several V2 outputs, as MLServer's scikit-learn runtime answers them: ``predict`` and
``predict_proba``, a default subset, and one computing only the outputs a request asks for (``predict_outputs``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from stevedore_server import Predictor

#: Rows of two numbers: the derived V2 input is ``input-0``, FP64 of shape [-1, 2].
PAIRS = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
}
#: The variable naming the file ``ChoosesOutputs`` writes to: a JSON line a call, its output names and rows.
OUTPUT_CALLS = "OUTPUT_CALLS_FILE"


def labels(rows: list[list[float]]) -> list[int]:
    """The class of each row: 1 where its sum is over 1."""
    return [int(sum(row) > 1) for row in rows]


def probabilities(rows: list[list[float]]) -> list[list[float]]:
    """The probability of each class, the second one half the row's sum (clipped to [0, 1])."""
    ones = [min(1.0, max(0.0, sum(row) / 2)) for row in rows]
    return [[1.0 - one, one] for one in ones]


OUTPUTS: dict[str, Callable[[list[list[float]]], Any]] = {"predict": labels, "predict_proba": probabilities}


class Classes(Predictor):
    """A classifier of two outputs; a V2 request naming none gets ``predict`` only. Its ``predict`` computes
    both (the self-test, the stevedore routes), and V2 requests pick from them. Batched."""

    name = "classes"
    predict_schema = PAIRS
    predict_fixture = [[0.2, 0.3]]
    tensor_outputs = [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]
    default_outputs = ["predict"]
    max_batch_size = 8
    max_batch_time = 0.3

    def run_predict(self, rows: list[list[float]]) -> dict[str, Any]:
        return {name: compute(rows) for name, compute in OUTPUTS.items()}


class ChoosesOutputs(Classes):
    """``Classes`` computing only the outputs a V2 request asks for, each call recorded (its names and rows) in
    the file ``OUTPUT_CALLS_FILE`` names, where it is set: the calls of a server in another process, seen from
    outside it."""

    name = "chooses"

    def predict_outputs(self, payload: Any, names: tuple[str, ...]) -> dict[str, Any]:
        record_call(names, payload)
        return {name: OUTPUTS[name](payload) for name in names}


def record_call(names: tuple[str, ...], rows: list[list[float]]) -> None:
    path = os.environ.get(OUTPUT_CALLS)
    if path:
        # Appended and closed at once: each line is whole on disk before the call returns, for a reader elsewhere.
        with open(path, "a") as calls:
            calls.write(json.dumps({"names": list(names), "rows": rows}) + "\n")
