"""The web application: a declarative Starlette app of routes, middleware and exception handlers.

    create_app(settings) -> Starlette

The routes: the predict routes first (the hot path), the Open Inference
Protocol (V2) mount with its own error format, the stevedore routes, the
original ml-py-stevedore routes, the OpenAI-compatible routes (``openai``),
metrics, docs, the web console, the MCP server (``mcp``), and last the
plugins' own routes (``web.plugin_routes``). The middleware, outermost first:
request context (ids, access log, metrics, last-resort 500), the host and
origin checks (``web.origins``), CORS when configured, API keys when
configured. The error edge: ``EXCEPTION_HANDLERS``.
The lifespan loads the models (``core.startup``) and shares what the requests
need as one ``AppState``. Nothing here changes the process (signals, ``gc``,
logging): that is the serving process's (``stevedore_server.process``), so
tests can make as many apps as they like.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pluggy
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from stevedore_server.base.errors import ClientError, ModelFailure, ReportedFailure
from stevedore_server.base.health import HealthChecks
from stevedore_server.base.lifecycle import Lifecycle
from stevedore_server.base.logs import failure_answer, log_error
from stevedore_server.base.metrics import MULTIPROC_ENV, Metrics
from stevedore_server.base.settings import Settings
from stevedore_server.core import startup
from stevedore_server.core.convergence import DIRECTORY_ENV, SharedState
from stevedore_server.core.repository import ModelRepository, Repository
from stevedore_server.core.server import ModelServer
from stevedore_server.frontends.web.bodies import JSONBytesResponse, error_response, http_error, server_of
from stevedore_server.frontends.web.middleware import RequestContext, RequireAPIKey
from stevedore_server.frontends.web.origins import browser_guards
from stevedore_server.frontends.web.plugin_routes import PluginRoutes, serve_routes
from stevedore_server.frontends.web.routing import (
    ApiRoute,
    ErrorHandler,
    client_error_handlers,
    docs_app,
    share_methods,
)
from stevedore_server.jobs.launch import JobLauncher
from stevedore_server.jobs.records import TrainedVersion
from stevedore_server.jobs.service import SERVE_TIMEOUT, Jobs
from stevedore_server.jobs.versions import TrainedServing

from . import console
from .auth import INFER, APIKeys, caller_of
from .mcp import service as mcp_service
from .openai import openapi as openai_openapi
from .openai import routes as openai_routes
from .state import AppState, of_request
from .v2 import rest as v2_routes
from .web import (
    docs,
    jobs_routes,
    original_routes,
    pipelines_routes,
    stevedore_routes,
    traffic_routes,
    versions_routes,
)

logger = logging.getLogger("stevedore.app")

#: Threads for health checks, apart from the models': probes answer while every model is busy.
HEALTH_CHECK_THREADS = 4


#: What serves the models of an app, for its lifespan: the server and the repository, stopped on exit.
#: In-process by default (``local_models``); the Ray Serve ingress has its models in deployments.
ServeModels = Callable[[Settings, Metrics], AbstractAsyncContextManager[tuple[ModelServer, ModelRepository]]]


@dataclass(frozen=True)
class ServingProcess:
    """What the process that serves an app hands it besides the settings: with ``--workers N``, the directories
    where the workers agree on their models (``convergence``) and keep their metrics; and what frees a dropped
    model's memory (the heap freeze is the process's, not the app's)."""

    workers_dir: Path | None = None
    metrics_dir: str | None = None
    release_memory: Callable[[], None] | None = None
    #: Where jobs run, if not in processes of this machine (the Ray Serve ingress: Ray actors).
    job_launcher: JobLauncher | None = None


def create_app(
    settings: Settings | None = None,
    manager: pluggy.PluginManager | None = None,
    models: ServeModels | None = None,
    outer: Sequence[Middleware] = (),
    process: ServingProcess = ServingProcess(),
) -> Starlette:
    """A server for ``settings``; ``manager`` replaces the entry-point plugins (tests use it). ``models`` serves
    the models elsewhere, and ``outer`` middleware goes around all the rest (the Ray Serve ingress uses both).
    ``process`` is what the serving process hands over."""
    settings = settings or Settings()
    metrics = Metrics(process.metrics_dir)
    table = route_table(settings)
    app = Starlette(
        routes=table,
        middleware=[*outer, *middleware(settings, metrics, client_error_handlers(table))],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan(settings, models or local_models(manager, process), metrics, table, process.job_launcher),
    )
    app.router.redirect_slashes = False  # each route answers with or without its slash where it should
    return app


def app_from_env(release_memory: Callable[[], None] | None = None) -> Starlette:
    """The app of each of ``stevedore-server run --workers N``: the settings from the ``STEVEDORE_*`` variables
    and the workers' directories from theirs, as the supervisor set them. The one place that reads them."""
    workers_dir, metrics_dir = os.environ.get(DIRECTORY_ENV), os.environ.get(MULTIPROC_ENV)
    process = ServingProcess(Path(workers_dir) if workers_dir else None, metrics_dir or None, release_memory)
    return create_app(Settings.load(os.environ), process=process)


def route_table(settings: Settings) -> list[BaseRoute]:
    table = [
        *stevedore_routes.predict_routes(),
        *jobs_routes.deepaas_routes(),
        *v2_routes.routes(),
        *stevedore_routes.routes(),
        *stevedore_routes.stream_routes(),
        *original_routes.routes(),
        *jobs_routes.routes(),
        *versions_routes.routes(),
        *pipelines_routes.routes(),
        *traffic_routes.routes(),
        *openai_routes.routes(),
        ApiRoute("/metrics", metrics_route, ["GET"], ["health"], needs=None),
        ApiRoute("/openapi.json", openapi_json, ["GET"], include_in_schema=False, needs=INFER),
        *docs.docs_routes(),
        *(console.routes() if settings.console else []),
        *mcp_service.routes(settings),
        PluginRoutes(),  # last: a plugin's route never comes before a built-in one
    ]
    share_methods(table)
    return table


def middleware(settings: Settings, metrics: Metrics, protocols: dict[str, ErrorHandler]) -> list[Middleware]:
    """The middleware stack; ``protocols`` the protocol mounts' error writers, which the API keys' refusals use."""
    stack = [
        Middleware(RequestContext, metrics=metrics, access_log=settings.access_log),
        *browser_guards(settings, protocols),
    ]
    if settings.cors_origins:
        origins = list(settings.cors_origins)
        stack.append(Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"]))
    keys = APIKeys.from_settings(settings)
    if keys is not None:
        pages = console.PAGES if settings.console else None
        stack.append(
            Middleware(RequireAPIKey, keys=keys, protect_health=settings.auth_health, pages=pages, protocols=protocols)
        )
    return stack


def local_models(manager: pluggy.PluginManager | None, process: ServingProcess = ServingProcess()) -> ServeModels:
    """The models loaded in this process, and its model repository."""

    @asynccontextmanager
    async def serve(settings: Settings, metrics: Metrics) -> AsyncIterator[tuple[ModelServer, ModelRepository]]:
        loaded = await run_in_threadpool(startup.load, settings, manager)
        server = startup.build_server(settings, loaded, metrics)
        await startup.start_models(server)
        await startup.check_pipelines(server)
        shared = SharedState(process.workers_dir) if process.workers_dir is not None else None
        repository = Repository(server, manager, shared, process.release_memory)
        await repository.start()
        try:
            yield server, repository
        finally:
            repository.close()
            startup.stop_models(server)

    return serve


def lifespan(
    settings: Settings,
    models: ServeModels,
    metrics: Metrics,
    table: list[BaseRoute],
    job_launcher: JobLauncher | None = None,
) -> Any:
    @asynccontextmanager
    async def serve(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        lifecycle = Lifecycle()
        async with (
            models(settings, metrics) as (server, repository),
            logging_payloads(server),
            running_jobs(settings, server, repository, lifecycle, job_launcher) as jobs,
            mcp_service.serving(table, server, lifecycle),
        ):
            plugin_routes = tuple(serve_routes(server.plugin_routes, table))
            state = AppState(
                server=server,
                repository=repository,
                jobs=jobs,
                lifecycle=lifecycle,
                health=HealthChecks(
                    server.registry.health_checks, lifecycle, anyio.CapacityLimiter(HEALTH_CHECK_THREADS)
                ),
                plugin_routes=plugin_routes,
                routes=(*table, *plugin_routes),
            )
            yield state.as_lifespan_state()

    return serve


@asynccontextmanager
async def logging_payloads(server: ModelServer) -> AsyncIterator[None]:
    """The payload log's queue handed over at shutdown, after the last request (within its bound)."""
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(server.payload_log.close)


@asynccontextmanager
async def running_jobs(
    settings: Settings,
    server: ModelServer,
    repository: ModelRepository,
    lifecycle: Lifecycle,
    launcher: JobLauncher | None = None,
) -> AsyncIterator[Jobs]:
    """The jobs of this server process: recovered and dispatched at startup, stopped (interrupted) at exit. A
    version a training made (here, or in another process: the jobs follow them) is served, and dropped once
    removed, through the repository, on the event loop. The artifact's path comes checked (``jobs.versions``)."""
    loop = asyncio.get_running_loop()

    def serve_trained(trained: TrainedVersion) -> None:
        base = server.registry.get(trained.model, trained.base_version)
        predictor = base.predictor.trained(Path(trained.artifact), trained.version)
        coroutine = repository.serve_trained(predictor, base, trained.job_id)
        asyncio.run_coroutine_threadsafe(coroutine, loop).result(SERVE_TIMEOUT)

    def unserve_trained(model: str, version: str) -> None:
        asyncio.run_coroutine_threadsafe(repository.unserve_trained(model, version), loop).result(SERVE_TIMEOUT)

    served = TrainedServing(serve_trained, unserve_trained) if repository.serves_trained else None
    jobs = Jobs(settings, server.registry, server.metrics, served, repository.shared, lifecycle, launcher)
    await anyio.to_thread.run_sync(jobs.start)
    try:
        yield jobs
    finally:
        await anyio.to_thread.run_sync(jobs.close)


async def metrics_route(request: Request) -> Response:
    """Prometheus metrics in the text format, or OpenMetrics' (with exemplars) to a scraper that accepts it; the
    series of software versions not to a caller without a key."""
    open_metrics = "application/openmetrics-text" in request.headers.get("accept", "")
    content, media_type = server_of(request).metrics.exposition(
        versions=not caller_of(request.scope).anonymous, open_metrics=open_metrics
    )
    return Response(content, media_type=media_type)


async def openapi_json(request: Request) -> Response:
    """The OpenAPI document, generated from the route table once, off the event loop (FastAPI builds it)."""
    state = of_request(request)
    if "spec" not in state.openapi:
        state.openapi["spec"] = await run_in_threadpool(build_openapi, state.routes, state.server)
    return JSONBytesResponse(state.openapi["spec"])


def build_openapi(table: Sequence[BaseRoute], server: ModelServer) -> dict[str, Any]:
    from stevedore_server.frontends.web.openapi import build_openapi as build

    return openai_openapi.documented(build(docs_app(table), server.registry))


# -- the error edge -----------------------------------------------------------


async def client_error(request: Request, error: Exception) -> Response:
    if not isinstance(error, ClientError):
        raise error
    if caller_of(request.scope).anonymous:  # a probe's caller without a key: not told what the server holds
        error = error.to_anonymous()
    return error_response(error.status_code, error.body(), error.headers)


async def model_failure(request: Request, error: Exception) -> Response:
    """500 with an error id, logged with the model's traceback: the client learns which model failed, not how.
    A failure reported by another process (a Ray replica) was logged there, under the id it gives."""
    if isinstance(error, ReportedFailure):
        error_id = error.error_id
        logger.error("%s (error id %s, logged by the replica that ran the model)", error, error_id)
    else:
        error_id = log_error(logger, str(error), getattr(error, "error", error))
    return error_response(500, failure_answer(str(error), error_id))


#: Typed errors to responses: every error is JSON ``{"error": ...}``, never a traceback. The V2 mount has its
#: own for client errors (``v2.rest.EXCEPTION_HANDLERS``); an exception none takes is ``RequestContext``'s.
EXCEPTION_HANDLERS = {
    ClientError: client_error,
    HTTPException: http_error,
    ModelFailure: model_failure,
    ReportedFailure: model_failure,
}
