"""The API documentation pages, Swagger UI at ``/docs`` and ReDoc at ``/redoc``, that need no other host.

Their scripts and styles are package data (``static/docs``: the README there
names each file's npm package, version and licence), served under
``ASSETS_PATH``; the pages are written here. A cluster without internet access
sees the same pages as a laptop, and the Content-Security-Policy of the pages
keeps it so: a script that tried to reach another host would be refused.

This module only needs Starlette: any app can add ``docs_routes()``, FastAPI
is not imported, and nothing of the server's own routing is.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePath

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Scope

#: Where the vendored files are served; the pages name them by absolute path on this host.
ASSETS_PATH = "/docs/assets"
OPENAPI_URL = "/openapi.json"
TITLE = "stevedore-server API"
#: The package data directory with the vendored files.
PACKAGE, ASSETS_DIRECTORY = "stevedore_server.frontends.web", "static/docs"

#: Each asset's URL carries a hash of its content (``?v=``), so a file can be cached for a
#: year: an upgraded one has a new URL. The pages themselves are revalidated every time.
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
PAGE_CACHE_CONTROL = "no-cache"
#: Set here rather than guessed: ``mimetypes`` reads the machine's own tables, which disagree on ``.js``.
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".md": "text/markdown; charset=utf-8",
}
TEXT = "text/plain; charset=utf-8"

#: What a page may load, found by loading both pages in Chromium under this policy until nothing
#: was refused (tests/test_docs_offline.py does it again). Both draw a few icons as ``data:`` images.
BASE_POLICY = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "base-uri": "'none'",
    "form-action": "'none'",
    "frame-ancestors": "'self'",
}

SWAGGER_UI_CONFIG = {
    "url": OPENAPI_URL,
    "dom_id": "#swagger-ui",
    # The default sends the document to validator.swagger.io for the badge under the title.
    "validatorUrl": None,
    "deepLinking": True,
}

SWAGGER_UI_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{favicon}">
<link rel="stylesheet" href="{stylesheet}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{script}"></script>
<script>{init}</script>
</body>
</html>
"""

REDOC_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{favicon}">
<style>body {{ margin: 0; }}</style>
</head>
<body>
<redoc spec-url="{openapi_url}"></redoc>
<script src="{script}"></script>
</body>
</html>
"""


@dataclass(frozen=True)
class Page:
    """A rendered page and the Content-Security-Policy that lets exactly it run."""

    body: str
    policy: str

    def response(self) -> HTMLResponse:
        headers = {
            "content-security-policy": self.policy,
            "cache-control": PAGE_CACHE_CONTROL,
            "x-content-type-options": "nosniff",
        }
        return HTMLResponse(self.body, headers=headers)


async def swagger_page(request: Request) -> HTMLResponse:
    """Swagger UI for ``/openapi.json``."""
    page = await run_in_threadpool(swagger_ui)
    return page.response()


async def redoc_page(request: Request) -> HTMLResponse:
    """ReDoc for ``/openapi.json``."""
    page = await run_in_threadpool(redoc)
    return page.response()


# The pages never change while the server runs; the first of each hashes its assets (3 MB), off the loop.
@functools.cache
def swagger_ui() -> Page:
    init = f"window.ui = SwaggerUIBundle({script_literal(SWAGGER_UI_CONFIG)});"
    body = SWAGGER_UI_TEMPLATE.format(
        title=html.escape(TITLE),
        favicon=asset_url("favicon-32x32.png"),
        stylesheet=asset_url("swagger-ui.css"),
        script=asset_url("swagger-ui-bundle.js"),
        init=init,
    )
    return Page(body, content_security_policy(init))


@functools.cache
def redoc() -> Page:
    body = REDOC_TEMPLATE.format(
        title=html.escape(TITLE),
        favicon=asset_url("favicon-32x32.png"),
        openapi_url=html.escape(OPENAPI_URL),
        script=asset_url("redoc.standalone.js"),
    )
    # ReDoc's styled-components add <style> elements; its search index is built in a worker made from a blob.
    return Page(body, content_security_policy(style_src="'self' 'unsafe-inline'", worker_src="blob:"))


def script_literal(value: object) -> str:
    """``value`` as a JavaScript literal that cannot close the ``<script>`` element it is written in."""
    return json.dumps(value).replace("<", "\\u003c")


def asset_url(name: str) -> str:
    """The absolute path of a vendored file on this host, with the hash of its content."""
    return html.escape(f"{ASSETS_PATH}/{name}?v={fingerprint(name)}")


@functools.cache
def fingerprint(name: str, directory: str = ASSETS_DIRECTORY, package: str = PACKAGE) -> str:
    """The start of the SHA-256 of a file in a ``package``'s data ``directory`` (the web console's too)."""
    content = (resources.files(package).joinpath(directory, *name.split("/"))).read_bytes()
    return hashlib.sha256(content).hexdigest()[:16]


def content_security_policy(*inline_scripts: str, **directives: str) -> str:
    """This origin only, and nothing that is not named; inline scripts only the page's own, by hash.

    ``directives`` (``style_src="..."``) widen it for a page that needs it.
    """
    hashes = "".join(f" 'sha256-{script_hash(script)}'" for script in inline_scripts)
    policy = BASE_POLICY | {"script-src": f"'self'{hashes}"}
    policy |= {name.replace("_", "-"): sources for name, sources in directives.items()}
    return "; ".join(f"{name} {sources}" for name, sources in policy.items())


def script_hash(script: str) -> str:
    return base64.b64encode(hashlib.sha256(script.encode()).digest()).decode("ascii")


class PackageAssets(StaticFiles):
    """The vendored files, each with its media type and a year-long ``Cache-Control``."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = ASSET_CACHE_CONTROL
        response.headers["x-content-type-options"] = "nosniff"
        if response.status_code != 304:
            response.headers["content-type"] = MEDIA_TYPES.get(PurePath(full_path).suffix, TEXT)
        return response


def assets_app(directory: str = ASSETS_DIRECTORY, package: str = PACKAGE) -> ASGIApp:
    """Serves the files of a ``package``'s data ``directory`` (GET and HEAD; 404 for any other name)."""
    return PackageAssets(packages=[(package, directory)])


def docs_routes() -> list[BaseRoute]:
    """``/docs``, ``/redoc`` and their assets; ``/openapi.json`` is the app's to serve."""
    return [
        Route("/docs", swagger_page, methods=["GET"], name="swagger_ui", include_in_schema=False),
        Route("/redoc", redoc_page, methods=["GET"], name="redoc", include_in_schema=False),
        Mount(ASSETS_PATH, app=assets_app(), name="docs_assets"),
    ]
