"""What every gRPC call passes, the counterpart of the HTTP middleware: its request id (``x-request-id``
metadata, echoed in the trailers), its API key (``authorization: Bearer KEY``), its access log line and metrics,
and the error edge, which maps each typed error to its status code (``STATUS_OF``): a client's mistake is never
UNKNOWN, a model's failure or a bug is INTERNAL with an error id that the log has with its traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from stevedore_server.base import tracing
from stevedore_server.base.errors import (
    ClientError,
    Forbidden,
    InferenceTimeout,
    ModelFailure,
    Overloaded,
    PayloadTooLarge,
    Unauthenticated,
)
from stevedore_server.base.logs import REQUEST_ID_HEADER, AccessLog, RequestIds, failure_answer, log_error, request_id
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings import Settings
from stevedore_server.core.deadlines import BOUND, Bound, Dropped, within
from stevedore_server.core.traffic import request_headers
from stevedore_server.frontends.grpc_health import HEALTH_SERVICE
from stevedore_server.frontends.payload_notes import grpc_exchange
from stevedore_server.frontends.v2.grpc_service import Method

from .auth import APIKeys

logger = logging.getLogger("stevedore.grpc")
#: What bounds a call with a deadline, as a 504's message names it.
GRPC_DEADLINE = "the gRPC deadline"
#: Seconds before its deadline (as the server has it) within which a call cancelled is taken as one whose
#: deadline passed: the client's own timer cancels it a moment before the server's would (it started counting
#: when the call was made, before it was sent).
DEADLINE_SLACK = 0.25
access_log = AccessLog(logging.getLogger("stevedore.access"))

#: Status codes of client errors, by their HTTP status; a full queue is RESOURCE_EXHAUSTED (by type, below).
STATUS_OF = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


#: The services never traced: health checks, called every few seconds, would flood the collector.
UNTRACED_SERVICES = frozenset({HEALTH_SERVICE})
#: The codes that mark a gRPC server span failed (OpenTelemetry's semantic conventions for RPC).
SERVER_FAILURES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def status_of(error: ClientError) -> grpc.StatusCode:
    if isinstance(error, Overloaded | PayloadTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, InferenceTimeout):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return STATUS_OF.get(error.status_code, grpc.StatusCode.INVALID_ARGUMENT)


class RequestContext:
    """What every call goes through (see the module): ids, API keys, access log, metrics, the error edge."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.keys = APIKeys.from_settings(settings)
        self.protect_health = settings.auth_health
        self.metrics = metrics
        self.access_log = settings.access_log
        self.ids = RequestIds()
        self.samples: dict[tuple[str, str], tuple[Any, Any]] = {}

    def unary(self, path: str, method: Method) -> grpc.RpcMethodHandler:
        handler = method.handler
        needs_key = self.needs_key(method)
        name = path.lstrip("/")
        service, _, rpc = name.partition("/")
        span_attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}

        async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = dict(context.invocation_metadata() or ())
            with (
                tracing.continued(tracing.carried(metadata.items())),
                tracing.span(name, span_attributes, kind="server", record_errors=False) as span,
            ):
                return await call(request, context, metadata, span)

        async def call(
            request: Any, context: grpc.aio.ServicerContext, metadata: dict[str, Any] | None = None, span: Any = None
        ) -> Any:
            if metadata is None:
                metadata = dict(context.invocation_metadata() or ())
            given = metadata.get(REQUEST_ID_HEADER)
            rid = self.ids.of(given if isinstance(given, str) else None)
            token = request_id.set(rid)
            bound_token = BOUND.set(call_bound(context))
            headers_token = request_headers.set(tuple(metadata.items()))  # a traffic name sticky by a header
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            trailers: tuple[tuple[str, str], ...] = ((REQUEST_ID_HEADER, rid),)
            if span is not None:  # the caller learns the trace its call is in
                trailers += tuple(tracing.carrier().items())
            try:
                if needs_key:
                    self.authorize(metadata, method.needs)
                response = await handler(request)
                context.set_trailing_metadata(trailers)
                return response
            except ClientError as error:
                code = status_of(error)
                if not needs_key and self.anonymous(metadata):  # a probe's caller without a key
                    error = error.to_anonymous()
                await context.abort(code, error.summary(), trailers)
            except ModelFailure as error:
                code = grpc.StatusCode.INTERNAL
                await context.abort(code, logged_internal(str(error), error.error), trailers)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the client went away, or its deadline passed
                raise
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                code = grpc.StatusCode.INTERNAL
                await context.abort(code, logged_internal("internal server error", error), trailers)
            finally:
                if span is not None:  # the codes of a server's failure are errors (OpenTelemetry's RPC conventions)
                    answer = {"rpc.grpc.status_code": code.value[0], "client.address": peer_host(context.peer())}
                    tracing.answered(span, rid, answer, code.name if code in SERVER_FAILURES else None)
                self.record(path, code, time.perf_counter() - started, rid, context)
                request_id.reset(token)
                BOUND.reset(bound_token)
                request_headers.reset(headers_token)

        return grpc.unary_unary_rpc_method_handler(
            traced if tracing.active() and service not in UNTRACED_SERVICES else call,
            request_deserializer=method.request_type.FromString,
            response_serializer=serialize,
        )

    def server_stream(self, method: Method) -> grpc.RpcMethodHandler:
        """A server-streaming RPC (health's Watch): its API key checked as a unary one's, no access log line."""
        handler = method.handler
        needs_key = self.needs_key(method)

        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if needs_key:
                try:
                    self.authorize(dict(context.invocation_metadata() or ()), method.needs)
                except (Unauthenticated, Forbidden) as error:
                    await context.abort(status_of(error), error.summary())
            try:
                # Closed however the call ends (a client gone, a deadline): the stream gives its place back at once.
                async with contextlib.aclosing(handler(request)) as messages:
                    async for message in messages:
                        yield message
            except ClientError as error:  # such as too many streams open (Overloaded)
                await context.abort(status_of(error), error.summary())

        return grpc.unary_stream_rpc_method_handler(
            call, request_deserializer=method.request_type.FromString, response_serializer=serialize
        )

    def needs_key(self, method: Method) -> bool:
        """With API keys on, every call needs one but the probes' (unless ``auth_health``)."""
        return self.keys is not None and (not method.open or self.protect_health)

    def anonymous(self, metadata: dict[str, Any]) -> bool:
        """API keys are on and the call carries no accepted key (it reached an open method: a probe)."""
        if self.keys is None:
            return False
        authorization = metadata.get("authorization")
        return self.keys.identify(authorization if isinstance(authorization, str) else None).anonymous

    def authorize(self, metadata: dict[str, Any], needs: str) -> None:
        """Unauthenticated without an accepted key, Forbidden for a key without the scope ``needs`` (an open
        method, probed under ``auth_health``, needs any key)."""
        if self.keys is None:
            return
        authorization = metadata.get("authorization")
        caller = self.keys.identify(authorization if isinstance(authorization, str) else None)
        if caller.anonymous:
            message = "a valid API key is required" if authorization else "an API key is required"
            raise Unauthenticated(f"{message}: send the metadata authorization: Bearer <key>")
        if not caller.can(needs):
            raise Forbidden(f"this API key does not hold the {needs} scope, which this call needs")

    def record(self, path: str, code: grpc.StatusCode, seconds: float, rid: str, context: Any) -> None:
        exchange = grpc_exchange()  # an inference the payload log records
        if exchange is not None:
            exchange.answered(path, "grpc", code.value[0], code is grpc.StatusCode.OK, seconds, rid)
        samples = self.samples.get((path, code.name))
        if samples is None:
            samples = (
                self.metrics.grpc_requests.labels(path, code.name),
                self.metrics.grpc_request_seconds.labels(path),
            )
            self.samples[(path, code.name)] = samples
        samples[0].inc()
        samples[1].observe(seconds, tracing.exemplar())
        if self.access_log:
            access_log.write(
                rid, (peer_host(context.peer()), "GRPC", path, code.value[0], seconds * 1000),
                {"status": code.value[0], "grpc_status": code.name, "duration_ms": round(seconds * 1000, 3),
                 "route": path},
            )  # fmt: skip


def call_bound(context: grpc.aio.ServicerContext) -> Bound:
    """A call's bound (``core.deadlines``): its deadline (``grpc-timeout``), if it has one. gRPC cancels the
    handler itself when the client cancels or the deadline passes: which of the two, ``cause`` tells."""
    bound = within(context.time_remaining(), GRPC_DEADLINE)

    def cause() -> Dropped:
        remaining = context.time_remaining()
        return Dropped.DEADLINE if remaining is not None and remaining <= DEADLINE_SLACK else Dropped.DISCONNECTED

    bound.cause = cause
    return bound


def logged_internal(message: str, error: BaseException) -> str:
    """Log ``error`` with its traceback under a new error id; the client's message, with the id."""
    return failure_answer(message, log_error(logger, message, error))["error"]


def serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def peer_host(peer: str) -> str:
    """The client's address from gRPC's peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``)."""
    kind, _, address = peer.partition(":")
    if kind == "ipv6":
        return address.rpartition(":")[0].strip("[]")
    if kind == "ipv4":
        return address.rpartition(":")[0]
    return peer
