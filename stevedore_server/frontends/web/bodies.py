"""What the HTTP front ends share: the server and readiness of a request, bodies in, JSON out."""

from __future__ import annotations

from typing import Any

import orjson
from anyio import to_thread
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from stevedore_server.base.errors import BadRequest, ModelFailure, PayloadTooLarge
from stevedore_server.base.health import Report
from stevedore_server.base.serialization import ascii_digits, dumps, dumps_result, loads
from stevedore_server.core.inference import OFF_LOOP_BYTES, Answer, ModelRef
from stevedore_server.core.server import ModelServer
from stevedore_server.core.serving import ServingModel
from stevedore_server.frontends.auth import caller_of
from stevedore_server.frontends.state import of_request

#: Content types parsed as JSON. Form-encoded is curl's default for ``-d``, which
#: the original server's users send without a header.
JSON_TYPES = {"application/json", "text/plain", "application/x-www-form-urlencoded"}


class JSONBytesResponse(Response):
    """A response whose content is already serialized, or is serialized with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else dumps(content)


def model_ref(request: Request) -> ModelRef:
    """The model the path names (its default version unless the path has one)."""
    return ModelRef(request.path_params["name"], request.path_params.get("version"))


def server_of(request: Request) -> ModelServer:
    return of_request(request).server


async def check_readiness(request: Request) -> list[str]:
    """Why the server is not ready (``HealthChecks.problems``)."""
    return await of_request(request).health.problems()


async def health_report(request: Request) -> Report:
    """Every health check's result (``HealthChecks.report``: shared, never changed)."""
    return await of_request(request).health.report()


def anonymous(request: Request) -> bool:
    """API keys are on and the request carried no valid key: a probe answers it its status, no details."""
    return caller_of(request.scope).anonymous


async def parse_json(request: Request, body: bytes) -> Any:
    """``body`` parsed as JSON within the depth limit; a large one off the event loop."""
    max_depth = server_of(request).settings.max_json_depth
    if len(body) > OFF_LOOP_BYTES:
        return await to_thread.run_sync(loads, body, max_depth)
    return loads(body, max_depth)


async def read_json_text(request: Request) -> bytes:
    """The body of a JSON request (by its content type), within the body-size limit; not parsed yet."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise BadRequest(f"unsupported content type {content_type!r}: send application/json")
    return await read_body(request)


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed the ``max_body_size`` setting."""
    limit = server_of(request).settings.max_body_size
    declared = request.headers.get("content-length")
    if declared and ascii_digits(declared) and int(declared) > limit:
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


def json_result(answer: Answer, action: str) -> orjson.Fragment:
    """A model's result as JSON; output that is not JSON is the model's failure, not a half-written response."""
    try:
        return orjson.Fragment(dumps_result(answer.result))
    except (TypeError, ValueError) as error:  # not JSON (orjson.JSONEncodeError is a TypeError), or not finite
        raise ModelFailure(answer.model.name, answer.model.version, action, error) from error


def served_by(model: ServingModel) -> dict[str, str]:
    """The headers naming the model and version that answered (a traffic name's variant, ``core.traffic``)."""
    return {"X-Model-Name": model.name, "X-Model-Version": model.version}


def error_response(status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONBytesResponse(body, status_code=status_code, headers=headers)


async def http_error(request: Request, error: Exception) -> Response:
    """Routing's own errors (404 for no route, 405 for a wrong method) as ``{"error": ...}``: the format of the
    stevedore routes and of the Open Inference Protocol alike."""
    if not isinstance(error, HTTPException):
        raise error
    return error_response(error.status_code, {"error": str(error.detail)}, dict(error.headers or {}))
