"""The Open Inference Protocol's gRPC service on Ray Serve's gRPC proxy: the servicer function the proxy
registers (``add_inference_service``, named in ``serve.start``'s ``grpc_options``).

Serve's proxy takes only the paths of a service's methods from this function:
it replaces every handler with its own, which sends the request to the
application's ingress deployment, calling the ingress's method of the RPC's
name (``ModelInfer``...) with the request, and answers the bytes that method's
message serializes to. The handlers here deserialize nothing, so the proxy
forwards the request's bytes as they came (no protobuf in the proxy, one parse
in the ingress: ``grpc_ingress``).

Imported by the proxy's process: it imports gRPC and nothing of the server.
"""

from __future__ import annotations

from typing import Any

import grpc

#: The service's path on the wire (``frontends.v2.protocol.SERVICE``, which this module does not import).
SERVICE = "inference.GRPCInferenceService"
#: Its RPCs, as ``grpc_service.InferenceService.methods`` names them (a test checks they are the same).
RPCS = (
    "ModelInfer",
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelStatistics",
    "ModelConfig",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
)


#: The standard health service (``frontends.grpc_health``), whose ``Check`` Kubernetes' gRPC probes call; the
#: ingress's method of that name answers it (the streaming ``Watch`` is ``run``'s only).
HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_CHECK = "Check"


def add_inference_service(servicer: Any, server: Any) -> None:
    """Serve's ``grpc_servicer_functions`` entry: the service's methods, and health's ``Check``, on ``server``
    (the proxy's, which routes each to the ingress's method of its name; ``servicer`` is Serve's stand-in)."""
    for service, names in ((SERVICE, RPCS), (HEALTH_SERVICE, (HEALTH_CHECK,))):
        handlers = {name: grpc.unary_unary_rpc_method_handler(forwarded) for name in names}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


async def forwarded(request: bytes, context: Any) -> bytes:
    """Never called: Serve's proxy puts its own handler in its place."""
    raise NotImplementedError("the Ray Serve gRPC proxy forwards this call to the ingress")
