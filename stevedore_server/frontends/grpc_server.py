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
Reflection (``Reflection``) asks for a key as the other RPCs do, unless
``--open-reflection``: the service list tells an attacker what to try.

With ``--workers N`` every worker listens on the one port (``SO_REUSEPORT``:
the kernel spreads the connections); ``process.preflight`` checks first that
nothing else holds it. On SIGTERM the health service answers NOT_SERVING at
once (the lifecycle drains); after the shutdown delay the server refuses new
calls (UNAVAILABLE, which clients retry) and gives the calls in flight the
graceful time-out to finish."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from stevedore_server.base.errors import Forbidden, StartupError, Unauthenticated
from stevedore_server.base.lifecycle import Lifecycle
from stevedore_server.base.settings import Settings
from stevedore_server.core.server import ModelServer
from stevedore_server.frontends.v2.grpc_service import InferenceService, Method
from stevedore_server.frontends.v2.protocol import SERVICE

from .auth import INFER
from .grpc_context import RequestContext, status_of
from .grpc_health import HEALTH_SERVICE, HealthService
from .state import AppState
from .v2 import protocol

logger = logging.getLogger("stevedore.grpc")


class GrpcServer:
    """The gRPC server of one serving process (see the module)."""

    def __init__(self, settings: Settings, state: AppState) -> None:
        self.settings = settings
        self.server: ModelServer = state.server
        self.lifecycle: Lifecycle = state.lifecycle
        self.service = InferenceService(self.server, state.repository, self.lifecycle, state.health)
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
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,  # beyond it, RESOURCE_EXHAUSTED at once
        )
        context = RequestContext(settings, self.server.metrics)
        server.add_generic_rpc_handlers(self.handlers(context))
        gate = None if settings.open_reflection else context
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(Reflection(gate, reflection_pool()), server)
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


class Reflection(reflection.aio.ReflectionServicer):  # type: ignore[misc]  # grpc_reflection has no hints
    """Server reflection (it lists and describes the services) with the API key check of the other RPCs, made by
    ``gate``; None: open to anyone (keys off, or the ``open_reflection`` setting)."""

    def __init__(self, gate: RequestContext | None, pool: descriptor_pool.DescriptorPool) -> None:
        super().__init__((SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), pool=pool)
        self.gate = gate

    async def ServerReflectionInfo(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        if self.gate is not None:
            try:
                self.gate.authorize(dict(context.invocation_metadata() or ()), INFER)
            except (Unauthenticated, Forbidden) as error:
                await context.abort(status_of(error), error.summary())
        async for answer in super().ServerReflectionInfo(requests, context):
            yield answer


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """What reflection describes: the protocol's pool, with the health and reflection services added."""
    pool = protocol.load_pool()
    for module in (health_pb2, reflection_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return pool
