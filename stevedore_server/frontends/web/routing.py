"""Route types of the app's route table, and the OpenAPI document generated from that table.

The handlers take the ``Request`` and parse their bodies themselves, so FastAPI's
per-request dependency machinery (about 80 µs a request here) buys them nothing:
they are served as plain Starlette routes. The OpenAPI document comes from a
FastAPI app that is never served, made from the same route table when the
document is first asked for: a server nobody reads the docs of never loads
FastAPI (15 MiB with pydantic).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from stevedore_server.base.errors import ClientError, Forbidden
from stevedore_server.base.version import __version__
from stevedore_server.frontends.auth import ADMIN, caller_of

if TYPE_CHECKING:
    from fastapi import FastAPI

#: An exception handler of a mount (Starlette's ``exception_handlers``): the request and its error, answered.
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class ApiRoute(Route):
    """A route with its OpenAPI tags and its full path template, which it leaves in the scope (as FastAPI's
    routes do): the access log and the metrics name the template, not the path. ``needs`` is the API key scope
    its caller must hold (``auth``; None for the probes, open to anyone): admin unless it says less, so a route
    someone forgets to mark is closed, not open."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        methods: Sequence[str],
        tags: Sequence[str] = (),
        include_in_schema: bool = True,
        template: str | None = None,
        needs: str | None = ADMIN,
    ) -> None:
        super().__init__(path, endpoint, methods=list(methods), include_in_schema=include_in_schema)
        self.tags = list(tags)
        self.template = template or path
        self.needs = needs
        #: Every method some route of this path answers (``share_methods``): what a 405 names in ``Allow``.
        self.path_methods = set(self.methods or ())

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        allowed = self.methods is None or scope["method"] in self.methods
        if not allowed:  # Starlette would name this route's methods alone, not those of the path's other routes
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(self.path_methods))})
        if self.needs is not None and not caller_of(scope).can(self.needs):
            raise Forbidden(f"this API key does not hold the {self.needs} scope, which {self.template} needs")
        await self.app(scope, receive, send)  # what Starlette's own ``handle`` does once the method is allowed


def share_methods(routes: Sequence[BaseRoute]) -> None:
    """Tell each route of the table the methods of the other routes of its path (each route has one scope, so a
    path whose methods need different scopes has a route a method): a 405 then names them all."""
    by_path: dict[str, set[str]] = {}
    api_routes = [route for route in routes if isinstance(route, ApiRoute)]
    for route in api_routes:
        by_path.setdefault(route.path, set()).update(route.methods or ())
    for route in api_routes:
        route.path_methods = by_path[route.path]


class ProtocolMount(Mount):
    """Routes under a prefix that answer errors in their protocol's own format, through their own exception
    handlers (errors they do not handle reach the app's)."""

    def __init__(self, path: str, routes: Sequence[BaseRoute], exception_handlers: Mapping[Any, Any]) -> None:
        super().__init__(path, app=ExceptionMiddleware(Router(list(routes)), handlers=dict(exception_handlers)))
        self.documented = list(routes)
        #: How the protocol writes a client error: the API key middleware answers its refusals with it.
        self.client_error: ErrorHandler | None = exception_handlers.get(ClientError)

    @property
    def routes(self) -> list[BaseRoute]:
        return self.documented


def client_error_handlers(routes: Sequence[BaseRoute]) -> dict[str, ErrorHandler]:
    """Each protocol mount's writer of client errors, by its path prefix (``RequireAPIKey`` answers a refusal
    under the prefix with it)."""
    return {
        route.path: route.client_error
        for route in routes
        if isinstance(route, ProtocolMount) and route.client_error is not None
    }


def model_tag(name: str) -> str:
    """The OpenAPI tag of a model's own operations (``/docs`` shows them in a section of this name)."""
    return f"model {name}"


def documented(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, ApiRoute]]:
    """Every documented route with its full path."""
    for route in routes:
        if isinstance(route, Mount):
            yield from documented(route.routes, prefix + route.path)
        elif isinstance(route, ApiRoute) and route.include_in_schema:
            yield prefix + route.path, route


def docs_app(routes: Sequence[BaseRoute]) -> FastAPI:
    """A FastAPI app with one operation, with its own id, for each documented route and method."""
    from fastapi import FastAPI

    docs = FastAPI(title="stevedore-server", version=__version__, redirect_slashes=False)
    for path, route in documented(routes):
        for method in sorted((route.methods or set()) - {"HEAD"}):
            name = f"{route.name}_{method.lower()}"
            docs.add_api_route(path, route.endpoint, methods=[method], tags=list(route.tags), name=name)
    return docs
