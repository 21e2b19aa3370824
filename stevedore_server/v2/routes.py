"""The Open Inference Protocol's REST routes: health, metadata, infer (JSON and binary tensors).

Errors here are the protocol's: ``{"error": "<message>"}``, 400 for a client's
mistake, 404 for an unknown model or version.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response

from .. import __version__
from ..errors import BadRequest, ClientError, InvalidPayload, ModelFailure, NotFound, NotReady, PayloadTooLarge
from ..http import (
    PARSE_OFF_LOOP,
    JSONBytesResponse,
    addressed_entry,
    call_model,
    check_readiness,
    error_response,
    model_failure_response,
    read_body,
    registry_of,
)
from ..registry import ModelEntry, check_rows, require_validator
from ..routing import RouteTable
from ..runtime import InferenceTimeout
from ..serialization import dumps, loads
from .signature import Signature
from .tensors import (
    DTYPES,
    decode_binary_data,
    decode_json_data,
    element_count,
    encode_output,
    parse_shape,
    to_model_datatype,
)

EXTENSIONS = ["binary_tensor_data"]
KEPT_STATUSES = {NotFound.status_code, PayloadTooLarge.status_code, NotReady.status_code}
HEADER_LENGTH = "inference-header-content-length"
MODEL = "/v2/models/{name}"
VERSIONED = "/v2/models/{name}/versions/{version}"

Handler = Callable[[Request], Awaitable[Response]]


def protocol_errors(handler: Handler) -> Handler:
    """Answer client errors in the protocol's shape: 400 (404 for unknown models, 413 for huge bodies)."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ClientError as error:
            # Not found, too large and not ready keep their status; every other client error is a 400.
            status = error.status_code if error.status_code in KEPT_STATUSES else 400
            message = error.message
            if isinstance(error, InvalidPayload) and error.details:
                message += ": " + "; ".join(f"{d['path'] or '/'}: {d['message']}" for d in error.details)
            return error_response(status, {"error": message}, error.headers)
        except InferenceTimeout as error:
            return error_response(504, {"error": str(error)})
        except ModelFailure as failure:
            return model_failure_response(failure)

    return wrapped


# -- health and metadata ----------------------------------------------------


async def server_metadata(request: Request) -> Response:
    return JSONBytesResponse({"name": "stevedore-server", "version": __version__, "extensions": EXTENSIONS})


async def server_live(request: Request) -> Response:
    return JSONBytesResponse({"live": True})


async def server_ready(request: Request) -> Response:
    """200 when every model is ready for inference; a 4xx (400), as the protocol says, when not."""
    ready = not await check_readiness(request)
    return JSONBytesResponse({"ready": ready}, status_code=200 if ready else 400)


def tensor_entry(request: Request) -> tuple[ModelEntry, Signature]:
    entry = addressed_entry(request)
    entry.require_ready()
    if entry.signature is None:
        raise BadRequest(
            f"model {entry.name!r} version {entry.version!r} has no V2 interface: {entry.no_tensor_reason}"
        )
    return entry, entry.signature


async def model_metadata(request: Request) -> Response:
    entry, signature = tensor_entry(request)
    registry = registry_of(request)
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
    entry = addressed_entry(request)
    body = {"name": entry.name, "version": entry.version, "ready": entry.ready}
    return JSONBytesResponse(body, status_code=200 if entry.ready else 400)


# -- infer ------------------------------------------------------------------


@dataclass(frozen=True)
class Inference:
    """A decoded inference request: its JSON header, its input arrays, the outputs it wants."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray[Any, Any]]
    selected: list[str]

    @property
    def rows(self) -> int | None:
        """The batch dimension of the first input, which the model's cost is measured in."""
        first = next(iter(self.arrays.values()))
        return first.shape[0] if first.ndim else None


async def infer(request: Request) -> Response:
    entry, signature = tensor_entry(request)
    settings = request.state.settings
    body = await read_body(request, settings.max_body_size)
    header_length = request.headers.get(HEADER_LENGTH)
    decode = functools.partial(decode_request, signature, header_length, settings.max_json_depth, body)
    # As read_json does: a large body is parsed off the event loop.
    inference = await to_thread.run_sync(decode) if len(body) > PARSE_OFF_LOOP else decode()
    answer = functools.partial(answer_inference, entry, signature)
    content, headers = await call_model(entry, "predict", inference, answer, inference.rows)
    media_type = "application/octet-stream" if HEADER_LENGTH in headers else "application/json"
    return Response(content, media_type=media_type, headers=headers)


def decode_request(signature: Signature, header_length: str | None, max_depth: int, body: bytes) -> Inference:
    header, binary = split_body(body, header_length, max_depth)
    arrays = decode_inputs(header, binary, signature)
    return Inference(header, arrays, requested_outputs(header, signature))


def answer_inference(entry: ModelEntry, signature: Signature, inference: Inference) -> tuple[bytes, dict[str, str]]:
    """The inference response (body and headers): predict, then encode the selected outputs."""
    outputs = results_by_output(entry, signature, predict_tensors(entry, signature, inference.arrays))
    selected = inference.selected
    return encode_response(entry, inference.header, {name: outputs[name] for name in selected}, selected)


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
    tensor: Any, binary: bytes, offset: int, specs: dict[str, Any]
) -> tuple[str, np.ndarray[Any, Any], int]:
    """One input as the model's datatype and shape, and how many binary bytes it used."""
    if not isinstance(tensor, dict):
        raise BadRequest("each input must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise BadRequest("an input has no name")
    if name not in specs:
        raise BadRequest(f"unknown input {name!r}; the model's inputs are: {', '.join(specs)}")
    datatype = tensor.get("datatype")
    if datatype not in DTYPES:
        raise BadRequest(
            f"input {name!r}: unknown or unsupported datatype {datatype!r}; supported: {', '.join(DTYPES)}"
        )
    shape = parse_shape(tensor)
    spec = specs[name]
    if not spec.accepts_shape(shape):
        raise BadRequest(f"input {name!r}: shape {shape} does not match the model's {list(spec.shape)}")
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
    try:
        return name, to_model_datatype(name, flat, datatype, spec.datatype).reshape(shape), used
    except ValueError as error:  # a shape NumPy cannot hold, however few its elements
        raise BadRequest(f"input {name!r}: shape {shape} cannot be held: {error}") from None


def requested_outputs(header: dict[str, Any], signature: Signature) -> list[str]:
    names = [spec.name for spec in signature.outputs]
    requested = header.get("outputs")
    if requested is None:
        return names
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise BadRequest("outputs must be a list of objects with a name")
    unknown = [o["name"] for o in requested if o["name"] not in names]
    if unknown:
        raise BadRequest(f"unknown outputs: {', '.join(unknown)}; the model's outputs are: {', '.join(names)}")
    for output in requested:
        parameters(output, f"output {output['name']!r}")
    return [o["name"] for o in requested] or names


def predict_tensors(entry: ModelEntry, signature: Signature, arrays: dict[str, np.ndarray[Any, Any]]) -> Any:
    """Validate against the predict schema and predict; runs in a worker thread."""
    first = arrays[signature.inputs[0].name]
    single = len(signature.inputs) == 1

    def as_lists() -> Any:
        return first.tolist() if single else {name: array.tolist() for name, array in arrays.items()}

    if not entry.predictor.numpy_input:
        return entry.predict(as_lists())
    if signature.tensor_check is not None:  # all the schema says, checked on the array itself: no lists made
        problem = signature.tensor_check.problem(first)
        if problem:
            raise InvalidPayload(f"input {signature.inputs[0].name!r} does not match the model's schema: it {problem}")
    else:
        require_validator(entry.predict_validator).validate(as_lists())
    result = entry.predictor.predict(first if single else arrays)
    if single and first.ndim:
        check_rows(entry.predictor, first.shape[0], result)
    return result


def results_by_output(entry: ModelEntry, signature: Signature, result: Any) -> dict[str, Any]:
    if len(signature.outputs) == 1:
        return {signature.outputs[0].name: result}
    names = [spec.name for spec in signature.outputs]
    if not isinstance(result, dict) or set(result) != set(names):
        error = TypeError(f"a model with outputs {names} must return a dict with those keys")
        raise ModelFailure(entry.name, entry.version, "predict", error)
    return result


def encode_response(
    entry: ModelEntry, header: dict[str, Any], results: dict[str, Any], selected: list[str]
) -> tuple[bytes, dict[str, str]]:
    binary_default = parameters(header, "the request").get("binary_data_output") is True
    wanted = {o["name"]: o.get("parameters", {}) for o in header.get("outputs") or []}
    tensors, chunks = [], []
    for name in selected:
        binary = wanted.get(name, {}).get("binary_data", binary_default) is True
        try:
            tensor, raw = encode_output(name, results[name], binary)
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


def add_routes(routes: RouteTable) -> None:
    tags = ["Open Inference Protocol (V2)"]
    routes.add("/v2", protocol_errors(server_metadata), ["GET"], tags=tags)
    routes.add("/v2/health/live", protocol_errors(server_live), ["GET"], tags=tags)
    routes.add("/v2/health/ready", protocol_errors(server_ready), ["GET"], tags=tags)
    for base in (MODEL, VERSIONED):
        routes.add(base, protocol_errors(model_metadata), ["GET"], tags=tags)
        routes.add(f"{base}/ready", protocol_errors(model_ready), ["GET"], tags=tags)
        routes.add(f"{base}/infer", protocol_errors(infer), ["POST"], tags=tags, hot=True)
