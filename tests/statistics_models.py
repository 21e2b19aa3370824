"""The models of the statistics tests (``test_statistics.py``), served by a real server from this folder."""

from __future__ import annotations

from stevedore_server import Predictor

#: Rows of two numbers: the V2 input ``input-0`` of shape [-1, 2].
PAIRS = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
}


class Plain(Predictor):
    """Sums each row; a negative number makes it fail (a model's failure, after the request was valid)."""

    name = "plain"
    predict_schema = PAIRS
    predict_fixture = [[1, 2]]

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        if any(value < 0 for row in rows for value in row):
            raise ValueError("negative input")
        return [float(sum(row)) for row in rows]


class Batching(Plain):
    """Merges up to three requests into one call, waiting a second for them: a lone request waits that second."""

    name = "batching"
    max_batch_size = 3
    max_batch_time = 1.0
