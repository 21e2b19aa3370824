"""The MCP protocol, served by the official ``mcp`` SDK: its low-level server over its streamable-HTTP session
manager, and the watch that tells the clients when the tools change.

    running = Running(server, stateless)   # the MCP server of a running app
    running.serve(lifecycle, task_status)  # a task of the app's lifespan: serves until cancelled
    running.handle(scope, receive, send)   # a request to /mcp

Imported on the first request to ``/mcp`` only (``service``): the SDK and pydantic take half a second and many
MiB, which a server whose ``/mcp`` nobody uses never spends.

Both eras of the protocol are served: the handshake era (``initialize``, a session a client, told of a change of
the tools by ``notifications/tools/list_changed`` on its standalone ``GET`` stream) and the 2026-07-28 era (each
request on its own, told of a change on the ``subscriptions/listen`` stream it opened). The tools are worked out
from the registry at each ``tools/list`` (``tools``); a watch looks at them every ``WATCH_INTERVAL`` and tells
every session and listener when they changed (a model loaded or unloaded, a trained version made the default, a
traffic name or pipeline that came to serve or stopped).

With ``--workers N`` the handshake era runs stateless (a session's requests may reach any worker): no session,
no ``GET`` stream, no notifications; a listener of the 2026-07-28 era is still told, by the worker it reached.

Streams stay open for as long as their client listens: once the server drains (SIGTERM) they are ended, so that
the shutdown never waits its graceful time-out for them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import TaskStatus
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import DEFAULT_SESSION_IDLE_TIMEOUT, StreamableHTTPSessionManager
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from stevedore_server.base.errors import NotReady
from stevedore_server.base.lifecycle import Lifecycle
from stevedore_server.base.logs import log_error
from stevedore_server.base.version import __version__
from stevedore_server.core.server import ModelServer
from stevedore_server.frontends.auth import caller_of

from . import tools

logger = logging.getLogger("stevedore.mcp")

#: Seconds between two looks at the tools (and at whether the server drains): a change is told within it.
WATCH_INTERVAL = 0.5
#: Seconds a session's notification may take to be handed to its stream: a stuck one is dropped, not waited on.
NOTIFY_TIMEOUT = 1.0
#: Seconds a handshake-era session may have no request in flight (an open GET stream is one) before it is closed.
SESSION_IDLE_TIMEOUT: float = DEFAULT_SESSION_IDLE_TIMEOUT
#: Sessions of the handshake era remembered to be told of a change: as many as the session manager opens.
MAX_SESSIONS = 10_000
INSTRUCTIONS = (
    "Each tool is a model (or traffic name, or pipeline) of this stevedore-server: call it with its predict "
    "body (under 'payload' where the tool's schema says so) to get its predictions."
)


class ToolsServer(Server[Any]):
    """The SDK's low-level server, telling handshake-era clients that its tool list changes (when it can tell
    them: not in stateless mode)."""

    def __init__(self, notifies: bool, **handlers: Any) -> None:
        super().__init__("stevedore-server", version=__version__, instructions=INSTRUCTIONS, **handlers)
        self.notifies = notifies

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        options = notification_options or NotificationOptions(tools_changed=self.notifies)
        return super().create_initialization_options(options, experimental_capabilities, extensions)


class Sessions:
    """The handshake-era sessions to tell of a change, by session id.

    The SDK keeps each session's connection to itself (and drops a notification quietly once its session is
    gone), so a session is remembered from its messages (the first after ``initialize`` carries its id) and
    forgotten as the session manager forgets it: when its client deletes it, or once none of its requests has
    been in flight for the manager's idle time-out (the manager closes it then; one that failed is closed with
    its last request). ``MAX_SESSIONS`` bounds them all the same."""

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.by_id: OrderedDict[str, ServerSession] = OrderedDict()
        #: The HTTP requests of each session in flight now (an open GET stream is one).
        self.busy: Counter[str] = Counter()
        #: When each remembered session's last request in flight ended (``time.monotonic``).
        self.idle_since: dict[str, float] = {}

    async def remember(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Server middleware: note the session of each handshake-era message that names one."""
        session_id = session_id_of(ctx)
        if session_id is not None and session_id not in self.by_id:
            self.by_id[session_id] = ctx.session
            while len(self.by_id) > MAX_SESSIONS:
                self.forget(next(iter(self.by_id)))
        return await call_next(ctx)

    @contextmanager
    def requesting(self, session_id: str) -> Iterator[None]:
        """Around an HTTP request naming the session: it is not idle meanwhile."""
        self.busy[session_id] += 1
        try:
            yield
        finally:
            self.busy[session_id] -= 1
            if not self.busy[session_id]:
                del self.busy[session_id]
                if session_id in self.by_id:  # not any id a client makes up
                    self.idle_since[session_id] = time.monotonic()

    def forget(self, session_id: str) -> None:
        self.by_id.pop(session_id, None)
        self.idle_since.pop(session_id, None)

    def forget_idle(self) -> None:
        """Forget the sessions the manager has closed for having been idle for its time-out."""
        closed_before = time.monotonic() - self.idle_timeout
        for session_id, since in list(self.idle_since.items()):
            if since < closed_before and session_id not in self.busy:
                self.forget(session_id)

    async def tell_tools_changed(self) -> None:
        """Tell every session at once, so that one whose stream is stuck delays the others by nothing."""
        async with anyio.create_task_group() as tasks:
            for session_id, session in list(self.by_id.items()):
                tasks.start_soon(self.tell, session_id, session)

    async def tell(self, session_id: str, session: ServerSession) -> None:
        try:
            with anyio.fail_after(NOTIFY_TIMEOUT):
                await session.send_tool_list_changed()
        except Exception as error:  # a stream nobody reads: that session is not told again
            logger.debug("MCP session %s not told of the tools' change: %r", session_id, error)
            self.forget(session_id)


def session_id_of(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """The session a handshake-era message came in, from its HTTP request; None for any other."""
    request = ctx.request
    if ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS or request is None:
        return None
    headers = getattr(request, "headers", None)
    return headers.get(MCP_SESSION_ID_HEADER) if headers is not None else None


def identify(scope: Scope) -> None:
    """Tell the SDK which API key sent the request, so that a session answers only the key that opened it (the
    SDK answers another 404, as it would for no session): its id is no secret, the key is."""
    caller = caller_of(scope)
    if caller.key_id is not None:
        token = AccessToken(token=caller.key_id, client_id=caller.key_id, scopes=sorted(caller.scopes))
        scope["user"] = AuthenticatedUser(token)


class Running:
    """The MCP server of a running app: its session manager, sessions, listeners and open streams."""

    def __init__(self, server: ModelServer, stateless: bool) -> None:
        self.server = server
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        self.mcp = ToolsServer(
            notifies=not stateless,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_subscriptions_listen=self.listen,
        )
        # No DNS-rebinding settings: the app's own host and origin checks (``web.origins``) come first. The body
        # limit is the server's, as for every route (the SDK's own is 4 MiB).
        self.manager = StreamableHTTPSessionManager(
            self.mcp,
            stateless=stateless,
            session_idle_timeout=SESSION_IDLE_TIMEOUT,
            max_request_body_size=server.settings.max_body_size,
        )
        self.sessions = Sessions(SESSION_IDLE_TIMEOUT)
        self.mcp.middleware.append(self.sessions.remember)
        #: The cancel scopes of the standalone GET streams open now, ended when the server drains.
        self.streams: set[anyio.CancelScope] = set()
        self.draining = False
        self.ended = False

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        await self.server.pipelines.recheck()  # a failed pipeline whose models changed since is checked again
        return types.ListToolsResult(tools=tools.listing(self.server))

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return await tools.call(self.server, params.name, params.arguments)

    async def watch(self, lifecycle: Lifecycle) -> None:
        """Tell the sessions and listeners whenever the tools change; end the streams once the server drains
        (at every look, as a stream may open after the first)."""
        seen = tools.targets(self.server)
        while True:
            await anyio.sleep(WATCH_INTERVAL)
            if lifecycle.draining:
                self.drain()
            try:
                seen = await self.look(seen)
            except Exception as error:  # the watch goes on: the next look may succeed
                log_error(logger, "the MCP tools' watch failed", error)

    async def look(self, seen: tuple[tools.Target, ...]) -> tuple[tools.Target, ...]:
        """The tools' targets now, every session and listener told if they are not those ``seen``; the sessions
        closed since the last look forgotten."""
        self.sessions.forget_idle()
        await self.server.pipelines.recheck()
        now = tools.targets(self.server)
        if now != seen:
            logger.info("MCP tools changed: %s", ", ".join(target.name for target in now) or "none")
            await self.bus.publish(ToolsListChanged())
            await self.sessions.tell_tools_changed()
        return now

    async def serve(self, lifecycle: Lifecycle, *, task_status: TaskStatus[None]) -> None:
        """Serve until cancelled, telling ``task_status`` once requests can be handed over. A failure is logged
        and ends this MCP server alone (``ended``): the app goes on serving, the next request starts another."""
        try:
            async with self.manager.run():
                task_status.started()
                await self.watch(lifecycle)
        except Exception as error:
            log_error(logger, "the MCP server failed", error)
        finally:
            self.ended = True
            self.drain()

    def drain(self) -> None:
        """End every stream: the listeners' gracefully (their result is sent), the GET streams by cancelling."""
        self.draining = True
        self.listen.close()
        for scope in list(self.streams):
            scope.cancel()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        identify(scope)
        session_id = Headers(scope=scope).get(MCP_SESSION_ID_HEADER)
        if session_id is None:
            await self.answer(scope, receive, send)
            return
        status = None

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.sessions.requesting(session_id):
            await self.answer(scope, receive, sending)
        if scope["method"] == "DELETE" and status == 200:  # ended by its client (not refused: another key's)
            self.sessions.forget(session_id)

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            await self.stream(scope, receive, send)
        else:
            await self.manager.handle_request(scope, receive, send)

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A standalone GET stream, ended (its response completed) when the server drains; none opened then."""
        if self.draining:  # its client goes to another replica (the SDK would open one and end it at once)
            raise NotReady("the server is stopping: no new MCP stream")
        started = completed = False

        async def sending(message: Message) -> None:
            nonlocal started, completed
            started = started or message["type"] == "http.response.start"
            completed = completed or (message["type"] == "http.response.body" and not message.get("more_body"))
            await send(message)

        with anyio.CancelScope() as cancel:
            self.streams.add(cancel)
            try:
                await self.manager.handle_request(scope, receive, sending)
            finally:
                self.streams.discard(cancel)
        if started and not completed:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif not started:
            raise NotReady("the server is stopping: no new MCP stream")
