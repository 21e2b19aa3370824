"""Serving the plugins' own routes (``stevedore_routes``, registered as ``plugins.routes.PluginRoute``).

They are checked once, at startup: a route that a built-in route would answer
(or that would answer a built-in's path), or that another plugin already has,
is a ``StartupError`` naming both. They are served by ``PluginRoutes``, one
entry at the end of the app's route table that dispatches to the routes of the
lifespan's state, so they pass through the same middleware as every route, and
with the same body size limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Mount, NoMatchFound
from starlette.types import Message, Receive, Scope, Send

from stevedore_server.base.errors import PayloadTooLarge, StartupError
from stevedore_server.frontends.state import of_scope
from stevedore_server.plugins.routes import PluginRoute

from .routing import ApiRoute, model_tag

PARAMETER = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(:[a-zA-Z_][a-zA-Z0-9_]*)?}")


def api_route(plugin_route: PluginRoute) -> ApiRoute:
    """The route of the app's table for a plugin's route, under its model's or its plugin's OpenAPI tag."""
    model, distribution = plugin_route.model, plugin_route.distribution
    tag = model_tag(model) if model is not None else f"plugin {distribution}"
    return ApiRoute(
        plugin_route.full_path, plugin_route.endpoint, plugin_route.methods, [tag], needs=plugin_route.scope
    )


def serve_routes(registered: Sequence[PluginRoute], builtins: Sequence[BaseRoute]) -> list[ApiRoute]:
    """The plugins' routes, served: StartupError for one that shadows a built-in route or another plugin's."""
    served: list[tuple[PluginRoute, ApiRoute]] = []
    for plugin_route in registered:
        route = api_route(plugin_route)
        for path, builtin in flattened(builtins):
            if overlap(route, path, builtin):
                raise StartupError(
                    f"{plugin_route.describe()} would shadow the built-in route "
                    f"{' '.join(sorted(route_methods(builtin)))} {path}"
                )
        for other, other_route in served:
            if overlap(route, other.full_path, other_route):
                raise StartupError(f"{plugin_route.describe()} would shadow {other.describe()}")
        served.append((plugin_route, route))
    return [route for _, route in served]


def flattened(routes: Iterable[BaseRoute], prefix: str = "") -> Iterable[tuple[str, BaseRoute]]:
    """Every route of a table with its full path template, mounts opened."""
    for route in routes:
        if isinstance(route, Mount):
            yield from flattened(route.routes, prefix + route.path)
        elif hasattr(route, "path"):
            yield prefix + route.path, route


def overlap(route: ApiRoute, other_path: str, other: BaseRoute) -> bool:
    """Whether either route would answer a request meant for the other, on a method both take."""
    methods = route_methods(route) & route_methods(other)
    if not methods:
        return False
    own = {"name": route.path.split("/")[2]} if route.path.startswith("/models/") else {}
    return answers(other_path, example(route.path)) or answers(route.path, example(other_path, own))


def route_methods(route: BaseRoute) -> set[str]:
    methods = getattr(route, "methods", None)
    return set(methods) - {"HEAD"} if methods else {"GET", "POST", "PUT", "PATCH", "DELETE"}


def example(path: str, values: dict[str, str] | None = None) -> str:
    """A concrete path of a template, to ask another route whether it answers it: each parameter a plain value,
    or the one ``values`` gives (the model a plugin's route is under, for ``{name}``)."""

    def value(match: re.Match[str]) -> str:
        if values and match.group(1) in values:
            return values[match.group(1)]
        return "0" if match.group(2) in (":int", ":float") else "x"

    return PARAMETER.sub(value, path)


def answers(template: str, path: str) -> bool:
    """Whether a route at ``template`` answers ``path``, on Starlette's matching rules."""
    probe = ApiRoute(template, route_endpoint, ["GET"])
    match, _ = probe.matches({"type": "http", "path": path, "method": "GET", "root_path": ""})
    return match is not Match.NONE


def limited(scope: Scope, receive: Receive, limit: int) -> Receive:
    """``receive`` refusing a body over ``limit`` bytes (413), as the built-in routes' ``read_body`` does: a
    plugin's endpoint reads its body itself."""
    declared = dict(scope["headers"]).get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    received = 0

    async def receive_limited() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        return message

    return receive_limited


async def route_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """Never called: the endpoint of a probe route."""


class PluginRoutes(BaseRoute):
    """The plugins' routes of the running server (in the lifespan's state), after every built-in route."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        state = of_scope(scope)
        if state is None:  # before the lifespan has started: no plugin route yet
            return Match.NONE, {}
        for route in state.plugin_routes:
            match, child_scope = route.matches(scope)
            if match is not Match.NONE:
                limit = state.server.settings.max_body_size
                return match, {**child_scope, "plugin_route": route, "plugin_body_limit": limit}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope["plugin_route"].handle(scope, limited(scope, receive, scope["plugin_body_limit"]), send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)
