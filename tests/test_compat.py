"""The original ml-py-stevedore routes keep their status codes and bodies."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from .helpers import Registers
from .predictors import ROWS, FailsLoad, NoScore, RowSum


@pytest.fixture
def legacy(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(Registers(RowSum(created="2024-01-02T03:04:05Z"), NoScore(), FailsLoad()))


@pytest.mark.parametrize("slash", ["", "/"])
def test_health_routes(legacy: TestClient, slash: str) -> None:
    assert legacy.get(f"/health/live{slash}").json() == "LIVE"
    assert legacy.get(f"/health/ready{slash}?model=rowsum").json() == "READY"
    not_ready = legacy.get(f"/health/ready{slash}?model=failsload")
    assert not_ready.status_code == 503 and not_ready.json()["detail"] == "NOT_READY"
    assert legacy.get(f"/health/ready{slash}").status_code == 503  # every model: one failed
    health = legacy.get(f"/health{slash}").json()
    assert health["live"] is True and health["ready"] == {"rowsum": True, "noscore": True, "failsload": False}
    assert isinstance(health["uptime"], float)
    assert legacy.get(f"/health/uptime{slash}").json() >= 0


@pytest.mark.parametrize("slash", ["", "/"])
def test_catalogue_routes(legacy: TestClient, slash: str) -> None:
    assert legacy.get(f"/list{slash}").json() == ["rowsum", "noscore", "failsload"]
    assert legacy.get(f"/version{slash}?model=rowsum").json() == "1"
    assert legacy.get(f"/creation_time{slash}?model=rowsum").json() == "2024-01-02T03:04:05Z"
    assert legacy.get(f"/predict_schema{slash}?model=rowsum").json() == ROWS
    assert legacy.get(f"/score_schema{slash}?model=noscore").json() is None


@pytest.mark.parametrize("slash", ["", "/"])
def test_predict_and_score_answer_the_bare_result(legacy: TestClient, slash: str) -> None:
    assert legacy.post(f"/predict{slash}", json={"predictor": "rowsum", "payload": [[1, 2], [3]]}).json() == [3, 3]
    assert legacy.post(f"/score{slash}", json={"predictor": "rowsum", "payload": [{"x": [1], "y": 1}]}).json() == 1.0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/version?model=nope", None),
        ("get", "/health/ready/?model=nope", None),
        ("post", "/predict", {"predictor": "nope", "payload": [[1]]}),
        ("post", "/score/", {"predictor": "noscore", "payload": [{"x": [1], "y": 1}]}),
    ],
)
def test_unknown_model_is_400_as_in_the_original(legacy: TestClient, method: str, path: str, body: object) -> None:
    response = legacy.request(method.upper(), path, json=body)
    assert response.status_code == 400
    assert response.json()["detail"] == response.json()["error"]


def test_errors(legacy: TestClient) -> None:
    assert legacy.get("/version").status_code == 422  # model is required, as it was
    assert legacy.post("/predict", json={"payload": [[1]]}).status_code == 400
    invalid = legacy.post("/predict", json={"predictor": "rowsum", "payload": [["x"]]})
    assert invalid.status_code == 422 and invalid.json()["details"][0]["path"] == "/0/0"
    assert legacy.post("/predict", json={"predictor": "failsload", "payload": [[1]]}).status_code == 503
