"""The payload log hands over what comes together at once (the hook's ``more``), and the JSON lines sink writes
those records' lines in one write: what keeps the log's thread from costing the serving thread a GIL hand-over
per record (issue 27's performance bound)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from stevedore_server import hookimpl
from stevedore_server.base.inference_records import InferenceRecord
from stevedore_server.plugins.builtin.payload_log import JSONLines

from .helpers import Registers, wait_until
from .predictors import RowSum


class Held:
    """A payload log plugin that takes ``more`` and holds the log's thread on its first record until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[tuple[str, bool]] = []

    @hookimpl
    def stevedore_inference_logged(self, record: InferenceRecord, more: bool) -> None:
        self.entered.set()
        self.release.wait(60)
        self.calls.append((record.request_id, more))


def test_records_that_come_together_are_handed_over_together(make_client: Callable[..., TestClient]) -> None:
    plugin = Held()
    client = make_client(Registers(RowSum()), plugin)
    try:
        first = client.post("/models/rowsum/predict", json=[[1]])
        assert plugin.entered.wait(30)  # the thread holds the first record: the next five wait together
        waiting = [client.post("/models/rowsum/predict", json=[[n]]).headers["x-request-id"] for n in range(5)]
    finally:
        plugin.release.set()
    wait_until(lambda: len(plugin.calls) == 6, "the six records handed over")
    assert plugin.calls[0] == (first.headers["x-request-id"], False)  # alone when it came
    assert plugin.calls[1:] == [(rid, True) for rid in waiting[:-1]] + [(waiting[-1], False)]


def record(request_id: str) -> InferenceRecord:
    return InferenceRecord(
        request_id, "rowsum", "1", "POST /models/{name}/predict", "http", 200, True, 1_800_000_000.25, 0.001,
        [[1, 2]], {"predictions": [3]}, ("request", "response"),
    )  # fmt: skip


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    reading, writing = os.pipe()
    os.set_blocking(reading, False)
    yield reading, writing
    os.close(reading)
    os.close(writing)


def test_the_json_lines_sink_writes_held_lines_at_once(pipe: tuple[int, int]) -> None:
    reading, writing = pipe
    sink = JSONLines(writing)
    sink.send(record("a"), more=True)
    sink.send(record("b"), more=True)
    with pytest.raises(BlockingIOError):  # held: nothing written yet
        os.read(reading, 1 << 16)
    sink.send(record("c"), more=False)
    written = os.read(reading, 1 << 16)  # one read: the three lines came in one write
    lines = written.split(b"\n")
    assert lines[-1] == b"", "whole lines only"
    parsed = [orjson.loads(line) for line in lines[:-1]]
    assert [line["id"] for line in parsed] == ["a", "b", "c"]
    assert parsed[0]["time"] == "2027-01-15T08:00:00.250000Z" and parsed[0]["request"] == [[1, 2]]
    sink.send(record("d"))  # without ``more`` (a caller of the old signature): written at once
    assert orjson.loads(os.read(reading, 1 << 16))["id"] == "d"
