"""The scikit-learn runtime: real artifacts saved here by scikit-learn, joblib and skops, served by real servers
(``stevedore-server run`` over loopback) from a settings file, from ``--model`` and from a KServe-style folder,
answering as the estimator called directly; and refused, each with its reason, while the others serve."""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
import skops.io
from sklearn.datasets import load_iris
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from stevedore_runtime_sklearn import SklearnRuntime

from stevedore_server.base.errors import PluginError, UnsafeFormat
from stevedore_server.kit.runtime_testing import (
    StartServer,
    failure_reason,
    infer,
    infer_tensors,
    model_file,
    predict,
    runtime_servers,
    tensor_values,
)

#: The runtime under test (its entry point's name).
RUNTIME = "sklearn"
#: Rows asked of every model: a few of each species.
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.9, 3.0, 5.1, 1.8]]


@dataclass(frozen=True)
class Artifacts:
    """The iris pipeline (StandardScaler + LogisticRegression) as fitted here, and its files."""

    model: Pipeline
    folder: Path

    @property
    def joblib(self) -> Path:
        return self.folder / "model.joblib"

    @property
    def skops(self) -> Path:
        return self.folder / "model.skops"

    @property
    def kserve(self) -> Path:
        """A KServe-style model directory: the storage initializer's /mnt/models, one model.joblib in it."""
        return self.folder / "kserve"

    @property
    def untrusted_skops(self) -> Path:
        """A skops file holding a type skops does not trust by default (``_operator.neg``)."""
        return self.folder / "negated.skops"

    @property
    def truncated(self) -> Path:
        return self.folder / "truncated.joblib"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    folder = tmp_path_factory.mktemp("sklearn-artifacts")
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    saved = Artifacts(model, folder)
    joblib.dump(model, saved.joblib)
    skops.io.dump(model, saved.skops)
    saved.kserve.mkdir()
    joblib.dump(model, saved.kserve / "model.joblib")
    negated = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression(max_iter=500)).fit(X, y)
    skops.io.dump(negated, saved.untrusted_skops)
    content = saved.joblib.read_bytes()
    saved.truncated.write_bytes(content[: len(content) // 2])
    return saved


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServer]:
    """Servers of this runtime alone (the example plugin's model is also named iris), stopped after the test."""
    with runtime_servers(RUNTIME, tmp_path) as start:
        yield start


def settings_file(folder: Path, text: str) -> Path:
    path = folder / "stevedore.toml"
    path.write_text(text)
    return path


# -- served: the same answers as the estimator ---------------------------------------------------


@pytest.mark.server
def test_settings_file_serves_joblib_and_skops_as_the_estimator_answers(
    serve: StartServer, artifacts: Artifacts, tmp_path: Path
) -> None:
    """From a settings file (uris relative to it): joblib trusted, skops with no trust, a model whose answer is
    predict_proba; the stevedore route and V2 answer what the pipeline answers, any output by name over V2."""
    for artifact in (artifacts.joblib, artifacts.skops):
        (tmp_path / artifact.name).write_bytes(artifact.read_bytes())
    config = settings_file(
        tmp_path,
        '[models.iris]\nuri = "model.joblib"\ntrust = true\n\n'
        '[models.iris-skops]\nuri = "model.skops"\n\n'
        '[models.iris-proba]\nuri = "model.joblib"\ntrust = true\noutput = "predict_proba"\n',
    )
    server = serve("--config", str(config))
    labels, probabilities = artifacts.model.predict(ROWS), artifacts.model.predict_proba(ROWS)

    for name in ("iris", "iris-skops"):
        assert predict(server, name, ROWS) == labels.tolist()
        default = infer(server, name, ROWS)
        assert list(default) == ["predict"]  # as MLServer's SKLearnModel: predict where none is asked
        assert default["predict"]["shape"] == [len(ROWS), 1]  # a column, as MLServer answers it
        assert tensor_values(default["predict"]).ravel().tolist() == labels.tolist()
        chosen = infer(server, name, ROWS, ["predict_proba"])
        assert list(chosen) == ["predict_proba"] and chosen["predict_proba"]["shape"] == [len(ROWS), 3]
        np.testing.assert_allclose(tensor_values(chosen["predict_proba"]), probabilities)
        both = infer(server, name, ROWS, ["predict", "decision_function"])
        assert tensor_values(both["predict"]).ravel().tolist() == labels.tolist()
        np.testing.assert_allclose(tensor_values(both["decision_function"]), artifacts.model.decision_function(ROWS))

    np.testing.assert_allclose(predict(server, "iris-proba", ROWS), probabilities)
    np.testing.assert_allclose(tensor_values(infer(server, "iris-proba", ROWS)["predict_proba"]), probabilities)
    metadata = httpx.get(f"{server.url}/v2/models/iris", timeout=10).json()
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert [output["name"] for output in metadata["outputs"]] == ["predict", "predict_proba", "decision_function"]
    unknown = httpx.post(
        f"{server.url}/v2/models/iris/infer",
        json={
            "inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": ROWS[0]}],
            "outputs": [{"name": "transform"}],
        },
        timeout=10,
    )
    assert unknown.status_code == 400 and "transform" in unknown.text


@pytest.mark.server
def test_model_flag_and_kserve_folder_serve_the_pipeline(serve: StartServer, artifacts: Artifacts) -> None:
    """``--model NAME=FILE``, ``--model NAME=sklearn:FILE`` and ``--model NAME=DIR`` (KServe's --model_dir: the
    one model.joblib in it), joblib allowed by --allow-pickle."""
    server = serve(
        "--allow-pickle",
        "--model", f"iris={artifacts.joblib}",
        "--model", f"named=sklearn:{artifacts.skops}",
        "--model", f"folder={artifacts.kserve}",
    )  # fmt: skip
    labels, probabilities = artifacts.model.predict(ROWS), artifacts.model.predict_proba(ROWS)
    for name in ("iris", "named", "folder"):
        assert predict(server, name, ROWS) == labels.tolist()
        chosen = infer(server, name, ROWS, ["predict_proba"])["predict_proba"]
        np.testing.assert_allclose(tensor_values(chosen), probabilities)
    large = np.random.default_rng(0).uniform(0.1, 8.0, size=(2000, 4))  # a large payload comes as an array
    assert predict(server, "folder", large.tolist()) == artifacts.model.predict(large).tolist()


# -- refused: a failed model with its reason, the server up -----------------------------------------


@pytest.mark.server
def test_refused_artifacts_fail_their_model_with_the_reason_while_another_serves(
    serve: StartServer, artifacts: Artifacts, tmp_path: Path
) -> None:
    wrong_pin = "0" * 64
    actual = hashlib.sha256(artifacts.joblib.read_bytes()).hexdigest()
    config = settings_file(
        tmp_path,
        f'[models.unpinned]\nuri = "{artifacts.joblib}"\n\n'
        f'[models.mispinned]\nuri = "{artifacts.joblib}"\nsha256 = "{wrong_pin}"\n\n'
        f'[models.truncated]\nuri = "{artifacts.truncated}"\ntrust = true\n\n'
        f'[models.missing]\nuri = "{tmp_path / "nowhere" / "model.joblib"}"\ntrust = true\n\n'
        f'[models.untrusted-types]\nuri = "{artifacts.untrusted_skops}"\n\n'
        f'[models.safe]\nuri = "{artifacts.skops}"\n',
    )
    server = serve("--config", str(config))
    assert predict(server, "safe", ROWS) == artifacts.model.predict(ROWS).tolist()

    unpinned = failure_reason(server, "unpinned")
    for advice in ("sha256", "trust = true", "--allow-pickle", "skops"):
        assert advice in unpinned
    mispinned = failure_reason(server, "mispinned")
    assert wrong_pin in mispinned and actual in mispinned
    truncated = failure_reason(server, "truncated")
    assert "truncated.joblib" in truncated and "cannot be read as a joblib file" in truncated
    assert "model.joblib" in failure_reason(server, "missing")
    untrusted = failure_reason(server, "untrusted-types")
    assert "_operator.neg" in untrusted and "trust = true" in untrusted
    refused = httpx.post(f"{server.url}/models/unpinned/predict", json=ROWS, timeout=10)
    assert refused.status_code == 503 and "sha256" in refused.text


@pytest.mark.server
def test_a_trusted_skops_file_with_untrusted_types_is_served(
    serve: StartServer, artifacts: Artifacts, tmp_path: Path
) -> None:
    config = settings_file(tmp_path, f'[models.negated]\nuri = "{artifacts.untrusted_skops}"\ntrust = true\n')
    server = serve("--config", str(config))
    expected = skops.io.load(artifacts.untrusted_skops, trusted=["_operator.neg"]).predict(np.asarray(ROWS))
    assert predict(server, "negated", ROWS) == expected.tolist()


# -- the runtime class, in process ---------------------------------------------------------------


def test_runtime_derives_schema_fixture_and_outputs(artifacts: Artifacts, tmp_path: Path) -> None:
    runtime = SklearnRuntime(model_file(RUNTIME, artifacts.skops, tmp_path / "cache"))
    runtime.load()
    schema = runtime.resolved_schema("predict")
    assert schema is not None and schema["items"]["minItems"] == schema["items"]["maxItems"] == 4
    assert runtime.resolved_fixture("predict") == [[0.0, 0.0, 0.0, 0.0]]
    assert runtime.default_outputs == ["predict"]
    assert runtime.tensor_outputs == [
        {"name": "predict", "datatype": "INT64", "shape": [-1, 1]},  # a column, as MLServer answers it
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        {"name": "decision_function", "datatype": "FP64", "shape": [-1, 3]},
    ]
    assert runtime.predict(ROWS).tolist() == artifacts.model.predict(ROWS).tolist()
    chosen = runtime.predict_outputs(np.asarray(ROWS), ("predict_proba",))
    np.testing.assert_allclose(chosen["predict_proba"], artifacts.model.predict_proba(ROWS))
    assert "LogisticRegression" not in runtime.description and "Pipeline" in runtime.description
    # the answer's schema, as the fixture's answer shows it: labels (a pipeline checks the next step takes them)
    assert runtime.resolved_schema("output") == {"type": "array", "items": {"type": "integer"}}


def test_runtime_output_setting_chooses_the_answer(artifacts: Artifacts, tmp_path: Path) -> None:
    runtime = SklearnRuntime(model_file(RUNTIME, artifacts.skops, tmp_path / "cache", output="predict_proba"))
    runtime.load()
    assert runtime.default_outputs == ["predict_proba"]
    np.testing.assert_allclose(runtime.predict(ROWS), artifacts.model.predict_proba(ROWS))
    assert runtime.resolved_schema("output") == {
        "type": "array",
        "items": {"type": "array", "items": {"type": "number"}},
    }
    lacking = SklearnRuntime(model_file(RUNTIME, artifacts.skops, tmp_path / "cache", output="transform"))
    with pytest.raises(PluginError, match=r"no 'transform' output \(it has: predict, predict_proba"):
        lacking.load()


def test_runtime_refuses_joblib_unless_trusted(artifacts: Artifacts, tmp_path: Path) -> None:
    with pytest.raises(UnsafeFormat, match="a joblib file runs code"):
        SklearnRuntime(model_file(RUNTIME, artifacts.joblib, tmp_path / "cache")).load()
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(artifacts.joblib.read_bytes())
    with pytest.raises(UnsafeFormat, match="a pickle file runs code"):
        SklearnRuntime(model_file(RUNTIME, pickled, tmp_path / "cache")).load()
    trusted = SklearnRuntime(model_file(RUNTIME, pickled, tmp_path / "cache", trusted=True))
    trusted.load()
    assert trusted.predict(ROWS).tolist() == artifacts.model.predict(ROWS).tolist()


def test_runtime_claims_its_files_and_folders(artifacts: Artifacts, tmp_path: Path) -> None:
    for name in ("model.joblib", "model.pkl", "model.pickle", "model.skops", "MODEL.JOBLIB"):
        assert SklearnRuntime.claims(Path("/remote") / name)
    assert not SklearnRuntime.claims(Path("/remote/model.onnx"))
    assert SklearnRuntime.claims(artifacts.kserve)
    assert not SklearnRuntime.claims(artifacts.folder)  # several models in it: say which


def test_a_text_pipeline_needs_a_schema_and_fixture_from_the_settings(tmp_path: Path) -> None:
    texts, labels = ["good day", "bad day", "good night", "bad night"], [1, 0, 1, 0]
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, labels)
    skops.io.dump(model, tmp_path / "text.skops")
    trusted_types = skops.io.get_untrusted_types(file=tmp_path / "text.skops")
    bare = SklearnRuntime(model_file(RUNTIME, tmp_path / "text.skops", tmp_path / "cache", trusted=bool(trusted_types)))
    with pytest.raises(PluginError, match="give predict_schema and predict_fixture"):
        bare.load()
    schema, fixture = tmp_path / "schema.json", tmp_path / "fixture.json"
    schema.write_text(json.dumps({"type": "array", "minItems": 1, "items": {"type": "string"}}))
    fixture.write_text(json.dumps(["good"]))
    given = model_file(
        RUNTIME,
        tmp_path / "text.skops",
        tmp_path / "cache",
        trusted=bool(trusted_types),
        predict_schema=schema,
        predict_fixture=fixture,
    )
    runtime = SklearnRuntime(given)
    runtime.load()
    assert runtime.resolved_fixture("predict") == ["good"]
    asked = ["a good day", "a bad night"]
    assert runtime.predict(asked).tolist() == model.predict(asked).tolist()


# -- a model fitted on a DataFrame, and MLServer's content_type "pd" (needs pandas: `make test-mlserver`) ---------


@pytest.mark.server
@pytest.mark.mlserver
def test_a_dataframe_model_gets_its_columns_and_pd_requests_by_column(serve: StartServer, tmp_path: Path) -> None:
    """A pipeline selecting columns by name (it needs a DataFrame): rows on the stevedore route become its
    columns; with ``content_type = "pd"`` its V2 inputs are the columns, as MLServer's pandas codec sends them."""
    pandas = pytest.importorskip("pandas")
    from sklearn.compose import make_column_transformer

    iris = load_iris(as_frame=True)
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    X = iris.data.set_axis(columns, axis=1)
    scalers = make_column_transformer((StandardScaler(), columns[:2]), (StandardScaler(), columns[2:]))
    model = make_pipeline(scalers, LogisticRegression(max_iter=500)).fit(X, iris.target)
    joblib.dump(model, tmp_path / "frame.joblib")
    config = settings_file(
        tmp_path,
        '[models.frame]\nuri = "frame.joblib"\ntrust = true\n\n'
        '[models.frame-pd]\nuri = "frame.joblib"\ntrust = true\ncontent_type = "pd"\n',
    )
    server = serve("--config", str(config))
    frame = pandas.DataFrame(ROWS, columns=columns)
    assert predict(server, "frame", ROWS) == model.predict(frame).tolist()
    assert predict(server, "frame-pd", ROWS) == model.predict(frame).tolist()
    inputs = [
        {"name": name, "datatype": "FP64", "shape": [len(ROWS), 1], "data": frame[name].tolist()} for name in columns
    ]
    (tensor,) = infer_tensors(server, "frame-pd", inputs, ["predict_proba"]).values()
    np.testing.assert_allclose(tensor_values(tensor), model.predict_proba(frame))
