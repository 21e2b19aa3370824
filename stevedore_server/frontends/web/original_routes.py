"""The routes of the original ml-py-stevedore, with its status codes and bodies.

Existing clients and curl scripts keep working. Each route answers with and
without a trailing slash. Unknown models are a 400, as in the original.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from stevedore_server.base import tracing
from stevedore_server.base.errors import BadRequest, InvalidPayload, LegacyBadRequest, UnknownModel
from stevedore_server.core.inference import Action, JSONValue, ModelRef
from stevedore_server.core.serving import ServingModel
from stevedore_server.frontends.auth import INFER
from stevedore_server.frontends.payload_notes import from_json, note_request, note_response

from .bodies import JSONBytesResponse, anonymous, check_readiness, json_result, parse_json, read_json_text, server_of
from .routing import ApiRoute
from .watching import request_bound, while_connected

#: Routes that take the model's name as the ``model`` query parameter (required but for ``/health/ready``).
MODEL_QUERY = {"/health/ready": False, "/version": True, "/creation_time": True, "/predict_schema": True,
               "/score_schema": True}  # fmt: skip


def model_query(request: Request) -> ServingModel:
    """The model named by the ``model`` query parameter; 422 without one, as the original answered."""
    name = request.query_params.get("model")
    if not name:
        raise InvalidPayload("query parameter model is required", [{"path": "/query/model", "message": "required"}])
    return select(request, name)


def select(request: Request, name: str) -> ServingModel:
    """The model ``name``, or the original's 400 "Model NAME not found" (the names served after it, to a caller
    who may see them)."""
    try:
        return server_of(request).registry.get(name)
    except UnknownModel as error:
        raise LegacyBadRequest(f"Model {name} not found" + ("" if anonymous(request) else error.hint)) from None


async def health_live(request: Request) -> Response:
    return JSONBytesResponse("LIVE")


async def health_ready(request: Request) -> Response:
    """``"READY"`` when the model (or, without ``model``, every model) is ready, else 503."""
    model = request.query_params.get("model")
    ready = select(request, model).ready if model else not await check_readiness(request)
    if ready:
        return JSONBytesResponse("READY")
    return JSONBytesResponse({"error": "NOT_READY", "detail": "NOT_READY"}, status_code=503)


async def health(request: Request) -> Response:
    """Each model's readiness by name; to a caller without a key when keys are on, whether all are ready (one
    boolean: the names are not for strangers)."""
    registry = server_of(request).registry
    ready = {entry.name: entry.ready for entry in registry.defaults()}
    if anonymous(request):
        return JSONBytesResponse({"live": True, "ready": all(ready.values()), "uptime": registry.uptime()})
    return JSONBytesResponse({"live": True, "ready": ready, "uptime": registry.uptime()})


async def health_uptime(request: Request) -> Response:
    return JSONBytesResponse(server_of(request).registry.uptime())


async def model_names(request: Request) -> Response:
    return JSONBytesResponse(server_of(request).registry.names())


async def version(request: Request) -> Response:
    return JSONBytesResponse(model_query(request).version)


async def creation_time(request: Request) -> Response:
    return JSONBytesResponse(model_query(request).loaded.created)


def schema_or_none(entry: ServingModel, kind: str) -> Any:
    """As the original: ``null`` for the score schema of a model without a score service."""
    return entry.schema(kind) if kind == "predict" or entry.predictor.has_score else None


async def predict_schema(request: Request) -> Response:
    return JSONBytesResponse(schema_or_none(model_query(request), "predict"))


async def score_schema(request: Request) -> Response:
    return JSONBytesResponse(schema_or_none(model_query(request), "score"))


async def wrapped_call(request: Request, action: Action) -> Response:
    bound = request_bound(request)
    body = await read_json_text(request)
    wrapped = await parse_json(request, body)
    if not isinstance(wrapped, dict) or not isinstance(wrapped.get("predictor"), str) or "payload" not in wrapped:
        raise BadRequest('expected a JSON object {"predictor": "<model name>", "payload": ...}')
    model = select(request, wrapped["predictor"])
    if action is Action.SCORE and model.ready and not model.predictor.has_score:
        raise LegacyBadRequest(f"Model {model.name} has no score service")
    server = server_of(request)
    note_request(request.scope, server, model, from_json, body)
    call = server.inference.call(ModelRef(model.name, model.version), action, JSONValue(wrapped["payload"], len(body)))
    answer = await while_connected(request, bound, call)
    with tracing.span("encode"):
        response = JSONBytesResponse(json_result(answer, action))
    note_response(request.scope, from_json, response.body)
    return response


async def predict(request: Request) -> Response:
    """``{"predictor": name, "payload": ...}``; answers the bare prediction."""
    return await wrapped_call(request, Action.PREDICT)


async def score(request: Request) -> Response:
    """``{"predictor": name, "payload": ...}``; answers the bare score."""
    return await wrapped_call(request, Action.SCORE)


GET_ROUTES: dict[str, Callable[..., Awaitable[Response]]] = {
    "/health/live": health_live,
    "/health/ready": health_ready,
    "/health": health,
    "/health/uptime": health_uptime,
    "/list": model_names,
    "/version": version,
    "/creation_time": creation_time,
    "/predict_schema": predict_schema,
    "/score_schema": score_schema,
}
POST_ROUTES: dict[str, Callable[..., Awaitable[Response]]] = {"/predict": predict, "/score": score}


def routes() -> list[BaseRoute]:
    """Each route with and without a trailing slash; one documented operation per meaning."""
    tags = ["ml-py-stevedore compatibility"]
    table: list[BaseRoute] = []
    for method, handlers in (("GET", GET_ROUTES), ("POST", POST_ROUTES)):
        for path, handler in handlers.items():
            needs = None if path.startswith("/health") else INFER
            table += [
                ApiRoute(path, handler, [method], tags, needs=needs),
                ApiRoute(path + "/", handler, [method], tags, False, needs=needs),
            ]
    return table
