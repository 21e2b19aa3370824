"""Predictors served by the tracing tests' real servers: one that logs while it predicts, one that batches, one
that streams."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from .predictors import RowSum

logger = logging.getLogger("stevedore.test.traced")


class Traced(RowSum):
    """Sums rows, logging a line while it does (the line carries the trace of the request); fails on a row that
    starts with a negative number."""

    name = "traced"

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        logger.warning("summing %d rows", len(rows))
        if any(row[0] < 0 for row in rows):
            raise ValueError("a negative row")
        return super().run_predict(rows)


class TracedBatch(RowSum):
    """Sums rows in batches of up to 8 requests, waiting long enough for requests sent together to meet."""

    name = "tracedbatch"
    max_batch_size = 8
    max_batch_time = 0.5


class TracedStream(RowSum):
    """Streams each row's sum."""

    name = "tracedstream"

    def predict_stream(self, rows: list[list[float]]) -> Iterator[float]:
        for row in rows:
            yield sum(row)
