"""Pure ASGI middleware: request ids, the access log, HTTP metrics, the last-resort 500, and API keys.

Typed errors become responses in the app's exception handlers; ``RequestContext``
is the last resort for the rest (a bug): it logs the exception once, with its
traceback and an error id, and answers a JSON 500 with that id if nothing was
sent yet.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stevedore_server.base import tracing
from stevedore_server.base.errors import ClientError, KeyNotAccepted, Unauthenticated
from stevedore_server.base.logs import REQUEST_ID_HEADER, AccessLog, RequestIds, log_error, request_id
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.serialization import dumps
from stevedore_server.core.traffic import request_headers
from stevedore_server.frontends.auth import CALLER, APIKeys
from stevedore_server.frontends.payload_notes import http_exchange
from stevedore_server.frontends.state import of_scope
from stevedore_server.frontends.web.routing import ErrorHandler

access_log = AccessLog(logging.getLogger("stevedore.access"))
logger = logging.getLogger("stevedore.http")

REQUEST_ID_RAW = REQUEST_ID_HEADER.encode("latin-1")
#: Routes open without an API key (unless ``auth_health``): probes and metrics.
OPEN_PATHS = {
    "/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live", "/v2/health/ready",
    "/health", "/health/", "/health/live", "/health/live/", "/health/ready", "/health/ready/",
    "/health/uptime", "/health/uptime/",
}  # fmt: skip
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OPEN_PATTERN = re.compile(r"(/v2)?/models/[^/]+(/versions/[^/]+)?/ready")


CONNECTION_CLOSE = (b"connection", b"close")
#: Probes and scrapes, never traced: called every few seconds, their spans would flood the collector.
UNTRACED_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})


class RequestContext:
    """Outermost: gives each request an id (``X-Request-ID``), logs and counts it, closes the connection after
    each answer while the server drains, and turns any exception that escaped the app into a JSON 500 with an
    error id, logged once with its traceback."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.ids = RequestIds()
        self.samples: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not tracing.active() or scope["path"] in UNTRACED_PATHS:
            await self.serve(scope, receive, send, None)
            return
        # The span is made before the route is known: its name and http.route are set once the router has matched.
        with (
            tracing.continued(tracing.carried(scope["headers"])),
            tracing.span(scope["method"], request_attributes(scope), kind="server", record_errors=False) as span,
        ):
            await self.serve(scope, receive, send, span)

    async def serve(self, scope: Scope, receive: Receive, send: Send, span: Any) -> None:
        """Serve one HTTP request in the server span ``span`` (``None`` while tracing is off)."""
        rid = self.ids.of(given_request_id(scope))
        token = request_id.set(rid)
        headers_token = request_headers.set(scope["headers"])  # a traffic name sticky by a header reads it
        started = time.perf_counter()
        status = 500
        response_started = False
        state = of_scope(scope)
        lifecycle = state.lifecycle if state is not None else None

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = [item for item in message.get("headers", ()) if item[0].lower() != REQUEST_ID_RAW]
                headers.append((REQUEST_ID_RAW, rid.encode("latin-1")))
                if lifecycle is not None and lifecycle.draining:  # keep-alive clients reconnect, to another pod
                    headers.append(CONNECTION_CLOSE)
                if span is not None:  # the caller learns the trace its request is in
                    headers += [(name.encode(), value.encode()) for name, value in tracing.carrier().items()]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            error_id = log_error(logger, "unexpected error", error)
            if not response_started:
                body = {"error": f"internal server error; error id {error_id}", "error_id": error_id}
                await send_json(send_with_id, 500, body)
        finally:
            template = route_template(scope)
            if span is not None:  # a 5xx is an error of the server (a client's 4xx is not, by the conventions)
                name_span(span, scope, template)
                answer = {"http.response.status_code": status}
                tracing.answered(span, rid, answer, str(status) if status >= 500 else None)
            self.record(scope, template, status, time.perf_counter() - started, rid)
            request_id.reset(token)
            request_headers.reset(headers_token)

    def record(self, scope: Scope, template: str, status: int, seconds: float, rid: str) -> None:
        method = scope["method"] if scope["method"] in HTTP_METHODS else "other"  # clients choose methods freely
        exchange = http_exchange(scope)  # an inference the payload log records
        if exchange is not None:
            exchange.answered(f"{method} {template}", "http", status, 200 <= status < 300, seconds, rid)
        samples = self.samples.get((template, method, status))
        if samples is None:  # looking children up by labels costs more than the samples themselves
            samples = (
                self.metrics.requests.labels(template, method, str(status)),
                self.metrics.request_seconds.labels(template, method),
            )
            self.samples[(template, method, status)] = samples
        samples[0].inc()
        samples[1].observe(seconds, tracing.exemplar())
        if self.access_log:
            path = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
            client = scope.get("client") or ("-", 0)
            access_log.write(
                rid, (client[0], method, path, status, seconds * 1000),
                {"status": status, "duration_ms": round(seconds * 1000, 3), "route": template},
            )  # fmt: skip


def route_template(scope: Scope) -> str:
    """The template of the route that served the request (an ApiRoute knows its full template; a plain route or
    mount its path), or "unmatched"."""
    route = scope.get("route")
    return str(getattr(route, "template", None) or getattr(route, "path", "unmatched"))


def request_attributes(scope: Scope) -> dict[str, Any]:
    """A server span's attributes known before the route (OpenTelemetry's HTTP semantic conventions)."""
    attributes: dict[str, Any] = {
        "http.request.method": scope["method"] if scope["method"] in HTTP_METHODS else "_OTHER",
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    server, client = scope.get("server"), scope.get("client")
    if server:
        attributes["server.address"], attributes["server.port"] = server[0], server[1]
    if client:
        attributes["client.address"] = client[0]
    return attributes


def name_span(span: Any, scope: Scope, template: str) -> None:
    """Name the server span by its route (``POST /models/{name}/predict``), once the router matched one."""
    method = scope["method"] if scope["method"] in HTTP_METHODS else "HTTP"
    if template != "unmatched":
        span.update_name(f"{method} {template}")
        span.set_attribute("http.route", template)


def given_request_id(scope: Scope) -> str | None:
    """The client's ``X-Request-ID``, if it sent one (a plain loop: this runs on every request)."""
    for name, value in scope["headers"]:
        if name.lower() == REQUEST_ID_RAW:
            given: str = value.decode("latin-1")
            return given
    return None


class RequireAPIKey:
    """Identifies each request's caller by its ``Authorization: Bearer`` key (``auth.caller_of`` reads it back:
    routes check their scope against it) and answers 401 with ``WWW-Authenticate`` for a route that is not open
    without an accepted key, in the error format of the protocol at its path (``send_error``). Open: the probes
    and metrics (``GET`` or ``HEAD``, unless ``auth_health``), the console's pages, and CORS preflights (they never
    carry credentials)."""

    def __init__(
        self,
        app: ASGIApp,
        keys: APIKeys,
        protect_health: bool,
        pages: re.Pattern[str] | None = None,
        protocols: Mapping[str, ErrorHandler] | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.protect_health = protect_health
        #: Paths of pages that hold no data (the web console's), open always: they send the key typed in them.
        self.pages = pages
        #: How each protocol mount writes a client error, by its prefix (``routing.client_error_handlers``): a
        #: refusal under it is in the protocol's format, so its clients read it (OpenAI's SDK under ``/v1``).
        self.protocols = dict(protocols or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        caller = self.keys.identify(authorization)
        scope[CALLER] = caller
        if not caller.anonymous or self.is_open(scope["method"], scope["path"], headers):
            await self.app(scope, receive, send)
            return
        await send_error(self.protocols, refused(authorization), scope, receive, send)

    def is_open(self, method: str, path: str, headers: Headers) -> bool:
        if method == "OPTIONS":
            return "access-control-request-method" in headers
        if method not in ("GET", "HEAD"):
            return False
        if self.pages is not None and self.pages.match(path):
            return True
        return not self.protect_health and (path in OPEN_PATHS or bool(OPEN_PATTERN.fullmatch(path)))


def refused(authorization: str | None) -> Unauthenticated:
    """The refusal of a request without an accepted key: a key missing, or one sent that is not accepted."""
    if authorization:
        message = "a valid API key is required: send Authorization: Bearer <key>"
        return KeyNotAccepted(message, 'Bearer realm="stevedore", error="invalid_token"')
    return Unauthenticated("an API key is required: send Authorization: Bearer <key>", 'Bearer realm="stevedore"')


async def send_error(
    protocols: Mapping[str, ErrorHandler], error: ClientError, scope: Scope, receive: Receive, send: Send
) -> None:
    """A middleware's refusal, in the format of the protocol mounted where the request's path is (``protocols``:
    each mount's writer of client errors, by its prefix), else in the server's own."""
    path = scope["path"]
    for prefix, handler in protocols.items():
        if path == prefix or path.startswith(prefix + "/"):
            response = await handler(Request(scope, receive), error)
            await response(scope, receive, send)
            return
    await send_json(send, error.status_code, error.body(), error.headers)


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    content = dumps(body)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    raw += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": content})
