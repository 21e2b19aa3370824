"""A running server's model repository, from the command line: ``stevedore-server models index|load|unload``.

Plain HTTP with the standard library, so the commands need nothing the core
does not install. An API key comes from ``STEVEDORE_API_KEY`` (never a flag: a
command line is visible to every user of the machine).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from .errors import RemoteError

API_KEY_ENV = "STEVEDORE_API_KEY"
#: Seconds a command waits for the server: a load loads and self-tests a model.
TIMEOUT = 300.0


def call(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """POST ``body`` (JSON) to ``url`` + ``path``; the parsed answer, or RemoteError with the server's message."""
    request = urllib.request.Request(
        url.rstrip("/") + path, data=json.dumps(body or {}).encode(), method="POST",
        headers={"Content-Type": "application/json"} | authorization(),
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raise RemoteError(f"{error.code} from {url}: {message_of(error.read())}") from None
    except (urllib.error.URLError, OSError) as error:
        raise RemoteError(f"cannot reach {url}: {getattr(error, 'reason', error)}") from None


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
