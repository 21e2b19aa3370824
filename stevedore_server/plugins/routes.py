"""Plugins' own HTTP routes (``stevedore_routes``) as registered: under one of their models or under their
distribution.

A plugin registers ``(path, endpoint, methods)``; the route is served at
``/models/{model}{path}`` or ``/plugins/{distribution}{path}``. What can be a
route is checked here, when the hook runs; the web front end
(``frontends.web.plugin_routes``) checks that none shadows another and serves
them. Nothing here needs Starlette.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stevedore_server.base.scopes import HOLDS, INFER


@dataclass(frozen=True)
class PluginRoute:
    """A route as a plugin registered it, with where it goes: a model's (``model``) or the plugin's distribution's."""

    path: str
    endpoint: Callable[..., Any]
    methods: tuple[str, ...]
    plugin: str
    model: str | None = None
    distribution: str | None = None
    #: The API key scope its callers need (``base.scopes``).
    scope: str = INFER

    @property
    def full_path(self) -> str:
        base = f"/models/{self.model}" if self.model is not None else f"/plugins/{self.distribution}"
        return base + self.path

    def describe(self) -> str:
        return f"{' '.join(self.methods)} {self.full_path} of plugin {self.plugin}"


def checked_route(path: Any, endpoint: Any, methods: Any) -> tuple[str, tuple[str, ...]]:
    """The path and methods a plugin registers, checked: TypeError or ValueError for what cannot be a route."""
    if not isinstance(path, str) or not path.startswith("/") or "//" in path:
        raise ValueError(f"a route's path must be a string starting with one '/', got {path!r}")
    if not callable(endpoint):
        raise TypeError(f"the endpoint of {path} is not callable")
    if isinstance(methods, str) or not all(isinstance(method, str) for method in methods):
        raise TypeError(f"the methods of {path} must be a list of strings, got {methods!r}")
    return path, tuple(sorted({method.upper() for method in methods}))


def checked_scope(path: str, scope: Any) -> str:
    """The scope a plugin names for a route, checked: ValueError for an unknown one."""
    if scope not in HOLDS:
        raise ValueError(f"the scope of {path} must be one of {', '.join(HOLDS)}, got {scope!r}")
    return str(scope)
