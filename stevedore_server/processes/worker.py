"""A model's worker process (``python -m stevedore_server.worker``), started by ``isolation``, never by a user.

It runs under the server's interpreter (``[models.NAME] processes``) or under
another one (``python``), whose environment has the plugin and its own
dependencies. It finds the plugins installed where it runs, as a server does,
and talks to the server over one socket (its file descriptor in the
``STEVEDORE_WORKER`` variable, with what it is to do), one pickled message
at a time:

- ``describe``: the models these plugins provide (of the listed names, or all);
- ``serve``: load and self-test one model (name, version), send what loading
  found, then answer ``(action, payload)`` requests, one at a time, with
  ``("ok", result)``, ``("client", error)`` for an error meant for the client,
  or ``("error", summary, traceback)`` when the model raised. It ends when the
  server closes the socket (the server stopping, or dying). With ``tracing``
  in the orders, a request carries its trace context (``wire.call_message``)
  and the model's span here is a child of the server's;
- ``job`` (given by ``stevedore_server.worker``, from the jobs layer:
  ``jobs.child.run_in_worker``): load the model, read one JSON message (what
  to run: a training or a long prediction, its parameters, its workdir), then
  run it as a job process does: its progress, log lines, result or error go
  back as ``jobs.child``'s JSON messages. A model in worker processes is
  trained (and predicts as a job) under its own interpreter, never in the
  server's.

``artifact`` and ``base_version`` in the orders make the model the new version
a training produced: the installed ``base_version`` with ``Predictor.trained``.

The server gone (stopped, or killed) is an ordinary end: the worker exits once
it sees the socket closed, between requests without a word, in the middle of
a reply with one log line, never with a traceback.

Nothing in a reply can fail to unpickle on the server's side for being an
exception of a module it lacks: a model's exception travels as text.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, distribution
from multiprocessing.connection import Connection
from typing import Any

import orjson

from stevedore_server.base.errors import ServerGone

from .wire import ORDERS_ENV, PROTOCOL, read_call

logger = logging.getLogger("stevedore.worker")


#: What a worker process may be ordered to do besides ``describe`` and ``serve``: ``job`` (the jobs layer's,
#: given by ``stevedore_server.worker``, which runs this module).
Mode = Callable[[Connection, dict[str, Any]], None]


def main(modes: Mapping[str, Mode] | None = None) -> None:
    orders = orjson.loads(os.environ.pop(ORDERS_ENV))
    connection = Connection(orders["fd"])
    configure_logging(orders.get("log_level", "info"), orders.get("log_format", "text"))
    try:
        if orders["mode"] == "describe":
            send(connection, describe(orders))
        elif orders["mode"] == "serve":
            serve(connection, orders)
        else:
            (modes or {})[orders["mode"]](connection, orders)
    except ServerGone as gone:
        logger.info("the server closed the socket in the middle of a reply (%s); this worker process ends", gone)


def configure_logging(level: str, log_format: str) -> None:
    """Lines in the server's format on stderr (the server's), each with the id of the request being answered,
    or ``worker-PID`` outside one."""
    from stevedore_server.base.logs import formatted, python_level, request_id

    request_id.set(f"worker-{os.getpid()}")
    root = logging.getLogger()
    root.handlers[:] = [formatted(logging.StreamHandler(sys.stderr), log_format)]
    root.setLevel(python_level(level))


def send(connection: Connection, message: Any) -> None:
    send_bytes(connection, pickle.dumps(message, protocol=PROTOCOL))


def send_bytes(connection: Connection, data: bytes) -> None:
    """``data`` to the server; ServerGone if it has closed the socket."""
    try:
        connection.send_bytes(data)
    except OSError as error:  # BrokenPipeError, ConnectionResetError: a socket pair fails so only with its peer
        raise ServerGone(type(error).__name__) from None


def find(orders: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The candidates and plugin failures of the plugins installed here, selected as the server selects."""
    from stevedore_server.base.sources import PluginSelection
    from stevedore_server.model_files import ModelFile
    from stevedore_server.plugins.discovery import accepted, find_installed

    plugins = orders.get("plugins")
    selection = PluginSelection.from_names(plugins, orders.get("disable_plugins", ()))
    files = [ModelFile.of_json(values) for values in orders.get("model_files", ())]
    candidates, failures, _hooks = find_installed(selection, files=files)
    return accepted(candidates, failures), failures


def describe(orders: dict[str, Any]) -> dict[str, Any]:
    """The models of the names asked for, as (name, version, where from), the plugins that failed, and every
    plugin installed here, selected or not (the names ``--plugins`` and ``--disable-plugins`` may give)."""
    from stevedore_server.plugins.installed import installed_plugins

    candidates, failures = find(orders)
    names = orders.get("names")  # None: every model
    found = [
        (c.predictor.name, c.predictor.version, c.source)
        for c in candidates
        if names is None or c.predictor.name in names
    ]
    return {"models": found, "failures": failures, "installed": installed_plugins(), "python": python_description()}


def python_description() -> dict[str, str]:
    return {"executable": sys.executable, "version": ".".join(map(str, sys.version_info[:3]))}


def start_tracing(orders: dict[str, Any]) -> str | None:
    """Trace as the server does (its ``tracing`` setting in the orders, the ``OTEL_*`` variables it passed on);
    why not, if this interpreter's environment lacks the ``otel`` extra the server's has."""
    from stevedore_server.base import tracing
    from stevedore_server.base.errors import StartupError

    try:
        tracing.configure(bool(orders.get("tracing")))
    except StartupError as error:
        return f"{error} (under {sys.executable})"
    return None


def serve(connection: Connection, orders: dict[str, Any]) -> None:
    refused = start_tracing(orders)
    if refused is not None:
        send(connection, {"state": "failed", "reason": refused})
        return
    loaded = load_ordered(orders)
    if isinstance(loaded, str):
        send(connection, {"state": "failed", "reason": loaded})
        return
    send(connection, loaded_description(loaded))
    if loaded.ready:
        answer(connection, loaded.predictor)


def load_ordered(orders: dict[str, Any]) -> Any:
    """The model of the orders (a trained version of it, given ``artifact``), loaded and self-tested: a
    ``loading.LoadedModel``, or why no installed plugin provides it."""
    from pathlib import Path

    from stevedore_server.plugins.loading import load_model

    candidates, _failures = find(orders)
    wanted = (orders["model"], orders.get("base_version", orders["version"]))
    chosen = [c for c in candidates if (c.predictor.name, c.predictor.version) == wanted]
    if not chosen:
        return f"no installed plugin provides model {wanted[0]!r} version {wanted[1]!r} under {sys.executable}"
    predictor = chosen[0].predictor
    if orders.get("artifact") is not None:
        predictor = predictor.trained(Path(orders["artifact"]), orders["version"])
    return load_model(predictor, chosen[0].source)


def loaded_description(loaded: Any) -> dict[str, Any]:
    """What the server needs of a loaded model: its state, declarations, self-test and distribution."""
    predictor = loaded.predictor
    declared = {
        attribute: getattr(predictor, attribute)
        for attribute in (
            "name", "version", "description", "tensor_inputs", "tensor_outputs", "content_type", "numpy_input",
            "max_batch_size", "max_batch_time", "row_aligned", "default_outputs",
        )
    }  # fmt: skip
    for kind in ("predict", "score"):
        validator = getattr(loaded, f"{kind}_validator")
        declared[f"{kind}_schema"] = validator.schema if validator is not None else None
        declared[f"{kind}_fixture"] = getattr(loaded, f"{kind}_fixture")
    if loaded.train_validator is not None:  # trained by a job process under this interpreter (``job``)
        declared["train_schema"] = loaded.train_validator.schema
        declared["train_fixture"] = predictor.resolved_fixture("train")
    return {
        "state": loaded.state.value,
        "reason": loaded.reason,
        "created": loaded.created,
        "declared": declared,
        "streams": predictor.has_stream,
        "chooses_outputs": predictor.has_predict_outputs,
        "distribution": distribution_metadata(loaded.source.distribution),
        "python": python_description(),
        "pid": os.getpid(),
    }


def distribution_metadata(name: str | None) -> dict[str, Any] | None:
    """The catalogue fields of the plugin's distribution, as installed here (the server may lack it)."""
    from stevedore_server.plugins.builtin.catalogue import wheel_metadata

    if name is None:
        return None
    try:
        return wheel_metadata(distribution(name).metadata)
    except PackageNotFoundError:
        return None


def answer(connection: Connection, predictor: Any) -> None:
    """Answer the server's requests until it closes the socket, each in the trace context it came with (the
    model's span here a child of the server's span of the call)."""
    from stevedore_server.base import tracing
    from stevedore_server.base.errors import ClientError
    from stevedore_server.base.logs import request_id

    attributes = {"stevedore.model.name": predictor.name, "stevedore.model.version": predictor.version,
                  "process.pid": os.getpid()}  # fmt: skip
    while True:
        try:
            action, payload, request, carrier = read_call(connection.recv_bytes())
        except (EOFError, OSError):
            return
        request_id.set(request)  # the model's log lines carry the id of the request they are about
        if action == "cancel":  # a stream's cancel that crossed its end: nothing to stop
            continue
        with tracing.continued(carrier):
            if action == "stream":
                with tracing.span("model", attributes | {"stevedore.action": action}, kind="server"):
                    stream(connection, predictor, payload)
                continue
            try:
                with tracing.span("model", attributes | {"stevedore.action": action}, kind="server"):
                    result = run(predictor, action, payload)
                reply: tuple[Any, ...] = ("ok", result)
            except ClientError as error:
                reply = ("client", error)
            except Exception as error:
                reply = ("error", f"{type(error).__name__}: {error}", traceback.format_exc())
            send_reply(connection, reply)


def run(predictor: Any, action: str, payload: Any) -> Any:
    """``predict``, ``score``, or ``predict_outputs`` (its payload and output names) on ``payload``."""
    if action == "predict_outputs":
        value, names = payload
        return predictor.predict_outputs(value, tuple(names))
    return predictor.predict(payload) if action == "predict" else predictor.score(payload)


def stream(connection: Connection, predictor: Any, payload: Any) -> None:
    """Send the items of ``predict_stream`` one message each, then ``("end",)``; or the error, as ``answer``
    does. A ``cancel`` from the server (its client left) closes the generator, so its ``finally`` runs, and is
    acknowledged with ``("cancelled",)``. The server gone closes it too, and ServerGone is raised on."""
    from stevedore_server.base.errors import ClientError

    items: Any = None
    try:
        items = generator_of(predictor.predict_stream(payload))
        for item in items:
            send_reply(connection, ("item", item))
            if cancelled(connection):
                items.close()
                send_reply(connection, ("cancelled",))
                return
        reply: tuple[Any, ...] = ("end",)
    except ServerGone:
        if items is not None:  # left in the middle: its ``finally`` runs all the same
            close_left(items)
        raise
    except ClientError as error:
        reply = ("client", error)
    except Exception as error:
        reply = ("error", f"{type(error).__name__}: {error}", traceback.format_exc())
    send_reply(connection, reply)


def close_left(items: Any) -> None:
    """Close a stream's generator the server left; the model's error in doing so is logged, as nobody waits."""
    try:
        items.close()
    except Exception:
        logger.exception("the model's stream raised as it was closed")


def cancelled(connection: Connection) -> bool:
    """The server has sent the stream's cancel; ServerGone if it has closed the socket instead."""
    try:
        return connection.poll(0) and bool(pickle.loads(connection.recv_bytes())[0] == "cancel")
    except (EOFError, OSError) as error:
        raise ServerGone(type(error).__name__) from None


def generator_of(stream: Any) -> Any:
    """A plain generator of the items of a generator or of an async generator (run on a loop of its own)."""
    if not hasattr(stream, "__anext__"):
        if not hasattr(stream, "__next__"):
            raise TypeError(f"predict_stream must return a generator, got {type(stream).__name__}")
        return stream
    return async_items(stream)


def async_items(stream: Any) -> Any:
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(stream.aclose())
        loop.close()


def send_reply(connection: Connection, reply: tuple[Any, ...]) -> None:
    """Send ``reply``; one that cannot be pickled (an odd result, an error holding a lock) is sent as an error."""
    try:
        data = pickle.dumps(reply, protocol=PROTOCOL)
    except Exception as error:
        what = "result" if reply[0] == "ok" else "error"
        data = pickle.dumps(
            ("error", f"the model's {what} cannot be sent to the server: {type(error).__name__}: {error}", ""),
            protocol=PROTOCOL,
        )
    send_bytes(connection, data)
