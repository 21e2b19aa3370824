"""OpenAI's error format for the OpenAI-compatible routes: ``{"error": {"message", "type", "param", "code"}}``
with the status of the error, so that OpenAI's clients raise their own exceptions (``BadRequestError``,
``NotFoundError`` with code ``model_not_found``, ``AuthenticationError`` with code ``invalid_api_key``...). A
model's failure is a 500 whose message gives the error id it was logged under, never its traceback. The API key
middleware answers its refusals under these routes through ``client_error`` too (``web.middleware.send_error``)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from stevedore_server.base.errors import (
    ClientError,
    InferenceTimeout,
    InvalidParameter,
    KeyNotAccepted,
    ModelFailure,
    NotReady,
    Overloaded,
    ReportedFailure,
    Unsupported,
)
from stevedore_server.base.logs import log_error
from stevedore_server.frontends.web.bodies import anonymous, error_response

logger = logging.getLogger("stevedore.openai")

#: OpenAI's error types by status; any other client error is an ``invalid_request_error``, as OpenAI's own
#: refusals of a key are (401, code ``invalid_api_key``: its SDK raises by status, ``AuthenticationError``...).
TYPES = {
    429: "rate_limit_error",
    503: "server_error",
    504: "timeout_error",
}


def error_code(error: ClientError) -> str | None:
    """OpenAI's ``code``, where a client tells such errors apart."""
    if isinstance(error, KeyNotAccepted):
        return "invalid_api_key"
    if isinstance(error, Overloaded):
        return "overloaded"
    if isinstance(error, NotReady):
        return "model_not_ready"
    if isinstance(error, InferenceTimeout):
        return "timeout"
    if error.status_code == 404 and not isinstance(error, Unsupported):
        return "model_not_found"
    return None


def error_param(error: ClientError) -> str | None:
    """OpenAI's ``param``: the parameter named, or ``model`` for a model without the route's capability (as
    OpenAI names it for a chat to a model that does not chat)."""
    if isinstance(error, InvalidParameter):
        return error.param
    return "model" if isinstance(error, Unsupported) else None


def client_body(error: ClientError) -> dict[str, Any]:
    param = error_param(error)
    kind = TYPES.get(error.status_code, "invalid_request_error")
    return {"error": {"message": error.summary(), "type": kind, "param": param, "code": error_code(error)}}


def failure_body(error: ModelFailure | ReportedFailure) -> dict[str, Any]:
    """A model's failure, logged here with its traceback (or by the replica that ran it) under an error id."""
    if isinstance(error, ReportedFailure):
        error_id = error.error_id
        logger.error("%s (error id %s, logged by the replica that ran the model)", error, error_id)
    else:
        error_id = log_error(logger, str(error), error.error)
    message = f"{error}; see the server log for error id {error_id}"
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


def error_body(error: ClientError | ModelFailure) -> dict[str, Any]:
    """The body of ``error``: what a request failing so gets, and the event a stream failing so ends with."""
    return client_body(error) if isinstance(error, ClientError) else failure_body(error)


async def client_error(request: Request, error: Exception) -> Response:
    if not isinstance(error, ClientError):
        raise error
    if anonymous(request):  # a caller without a key while keys are on: not told what the server holds
        error = error.to_anonymous()
    return error_response(error.status_code, client_body(error), error.headers)


async def model_failure(request: Request, error: Exception) -> Response:
    if not isinstance(error, (ModelFailure, ReportedFailure)):
        raise error
    return error_response(500, failure_body(error))


async def http_error(request: Request, error: Exception) -> Response:
    """Routing's own errors (no such route, a wrong method) in the same format."""
    if not isinstance(error, HTTPException):
        raise error
    body = {"error": {"message": str(error.detail), "type": "invalid_request_error", "param": None, "code": None}}
    return error_response(error.status_code, body, dict(error.headers or {}))


async def unexpected(request: Request, error: Exception) -> Response:
    """Anything else (a bug): a 500 in the same format, logged once with its traceback under an error id, as the
    app's last resort (``web.middleware``) does for the other routes."""
    error_id = log_error(logger, "unexpected error", error)
    message = f"internal server error; see the server log for error id {error_id}"
    return error_response(500, {"error": {"message": message, "type": "server_error", "param": None, "code": None}})


#: The mount's error edge, every error in OpenAI's format (by the most specific class that matches).
EXCEPTION_HANDLERS = {
    ClientError: client_error,
    HTTPException: http_error,
    ModelFailure: model_failure,
    ReportedFailure: model_failure,
    Exception: unexpected,
}
