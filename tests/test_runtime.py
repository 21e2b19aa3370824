"""Per-model runtime: adaptive batching, time-outs, the bounded queue."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stevedore_server.base.settings import ModelSettings, Settings

from .helpers import Registers, model_runtime, wait_until
from .predictors import Batched, Held, RowSum, Slow


@pytest.fixture(autouse=True)
def fresh_batched() -> Iterator[None]:
    Batched.calls.clear()
    Batched.started.clear()
    Batched.release.clear()
    yield
    Batched.release.set()


def post_all(client: TestClient, path: str, bodies: list[Any]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(lambda body: client.post(path, json=body), bodies))


def hold_the_model(client: TestClient) -> threading.Thread:
    """Occupy the batched model's only thread with a request on row [5]."""
    holder = threading.Thread(target=client.post, args=("/models/batched/predict",), kwargs={"json": [[5]]})
    holder.start()
    assert Batched.started.wait(timeout=60), "the request on row [5] never reached the batched model"
    return holder


def wait_until_queued(client: TestClient, count: int) -> None:
    """Until ``count`` requests wait in the batched model's queue, behind the one its thread runs."""
    batcher = model_runtime(client, "batched").batcher
    assert batcher is not None
    wait_until(lambda: len(batcher.waiting) == count, f"{count} requests queued behind the busy batched model")


@pytest.fixture
def batched(make_client: Callable[..., TestClient]) -> TestClient:
    settings = Settings(max_concurrency=1, models={"batched": ModelSettings(max_batch_time=0.2)})
    return make_client(Registers(Batched(), RowSum()), settings=settings)


def test_queued_requests_are_merged_and_each_caller_gets_its_own_rows(batched: TestClient) -> None:
    holder = hold_the_model(batched)
    bodies = [[[i, 1], [i, 2]] for i in range(1, 7)]  # queued while the model is busy
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(batched.post, "/models/batched/predict", json=body) for body in bodies]
        wait_until_queued(batched, len(bodies))
        Batched.release.set()
        answers = [future.result().json()["predictions"] for future in futures]
    holder.join(timeout=10)
    assert answers == [[i + 1, i + 2] for i in range(1, 7)]
    after_holder = Batched.calls[Batched.calls.index([[5]]) + 1 :]
    assert any(len(call) > 2 for call in after_holder), f"no merged call among {after_holder}"
    assert sorted(row for call in after_holder for row in call) == sorted(row for body in bodies for row in body)


def test_a_bad_request_is_rejected_before_batching(batched: TestClient) -> None:
    invalid: list[Any] = ["x"]  # a row of text: the schema refuses it, so no model call may hold it
    responses = post_all(batched, "/models/batched/predict", [[[1]], [invalid], [[2]]])
    assert [r.status_code for r in responses] == [200, 422, 200]
    assert all(invalid not in call for call in Batched.calls)


def test_a_model_error_fails_only_its_batch(batched: TestClient) -> None:
    holder = hold_the_model(batched)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(batched.post, "/models/batched/predict", json=body) for body in ([[13]], [[1]], [[2]])]
        wait_until_queued(batched, len(futures))
        Batched.release.set()
        responses = [future.result() for future in futures]
    holder.join(timeout=10)
    assert [r.status_code for r in responses] == [500, 500, 500]
    assert all("failed to predict: ValueError" in r.json()["error"] for r in responses)
    assert batched.post("/models/batched/predict", json=[[1]]).json()["predictions"] == [1]  # the next batch is fine


def test_output_of_the_wrong_length_fails_the_batch_clearly(batched: TestClient) -> None:
    response = batched.post("/models/batched/predict", json=[[7], [1]])
    assert response.status_code == 500 and "ValueError" in response.json()["error"]


def test_a_waiting_request_that_times_out_leaves_the_batch(make_client: Callable[..., TestClient]) -> None:
    settings = Settings(max_concurrency=1, models={"batched": ModelSettings(timeout=0.5)})
    client = make_client(Registers(Batched()), settings=settings)
    holder = hold_the_model(client)
    response = client.post("/models/batched/predict", json=[[42]])
    assert response.status_code == 504 and "did not predict within 0.5 s" in response.json()["error"]
    # Its own time-out answered it, not the end of the call it waited behind: that call is held until released.
    assert model_runtime(client, "batched").threads.busy, "the 504 came only once the model's call had ended"
    Batched.release.set()
    holder.join(timeout=10)
    assert client.post("/models/batched/predict", json=[[3]]).json()["predictions"] == [3]
    assert all([42] not in call for call in Batched.calls)  # cancelled before its batch ran


def test_a_slow_inference_is_504_and_the_server_stays_responsive(make_client: Callable[..., TestClient]) -> None:
    held = Held()
    settings = Settings(models={"held": ModelSettings(timeout=0.3, max_concurrency=2)})
    client = make_client(Registers(held, RowSum()), settings=settings)
    try:
        response = client.post("/models/held/predict", json=[[5]])
        assert response.status_code == 504 and set(response.json()) == {"error"}
        assert not held.ended.is_set(), "the 504 came only once the model's call had ended"
        assert client.get("/livez").status_code == 200
        assert client.post("/models/held/predict", json=[[0]]).json()["predictions"] == [0]
        v2 = client.post(
            "/v2/models/held/infer",
            json={"inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP64", "data": [5]}]},
        )
        assert v2.status_code == 504 and set(v2.json()) == {"error"}
        assert not held.ended.is_set(), "the V2 504 came only once the model's call had ended"
    finally:
        held.release.set()


def test_beyond_the_queue_requests_get_503_with_retry_after(make_client: Callable[..., TestClient]) -> None:
    settings = Settings(models={"slow": ModelSettings(max_concurrency=1, max_queue=1)})
    client = make_client(Registers(Slow(), RowSum()), settings=settings)
    Slow.started.clear()
    Slow.release.clear()
    waiting = [
        threading.Thread(target=client.post, args=("/models/slow/predict",), kwargs={"json": [[5]]}) for _ in range(2)
    ]
    for thread in waiting:
        thread.start()
    try:
        assert Slow.started.wait(timeout=60), "the first request never reached the slow model"
        admission = model_runtime(client, "slow").admission
        wait_until(lambda: admission.admitted == 2, "one request running and one queued on the slow model")
        refused = client.post("/models/slow/predict", json=[[5]])
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert "try again shortly" in refused.json()["error"]
        assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200  # other models unaffected
    finally:
        Slow.release.set()
        for thread in waiting:
            thread.join(timeout=10)
