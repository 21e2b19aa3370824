"""What the server and a worker process say to each other: the orders a worker starts with (JSON in one
environment variable) and its replies (pickled messages on one socket), which both sides of a release read alike.

Kept small and free of the server's other modules: the worker process imports it first."""

from __future__ import annotations

from typing import Any

from stevedore_server.base.errors import ClientError, WorkerFailure

#: The variable holding a worker's orders (JSON): what to do, the socket's descriptor, the plugins to use.
ORDERS_ENV = "STEVEDORE_WORKER"
#: Pickle protocol of every message (both interpreters are Python 3.11 or later).
PROTOCOL = 5


def failure(reply: tuple[Any, ...]) -> Exception:
    """The exception of a worker's failed reply: the client's error it sent, or the model's, as WorkerFailure."""
    if reply[0] == "client" and isinstance(reply[1], ClientError):
        return reply[1]
    if reply[0] != "error" or len(reply) != 3:
        return WorkerFailure(f"the worker process answered what the server cannot use: {reply[0]!r}")
    return WorkerFailure(str(reply[1]), reply[2])
