"""The log's short paths: access lines made without a record, and one write a turn of the event loop."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import subprocess
import sys
import threading
import uuid
from urllib.parse import urlsplit

import pytest

from stevedore_server.base.logs import (
    AccessLog,
    JSONFormatter,
    LineFormatter,
    RequestIdFilter,
    TextFormatter,
    TurnHandler,
    one_line,
    request_id,
)

from .helpers import wait_until
from .venvs import Server

ARGS = ("127.0.0.1", "POST", "/models/iris/predict", 200, 0.25)
FIELDS = {"status": 200, "duration_ms": 0.25, "route": "/models/{name}/predict"}


class Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


def access_logger(formatter: LineFormatter) -> tuple[logging.Logger, TurnHandler, Writes]:
    """A pair of loggers as ``logging_config`` sets up ``stevedore.access`` under ``stevedore``."""
    name = f"test-{uuid.uuid4().hex}.stevedore"
    parent, child = logging.getLogger(name), logging.getLogger(f"{name}.access")
    parent.setLevel(logging.INFO)
    parent.propagate = False
    parent.parent.addHandler(logging.NullHandler())  # where the records would go if it propagated
    parent.parent.propagate = False
    stream = Writes()
    handler = TurnHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    parent.addHandler(handler)
    return child, handler, stream


def by_record(logger: logging.Logger) -> None:
    """Log the line the usual way: a second handler means the access log can no longer skip the record."""
    logger.addHandler(logging.NullHandler())
    token = request_id.set("req-1")
    try:
        AccessLog(logger).write("req-1", ARGS, FIELDS)
    finally:
        request_id.reset(token)
        logger.handlers.clear()


def test_a_text_access_line_reads_the_same_made_with_or_without_a_record() -> None:
    logger, _, stream = access_logger(TextFormatter())
    AccessLog(logger).write("req-1", ARGS, FIELDS)
    by_record(logger)
    direct, recorded = stream.writes
    assert direct.endswith(f' INFO {logger.name} [req-1] 127.0.0.1 "POST /models/iris/predict" 200 0.2 ms\n')
    assert direct.split(" ", 2)[2] == recorded.split(" ", 2)[2]  # all but the date and time


def test_a_json_access_line_reads_the_same_made_with_or_without_a_record() -> None:
    logger, _, stream = access_logger(JSONFormatter())
    AccessLog(logger).write("req-1", ARGS, FIELDS)
    by_record(logger)
    direct, recorded = (json.loads(line) for line in stream.writes)
    assert direct.pop("time")[:2] == recorded.pop("time")[:2] == "20"
    assert direct == recorded
    assert direct == {
        "level": "info", "logger": logger.name, "request_id": "req-1",
        "message": '127.0.0.1 "POST /models/iris/predict" 200 0.2 ms', **FIELDS,
    }  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda logger, handler: logger.addHandler(logging.NullHandler()), id="another handler"),
        pytest.param(lambda logger, handler: logger.parent.setLevel(logging.WARNING), id="level"),
        pytest.param(lambda logger, handler: setattr(logger, "disabled", True), id="disabled by dictConfig"),
        pytest.param(lambda logger, handler: handler.setLevel(logging.WARNING), id="handler level"),
        pytest.param(lambda logger, handler: handler.addFilter(lambda record: False), id="handler filter"),
        pytest.param(lambda logger, handler: logger.addFilter(lambda record: False), id="logger filter"),
        pytest.param(lambda logger, handler: handler.setFormatter(logging.Formatter()), id="formatter"),
        pytest.param(lambda logger, handler: setattr(logger.parent, "propagate", True), id="to the root's"),
    ],
)
def test_any_other_configuration_gets_records(change) -> None:
    logger, handler, _ = access_logger(TextFormatter())
    assert AccessLog(logger).sole_handler() is handler
    change(logger, handler)
    assert AccessLog(logger).sole_handler() is None


def test_the_servers_own_configuration_takes_the_short_path() -> None:
    script = (
        "import logging, logging.config\n"
        "from stevedore_server.base.logs import AccessLog, TurnHandler, logging_config\n"
        "for log_format in ('text', 'json'):\n"
        "    logging.config.dictConfig(logging_config('info', log_format))\n"
        "    assert type(AccessLog(logging.getLogger('stevedore.access')).sole_handler()) is TurnHandler\n"
        "logging.config.dictConfig(logging_config('warning'))\n"
        "assert AccessLog(logging.getLogger('stevedore.access')).sole_handler() is None\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_the_lines_of_one_loop_turn_go_out_in_one_write_when_it_ends() -> None:
    _, handler, stream = access_logger(TextFormatter())

    async def serve() -> None:
        for line in ("a", "b", "c"):
            handler.write_line(line)
        assert stream.writes == []
        await asyncio.sleep(0)
        assert stream.writes == ["a\nb\nc\n"]
        handler.write_line("d")
        await asyncio.sleep(0)

    asyncio.run(serve())
    assert stream.writes == ["a\nb\nc\n", "d\n"]


def test_a_line_from_a_thread_goes_out_at_once_after_the_waiting_ones() -> None:
    _, handler, stream = access_logger(TextFormatter())

    async def serve() -> None:
        handler.write_line("on the loop")
        thread = threading.Thread(target=handler.write_line, args=("from a thread",))
        thread.start()
        thread.join()  # the loop's turn has not ended
        assert stream.writes == ["on the loop\n", "from a thread\n"]
        await asyncio.sleep(0)

    asyncio.run(serve())
    assert stream.writes == ["on the loop\n", "from a thread\n"]


def test_flush_writes_the_waiting_lines() -> None:
    _, handler, stream = access_logger(TextFormatter())

    async def serve() -> None:
        handler.write_line("waiting")
        handler.flush()  # what logging.shutdown does at exit
        assert stream.writes == ["waiting\n"]

    asyncio.run(serve())
    assert stream.writes == ["waiting\n"]


def test_a_stream_that_fails_is_reported_and_the_loop_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("no space left on device")

    handler = TurnHandler(Full())

    async def serve() -> str:
        handler.write_line("a line that is lost")
        await asyncio.sleep(0)
        return "served"

    assert asyncio.run(serve()) == "served"
    report = capsys.readouterr().err
    assert "no space left on device" in report and "a line that is lost" in report


def test_a_record_with_a_traceback_keeps_it() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("stevedore.x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    RequestIdFilter().filter(record)
    text = TextFormatter().format(record)
    assert text.splitlines()[0].endswith(" ERROR stevedore.x [-] failed here")
    assert "ValueError: boom" in text
    assert "ValueError: boom" in json.loads(JSONFormatter().format(record))["traceback"]


# -- one line a request, whatever its path ------------------------------------------

#: A path as a client may send it (``%0a`` decoded): every character that would split or confuse a line.
FORGING = '/models/x\nFAKE LINE\r\x1b[2J\t\\x0a"/predict'


@pytest.mark.parametrize("made", ["without a record", "by record"])
def test_a_path_with_line_ends_stays_on_its_access_line(made: str) -> None:
    logger, _, stream = access_logger(TextFormatter())
    if made == "by record":  # a second handler: the line goes out as a LogRecord, its request id from the context
        logger.addHandler(logging.NullHandler())
    token = request_id.set("req-1")
    try:
        AccessLog(logger).write("req-1", ("127.0.0.1", "POST", FORGING, 404, 0.25), FIELDS)
    finally:
        request_id.reset(token)
    (line,) = stream.writes
    assert line.count("\n") == 1 and line.endswith("\n") and "\r" not in line and "\x1b" not in line
    escaped = r"/models/x\x0aFAKE LINE\x0d\x1b[2J\x09\x5cx0a\x22/predict"
    assert line.endswith(f' [req-1] 127.0.0.1 "POST {escaped}" 404 0.2 ms\n'), line


def test_a_json_access_line_carries_the_same_escaped_path() -> None:
    logger, _, stream = access_logger(JSONFormatter())
    AccessLog(logger).write("req-1", ("127.0.0.1", "POST", FORGING, 404, 0.25), FIELDS)
    assert json.loads(stream.writes[0])["message"].startswith(r'127.0.0.1 "POST /models/x\x0aFAKE LINE\x0d')


@pytest.mark.parametrize("text", ["/models/iris/predict", "/models/café/predict?x=1&y=%0a", "/héllo wörld"])
def test_printable_paths_are_logged_as_they_are(text: str) -> None:
    assert one_line(text) == text


@pytest.mark.parametrize("line_end", ["%0a", "%0d%0a", "%0d", "%E2%80%A8"])
def test_a_forged_line_never_reaches_a_real_servers_log(example_server: Server, line_end: str) -> None:
    """The request of the finding, against a real server with its access log on (the default)."""
    rid = uuid.uuid4().hex
    target = f"/models/x{line_end}FAKE%20LINE%20{rid}/predict"
    address = urlsplit(example_server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {rid}\r\nContent-Type: application/json\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\n[]".encode()
        )
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:300]

    def about() -> list[str]:
        return [line for line in example_server.log().splitlines() if rid in line]

    wait_until(
        lambda: any("stevedore.access" in line for line in about()), "the access line", explain=example_server.log
    )
    assert [line for line in about() if "FAKE LINE" in line and "stevedore.access" not in line] == []
    assert not [line for line in example_server.log().splitlines() if line.startswith("FAKE")]
