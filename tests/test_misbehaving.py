"""A misbehaving plugin gets the documented error for each misdeed, and the other models keep answering.

The documented errors: a model that raises, or returns NaN, infinity or a value
that is not JSON, is a 500 whose body holds an error id (and nothing of the
model's exception), its traceback logged once under that id; one that outlives
its time-out is a 504; one that fails its self-test is not served (503). A
model that returns the wrong number of rows: where the server batches the
model, it cannot split the result back and answers 500; where it does not, the
output is the model's and is passed on as it is.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stevedore_server.base.settings import ModelSettings, Settings

from .helpers import Registers
from .misbehaving import SECRET, NaNOnFixture, NaNOutput, NotJSON, Raises, Sleeper, WrongRows, WrongRowsBatched
from .predictors import RowSum

TIMEOUT = 0.3
BAD_ROWS: list[list[float]] = [[-1, 1], [2, 3]]
BAD_LABELLED = [{"x": [-1, 1], "y": 0}, {"x": [2, 3], "y": 5}]


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> Iterator[TestClient]:
    Sleeper.reset()
    models = (RowSum(), Raises(), Sleeper(), NaNOutput(), NaNOnFixture(), NotJSON(), WrongRows(), WrongRowsBatched())
    settings = Settings(models={"sleeper": ModelSettings(timeout=TIMEOUT, max_concurrency=1)})
    client = make_client(Registers(*models), settings=settings)
    yield client
    Sleeper.release.set()  # let abandoned inferences end before the app stops
    assert_healthy_answers(client)


def healthy_request(client: TestClient, first: int = 1) -> None:
    """The healthy model answers correctly; ``first`` varies so one answer cannot stand in for another."""
    response = client.post("/models/rowsum/predict", json=[[first, 2], [3, 4]])
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [first + 2, 7]


def assert_healthy_answers(client: TestClient) -> None:
    healthy_request(client)
    v2 = client.post("/v2/models/rowsum/infer", json=tensor_request([[1, 2]]))
    assert v2.status_code == 200 and v2.json()["outputs"][0]["data"] == [3]
    assert client.get("/models/rowsum/score").json()["score"] == 0.5


def tensor_request(rows: list[list[float]]) -> dict[str, Any]:
    flat = [value for row in rows for value in row]
    return {"inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": flat}]}


def predict_everywhere(client: TestClient, model: str, rows: list[list[float]]) -> dict[str, Any]:
    """The same prediction through the stevedore, V2 and original routes."""
    return {
        "stevedore": client.post(f"/models/{model}/predict", json=rows),
        "v2": client.post(f"/v2/models/{model}/infer", json=tensor_request(rows)),
        "original": client.post("/predict", json={"predictor": model, "payload": rows}),
    }


def assert_model_failure(response: Any, model: str, action: str, error: str) -> str:
    """A 500 naming the model, the action and the exception's type, with an error id; returns the id."""
    assert response.status_code == 500, response.text
    body = response.json()
    assert set(body) == {"error", "error_id"}
    assert f"model {model!r} version '1' failed to {action}: {error}" in body["error"]
    assert body["error_id"] in body["error"] and SECRET not in response.text
    return str(body["error_id"])


def logged_once(caplog: pytest.LogCaptureFixture, error_id: str) -> logging.LogRecord:
    records = [record for record in caplog.records if error_id in record.getMessage()]
    assert len(records) == 1, [record.getMessage() for record in records]
    assert records[0].levelno == logging.ERROR and records[0].exc_info is not None
    return records[0]


def test_only_the_model_failing_its_self_test_is_not_served(client: TestClient) -> None:
    states = {entry["name"]: entry["state"] for entry in client.get("/models").json()["models"]}
    assert states.pop("nan-on-fixture") == "failed"
    assert set(states.values()) == {"ready"}
    entry = client.get("/models/nan-on-fixture").json()
    assert entry["ready"] is False and "NaN" in entry["reason"]
    for route, response in predict_everywhere(client, "nan-on-fixture", [[1, 2]]).items():
        assert response.status_code == 503, route
        assert "is not ready" in response.json()["error"]
    readiness = client.get("/readyz")
    assert readiness.status_code == 503
    assert any("nan-on-fixture" in reason for reason in readiness.json()["reasons"])


def test_a_model_that_raises_is_a_500_with_an_error_id_logged_once_with_its_traceback(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    for response in predict_everywhere(client, "raises", BAD_ROWS).values():
        record = logged_once(caplog, assert_model_failure(response, "raises", "predict", "RuntimeError"))
        assert f"RuntimeError: {SECRET}" in logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
        healthy_request(client)
    scored = client.post("/models/raises/score", json=BAD_LABELLED)
    logged_once(caplog, assert_model_failure(scored, "raises", "score", "RuntimeError"))
    assert client.post("/models/raises/predict", json=[[1, 2]]).json()["predictions"] == [3]  # it still serves


@pytest.mark.parametrize(("model", "error"), [("nan", "ValueError"), ("not-json", "TypeError")])
def test_output_json_cannot_carry_is_the_models_500(
    client: TestClient, caplog: pytest.LogCaptureFixture, model: str, error: str
) -> None:
    caplog.set_level(logging.ERROR)
    for response in predict_everywhere(client, model, BAD_ROWS).values():
        logged_once(caplog, assert_model_failure(response, model, "predict", error))
        healthy_request(client)
    assert client.post(f"/models/{model}/predict", json=[[1, 2]]).json()["predictions"] == [3]


def test_a_model_past_its_time_out_is_a_504_while_the_others_answer(client: TestClient) -> None:
    answers: list[Any] = []
    waiting = threading.Thread(target=lambda: answers.append(client.post("/models/sleeper/predict", json=BAD_ROWS)))
    waiting.start()
    assert Sleeper.started.wait(timeout=5)
    for first in range(5):  # the sleeper is still blocked: release is never set during these
        healthy_request(client, first)
    waiting.join(timeout=5)
    assert not waiting.is_alive()
    assert answers[0].status_code == 504
    assert answers[0].json() == {"error": f"model 'sleeper' version '1' did not predict within {TIMEOUT:g} s"}
    v2 = client.post("/v2/models/sleeper/infer", json=tensor_request(BAD_ROWS))
    assert v2.status_code == 504 and set(v2.json()) == {"error"}
    assert client.get("/livez").status_code == 200


def test_inferences_abandoned_at_their_time_out_still_count_against_the_concurrency_limit(
    client: TestClient,
) -> None:
    """``max_concurrency`` is how many inferences of a model run at once; a timed-out one is still running.

    Otherwise a model that hangs gets one more stuck thread for every request, without bound.
    """
    statuses = [client.post("/models/sleeper/predict", json=BAD_ROWS).status_code for _ in range(3)]
    assert statuses == [504, 504, 504]
    assert Sleeper.most_at_once == 1, f"{Sleeper.most_at_once} inferences ran at once with max_concurrency 1"


def test_a_batch_result_of_the_wrong_number_of_rows_is_a_500_on_every_route(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the server splits a result back to its callers, a result that is not one item a row is junk."""
    caplog.set_level(logging.ERROR)
    for route, response in predict_everywhere(client, "wrong-rows-batched", BAD_ROWS).items():
        assert response.status_code == 500, f"{route}: {response.status_code} {response.text}"
        logged_once(caplog, assert_model_failure(response, "wrong-rows-batched", "predict", "ValueError"))
    assert "returned 1 items for 2 rows; a batched model must give one item a row" in caplog.text


def test_an_unbatched_result_is_answered_whatever_its_length(client: TestClient) -> None:
    """Nothing is split, so the model's answer is its callers' (ml-py-stevedore served such models)."""
    responses = predict_everywhere(client, "wrong-rows", BAD_ROWS)
    assert responses["stevedore"].json()["predictions"] == [0]
    assert responses["v2"].json()["outputs"][0] | {"data": None} == {
        "name": "output-0", "datatype": "FP64", "shape": [1], "parameters": {"content_type": "np"}, "data": None
    }  # fmt: skip
    assert responses["original"].json() == [0]


#: (model, rows, expected status) of every misdeed; healthy requests are mixed in between.
MISDEEDS = [
    ("raises", BAD_ROWS, 500),
    ("nan", BAD_ROWS, 500),
    ("not-json", BAD_ROWS, 500),
    ("sleeper", BAD_ROWS, 504),
    ("nan-on-fixture", [[1, 2]], 503),
    ("wrong-rows-batched", BAD_ROWS, 500),
    ("wrong-rows", BAD_ROWS, 200),
]


def test_the_other_models_answer_correctly_throughout_concurrent_misdeeds(client: TestClient) -> None:
    work: list[tuple[str, Any]] = [("misdeed", misdeed) for misdeed in MISDEEDS * 3]
    work += [("healthy", first) for first in range(40)]
    random.Random(6).shuffle(work)

    def run(item: tuple[str, Any]) -> None:
        kind, detail = item
        if kind == "healthy":
            healthy_request(client, detail)
            return
        model, rows, status = detail
        response = client.post(f"/models/{model}/predict", json=rows)
        assert response.status_code == status, f"{model}: {response.status_code} {response.text}"
        assert "Traceback" not in response.text and SECRET not in response.text

    with ThreadPoolExecutor(max_workers=16) as pool:
        for future in [pool.submit(run, item) for item in work]:
            future.result()
