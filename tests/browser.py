"""Reading pages as a browser does, and driving a real one (Debian's chromium with Selenium and chromium-driver).

Shared by the tests of ``/docs`` and ``/redoc`` (``test_docs_offline``) and of
the web console (``test_console``, ``test_console_browser``); the ``browser``
fixture is in ``conftest.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

T = TypeVar("T")

#: Attributes whose value a browser loads or follows (``spec-url`` is ReDoc's).
URL_ATTRIBUTES = {"src", "href", "srcset", "action", "formaction", "poster", "data", "spec-url"}
#: Sources a directive may list: none of them names another host.
LOCAL_SOURCES = {"'self'", "'none'", "'unsafe-inline'", "data:", "blob:"}
STRING_LITERAL = re.compile(r""""((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|`([^`]*)`""")
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]*)""")


class PageParser(HTMLParser):
    """The URLs in a page's attributes, the text of its inline scripts and styles, and every element."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self.inline_styles: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.open_text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
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


def chromium_and_driver() -> tuple[str, str]:
    """Debian's ``chromium`` and ``chromedriver``; without them, skip (fail where ``CI`` is set)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        reason = "needs Debian's chromium and chromium-driver (make deb-packages installs them)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, where the browser test must run")
        pytest.skip(reason)
    return chromium, driver


@contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    """Headless Chromium with its console and network logs kept, quit on the way out."""
    binary, driver = chromium_and_driver()
    options = webdriver.ChromeOptions()
    # Both paths given, so Selenium never looks for (or downloads) a browser or driver of its own.
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
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


def console_errors(browser: WebDriver) -> list[str]:
    """The errors in the page's console since the last read (a refusal by the Content-Security-Policy shows here)."""
    return [entry["message"] for entry in read_log(browser, "browser") if entry["level"] == "SEVERE"]


def wait_until(browser: WebDriver, read: Callable[[WebDriver], T], done: Callable[[T], bool]) -> T:
    """What ``read`` finds once ``done`` accepts it, or at the deadline (the assertion after it shows the value)."""
    deadline = time.monotonic() + RENDER_TIMEOUT
    value = read(browser)
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.25)
        value = read(browser)
    return value


#: The screenshots the tests took, listed at the end of the run (``conftest.pytest_terminal_summary``).
SCREENSHOTS: list[Path] = []


def save_screenshot(browser: WebDriver, path: Path) -> None:
    """The whole page as a PNG at ``path`` (the window made as tall as the page for it)."""
    width, height = browser.get_window_size()["width"], browser.get_window_size()["height"]
    full = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, max(height, full + 120))
    try:
        browser.save_screenshot(str(path))
    finally:
        browser.set_window_size(width, height)
    SCREENSHOTS.append(path)


def requests_through_now(browser: WebDriver, origin: str) -> list[str]:
    """Every request the page began since ``open_page``, read until one it is made to send now shows: the log is
    in order, so all it began before are there (no time to guess for the log to settle). Fails at the deadline."""
    marker = f"{origin}/livez?through={uuid.uuid4().hex}"
    browser.execute_script("fetch(arguments[0])", marker)
    urls: list[str] = []
    deadline = time.monotonic() + RENDER_TIMEOUT
    while marker not in urls:
        assert time.monotonic() < deadline, f"the page's request for {marker} never reached the log: {urls}"
        time.sleep(0.1)
        urls += requested_urls(browser)
    return urls
