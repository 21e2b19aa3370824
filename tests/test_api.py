"""The stevedore routes, in-process through the real app and lifespan."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from stevedore_server.base.settings import Settings

from .helpers import Registers
from .predictors import (
    ROWS,
    BadFixture,
    FailsLoad,
    NaNOnRequest,
    NaNScore,
    NoScore,
    NotJSON,
    RaisesOnNegative,
    RowSum,
    Slow,
)


def test_livez(client: TestClient) -> None:
    response = client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "live"}


def test_ready_and_healthy_when_every_model_passes(client: TestClient) -> None:
    assert client.get("/readyz").json() == {"ready": True, "reasons": []}
    report = client.get("/healthz").json()
    assert report["status"] == "ok"
    assert report["models"] == [{"name": "rowsum", "version": "1", "state": "ready", "reason": None}]
    assert report["checks"]["models"]["ok"] is True
    assert report["uptime"] >= 0


def test_a_failed_model_is_reported_and_the_others_served(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum(), BadFixture(), FailsLoad()))
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert any("badfixture" in reason and "a bug in the plugin" in reason for reason in ready.json()["reasons"])
    health = client.get("/healthz")
    assert health.status_code == 503
    states = {m["name"]: (m["state"], m["reason"]) for m in health.json()["models"]}
    assert states["rowsum"] == ("ready", None)
    assert states["failsload"][0] == "failed" and "OSError: artifact missing" in states["failsload"][1]
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["badfixture"]["ready"] is False and "predict_fixture" in models["badfixture"]["reason"]
    assert client.post("/models/rowsum/predict", json=[[1, 2]]).json()["predictions"] == [3]
    not_ready = client.post("/models/failsload/predict", json=[[1, 2]])
    assert not_ready.status_code == 503 and "artifact missing" in not_ready.json()["error"]
    assert client.get("/models/failsload/ready").status_code == 503
    assert client.get("/models/rowsum/ready").json() == {
        "name": "rowsum",
        "version": "1",
        "ready": True,
        "reason": None,
    }


def test_non_json_output_fails_the_self_test(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(NotJSON()))
    entry = client.get("/models/notjson").json()
    assert entry["state"] == "failed"
    assert "self-test failed" in entry["reason"] and "predict on predict_fixture" in entry["reason"]


def test_catalogue_entry(client: TestClient) -> None:
    models = client.get("/models").json()
    assert models["failed_plugins"] == []
    (entry,) = models["models"]
    assert entry["name"] == "rowsum" and entry["version"] == "1" and entry["versions"] == ["1"]
    assert entry["ready"] is True and entry["description"] == "sums rows"
    assert entry["created"].endswith("Z")
    assert entry["links"]["predict"] == "/models/rowsum/versions/1/predict"
    assert client.get("/models/rowsum").json() == entry
    assert client.get("/models/rowsum/versions/1").json() == entry


def test_schemas(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum(), NoScore()))
    assert client.get("/models/rowsum/schemas/predict").json() == ROWS
    assert client.get("/models/rowsum/versions/1/schemas/score").json()["items"]["required"] == ["x", "y"]
    missing = client.get("/models/noscore/schemas/score")
    assert missing.status_code == 404 and "no score service" in missing.json()["error"]


def test_predict(client: TestClient) -> None:
    response = client.post("/models/rowsum/predict", json=[[1, 2], [3, 4.5]])
    assert response.status_code == 200
    assert response.json() == {"model_name": "rowsum", "model_version": "1", "predictions": [3, 7.5]}
    versioned = client.post("/models/rowsum/versions/1/predict", json=[[1]])
    assert versioned.json()["predictions"] == [1]


def test_score_on_a_payload_and_on_the_fixture(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum(), NoScore()))
    posted = client.post("/models/rowsum/score", json=[{"x": [1, 1], "y": 2}])
    assert posted.json() == {"model_name": "rowsum", "model_version": "1", "score": 1.0}
    assert client.get("/models/rowsum/versions/1/score").json()["score"] == 0.5
    assert client.get("/models/noscore/score").status_code == 404
    assert client.post("/models/noscore/score", json=[{"x": [1], "y": 1}]).status_code == 404


def test_payload_failing_the_schema_is_422_with_pointers(client: TestClient) -> None:
    response = client.post("/models/rowsum/predict", json=[[1, "two"], []])
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "payload does not match the model's schema"
    paths = {detail["path"] for detail in body["details"]}
    assert paths == {"/0/1", "/1"}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[[1, 2]", "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"[[1, 2]]", "application/xml"),
    ],
)
def test_malformed_or_wrong_content_is_400(client: TestClient, body: bytes, content_type: str) -> None:
    response = client.post("/models/rowsum/predict", content=body, headers={"content-type": content_type})
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
    assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200  # still serving


def test_curl_default_content_type_is_accepted(client: TestClient) -> None:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post("/models/rowsum/predict", content=b"[[2, 2]]", headers=headers).json()["predictions"] == [4]


def test_unknown_model_or_version_is_404(client: TestClient) -> None:
    for path in (
        "/models/nope",
        "/models/nope/predict",
        "/models/rowsum/versions/9",
        "/models/rowsum/versions/9/score",
    ):
        response = client.get(path) if not path.endswith("predict") else client.post(path, json=[[1]])
        assert response.status_code == 404, path
        assert "error" in response.json()
    assert client.get("/no/such/route").json() == {"error": "Not Found"}


def test_wrong_method_is_405_json(client: TestClient) -> None:
    response = client.get("/models/rowsum/predict")
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}


def test_model_error_is_500_with_an_error_id_in_the_log(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(Registers(RaisesOnNegative(), RowSum()))
    response = client.post("/models/fragile/predict", json=[[-1]])
    assert response.status_code == 500
    body = response.json()
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert body["error_id"] in body["error"]
    logged = [r for r in caplog.records if body["error_id"] in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert client.post("/models/fragile/predict", json=[[1]]).status_code == 200
    assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200


def test_non_finite_output_is_the_models_failure(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(NaNScore(), RowSum()))
    entry = client.get("/models/nanscore").json()
    assert entry["state"] == "failed" and "NaN or infinity" in entry["reason"]  # caught by the self-test
    assert client.get("/readyz").status_code == 503


def test_non_finite_output_on_a_request_is_a_500(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(NaNOnRequest()))
    response = client.post("/models/nan-on-request/predict", json=[[1e308, 1e308]])
    assert response.status_code == 500 and "ValueError" in response.json()["error"]
    assert client.post("/models/nan-on-request/predict", json=[[1, 2]]).json()["predictions"] == [3]


def test_highest_version_serves_unversioned_routes(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum(version="1.9"), RowSum(version="1.10"), RowSum(version="1.2")))
    assert client.post("/models/rowsum/predict", json=[[1]]).json()["model_version"] == "1.10"
    assert client.get("/models/rowsum").json()["versions"] == ["1.10", "1.9", "1.2"]
    assert client.post("/models/rowsum/versions/1.2/predict", json=[[1]]).json()["model_version"] == "1.2"


def test_body_over_the_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum()), settings=Settings(max_body_size=64))
    response = client.post("/models/rowsum/predict", json=[[1] * 100])
    assert response.status_code == 413
    assert "limit of 64 bytes" in response.json()["error"]


def test_livez_answers_while_a_prediction_runs(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(Slow()))
    Slow.started.clear()
    Slow.release.clear()
    result: dict[str, int] = {}

    def post() -> None:
        result["status"] = client.post("/models/slow/predict", json=[[5]]).status_code

    worker = threading.Thread(target=post)
    worker.start()
    try:
        assert Slow.started.wait(timeout=5)
        assert client.get("/livez").status_code == 200
        assert worker.is_alive()  # the prediction is still blocked in its thread
    finally:
        Slow.release.set()
        worker.join(timeout=10)
    assert result == {"status": 200}


def test_openapi_shows_each_models_schema_and_fixture(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum(), NoScore(), FailsLoad()))
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/models/rowsum/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == ROWS and body["example"] == [[1, 2]]
    assert "/models/rowsum/versions/1/score" in spec["paths"]
    assert "/models/noscore/score" not in spec["paths"]
    assert "/models/failsload/predict" not in spec["paths"]
    assert spec["paths"]["/models/{name}/predict"]["post"]["responses"]["422"]
    docs = client.get("/docs").text
    assert "SwaggerUIBundle" in docs and "/openapi.json" in docs
    assert "redoc" in client.get("/redoc").text.lower()


def test_fastapi_is_loaded_for_the_docs_only() -> None:
    """FastAPI and pydantic (15 MiB) stay out of a server whose docs nobody reads."""
    script = """
import sys
from starlette.testclient import TestClient
from stevedore_server.frontends.app import create_app
from stevedore_server.cli import main
from stevedore_server.base.settings import Settings
with TestClient(create_app(Settings(plugins=("none",))), base_url="http://localhost") as client:
    assert client.get("/livez").status_code == 200
    assert "fastapi" not in sys.modules and "pydantic" not in sys.modules, "loaded at startup"
    assert client.get("/openapi.json").json()["info"]["title"] == "stevedore-server"
    assert "fastapi" in sys.modules
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
