"""Logging: human-readable lines or JSON lines, each carrying the id of the request it is about.

The access log writes a line a request, so its path is short. Lines logged in
one turn of the event loop go out in one write (``TurnHandler``). And where a
request's line would reach only that handler, through one of our formatters
(as ``logging_config`` sets up), ``AccessLog`` makes the line from its parts
and hands it over, without a LogRecord: the same line for a fifth of the cost.
Any other configuration (a plugin's handler, pytest's caplog) gets the usual
records. Either way the text of an access line's parts is escaped to one line
(``one_line``): the client chose it.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import itertools
import json
import logging
import re
import time
import uuid
from typing import Any

from stevedore_server.base import tracing

#: The id of the request being served, for every log line written while serving it.
#: The header (and gRPC metadata key) that carries a request's id, given by the client or made by the server.
REQUEST_ID_HEADER = "x-request-id"
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

#: A client's request id is kept when it is short and printable; otherwise one is made. ``\Z``, not ``$``: ``$``
#: also matches before a final newline, which would let ``"abc\n"`` through.
VALID_REQUEST_ID = re.compile(r"\A[A-Za-z0-9._:/+=@-]{1,128}\Z")


class RequestIds:
    """Request ids for one front end of one process: the client's where valid, else made from a random prefix
    for the process and a counter, far cheaper than a uuid4 a request."""

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:12]
        self.counter = itertools.count(1)

    def of(self, given: str | None) -> str:
        """The client's id ``given``, if valid; else a new one."""
        if given is not None and VALID_REQUEST_ID.match(given):
            return given
        return f"{self.prefix}{next(self.counter):08x}"


def log_error(logger: logging.Logger, message: str, error: BaseException) -> str:
    """Log ``message`` with ``error``'s traceback under a new error id, once; the id, for the client's answer."""
    error_id = uuid.uuid4().hex
    logger.error("%s (error id %s)", message, error_id, exc_info=error)
    return error_id


def failure_answer(message: str, error_id: str) -> dict[str, str]:
    """What a client is told of a failure logged under ``error_id``: what failed, and where to look."""
    return {"error": f"{message}; see the server log for error id {error_id}", "error_id": error_id}


def python_level(level: str) -> str:
    """The ``logging`` level of a ``log_level`` setting: uvicorn's ``trace`` is DEBUG here."""
    return "DEBUG" if level == "trace" else level.upper()


def formatted(handler: logging.Handler, log_format: str) -> logging.Handler:
    """``handler`` writing the server's lines (``text`` or ``json``), each with its request id."""
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


#: The message of an access line: client, method, path, status, milliseconds.
ACCESS_FORMAT = '%s "%s %s" %d %.1f ms'


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request's id, and the current trace and span ids while tracing."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        ids = tracing.ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


def with_trace_ids(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` and, while tracing, the current trace and span ids (an access line's, made without a record)."""
    ids = tracing.ids()
    if ids is None:
        return fields
    return fields | {"trace_id": ids[0], "span_id": ids[1]}


class LineFormatter(logging.Formatter):
    """A formatter whose lines can also be made from their parts, without a record (see ``AccessLog``)."""

    def line(self, created: float, level: str, name: str, request: str, message: str, fields: dict[str, Any]) -> str:
        raise NotImplementedError

    def formatMessage(self, record: logging.LogRecord) -> str:  # logging's format() has set record.message
        return self.line(
            record.created, record.levelname, record.name, getattr(record, "request_id", "-"), record.message,
            self.fields(record),
        )  # fmt: skip

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        trace_id = getattr(record, "trace_id", None)
        return {} if trace_id is None else {"trace_id": trace_id, "span_id": getattr(record, "span_id", None)}


class TextFormatter(LineFormatter):
    """``time LEVEL logger [request id] message`` lines, then any traceback (logging's format() adds it); the
    time is formatted once a second, not once a line. While tracing, the bracket also holds the trace and span
    ids: ``[request id trace_id=... span_id=...]``."""

    def __init__(self) -> None:
        super().__init__()
        self.second = -1
        self.stamp = ""

    def line(self, created: float, level: str, name: str, request: str, message: str, fields: dict[str, Any]) -> str:
        second = int(created)
        if second != self.second:
            self.second, self.stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        trace_id = fields.get("trace_id")
        if trace_id is not None:
            request = f"{request} trace_id={trace_id} span_id={fields.get('span_id')}"
        return f"{self.stamp},{int((created - second) * 1000):03d} {level} {name} [{request}] {message}"


class JSONFormatter(LineFormatter):
    """One JSON object a line: time, level, logger, message, request id, extra fields (the trace and span ids
    while tracing: ``trace_id``, ``span_id``), traceback."""

    STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
        "message",
        "asctime",
        "request_id",
        "color_message",
    }

    def line(self, created: float, level: str, name: str, request: str, message: str, fields: dict[str, Any]) -> str:
        second = int(created)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{int((created - second) * 1000):03d}Z",
            "level": level.lower(),
            "logger": name,
            "message": message,
            "request_id": request,
        }
        return json.dumps(entry | fields, default=str)

    def format(self, record: logging.LogRecord) -> str:
        """The line alone: the traceback is one of its fields, not text after it (as logging's format() adds)."""
        record.message = record.getMessage()
        return self.formatMessage(record)

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        fields = {key: value for key, value in vars(record).items() if key not in self.STANDARD}
        if record.exc_info:
            fields["traceback"] = self.formatException(record.exc_info)
        return fields


def lighten_records() -> None:
    """Leave out of log records what no line of ours prints: the caller's frame, thread and process names.

    These are the switches the logging HOWTO's "Optimization" section names; they
    halve the cost of a record.
    """
    logging._srcfile = None  # documented: skips the sys._getframe walk
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class TurnHandler(logging.StreamHandler):  # type: ignore[type-arg]  # typeshed: generic in the stream
    """A stream handler that writes the lines logged in one turn of the event loop together, in one write.

    Under load one turn of the loop answers several requests: one system call
    for all their access lines instead of one each. Lines wait at most until
    the loop's next turn. Lines logged off the loop (model threads, startup)
    are written at once, after any waiting ones, so the stream keeps the order
    they were logged in; ``flush`` (called at exit) writes whatever still waits.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.waiting: list[str] = []
        self.turn: asyncio.AbstractEventLoop | None = None  # the loop whose turn the waiting lines belong to

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Write ``line`` (without its line end): on the event loop with the rest of this turn's lines, elsewhere
        at once."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            if loop is not None and loop is self.turn:
                self.waiting.append(line + self.terminator)
                return
            self.write_waiting()
            if loop is None:
                self.stream.write(line + self.terminator)
                self.stream.flush()
                return
            self.waiting.append(line + self.terminator)
            self.turn = loop
        loop.call_soon(self.end_turn)

    def end_turn(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self.write_waiting()

    def write_waiting(self) -> None:
        self.turn = None
        if not self.waiting:
            return
        lines, self.waiting = "".join(self.waiting), []
        try:
            self.stream.write(lines)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:  # reported as logging reports a failing handler, with the lines that were lost
            self.handleError(logging.makeLogRecord({"msg": lines.rstrip("\n")}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self.stream is not None:
                self.write_waiting()
        super().flush()


def one_line(text: str) -> str:
    """``text`` with every character that is not printable (line ends, tabs, other controls, unassigned code
    points), and the backslash and double quote, written as ``\\xNN`` (``\\uNNNN``, ``\\UNNNNNNNN`` above
    255), as nginx writes its access log: a field a client chose stays one field on one line, and an escape in
    the log always stands for one character (a path may itself hold the text ``\\x0a``)."""
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text  # the usual case, three scans in C
    return "".join(escaped(character) for character in text)


def escaped(character: str) -> str:
    if character.isprintable() and character not in '\\"':
        return character
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class AccessLog:
    """The access log's lines: straight to a ``TurnHandler`` where that is all logging would do with them.

    Whether it is, is checked on every line (a few attribute reads), so a
    configuration changed at any time is followed.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, request: str, args: tuple[Any, ...], fields: dict[str, Any]) -> None:
        """Log ``ACCESS_FORMAT % args`` at INFO, with ``fields`` as the record's extra attributes. The text of
        ``args`` is escaped (``one_line``) here, for every format and handler alike: a client chooses the path
        (decoded from its ``%0a``), and a line end in it would forge a line of the text format."""
        args = tuple([one_line(arg) if arg.__class__ is str else arg for arg in args])  # a list: faster, per request
        fields = with_trace_ids(fields)
        handler = self.sole_handler()
        if handler is None:
            self.logger.info(ACCESS_FORMAT, *args, extra=fields)
            return
        formatter: LineFormatter = handler.formatter  # type: ignore[assignment]  # checked by sole_handler
        level = logging.getLevelName(logging.INFO)
        try:
            handler.write_line(
                formatter.line(time.time(), level, self.logger.name, request, ACCESS_FORMAT % args, fields)
            )
        except RecursionError:
            raise
        except Exception:  # the record's way reports it as logging reports a failing handler
            self.logger.info(ACCESS_FORMAT, *args, extra=fields)

    def sole_handler(self) -> TurnHandler | None:
        """The handler an INFO record of the logger would reach, if it is the only one, takes the record as it
        is (no filter but the request id's) and formats it with a ``LineFormatter``."""
        logger: logging.Logger | None = self.logger
        if self.logger.disabled or self.logger.filters or not self.logger.isEnabledFor(logging.INFO):
            return None
        found: list[logging.Handler] = []
        while logger is not None:
            found += logger.handlers
            if len(found) > 1 or not logger.propagate:
                break
            logger = logger.parent
        if len(found) != 1:
            return None
        handler = found[0]
        if (
            type(handler) is not TurnHandler
            or handler.level > logging.INFO
            or not isinstance(handler.formatter, LineFormatter)
            or any(type(check) is not RequestIdFilter for check in handler.filters)
        ):
            return None
        return handler


def logging_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging configuration with every line in ``log_format`` and the ``stevedore`` loggers added."""
    from uvicorn.config import LOGGING_CONFIG  # here: a model's worker process logs without uvicorn

    config = copy.deepcopy(LOGGING_CONFIG)
    formatter: dict[str, Any] = (
        {"()": "stevedore_server.base.logs.JSONFormatter"}
        if log_format == "json"
        else {"()": "stevedore_server.base.logs.TextFormatter"}
    )
    config["formatters"] = {"stevedore": formatter}
    config["filters"] = {"request_id": {"()": "stevedore_server.base.logs.RequestIdFilter"}}
    config["handlers"] = {
        "stevedore": {
            "formatter": "stevedore",
            "()": "stevedore_server.base.logs.TurnHandler",
            "stream": "ext://sys.stderr",
            "filters": ["request_id"],
        }
    }
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "stevedore"):
        config["loggers"][name] = {"handlers": ["stevedore"], "level": python_level(level), "propagate": False}
    config["loggers"]["uvicorn.error"]["handlers"] = []  # uvicorn.error propagates to uvicorn
    config["loggers"]["uvicorn.error"]["propagate"] = True
    return config
