"""What the app shares with every request and gRPC call: one typed, frozen object, made by the app's lifespan.

Starlette hands the lifespan's state to each request as a mapping; ours holds
one entry, this object, which ``of_request`` and ``of_scope`` read back typed.
The gRPC server is handed the same object when it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.routing import BaseRoute

    from stevedore_server.base.health import HealthChecks
    from stevedore_server.base.lifecycle import Lifecycle
    from stevedore_server.core.repository import ModelRepository
    from stevedore_server.core.server import ModelServer
    from stevedore_server.jobs.service import Jobs

#: The one key of the lifespan's state.
KEY = "stevedore"


@dataclass(frozen=True)
class AppState:
    """The objects of one running app, shared by every request."""

    server: ModelServer
    #: The model repository: in this process, or Ray Serve's deployments.
    repository: ModelRepository
    jobs: Jobs
    lifecycle: Lifecycle
    #: The health checks, as every probe reads them: cached, run on threads apart from the models'.
    health: HealthChecks
    #: The plugins' routes, served after every built-in one.
    plugin_routes: tuple[BaseRoute, ...]
    #: Every route, the plugins' included: what the OpenAPI document describes.
    routes: tuple[BaseRoute, ...]
    #: The OpenAPI document once made (``"spec"``): a cache, the one thing that changes.
    openapi: dict[str, Any] = field(default_factory=dict)

    def as_lifespan_state(self) -> dict[str, AppState]:
        return {KEY: self}


def of_lifespan(state: Mapping[str, Any]) -> AppState | None:
    """The app's state in a lifespan's state; None before the lifespan has started."""
    found = state.get(KEY)
    return found if isinstance(found, AppState) else None


def of_scope(scope: Mapping[str, Any]) -> AppState | None:
    """The app's state in an ASGI scope; None where there is none (a request before the lifespan started)."""
    return of_lifespan(scope.get("state", {}))


def of_request(request: Request) -> AppState:
    """The app's state of a request (its route runs only once the lifespan has started)."""
    found: AppState = getattr(request.state, KEY)
    return found
