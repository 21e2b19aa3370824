"""The gRPC server of ``stevedore-server run``: the Open Inference Protocol, standard health and reflection.

    front = GrpcServer(settings, state)   # state: the app's ``AppState``
    await front.start()                   # after the models are loaded, in each serving process
    ...
    await front.stop(grace)               # on SIGTERM, after the shutdown delay

It runs on the event loop of the HTTP server, in the same process, over the
same models: one more front end of the inference core. Every call passes
``RequestContext.call``, the gRPC counterpart of the HTTP middleware: request
id (``x-request-id`` metadata, echoed in the trailers), API key
(``authorization: Bearer KEY`` metadata), access log line, Prometheus
metrics, and the error edge, which maps each typed error to its status code
(``STATUS_OF``): a client's mistake is never UNKNOWN, a model's failure or a
bug is INTERNAL with an error id that the log has with its traceback.

With ``--workers N`` every worker listens on the one port (``SO_REUSEPORT``:
the kernel spreads the connections); ``process.preflight`` checks first that
nothing else holds it. On SIGTERM the health service answers NOT_SERVING at
once (the lifecycle drains); after the shutdown delay the server refuses new
calls (UNAVAILABLE, which clients retry) and gives the calls in flight the
graceful time-out to finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from stevedore_server.base.errors import (
    ClientError,
    InferenceTimeout,
    ModelFailure,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    StartupError,
    Unauthenticated,
)
from stevedore_server.base.health import readiness_problems
from stevedore_server.base.lifecycle import Lifecycle
from stevedore_server.base.logs import REQUEST_ID_HEADER, AccessLog, RequestIds, failure_answer, log_error, request_id
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings import Settings
from stevedore_server.core.server import ModelServer
from stevedore_server.frontends.v2.grpc_service import InferenceService, Method
from stevedore_server.frontends.v2.protocol import SERVICE

from .auth import APIKeys
from .state import AppState
from .v2 import protocol

logger = logging.getLogger("stevedore.grpc")
access_log = AccessLog(logging.getLogger("stevedore.access"))

HEALTH_SERVICE = "grpc.health.v1.Health"
#: Seconds between a health Watch's looks at the status it reports.
WATCH_INTERVAL = 0.5
#: Status codes of client errors, by their HTTP status; a full queue is RESOURCE_EXHAUSTED (by type, below).
STATUS_OF = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: int = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


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

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = dict(context.invocation_metadata() or ())
            given = metadata.get(REQUEST_ID_HEADER)
            rid = self.ids.of(given if isinstance(given, str) else None)
            token = request_id.set(rid)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            trailers = ((REQUEST_ID_HEADER, rid),)
            try:
                if needs_key:
                    self.authenticate(metadata)
                response = await handler(request)
                context.set_trailing_metadata(trailers)
                return response
            except ClientError as error:
                code = status_of(error)
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
                self.record(path, code, time.perf_counter() - started, rid, context)
                request_id.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=method.request_type.FromString, response_serializer=serialize
        )

    def server_stream(self, method: Method) -> grpc.RpcMethodHandler:
        """A server-streaming RPC (health's Watch): its API key checked as a unary one's, no access log line."""
        handler = method.handler
        needs_key = self.needs_key(method)

        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if needs_key:
                try:
                    self.authenticate(dict(context.invocation_metadata() or ()))
                except Unauthenticated as error:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, error.summary())
            async for message in handler(request):
                yield message

        return grpc.unary_stream_rpc_method_handler(
            call, request_deserializer=method.request_type.FromString, response_serializer=serialize
        )

    def needs_key(self, method: Method) -> bool:
        """With API keys on, every call needs one but the probes' (unless ``auth_health``)."""
        return self.keys is not None and (not method.open or self.protect_health)

    def authenticate(self, metadata: dict[str, Any]) -> None:
        if self.keys is None:
            return
        authorization = metadata.get("authorization")
        if not self.keys.accepts(authorization if isinstance(authorization, str) else None):
            message = "a valid API key is required" if authorization else "an API key is required"
            raise Unauthenticated(f"{message}: send the metadata authorization: Bearer <key>")

    def record(self, path: str, code: grpc.StatusCode, seconds: float, rid: str, context: Any) -> None:
        samples = self.samples.get((path, code.name))
        if samples is None:
            samples = (
                self.metrics.grpc_requests.labels(path, code.name),
                self.metrics.grpc_request_seconds.labels(path),
            )
            self.samples[(path, code.name)] = samples
        samples[0].inc()
        samples[1].observe(seconds)
        if self.access_log:
            access_log.write(
                rid, (peer_host(context.peer()), "GRPC", path, code.value[0], seconds * 1000),
                {"status": code.value[0], "grpc_status": code.name, "duration_ms": round(seconds * 1000, 3),
                 "route": path},
            )  # fmt: skip


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


class HealthService:
    """``grpc.health.v1.Health``: service ``""`` (or the protocol's service name) is the server's readiness, as
    ``/readyz``; a model's name is that model's. NOT_SERVING for all from the start of a drain."""

    def __init__(self, service: InferenceService) -> None:
        self.server = service.server
        self.lifecycle = service.lifecycle
        self.check_threads = service.check_threads

    async def status(self, name: str) -> int:
        if name in ("", SERVICE):
            problems = await readiness_problems(self.server.registry.health_checks, self.lifecycle, self.check_threads)
            return NOT_SERVING if problems else SERVING
        if name not in self.server.registry.names():
            return SERVICE_UNKNOWN
        if self.lifecycle.draining:
            return NOT_SERVING
        return SERVING if self.server.registry.get(name).ready else NOT_SERVING

    async def check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:
        status = await self.status(request.service)
        if status == SERVICE_UNKNOWN:
            raise NotFound(f"no service or model named {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def watch(self, request: health_pb2.HealthCheckRequest) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The status now, then each change; the stream ends once the server drains, after NOT_SERVING."""
        last = None
        while True:
            # Read before the status, which awaits the health checks: a drain that starts meanwhile is seen at the
            # next turn, whose status is NOT_SERVING. Read after, the stream could end on the SERVING it had sent.
            draining = self.lifecycle.draining
            status = await self.status(request.service)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            if draining:
                return
            await asyncio.sleep(WATCH_INTERVAL)


class GrpcServer:
    """The gRPC server of one serving process (see the module)."""

    def __init__(self, settings: Settings, state: AppState) -> None:
        self.settings = settings
        self.server: ModelServer = state.server
        self.lifecycle: Lifecycle = state.lifecycle
        self.service = InferenceService(self.server, state.repository, self.lifecycle, state.check_threads)
        self.grpc: grpc.aio.Server | None = None
        self.stopping: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        host = self.settings.host
        return f"[{host}]:{self.settings.grpc_port}" if ":" in host else f"{host}:{self.settings.grpc_port}"

    async def start(self) -> None:
        """Listen and serve; StartupError if the port cannot be had."""
        settings = self.settings
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_size),
                ("grpc.max_send_message_length", -1),
                # Workers share the port; one process alone must not share it with anyone.
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            ]
        )
        server.add_generic_rpc_handlers(self.handlers(RequestContext(settings, self.server.metrics)))
        services = (SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(services, server, pool=reflection_pool())
        self.listen(server)
        await server.start()
        self.grpc = server
        logger.info("gRPC (Open Inference Protocol, health, reflection) on %s", self.address)

    def handlers(self, context: RequestContext) -> tuple[grpc.GenericRpcHandler, ...]:
        """The protocol's service and the health service, each call through ``context``."""
        inference = {
            name: context.unary(f"/{SERVICE}/{name}", method) for name, method in self.service.methods().items()
        }
        health = HealthService(self.service)
        check = Method(health.check, health_pb2.HealthCheckRequest, open=True)
        watch = Method(health.watch, health_pb2.HealthCheckRequest, open=True)
        health_methods = {
            "Check": context.unary(f"/{HEALTH_SERVICE}/Check", check),
            "Watch": context.server_stream(watch),
        }
        return (
            grpc.method_handlers_generic_handler(SERVICE, inference),
            grpc.method_handlers_generic_handler(HEALTH_SERVICE, health_methods),
        )

    def listen(self, server: grpc.aio.Server) -> None:
        try:
            port = server.add_insecure_port(self.address)
        except RuntimeError as error:
            port, reason = 0, str(error)
        else:
            reason = "the address is taken or cannot be had"
        if not port:
            raise StartupError(f"gRPC cannot listen on {self.address}: {reason} (--grpc-port 0 turns gRPC off)")

    def stop(self, grace: float) -> asyncio.Task[None]:
        """Refuse new calls and give those in flight ``grace`` seconds; the task ends when all have."""
        if self.stopping is None:
            self.stopping = asyncio.create_task(self._stop(grace))
        return self.stopping

    async def _stop(self, grace: float) -> None:
        if self.grpc is not None:
            await self.grpc.stop(grace)
            logger.info("gRPC stopped")


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """What reflection describes: the protocol's pool, with the health and reflection services added."""
    pool = protocol.load_pool()
    for module in (health_pb2, reflection_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return pool
