"""What an inference route notes for the payload log (``core.payload_log``), the same for every front end.

    note_request(request.scope, server, model, from_json, body)   # once the body is read
    note_response(request.scope, from_json, response.body)        # once the answer is made

Each inference route (the stevedore routes, the original routes, the Open
Inference Protocol's infer and generate, streams) notes its model and the
request as read, then its response as written; the protocol's edge hands the
exchange over once the answer is sent, with its route, status, time and request
id: over HTTP the outermost middleware (``http_exchange``, from the request's
ASGI scope), over gRPC the call's context (``grpc_exchange``, from a context
variable the handler set in the call's own task). With the payload log off, the
model left out or the sample not drawn, noting does nothing (not even the
partial of a body is made). Bodies are noted as they are (bytes, values,
messages) with the function that reads them (``from_json``, ``from_value``,
the Open Inference Protocol's ``v2.payload_views``), which the log's thread
calls. Nothing here knows Starlette or gRPC.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson

from stevedore_server.base.redaction import Unparsed
from stevedore_server.base.serialization import dumps
from stevedore_server.core.payload_log import Exchange
from stevedore_server.core.server import ModelServer
from stevedore_server.core.serving import ServingModel

#: The ASGI scope's key of an HTTP request's exchange.
SCOPE_KEY = "stevedore.payload_exchange"
#: The exchange of the gRPC call being handled (each call runs in a task of its own, with its own context).
GRPC_EXCHANGE: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar("payload_exchange", default=None)
#: Reads a noted body back as its JSON value, on the log's thread.
Reader = Callable[..., Any]


def note_request(
    scope: MutableMapping[str, Any], server: ModelServer, model: ServingModel, read: Reader, *parts: Any
) -> None:
    """An HTTP inference of ``model`` begins: ``read(*parts)`` gives its request as the client sent it."""
    exchange = server.payload_log.begin(model.name, model.version)
    if exchange is not None:
        exchange.request = functools.partial(read, *parts)
        scope[SCOPE_KEY] = exchange


def note_response(
    scope: MutableMapping[str, Any], read: Reader, *parts: Any, model: ServingModel | None = None
) -> None:
    """The HTTP inference's answer: ``read(*parts)`` gives it as the client got it (``model``: the version that
    answered, where the route learned it only then)."""
    exchange: Exchange | None = scope.get(SCOPE_KEY)
    if exchange is not None:
        exchange.response = functools.partial(read, *parts)
        if model is not None:
            exchange.version = model.version


def http_exchange(scope: MutableMapping[str, Any]) -> Exchange | None:
    """The exchange an HTTP request noted, if any, for the middleware to hand over."""
    found: Exchange | None = scope.get(SCOPE_KEY)
    return found


def note_grpc_request(server: ModelServer, model: ServingModel, read: Reader, *parts: Any) -> Exchange | None:
    """A gRPC inference of ``model`` begins: ``read(*parts)`` gives its request as the client sent it."""
    exchange = server.payload_log.begin(model.name, model.version)
    if exchange is not None:
        exchange.request = functools.partial(read, *parts)
        GRPC_EXCHANGE.set(exchange)
    return exchange


def grpc_exchange() -> Exchange | None:
    """The exchange the gRPC call noted, if any, taken (so nothing later in the task sees it again)."""
    exchange = GRPC_EXCHANGE.get()
    if exchange is not None:
        GRPC_EXCHANGE.set(None)
    return exchange


def from_json(body: bytes | memoryview) -> Any:
    """A JSON body's value; a body that is no JSON, its text as ``Unparsed`` (withheld when fields are redacted:
    ``base.redaction``)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return Unparsed(bytes(body).decode("utf-8", "replace"))


def from_value(value: Any) -> Any:
    """A value as the client got it in JSON (NumPy arrays and all)."""
    return orjson.loads(dumps(value))
