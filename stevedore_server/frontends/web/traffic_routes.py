"""The traffic routes: the traffic names (``[traffic.NAME]``) and their splits, changed while serving.

- ``GET /traffic``: every traffic name with its split as served, its sticky key,
  shadow and state;
- ``GET /traffic/{name}``: one of them (404 for a name that is none);
- ``PUT /traffic/{name}`` with ``{"split": [{"model": "wine:2.0.0", "weight": 10}, ...]}``
  (the TOML's ``split``, as JSON): the new weights, on every worker before the
  answer (``core.traffic_convergence``); admin scope, 400 for a bad body.

Calls of a traffic name go through the model routes (``/models/NAME/predict``,
V2 infer): the inference core routes them (``core.traffic``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from stevedore_server.base.errors import InvalidSplit, TrafficProblem
from stevedore_server.base.settings.traffic import split_of
from stevedore_server.frontends.auth import ADMIN, INFER

from .bodies import JSONBytesResponse, parse_json, read_json_text, server_of
from .routing import ApiRoute

TAGS = ["traffic"]


async def traffic_list(request: Request) -> Response:
    """Every traffic name, its split as served now, and its state."""
    return JSONBytesResponse({"traffic": server_of(request).traffic.describe()})


async def traffic_detail(request: Request) -> Response:
    """One traffic name, its split as served now, and its state."""
    server = server_of(request)
    return JSONBytesResponse(server.traffic.entry(request.path_params["name"]).describe(server.registry))


async def traffic_change(request: Request) -> Response:
    """Route the traffic name by the body's ``split`` from now on, in every worker: 200 with the name as served."""
    server = server_of(request)
    name = request.path_params["name"]
    server.traffic.entry(name)  # 404 before the body is read
    body = await parse_json(request, await read_json_text(request))
    if not isinstance(body, dict) or set(body) != {"split"}:
        raise InvalidSplit('the body must be {"split": [{"model": "NAME[:VERSION]", "weight": NUMBER}, ...]}')
    try:
        split = split_of(body["split"])
    except TrafficProblem as problem:
        raise InvalidSplit(f"traffic {name!r}: {problem}") from None
    route = await server.traffic.change_split(name, split)
    return JSONBytesResponse(route.describe(server.registry))


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/traffic", traffic_list, ["GET"], TAGS, needs=INFER),
        ApiRoute("/traffic/{name}", traffic_detail, ["GET"], TAGS, needs=INFER),
        ApiRoute("/traffic/{name}", traffic_change, ["PUT"], TAGS, needs=ADMIN),
    ]
