"""A model that sleeps as many seconds as its input says, then echoes it: in-flight requests on demand."""

from __future__ import annotations

import time

from stevedore_server import Predictor


class Sleeper(Predictor):
    name = "sleeper"
    predict_schema = {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 30}}
    predict_fixture = [0]

    def run_predict(self, seconds: list[float]) -> list[float]:
        time.sleep(sum(seconds))
        return seconds
