"""What the server and a worker process say to each other: the orders a worker starts with (JSON in one
environment variable) and its replies (pickled messages on one socket), which both sides of a release read alike.

Kept small and free of the server's other modules: the worker process imports it first."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

from stevedore_server.base.errors import ClientError, WorkerFailure

#: The variable holding a worker's orders (JSON): what to do, the socket's descriptor, the plugins to use.
ORDERS_ENV = "STEVEDORE_WORKER"
#: Pickle protocol of every message (both interpreters are Python 3.11 or later).
PROTOCOL = 5


def call_message(action: str, payload: Any, request: str, carrier: Mapping[str, str]) -> bytes:
    """One call of the server to a worker: ``(action, payload, request id)``, and the trace context of the call
    (its W3C headers, ``tracing.carrier()``) as a fourth item when it is traced. Untraced, a call is the three
    items a worker of an earlier release (another environment's) reads."""
    message = (action, payload, request, dict(carrier)) if carrier else (action, payload, request)
    return pickle.dumps(message, protocol=PROTOCOL)


def read_call(data: bytes) -> tuple[str, Any, str, dict[str, str] | None]:
    """A call (``call_message``): its action, payload, request id, and trace context (None if untraced)."""
    action, payload, request, *traced = pickle.loads(data)
    return action, payload, request, traced[0] if traced else None


def failure(reply: tuple[Any, ...]) -> Exception:
    """The exception of a worker's failed reply: the client's error it sent, or the model's, as WorkerFailure."""
    if reply[0] == "client" and isinstance(reply[1], ClientError):
        return reply[1]
    if reply[0] != "error" or len(reply) != 3:
        return WorkerFailure(f"the worker process answered what the server cannot use: {reply[0]!r}")
    return WorkerFailure(str(reply[1]), reply[2])
