"""Placeholder: replaced by the offline docs module."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Route


def page(kind: str) -> HTMLResponse:
    from fastapi.openapi import docs

    render = docs.get_swagger_ui_html if kind == "swagger" else docs.get_redoc_html
    return render(openapi_url="/openapi.json", title="stevedore-server")


async def swagger_page(request: Request) -> HTMLResponse:
    return await run_in_threadpool(page, "swagger")


async def redoc_page(request: Request) -> HTMLResponse:
    return await run_in_threadpool(page, "redoc")


def docs_routes() -> list[BaseRoute]:
    return [
        Route("/docs", swagger_page, methods=["GET"], include_in_schema=False),
        Route("/redoc", redoc_page, methods=["GET"], include_in_schema=False),
    ]
