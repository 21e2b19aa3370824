"""``/docs`` and ``/redoc`` with no other host: the pages, their assets, their policy, and a real browser.

The in-process tests read the pages as a browser would (every ``src``, ``href``
and URL in an inline script or style must be a path on this host) and fetch
each asset. The browser test loads both pages from the real server in headless
Chromium: they must render every operation, ask no other host for anything,
and have nothing refused by their Content-Security-Policy.
"""

from __future__ import annotations

import ast
import hashlib
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from selenium.webdriver.chrome.webdriver import WebDriver

from stevedore_server.frontends.web import docs

from .browser import (
    LOCAL_SOURCES,
    console_errors,
    foreign,
    is_path_on_this_host,
    open_page,
    parse_page,
    policy_of,
    requests_through_now,
    script_hash,
    urls_in_code,
    wait_until,
)
from .venvs import Server

PAGES = ["/docs", "/redoc"]
ASSETS = Path(docs.__file__).parent / "static" / "docs"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
YEAR = 365 * 24 * 3600


# -- in process -------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_page_is_html_with_a_policy_naming_no_other_host(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = policy_of(response)
    assert policy["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "img-src", "font-src", "connect-src"):
        assert "'self'" in policy[directive], directive
    for directive, sources in policy.items():
        assert all(source in LOCAL_SOURCES or source.startswith("'sha256-") for source in sources), directive
    assert not {"'unsafe-inline'", "'unsafe-eval'"} & set(policy["script-src"])


@pytest.mark.parametrize("path", PAGES)
def test_inline_scripts_are_allowed_by_their_hash_only(client: TestClient, path: str) -> None:
    response = client.get(path)

    hashes = {source for source in policy_of(response)["script-src"] if source.startswith("'sha256-")}
    assert hashes == {script_hash(script) for script in parse_page(response.text).inline_scripts}


@pytest.mark.parametrize("path", PAGES)
def test_page_references_only_paths_on_this_host(client: TestClient, path: str) -> None:
    page = parse_page(client.get(path).text)

    references = page.urls + urls_in_code(page)
    assert docs.OPENAPI_URL in references
    assert [url for url in references if not is_path_on_this_host(url)] == []


@pytest.mark.parametrize("path", PAGES)
def test_every_referenced_path_is_served(client: TestClient, path: str) -> None:
    page = parse_page(client.get(path).text)

    references = page.urls + urls_in_code(page)
    assets = [url for url in references if url.startswith(docs.ASSETS_PATH + "/")]
    assert assets
    for url in references:
        assert client.get(url).status_code == 200, url
    for url in assets:
        response = client.get(url)
        name = PurePosixPath(urlsplit(url).path).name
        assert response.headers["content-type"].split(";")[0] == MEDIA_TYPES[PurePosixPath(name).suffix], url
        assert response.content == (ASSETS / name).read_bytes()
        cache_control = response.headers["cache-control"]
        assert int(re.search(r"max-age=(\d+)", cache_control)[1]) >= YEAR  # type: ignore[index]


def test_an_asset_url_names_its_content(client: TestClient) -> None:
    """Cached for a year, so the URL changes when the file does (an upgrade of the package)."""
    for url in parse_page(client.get("/docs").text).urls:
        name = PurePosixPath(urlsplit(url).path).name
        digest = hashlib.sha256((ASSETS / name).read_bytes()).hexdigest()
        assert digest.startswith(parse_qs(urlsplit(url).query)["v"][0]), url


def test_assets_answer_404_outside_the_folder_and_405_to_other_methods(client: TestClient) -> None:
    assert client.get(f"{docs.ASSETS_PATH}/missing.js").status_code == 404
    assert client.get(f"{docs.ASSETS_PATH}/%2e%2e/docs.py").status_code == 404
    assert client.post(f"{docs.ASSETS_PATH}/swagger-ui.css").status_code == 405


def test_vendored_scripts_and_styles_name_no_source_map() -> None:
    """The maps are not vendored: a source map comment would send developer tools to a missing file."""
    for path in [*ASSETS.glob("*.js"), *ASSETS.glob("*.css")]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^(//|/\*)[#@] sourceMappingURL=", text, re.MULTILINE), path.name


def test_vendored_files_carry_their_licences_and_versions() -> None:
    for name in ("LICENSE-swagger-ui", "NOTICE-swagger-ui", "LICENSE-redoc"):
        assert (ASSETS / name).read_text().strip(), name
    readme = (ASSETS / "README.md").read_text()
    swagger_ui = re.search(r"`swagger-ui-dist@([\w.-]+)`", readme)[1]  # type: ignore[index]
    redoc = re.search(r"`redoc@([\w.-]+)`", readme)[1]  # type: ignore[index]
    # The versions the README names are the versions of the files.
    assert f'PACKAGE_VERSION:"{swagger_ui}"' in (ASSETS / "swagger-ui-bundle.js").read_text(encoding="utf-8")
    assert f'Version: "{redoc}"' in (ASSETS / "redoc.standalone.js.LICENSE.txt").read_text()


def test_pages_and_assets_need_no_fastapi() -> None:
    script = """
import sys
import time
from starlette.testclient import TestClient
from stevedore_server.frontends.app import create_app
from stevedore_server.base.settings import Settings
with TestClient(create_app(Settings(plugins=("none",))), base_url="http://localhost") as client:
    for path in ("/docs", "/redoc", "/docs/assets/swagger-ui.css", "/docs/assets/redoc.standalone.js"):
        assert client.get(path).status_code == 200, path
    assert "fastapi" not in sys.modules and "pydantic" not in sys.modules
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_docs_module_imports_only_the_standard_library_and_starlette() -> None:
    """Self-contained, so any app can serve ``docs_routes()``."""
    tree = ast.parse(Path(docs.__file__).read_text())
    modules = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    modules += ["." * node.level + (node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    roots = {module.split(".")[0] for module in modules}
    assert roots - set(sys.stdlib_module_names) <= {"starlette"}, roots


# -- in a real browser ----------------------------------------------------------------


def assert_offline_and_clean(browser: WebDriver, server: Server) -> None:
    urls = requests_through_now(browser, server.url)
    assert f"{server.url}/openapi.json" in urls
    assert foreign(urls, server.url) == []
    assert console_errors(browser) == [], "console errors (a refusal by the Content-Security-Policy shows here)"


def spec_operations(server: Server) -> list[dict[str, Any]]:
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    return [
        {"method": method, "path": path, **operation}
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


RENDERED_OPERATIONS = """
return Array.from(document.querySelectorAll('.opblock')).map(block => [
    block.querySelector('.opblock-summary-method').textContent.toLowerCase(),
    block.querySelector('.opblock-summary-path').dataset.path,
]);
"""


@pytest.mark.browser
def test_swagger_ui_renders_every_operation_from_this_host_only(browser: WebDriver, example_server: Server) -> None:
    expected = {(operation["method"], operation["path"]) for operation in spec_operations(example_server)}

    open_page(browser, f"{example_server.url}/docs")

    def rendered(driver: WebDriver) -> set[tuple[str, str]]:
        return {(method, path) for method, path in driver.execute_script(RENDERED_OPERATIONS)}

    assert wait_until(browser, rendered, lambda operations: len(operations) >= len(expected)) == expected
    assert_offline_and_clean(browser, example_server)


@pytest.mark.browser
def test_redoc_renders_every_operation_from_this_host_only(browser: WebDriver, example_server: Server) -> None:
    titles = {operation["summary"] for operation in spec_operations(example_server)}

    open_page(browser, f"{example_server.url}/redoc")

    def shown(driver: WebDriver) -> set[str]:
        text = driver.execute_script("return document.body.innerText")
        return {title for title in titles if title in text}

    assert wait_until(browser, shown, lambda found: found == titles) == titles
    assert_offline_and_clean(browser, example_server)
