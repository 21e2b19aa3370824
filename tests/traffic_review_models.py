"""Models for ``test_traffic_review.py``: the two versions of ``wine`` (``traffic_models``), one that changes its
input in place after answering from it (a shadow must still get the request as the client sent it), and one that
streams."""

from __future__ import annotations

from collections.abc import Iterator

from stevedore_server import Predictor

from .traffic_models import WineOne, WineTwo


class Mutating(WineOne):
    """Answers each row's sum, then zeroes the rows it was given."""

    name = "wine-mutating"

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        sums = super().run_predict(rows)
        for row in rows:
            row[:] = [0.0] * len(row)
        return sums


class Streaming(WineTwo):
    """Version 2.0.0 of ``wine-streaming``, which streams each row's sum."""

    name = "wine-streaming"

    def predict_stream(self, rows: list[list[float]]) -> Iterator[float]:
        yield from self.run_predict(rows)


def models() -> list[Predictor]:
    return [WineOne(), WineTwo(), Mutating(), Streaming()]
