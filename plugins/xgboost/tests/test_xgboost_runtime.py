"""The XGBoost runtime: models trained and saved here by XGBoost (JSON, UBJ, KServe's model.bst), served by a
real server (``stevedore-server run`` over loopback) from ``--model`` and from a KServe-style folder, answering
as the model called directly (as MLServer's XGBoost runtime reads it); a damaged file is a failed model with
its reason while the others serve."""

from __future__ import annotations

import json
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
from stevedore_server.kit.runtime_testing import (
    StartServer,
    failure_reason,
    infer,
    model_file,
    predict,
    runtime_servers,
    tensor_values,
)

#: The runtime under test (its entry point's name).
RUNTIME = "xgboost"
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
def serve(tmp_path: Path) -> Iterator[StartServer]:
    """Servers of this runtime alone (``runtime_servers``), stopped after the test."""
    with runtime_servers(RUNTIME, tmp_path) as start:
        yield start


def as_float32(rows: Any) -> np.ndarray[Any, Any]:
    return np.asarray(rows, dtype=np.float32)


# -- served: the same answers as the model ------------------------------------------------------------


@pytest.mark.server
def test_model_flag_and_kserve_folder_serve_what_xgboost_answers(serve: StartServer, artifacts: Artifacts) -> None:
    """``--model NAME=FILE`` (JSON, UBJ, runtime guessed), ``--model NAME=DIR`` (KServe's model.bst, beside a
    schema.json that is no model), and a damaged file: the stevedore route and V2 answer what the classifier and
    the booster answer; the damaged model fails with XGBoost's reason and the others serve."""
    edited = json.loads(artifacts.json.read_text())
    edited["learner"]["gradient_booster"]["model"]["trees"][0]["split_indices"][0] = 9999  # no such feature
    (artifacts.json.parent / "edited.json").write_text(json.dumps(edited))
    server = serve(
        "--model", f"iris={artifacts.json}",
        "--model", f"iris-ubj={artifacts.ubj}",
        "--model", f"folder={artifacts.kserve}",
        "--model", f"booster={artifacts.booster_json}",
        "--model", f"truncated={artifacts.truncated}",
        "--model", f"edited={artifacts.json.parent / 'edited.json'}",
    )  # fmt: skip
    X = as_float32(ROWS)
    labels, probabilities = artifacts.classifier.predict(X), artifacts.classifier.predict_proba(X)
    for name in ("iris", "iris-ubj", "folder"):
        assert predict(server, name, ROWS) == labels.tolist()
        default = infer(server, name, ROWS)
        assert list(default) == ["predict"]  # as MLServer's XGBoostModel: predict where none is asked
        assert tensor_values(default["predict"]).tolist() == labels.tolist()
        chosen = infer(server, name, ROWS, ["predict_proba"])["predict_proba"]
        assert chosen["datatype"] == "FP32"
        np.testing.assert_array_equal(tensor_values(chosen).astype(np.float32), probabilities)

    # A booster of xgboost.train: predict is what Booster.predict gives (softprob: the probabilities).
    expected = artifacts.booster.predict(xgboost.DMatrix(X, feature_names=FEATURES))
    np.testing.assert_array_equal(np.asarray(predict(server, "booster", ROWS), dtype=np.float32), expected)
    np.testing.assert_array_equal(tensor_values(infer(server, "booster", ROWS)["predict"]).astype(np.float32), expected)
    metadata = httpx.get(f"{server.url}/v2/models/booster", timeout=10).json()
    assert [output["name"] for output in metadata["outputs"]] == ["predict"]
    schema = httpx.get(f"{server.url}/models/booster/schemas/predict", timeout=10).json()
    assert "petal_width" in str(schema)

    truncated = failure_reason(server, "truncated")
    assert "truncated.json" in truncated and "cannot be read as an XGBoost model" in truncated
    assert "Stack trace" not in truncated
    # An index XGBoost would follow out of bounds: refused before XGBoost reads it (unchecked, it can crash).
    assert "tree 0: node 0 splits on feature 9999, not one of the model's 4" in failure_reason(server, "edited")
    refused = httpx.post(f"{server.url}/models/truncated/predict", json=ROWS, timeout=10)
    assert refused.status_code == 503
    assert predict(server, "iris", ROWS) == labels.tolist()  # still serving


@pytest.mark.server
def test_settings_output_makes_predict_proba_the_answer(
    serve: StartServer, artifacts: Artifacts, tmp_path: Path
) -> None:
    config = tmp_path / "stevedore.toml"
    config.write_text(f'[models.proba]\nuri = "{artifacts.json}"\noutput = "predict_proba"\n')
    server = serve("--config", str(config))
    expected = artifacts.classifier.predict_proba(as_float32(ROWS))
    np.testing.assert_array_equal(np.asarray(predict(server, "proba", ROWS), dtype=np.float32), expected)
    assert list(infer(server, "proba", ROWS)) == ["predict_proba"]


# -- the runtime class, in process -------------------------------------------------------------------


def test_runtime_derives_schema_fixture_and_outputs(artifacts: Artifacts, tmp_path: Path) -> None:
    runtime = XGBoostRuntime(model_file(RUNTIME, artifacts.ubj, tmp_path / "cache"))
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
    runtime = XGBoostRuntime(model_file(RUNTIME, artifacts.booster_json, tmp_path / "cache", output="predict_proba"))
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
