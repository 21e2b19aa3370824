"""What a V2 client written for MLServer sends, against a real server: a single input of any name taken by a
single-input model, and outputs chosen per request by name (a default subset, ``predict_outputs``), over REST
(JSON and binary) and gRPC."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from .helpers import record_distribution, wait_until
from .output_predictors import OUTPUT_CALLS, labels, probabilities
from .venvs import REPO, Server, Venv

pytestmark = pytest.mark.server

ROWS = [[0.2, 0.3], [0.9, 0.8], [0.5, 0.7]]
PLUGINS = {
    "classes": "tests.output_predictors:Classes",
    "chooses": "tests.output_predictors:ChoosesOutputs",
    "two-inputs": "tests.predictors:TwoInputs",
}


@pytest.fixture(scope="module")
def calls_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("output-calls") / "calls"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, calls_file: Path) -> Iterator[Server]:
    """The real ``stevedore-server run`` of the environment running the tests, serving ``output_predictors``'
    models and ``predictors.TwoInputs``."""
    root = tmp_path_factory.mktemp("v2-any-input")
    record_distribution(root / "site", "stevedore-test-outputs", PLUGINS)
    environment = {"PYTHONPATH": f"{REPO}:{root / 'site'}", OUTPUT_CALLS: str(calls_file)}
    running = Server.start(
        Venv(Path(sys.prefix), ()), root / "server.log", "--plugins", "stevedore-test-outputs", **environment
    )
    try:
        running.wait_for("/readyz")
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[triton_http.InferenceServerClient]:
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"), concurrency=8)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(server: Server) -> Iterator[triton_grpc.InferenceServerClient]:
    with triton_grpc.InferenceServerClient(server.grpc_target) as client:
        yield client


def rows_input(module: Any, name: str, rows: list[list[float]], binary: bool = True) -> Any:
    tensor = module.InferInput(name, [len(rows), 2], "FP64")
    if module is triton_http:
        tensor.set_data_from_numpy(np.array(rows), binary_data=binary)
    else:
        tensor.set_data_from_numpy(np.array(rows))
    return tensor


def asked(module: Any, *names: str) -> list[Any]:
    return [module.InferRequestedOutput(name) for name in names]


def recorded(calls_file: Path) -> list[dict[str, Any]]:
    """The calls of ``ChoosesOutputs.predict_outputs`` so far (names and rows)."""
    if not calls_file.exists():
        return []
    return [json.loads(line) for line in calls_file.read_text().splitlines()]


# -- a single input of any name ------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_single_input_of_any_name_over_rest(
    server: Server, http: triton_http.InferenceServerClient, binary: bool
) -> None:
    result = http.infer("classes", [rows_input(triton_http, "input-1", ROWS, binary)])
    assert result.as_numpy("predict").tolist() == labels(ROWS)
    assert result.get_response()["parameters"] == {"renamed_input": "input-1"}
    wait_until(
        lambda: "input 'input-1' taken as its only input 'input-0'" in server.log(),
        "the log line saying which input the model took",
        explain=server.log,
    )


def test_a_request_as_mlservers_numpy_codec_encodes_it(server: Server) -> None:
    """``NumpyRequestCodec.encode_request(array)`` of MLServer 1.7: one input named ``input-1``, content types
    ``np``; the answer keeps the shape MLServer's clients decode."""
    request = {
        "parameters": {"content_type": "np"},
        "inputs": [
            {
                "name": "input-1",
                "shape": [3, 2],
                "datatype": "FP64",
                "parameters": {"content_type": "np"},
                "data": [value for row in ROWS for value in row],
            }
        ],
    }
    answer = httpx.post(server.url + "/v2/models/classes/infer", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [output["name"] for output in body["outputs"]] == ["predict"]
    assert body["outputs"][0]["data"] == labels(ROWS) and body["outputs"][0]["shape"] == [3]
    assert body["parameters"] == {"renamed_input": "input-1"}


def test_a_single_input_of_any_name_over_grpc(grpc_client: triton_grpc.InferenceServerClient) -> None:
    result = grpc_client.infer("classes", [rows_input(triton_grpc, "x", ROWS)])
    assert result.as_numpy("predict").tolist() == labels(ROWS)
    assert result.get_response().parameters["renamed_input"].string_param == "x"


def test_the_model_s_own_name_is_not_reported_as_renamed(http: triton_http.InferenceServerClient) -> None:
    result = http.infer("classes", [rows_input(triton_http, "input-0", ROWS)])
    assert result.as_numpy("predict").tolist() == labels(ROWS)
    assert "parameters" not in result.get_response()


def test_the_renamed_input_still_has_the_model_s_datatype_and_shape(
    server: Server, grpc_client: triton_grpc.InferenceServerClient
) -> None:
    wide = {"name": "input-1", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}
    answer = httpx.post(server.url + "/v2/models/classes/infer", json={"inputs": [wide]})
    assert answer.status_code == 400
    assert answer.json()["error"] == "input 'input-1': shape [1, 3] does not match the model's [-1, 2]"
    words = {"name": "input-1", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}
    answer = httpx.post(server.url + "/v2/models/classes/infer", json={"inputs": [words]})
    assert answer.status_code == 400 and "BYTES cannot convert to the model's FP64" in answer.json()["error"]
    with pytest.raises(InferenceServerException, match=r"input 'x': shape \[3\] does not match") as caught:
        tensor = triton_grpc.InferInput("x", [3], "FP64")
        tensor.set_data_from_numpy(np.ones(3))
        grpc_client.infer("classes", [tensor])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def two_inputs(a_name: str = "a", b_name: str = "b") -> dict[str, Any]:
    return {
        "inputs": [
            {"name": a_name, "shape": [1, 2], "datatype": "FP64", "data": [1.5, 2.5]},
            {"name": b_name, "shape": [1], "datatype": "INT64", "data": [1]},
        ]
    }


def test_a_model_of_two_inputs_still_needs_their_names(server: Server) -> None:
    url = server.url + "/v2/models/two-inputs/infer"
    assert httpx.post(url, json=two_inputs()).json()["outputs"][0]["data"] == [5.0]
    wrong = httpx.post(url, json=two_inputs(a_name="x"))
    assert wrong.status_code == 400 and wrong.json()["error"] == "unknown input 'x'; the model's inputs are: a, b"
    alone = httpx.post(url, json={"inputs": two_inputs(a_name="x")["inputs"][:1]})
    assert alone.status_code == 400 and "unknown input 'x'" in alone.json()["error"]
    request = service_pb2.ModelInferRequest(model_name="two-inputs")
    request.inputs.add(name="x", datatype="FP64", shape=[1, 2]).contents.fp64_contents.extend([1.5, 2.5])
    with grpc.insecure_channel(server.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown input 'x'" in caught.value.details()


# -- outputs by name -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["classes", "chooses"])
def test_a_request_naming_no_output_gets_the_default_ones(
    http: triton_http.InferenceServerClient, grpc_client: triton_grpc.InferenceServerClient, model: str
) -> None:
    over_http = http.infer(model, [rows_input(triton_http, "input-0", ROWS)])
    assert [output["name"] for output in over_http.get_response()["outputs"]] == ["predict"]
    assert over_http.as_numpy("predict").tolist() == labels(ROWS)
    over_grpc = grpc_client.infer(model, [rows_input(triton_grpc, "input-0", ROWS)])
    assert [output.name for output in over_grpc.get_response().outputs] == ["predict"]
    assert over_grpc.as_numpy("predict").tolist() == labels(ROWS)


@pytest.mark.parametrize("model", ["classes", "chooses"])
@pytest.mark.parametrize("names", [("predict_proba",), ("predict_proba", "predict")], ids=["proba", "both"])
def test_a_request_naming_outputs_gets_exactly_those(
    http: triton_http.InferenceServerClient,
    grpc_client: triton_grpc.InferenceServerClient,
    model: str,
    names: tuple[str, ...],
) -> None:
    for module, client in ((triton_http, http), (triton_grpc, grpc_client)):
        result = client.infer(model, [rows_input(module, "input-0", ROWS)], outputs=asked(module, *names))
        response = result.get_response()
        given = response["outputs"] if module is triton_http else response.outputs
        assert [o["name"] if isinstance(o, dict) else o.name for o in given] == list(names)
        np.testing.assert_allclose(result.as_numpy("predict_proba"), probabilities(ROWS))
        if "predict" in names:
            assert result.as_numpy("predict").tolist() == labels(ROWS)


def test_an_unknown_output_is_still_refused(
    http: triton_http.InferenceServerClient, grpc_client: triton_grpc.InferenceServerClient
) -> None:
    with pytest.raises(InferenceServerException, match="unknown outputs: transform") as over_http:
        http.infer("chooses", [rows_input(triton_http, "input-0", ROWS)], outputs=asked(triton_http, "transform"))
    assert over_http.value.status() == "400"
    with pytest.raises(InferenceServerException, match="unknown outputs: transform") as over_grpc:
        grpc_client.infer("chooses", [rows_input(triton_grpc, "in", ROWS)], outputs=asked(triton_grpc, "transform"))
    assert over_grpc.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_predict_outputs_receives_exactly_the_names_asked(
    server: Server,
    http: triton_http.InferenceServerClient,
    grpc_client: triton_grpc.InferenceServerClient,
    calls_file: Path,
) -> None:
    cases = [((), ["predict"]), (("predict_proba",), ["predict_proba"]), (("predict_proba", "predict"), None)]
    for module, client in ((triton_http, http), (triton_grpc, grpc_client)):
        for names, expected in cases:
            rows = [[0.125, float(len(recorded(calls_file)))]]  # a row of its own, to find its call
            client.infer("chooses", [rows_input(module, "input-0", rows)], outputs=asked(module, *names) or None)
            (call,) = [call for call in recorded(calls_file) if call["rows"] == rows]
            assert call["names"] == (expected or ["predict", "predict_proba"])  # each once, in the model's order
    # The stevedore route runs predict, which gives every output; predict_outputs is for V2 requests.
    before = len(recorded(calls_file))
    answer = httpx.post(server.url + "/models/chooses/predict", json=ROWS).json()["predictions"]
    assert answer == {"predict": labels(ROWS), "predict_proba": probabilities(ROWS)}
    assert len(recorded(calls_file)) == before


# -- batching ------------------------------------------------------------------------------------------------------


def test_requests_asking_the_same_outputs_share_a_batch_and_others_do_not(server: Server, calls_file: Path) -> None:
    marker = 1000.0 + len(recorded(calls_file))  # rows of this test's requests, told apart from the others'
    requests = [([[marker, float(index)]], ("predict",) if index % 2 else ("predict_proba",)) for index in range(16)]

    def infer(rows: list[list[float]], names: tuple[str, ...]) -> Any:
        # httpx: tritonclient's HTTP client is not for several threads at once.
        tensor = {"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": rows[0]}
        request = {"inputs": [tensor], "outputs": [{"name": name} for name in names]}
        answer = httpx.post(server.url + "/v2/models/chooses/infer", json=request, timeout=60).json()
        return {output["name"]: np.reshape(output["data"], output["shape"]).tolist() for output in answer["outputs"]}

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda request: infer(*request), requests))
    for (rows, names), answer in zip(requests, answers, strict=True):
        expected = {"predict": labels(rows), "predict_proba": probabilities(rows)}
        assert answer == {name: expected[name] for name in names}
    calls = [call for call in recorded(calls_file) if call["rows"][0][0] == marker]
    for call in calls:  # a call is of one set of outputs, and holds exactly the rows of its requests
        names = ("predict",) if int(call["rows"][0][1]) % 2 else ("predict_proba",)
        assert call["names"] == list(names)
        assert {int(row[1]) % 2 for row in call["rows"]} == {1 if names == ("predict",) else 0}
    assert sorted(row[1] for call in calls for row in call["rows"]) == [float(index) for index in range(16)]
    assert any(len(call["rows"]) > 1 for call in calls), f"no call merged two requests: {calls}"


def test_a_model_of_several_outputs_is_batched(server: Server) -> None:
    """``Classes``' predict gives a dict of outputs, one item a row each: its requests are merged too."""
    metric = re.compile(r'stevedore_batch_size_count\{model="classes",version="1"\} (\S+)')

    def batches() -> float:
        found = metric.search(httpx.get(server.url + "/metrics").text)
        return float(found.group(1)) if found else 0.0

    before = batches()
    bodies = [[[float(index), 0.5]] for index in range(12)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: httpx.post(server.url + "/models/classes/predict", json=body), bodies))
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.json()["predictions"] == {"predict": labels(body), "predict_proba": probabilities(body)}
    assert 0 < batches() - before < len(bodies)  # some requests shared a model call
