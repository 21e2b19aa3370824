"""HTTP to the servers under test, on the loopback interface only and never through a proxy."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message

from .procs import Server

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class NotLoopback(Exception):
    """A URL outside this machine: the benchmark sends traffic to 127.0.0.1 only."""


class NotReady(Exception):
    """A server that exited, or did not answer its ready URL in time."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: bytes


def check_loopback(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise NotLoopback(f"refusing {url!r}: the benchmark only talks to 127.0.0.1")
    return url


def send(url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 60) -> Answer:
    """GET (no body) or POST; an HTTP error status is an answer, not an exception."""
    request = urllib.request.Request(check_loopback(url), data=body, headers=headers or {})
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read())


def answers_200(url: str) -> bool:
    try:
        return send(url, timeout=2).status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(url: str, server: Server, timeout: float) -> float:
    """Seconds from the server's start until ``url`` first answers 200."""
    deadline = server.started + timeout
    while time.monotonic() < deadline:
        if answers_200(url):
            return time.monotonic() - server.started
        if not server.alive():
            raise NotReady(f"the server exited with status {server.process.returncode} before {url} answered 200")
        time.sleep(0.05)
    raise NotReady(f"{url} did not answer 200 within {timeout:.0f} s")
