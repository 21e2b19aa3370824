"""next-day: dates and times in and out over the Open Inference Protocol, by content type."""

from __future__ import annotations

import datetime

from stevedore_server import Predictor


class NextDay(Predictor):
    """The same time one day later, for each date and time."""

    name = "next-day"
    description = "The same time one day later, for each ISO 8601 date and time."
    content_type = "datetime"  # a V2 request naming no content type gets datetimes
    predict_schema = {"type": "array", "items": {"type": "string"}}  # what comes over the wire: text
    predict_fixture = ["2022-01-11T11:09:10"]

    def run_predict(self, stamps: list[datetime.datetime | str]) -> list[datetime.datetime]:
        return [as_datetime(stamp) + datetime.timedelta(days=1) for stamp in stamps]


def as_datetime(stamp: datetime.datetime | str) -> datetime.datetime:
    """A datetime as it is; ISO 8601 text (the self-test's fixture, the stevedore routes' JSON) parsed."""
    return stamp if isinstance(stamp, datetime.datetime) else datetime.datetime.fromisoformat(stamp)
