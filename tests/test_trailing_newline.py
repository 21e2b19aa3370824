"""A trailing newline is no part of a name or an id: the model-name and request-id patterns end at ``\\Z``
(``$`` also matches before a final newline, so ``"m\\n"`` passed)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from stevedore_server.base.logs import RequestIds

from .helpers import Registers
from .predictors import NoScore, RowSum
from .venvs import Server


@pytest.mark.parametrize("given", ["abc\n", "abc\r\n", "\nabc"])
def test_a_request_id_with_a_line_end_is_replaced(given: str) -> None:
    assert RequestIds().of(given) != given
    assert RequestIds().of("abc") == "abc"


def test_the_app_does_not_echo_a_request_id_with_a_line_end(make_client: Callable[..., TestClient]) -> None:
    """The test client hands the header to the app as given (a real server's HTTP parser refuses it first: below)."""
    client = make_client(Registers(RowSum()))
    answer = client.get("/livez", headers={"X-Request-ID": "abc\n"})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] not in ("abc\n", "abc")
    assert client.get("/livez", headers={"X-Request-ID": "abc"}).headers["x-request-id"] == "abc"


def test_a_real_server_does_not_echo_a_request_id_with_a_line_end(example_server: Server) -> None:
    address = urlsplit(example_server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(
            b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: abc\n\r\nConnection: close\r\n\r\n"
        )
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert answer.startswith(b"HTTP/1.1 "), answer[:300]
    assert b"x-request-id: abc\r\n" not in head and b"x-request-id: abc\n" not in head, answer[:300]


@pytest.mark.parametrize("attribute", ["name", "version"])
def test_a_model_whose_name_or_version_ends_in_a_newline_is_refused_at_load(
    make_client: Callable[..., TestClient], attribute: str
) -> None:
    client = make_client(Registers(RowSum(**{attribute: "m\n"}), NoScore()))
    catalogue = client.get("/models").json()
    assert [model["name"] for model in catalogue["models"]] == ["noscore"]
    (failure,) = catalogue["failed_plugins"]
    assert f".{attribute} = 'm\\n'" in failure["error"] and "must be a non-empty string" in failure["error"]
