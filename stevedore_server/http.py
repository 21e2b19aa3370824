"""Request and response helpers shared by the route modules."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from anyio import to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .errors import BadRequest, ModelFailure, NotReady, PayloadTooLarge
from .health import readiness
from .registry import ModelEntry, Registry
from .serialization import dumps, dumps_result, loads

logger = logging.getLogger("stevedore.http")

#: Content types parsed as JSON. Form-encoded is curl's default for ``-d``, which
#: the original server's users send without a header.
JSON_TYPES = {"application/json", "text/plain", "application/x-www-form-urlencoded"}


#: Bodies larger than this are parsed in a worker thread: parsing megabytes would stall the event loop.
PARSE_OFF_LOOP = 256 * 1024


class JSONBytesResponse(Response):
    """A response whose content is already serialized, or is serialized with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else dumps(content)


def registry_of(request: Request) -> Registry:
    registry: Registry = request.state.registry
    return registry


def addressed_entry(request: Request) -> ModelEntry:
    """The model the path names (its highest version unless the path has one), or 404."""
    return registry_of(request).get(request.path_params["name"], request.path_params.get("version"))


def ready_entry(request: Request) -> ModelEntry:
    """The addressed model, or 404; 503 if it is not ready."""
    entry = addressed_entry(request)
    entry.require_ready()
    return entry


async def check_readiness(request: Request) -> list[str]:
    """Why the server is not ready: draining after SIGTERM, or ``health.readiness`` (run off the event loop,
    on the checks' own threads, as plugins' checks may block)."""
    if request.state.draining.is_set():
        return ["shutting down: draining in-flight requests"]
    return await to_thread.run_sync(readiness, registry_of(request), limiter=request.state.check_threads)


async def read_json(request: Request) -> Any:
    """The request body parsed as JSON, within the body-size limit."""
    return await parse_json(request, await read_json_text(request))


async def read_json_text(request: Request) -> bytes:
    """The body of a JSON request (by its content type), within the body-size limit; not parsed yet."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise BadRequest(f"unsupported content type {content_type!r}: send application/json")
    return await read_body(request, request.state.settings.max_body_size)


async def parse_json(request: Request, body: bytes) -> Any:
    """``body`` parsed as JSON within the depth limit; a large one off the event loop."""
    max_depth = request.state.settings.max_json_depth
    if len(body) > PARSE_OFF_LOOP:
        return await to_thread.run_sync(loads, body, max_depth)
    return loads(body, max_depth)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; the 400 is for the access log and the metrics, not an error of ours.
        raise BadRequest("the client disconnected before sending the whole body") from None
    return b"".join(chunks)


async def call_model(
    entry: ModelEntry,
    action: str,
    payload: Any,
    method: Callable[[Any], Any] | None = None,
    rows: int | None = None,
    valid: bool = False,
) -> Any:
    """Predict, score, or ``method`` (a predict of ``rows`` rows), as the model's runtime runs them (threads,
    queue bound, time-out, batching, inline)."""
    runtime = entry.runtime
    if runtime is None:
        raise NotReady(f"model {entry.name!r} version {entry.version!r} is not running")
    if method is not None:
        return await runtime.run(action, method, payload, rows)
    if action == "predict":
        return await runtime.predict(payload, valid)
    return await runtime.run(action, entry.score, payload)


async def run_model(entry: ModelEntry, action: str, payload: Any, valid: bool = False) -> orjson.Fragment:
    """``call_model``, serialized; output that is not JSON is the model's failure, not a half-written response."""
    result = await call_model(entry, action, payload, valid=valid)
    try:
        return orjson.Fragment(dumps_result(result))
    except (TypeError, ValueError) as error:  # not JSON (orjson.JSONEncodeError is a TypeError), or not finite
        raise ModelFailure(entry.name, entry.version, action, error) from error


def error_response(status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONBytesResponse(body, status_code=status_code, headers=headers)


def model_failure_response(failure: ModelFailure) -> Response:
    error_id = uuid.uuid4().hex
    logger.error("%s (error id %s)", failure, error_id, exc_info=failure.error)
    return error_response(
        500, {"error": f"{failure}; see the server log for error id {error_id}", "error_id": error_id}
    )
