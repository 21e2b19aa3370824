"""A misbehaving test plugin: models that each go wrong in one known way.

Each is healthy on its fixture, so it passes its self-test and is served, and
misbehaves only on a request holding a negative number; ``NaNOnFixture`` is
the exception, broken on its fixture too, so it is never served.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from .predictors import RowSum

#: What ``Raises`` puts in its exception: it must reach the log, never a response.
SECRET = "secret internal detail: /srv/models/weights.bin"


def triggered(rows: list[list[float]]) -> bool:
    return any(value < 0 for row in rows for value in row)


class Misbehaving(RowSum):
    """RowSum, except on a request holding a negative number, where ``misbehave`` answers."""

    def run_predict(self, rows: list[list[float]]) -> Any:
        return self.misbehave(rows) if triggered(rows) else super().run_predict(rows)

    def misbehave(self, rows: list[list[float]]) -> Any:
        raise NotImplementedError


class Raises(Misbehaving):
    name = "raises"

    def misbehave(self, rows: list[list[float]]) -> Any:
        raise RuntimeError(SECRET)


class Sleeper(Misbehaving):
    """Blocks until ``release`` is set (at most ``LONGEST`` seconds); counts how many of its calls block at once."""

    name = "sleeper"
    LONGEST = 10.0
    started = threading.Event()
    release = threading.Event()
    lock = threading.Lock()
    running = 0
    most_at_once = 0

    @classmethod
    def reset(cls) -> None:
        cls.started.clear()
        cls.release.clear()
        with cls.lock:
            cls.running = cls.most_at_once = 0

    def misbehave(self, rows: list[list[float]]) -> Any:
        cls = type(self)
        with cls.lock:
            cls.running += 1
            cls.most_at_once = max(cls.most_at_once, cls.running)
        cls.started.set()
        try:
            cls.release.wait(timeout=cls.LONGEST)
        finally:
            with cls.lock:
                cls.running -= 1
        return [sum(row) for row in rows]


class NaNOutput(Misbehaving):
    name = "nan"

    def misbehave(self, rows: list[list[float]]) -> Any:
        return [math.nan for _ in rows]


class NaNOnFixture(RowSum):
    """Answers NaN on every input, its fixture included: it fails its self-test."""

    name = "nan-on-fixture"

    def run_predict(self, rows: list[list[float]]) -> Any:
        return [math.nan for _ in rows]


class NotJSON(Misbehaving):
    name = "not-json"

    def misbehave(self, rows: list[list[float]]) -> Any:
        return [object() for _ in rows]


class WrongRows(Misbehaving):
    """One prediction short."""

    name = "wrong-rows"

    def misbehave(self, rows: list[list[float]]) -> Any:
        return [sum(row) for row in rows][:-1]


class WrongRowsBatched(WrongRows):
    name = "wrong-rows-batched"
    max_batch_size = 8
    max_batch_time = 0.01
