"""``/docs`` and ``/redoc`` with no other host: the pages, their assets, their policy, and a real browser.

The in-process tests read the pages as a browser would (every ``src``, ``href``
and URL in an inline script or style must be a path on this host) and fetch
each asset. The browser test loads both pages from the real server in headless
Chromium: they must render every operation, ask no other host for anything,
and have nothing refused by their Content-Security-Policy.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from stevedore_server import docs

from .venvs import Server

PAGES = ["/docs", "/redoc"]
ASSETS = Path(docs.__file__).parent / "static" / "docs"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
YEAR = 365 * 24 * 3600
#: Attributes whose value a browser loads or follows (``spec-url`` is ReDoc's).
URL_ATTRIBUTES = {"src", "href", "srcset", "action", "formaction", "poster", "data", "spec-url"}
#: Sources a directive may list: none of them names another host.
LOCAL_SOURCES = {"'self'", "'none'", "'unsafe-inline'", "data:", "blob:"}
STRING_LITERAL = re.compile(r""""((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|`([^`]*)`""")
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]*)""")
T = TypeVar("T")


class PageParser(HTMLParser):
    """The URLs in a page's attributes, and the text of its inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self.inline_styles: list[str] = []
        self.open_text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in URL_ATTRIBUTES and value is not None]
        self.inline_styles += [value for name, value in attrs if name == "style" and value is not None]
        if tag == "script" and "src" not in dict(attrs):
            self.inline_scripts.append("")
            self.open_text = self.inline_scripts
        elif tag == "style":
            self.inline_styles.append("")
            self.open_text = self.inline_styles

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.open_text = None

    def handle_data(self, data: str) -> None:
        if self.open_text is not None:
            self.open_text[-1] += data


def parse_page(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    parser.close()
    return parser


def urls_in_code(parser: PageParser) -> list[str]:
    """Every string in the inline scripts that could be a URL (it has a slash), and every CSS ``url()``."""
    literals = [next(group for group in match.groups() if group is not None) for script in parser.inline_scripts
                for match in STRING_LITERAL.finditer(script)]  # fmt: skip
    css = [url for style in parser.inline_styles for url in CSS_URL.findall(style)]
    return [literal for literal in literals if "/" in literal] + css


def is_path_on_this_host(url: str) -> bool:
    """An absolute path: no scheme, no ``//host``, no backslash (browsers read ``/\\host`` as ``//host``)."""
    parts = urlsplit(url)
    names_a_host = bool(parts.scheme or parts.netloc) or url.startswith("//") or "\\" in url
    return url.startswith("/") and not names_a_host


def policy_of(response: httpx.Response) -> dict[str, list[str]]:
    header = response.headers["content-security-policy"]
    directives = [directive.split() for directive in header.split(";") if directive.strip()]
    return {name: sources for name, *sources in directives}


def script_hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


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
from starlette.testclient import TestClient
from stevedore_server.app import create_app
from stevedore_server.settings import Settings
with TestClient(create_app(Settings(plugins=("none",)))) as client:
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

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
)
#: Generous: on a busy 2-core machine Chromium's first start and a 2 MB bundle's first parse are slow.
RENDER_TIMEOUT = 60
#: Requests a page makes as it mounts its components (images, workers) reach the log a moment after it renders.
SETTLE_SECONDS = 1.0


def chromium_and_driver() -> tuple[str, str]:
    """Debian's ``chromium`` and ``chromedriver``; without them, skip (fail where ``CI`` is set)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        reason = "needs Debian's chromium and chromium-driver (make deb-packages installs them)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, where the browser test must run")
        pytest.skip(reason)
    return chromium, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    chromium, driver = chromium_and_driver()
    options = webdriver.ChromeOptions()
    # Both paths given, so Selenium never looks for (or downloads) a browser or driver of its own.
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    session = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield session
    finally:
        session.quit()


def read_log(browser: WebDriver, kind: str) -> list[dict[str, Any]]:
    """The entries of Chromium's ``browser`` (console) or ``performance`` log since the last read, which empties it."""
    entries: list[dict[str, Any]] = browser.get_log(kind)  # type: ignore[no-untyped-call]  # untyped in selenium
    return entries


def open_page(browser: WebDriver, url: str) -> None:
    """Load ``url`` with empty logs: the browser's own start page and earlier pages are not counted."""
    browser.get("about:blank")
    read_log(browser, "performance")
    read_log(browser, "browser")
    browser.get(url)


def requested_urls(browser: WebDriver) -> list[str]:
    """Every request the page began since ``open_page``, those its policy then refused included."""
    messages = [json.loads(entry["message"])["message"] for entry in read_log(browser, "performance")]
    return [message["params"]["request"]["url"] for message in messages
            if message["method"] == "Network.requestWillBeSent"]  # fmt: skip


def foreign(urls: list[str], origin: str) -> list[str]:
    """The URLs that are neither this server's, nor its blobs, nor ``data:``."""
    return [url for url in urls if not (url.startswith((f"{origin}/", f"blob:{origin}/", "data:")) or url == origin)]


def wait_until(browser: WebDriver, read: Callable[[WebDriver], T], done: Callable[[T], bool]) -> T:
    """What ``read`` finds once ``done`` accepts it, or at the deadline (the assertion after it shows the value)."""
    deadline = time.monotonic() + RENDER_TIMEOUT
    value = read(browser)
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.25)
        value = read(browser)
    return value


def assert_offline_and_clean(browser: WebDriver, server: Server) -> None:
    time.sleep(SETTLE_SECONDS)
    urls = requested_urls(browser)
    assert f"{server.url}/openapi.json" in urls
    assert foreign(urls, server.url) == []
    errors = [entry["message"] for entry in read_log(browser, "browser") if entry["level"] == "SEVERE"]
    assert errors == [], "console errors (a refusal by the Content-Security-Policy shows here)"


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
