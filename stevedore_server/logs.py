"""Logging: human-readable lines or JSON lines, each carrying the id of the request it is about."""

from __future__ import annotations

import contextvars
import copy
import json
import logging
import time
from typing import Any

from uvicorn.config import LOGGING_CONFIG

#: The id of the request being served, for every log line written while serving it.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` lines; the time is formatted once a second, not once a line (the access log writes many)."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self.second = -1
        self.stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self.second:
            self.second, self.stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self.stamp},{int(record.msecs):03d}"


def lighten_records() -> None:
    """Leave out of log records what no line of ours prints: the caller's frame, thread and process names.

    These are the switches the logging HOWTO's "Optimization" section names; they
    halve the cost of a record, which the access log pays once a request.
    """
    logging._srcfile = None  # documented: skips the sys._getframe walk
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, extra fields, traceback."""

    STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
        "message",
        "asctime",
        "request_id",
        "color_message",
    }

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        entry |= {key: value for key, value in vars(record).items() if key not in self.STANDARD}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging configuration with every line in ``log_format`` and the ``stevedore`` loggers added."""
    config = copy.deepcopy(LOGGING_CONFIG)
    formatter: dict[str, Any] = (
        {"()": "stevedore_server.logs.JSONFormatter"}
        if log_format == "json"
        else {"()": "stevedore_server.logs.TextFormatter"}
    )
    config["formatters"] = {"stevedore": formatter}
    config["filters"] = {"request_id": {"()": "stevedore_server.logs.RequestIdFilter"}}
    config["handlers"] = {
        "stevedore": {
            "formatter": "stevedore",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "filters": ["request_id"],
        }
    }
    python_level = "DEBUG" if level == "trace" else level.upper()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "stevedore"):
        config["loggers"][name] = {"handlers": ["stevedore"], "level": python_level, "propagate": False}
    config["loggers"]["uvicorn.error"]["handlers"] = []  # uvicorn.error propagates to uvicorn
    config["loggers"]["uvicorn.error"]["propagate"] = True
    return config
