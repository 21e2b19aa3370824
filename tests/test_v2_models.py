"""V2 mapping between tensors and predictors, in-process: declared tensors, NumPy input, no interface."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from stevedore_server.base.errors import NoTensorInterface
from stevedore_server.core.signature import input_from_schema

from .helpers import Registers, model_runtime
from .output_predictors import ChoosesOutputs, Classes
from .predictors import ArrayInput, ObjectPayload, Positive, RowSum, TwoInputs, Words


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(Registers(RowSum(), TwoInputs(), ArrayInput(), Positive(), Words(), ObjectPayload()))


def infer(client: TestClient, model: str, *inputs: dict[str, Any], **extra: Any) -> Any:
    return client.post(f"/v2/models/{model}/infer", json={"inputs": list(inputs), **extra})


def test_derived_metadata(client: TestClient) -> None:
    metadata = client.get("/v2/models/rowsum").json()
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, -1]}]
    assert metadata["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
    assert client.get("/v2/models/words").json()["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize(
    ("schema", "spec", "shape_only"),
    [
        ({"type": "array", "items": {"type": "integer"}}, ("INT64", (-1,)), True),
        ({"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "boolean"}}, ("BOOL", (2,)), True),
        (
            {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}},
            ("FP64", (-1, 4)),
            True,
        ),
        ({"type": "array", "items": {"type": "number", "minimum": 0}}, ("FP64", (-1,)), True),
        ({"type": "array", "items": {"type": "number", "multipleOf": 2}}, ("FP64", (-1,)), False),
        ({"type": "array", "uniqueItems": True, "items": {"type": "string"}}, ("BYTES", (-1,)), False),
    ],
)
def test_input_from_schema(schema: dict[str, Any], spec: tuple[str, tuple[int, ...]], shape_only: bool) -> None:
    derived, check = input_from_schema(schema)
    assert (derived.datatype, derived.shape) == spec and (check is not None) is shape_only


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},
        {"type": "array", "items": [{"type": "number"}]},
        {"type": "array", "items": {}},
        {"type": "array", "items": {"type": "object"}},
    ],
)
def test_schemas_with_no_tensor(schema: dict[str, Any]) -> None:
    with pytest.raises(NoTensorInterface):
        input_from_schema(schema)


def test_a_model_without_tensors_is_listed_with_the_reason_and_still_serves(client: TestClient) -> None:
    entry = client.get("/models/object-payload").json()
    assert entry["ready"] is True
    assert entry["v2"]["available"] is False and "not an array" in entry["v2"]["reason"]
    response = infer(client, "object-payload", {"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["x"]})
    assert response.status_code == 400 and "has no V2 interface" in response.json()["error"]
    assert client.post("/models/object-payload/predict", json={"text": "ok"}).json()["predictions"] == "OK"


def test_several_inputs_reach_the_model_as_an_object(client: TestClient) -> None:
    response = infer(
        client,
        "two-inputs",
        {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "b", "shape": [2], "datatype": "INT32", "data": [0, 10]},
        outputs=[{"name": "label"}],
    )
    assert response.status_code == 200, response.text
    label = {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["small", "big"]}
    assert response.json()["outputs"] == [{**label, "parameters": {"content_type": "str"}}]
    missing = infer(client, "two-inputs", {"name": "a", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]})
    assert missing.status_code == 400 and missing.json() == {"error": "missing inputs: b"}


def test_numpy_input_opt_in_receives_arrays(client: TestClient) -> None:
    ArrayInput.received.clear()
    response = infer(client, "arrays", {"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]})
    assert response.json()["outputs"][0]["data"] == [6.0]
    assert ArrayInput.received == [np.ndarray]
    assert client.post("/models/arrays/predict", json=[[1, 2]]).json()["predictions"] == [3.0]
    assert ArrayInput.received[-1] is list  # the stevedore route still hands over JSON values


def test_numpy_input_is_still_validated_against_the_schema(client: TestClient) -> None:
    response = infer(client, "positive", {"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, -2]})
    assert response.status_code == 400
    assert response.json() == {
        "error": "input 'input-0' does not match the model's schema: it has values outside the schema's minimum of 0"
    }


def test_strings_as_bytes(client: TestClient) -> None:
    response = infer(client, "words", {"name": "input-0", "shape": [2], "datatype": "BYTES", "data": ["ab", "cde"]})
    assert response.json()["outputs"][0]["data"] == [2, 3]


@pytest.mark.parametrize(
    ("datatype", "data", "accepted"),
    [
        ("INT32", [1, 2], True),
        ("UINT8", [1, 2], True),
        ("FP16", [1.5, 2], True),
        ("BOOL", [True, False], False),
        ("BYTES", ["1", "2"], False),
        ("FP64", ["1", "2"], False),
        ("INT64", [1.5, 2], False),
        ("UINT8", [300, 2], False),
        ("INT8", [True, False], False),
    ],
)
def test_datatype_conversion_keeps_meaning(client: TestClient, datatype: str, data: list[Any], accepted: bool) -> None:
    response = infer(client, "rowsum", {"name": "input-0", "shape": [1, 2], "datatype": datatype, "data": data})
    assert (response.status_code == 200) is accepted, response.text
    if not accepted:
        assert response.status_code == 400 and set(response.json()) == {"error"}


@pytest.mark.parametrize(
    ("default_outputs", "reason"),
    [(["nope"], "default_outputs names nope; the outputs are: predict, predict_proba"), ([], "non-empty list")],
)
def test_default_outputs_naming_no_output_leave_the_model_without_v2(
    make_client: Callable[..., TestClient], default_outputs: list[str], reason: str
) -> None:
    client = make_client(Registers(Classes(name="bad-defaults", default_outputs=default_outputs)))
    entry = client.get("/models/bad-defaults").json()
    assert entry["ready"] is True
    assert entry["v2"]["available"] is False and reason in entry["v2"]["reason"]


def test_predict_outputs_runs_inline_too(make_client: Callable[..., TestClient]) -> None:
    """A short ``predict_outputs`` of a model declared ``inline`` runs on the event loop, as ``predict`` does."""
    client = make_client(Registers(ChoosesOutputs(inline=True, max_batch_size=1)))
    assert model_runtime(client, "chooses").runs_inline(1)
    tensor = {"name": "input-1", "shape": [1, 2], "datatype": "FP64", "data": [0.75, 0.75]}
    answer = infer(client, "chooses", tensor, outputs=[{"name": "predict_proba"}]).json()
    assert [output["name"] for output in answer["outputs"]] == ["predict_proba"]
    assert answer["outputs"][0]["data"] == [0.25, 0.75] and answer["parameters"] == {"renamed_input": "input-1"}
