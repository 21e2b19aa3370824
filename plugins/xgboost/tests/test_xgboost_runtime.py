"""The XGBoost runtime: models trained and saved here by XGBoost (JSON, UBJ, KServe's model.bst), served by a
real server (``stevedore-server run`` over loopback) from ``--model`` and from a KServe-style folder, answering
as the model called directly (as MLServer's XGBoost runtime reads it); a damaged file is a failed model with
its reason while the others serve."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_iris
from stevedore_runtime_xgboost import XGBoostRuntime

from stevedore_server.base.errors import PluginError
from stevedore_server.kit.loopback import LiveServer
from stevedore_server.model_files import ModelFile

#: Seconds a server gets to load and self-test its models.
STARTUP = 90.0
#: Rows asked of every model: a few of each species.
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.9, 3.0, 5.1, 1.8]]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@dataclass(frozen=True)
class Artifacts:
    """An XGBClassifier and a softprob Booster trained here on iris, and their files."""

    classifier: xgboost.XGBClassifier
    booster: xgboost.Booster
    folder: Path

    @property
    def json(self) -> Path:
        return self.folder / "model.json"

    @property
    def ubj(self) -> Path:
        return self.folder / "classifier.ubj"

    @property
    def booster_json(self) -> Path:
        """The booster of ``xgboost.train``, with feature names, in a JSON file of another name."""
        return self.folder / "iris-xgb.json"

    @property
    def kserve(self) -> Path:
        """A KServe-style model directory: model.bst (as KServe's xgboost server expects it) and a JSON file
        that is no model."""
        return self.folder / "kserve"

    @property
    def truncated(self) -> Path:
        return self.folder / "truncated.json"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    folder = tmp_path_factory.mktemp("xgboost-artifacts")
    X, y = load_iris(return_X_y=True)
    classifier = xgboost.XGBClassifier(n_estimators=8, max_depth=3).fit(X, y)
    data = xgboost.DMatrix(X, label=y, feature_names=FEATURES)
    booster = xgboost.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2}, data, 6)
    saved = Artifacts(classifier, booster, folder)
    classifier.save_model(saved.json)
    classifier.save_model(saved.ubj)
    booster.save_model(saved.booster_json)
    saved.kserve.mkdir()
    (saved.kserve / "model.bst").write_bytes(saved.ubj.read_bytes())  # XGBoost writes .bst as UBJ
    (saved.kserve / "schema.json").write_text('{"type": "array"}')
    content = saved.json.read_bytes()
    saved.truncated.write_bytes(content[: len(content) // 2])
    return saved


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start ``stevedore-server run ARGS`` with only this runtime selected and a state directory of the test's;
    stopped after it."""
    started: list[LiveServer] = []

    def start(*args: str) -> LiveServer:
        log = tmp_path / f"server-{len(started)}.log"
        server = LiveServer.start(log, "--plugins", "xgboost", "--state-dir", str(tmp_path / "state"), *args)
        started.append(server)
        server.wait_until_serving(STARTUP)
        return server

    yield start
    for server in started:
        server.stop()


def predict(server: LiveServer, model: str, rows: Any = ROWS) -> Any:
    response = httpx.post(f"{server.url}/models/{model}/predict", json=rows, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def infer(server: LiveServer, model: str, outputs: list[str] | None = None, rows: Any = ROWS) -> dict[str, Any]:
    """A V2 REST inference, its one input named as MLServer's NumpyRequestCodec names it; the outputs by name."""
    body: dict[str, Any] = {
        "inputs": [{"name": "input-1", "datatype": "FP64", "shape": [len(rows), 4], "data": np.ravel(rows).tolist()}]
    }
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    response = httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return {tensor["name"]: tensor for tensor in response.json()["outputs"]}


def tensor_values(tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(tensor["data"]).reshape(tensor["shape"])


def reason_of(server: LiveServer, model: str) -> str:
    answer = httpx.get(f"{server.url}/models/{model}", timeout=10).json()
    assert answer["state"] == "failed", answer
    return str(answer["reason"])


def as_float32(rows: Any) -> np.ndarray[Any, Any]:
    return np.asarray(rows, dtype=np.float32)


# -- served: the same answers as the model ------------------------------------------------------------


@pytest.mark.server
def test_model_flag_and_kserve_folder_serve_what_xgboost_answers(serve: Any, artifacts: Artifacts) -> None:
    """``--model NAME=FILE`` (JSON, UBJ, runtime guessed), ``--model NAME=DIR`` (KServe's model.bst, beside a
    schema.json that is no model), and a damaged file: the stevedore route and V2 answer what the classifier and
    the booster answer; the damaged model fails with XGBoost's reason and the others serve."""
    server = serve(
        "--model", f"iris={artifacts.json}",
        "--model", f"iris-ubj={artifacts.ubj}",
        "--model", f"folder={artifacts.kserve}",
        "--model", f"booster={artifacts.booster_json}",
        "--model", f"truncated={artifacts.truncated}",
    )  # fmt: skip
    X = as_float32(ROWS)
    labels, probabilities = artifacts.classifier.predict(X), artifacts.classifier.predict_proba(X)
    for name in ("iris", "iris-ubj", "folder"):
        assert predict(server, name) == labels.tolist()
        default = infer(server, name)
        assert list(default) == ["predict"]  # as MLServer's XGBoostModel: predict where none is asked
        assert tensor_values(default["predict"]).tolist() == labels.tolist()
        chosen = infer(server, name, ["predict_proba"])["predict_proba"]
        assert chosen["datatype"] == "FP32"
        np.testing.assert_array_equal(tensor_values(chosen).astype(np.float32), probabilities)

    # A booster of xgboost.train: predict is what Booster.predict gives (softprob: the probabilities).
    expected = artifacts.booster.predict(xgboost.DMatrix(X, feature_names=FEATURES))
    np.testing.assert_array_equal(np.asarray(predict(server, "booster"), dtype=np.float32), expected)
    np.testing.assert_array_equal(tensor_values(infer(server, "booster")["predict"]).astype(np.float32), expected)
    metadata = httpx.get(f"{server.url}/v2/models/booster", timeout=10).json()
    assert [output["name"] for output in metadata["outputs"]] == ["predict"]
    schema = httpx.get(f"{server.url}/models/booster/schemas/predict", timeout=10).json()
    assert "petal_width" in str(schema)

    truncated = reason_of(server, "truncated")
    assert "truncated.json" in truncated and "cannot be read as an XGBoost model" in truncated
    assert "Stack trace" not in truncated
    refused = httpx.post(f"{server.url}/models/truncated/predict", json=ROWS, timeout=10)
    assert refused.status_code == 503
    assert predict(server, "iris") == labels.tolist()  # still serving


@pytest.mark.server
def test_settings_output_makes_predict_proba_the_answer(serve: Any, artifacts: Artifacts, tmp_path: Path) -> None:
    config = tmp_path / "stevedore.toml"
    config.write_text(f'[models.proba]\nuri = "{artifacts.json}"\noutput = "predict_proba"\n')
    server = serve("--config", str(config))
    expected = artifacts.classifier.predict_proba(as_float32(ROWS))
    np.testing.assert_array_equal(np.asarray(predict(server, "proba"), dtype=np.float32), expected)
    assert list(infer(server, "proba")) == ["predict_proba"]


# -- the runtime class, in process -------------------------------------------------------------------


def spec_of(uri: Path, tmp_path: Path, **given: Any) -> ModelFile:
    return ModelFile(name="iris", version="1", runtime="xgboost", uri=str(uri), cache_dir=tmp_path / "cache", **given)


def test_runtime_derives_schema_fixture_and_outputs(artifacts: Artifacts, tmp_path: Path) -> None:
    runtime = XGBoostRuntime(spec_of(artifacts.ubj, tmp_path))
    runtime.load()
    schema = runtime.resolved_schema("predict")
    assert schema is not None and schema["items"]["minItems"] == schema["items"]["maxItems"] == 4
    assert runtime.resolved_fixture("predict") == [[0.0, 0.0, 0.0, 0.0]]
    assert runtime.default_outputs == ["predict"]
    assert runtime.tensor_outputs == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert runtime.predict(ROWS).tolist() == artifacts.classifier.predict(as_float32(ROWS)).tolist()
    chosen = runtime.predict_outputs(np.asarray(ROWS), ("predict_proba",))
    np.testing.assert_array_equal(chosen["predict_proba"], artifacts.classifier.predict_proba(as_float32(ROWS)))
    assert "XGBClassifier" in runtime.description


def test_a_booster_has_only_predict(artifacts: Artifacts, tmp_path: Path) -> None:
    runtime = XGBoostRuntime(spec_of(artifacts.booster_json, tmp_path, output="predict_proba"))
    with pytest.raises(PluginError, match=r"no 'predict_proba' output \(it has: predict\)"):
        runtime.load()


def test_runtime_claims_xgboost_files_only(artifacts: Artifacts, tmp_path: Path) -> None:
    for name in ("model.json", "iris-xgb.json", "model.ubj", "model.bst", "0001.model", "MODEL.UBJ"):
        assert XGBoostRuntime.claims(Path("/remote") / name), name
    for name in ("schema.json", "model-settings.json", "model.onnx", "model.txt"):
        assert not XGBoostRuntime.claims(Path("/remote") / name), name
    assert XGBoostRuntime.claims(artifacts.booster_json)  # by its content, whatever its name
    assert not XGBoostRuntime.claims(artifacts.kserve / "schema.json")
    assert XGBoostRuntime.claims(artifacts.kserve)
    assert not XGBoostRuntime.claims(artifacts.folder)  # several models in it: say which
    lightgbm_text = tmp_path / "model.bst"
    lightgbm_text.write_text("tree\nversion=v4\nnum_class=1\n")
    assert not XGBoostRuntime.claims(lightgbm_text)  # KServe's LightGBM name: left to that runtime
