"""The Open Inference Protocol against a real server, with NVIDIA's tritonclient and raw HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from .venvs import Server

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
CLASSES = [0, 2, 1]


@pytest.fixture(scope="module")
def server(example_server: Server) -> Server:
    return example_server


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield connection
    connection.close()


def tensor(rows: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows.astype({"FP32": np.float32, "FP64": np.float64}[datatype]), binary_data=binary)
    return tensor


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1")
    assert not client.is_model_ready("nope")
    server = client.get_server_metadata()
    assert server["name"] == "stevedore-server" and "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata("iris", "1")
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert metadata["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
    assert client.get_model_metadata("iris-proba")["outputs"][0]["shape"] == [-1, 3]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("count", [1, 3])
def test_infer(client: triton.InferenceServerClient, binary: bool, datatype: str, count: int) -> None:
    rows = ROWS[:count]
    output = triton.InferRequestedOutput("output-0", binary_data=binary)
    result = client.infer("iris", [tensor(rows, datatype, binary)], outputs=[output], request_id="req-7")
    assert result.as_numpy("output-0").tolist() == CLASSES[:count]
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == "iris" and response["model_version"] == "1"
    assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) is binary


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_probabilities_and_versions(client: triton.InferenceServerClient, binary: bool) -> None:
    result = client.infer("iris-proba", [tensor(ROWS, "FP64", binary)], model_version="1")
    probabilities = result.as_numpy("output-0")
    assert probabilities.shape == (3, 3) and probabilities.dtype == np.float64
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert probabilities.argmax(axis=1).tolist() == CLASSES


def test_client_errors_through_tritonclient(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="unknown outputs: nope") as unknown:
        client.infer("iris", [tensor(ROWS, "FP64", False)], outputs=[triton.InferRequestedOutput("nope")])
    assert unknown.value.status() == "400"
    with pytest.raises(InferenceServerException) as missing:
        client.infer("nope", [tensor(ROWS, "FP64", False)])
    assert missing.value.status() == "404"
    wrong = triton.InferInput("input-0", [1, 3], "FP64")
    wrong.set_data_from_numpy(np.ones((1, 3)))
    with pytest.raises(InferenceServerException, match=r"shape \[1, 3\] does not match the model's \[-1, 4\]"):
        client.infer("iris", [wrong])


def good(rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]}


def one_input(**fields: Any) -> dict[str, Any]:
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
    return {"inputs": [{key: value for key, value in (tensor | fields).items() if value is not None}]}


BAD_REQUESTS: dict[str, tuple[bytes | dict[str, Any] | list[Any], dict[str, str], int]] = {
    "malformed JSON": (b'{"inputs": [', {}, 400),
    "not an object": ([1, 2], {}, 400),
    "no inputs": ({}, {}, 400),
    "empty inputs": ({"inputs": []}, {}, 400),
    "inputs not a list": ({"inputs": {"name": "input-0"}}, {}, 400),
    "input not an object": ({"inputs": ["x"]}, {}, 400),
    "no name": (one_input(name=None), {}, 400),
    "no shape": (one_input(shape=None), {}, 400),
    "no datatype": (one_input(datatype=None), {}, 400),
    "no data": (one_input(data=None), {}, 400),
    "unknown datatype": (one_input(datatype="FP128"), {}, 400),
    "BF16 unsupported": (one_input(datatype="BF16"), {}, 400),
    "negative dimension": (one_input(shape=[-1, 4]), {}, 400),
    "non-integer dimension": (one_input(shape=[1.5, 4]), {}, 400),
    "string dimension": (one_input(shape=["1", 4]), {}, 400),
    "shape and data length differ": (one_input(shape=[2, 4]), {}, 400),
    "shape not the model's": (one_input(shape=[2, 2]), {}, 400),
    "rank not the model's": (one_input(shape=[4]), {}, 400),
    "data cannot convert": (one_input(data=["a", "b", "c", "d"]), {}, 400),
    "ragged nested data": (one_input(data=[[1, 2], [3]]), {}, 400),
    # A single input of any name is the model's only one (test_v2_any_input.py); beside it, a name is checked.
    "unknown input name": ({"inputs": one_input()["inputs"] + one_input(name="x")["inputs"]}, {}, 400),
    "input given twice": ({"inputs": one_input()["inputs"] * 2}, {}, 400),
    "parameters not an object": ({**one_input(), "parameters": [1]}, {}, 400),
    "outputs not a list": ({**one_input(), "outputs": "output-0"}, {}, 400),
    "unknown output": ({**one_input(), "outputs": [{"name": "nope"}]}, {}, 400),
    "binary header longer than body": (good([[1, 2, 3, 4]]), {"Inference-Header-Content-Length": "99999"}, 400),
    "binary header not a number": (good([[1, 2, 3, 4]]), {"Inference-Header-Content-Length": "ten"}, 400),
    "binary size beyond the data": (
        one_input(data=None, parameters={"binary_data_size": 32}),
        {"Inference-Header-Content-Length": "auto"},
        400,
    ),
}


def send(server: Server, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    if headers.get("Inference-Header-Content-Length") == "auto":
        headers = headers | {"Inference-Header-Content-Length": str(len(content))}
    return httpx.post(server.url + path, content=content, headers=headers, timeout=10)


def assert_still_serving(server: Server) -> None:
    assert httpx.get(server.url + "/v2/health/live").status_code == 200
    answer = send(server, "/v2/models/iris/infer", good(ROWS.tolist()), {})
    assert answer.json()["outputs"][0]["data"] == CLASSES


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_the_protocols_error(server: Server, case: str) -> None:
    body, headers, status = BAD_REQUESTS[case]
    response = send(server, "/v2/models/iris/infer", body, headers)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and response.json()["error"]
    assert "Traceback" not in response.text
    assert_still_serving(server)


@pytest.mark.parametrize(
    "path",
    ["/v2/models/nope/infer", "/v2/models/iris/versions/9/infer", "/v2/models/nope", "/v2/models/iris/versions/9"],
)
def test_unknown_model_or_version_is_404(server: Server, path: str) -> None:
    response = send(server, path, good([[1, 2, 3, 4]]), {}) if path.endswith("infer") else httpx.get(server.url + path)
    assert response.status_code == 404 and set(response.json()) == {"error"}


def test_no_content_type_is_json(server: Server) -> None:
    body = httpx.Request("POST", "/", json=good([[5.1, 3.5, 1.4, 0.2]])).content
    request = httpx.Request("POST", server.url + "/v2/models/iris/infer", content=body)
    assert "content-type" not in request.headers  # raw content: httpx sends no Content-Type
    response = httpx.Client().send(request)
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [0]


def test_binary_request_by_hand(server: Server) -> None:
    rows = ROWS.astype("<f4")
    header = {
        "inputs": [
            {"name": "input-0", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": rows.nbytes}}
        ],
        "parameters": {"binary_data_output": True},
    }
    json_part = httpx.Request("POST", "/", json=header).content
    response = httpx.post(
        server.url + "/v2/models/iris/infer",
        content=json_part + rows.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(json_part)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200
    length = int(response.headers["Inference-Header-Content-Length"])
    answer = httpx.Response(200, content=response.content[:length]).json()
    assert answer["outputs"][0]["parameters"]["binary_data_size"] == 24
    assert np.frombuffer(response.content[length:], dtype="<i8").tolist() == CLASSES
    extra = httpx.post(
        server.url + "/v2/models/iris/infer",
        content=json_part + rows.tobytes() + b"\0",
        headers={"Inference-Header-Content-Length": str(len(json_part))},
    )
    assert extra.status_code == 400 and "belong to no input" in extra.json()["error"]


def test_server_and_model_health_routes(server: Server) -> None:
    assert httpx.get(server.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(server.url + "/v2/health/ready").json() == {"ready": True}
    assert httpx.get(server.url + "/v2/models/iris/versions/1/ready").json() == {
        "name": "iris",
        "version": "1",
        "ready": True,
    }
    assert httpx.get(server.url + "/v2/models/nope/ready").status_code == 404
    assert httpx.post(server.url + "/v2/health/live").json() == {"error": "Method Not Allowed"}


def test_fifty_concurrent_requests_each_get_their_own_answer(server: Server) -> None:
    rng = np.random.default_rng(7)
    batches = [ROWS[rng.integers(0, 3, size=rng.integers(1, 20))] for _ in range(50)]
    with httpx.Client(limits=httpx.Limits(max_connections=50)) as http:

        def ask(rows: np.ndarray) -> list[int]:
            response = http.post(server.url + "/v2/models/iris/infer", json=good(rows.tolist()), timeout=30)
            assert response.status_code == 200, response.text
            return response.json()["outputs"][0]["data"]

        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(ask, batches))
    for rows, answer in zip(batches, answers, strict=True):
        expected = [CLASSES[next(i for i, known in enumerate(ROWS) if (known == row).all())] for row in rows]
        assert answer == expected
