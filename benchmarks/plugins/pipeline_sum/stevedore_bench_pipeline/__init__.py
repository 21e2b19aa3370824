"""``hooked-sum``: the sum of each row of numbers (the example model's probabilities sum to 1)."""

from __future__ import annotations

from typing import Any

from stevedore_server import Predictor


class HookedSum(Predictor):
    name = "hooked-sum"
    description = "The sum of each row."
    predict_schema = {  # noqa: RUF012
        "type": "array",
        "minItems": 1,
        "items": {"type": "array", "minItems": 1, "items": {"type": "number"}},
    }
    predict_fixture = [[0.25, 0.75]]  # noqa: RUF012
    output_schema = {"type": "array", "items": {"type": "number"}}  # noqa: RUF012
    inline = True

    def predict(self, payload: Any) -> Any:
        return [sum(row) for row in payload]
