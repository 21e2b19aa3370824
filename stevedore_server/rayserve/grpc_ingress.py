"""The ingress's side of gRPC on Ray Serve: each RPC that Serve's gRPC proxy forwards (``grpc_proxy``) is a
method of the ingress of the RPC's name, answered as ``stevedore-server run``'s gRPC server answers it.

The request comes as its bytes and Serve's serializable stand-in of the call's
context (``RayServegRPCContext``: the metadata, the peer, the status and
trailers to set). Each call goes through the same ``RequestContext`` as a call
to ``run``'s gRPC server (request id, API key, access line, metrics, the error
edge: status codes and details) and the same ``InferenceService``, over the
ingress's app state (the models in their deployments). A call that ends in an
error sets its status on the context and answers an empty message, which the
proxy does not send: the client gets the status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from stevedore_server.base.settings import Settings
from stevedore_server.frontends.grpc_context import RequestContext
from stevedore_server.frontends.grpc_health import HealthService
from stevedore_server.frontends.state import AppState, of_lifespan
from stevedore_server.frontends.v2 import protocol as pb
from stevedore_server.frontends.v2.grpc_service import InferenceService, Method

from .grpc_proxy import HEALTH_CHECK, HEALTH_SERVICE, RPCS

#: What an RPC that failed answers: its status is on the context, and gRPC sends no message with it.
NO_MESSAGE = pb.ServerLiveResponse()


class ProxiedContext:
    """What ``RequestContext`` uses of a ``grpc.aio.ServicerContext``, over Serve's stand-in, which the proxy
    applies to the call once the ingress has answered."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def invocation_metadata(self) -> Any:
        return self.context.invocation_metadata()

    def peer(self) -> str:
        peer: str = self.context.peer()
        return peer

    def time_remaining(self) -> float | None:
        """None: the client's deadline stays with the proxy's call (Serve's stand-in has none); when it passes, or
        the client cancels, the proxy cancels its call to the ingress, which cancels this one."""
        return None

    def set_trailing_metadata(self, trailers: Any) -> None:
        self.context.set_trailing_metadata(list(trailers))

    async def abort(self, code: grpc.StatusCode, details: str, trailers: Any = ()) -> None:
        """As grpc.aio's: the status set, and AbortError raised to end the call."""
        self.failed(code, details)
        self.set_trailing_metadata(trailers)
        raise grpc.aio.AbortError()

    def failed(self, code: grpc.StatusCode, details: str) -> None:
        self.context.set_code(code)
        self.context.set_details(details)


#: A method answering one RPC: the request's bytes and Serve's context to the response message.
Answer = Callable[[bytes, Any], Awaitable[Any]]


class GrpcIngress:
    """The ingress's RPC methods (a base of ``ingress.Ingress``): one per RPC of the service (``RPCS``) and
    health's ``Check``.

    ``lifespan`` is the state the app's lifespan made (``forwarding.LifespanState`` fills it)."""

    settings: Settings
    lifespan: dict[str, Any]
    _answers: dict[str, Any] | None = None

    async def answer_rpc(self, rpc: str, request: bytes, grpc_context: Any) -> Any:
        context = ProxiedContext(grpc_context)
        handler = self.rpc_handlers().get(rpc) if of_lifespan(self.lifespan) else None
        if handler is None:  # Serve routes to a replica once its lifespan has started: a safeguard
            context.failed(grpc.StatusCode.UNAVAILABLE, "the server is starting")
            return NO_MESSAGE
        too_large = oversized(request, self.settings.max_body_size)
        if too_large:  # Serve's proxy takes messages up to 2 GiB; ``run``'s server refuses more than the setting
            context.failed(grpc.StatusCode.RESOURCE_EXHAUSTED, too_large)
            return NO_MESSAGE
        try:
            message = handler.request_deserializer(request)
        except DecodeError:
            context.failed(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {rpc} request message")
            return NO_MESSAGE
        try:
            return await handler.unary_unary(message, context)
        except grpc.aio.AbortError:  # the status is on the context
            return NO_MESSAGE

    def rpc_handlers(self) -> Mapping[str, grpc.RpcMethodHandler]:
        """Each RPC's handler, as ``run``'s gRPC server has it, made at the first call."""
        if self._answers is None:
            state = of_lifespan(self.lifespan)
            if state is None:
                return {}
            self._answers = handlers(self.settings, state)
        return self._answers


def oversized(request: bytes, limit: int) -> str | None:
    """Why ``request`` is refused, when it is larger than ``limit`` (the ``max_body_size`` setting)."""
    if len(request) <= limit:
        return None
    return f"the request message of {len(request)} bytes exceeds the limit of {limit} bytes (max_body_size)"


def handlers(settings: Settings, state: AppState) -> dict[str, grpc.RpcMethodHandler]:
    """The service's RPCs and health's ``Check``, as ``GrpcServer.handlers`` makes them."""
    service = InferenceService(state.server, state.repository, state.lifecycle, state.health)
    context = RequestContext(settings, state.server.metrics)
    answers = {name: context.unary(f"/{pb.SERVICE}/{name}", method) for name, method in service.methods().items()}
    check = Method(HealthService(service).check, health_pb2.HealthCheckRequest, open=True)
    answers[HEALTH_CHECK] = context.unary(f"/{HEALTH_SERVICE}/{HEALTH_CHECK}", check)
    return answers


def rpc_method(rpc: str) -> Answer:
    """The ingress's method of ``rpc``: Serve calls it by the RPC's name, with ``grpc_context`` by keyword."""

    async def method(self: GrpcIngress, request: bytes, grpc_context: Any = None) -> Any:
        return await self.answer_rpc(rpc, request, grpc_context)

    method.__name__ = method.__qualname__ = rpc
    return method  # type: ignore[return-value]  # bound as a method of GrpcIngress


for _rpc in (*RPCS, HEALTH_CHECK):
    setattr(GrpcIngress, _rpc, rpc_method(_rpc))
