"""The MLflow runtime: MLflow models saved by MLflow itself (scikit-learn with a tensor and with a column
signature, a PythonModel, one with no signature), served by real servers over loopback in a virtual environment
of their own, answering as ``mlflow.pyfunc`` does; from ``--model NAME=DIR``, from KServe's ``--model_name NAME
--model_dir DIR``, from a settings file (a folder relative to it) and from an ``s3://`` prefix of a real
S3-compatible server (moto's server mode); and refused, with the reason, while the server stays up.

Two server starts in all (MLflow takes seconds to import): one with ``--allow-pickle``, one trusting only what
its settings file trusts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow_fixtures import Models, make_mlflow_venv, save_models

from tests.s3 import Bucket, s3_bucket
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
    """Every model from ``--model``: the runtime guessed from the folder (its ``MLmodel``), or named; and one
    from KServe's arguments (``--model_name NAME --model_dir DIR``, DIR the MLflow model's folder)."""
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    args = ["--allow-pickle"]
    for name in ("tensor", "columns", "python", "unsigned"):
        args += ["--model", f"{name}={models[name]}"]
    args += ["--model", f"named=mlflow:{models['tensor'] / 'MLmodel'}"]
    args += ["--model_name", "kserve", "--model_dir", str(models["columns"])]
    running = live_server(mlflow_venv, log, *args)
    yield running
    running.stop()


def live_server(environment: Venv, log: Path, *args: str, **env: str) -> Server:
    """A server up (``/livez``: its models loaded or failed; ``/readyz`` is 503 while one has failed)."""
    running = Server.start(environment, log, *args, **env)
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


def test_a_kserve_model_dir_serves_the_mlflow_folder_as_mlflow_answers(server: Server, models: Models) -> None:
    """``--model_name kserve --model_dir DIR``: KServe's arguments, the runtime guessed from DIR's ``MLmodel``."""
    expected = models.expected["columns"]
    assert predictions(server, "kserve", columns_of(ROWS)) == expected
    assert infer(server, "kserve", column_tensors(ROWS))["outputs"][0]["data"] == expected
    assert model_state(server, "kserve")["state"] == "ready"


def test_a_python_model_answers_as_mlflow(server: Server, models: Models) -> None:
    expected = models.expected["python"]
    assert predictions(server, "python", columns_of(ROWS)) == pytest.approx(expected)
    assert infer(server, "python", column_tensors(ROWS))["outputs"][0]["data"] == pytest.approx(expected)


def test_a_model_without_a_signature_fails_asking_for_a_schema_and_fixture(server: Server) -> None:
    state = model_state(server, "unsigned")
    assert state["state"] == "failed"
    assert "predict_schema" in state["reason"] and "predict_fixture" in state["reason"], state["reason"]
    assert model_state(server, "tensor")["state"] == "ready"


#: Where the S3 server holds the column model's folder: every object under this prefix.
S3_PREFIX = "mlflow/columns"


@pytest.fixture(scope="module")
def bucket(models: Models) -> Iterator[Bucket]:
    """A real S3-compatible server (moto's, in this process, on loopback) holding the column model's folder."""
    with s3_bucket("models") as store:
        store.upload(models["columns"], S3_PREFIX)
        yield store


@pytest.fixture(scope="module")
def settings_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the trusting server's settings file, log and state (its model cache)."""
    return tmp_path_factory.mktemp("mlflow-settings")


@pytest.fixture(scope="module")
def trusting_server(mlflow_venv: Venv, models: Models, bucket: Bucket, settings_folder: Path) -> Iterator[Server]:
    """A server without --allow-pickle: its settings file trusts a folder given relative to the file (the
    runtime guessed from its ``MLmodel``) and an ``s3://`` prefix; ``--model`` adds two models nothing trusts."""
    root = settings_folder
    relative = Path(os.path.relpath(models["tensor"], root))
    assert not relative.is_absolute() and relative.parts[0] == "..", relative  # resolved against the file's folder
    (root / "stevedore.toml").write_text(
        f'[models.trusted]\nuri = "{relative.as_posix()}"\ntrust = true\n\n'
        f'[models.remote]\nruntime = "mlflow"\nuri = "s3://{bucket.name}/{S3_PREFIX}/"\ntrust = true\n'
    )
    args = ["--config", str(root / "stevedore.toml"), "--state-dir", str(root / "state")]
    args += ["--model", f"tensor={models['tensor']}", "--model", f"python={models['python']}"]
    # Started elsewhere than the settings' folder: a path relative to the working directory would not be found.
    running = live_server(mlflow_venv, root / "server.log", *args, **bucket.environment)
    yield running
    running.stop()


@pytest.mark.s3
def test_an_mlflow_model_is_refused_without_trust_and_the_server_serves(
    trusting_server: Server, models: Models
) -> None:
    """Without --allow-pickle, only the models the settings trust are served; the others fail with why."""
    listed = trusting_server.wait_for("/models").json()["models"]
    reasons = {model["name"]: model["reason"] for model in listed if model["state"] == "failed"}
    assert sorted(reasons) == ["python", "tensor"], listed
    assert "cloudpickle" in reasons["tensor"] and "--allow-pickle" in reasons["tensor"]
    assert "PythonModel" in reasons["python"] and "trust = true" in reasons["python"]


@pytest.mark.s3
def test_a_settings_file_serves_a_folder_relative_to_it_that_it_trusts(trusting_server: Server, models: Models) -> None:
    expected = models.expected["tensor"]
    state = model_state(trusting_server, "trusted")
    assert state["state"] == "ready", state
    assert predictions(trusting_server, "trusted", ROWS) == expected
    flat = [value for row in ROWS for value in row]
    answer = infer(
        trusting_server, "trusted", [{"name": "input-0", "datatype": "FP64", "shape": [len(ROWS), 4], "data": flat}]
    )
    assert answer["outputs"][0]["data"] == expected


@pytest.mark.s3
def test_an_s3_prefix_serves_every_object_under_it_as_mlflow_answers(
    trusting_server: Server, models: Models, settings_folder: Path
) -> None:
    expected = models.expected["columns"]
    state = model_state(trusting_server, "remote")
    assert state["state"] == "ready", state
    assert predictions(trusting_server, "remote", columns_of(ROWS)) == expected
    assert infer(trusting_server, "remote", column_tensors(ROWS))["outputs"][0]["data"] == expected
    # The whole folder came down, not only what loading it reads (MLmodel, the model's file).
    (downloaded,) = [path.parent for path in (settings_folder / "state" / "model-cache").rglob("MLmodel")]
    assert files_in(downloaded) == files_in(models["columns"])


def files_in(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


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
