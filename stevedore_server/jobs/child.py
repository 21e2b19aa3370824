"""The side of a job inside its own process: ``TrainContext``, and ``spawned``, the process's entry point.

The server starts a job's process (``jobs.launch``) in a session of its own, so
that the job and anything it starts form one process group the server can stop
as a whole, and so that no signal to the server's group reaches it. ``spawned``
reads the pickled predictor and the job from its socket, then runs the job.
Everything the job reports (progress, log lines, its result or error) goes back
as JSON messages through that socket, which the server reads on a thread of its
own: nothing is pickled on the way back, so an exception that cannot be pickled
is reported like any other, and a job whose process dies simply closes the
socket (the server then reads its exit status).

Traced (the ``tracing`` setting), a job's process exports a span tree of its
own: ``job`` (the root of a trace of its own, as the job outlives the request
that started it, linked to that request's span), with ``load`` (in a model's
worker interpreter) and ``model`` (the training or prediction) under it.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
import traceback
from collections.abc import Mapping
from contextlib import AbstractContextManager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from stevedore_server.base import tracing
from stevedore_server.base.serialization import dumps_result

#: The variable handing a spawned job's process its socket's descriptor and the server's ``sys.path``.
JOB_ENV = "STEVEDORE_JOB"
#: Longest message of a progress report.
MAX_MESSAGE = 1000


class Channel:
    """The pipe to the server; a closed pipe (the server is gone) is remembered, not raised at the model."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.lock = threading.Lock()
        self.broken = False

    def send(self, message: dict[str, Any]) -> None:
        self.send_bytes(orjson.dumps(message, default=str))

    def send_bytes(self, data: bytes) -> None:
        with self.lock:
            if self.broken:
                return
            try:
                self.connection.send_bytes(data)
            except OSError:  # the server died: its successor finds the job interrupted and stops this process
                self.broken = True


class ChannelHandler(logging.Handler):
    """Sends each log record of the job's process to the server, which keeps it with the job."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a broken format string in the model's code: keep the raw message
            line = str(record.msg)
        self.channel.send({"type": "log", "level": record.levelname.lower(), "line": line})


class TrainContext:
    """What ``Predictor.train`` gets besides its parameters."""

    def __init__(self, workdir: Path, channel: Channel, logger: logging.Logger, cancel: threading.Event) -> None:
        #: A directory of this job's own, removed with the job's record (``job_retention``): what is to outlive it
        #: is returned as ``{"artifact": PATH}`` (and kept, copied out, by the server).
        self.workdir = workdir
        #: Lines logged here (or anywhere in the job's process) are kept with the job: ``GET /jobs/ID/logs``.
        self.logger = logger
        self._channel = channel
        self._cancel = cancel

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far the job is, from 0 to 1 (clamped), with an optional message."""
        fraction = min(1.0, max(0.0, float(fraction)))
        self._channel.send({"type": "progress", "fraction": fraction, "message": str(message)[:MAX_MESSAGE]})

    def cancelled(self) -> bool:
        """True once the job was asked to stop (a cancel, or the server stopping): return soon after."""
        return self._cancel.is_set()


def describe(error: BaseException) -> str:
    """``Type: message`` of an exception, even of one whose ``str`` raises."""
    try:
        text = str(error)
    except Exception:
        text = "(its message cannot be shown)"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def spawned() -> None:
    """A job's process of the server's interpreter (``jobs.launch.spawn``): the predictor, the job's kind,
    parameters and workdir come pickled through its socket, then the job runs."""
    orders = orjson.loads(os.environ.pop(JOB_ENV))
    connection = Connection(orders["fd"])
    channel = Channel(connection)
    logger = job_logger(channel)
    if not traced(channel, orders):
        return
    try:
        predictor, kind, params, workdir = pickle.loads(connection.recv_bytes())
    except Exception as error:  # a model's class the job cannot import, or the server gone before it sent it
        logger.error("the job could not receive its model:\n%s", "".join(traceback.format_exception(error)).rstrip())
        channel.send({"type": "error", "error": f"the job could not receive its model: {describe(error)}"})
        return
    with job_span(orders, kind, predictor.name, predictor.version):
        run(channel, logger, predictor, kind, params, workdir)


def traced(channel: Channel, orders: Mapping[str, Any]) -> bool:
    """Start tracing as the server asked (``tracing`` in the orders); False, with the job's error sent, if this
    interpreter's environment cannot."""
    from stevedore_server.processes.worker import start_tracing

    refused = start_tracing(dict(orders))
    if refused is not None:
        channel.send({"type": "error", "error": refused})
    return refused is None


def job_span(order: Mapping[str, Any], kind: str, model: str, version: str) -> AbstractContextManager[Any]:
    """The job's span, a child of the span of the request that started the job (sampled as it was) and
    linked to it."""
    attributes = {"stevedore.job.kind": kind, "stevedore.model.name": model, "stevedore.model.version": version}
    if order.get("job") is not None:
        attributes["stevedore.job.id"] = str(order["job"])
    origin = order.get("trace")
    return tracing.span("job", attributes, kind="consumer", links=[tracing.link(origin)], parent=origin or None)


def run(
    channel: Channel,
    logger: logging.Logger,
    predictor: Any,
    kind: str,
    params: Any,
    workdir: str,
    cancel: threading.Event | None = None,
) -> None:
    """Train (or predict, for a long prediction), then send the result or the error. ``cancel``: set when the
    job is to stop (a job run on a thread, as in a Ray actor); without it, SIGTERM sets one."""
    if cancel is None:
        cancel = threading.Event()
        # SIGTERM asks the job to stop (context.cancelled()); SIGKILL follows after the grace period.
        signal.signal(signal.SIGTERM, lambda signum, frame: cancel.set())
    context = TrainContext(Path(workdir), channel, logger, cancel)
    attributes = {"stevedore.model.name": predictor.name, "stevedore.model.version": predictor.version}
    try:
        with tracing.span("model", attributes | {"stevedore.action": kind}):
            output = predictor.predict(params) if kind == "predict" else predictor.train(params, context)
        result = dumps_result(output)
    except Exception as error:
        logger.error("%s failed:\n%s", kind, "".join(traceback.format_exception(error)).rstrip())
        channel.send({"type": "error", "error": describe(error)})
        return
    channel.send_bytes(b'{"type":"result","result":' + result + b"}")


def job_logger(channel: Channel) -> logging.Logger:
    """The root logger of the job's process, sending every record to the server; ``stevedore.job`` for the model."""
    root = logging.getLogger()
    handler = ChannelHandler(channel)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return logging.getLogger("stevedore.job")


def run_in_worker(connection: Connection, orders: dict[str, Any]) -> None:
    """A job in a model's worker process (its ``job`` mode): the model of the orders loaded under the model's
    interpreter, then one job run on it as in a job process; its loading's log lines are the job's too."""
    from stevedore_server.processes.worker import load_ordered

    order = orjson.loads(connection.recv_bytes())
    channel = Channel(connection)
    job_log = job_logger(channel)
    if not traced(channel, orders):
        return
    with job_span(order, order["kind"], orders["model"], orders["version"]):
        with tracing.span(
            "load", {"stevedore.model.name": orders["model"], "stevedore.model.version": orders["version"]}
        ):
            loaded = load_ordered(orders)
        if isinstance(loaded, str) or not loaded.ready:
            reason = loaded if isinstance(loaded, str) else loaded.reason
            channel.send({"type": "error", "error": f"the model could not be loaded for the job: {reason}"})
            return
        run(channel, job_log, loaded.predictor, order["kind"], order["params"], order["workdir"])
