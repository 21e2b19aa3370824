"""Removing a trained version: ``DELETE /models/{name}/versions/{version}``, for an admin key only.

Its record is deleted from the jobs database, so every server process stops
serving it (each follows that table), and its artifact is deleted. An
installed version (a plugin's) is refused with 409: unload the model, or
uninstall its plugin. The work is ``jobs.Jobs``'s, off the event loop.
"""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from stevedore_server.frontends.auth import ADMIN

from .jobs_routes import jobs_of
from .routing import ApiRoute
from .stevedore_routes import VERSIONED


async def remove_version(request: Request) -> Response:
    """Remove a trained version and its artifact: 204; 409 for an installed version, 404 for no such version."""
    name, version = request.path_params["name"], request.path_params["version"]
    await to_thread.run_sync(jobs_of(request).remove_trained, name, version)
    return Response(status_code=204)


def routes() -> list[BaseRoute]:
    return [ApiRoute(VERSIONED, remove_version, ["DELETE"], ["jobs"], needs=ADMIN)]
