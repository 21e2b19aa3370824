"""The ingress's side of the model deployments: a runtime that forwards each call to the model's deployment,
the ``X-Served-By`` header that says which replica answered, and the repository as Serve has it.

A call's payload has been checked against the model's schema here, in the
ingress; the replica runs it (``replica.ModelReplica.call``) and replies with
the result or the error, which is raised here as it would be in one process.
Ray's own failures become the client errors a caller can act on: a replica
that died or cannot be reached is 503 (Serve retries elsewhere and replaces
it), a deployment whose queue is full is 503 with Retry-After, a reply that
does not come is 504.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

import anyio
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stevedore_server.base import tracing
from stevedore_server.base.errors import BadRequest, InferenceTimeout, NotReady, Overloaded, ReportedFailure
from stevedore_server.base.logs import REQUEST_ID_HEADER
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings import Settings
from stevedore_server.base.sources import PluginSource
from stevedore_server.core.convergence import SharedState
from stevedore_server.core.repository import entry
from stevedore_server.core.server import ModelServer
from stevedore_server.core.serving import ServingModel
from stevedore_server.core.statistics import ModelStatistics
from stevedore_server.plugins.loading import LoadedModel, State, compile_schemas, not_loaded

from .replica import OUTPUTS, LoadReport, Reply

logger = logging.getLogger("stevedore.rayserve")

HEADER = "X-Served-By"
#: Seconds the ingress waits for a reply beyond the model's time-out, which the replica enforces.
REPLY_MARGIN = 5.0

#: Who answers the current request: the ingress replica, until a model's replica does.
answered_by: ContextVar[list[str] | None] = ContextVar("answered_by", default=None)


class ServedBy:
    """ASGI middleware, outermost: every answer carries ``X-Served-By: <node id>/<replica id>`` of the replica
    that ran the model, or of the ingress replica where no model ran."""

    def __init__(self, app: ASGIApp, ingress: str) -> None:
        self.app = app
        self.ingress = ingress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        holder = [self.ingress]
        token = answered_by.set(holder)

        async def send_stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.append(HEADER, holder[0])
                del headers[REQUEST_ID_HEADER]  # Serve's proxy adds it (the same id: ours is the one it sent)
            await send(message)

        try:
            await self.app(scope, receive, send_stamped)
        finally:
            answered_by.reset(token)


class LifespanState:
    """ASGI middleware, outermost: requests see the state the lifespan set (the server, the repository). Serve
    runs an ingress's lifespan but, unlike uvicorn, does not hand that state to requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self.state = scope.get("state")
        elif self.state is not None:
            scope["state"] = self.state | scope.get("state", {})
        await self.app(scope, receive, send)


class DeploymentRuntime:
    """A model's runtime in the ingress: each call runs on a replica of the model's deployment, in the call's
    trace context (the replica's spans children of the ingress's ``forward`` span)."""

    def __init__(
        self,
        handle: DeploymentHandle,
        label: str,
        timeout: float,
        chooses_outputs: bool = False,
        attributes: dict[str, str] | None = None,
    ) -> None:
        self.handle = handle
        self.label = label
        self.timeout = timeout + REPLY_MARGIN
        self.chooses_outputs = chooses_outputs
        #: The ``forward`` span's: the model and its deployment.
        self.attributes = attributes or {}
        #: The ingress's view of its calls (each replica's runtime counts its own).
        self.statistics = ModelStatistics()

    @property
    def idle(self) -> bool:
        return True  # the replicas hold the calls

    async def call_outputs(self, payload: Any, rows: int | None, names: tuple[str, ...]) -> Any:
        return await self.call(OUTPUTS, (payload, names), rows)

    async def call(self, action: str, payload: Any, rows: int | None) -> Any:
        with tracing.span("forward", self.attributes, kind="client"):
            return await self._forward(action, payload, rows)

    async def _forward(self, action: str, payload: Any, rows: int | None) -> Any:
        response = self.handle.call.remote(action, payload, rows, tracing.carrier())
        try:
            with anyio.fail_after(self.timeout):
                reply: Reply = await response
        except TimeoutError:
            response.cancel()
            raise InferenceTimeout(f"{self.label}: no reply from its replica within {self.timeout:g} s") from None
        except BackPressureError:
            raise Overloaded(f"{self.label}: every replica is busy and the deployment's queue is full") from None
        except (RayActorError, ActorUnavailableError, DeploymentUnavailableError) as error:
            raise NotReady(f"{self.label}: its replica is unavailable ({type(error).__name__}); retry") from None
        holder = answered_by.get()
        if holder is not None:
            holder[0] = reply.served_by
        if reply.error is not None:
            raise reply.error
        if reply.failure is not None:
            raise ReportedFailure(*reply.failure)
        return reply.result

    def close(self, unload_aside: bool = False) -> None:
        pass


def record(predictor: Any, source: PluginSource, report: LoadReport | None) -> LoadedModel:
    """A model's record in the ingress: its schemas compiled here, what its replica found in loading it.
    Without a report (no deployment: ``load_models`` left it out), the record of a model not loaded."""
    if report is None:
        return not_loaded(predictor, source)
    try:
        schemas = vars(compile_schemas(predictor))
    except Exception as error:  # the replica failed on them too, and its report says why
        logger.debug("model %s version %s: its schemas do not compile: %s", predictor.name, predictor.version, error)
        schemas = {}
    return LoadedModel(
        predictor, source, State(report.state), report.reason, report.created, **schemas,
        fixture_output=report.fixture_output, row_aligned=report.row_aligned,
    )  # fmt: skip


def runtime_starter(handles: dict[str, DeploymentHandle], key: Callable[[str, str], str]) -> Any:
    """``startup.start_models``' ``start``: each ready model's runtime is its deployment's."""

    async def start(model: ServingModel, settings: Settings, metrics: Metrics | None) -> ServingModel:
        deployment = key(model.name, model.version)
        handle = handles.get(deployment)
        if not model.ready or handle is None:
            return model
        label = f"model {model.name!r} version {model.version!r}"
        timeout = settings.limits_for(model.predictor).timeout
        attributes = {"stevedore.model.name": model.name, "stevedore.model.version": model.version,
                      "stevedore.ray.deployment": deployment}  # fmt: skip
        runtime = DeploymentRuntime(handle, label, timeout, model.predictor.has_predict_outputs, attributes)
        # The catalogue's ``runs_in``: the model's replicas, not this ingress's threads.
        metadata = {**model.metadata, "runs_in": {"kind": "ray", "deployment": deployment}}
        return replace(model, runtime=runtime, metadata=metadata)

    return start


class DeploymentRepository:
    """The model repository of the ingress: the index as in one process; a model is loaded by deploying it."""

    shared: SharedState | None = None
    #: The replicas hold the models: a version a training made in the ingress is not served (yet).
    serves_trained = False

    def __init__(self, server: ModelServer) -> None:
        self.server = server

    async def serve_trained(self, predictor: Any, base: ServingModel, job_id: str) -> None:
        raise BadRequest(f"on Ray Serve, the new version {predictor.version} of {base.name!r} is not served")

    async def unserve_trained(self, name: str, version: str) -> None:
        """Nothing to drop: no trained version is served here."""

    async def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        entries = [entry(model) for model in self.server.registry.models]
        return [e for e in entries if e["state"] == "READY"] if ready_only else entries

    async def load(self, name: str) -> None:
        raise BadRequest(self.refusal(name))

    async def unload(self, name: str) -> None:
        raise BadRequest(self.refusal(name))

    @staticmethod
    def refusal(name: str) -> str:
        return (
            f"on Ray Serve, model {name!r} is loaded or unloaded by deploying the application again "
            "(`load_models` in its settings, or the Serve config's deployments)"
        )
