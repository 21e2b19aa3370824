"""The ingress deployment: the HTTP API of ``stevedore-server run`` (the same app and routes), with the
models in their deployments.

At startup it discovers the installed plugins as a server does (a plugin that
fails is reported in ``/healthz``), asks each model's deployment what loading
found, and builds its registry from that: schemas, fixtures, tensors and
catalogue are the plugin's own, the catalogue and health hooks run here as in
one process, and each ready model's runtime is its deployment
(``forwarding.DeploymentRuntime``). The pipelines run here too, over the same registry: each step a call
through its model's deployment handle.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from stevedore_server.base import tracing
from stevedore_server.base.exposure import warn_if_open
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings import Settings
from stevedore_server.core import startup
from stevedore_server.core.server import ModelServer
from stevedore_server.frontends.app import ServingProcess, create_app
from stevedore_server.plugins.discovery import plugin_pipelines

from .config import SECRETS_FILE, deployment_name, settings_from_args
from .forwarding import DeploymentRepository, LifespanState, ServedBy, runtime_starter
from .grpc_ingress import GrpcIngress
from .jobs import launcher
from .metrics_export import say_where
from .multiplexed import lazy_record, serve_lazily
from .replica import LoadReport, configure_logging, served_by


def deployed_models(handles: dict[str, DeploymentHandle], model_args: dict[str, Any]) -> Any:
    """``app.create_app``'s ``models``: the server of the deployed models, and their repository, which deploys
    the models it loads with ``model_args`` (the model replicas' arguments)."""

    @asynccontextmanager
    async def serve_models(settings: Settings, metrics: Metrics) -> AsyncIterator[tuple[ModelServer, Any]]:
        candidates, failures, hooks = await to_thread.run_sync(startup.find, settings)
        keys = [deployment_name(c.predictor.name, c.predictor.version) for c in candidates]
        reports: list[LoadReport | None] = await asyncio.gather(
            *(handles[key].report.remote() if key in handles else none() for key in keys)
        )
        models = tuple(lazy_record(settings, c, report) for c, report in zip(candidates, reports, strict=True))
        shipped, pipeline_failures = await to_thread.run_sync(plugin_pipelines, settings.selection)
        loaded = startup.Loaded(models, (*failures, *pipeline_failures), hooks, shipped)
        server = await to_thread.run_sync(startup.build_server, settings, loaded, metrics)
        say_where(server.metrics.registry)
        serve_lazily(server, handles)
        await startup.start_models(server, runtime_starter(handles, deployment_name))
        # The pipelines run here, each step through ``server.inference``: a deployment's handle (``forwarding``).
        await startup.check_pipelines(server)
        yield server, DeploymentRepository(server, handles, model_args)

    return serve_models


async def none() -> None:
    return None


@serve.ingress()
class Ingress(GrpcIngress):
    """The ingress replica: ``args`` as ``app.build`` got them (the secrets from the file they name), and a handle
    of each model's deployment. It answers HTTP, and the RPCs of Serve's gRPC proxy (``GrpcIngress``)."""

    def __init__(self, args: dict[str, Any], models: dict[str, DeploymentHandle]) -> None:
        settings = settings_from_args(args, args.get(SECRETS_FILE))
        # Serve writes every request's access line (with its request id, which is ours) in the replica's log:
        # a second one of ours would double the lines and cost the ingress about 0.3 ms a request (benchmarks).
        self.settings = dataclasses.replace(settings, access_log=False)
        configure_logging(self.settings)
        tracing.configure(self.settings.tracing)
        warn_if_open(self.settings)
        self.handles = models
        #: The model replicas' arguments: the ingress's without the secrets file (as ``app.build_on`` gives them).
        self.model_args = {key: value for key, value in args.items() if key != SECRETS_FILE}
        self.lifespan: dict[str, Any] = {}

    def __serve_build_asgi_app__(self) -> ASGIApp:
        outer = [Middleware(LifespanState, shared=self.lifespan), Middleware(ServedBy, ingress=served_by())]
        models = deployed_models(self.handles, self.model_args)
        process = ServingProcess(job_launcher=launcher(self.settings))  # jobs run in Ray actors (``jobs``)
        return create_app(self.settings, models=models, outer=outer, process=process)
