"""A running server from the command line: its model repository (``stevedore-server models index|load|unload``)
and its jobs (``stevedore-server jobs list|show|logs|cancel``).

Plain HTTP with the standard library, so the commands need nothing the core
does not install. An API key comes from ``STEVEDORE_API_KEY`` (never a flag: a
command line is visible to every user of the machine). Redirects are not
followed: urllib would send the key on to wherever the ``Location`` points; a
redirect is an error that names it, so the user gives ``--url`` the address
that answers.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

from stevedore_server.base.errors import RemoteError

API_KEY_ENV = "STEVEDORE_API_KEY"
#: Seconds a command waits for the server: a load loads and self-tests a model.
TIMEOUT = 300.0


def call(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """POST ``body`` (JSON) to ``url`` + ``path``; the parsed answer, or RemoteError with the server's message."""
    request = urllib.request.Request(
        url.rstrip("/") + path, data=json.dumps(body or {}).encode(), method="POST",
        headers={"Content-Type": "application/json"} | authorization(),
    )  # fmt: skip
    return send(url, request)


def fetch(url: str, path: str, method: str = "GET", query: dict[str, Any] | None = None) -> Any:
    """GET (or DELETE) ``url`` + ``path`` with the query's parameters that are set; the parsed answer."""
    parameters = urlencode({key: value for key, value in (query or {}).items() if value is not None})
    full = url.rstrip("/") + path + (f"?{parameters}" if parameters else "")
    return send(url, urllib.request.Request(full, method=method, headers=authorization()))


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as it is, never followed (with the ``Authorization`` header) elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the redirect's HTTPError


OPENER = urllib.request.build_opener(NoRedirects())


def send(url: str, request: urllib.request.Request) -> Any:
    try:
        with OPENER.open(request, timeout=TIMEOUT) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        if 300 <= error.code < 400:
            raise RemoteError(redirected(url, error)) from None
        raise RemoteError(f"{error.code} from {url}: {message_of(error.read())}") from None
    except (urllib.error.URLError, OSError) as error:
        raise RemoteError(f"cannot reach {url}: {getattr(error, 'reason', error)}") from None


def redirected(url: str, error: urllib.error.HTTPError) -> str:
    """The message of a redirect not followed; the ``Location`` quoted, as it may hold any character."""
    location = error.headers.get("Location")
    target = f"a redirect to {location!r}" if location else "a redirect"
    return (
        f"{error.code} from {url}: {target}, not followed (the API key goes to the --url given only): "
        "give --url the server's own address"
    )


def authorization() -> dict[str, str]:
    key = os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


def message_of(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:500]


def index(url: str, ready_only: bool = False) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = call(url, "/v2/repository/index", {"ready": ready_only})
    return answer


def load(url: str, name: str) -> None:
    call(url, f"/v2/repository/models/{quote(name, safe='')}/load")


def unload(url: str, name: str) -> None:
    call(url, f"/v2/repository/models/{quote(name, safe='')}/unload")


def list_jobs(url: str, model: str | None, state: str | None, limit: int) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = fetch(url, "/jobs", query={"model": model, "state": state, "limit": limit})["jobs"]
    return answer


def show_job(url: str, job_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = fetch(url, f"/jobs/{quote(job_id, safe='')}")
    return answer


def job_logs(url: str, job_id: str) -> list[dict[str, Any]]:
    """Every log line of the job, page after page."""
    lines: list[dict[str, Any]] = []
    while True:
        after = lines[-1]["id"] if lines else None
        page = fetch(url, f"/jobs/{quote(job_id, safe='')}/logs", query={"after": after})["lines"]
        if not page:
            return lines
        lines += page


def cancel_job(url: str, job_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = fetch(url, f"/jobs/{quote(job_id, safe='')}", method="DELETE")
    return answer
