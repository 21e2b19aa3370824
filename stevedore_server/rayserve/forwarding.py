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

import asyncio
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

import anyio
from anyio import to_thread
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stevedore_server.base import tracing
from stevedore_server.base.errors import (
    BadRequest,
    InferenceTimeout,
    NotReady,
    Overloaded,
    ReportedFailure,
    UnknownModel,
)
from stevedore_server.base.logs import REQUEST_ID_HEADER
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings import Settings
from stevedore_server.base.sources import PluginSource
from stevedore_server.core import serving, startup
from stevedore_server.core.convergence import SharedState
from stevedore_server.core.repository import entry, not_provided
from stevedore_server.core.served_models import TRAINED_BY_JOB
from stevedore_server.core.server import ModelServer
from stevedore_server.core.serving import ServingModel
from stevedore_server.core.statistics import ModelStatistics
from stevedore_server.plugins.discovery import Candidate
from stevedore_server.plugins.hooks import Hooks
from stevedore_server.plugins.loading import LoadedModel, State, compile_schemas, not_loaded

from . import jobs, live
from .config import deployment_name
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
    runs an ingress's lifespan but, unlike uvicorn, does not hand that state to requests. ``shared`` gets that
    state too: for the ingress's gRPC methods, which are no ASGI requests (``grpc_ingress``)."""

    def __init__(self, app: ASGIApp, shared: dict[str, Any] | None = None) -> None:
        self.app = app
        self.state: dict[str, Any] | None = None
        self.shared = shared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            if self.shared is not None:  # the lifespan fills this one (Starlette updates the scope's state)
                scope = {**scope, "state": self.shared}
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
    """The model repository of the ingress: the index as in one process; a model is loaded by deploying its
    deployment (``live``: an application of its own, where the application has none of it) and unloaded by no
    longer serving it (and removing that deployment where the load made it)."""

    shared: SharedState | None = None
    #: A version a training made is served by a deployment of its own (``jobs.deploy_trained``).
    serves_trained = True

    def __init__(
        self, server: ModelServer, handles: dict[str, DeploymentHandle] | None = None, model_args: Any = None
    ) -> None:
        self.server = server
        #: Each deployment's handle, by ``deployment_name``: the application's, then those loads add.
        self.handles = {} if handles is None else handles
        self.model_args = model_args
        #: The deployments the loads added (``live``), which unloads remove.
        self.added: set[str] = set()
        self.lock = asyncio.Lock()

    async def serve_trained(self, predictor: Any, base: ServingModel, job_id: str) -> None:
        """Serve the new version a training made: its deployment deployed (its replicas load it from the
        artifact they are given), then described from its replica's report. BadRequest if it fails to load."""
        key = deployment_name(predictor.name, predictor.version)
        async with self.lock:
            handle = await jobs.deploy_trained(self.server.settings, self.model_args, predictor, base.version)
            self.handles[key] = handle
            self.added.add(key)
            report: LoadReport = await handle.report.remote()
            loaded = record(predictor, base.source, report)
            if not loaded.ready:
                await self.remove(key)
                raise BadRequest(f"the new version {predictor.version} failed: {loaded.reason}")
            described = serving.describe(loaded, {**base.metadata, TRAINED_BY_JOB: job_id})
            start = runtime_starter(self.handles, deployment_name)
            self.swap(await start(described, self.server.settings, self.server.metrics))
        logger.info("model %s version %s, trained by job %s, served", predictor.name, predictor.version, job_id)

    async def unserve_trained(self, name: str, version: str) -> None:
        """Stop serving a trained version: dropped here, its deployment removed."""
        async with self.lock:
            if self.server.registry.remove_trained(name, version) is None:
                return
            self.server.metrics.describe_model(name, version, False, None)
            await self.remove(deployment_name(name, version))
        logger.info("model %s version %s, trained, no longer served", name, version)

    async def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        entries = [entry(model) for model in self.server.registry.models]
        return [e for e in entries if e["state"] == "READY"] if ready_only else entries

    async def load(self, name: str) -> None:
        """Serve every installed version of ``name``: its deployment deployed if it has none (an application of
        its own), then described from its replica's report as at startup. A version that fails to load is a
        BadRequest with why (its added deployment removed); the versions loaded before it stay."""
        async with self.lock:
            candidates, hooks = await to_thread.run_sync(self.candidates, name)
            for candidate in candidates:
                await self.load_version(candidate, hooks)
            logger.info("model %s loaded: versions %s", name, ", ".join(c.predictor.version for c in candidates))

    async def load_version(self, candidate: Candidate, hooks: Hooks) -> None:
        predictor = candidate.predictor
        key = deployment_name(predictor.name, predictor.version)
        handle = self.handles.get(key)
        if handle is None:
            handle = await live.deploy(self.server.settings, self.model_args, predictor)
            self.handles[key] = handle
            self.added.add(key)
        report: LoadReport = await handle.report.remote()
        loaded = record(predictor, candidate.source, report)
        if not loaded.ready:
            await self.remove(key)
            raise BadRequest(f"model {predictor.name!r} version {predictor.version!r} failed to load: {loaded.reason}")
        metadata, _ = hooks.catalogue_metadata(predictor, self.server)
        start = runtime_starter(self.handles, deployment_name)
        self.swap(await start(serving.describe(loaded, metadata), self.server.settings, self.server.metrics))

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name``: a not-loaded record in its place, and the deployment a load
        added removed. A deployment of the application itself stays (Serve cannot take it out of a running
        application) and serves again at the next load."""
        async with self.lock:
            served = self.server.registry.versions_of(name)
            if not served:
                raise UnknownModel.named(name, self.server.registry.names())
            for model in served:
                if model.state is not State.UNLOADED:
                    self.swap(serving.describe(not_loaded(model.predictor, model.source), model.metadata))
                await self.remove(deployment_name(model.name, model.version))
            logger.info("model %s unloaded", name)

    def candidates(self, name: str) -> tuple[list[Candidate], Hooks]:
        """The installed versions of ``name`` (blocking); UnknownModel, or BadRequest when its plugin failed."""
        found, failures, hooks = startup.find(self.server.settings)
        mine = [candidate for candidate in found if candidate.predictor.name == name]
        if not mine:
            raise not_provided(name, {candidate.predictor.name for candidate in found}, failures)
        return mine, hooks

    async def remove(self, key: str) -> None:
        """Remove the deployment ``key`` if a load added it."""
        if key in self.added:
            self.added.discard(key)
            self.handles.pop(key, None)
            await live.remove(key)

    def swap(self, model: ServingModel) -> None:
        self.server.registry.replace(model)
        source = model.source
        plugin = None
        if source.distribution and source.distribution_version:
            plugin = (source.distribution, source.distribution_version)
        self.server.metrics.describe_model(model.name, model.version, model.ready, plugin)
