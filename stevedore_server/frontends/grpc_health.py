"""The standard gRPC health service (``grpc.health.v1.Health``): SERVING while every model is ready and
the server is not draining; ``Watch`` streams every change, and ends on NOT_SERVING when the drain starts.

Both read the health checks' cache (``HealthChecks``), as every probe does: a hundred watchers cost no more check
runs than one. The service answers statuses only, never why, so it is open without a key (as the REST probes);
the ``max_health_watches`` setting caps the streams open at once (each holds a call), RESOURCE_EXHAUSTED beyond."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc_health.v1 import health_pb2

from stevedore_server.base.errors import NotFound, Overloaded
from stevedore_server.frontends.v2.grpc_service import InferenceService
from stevedore_server.frontends.v2.protocol import SERVICE

SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: int = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

HEALTH_SERVICE = "grpc.health.v1.Health"
#: Seconds between a health Watch's looks at the status it reports.
WATCH_INTERVAL = 0.5


class HealthService:
    """``grpc.health.v1.Health``: service ``""`` (or the protocol's service name) is the server's readiness, as
    ``/readyz``; a model's name is that model's. NOT_SERVING for all from the start of a drain."""

    def __init__(self, service: InferenceService) -> None:
        self.server = service.server
        self.lifecycle = service.lifecycle
        self.health = service.health
        self.max_watches = service.server.settings.max_health_watches
        #: Watch streams open now, in this process.
        self.watching = 0

    async def status(self, name: str) -> int:
        if name in ("", SERVICE):
            return NOT_SERVING if await self.health.problems() else SERVING
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
        """The status now, then each change; the stream ends once the server drains, after NOT_SERVING.
        Overloaded (RESOURCE_EXHAUSTED) when ``max_watches`` streams are open already."""
        if self.watching >= self.max_watches:
            raise Overloaded(f"{self.max_watches} health watches are open already (max_health_watches): try Check")
        self.watching += 1
        try:
            last = None
            while True:
                # Read before the status, which awaits the health checks: a drain that starts meanwhile is seen at
                # the next turn, whose status is NOT_SERVING. Read after, the stream could end on the SERVING it
                # had sent.
                draining = self.lifecycle.draining
                status = await self.status(request.service)
                if status != last:
                    yield health_pb2.HealthCheckResponse(status=status)
                    last = status
                if draining:
                    return
                await asyncio.sleep(WATCH_INTERVAL)
        finally:
            self.watching -= 1
