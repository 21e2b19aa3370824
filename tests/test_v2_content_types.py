"""MLServer's content types on the Open Inference Protocol, in-process: requests built as MLServer's codecs build
them (https://mlserver.readthedocs.io, "Content Types (and Codecs)"), and, where ``mlserver`` is installed (its
own virtual environment: ``make test-mlserver``), built and decoded by its codecs themselves. The tests that need
pandas or MLServer are marked ``mlserver``: the main run leaves them out (``-m "not mlserver"``) and
``make test-mlserver`` runs them alone, where a missing one fails on its import."""

from __future__ import annotations

import base64
import datetime
import re
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from stevedore_server import Predictor
from stevedore_server.base.errors import BadRequest
from stevedore_server.core import content_types
from stevedore_server.core.inference import Answer
from stevedore_server.core.signature import Signature
from stevedore_server.core.tensors import TensorSpec
from stevedore_server.frontends.v2 import grpc_codec
from stevedore_server.frontends.v2 import protocol as pb

from .helpers import Registers
from .showcase import readme_block, showcase_module


def column(element_type: str) -> dict[str, Any]:
    """A column as MLServer's codecs shape one: a row an element."""
    return {"type": "array", "items": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": element_type}}}


TEXT_COLUMN = column("string")
NUMBER_COLUMN = column("integer")


def flat(payload: Any) -> list[Any]:
    return list(np.asarray(payload, dtype=object).ravel())


class Echo(Predictor):
    """Answers the Python type of each element it received: what the content types made of the text."""

    name = "echo"
    predict_schema = TEXT_COLUMN
    predict_fixture = [["aGk="]]
    tensor_inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}]

    def run_predict(self, payload: Any) -> list[str]:
        return [type(element).__name__ for element in flat(payload)]


class Blobs(Predictor):
    """Declares base64 in and out: reverses each blob's bytes (answered as base64 text, which JSON can hold)."""

    name = "blobs"
    predict_schema = TEXT_COLUMN
    predict_fixture = [["aGk="]]
    tensor_inputs = [{"name": "blob", "datatype": "BYTES", "shape": [-1, 1], "content_type": "base64"}]
    tensor_outputs = [{"name": "blob", "datatype": "BYTES", "shape": [-1], "content_type": "base64"}]

    def run_predict(self, payload: Any) -> list[str]:
        # The self-test passes the fixture as it is written (JSON); V2 requests pass the decoded bytes.
        blobs = [b if isinstance(b, bytes) else base64.b64decode(b) for b in flat(payload)]
        return [base64.b64encode(blob[::-1]).decode() for blob in blobs]


class NextDay(Predictor):
    """Asks for datetimes for every input; answers the day after each."""

    name = "next-day"
    content_type = "datetime"
    predict_schema = TEXT_COLUMN
    predict_fixture = [["2022-01-11T11:09:10"]]
    tensor_inputs = [{"name": "when", "datatype": "BYTES", "shape": [-1, 1]}]

    def run_predict(self, payload: Any) -> list[datetime.datetime]:
        stamps = [s if isinstance(s, datetime.datetime) else datetime.datetime.fromisoformat(s) for s in flat(payload)]
        return [stamp + datetime.timedelta(days=1) for stamp in stamps]


class Greeter(Predictor):
    """Asks for a pandas DataFrame of its two inputs."""

    name = "greeter"
    content_type = "pd"
    predict_schema = {
        "type": "object",
        "required": ["name", "age"],
        "properties": {"name": TEXT_COLUMN, "age": NUMBER_COLUMN},
    }
    predict_fixture = {"name": [["Ada"]], "age": [[36]]}
    tensor_inputs = [
        {"name": "name", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "age", "datatype": "INT64", "shape": [-1, 1]},
    ]
    tensor_outputs = [{"name": "greeting", "datatype": "BYTES", "shape": [-1]}]

    def run_predict(self, frame: Any) -> list[str]:
        if isinstance(frame, dict):  # the self-test's fixture, as written
            return [f"{n[0]} is {a[0]}" for n, a in zip(frame["name"], frame["age"], strict=True)]
        if type(frame).__name__ != "DataFrame":
            raise TypeError(f"a DataFrame was asked for, not {type(frame).__name__}")
        return [f"{n} is {a}" for n, a in zip(frame["name"], frame["age"], strict=True)]


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(Registers(Echo(), Blobs(), NextDay(), Greeter()))


def text_input(name: str, data: list[str], content_type: str | None = None) -> dict[str, Any]:
    """An input as MLServer's StringCodec, Base64Codec and DatetimeCodec encode one: a row an element."""
    tensor: dict[str, Any] = {"name": name, "shape": [len(data), 1], "datatype": "BYTES", "data": data}
    if content_type is not None:
        tensor["parameters"] = {"content_type": content_type}
    return tensor


def infer(client: TestClient, model: str, *inputs: dict[str, Any], **extra: Any) -> Any:
    return client.post(f"/v2/models/{model}/infer", json={"inputs": list(inputs), **extra})


@pytest.mark.parametrize(
    ("content_type", "data", "received"),
    [
        (None, ["two", "words"], "str"),
        ("np", ["two", "words"], "str"),
        ("str", ["two", "words"], "str"),
        ("base64", ["UHl0aG9u", "aXMgZnVu"], "bytes"),
        ("datetime", ["2022-01-11T11:09:10.000000", "2022-01-11"], "datetime"),
    ],
)
def test_an_input_content_type_decodes_its_elements(
    client: TestClient, content_type: str | None, data: list[str], received: str
) -> None:
    response = infer(client, "echo", text_input("text", data, content_type))
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["data"] == [received, received]
    assert output["parameters"] == {"content_type": "str"}


def test_the_request_content_type_applies_to_its_text_inputs(client: TestClient) -> None:
    extra = {"parameters": {"content_type": "base64"}}
    response = infer(client, "echo", text_input("text", ["UHl0aG9u"]), **extra)
    assert response.json()["outputs"][0]["data"] == ["bytes"]
    # The input's own content type wins over the request's.
    response = infer(client, "echo", text_input("text", ["UHl0aG9u"], "str"), **extra)
    assert response.json()["outputs"][0]["data"] == ["str"]


def test_a_declared_content_type_decodes_and_encodes(client: TestClient) -> None:
    blobs = [base64.b64encode(b).decode() for b in (b"\x00\x01\xff", b"abc")]
    response = infer(client, "blobs", text_input("blob", blobs))
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["parameters"] == {"content_type": "base64"}
    assert [base64.b64decode(item) for item in output["data"]] == [b"\xff\x01\x00", b"cba"]
    metadata = client.get("/v2/models/blobs").json()
    assert metadata["inputs"][0]["parameters"] == {"content_type": "base64"}


def test_the_predictors_content_type_and_datetime_outputs(client: TestClient) -> None:
    response = infer(client, "next-day", text_input("when", ["2022-01-11T11:09:10", "2024-02-28"]))
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["parameters"] == {"content_type": "datetime"} and output["datatype"] == "BYTES"
    assert output["data"] == ["2022-01-12T11:09:10", "2024-02-29T00:00:00"]


def test_a_binary_datetime_output_is_iso_text(client: TestClient) -> None:
    outputs = [{"name": "output-0", "parameters": {"binary_data": True}}]
    response = infer(client, "next-day", text_input("when", ["2022-01-11"]), outputs=outputs)
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    assert response.content[length + 4 :] == b"2022-01-12T00:00:00"


@pytest.mark.parametrize(
    ("model", "tensor", "extra", "message"),
    [
        ("echo", text_input("text", ["x"], "hg"), {}, "unknown content type 'hg'"),
        ("echo", text_input("text", ["x"]), {"parameters": {"content_type": 7}}, "unknown content type 7"),
        ("echo", text_input("text", ["not base64!"], "base64"), {}, "an element is not 'base64'"),
        ("echo", text_input("text", ["yesterday"], "datetime"), {}, "an element is not 'datetime'"),
        ("echo", text_input("text", ["x"], "pd"), {}, "'pd' is the request's, not an input's"),
        (
            "greeter",
            {"name": "age", "shape": [1, 1], "datatype": "INT64", "data": [1], "parameters": {"content_type": "str"}},
            {},
            "content type 'str' needs BYTES, not INT64",
        ),
    ],
)
def test_a_content_type_that_does_not_fit_is_a_400(
    client: TestClient, model: str, tensor: dict[str, Any], extra: dict[str, Any], message: str
) -> None:
    inputs = [tensor]
    if model == "greeter":
        inputs.append(text_input("name", ["Ada"]))
    response = infer(client, model, *inputs, **extra)
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_a_dataframe_without_pandas_is_a_clear_400(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(content_types, "pandas_installed", lambda: False)
    age = {"name": "age", "shape": [1, 1], "datatype": "INT64", "data": [36]}
    response = infer(client, "greeter", text_input("name", ["Ada"], "str"), age)
    assert response.status_code == 400
    assert response.json()["error"] == "content type 'pd' needs pandas, which is not installed on this server"
    response = infer(client, "echo", text_input("text", ["x"]), parameters={"content_type": "pd"})
    assert response.status_code == 400 and "needs pandas" in response.json()["error"]


@pytest.mark.mlserver
def test_several_inputs_form_a_dataframe(client: TestClient) -> None:
    import pandas  # noqa: F401  # its absence fails here, plainly, not as the server's 400 "needs pandas"

    # As MLServer's PandasCodec.encode_request writes a DataFrame of a text and an integer column.
    age = {"name": "age", "shape": [2, 1], "datatype": "INT64", "data": [34, 22]}
    body = {"parameters": {"content_type": "pd"}, "inputs": [text_input("name", ["Joanne", "Michael"], "str"), age]}
    response = client.post("/v2/models/greeter/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == ["Joanne is 34", "Michael is 22"]


def test_the_stevedore_routes_are_unchanged(client: TestClient) -> None:
    assert client.post("/models/echo/predict", json=[["aGk="]]).json()["predictions"] == ["str"]
    response = client.post("/models/next-day/predict", json=[["2022-01-11"]])
    assert response.json()["predictions"] == ["2022-01-12T00:00:00"]


def test_grpc_requests_name_content_types_in_string_parameters() -> None:
    signature = Signature((TensorSpec("text", "BYTES", (-1, 1)), TensorSpec("n", "INT64", (-1,))), ())
    request = pb.ModelInferRequest(model_name="echo")
    request.parameters["content_type"].string_param = "base64"
    text = request.inputs.add(name="text", datatype="BYTES", shape=[1, 1])
    request.inputs.add(name="n", datatype="INT64", shape=[1])
    assert grpc_codec.content_plan(request, signature).elements == {"text": "base64"}
    text.parameters["content_type"].string_param = "datetime"
    assert grpc_codec.content_plan(request, signature).elements == {"text": "datetime"}
    text.parameters["content_type"].string_param = "nope"
    with pytest.raises(BadRequest, match="unknown content type 'nope'"):
        grpc_codec.content_plan(request, signature)


# -- with MLServer's own codecs, in its virtual environment (``make test-mlserver``) ----------------------------


@pytest.mark.mlserver
def test_mlservers_codecs_build_the_requests_and_read_the_answers(client: TestClient) -> None:
    import pandas
    from mlserver import codecs
    from mlserver import types as mlserver_types

    def call(model: str, request: Any) -> Any:
        response = client.post(f"/v2/models/{model}/infer", content=request.model_dump_json(exclude_none=True))
        assert response.status_code == 200, response.text
        return mlserver_types.InferenceResponse.model_validate(response.json())

    request = mlserver_types.InferenceRequest(inputs=[codecs.StringCodec.encode_input("text", ["two", "words"])])
    assert codecs.StringCodec.decode_output(call("echo", request).outputs[0]) == ["str", "str"]
    request = mlserver_types.InferenceRequest(inputs=[codecs.Base64Codec.encode_input("blob", [b"\x00\x01\xff"])])
    assert codecs.Base64Codec.decode_output(call("blobs", request).outputs[0]) == [b"\xff\x01\x00"]
    request = mlserver_types.InferenceRequest(inputs=[codecs.Base64Codec.encode_input("text", [b"abc"])])
    assert codecs.StringCodec.decode_output(call("echo", request).outputs[0]) == ["bytes"]
    stamp = datetime.datetime(2022, 1, 11, 11, 9, 10)
    request = mlserver_types.InferenceRequest(inputs=[codecs.DatetimeCodec.encode_input("when", [stamp])])
    answer = call("next-day", request).outputs[0]
    assert codecs.DatetimeCodec.decode_output(answer) == [stamp + datetime.timedelta(days=1)]
    frame = pandas.DataFrame({"name": pandas.Series(["Joanne", "Michael"], dtype=object), "age": [34, 22]})
    answer = call("greeter", codecs.PandasCodec.encode_request(frame))
    assert codecs.StringCodec.decode_output(answer.outputs[0]) == ["Joanne is 34", "Michael is 22"]


def test_the_documented_example(make_client: Callable[..., TestClient]) -> None:
    """The showcase's next-day, which the content types' page shows, answers its documented request."""
    client = make_client(Registers(showcase_module("next_day").NextDay()))
    (request,) = re.findall(r"-d '(.*?)'", readme_block("next-day"))
    response = client.post("/v2/models/next-day/infer", content=request)
    assert response.json()["outputs"] == [
        {
            "name": "output-0",
            "datatype": "BYTES",
            "shape": [1],
            "parameters": {"content_type": "datetime"},
            "data": ["2022-01-12T11:09:10"],
        }
    ]


def test_grpc_outputs_carry_their_content_type() -> None:
    signature = Signature((TensorSpec("when", "BYTES", (-1,)),), (TensorSpec("next", "BYTES", (-1,)),))
    model: Any = types.SimpleNamespace(name="next-day", version="1", signature=signature)
    answer = Answer(model, [datetime.datetime(2022, 1, 12, 11, 9, 10)])
    (output,) = grpc_codec.encode_response(answer, pb.ModelInferRequest(model_name="next-day"), ["next"]).outputs
    assert output.parameters["content_type"].string_param == "datetime"
    assert list(output.contents.bytes_contents) == [b"2022-01-12T11:09:10"]
