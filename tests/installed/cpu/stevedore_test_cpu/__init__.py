"""``spin``: a pure-Python loop a row (it never releases the GIL), answering which process ran it; it streams too.

A row is a number of iterations; a negative one makes the model raise, with a message that must reach the log
and never the client.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from stevedore_server import Predictor

#: What the model's exception says: for the log only.
SECRET = "secret detail of the spin model"

logger = logging.getLogger(__name__)


class Spin(Predictor):
    name = "spin"
    predict_schema = {"type": "array", "items": {"type": "integer", "minimum": -1, "maximum": 10**9}}
    predict_fixture = [1000]

    def run_predict(self, rows: list[int]) -> list[dict[str, Any]]:
        if any(row < 0 for row in rows):
            logger.warning("refusing a negative row")
            raise ValueError(SECRET)
        return [{"total": spin(row), "pid": os.getpid()} for row in rows]

    def predict_stream(self, rows: list[int]) -> Iterator[dict[str, Any]]:
        """An item a row, a tenth of a second apart; says in the log how many it sent when it is closed."""
        sent = 0
        try:
            for row in rows:
                yield {"total": spin(row), "pid": os.getpid()}
                sent += 1
                time.sleep(0.1)
        finally:
            logger.warning("stream closed after %d items", sent)


def spin(iterations: int) -> int:
    total = 0
    for step in range(iterations):
        total = (total + step * step) % 1_000_003
    return total
