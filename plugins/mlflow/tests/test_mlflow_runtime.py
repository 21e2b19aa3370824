"""The MLflow runtime: MLflow models saved by MLflow itself (scikit-learn with a tensor and with a column
signature, a PythonModel, one with no signature), served by real servers (``stevedore-server run --model
NAME=DIR`` over loopback) in a virtual environment of their own, answering as ``mlflow.pyfunc`` does; and
refused, with the reason, while the server stays up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow_fixtures import Models, make_mlflow_venv, save_models

from tests.venvs import Server, Venv

pytestmark = [pytest.mark.venv, pytest.mark.server]

#: Seconds a server gets to import MLflow, load and self-test its models, on two busy cores.
STARTUP = 180.0
#: Rows asked of every model: a few of each species.
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.9, 3.0, 5.1, 1.8]]
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def mlflow_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return make_mlflow_venv(tmp_path_factory.mktemp("mlflow-venv"))


@pytest.fixture(scope="module")
def models(mlflow_venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Models:
    return save_models(mlflow_venv, tmp_path_factory.mktemp("mlflow-models"), ROWS)


@pytest.fixture(scope="module")
def server(mlflow_venv: Venv, models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Every model from ``--model``: the runtime guessed from the folder (its ``MLmodel``), or named."""
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    args = ["--allow-pickle"]
    for name in ("tensor", "columns", "python", "unsigned"):
        args += ["--model", f"{name}={models[name]}"]
    args += ["--model", f"named=mlflow:{models['tensor'] / 'MLmodel'}"]
    running = live_server(mlflow_venv, log, *args)
    yield running
    running.stop()


def live_server(environment: Venv, log: Path, *args: str) -> Server:
    """A server up (``/livez``: its models loaded or failed; ``/readyz`` is 503 while one has failed)."""
    running = Server.start(environment, log, *args)
    try:
        running.wait_for("/livez", deadline=STARTUP)
    except AssertionError:
        running.stop()
        raise
    return running


def post(server: Server, path: str, body: Any) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30)


def predictions(server: Server, name: str, payload: Any) -> Any:
    response = post(server, f"/models/{name}/predict", payload)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def infer(server: Server, name: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    response = post(server, f"/v2/models/{name}/infer", {"inputs": inputs})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def column_tensors(rows: list[list[float]]) -> list[dict[str, Any]]:
    return [
        {"name": name, "datatype": "FP64", "shape": [len(rows)], "data": [row[index] for row in rows]}
        for index, name in enumerate(COLUMNS)
    ]


def columns_of(rows: list[list[float]]) -> dict[str, list[float]]:
    return {name: [row[index] for row in rows] for index, name in enumerate(COLUMNS)}


def model_state(server: Server, name: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/models/{name}/versions/1", timeout=10)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def test_a_tensor_signature_serves_rows_as_mlflow_answers(server: Server, models: Models) -> None:
    expected = models.expected["tensor"]
    assert predictions(server, "tensor", ROWS) == expected
    assert predictions(server, "named", ROWS) == expected  # `mlflow:` and the MLmodel file itself
    flat = [value for row in ROWS for value in row]
    # MLServer's codec names its one input input-1: a model of one input takes it.
    answer = infer(server, "tensor", [{"name": "input-1", "datatype": "FP64", "shape": [len(ROWS), 4], "data": flat}])
    assert answer["outputs"][0]["data"] == expected


def test_a_tensor_signature_gives_the_schema_and_v2_tensors(server: Server) -> None:
    schema = httpx.get(f"{server.url}/models/tensor/schemas/predict", timeout=10).json()
    row = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}
    assert schema == {"type": "array", "items": row, "minItems": 1}
    v2 = httpx.get(f"{server.url}/v2/models/tensor", timeout=10).json()
    assert v2["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert v2["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
    refused = post(server, "/models/tensor/predict", [[5.1, 3.5, 1.4]])
    assert refused.status_code == 422, refused.text  # the signature's width, checked before MLflow sees it


def test_a_column_signature_serves_columns_and_v2_dataframes_as_mlflow_answers(server: Server, models: Models) -> None:
    expected = models.expected["columns"]
    assert predictions(server, "columns", columns_of(ROWS)) == expected
    assert infer(server, "columns", column_tensors(ROWS))["outputs"][0]["data"] == expected
    whole = [[float(int(value)) for value in row] for row in ROWS]
    given = {name: [int(value) for value in column] for name, column in columns_of(whole).items()}
    assert predictions(server, "columns", given) == predictions(server, "columns", columns_of(whole))
    v2 = httpx.get(f"{server.url}/v2/models/columns", timeout=10).json()
    assert v2["inputs"] == [{"name": name, "datatype": "FP64", "shape": [-1]} for name in COLUMNS]
    missing = post(server, "/models/columns/predict", {name: [1.0] for name in COLUMNS[:3]})
    assert missing.status_code == 422, missing.text


def test_a_python_model_answers_as_mlflow(server: Server, models: Models) -> None:
    expected = models.expected["python"]
    assert predictions(server, "python", columns_of(ROWS)) == pytest.approx(expected)
    assert infer(server, "python", column_tensors(ROWS))["outputs"][0]["data"] == pytest.approx(expected)


def test_a_model_without_a_signature_fails_asking_for_a_schema_and_fixture(server: Server) -> None:
    state = model_state(server, "unsigned")
    assert state["state"] == "failed"
    assert "predict_schema" in state["reason"] and "predict_fixture" in state["reason"], state["reason"]
    assert model_state(server, "tensor")["state"] == "ready"


def test_an_mlflow_model_is_refused_without_trust_and_the_server_serves(
    mlflow_venv: Venv, models: Models, tmp_path: Path
) -> None:
    """Without --allow-pickle, only the model its settings trust is served; the others fail with why."""
    settings = tmp_path / "stevedore.toml"
    settings.write_text(f'[models.trusted]\nruntime = "mlflow"\nuri = "{models["tensor"]}"\ntrust = true\n')
    args = ["--config", str(settings), "--model", f"tensor={models['tensor']}", "--model", f"python={models['python']}"]
    running = live_server(mlflow_venv, tmp_path / "server.log", *args)
    try:
        listed = running.wait_for("/models").json()["models"]
        reasons = {model["name"]: model["reason"] for model in listed if model["state"] == "failed"}
        assert sorted(reasons) == ["python", "tensor"], listed
        assert "cloudpickle" in reasons["tensor"] and "--allow-pickle" in reasons["tensor"]
        assert "PythonModel" in reasons["python"] and "trust = true" in reasons["python"]
        assert predictions(running, "trusted", ROWS) == models.expected["tensor"]
    finally:
        running.stop()


#: Run in the venv: what the runtime derives of each model, as JSON (fixtures and schemas, no server).
DERIVED = r"""
import json, sys
from pathlib import Path
from stevedore_runtime_mlflow import MLflowRuntime
from stevedore_server.model_files import ModelFile

root = Path(sys.argv[1])
derived = {}
for name in ("tensor", "columns", "python"):
    spec = ModelFile(name=name, version="1", runtime="mlflow", uri=str(root / name), cache_dir=root, trusted=True)
    runtime = MLflowRuntime(spec)
    found = runtime.opened()
    derived[name] = {
        "fixture": found.predict_fixture, "tensor_inputs": found.tensor_inputs,
        "content_type": runtime.content_type, "numpy_input": runtime.numpy_input,
    }
print(json.dumps(derived))
"""


def test_the_fixture_is_the_input_example_else_zeros(mlflow_venv: Venv, models: Models) -> None:
    derived = json.loads(mlflow_venv.run("python", "-c", DERIVED, str(models.folder)).stdout.splitlines()[-1])
    assert derived["tensor"]["fixture"] == models.expected["tensor_example"]
    assert derived["columns"]["fixture"] == models.expected["columns_example"]
    assert derived["python"]["fixture"] == {name: [0.0] for name in COLUMNS}  # saved with no example
    assert derived["columns"]["content_type"] == "pd" and not derived["columns"]["numpy_input"]
    assert derived["tensor"]["content_type"] is None and derived["tensor"]["numpy_input"]


#: Run in the venv: which MLmodel descriptions the runtime reads without trust.
SAFETY = r"""
import json
from stevedore_runtime_mlflow.safety import code_run_by

def mlmodel(loader, **flavours):
    return {"flavors": {"python_function": {"loader_module": loader, **flavours.pop("pyfunc", {})}, **flavours}}

cases = {
    "onnx": mlmodel("mlflow.onnx", onnx={"data": "model.onnx"}),
    "xgboost": mlmodel("mlflow.xgboost", xgboost={"model_class": "xgboost.core.Booster", "model_format": "json"}),
    "xgboost_foreign_class": mlmodel("mlflow.xgboost", xgboost={"model_class": "os.system"}),
    "lightgbm_booster": mlmodel("mlflow.lightgbm", lightgbm={"model_class": "lightgbm.basic.Booster"}),
    "lightgbm_sklearn": mlmodel("mlflow.lightgbm", lightgbm={"model_class": "lightgbm.sklearn.LGBMClassifier"}),
    "sklearn_skops": mlmodel("mlflow.sklearn", sklearn={"serialization_format": "skops"}),
    "onnx_with_code": mlmodel("mlflow.onnx", pyfunc={"code": "code"}),
    "python_model": mlmodel("mlflow.pyfunc.model"),
}
print(json.dumps({name: code_run_by(case) for name, case in cases.items()}))
"""


def test_only_flavours_of_data_load_without_trust(mlflow_venv: Venv) -> None:
    verdicts = json.loads(mlflow_venv.run("python", "-c", SAFETY).stdout.splitlines()[-1])
    assert [name for name, verdict in verdicts.items() if verdict is None] == ["onnx", "xgboost", "lightgbm_booster"]
    assert "skops" in verdicts["sklearn_skops"] and "code of its own" in verdicts["onnx_with_code"]
