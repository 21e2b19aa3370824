"""Routes of the plugin's own (the ``stevedore_routes`` hook; pyproject.toml's ``stevedore.hooks`` entry point
names this module)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from stevedore_server import hookimpl
from stevedore_server.hookspecs import RegisterRoute

#: A request next-day answers over the Open Inference Protocol.
EXAMPLE = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["2022-01-11T11:09:10"]}]}


async def example(request: Request) -> JSONResponse:
    return JSONResponse(EXAMPLE)


async def feedback(request: Request) -> JSONResponse:
    return JSONResponse({"received": await request.json()}, status_code=201)


@hookimpl
def stevedore_routes(register: RegisterRoute) -> None:
    register("/example", example, model="next-day")  # GET /models/next-day/example
    register("/feedback", feedback, ["POST"])  # POST /plugins/stevedore-showcase/feedback
