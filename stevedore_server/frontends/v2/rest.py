"""The Open Inference Protocol (KServe V2) over REST: health, metadata, infer (JSON or binary tensor data), the
model repository extension and the generate extension, under ``/v2`` with the protocol's error format."""

from __future__ import annotations

import functools
import time
from typing import Any

from anyio import to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from stevedore_server.base import tracing
from stevedore_server.base.errors import BadRequest, ClientError
from stevedore_server.base.serialization import loads
from stevedore_server.base.version import __version__
from stevedore_server.core.deadlines import MICROSECONDS, TIMEOUT_PARAMETER, seconds_of
from stevedore_server.core.inference import OFF_LOOP_BYTES, Action, tensor_signature
from stevedore_server.core.repository import ModelRepository
from stevedore_server.core.serving import ServingModel
from stevedore_server.core.signature import Signature
from stevedore_server.core.statistics import RequestTimer, input_since, output_since
from stevedore_server.frontends.auth import ADMIN, INFER
from stevedore_server.frontends.payload_notes import note_request, note_response
from stevedore_server.frontends.state import of_request
from stevedore_server.frontends.web.bodies import (
    JSONBytesResponse,
    anonymous,
    check_readiness,
    error_response,
    http_error,
    model_ref,
    read_body,
    served_by,
    server_of,
)
from stevedore_server.frontends.web.routing import ApiRoute, ProtocolMount
from stevedore_server.frontends.web.watching import request_bound, while_connected

from . import pipelines
from .codec import EXTENSIONS, HEADER_LENGTH, decode_request, encode_response, parameters
from .extensions import config_body, models_for_statistics, statistics_body
from .generate import generate, generate_stream
from .payload_views import rest_body

PREFIX = "/v2"
REST_EXTENSIONS = [*EXTENSIONS, "generate"]
#: Statuses the protocol's clients tell apart; every other client error is its 400.
KEPT_STATUSES = frozenset({401, 403, 404, 413, 429, 499, 503, 504})
MODEL = "/models/{name}"
VERSIONED = "/models/{name}/versions/{version}"


async def client_error(request: Request, error: Exception) -> Response:
    """A client error in the protocol's shape: ``{"error": message}``, details folded into the message."""
    if not isinstance(error, ClientError):
        raise error
    if anonymous(request):  # a probe's caller without a key: not told what the server holds
        error = error.to_anonymous()
    status = error.status_code if error.status_code in KEPT_STATUSES else 400
    return error_response(status, {"error": error.summary()}, error.headers)


#: The V2 mount's error edge; anything else (a model's failure, a bug) reaches the app's handlers.
EXCEPTION_HANDLERS = {ClientError: client_error, HTTPException: http_error}


# -- health and metadata ----------------------------------------------------


async def server_metadata(request: Request) -> Response:
    return JSONBytesResponse({"name": "stevedore-server", "version": __version__, "extensions": REST_EXTENSIONS})


async def server_live(request: Request) -> Response:
    return JSONBytesResponse({"live": True})


async def server_ready(request: Request) -> Response:
    """200 when every model is ready for inference; a 4xx (400), as the protocol says, when not."""
    ready = not await check_readiness(request)
    return JSONBytesResponse({"ready": ready}, status_code=200 if ready else 400)


async def tensor_model(request: Request) -> tuple[ServingModel, Signature]:
    """The model the path names, served (a lazy one loaded) and with tensors: 404, 503, or 400 for a model without
    a V2 interface."""
    return await server_of(request).inference.resolve_tensors(model_ref(request))


async def model_metadata(request: Request) -> Response:
    entry, signature = await tensor_model(request)
    registry = server_of(request).registry
    return JSONBytesResponse(
        {
            "name": entry.name,
            "versions": [other.version for other in registry.versions_of(entry.name)],
            "platform": "stevedore",
            "inputs": [spec.as_dict() for spec in signature.inputs],
            "outputs": [spec.as_dict() for spec in signature.outputs],
        }
    )


async def model_ready(request: Request) -> Response:
    server = server_of(request)
    ref = server.inference.standing_for(model_ref(request))  # a traffic name: ready as its heaviest variant
    entry = server.registry.get(ref.name, ref.version)
    # The version, a detail, not to a caller without a key when keys are on (the name is the caller's own).
    body = {"name": entry.name, "ready": entry.ready} | ({} if anonymous(request) else {"version": entry.version})
    return JSONBytesResponse(body, status_code=200 if entry.ready else 400)


# -- infer ------------------------------------------------------------------


async def infer(request: Request) -> Response:
    """Decode the tensors, run the inference core, encode the selected outputs: timed for the statistics."""
    if pipelines.names_pipeline(server_of(request), request.path_params["name"], request.path_params.get("version")):
        return await pipeline_infer(request)
    with RequestTimer():
        return await timed_infer(request)


async def pipeline_infer(request: Request) -> Response:
    """A pipeline's infer (``v2.pipelines``): each of its steps is timed as its model's own request."""
    server, name = server_of(request), request.path_params["name"]
    bound = request_bound(request)
    first, last = await pipelines.tensor_ends(server, name)
    body = await read_body(request)
    ends = pipelines.signature(first), pipelines.signature(last)
    decode = functools.partial(pipelines.decode, *ends, body, request.headers.get(HEADER_LENGTH))
    max_depth = server.settings.max_json_depth
    decoded = await to_thread.run_sync(decode, max_depth) if len(body) > OFF_LOOP_BYTES else decode(max_depth)
    timeout = parameters(decoded.header, "the request").get("timeout")
    if timeout is not None:
        bound.tightened(seconds_of(timeout, TIMEOUT_PARAMETER, MICROSECONDS), TIMEOUT_PARAMETER)
    answer = await while_connected(request, bound, server.pipelines.predict(name, decoded.value, len(body)))
    encoded = pipelines.pipeline_answer(last, answer.predictions)
    named = (name, pipelines.NO_VERSION)
    content, headers = encode_response(encoded, decoded.header, decoded.selected, decoded.renamed, named)
    media_type = "application/octet-stream" if HEADER_LENGTH in headers else "application/json"
    return Response(content, media_type=media_type, headers=headers)


async def timed_infer(request: Request) -> Response:
    inference = server_of(request).inference
    ref = model_ref(request)
    bound = request_bound(request)
    # An unknown, unready or full model is answered before the body is read.
    model = await inference.admit(ref, Action.PREDICT, bound.deadline)
    signature = tensor_signature(model)
    body = await read_body(request)
    header_length = request.headers.get(HEADER_LENGTH)
    note_request(request.scope, server_of(request), model, rest_body, body, header_length)
    decode = functools.partial(decode_request, signature, header_length, body)
    max_depth = server_of(request).settings.max_json_depth
    # A large body is decoded off the event loop, as JSON bodies are parsed.
    started = time.perf_counter_ns()
    with tracing.span("decode"):
        decoded = await to_thread.run_sync(decode, max_depth) if len(body) > OFF_LOOP_BYTES else decode(max_depth)
    input_since(started)
    timeout = parameters(decoded.header, "the request").get("timeout")
    if timeout is not None:
        bound.tightened(seconds_of(timeout, TIMEOUT_PARAMETER, MICROSECONDS), TIMEOUT_PARAMETER)
    answer = await while_connected(request, bound, inference.call(ref, Action.PREDICT, decoded.tensors()))
    started = time.perf_counter_ns()
    with tracing.span("encode"):
        content, headers = encode_response(answer, decoded.header, decoded.selected, decoded.renamed)
    output_since(started)
    media_type = "application/octet-stream" if HEADER_LENGTH in headers else "application/json"
    note_response(request.scope, rest_body, content, headers.get(HEADER_LENGTH), model=answer.model)
    return Response(content, media_type=media_type, headers=headers | served_by(answer.model))


# -- the statistics and model configuration extensions ----------------------------


async def model_statistics(request: Request) -> Response:
    """Triton's statistics of every served model, of one model's versions, or of one version."""
    server = server_of(request)
    name, version = request.path_params.get("name", ""), request.path_params.get("version", "")
    models = models_for_statistics(server.inference, server.registry, name, version)
    return JSONBytesResponse(statistics_body(models))


async def model_config(request: Request) -> Response:
    """The model's configuration in Triton's form."""
    model, signature = await tensor_model(request)
    return JSONBytesResponse(config_body(model, signature, server_of(request).settings))


# -- the model repository extension ---------------------------------------------


def repository_of(request: Request) -> ModelRepository:
    return of_request(request).repository


async def repository_index(request: Request) -> Response:
    """Every installed model with its state; ``{"ready": true}`` lists only the ready ones."""
    body = await read_body(request)
    options = loads(body, server_of(request).settings.max_json_depth) if body.strip() else {}
    if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
        raise BadRequest('the index request must be a JSON object, with "ready" a boolean if given')
    return JSONBytesResponse(await repository_of(request).index(ready_only=options.get("ready", False)))


async def repository_load(request: Request) -> Response:
    """Load (or reload) a model from the installed plugins: 200 once it serves, 400 with the reason if not."""
    name = request.path_params["name"]
    await repository_of(request).load(name)
    return JSONBytesResponse({"name": name, "state": "READY"})


async def repository_unload(request: Request) -> Response:
    """Unload a model: not ready at once; its calls in flight finish."""
    name = request.path_params["name"]
    await repository_of(request).unload(name)
    return JSONBytesResponse({"name": name, "state": "UNAVAILABLE"})


def routes() -> list[BaseRoute]:
    """The server metadata route (``/v2`` itself), then the mount of every other route with the protocol's
    error format; infer first, as the hot route."""
    tags = ["Open Inference Protocol (V2)"]

    def route(path: str, handler: Any, method: str, needs: str | None = INFER) -> ApiRoute:
        return ApiRoute(path, handler, [method], tags, template=PREFIX + path, needs=needs)

    mounted: list[BaseRoute] = [route(f"{base}/infer", infer, "POST") for base in (MODEL, VERSIONED)]
    for base in (MODEL, VERSIONED):
        mounted += [
            route(f"{base}/generate", generate, "POST"),
            route(f"{base}/generate_stream", generate_stream, "POST"),
        ]
    mounted += [route("/health/live", server_live, "GET", None), route("/health/ready", server_ready, "GET", None)]
    mounted.append(route("/models/stats", model_statistics, "GET"))  # before a model's routes: "stats" is no name
    for base in (MODEL, VERSIONED):
        mounted += [route(base, model_metadata, "GET"), route(f"{base}/ready", model_ready, "GET", None)]
        mounted += [route(f"{base}/stats", model_statistics, "GET"), route(f"{base}/config", model_config, "GET")]
    mounted += [
        route("/repository/index", repository_index, "POST", ADMIN),
        route("/repository/models/{name}/load", repository_load, "POST", ADMIN),
        route("/repository/models/{name}/unload", repository_unload, "POST", ADMIN),
    ]
    metadata = ApiRoute(PREFIX, server_metadata, ["GET"], tags, needs=INFER)
    return [metadata, ProtocolMount(PREFIX, mounted, EXCEPTION_HANDLERS)]
