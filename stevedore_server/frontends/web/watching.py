"""An HTTP inference watched for its client leaving, within its deadline (``core.deadlines``).

Every inference route reads the request's ``X-Request-Timeout`` (seconds) first (``request_bound``: a bad value
is a 400 before the body is read), then runs its inference through ``while_connected``: once the body is read,
a watcher waits for the ASGI ``http.disconnect``; when it comes before the answer, the inference is cancelled
(the core drops a request still waiting, and counts it) and the request ends as a 499 that nobody reads.

The watcher is a task that starts only once the inference has taken ``WATCH_AFTER``: a fast answer pays for a
timer alone, and never calls the server's ``receive`` (``benchmarks/micro/watching.py`` compares it with a task
made on every request). A client that left before then is seen as soon as it starts (the server keeps the
disconnect).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.types import Receive

from stevedore_server.base.errors import ClientGone
from stevedore_server.core.deadlines import BOUND, Bound, Dropped, bounded, seconds_of, within

T = TypeVar("T")

#: Seconds an inference runs before its client is watched.
WATCH_AFTER = 0.002

#: The header bounding a request's wait and call, in seconds (under the model's own time-out).
TIMEOUT_HEADER = "X-Request-Timeout"


def request_bound(request: Request) -> Bound:
    """The request's bound: its ``X-Request-Timeout`` from now, if it has one; BadRequest for a bad value."""
    value = request.headers.get(TIMEOUT_HEADER)
    return within(None if value is None else seconds_of(value, f"the {TIMEOUT_HEADER} header"), TIMEOUT_HEADER)


async def while_connected(request: Request, bound: Bound, inference: Awaitable[T]) -> T:
    """``inference``'s result, run under ``bound``; ClientGone if the client disconnects first (the inference is
    then cancelled where it is). Called once the body is read: a disconnect is then the only message left."""
    task = asyncio.current_task()
    if task is None:  # not in a task: nothing to cancel (never so under an ASGI server)
        with bounded(bound):
            return await inference
    watcher = Watcher(request.receive, task, bound)
    token = BOUND.set(bound)  # not ``bounded``: a generator's context manager costs more, on every request
    try:
        return await inference
    except asyncio.CancelledError:
        # Ours only if the watcher cancelled it, and nothing else (a shutdown) did too.
        if bound.reason is not Dropped.DISCONNECTED or task.uncancel() > 0:
            raise
        raise ClientGone("the client disconnected before its answer") from None
    finally:
        BOUND.reset(token)
        watcher.stop()


class Watcher:
    """Cancels a request's task when its client disconnects, watching from ``WATCH_AFTER`` on."""

    def __init__(self, receive: Receive, task: asyncio.Task[object], bound: Bound) -> None:
        self.receive, self.task, self.bound = receive, task, bound
        self.watching: asyncio.Task[None] | None = None
        self.timer = asyncio.get_running_loop().call_later(WATCH_AFTER, self.start)

    def start(self) -> None:
        self.watching = asyncio.create_task(self.watch())

    async def watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.bound.reason = Dropped.DISCONNECTED
        self.task.cancel()

    def stop(self) -> None:
        self.timer.cancel()
        if self.watching is not None:
            self.watching.cancel()
