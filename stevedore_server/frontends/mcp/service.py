"""The ``/mcp`` route and its place in the app's lifespan; the MCP server itself starts on the first request.

    routes(settings)                   # the /mcp route (none with ``mcp = false``), needing the ``infer`` scope
    serving(table, server, lifecycle)  # the app's lifespan runs it: where the MCP server runs once started

Nothing of the ``mcp`` SDK is imported here: it and pydantic take half a second and many MiB at every start, for a
route most servers never see used. The first request to ``/mcp`` imports ``protocol`` (off the event loop) and
starts its server as a task of the lifespan's task group, so the lifespan's end still ends it (the sessions, the
tools' watch, the open streams); requests that come meanwhile wait for that one start.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from stevedore_server.base.errors import NotReady
from stevedore_server.base.lifecycle import Lifecycle
from stevedore_server.base.settings import Settings
from stevedore_server.core.server import ModelServer
from stevedore_server.frontends.auth import INFER
from stevedore_server.frontends.web.routing import ApiRoute

if TYPE_CHECKING:
    from .protocol import Running

PATH = "/mcp"


class Host:
    """Where the MCP server of a running app runs: started once, by the first request that needs it."""

    def __init__(self, server: ModelServer, stateless: bool, lifecycle: Lifecycle, tasks: TaskGroup) -> None:
        self.server = server
        self.stateless = stateless
        self.lifecycle = lifecycle
        self.tasks = tasks
        self.starting = anyio.Lock()
        self.running: Running | None = None
        self.closed = False

    async def started(self) -> Running:
        """The MCP server, started now if it is not running (yet, or any more: it failed)."""
        if self.running is not None and not self.running.ended and not self.closed:
            return self.running
        async with self.starting:  # the requests that came before it started wait for one start
            if self.closed:
                raise NotReady("the server is stopping: MCP is not served any more")
            if self.running is None or self.running.ended:
                self.running = await self.start()
            return self.running

    async def start(self) -> Running:
        await anyio.to_thread.run_sync(importlib.import_module, f"{__package__}.protocol")  # off the event loop
        from .protocol import Running

        running = Running(self.server, self.stateless)
        try:
            await self.tasks.start(running.serve, self.lifecycle)
        except RuntimeError as error:  # it ended before it could serve (it logged why), or the app stops
            raise NotReady("the MCP server did not start; the server log says why") from error
        return running

    def close(self) -> None:
        """Refuse any further request; end the running server (its streams first, gracefully where they can)."""
        self.closed = True
        if self.running is not None:
            self.running.drain()
        self.tasks.cancel_scope.cancel()


class Endpoint:
    """The ASGI app of ``/mcp``: hands each request to the MCP server of the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host: Host | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.host is None:
            raise NotReady("the MCP server is not running")
        running = await self.host.started()
        await running.handle(scope, receive, send)

    @contextlib.asynccontextmanager
    async def serving(self, server: ModelServer, lifecycle: Lifecycle) -> AsyncIterator[None]:
        failure: Exception | None = None
        async with anyio.create_task_group() as tasks:
            # Stateless with ``--workers N``: a session's requests may reach any worker (see ``protocol``).
            host = Host(server, self.settings.workers > 1, lifecycle, tasks)
            self.host = host
            try:
                yield
            except Exception as error:  # the lifespan's own (a StartupError): raised as it is, not in a group
                failure = error
            finally:
                self.host = None
                host.close()
        if failure is not None:
            raise failure


def routes(settings: Settings) -> list[BaseRoute]:
    """``GET``, ``POST`` and ``DELETE /mcp`` (none where ``mcp = false``), for callers holding ``infer``."""
    if not settings.mcp:
        return []
    endpoint = Endpoint(settings)
    return [ApiRoute(PATH, endpoint, ["GET", "POST", "DELETE"], ["mcp"], include_in_schema=False, needs=INFER)]


@contextlib.asynccontextmanager
async def serving(table: Sequence[BaseRoute], server: ModelServer, lifecycle: Lifecycle) -> AsyncIterator[None]:
    """Where the MCP server of the app whose route ``table`` holds ``/mcp`` runs (nothing where it does not)."""
    endpoints = [endpoint for route in table if isinstance(endpoint := getattr(route, "endpoint", None), Endpoint)]
    if not endpoints:
        yield
        return
    async with endpoints[0].serving(server, lifecycle):
        yield
