"""Bad input and slow models never take the server down or answer 500 for a client's mistake."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from stevedore_server import hookimpl
from stevedore_server.base.settings import Settings

from .helpers import Registers, model_runtime, wait_until
from .predictors import Held, Nullable, RangeOfRows, RowSum, Words

SMALL = {"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(Registers(RowSum(), Words(), RangeOfRows(), Nullable()))


def infer(client: TestClient, model: str, *inputs: dict[str, Any], **kwargs: Any) -> Any:
    return client.post(f"/v2/models/{model}/infer", json={"inputs": list(inputs)}, **kwargs)


def binary_infer(client: TestClient, model: str, tensor: dict[str, Any], raw: bytes) -> Any:
    header = orjson.dumps({"inputs": [tensor]})
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return client.post(f"/v2/models/{model}/infer", content=header + raw, headers=headers)


def assert_400(response: Any, fragment: str) -> None:
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and fragment in response.json()["error"]


def test_binary_bytes_that_are_not_text_are_400(client: TestClient) -> None:
    raw = len(b"\xff\xfe").to_bytes(4, "little") + b"\xff\xfe"
    tensor = {"name": "input-0", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
    assert_400(binary_infer(client, "words", tensor, raw), "JSON Schema cannot check")


def test_a_header_length_in_other_digits_is_400(client: TestClient) -> None:
    headers = {"Inference-Header-Content-Length": "²".encode("latin-1")}
    response = client.post("/v2/models/rowsum/infer", json={"inputs": [SMALL]}, headers=headers)
    assert_400(response, "is not a length")


@pytest.mark.parametrize("shape", [[0, 2**63], [0, 2**31 - 1, 2**31 - 1, 2**31 - 1]])
def test_empty_tensors_of_impossible_shapes_are_400(client: TestClient, shape: list[int]) -> None:
    response = infer(client, "rowsum", {"name": "input-0", "shape": shape, "datatype": "FP64", "data": []})
    assert response.status_code == 400, response.text


def test_numpy_input_still_gets_only_valid_input(client: TestClient) -> None:
    rows = {"name": "input-0", "shape": [5, 2], "datatype": "FP64", "data": list(range(10))}
    assert_400(infer(client, "range-of-rows", rows), "does not match the model's schema")
    raw = np.array([np.nan, 1.0], dtype="<f8").tobytes()
    tensor = {"name": "input-0", "shape": [1, 2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}
    response = binary_infer(client, "range-of-rows", tensor, raw)
    assert response.status_code == 400, response.text


def test_a_schema_type_list_leaves_the_model_without_tensors_but_served(client: TestClient) -> None:
    entry = client.get("/models/nullable").json()
    assert entry["ready"] and entry["v2"]["available"] is False
    assert client.post("/models/nullable/predict", json=[[1, None]]).status_code == 500  # the model's own sum fails


def test_bytes_data_must_be_strings_and_keeps_them_whole(client: TestClient) -> None:
    mixed = {"name": "input-0", "shape": [4], "datatype": "BYTES", "data": ["a", 1, True, 1.5]}
    assert_400(infer(client, "words", mixed), "BYTES data must be strings")
    nuls = {"name": "input-0", "shape": [2], "datatype": "BYTES", "data": ["a\u0000", "b\u0000\u0000"]}
    assert infer(client, "words", nuls).json()["outputs"][0]["data"] == [2, 3]


@pytest.mark.parametrize(
    ("shape", "data"), [([2, 4], [[1, 2], [3, 4], [1, 2], [3, 4]]), ([1, 2], [[[1]], [[2]]]), ([1, 2], [[1], [2]])]
)
def test_nested_data_must_have_the_tensors_shape(client: TestClient, shape: list[int], data: Any) -> None:
    response = infer(client, "rowsum", {"name": "input-0", "shape": shape, "datatype": "FP64", "data": data})
    assert_400(response, "does not match shape")


def test_error_messages_do_not_echo_huge_payloads(client: TestClient) -> None:
    rows = [[1.0] * 100_000 + ["x"] for _ in range(20)]
    response = client.post("/models/rowsum/predict", json=rows)
    assert response.status_code == 422
    assert len(response.content) < 20 * 300
    assert all(len(detail["message"]) <= 200 for detail in response.json()["details"])


class FailingCheck:
    @hookimpl
    def stevedore_health_checks(self) -> Mapping[str, Callable[[], tuple[bool, str]]]:
        return {"database": lambda: (False, "database unreachable")}


def test_every_ready_route_means_the_same(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum()), FailingCheck())
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 503
    assert client.get("/v2/health/ready").status_code == 400
    assert client.get("/health/ready").status_code == 503
    assert client.get("/health/ready?model=rowsum").json() == "READY"  # the model itself is fine


def test_a_busy_model_does_not_hold_up_probes_or_other_models(make_client: Callable[..., TestClient]) -> None:
    held = Held()
    client = make_client(Registers(held, RowSum()), settings=Settings(max_concurrency=1))
    waiting = [
        threading.Thread(target=client.post, args=("/models/held/predict",), kwargs={"json": [[5]]}) for _ in range(2)
    ]
    for thread in waiting:
        thread.start()
    try:
        assert held.started.wait(timeout=60), "the first request never reached the held model"
        admission = model_runtime(client, "held").admission
        wait_until(lambda: admission.admitted == 2, "one request running and one queued on the held model")
        assert client.get("/readyz").status_code == 200
        assert client.post("/models/rowsum/predict", json=[[1]]).json()["predictions"] == [1]
        # Both answered while the busy model's call was still held: neither waited for it.
        assert not held.ended.is_set(), "the probe and the other model answered only once the busy model's call ended"
    finally:
        held.release.set()
        for thread in waiting:
            thread.join(timeout=15)
