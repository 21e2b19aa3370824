"""The web application, built by a factory from settings; models load in the lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pluggy
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp

from . import api, compat
from .auth import APIKeys
from .errors import ClientError, ModelFailure
from .http import JSONBytesResponse, error_response, model_failure_response, registry_of
from .loader import Loaded, load
from .logs import lighten_records
from .metrics import Metrics
from .middleware import ERROR_ID_KEY, RequestContext, RequireAPIKey
from .registry import Registry
from .routing import RouteTable
from .runtime import InferenceTimeout, ModelLimits, ModelRuntime, calibrate
from .settings import Settings
from .v2 import routes as v2_routes

logger = logging.getLogger("stevedore.app")

#: Threads for health checks, apart from the models': probes answer while every model is busy.
HEALTH_CHECK_THREADS = 4


def create_app(
    settings: Settings | None = None, manager: pluggy.PluginManager | None = None, loaded: Loaded | None = None
) -> ASGIApp:
    """A server for ``settings``: the app inside its middleware.

    The lifespan loads the models, unless ``loaded`` holds them already (``run``
    with one worker loads first, to report a startup error plainly); ``manager``
    replaces the entry-point plugins (tests use it).
    """
    settings = settings or Settings()
    lighten_records()
    metrics = Metrics()
    keys = APIKeys.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        nonlocal loaded
        if loaded is None:
            loaded = await run_in_threadpool(load, settings, manager)
        for entry in loaded.registry.entries:
            limits = ModelLimits.of(settings, entry.predictor)
            cost = await run_in_threadpool(calibrate, entry, limits.inline_budget) if limits.inline_budget > 0 else None
            entry.runtime = ModelRuntime(entry, limits, metrics, cost)
        metrics.describe(loaded.registry)
        if settings.freeze_heap:
            freeze_heap()
        draining = asyncio.Event()
        restore = drain_on_sigterm(draining)
        yield {
            "registry": loaded.registry,
            "manager": loaded.manager,
            "settings": settings,
            "metrics": metrics,
            "draining": draining,
            "check_threads": anyio.CapacityLimiter(HEALTH_CHECK_THREADS),
            "openapi": {},
        }
        restore()
        for entry in loaded.registry.entries:
            if entry.runtime is not None:
                entry.runtime.close()
        if settings.freeze_heap:
            gc.unfreeze()

    # A plain Starlette app: FastAPI's per-request machinery costs more than a small model's prediction;
    # the OpenAPI document comes from a FastAPI app that is never served (see routing.py).
    app = Starlette(lifespan=lifespan)
    app.router.redirect_slashes = False
    routes = RouteTable(app)
    api.add_routes(routes)
    compat.add_routes(routes)
    v2_routes.add_routes(routes)
    routes.add("/metrics", metrics_route, ["GET"], tags=["health"])
    add_docs_routes(routes)
    add_error_handlers(app)
    inner: ASGIApp = app
    if keys is not None:
        inner = RequireAPIKey(inner, keys, settings.auth_health)
    if settings.cors_origins:
        inner = CORSMiddleware(
            inner, allow_origins=list(settings.cors_origins), allow_methods=["*"], allow_headers=["*"]
        )
    return RequestContext(inner, metrics, settings.access_log)


def app_from_env() -> ASGIApp:
    """The factory ``stevedore-server run`` gives uvicorn: settings from ``STEVEDORE_*`` variables."""
    return create_app(Settings.load())


async def metrics_route(request: Request) -> Response:
    """Prometheus metrics in the text format."""
    metrics: Metrics = request.state.metrics
    content, media_type = metrics.exposition()
    return Response(content, media_type=media_type)


def freeze_heap() -> None:
    """Move every object the startup left (libraries, models) to the garbage collector's permanent generation.

    Under load, the objects of requests in flight outlive young collections and
    pile up in the oldest generation, which then triggers full collections. Each
    walked the whole heap: about 75 ms with the example plugin, a stall of the
    event loop that showed as the p99 of the batching benchmark, several times a
    second. Frozen objects are still freed when their last reference goes; only
    cycles among them are never collected. The startup leaves almost none (40
    objects with the example plugin), so no collection is run first.
    """
    gc.freeze()
    logger.info("startup heap frozen: %d objects left out of garbage collection (gc.freeze)", gc.get_freeze_count())


def drain_on_sigterm(draining: asyncio.Event) -> Callable[[], None]:
    """On SIGTERM, mark the server draining (readiness turns 503) before uvicorn's own handler stops it.

    Returns the function that puts the previous handler back. Signals can only
    be handled in the main thread; elsewhere (tests) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)

    def handle(signum: int, frame: Any) -> None:
        draining.set()
        logger.info("SIGTERM: draining; in-flight requests finish, new connections are refused")
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handle)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def add_docs_routes(routes: RouteTable) -> None:
    # FastAPI, which writes the document and the pages, is imported on the first request for one, off the loop.
    def build(registry: Registry) -> dict[str, Any]:
        from .openapi import build_openapi

        return build_openapi(routes.docs_app(), registry)

    async def openapi_json(request: Request) -> Response:
        cache = request.state.openapi
        if "spec" not in cache:
            cache["spec"] = await run_in_threadpool(build, registry_of(request))
        return JSONBytesResponse(cache["spec"])

    def page(kind: str) -> HTMLResponse:
        from fastapi.openapi import docs

        render = docs.get_swagger_ui_html if kind == "swagger" else docs.get_redoc_html
        return render(openapi_url="/openapi.json", title="stevedore-server")

    async def swagger(request: Request) -> HTMLResponse:
        return await run_in_threadpool(page, "swagger")

    async def redoc(request: Request) -> HTMLResponse:
        return await run_in_threadpool(page, "redoc")

    routes.add("/openapi.json", openapi_json, ["GET"], include_in_schema=False)
    routes.add("/docs", swagger, ["GET"], include_in_schema=False)
    routes.add("/redoc", redoc, ["GET"], include_in_schema=False)


def add_error_handlers(app: Starlette) -> None:
    """Every error as JSON ``{"error": ...}``; never a traceback in a body."""

    async def client_error(request: Request, error: ClientError) -> Response:
        return error_response(error.status_code, error.body(), error.headers)

    async def timed_out(request: Request, error: InferenceTimeout) -> Response:
        return error_response(504, {"error": str(error)})

    async def http_error(request: Request, error: HTTPException) -> Response:
        return error_response(error.status_code, {"error": str(error.detail)}, dict(error.headers or {}))

    async def model_failure(request: Request, error: ModelFailure) -> Response:
        return model_failure_response(error)

    async def unexpected(request: Request, error: Exception) -> Response:
        # Starlette re-raises after this answer; RequestContext logs it, once, with this error id.
        error_id = uuid.uuid4().hex
        request.scope[ERROR_ID_KEY] = error_id
        return error_response(500, {"error": f"internal server error; error id {error_id}", "error_id": error_id})

    # Starlette types handlers as taking any Exception; each here is registered for its own class.
    app.add_exception_handler(ClientError, client_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ModelFailure, model_failure)  # type: ignore[arg-type]
    app.add_exception_handler(InferenceTimeout, timed_out)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)
