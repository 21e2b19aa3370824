"""The web application, built by a factory from settings; models load in the lifespan."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pluggy
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from . import __version__, api, compat
from .errors import ClientError, ModelFailure
from .http import JSONBytesResponse, error_response, model_failure_response, registry_of
from .loader import Loaded, load
from .openapi import build_openapi
from .runtime import InferenceTimeout, ModelLimits, ModelRuntime
from .settings import Settings
from .v2 import routes as v2_routes

logger = logging.getLogger("stevedore.app")

#: Threads for health checks, apart from the models': probes answer while every model is busy.
HEALTH_CHECK_THREADS = 4


def create_app(
    settings: Settings | None = None, manager: pluggy.PluginManager | None = None, loaded: Loaded | None = None
) -> FastAPI:
    """A server for ``settings``.

    The lifespan loads the models, unless ``loaded`` holds them already (``run``
    with one worker loads first, to report a startup error plainly); ``manager``
    replaces the entry-point plugins (tests use it).
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        nonlocal loaded
        if loaded is None:
            loaded = await run_in_threadpool(load, settings, manager)
        for entry in loaded.registry.entries:
            entry.runtime = ModelRuntime(entry, ModelLimits.of(settings, entry.predictor))
        yield {
            "registry": loaded.registry,
            "manager": loaded.manager,
            "settings": settings,
            "check_threads": anyio.CapacityLimiter(HEALTH_CHECK_THREADS),
            "openapi": {},
        }
        for entry in loaded.registry.entries:
            if entry.runtime is not None and entry.runtime.batcher is not None:
                entry.runtime.batcher.stop()

    app = FastAPI(
        title="stevedore-server",
        version=__version__,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    api.add_routes(app)
    compat.add_routes(app)
    v2_routes.add_routes(app)
    add_docs_routes(app)
    add_error_handlers(app)
    return app


def app_from_env() -> FastAPI:
    """The factory ``stevedore-server run`` gives uvicorn: settings from ``STEVEDORE_*`` variables."""
    return create_app(Settings.load())


def add_docs_routes(app: FastAPI) -> None:
    async def openapi_json(request: Request) -> Response:
        cache = request.state.openapi
        if "spec" not in cache:
            cache["spec"] = build_openapi(app, registry_of(request))
        return JSONBytesResponse(cache["spec"])

    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="stevedore-server")

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="stevedore-server")

    app.add_api_route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", swagger, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)


def add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON ``{"error": ...}``; never a traceback in a body."""

    async def client_error(request: Request, error: ClientError) -> Response:
        return error_response(error.status_code, error.body(), error.headers)

    async def timed_out(request: Request, error: InferenceTimeout) -> Response:
        return error_response(504, {"error": str(error)})

    async def http_error(request: Request, error: HTTPException) -> Response:
        return error_response(error.status_code, {"error": str(error.detail)}, dict(error.headers or {}))

    async def invalid_parameters(request: Request, error: RequestValidationError) -> Response:
        details = [
            {"path": "/" + "/".join(str(part) for part in item.get("loc", ())), "message": str(item.get("msg"))}
            for item in error.errors()
        ]
        return error_response(422, {"error": "invalid request parameters", "details": details})

    async def model_failure(request: Request, error: ModelFailure) -> Response:
        return model_failure_response(error)

    async def unexpected(request: Request, error: Exception) -> Response:
        error_id = uuid.uuid4().hex
        logger.error(
            "unexpected error on %s %s (error id %s)", request.method, request.url.path, error_id, exc_info=error
        )
        return error_response(500, {"error": f"internal server error; error id {error_id}", "error_id": error_id})

    # Starlette types handlers as taking any Exception; each here is registered for its own class.
    app.add_exception_handler(ClientError, client_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, invalid_parameters)  # type: ignore[arg-type]
    app.add_exception_handler(ModelFailure, model_failure)  # type: ignore[arg-type]
    app.add_exception_handler(InferenceTimeout, timed_out)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)
