from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from anyio import to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from stevedore_server import __version__
from stevedore_server.base.errors import BadRequest, ClientError, ModelFailure
from stevedore_server.base.serialization import dumps, loads
from stevedore_server.core.content_types import ContentPlan, checked, plan_of
from stevedore_server.core.inference import OFF_LOOP_BYTES, Action, Answer, ModelRef, Tensors
from stevedore_server.core.repository import ModelRepository
from stevedore_server.core.serving import ServingModel
from stevedore_server.core.signature import Signature
from stevedore_server.core.tensors import (
    TensorSpec,
    decode_binary_data,
    decode_json_data,
    element_count,
    encode_output,
    input_spec,
    model_input,
)
from stevedore_server.frontends.web.bodies import (
    JSONBytesResponse,
    check_readiness,
    error_response,
    http_error,
    read_body,
    server_of,
)
from stevedore_server.frontends.web.routing import ApiRoute, ProtocolMount

from .generate import generate, generate_stream

PREFIX = "/v2"
#: Extensions of both transports; REST also has the generate extension.
EXTENSIONS = ["binary_tensor_data", "model_repository"]
REST_EXTENSIONS = [*EXTENSIONS, "generate"]
#: Statuses the protocol's clients tell apart; every other client error is its 400.
KEPT_STATUSES = frozenset({401, 404, 413, 503, 504})
HEADER_LENGTH = "inference-header-content-length"
MODEL = "/models/{name}"
VERSIONED = "/models/{name}/versions/{version}"


async def client_error(request: Request, error: Exception) -> Response:
    """A client error in the protocol's shape: ``{"error": message}``, details folded into the message."""
    if not isinstance(error, ClientError):
        raise error
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


def model_ref(request: Request) -> ModelRef:
    return ModelRef(request.path_params["name"], request.path_params.get("version"))


def tensor_model(request: Request) -> tuple[ServingModel, Signature]:
    """The model the path names, served and with tensors: 404, 503, or 400 for a model without a V2 interface."""
    return server_of(request).inference.resolve_tensors(model_ref(request))


async def model_metadata(request: Request) -> Response:
    entry, signature = tensor_model(request)
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
    ref = model_ref(request)
    entry = server_of(request).registry.get(ref.name, ref.version)
    body = {"name": entry.name, "version": entry.version, "ready": entry.ready}
    return JSONBytesResponse(body, status_code=200 if entry.ready else 400)


# -- infer ------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """A decoded inference request: its JSON header, its input arrays, what they become for the predictor, the
    outputs it wants."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray[Any, Any]]
    content: ContentPlan
    selected: list[str]


async def infer(request: Request) -> Response:
    """Decode the tensors, run the inference core, encode the selected outputs."""
    inference = server_of(request).inference
    ref = model_ref(request)
    _, signature = tensor_model(request)
    body = await read_body(request)
    decode = functools.partial(decode_request, signature, request.headers.get(HEADER_LENGTH), body)
    max_depth = server_of(request).settings.max_json_depth
    # A large body is decoded off the event loop, as JSON bodies are parsed.
    decoded = await to_thread.run_sync(decode, max_depth) if len(body) > OFF_LOOP_BYTES else decode(max_depth)
    answer = await inference.call(ref, Action.PREDICT, Tensors(decoded.arrays, decoded.content))
    content, headers = encode_response(answer, decoded.header, decoded.selected)
    media_type = "application/octet-stream" if HEADER_LENGTH in headers else "application/json"
    return Response(content, media_type=media_type, headers=headers)


def decode_request(signature: Signature, header_length: str | None, body: bytes, max_depth: int) -> Decoded:
    header, binary = split_body(body, header_length, max_depth)
    arrays = decode_inputs(header, binary, signature)
    return Decoded(header, arrays, content_plan(header, signature), requested_outputs(header, signature))


def content_plan(header: dict[str, Any], signature: Signature) -> ContentPlan:
    """What the request's inputs become for the predictor, from the content types it and the model name."""
    request_type = checked(parameters(header, "the request").get("content_type"), "the request")
    input_types = {
        tensor["name"]: checked(parameters(tensor, f"input {tensor['name']!r}").get("content_type"), tensor["name"])
        for tensor in header["inputs"]
    }
    return plan_of(request_type, input_types, signature.declared_content(), signature.content_type)


def split_body(body: bytes, declared: str | None, max_depth: int) -> tuple[dict[str, Any], bytes]:
    """The JSON inference header and the binary tensor data after it (binary tensor data extension)."""
    binary = b""
    if declared is not None:
        if not (declared.isascii() and declared.strip().isdigit()) or int(declared) > len(body):
            raise BadRequest(f"{HEADER_LENGTH} {declared!r} is not a length within the {len(body)}-byte body")
        body, binary = body[: int(declared)], body[int(declared) :]
    header = loads(body, max_depth)
    if not isinstance(header, dict):
        raise BadRequest("the inference request must be a JSON object")
    parameters(header, "the request")
    return header, binary


def parameters(holder: dict[str, Any], what: str) -> dict[str, Any]:
    found = holder.get("parameters", {})
    if not isinstance(found, dict):
        raise BadRequest(f"{what}: parameters must be an object")
    return found


def decode_inputs(header: dict[str, Any], binary: bytes, signature: Signature) -> dict[str, np.ndarray[Any, Any]]:
    tensors = header.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise BadRequest("inputs must be a non-empty list of tensors")
    specs = {spec.name: spec for spec in signature.inputs}
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for tensor in tensors:
        name, array, used = decode_tensor(tensor, binary, offset, specs)
        if name in arrays:
            raise BadRequest(f"input {name!r} is given twice")
        arrays[name] = array
        offset += used
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    missing = [name for name in specs if name not in arrays]
    if missing:
        raise BadRequest(f"missing inputs: {', '.join(missing)}")
    return arrays


def decode_tensor(
    tensor: Any, binary: bytes, offset: int, specs: dict[str, TensorSpec]
) -> tuple[str, np.ndarray[Any, Any], int]:
    """One input as the model's datatype and shape, and how many binary bytes it used."""
    if not isinstance(tensor, dict):
        raise BadRequest("each input must be an object with name, shape, datatype and data")
    datatype: Any = tensor.get("datatype")  # checked by input_spec
    shape: Any = tensor.get("shape")
    spec = input_spec(tensor.get("name"), datatype, shape, specs)
    name = spec.name
    size = parameters(tensor, f"input {name!r}").get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise BadRequest(f"input {name!r} has no data")
        flat, used = decode_json_data(name, datatype, tensor["data"], shape), 0
    else:
        if type(size) is not int or size < 0 or offset + size > len(binary) or "data" in tensor:
            raise BadRequest(f"input {name!r}: binary_data_size {size!r} does not fit the binary data")
        flat = decode_binary_data(name, datatype, binary[offset : offset + size], element_count(shape))
        used = size
    return name, model_input(spec, flat, datatype, shape), used


def requested_outputs(header: dict[str, Any], signature: Signature) -> list[str]:
    requested = header.get("outputs")
    if requested is None:
        return [spec.name for spec in signature.outputs]
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise BadRequest("outputs must be a list of objects with a name")
    for output in requested:
        parameters(output, f"output {output['name']!r}")
    return signature.select_outputs([o["name"] for o in requested])


def outputs_of(answer: Answer) -> dict[str, Any]:
    """The answer's result by output name; ModelFailure for a result that does not fit the model's outputs."""
    model = answer.model
    try:
        if model.signature is None:  # the model answered tensors, so it has a signature
            raise TypeError("the model has no tensor outputs")
        return model.signature.results_by_output(answer.result)
    except TypeError as error:
        raise ModelFailure(model.name, model.version, "predict", error) from error


def encode_response(answer: Answer, header: dict[str, Any], selected: list[str]) -> tuple[bytes, dict[str, str]]:
    """The inference response (body and headers): the selected outputs, JSON or binary as asked."""
    entry = answer.model
    results = outputs_of(answer)
    signature = entry.signature
    binary_default = parameters(header, "the request").get("binary_data_output") is True
    wanted = {o["name"]: o.get("parameters", {}) for o in header.get("outputs") or []}
    tensors, chunks = [], []
    for name in selected:
        binary = wanted.get(name, {}).get("binary_data", binary_default) is True
        try:
            declared = signature.output_content_type(name) if signature else None
            tensor, raw = encode_output(name, results[name], binary, declared)
        except (TypeError, ValueError) as error:
            raise ModelFailure(entry.name, entry.version, "predict", error) from error
        tensors.append(tensor)
        if raw is not None:
            chunks.append(raw)
    body: dict[str, Any] = {"model_name": entry.name, "model_version": entry.version, "outputs": tensors}
    if isinstance(header.get("id"), str):
        body["id"] = header["id"]
    json_part = dumps(body)
    if not chunks:
        return json_part, {}
    return json_part + b"".join(chunks), {HEADER_LENGTH: str(len(json_part))}


# -- the model repository extension ---------------------------------------------


def repository_of(request: Request) -> ModelRepository:
    repository: ModelRepository = request.state.repository
    return repository


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

    def route(path: str, handler: Any, method: str) -> ApiRoute:
        return ApiRoute(path, handler, [method], tags, template=PREFIX + path)

    mounted: list[BaseRoute] = [route(f"{base}/infer", infer, "POST") for base in (MODEL, VERSIONED)]
    for base in (MODEL, VERSIONED):
        mounted += [
            route(f"{base}/generate", generate, "POST"),
            route(f"{base}/generate_stream", generate_stream, "POST"),
        ]
    mounted += [route("/health/live", server_live, "GET"), route("/health/ready", server_ready, "GET")]
    for base in (MODEL, VERSIONED):
        mounted += [route(base, model_metadata, "GET"), route(f"{base}/ready", model_ready, "GET")]
    mounted += [
        route("/repository/index", repository_index, "POST"),
        route("/repository/models/{name}/load", repository_load, "POST"),
        route("/repository/models/{name}/unload", repository_unload, "POST"),
    ]
    metadata = ApiRoute(PREFIX, server_metadata, ["GET"], tags)
    return [metadata, ProtocolMount(PREFIX, mounted, EXCEPTION_HANDLERS)]
