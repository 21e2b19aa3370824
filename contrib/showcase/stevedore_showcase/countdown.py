"""countdown: a generator's items streamed as Server-Sent Events, one event an item."""

from __future__ import annotations

import time
from collections.abc import Iterator

from stevedore_server import Predictor

#: Seconds between two counts: long enough to see the events arrive one by one.
TICK = 0.1


class Countdown(Predictor):
    """Counts down from each start to zero."""

    name = "countdown"
    description = "Counts down from each start to zero: all at once by predict, a count an event by predict/stream."
    predict_schema = "schemas/countdown.json"  # package data: starts, whole numbers of at most 100
    predict_fixture = "fixtures/countdown.json"

    def run_predict(self, starts: list[int]) -> list[int]:
        return [count for start in starts for count in range(start, -1, -1)]

    def predict_stream(self, starts: list[int]) -> Iterator[dict[str, int]]:
        for count in self.run_predict(starts):  # predict's counts, one event each
            time.sleep(TICK)
            yield {"count": count}
