"""The bad input catalogue, against a real server: each bad request gets its documented 4xx, never a 5xx or a
traceback, and the server answers a good prediction after each.

Requests go out on raw sockets, byte for byte: an HTTP client would normalise
dot segments, refuse invalid bytes, or add the Content-Length a test leaves out.
Where the answer comes from our routes it is JSON ``{"error": ...}``; a request
the HTTP layer itself cannot parse gets uvicorn's plain-text 400.
"""

from __future__ import annotations

import http.client
import re
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from .venvs import Server, Venv

#: A real ``stevedore-server run`` over loopback (its own, started by the ``server`` fixture below).
pytestmark = pytest.mark.server

MAX_BODY = 1024 * 1024
GOOD_ROWS = b"[[5.1, 3.5, 1.4, 0.2]]"
GIB = 1024**3

#: Every route that reads a body, and how each wraps a predict payload.
BODY_ROUTES = ["/models/iris/predict", "/models/iris/versions/1/score", "/v2/models/iris/infer", "/predict", "/score"]


def wrapped(route: str, payload: bytes) -> bytes:
    """``payload`` where ``route`` expects the model's input: bare, in a V2 tensor, or in an original-API body."""
    if route.startswith("/v2/"):
        return b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ' + payload + b"}]}"
    if route in ("/predict", "/score"):
        return b'{"predictor": "iris", "payload": ' + payload + b"}"
    return payload


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("bad-input") / "server.log"
    arguments = ("--plugins", "stevedore-sklearn-logreg", "--max-body-size", str(MAX_BODY))
    running = Server.start(Venv(Path(sys.prefix), ()), log, *arguments)
    try:
        running.wait_for("/readyz")
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def still_serving(server: Server) -> Iterator[None]:
    """After each test: a good prediction still answers, and the server logged no error for any bad request (read
    once the good one's access line is written, so the log holds what came before it)."""
    logged_before = server.log_path.stat().st_size
    yield
    request_id = uuid.uuid4().hex
    answer = exchange(server, request("POST", "/models/iris/predict", GOOD_ROWS, {"X-Request-ID": request_id}))
    assert answer.status == 200 and answer.json()["predictions"] == [0], answer
    lines_about(server, request_id)
    new_lines = log_since(server, logged_before)
    errors = [line for line in new_lines.splitlines() if " ERROR " in line or "Traceback" in line]
    assert errors == [], "the server logged errors for client mistakes:\n" + new_lines[-10_000:]


def log_since(server: Server, offset: int) -> str:
    with server.log_path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


# -- raw HTTP -------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def __str__(self) -> str:
        return f"{self.status} {self.body[:500]!r}"


def as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def request(
    method: str, target: str | bytes, body: bytes = b"", headers: Mapping[str, str | bytes | None] | None = None
) -> bytes:
    """One HTTP/1.1 request, exactly as written; a header given as None is left out."""
    fields: dict[str, str | bytes | None] = {"Host": "127.0.0.1", "Connection": "close"}
    fields |= {"Content-Type": "application/json", "Content-Length": str(len(body))}
    fields |= headers or {}
    lines = [as_bytes(method) + b" " + as_bytes(target) + b" HTTP/1.1"]
    lines += [as_bytes(name) + b": " + as_bytes(value) for name, value in fields.items() if value is not None]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def exchange(server: Server, data: bytes | Iterable[bytes], half_close: bool = False) -> Answer:
    """Send ``data`` (one piece, or pieces one after another) and read the answer."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        try:
            for piece in [data] if isinstance(data, bytes) else data:
                connection.sendall(piece)
            if half_close:
                connection.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered without reading all of it: its answer is still there to read
        response = http.client.HTTPResponse(connection)
        response.begin()
        return Answer(response.status, response.msg, response.read())


def assert_refused(answer: Answer, status: int, ours: bool = True) -> dict[str, Any]:
    """``status``, no traceback; from our routes, a JSON ``{"error": ...}`` body (returned)."""
    assert answer.status == status, str(answer)
    assert b"Traceback" not in answer.body and b'File "' not in answer.body, str(answer)
    if not ours:
        return {}
    assert answer.headers.get_content_type() == "application/json", str(answer)
    body = answer.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], str(answer)
    return body


def post(server: Server, route: str, body: bytes, **headers: str | bytes | None) -> Answer:
    return exchange(server, request("POST", route, body, {name.replace("_", "-"): v for name, v in headers.items()}))


# -- malformed JSON -------------------------------------------------------------

MALFORMED = {
    "empty": b"",
    "whitespace": b" \r\n\t",
    "unclosed": b"[[5.1, 3.5",
    "cut in a number": b"[[5.1, 3.5, 1.4, 0.",
    "cut in a string": b'{"predictor": "ir',
    "cut in an escape": b'["\\u00',
    "trailing comma": b"[[5.1, 3.5, 1.4, 0.2],]",
    "trailing garbage": b"[[5.1, 3.5, 1.4, 0.2]] ]",
    "two documents": b"[] []",
    "single quotes": b"[['a']]",
    "NaN": b"[[NaN, 1, 1, 1]]",
    "Infinity": b"[[Infinity, 1, 1, 1]]",
    "bare word": b"nul",
    "comment": b"/* rows */ [[5.1, 3.5, 1.4, 0.2]]",
    "hex number": b"[[0x10, 1, 1, 1]]",
    "leading zero": b"[[01, 1, 1, 1]]",
    "byte order mark": b"\xef\xbb\xbf" + GOOD_ROWS,
    "UTF-16": GOOD_ROWS.decode().encode("utf-16"),
    "invalid UTF-8": b'[["\xff\xfe", 1, 1, 1]]',
    "raw control character": b'[["a\x01b", 1, 1, 1]]',
}


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_json_is_400(server: Server, route: str, body: bytes) -> None:
    assert_refused(post(server, route, body), 400)


def test_a_body_the_client_cuts_short_is_not_a_server_error(server: Server) -> None:
    """The client declares 100 bytes, sends 11 and stops: no answer is owed, but no 500 either."""
    request_id = uuid.uuid4().hex
    head = request("POST", "/models/iris/predict", b"", {"Content-Length": "100", "X-Request-ID": request_id})
    try:
        answer: Answer | None = exchange(server, head + GOOD_ROWS[:11], half_close=True)
    except (http.client.RemoteDisconnected, ConnectionResetError):
        answer = None
    if answer is not None:
        assert_refused(answer, 400)
    about_it = lines_about(server, request_id)
    assert not [line for line in about_it if " ERROR " in line or '" 500 ' in line], "\n".join(about_it)


def lines_about(server: Server, request_id: str, deadline: float = 30.0) -> list[str]:
    """The log lines about one request, once its access line is written (the last, whatever became of the
    request); the test fails if it never is."""
    stop_at = time.monotonic() + deadline
    while True:
        lines = [line for line in log_since(server, 0).splitlines() if request_id in line]
        if any("stevedore.access" in line for line in lines):
            return lines
        if time.monotonic() > stop_at:
            pytest.fail(f"no access line for request {request_id} in {deadline:.0f} s:\n{log_since(server, 0)[-5000:]}")
        time.sleep(0.05)


# -- content types --------------------------------------------------------------

MULTIPART = (
    b'--b\r\nContent-Disposition: form-data; name="rows"; filename="rows.json"\r\n'
    b"Content-Type: application/json\r\n\r\n" + GOOD_ROWS + b"\r\n--b--\r\n"
)
WRONG_TYPES = {
    "XML": ("application/xml", b"<rows><row>5.1 3.5 1.4 0.2</row></rows>"),
    "multipart": ("multipart/form-data; boundary=b", MULTIPART),
    "form, not JSON": ("application/x-www-form-urlencoded", b"rows=5.1&rows=3.5&rows=1.4&rows=0.2"),
    "HTML": ("text/html; charset=utf-8", b"<p>" + GOOD_ROWS + b"</p>"),
    "binary": ("application/octet-stream", b"\x00\x01\x02\xff"),
    "no such type": ("application/vnd.stevedore+msgpack", b"\x91\x94\xcb"),
    "type not in ASCII": (b"\xff\xfe", GOOD_ROWS),
}


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize(("content_type", "body"), WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_content_that_is_not_json_is_400(server: Server, route: str, content_type: str | bytes, body: bytes) -> None:
    assert_refused(post(server, route, body, Content_Type=content_type), 400)


@pytest.mark.parametrize("content_type", [b"application/json\x01", b"application/json\r", b"application/\x00json"])
def test_a_header_http_does_not_allow_is_400_from_the_http_layer(server: Server, content_type: bytes) -> None:
    assert_refused(post(server, "/models/iris/predict", GOOD_ROWS, Content_Type=content_type), 400, ours=False)


# -- body size ------------------------------------------------------------------


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("declared", [MAX_BODY + 1, 10 * GIB], ids=["limit+1", "10GiB"])
def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(
    server: Server, route: str, declared: int
) -> None:
    answer = exchange(server, request("POST", route, b"", {"Content-Length": str(declared)}))
    assert f"exceeds the limit of {MAX_BODY} bytes" in assert_refused(answer, 413)["error"]


def chunked(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        yield b"%x\r\n" % len(piece) + piece + b"\r\n"
    yield b"0\r\n\r\n"


def padded(payload: bytes, size: int) -> bytes:
    """``payload`` followed by JSON whitespace up to ``size`` bytes."""
    return payload + b" " * (size - len(payload))


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_a_chunked_body_over_the_limit_is_413(server: Server, route: str) -> None:
    head = request("POST", route, b"", {"Content-Length": None, "Transfer-Encoding": "chunked"})
    answer = exchange(server, [head, *chunked(padded(wrapped(route, GOOD_ROWS), 2 * MAX_BODY))])
    assert f"exceeds the limit of {MAX_BODY} bytes" in assert_refused(answer, 413)["error"]


@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_read(server: Server, transfer: str) -> None:
    body = padded(GOOD_ROWS, MAX_BODY)
    if transfer == "chunked":
        head = request("POST", "/models/iris/predict", b"", {"Content-Length": None, "Transfer-Encoding": "chunked"})
        answer = exchange(server, [head, *chunked(body)])
    else:
        answer = post(server, "/models/iris/predict", body)
    assert answer.status == 200 and answer.json()["predictions"] == [0], str(answer)


# -- nesting --------------------------------------------------------------------


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize(
    "payload",
    [
        nested_arrays(100_000),
        nested_arrays(65),
        b'{"a": ' * 100 + b"1" + b"}" * 100,
        b'["' + b"]" * 100 + b'", ' + nested_arrays(65) + b"]",
    ],
    ids=["100000 arrays", "65 arrays", "100 objects", "66 arrays after closing brackets in a string"],
)
def test_nesting_deeper_than_the_limit_is_400(server: Server, route: str, payload: bytes) -> None:
    assert_refused(post(server, route, wrapped(route, payload)), 400)


def test_the_nesting_limit_names_itself(server: Server) -> None:
    error = assert_refused(post(server, "/models/iris/predict", nested_arrays(65)), 400)["error"]
    assert "nest" in error and "64" in error, error


def test_nesting_at_the_limit_and_brackets_in_strings_are_not_refused_for_depth(server: Server) -> None:
    """64 levels are allowed (the schema then refuses them: 422); brackets inside a string are no nesting."""
    assert_refused(post(server, "/models/iris/predict", nested_arrays(64)), 422)
    in_string = b'[["' + b"[" * 1000 + b'", 1, 1, 1]]'
    assert_refused(post(server, "/models/iris/predict", in_string), 422)


# -- unicode --------------------------------------------------------------------

UNICODE_VALUES = {
    "lone high surrogate": (b'"\\ud800"', 400),
    "lone low surrogate": (b'"\\udc00"', 400),
    "surrogate in UTF-8": (b'"\xed\xa0\x80"', 400),
    "NUL byte": (b'"a\x00b"', 400),
    "escaped NUL": (b'"\\u0000"', 422),
    "right-to-left override": ('"\u202eiris"'.encode(), 422),
    "emoji": ('"\U0001f40d"'.encode(), 422),
    "escaped emoji": (b'"\\ud83d\\udc0d"', 422),
    "noncharacter": (b'"\\uffff"', 422),
}


@pytest.mark.parametrize(("value", "status"), UNICODE_VALUES.values(), ids=UNICODE_VALUES.keys())
def test_unicode_in_payloads(server: Server, value: bytes, status: int) -> None:
    """Malformed strings are 400; well-formed odd ones fail the schema (422) and are echoed as valid JSON."""
    assert_refused(post(server, "/models/iris/predict", b"[[" + value + b", 1, 1, 1]]"), status)
    v2 = post(server, "/v2/models/iris/infer", wrapped("/v2/", b"[" + value + b", 1, 1, 1]"))
    assert_refused(v2, 400)  # the protocol's 400 for every client mistake
    original = post(server, "/predict", b'{"predictor": ' + value + b', "payload": ' + GOOD_ROWS + b"}")
    assert_refused(original, 400)  # malformed, or no model of that name


MODEL_NAMES = {
    "emoji": "%F0%9F%90%8D",
    "right-to-left override": "%E2%80%AEsiri",
    "NUL": "iris%00",
    "encoded surrogate": "%ED%A0%80",
    "invalid UTF-8": "%FF%FE",
    "control characters": "%01%1B%7F",
    "very long": "a" * 4000,
}


@pytest.mark.parametrize("name", MODEL_NAMES.values(), ids=MODEL_NAMES.keys())
def test_odd_model_names_are_unknown_models(server: Server, name: str) -> None:
    for target in (f"/models/{name}/predict", f"/models/{name}/versions/{name}/predict", f"/v2/models/{name}/infer"):
        assert_refused(post(server, target, GOOD_ROWS), 404)
    for target in (f"/models/{name}", f"/v2/models/{name}/ready", f"/models/{name}/schemas/predict"):
        assert_refused(exchange(server, request("GET", target)), 404)
    assert_refused(exchange(server, request("GET", f"/version?model={name}")), 400)  # the original API's 400


@pytest.mark.parametrize("target", ["/models/\U0001f40d/predict".encode(), b"/models/\xff/predict", b"/models/a\x00"])
def test_raw_bytes_no_url_may_hold_are_400_from_the_http_layer(server: Server, target: bytes) -> None:
    assert_refused(exchange(server, request("POST", target, GOOD_ROWS)), 400, ours=False)


@pytest.mark.parametrize("given", [b"\xff\xfe", "\u202e\U0001f40d".encode(), b"a" * 10_000, b"a b"])
def test_an_odd_request_id_is_replaced_not_echoed(server: Server, given: bytes) -> None:
    answer = post(server, "/models/iris/predict", GOOD_ROWS, X_Request_ID=given)
    assert answer.status == 200, str(answer)
    assert re.fullmatch(r"[0-9a-f]{20}", answer.headers["x-request-id"])


# -- methods --------------------------------------------------------------------


def allowed_methods() -> dict[str, set[str]]:
    """Every route of the server (with the example plugin) and the methods it answers."""
    routes: dict[str, set[str]] = {}
    for path in ("/livez", "/readyz", "/healthz", "/models", "/metrics", "/openapi.json", "/docs", "/redoc", "/v2"):
        routes[path] = {"GET"}
    routes |= {"/v2/health/live": {"GET"}, "/v2/health/ready": {"GET"}}
    for base in ("/models/iris", "/models/iris/versions/1"):
        routes |= {base: {"GET"}, f"{base}/ready": {"GET"}, f"{base}/predict": {"POST"}}
        routes |= {
            f"{base}/schemas/predict": {"GET"},
            f"{base}/schemas/score": {"GET"},
            f"{base}/score": {"GET", "POST"},
        }
    routes["/models/iris/versions/1"] = {"GET", "DELETE"}  # a trained version is removed so (an admin's)
    for base in ("/v2/models/iris", "/v2/models/iris/versions/1"):
        routes |= {base: {"GET"}, f"{base}/ready": {"GET"}, f"{base}/infer": {"POST"}}
    original = ["/health/live", "/health/ready", "/health", "/health/uptime", "/list", "/version", "/creation_time"]
    original += ["/predict_schema", "/score_schema"]
    for path in original:
        routes |= {path: {"GET"}, path + "/": {"GET"}}
    for path in ("/predict", "/score"):
        routes |= {path: {"POST"}, path + "/": {"POST"}}
    return routes


ROUTES = allowed_methods()


@pytest.mark.parametrize("path", ROUTES)
def test_a_wrong_method_is_405_with_the_allowed_ones(server: Server, path: str) -> None:
    for method in sorted({"GET", "POST", "PUT", "DELETE", "PATCH"} - ROUTES[path]):
        answer = exchange(server, request(method, path, GOOD_ROWS))
        assert_refused(answer, 405)
        allow = {token.strip() for token in answer.headers.get("allow", "").split(",")}
        assert ROUTES[path] <= allow, f"{method} {path}: Allow: {answer.headers.get('allow')}"


# -- path traversal -------------------------------------------------------------

TRAVERSALS = [
    ("POST", "/models/..%2F..%2Fetc/predict", 404),
    ("POST", "/models/%2e%2e/predict", 404),
    ("POST", "/models/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd/predict", 404),
    ("POST", "/models/../../etc/passwd", 404),
    ("POST", "/models/iris/../../etc/predict", 404),
    ("POST", "/models/./iris/predict", 404),
    ("POST", "/v2/models/../x/infer", 404),
    ("POST", "/v2/models/..%2F..%2Fetc/infer", 404),
    ("POST", "/v2/models/%2e%2e/versions/%2e%2e/infer", 404),
    ("GET", "/models/..%5C..%5Cetc", 404),
    ("GET", "/models/%252e%252e/schemas/predict", 404),
    ("GET", "/models/iris/versions/..%2F..%2F1", 404),
    ("GET", "/models/iris%2F..%2F..%2Fetc%2Fpasswd/schemas/predict", 404),
    ("GET", "//etc/passwd", 404),
    ("GET", "/models/%00/schemas/predict", 404),
    ("GET", "/predict_schema?model=../../etc/passwd", 400),
    ("GET", "/version?model=..%2F..%2Fetc%2Fpasswd", 400),
    ("GET", "/health/ready?model=/etc/passwd", 400),
]


@pytest.mark.parametrize(("method", "target", "status"), TRAVERSALS, ids=[t[1] for t in TRAVERSALS])
def test_path_traversal_in_model_names_is_an_unknown_model(
    server: Server, method: str, target: str, status: int
) -> None:
    answer = exchange(server, request(method, target, GOOD_ROWS if method == "POST" else b""))
    assert_refused(answer, status)
    assert b"root:" not in answer.body


@pytest.mark.parametrize("route", ["/predict", "/score"])
def test_path_traversal_in_an_original_api_body_is_an_unknown_model(server: Server, route: str) -> None:
    body = b'{"predictor": "../../etc/passwd", "payload": ' + GOOD_ROWS + b"}"
    assert "not found" in assert_refused(post(server, route, body), 400)["error"]
