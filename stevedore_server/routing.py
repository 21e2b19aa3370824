"""Routes served as plain Starlette routes, documented on a shadow FastAPI app.

The handlers take the ``Request`` and parse their bodies themselves, so FastAPI's
per-request dependency machinery (about 80 µs a request here) buys them nothing.
Each is served as a plain route and also registered on a FastAPI app that is
never served, from which the OpenAPI document is built. That app, and FastAPI
itself (15 MiB with pydantic), are only made when the document is first asked
for: a server nobody reads the docs of never loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.routing import Match, Route
from starlette.types import Scope

from . import __version__

if TYPE_CHECKING:
    from fastapi import FastAPI


class TemplatedRoute(Route):
    """A Starlette route that leaves itself in the scope (as FastAPI's do): logs and metrics name its template."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


class RouteTable:
    """Where the route modules register their handlers."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.hot_routes = 0
        #: The documented operations: path, handler, method, tags and operation id.
        self.operations: list[tuple[str, Callable[..., Any], str, list[str | Enum], str]] = []

    def add(
        self,
        path: str,
        endpoint: Callable[..., Any],
        methods: list[str],
        tags: Sequence[str] = (),
        name: str | None = None,
        include_in_schema: bool = True,
        hot: bool = False,
    ) -> None:
        """A handler of ``(request) -> Response``, served as one plain route (so 405 lists every method).

        ``hot`` routes (inference) are matched first: Starlette tries the routes in order, and each miss costs.
        No two routes match one path, so the order changes nothing else.
        """
        route = TemplatedRoute(path, endpoint, methods=methods, name=name)
        routes = self.app.router.routes
        routes.insert(self.hot_routes, route) if hot else routes.append(route)
        self.hot_routes += hot
        if include_in_schema:
            for method in methods:  # one operation, with its own id, per method
                operation = f"{name or endpoint.__name__}_{method.lower()}"
                self.operations.append((path, endpoint, method, list[str | Enum](tags), operation))

    def docs_app(self) -> FastAPI:
        """The shadow app with every documented operation (FastAPI is imported here, not at startup)."""
        from fastapi import FastAPI

        docs = FastAPI(title="stevedore-server", version=__version__, redirect_slashes=False)
        for path, endpoint, method, tags, operation in self.operations:
            docs.add_api_route(path, endpoint, methods=[method], tags=tags, name=operation)
        return docs
