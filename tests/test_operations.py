"""Operations in-process: API keys, CORS, request ids and logs, JSON depth, metrics of one process."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stevedore_server.base.errors import StartupError
from stevedore_server.base.logs import JSONFormatter, RequestIdFilter
from stevedore_server.base.settings import Settings
from stevedore_server.frontends.app import create_app
from stevedore_server.frontends.state import of_lifespan

from .helpers import Registers, fresh_manager
from .predictors import RaisesOnNegative, RowSum

KEY = "k3y-for-tests"
V2_ROW = {"inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP64", "data": [1]}]}
PROTECTED = [
    ("GET", "/models", None),
    ("GET", "/models/rowsum", None),
    ("GET", "/models/rowsum/schemas/predict", None),
    ("POST", "/models/rowsum/predict", [[1]]),
    ("POST", "/models/rowsum/versions/1/score", [{"x": [1], "y": 1}]),
    ("GET", "/models/rowsum/score", None),
    ("GET", "/list", None),
    ("POST", "/predict", {"predictor": "rowsum", "payload": [[1]]}),
    ("GET", "/v2/models/rowsum", None),
    ("POST", "/v2/models/rowsum/infer", V2_ROW),
    ("GET", "/openapi.json", None),
]
OPEN = ["/livez", "/readyz", "/healthz", "/metrics", "/health", "/health/live", "/v2/health/ready",
        "/models/rowsum/ready", "/v2/models/rowsum/versions/1/ready"]  # fmt: skip


@pytest.fixture
def secured(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(Registers(RowSum()), settings=Settings(api_keys=(KEY, "another")))


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_protected_routes_need_a_key(secured: TestClient, method: str, path: str, body: object) -> None:
    missing = secured.request(method, path, json=body)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="stevedore"'
    assert "API key is required" in missing.json()["error"]
    wrong = secured.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    basic = secured.request(method, path, json=body, headers={"Authorization": f"Basic {KEY}"})
    assert basic.status_code == 401
    right = secured.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert right.status_code == 200, right.text


@pytest.mark.parametrize("path", OPEN)
def test_health_and_metrics_stay_open(secured: TestClient, path: str) -> None:
    assert secured.get(path).status_code == 200


def test_health_can_be_protected_too(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum()), settings=Settings(api_keys=(KEY,), auth_health=True))
    assert client.get("/readyz").status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/readyz", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_keys_from_a_file_of_digests(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# team A\n{hashlib.sha256(KEY.encode()).hexdigest()}\n\n")
    client = make_client(Registers(RowSum()), settings=Settings(api_key_file=str(keys)))
    assert client.get("/models").status_code == 401
    assert client.get("/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_a_bad_key_file_is_a_startup_error(tmp_path: Path) -> None:
    from stevedore_server.frontends.app import create_app

    keys = tmp_path / "keys"
    keys.write_text("not-a-digest\n")
    with pytest.raises(StartupError, match=r"line 1 of .* is not a SHA-256 hex digest"):
        create_app(Settings(api_key_file=str(keys)))


def test_keys_never_reach_the_log(secured: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secured.get("/models", headers={"Authorization": f"Bearer {KEY}"})
    secured.get("/models", headers={"Authorization": "Bearer wrong-key-123"})
    logged = "\n".join(record.getMessage() + str(vars(record)) for record in caplog.records)
    assert KEY not in logged and "wrong-key-123" not in logged


def test_cors(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum()), settings=Settings(cors_origins=("https://app.example",)))
    preflight = client.options(
        "/models/rowsum/predict",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    answer = client.post("/models/rowsum/predict", json=[[1]], headers={"Origin": "https://app.example"})
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    other = client.post("/models/rowsum/predict", json=[[1]], headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_unless_configured(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum()))
    answer = client.post("/models/rowsum/predict", json=[[1]], headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in answer.headers


def test_request_ids(make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture) -> None:
    client = make_client(Registers(RowSum()))
    caplog.set_level(logging.INFO, logger="stevedore")
    given = client.get("/livez", headers={"X-Request-ID": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    made = client.get("/livez", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{20}", made)  # made: a per-process prefix and a counter
    access = [r for r in caplog.records if r.name == "stevedore.access"]
    assert [r.getMessage().split('"')[1] for r in access] == ["GET /livez", "GET /livez"]


def test_the_access_log_can_be_turned_off(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(Registers(RowSum()), settings=Settings(access_log=False))
    caplog.set_level(logging.INFO, logger="stevedore")
    client.get("/livez")
    assert not [r for r in caplog.records if r.name == "stevedore.access"]


def test_a_500_is_logged_once_with_its_error_id_and_request_id(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(Registers(RaisesOnNegative()))
    caplog.set_level(logging.INFO)
    response = client.post("/models/fragile/predict", json=[[-1]], headers={"X-Request-ID": "req-500"})
    error_id = response.json()["error_id"]
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == 1 and error_id in with_traceback[0].getMessage()
    record = with_traceback[0]
    RequestIdFilter().filter(record)  # what the handler's filter does
    line = json.loads(JSONFormatter().format(record))
    assert "ValueError: negative input" in line["traceback"]


def test_json_lines_carry_the_request_id() -> None:
    from stevedore_server.base.logs import request_id

    token = request_id.set("abc")
    try:
        record = logging.LogRecord("stevedore.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
        RequestIdFilter().filter(record)
        line = json.loads(JSONFormatter().format(record))
    finally:
        request_id.reset(token)
    assert line["message"] == "hello world" and line["request_id"] == "abc" and line["level"] == "info"


@pytest.mark.parametrize("route", ["/models/rowsum/predict", "/v2/models/rowsum/infer"])
def test_deep_nesting_is_400(make_client: Callable[..., TestClient], route: str) -> None:
    client = make_client(Registers(RowSum()), settings=Settings(max_json_depth=10))
    deep = b"[" * 50 + b"]" * 50
    response = client.post(route, content=deep, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "deeper than 10 levels" in response.json()["error"]
    fine = b'[["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]]'
    assert client.post("/predict", content=b'{"predictor": "rowsum", "payload": [[1]]}').status_code == 200
    if route.startswith("/models"):
        assert client.post(route, content=fine).status_code == 422  # brackets in strings do not count


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_exactly_the_requests_made(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum(), RaisesOnNegative()))
    for _ in range(3):
        client.post("/models/rowsum/predict", json=[[1]])
    client.post("/models/rowsum/predict", json=[["x"]])
    client.post("/models/fragile/predict", json=[[-1]])
    client.get("/models/rowsum/score")
    text = client.get("/metrics").text
    route = "/models/{name}/predict"
    assert metric(text, "stevedore_http_requests_total", route=route, method="POST", status="200") == 3
    assert metric(text, "stevedore_http_requests_total", route=route, method="POST", status="422") == 1
    assert metric(text, "stevedore_http_requests_total", route=route, method="POST", status="500") == 1
    assert metric(text, "stevedore_http_request_duration_seconds_count", route=route, method="POST") == 5
    assert metric(text, "stevedore_inferences_total", model="rowsum", action="predict") == 3
    assert metric(text, "stevedore_inferences_total", model="rowsum", action="score") == 1
    assert metric(text, "stevedore_inference_errors_total", model="fragile", action="predict", kind="error") == 1
    assert metric(text, "stevedore_inference_duration_seconds_count", model="rowsum", action="predict") == 3
    assert metric(text, "stevedore_model_ready", model="rowsum", version="1") == 1
    assert metric(text, "stevedore_info", component="stevedore-server") == 1


def test_draining_turns_readiness_503_and_closes_every_connection(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum()))
    answer = client.post("/models/rowsum/predict", json=[[1]])
    assert answer.status_code == 200 and "connection" not in answer.headers
    of_lifespan(client.app_state).lifecycle.drain()  # what the process entry point does on SIGTERM
    readiness = client.get("/readyz")
    assert readiness.status_code == 503 and readiness.headers["connection"] == "close"
    assert "shutting down" in readiness.text
    answer = client.post("/models/rowsum/predict", json=[[1]])
    assert answer.status_code == 200 and answer.headers["connection"] == "close"
    assert client.post("/models/rowsum/predict", json=[["x"]]).headers["connection"] == "close"


@pytest.mark.parametrize("freeze", [True, False])
def test_the_app_leaves_the_heap_unfrozen(freeze: bool) -> None:
    # Freezing is the serving process's (process.DrainingServer, checked against the real server): not the
    # factory's, which tests call a hundred times.
    app = create_app(Settings(freeze_heap=freeze), fresh_manager(Registers(RowSum())))
    with TestClient(app, base_url="http://localhost") as client:
        assert client.get("/readyz").status_code == 200
        assert gc.get_freeze_count() == 0
