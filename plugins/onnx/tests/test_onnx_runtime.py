"""The ONNX runtime: models converted here from scikit-learn with skl2onnx, and one of two inputs built with
onnx's helpers, served by a real server (``stevedore-server run`` over loopback) from ``--model`` and from a
KServe-style folder, answering as ONNX Runtime's session called directly; a damaged file is a failed model with
its reason while the others serve."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from stevedore_runtime_onnx import OnnxRuntime

from stevedore_server.base.errors import PluginError
from stevedore_server.kit.runtime_testing import (
    StartServer,
    failure_reason,
    infer,
    infer_tensors,
    input_tensor,
    model_file,
    predict,
    runtime_servers,
    tensor_values,
)

#: The runtime under test (its entry point's name).
RUNTIME = "onnx"
#: Rows asked of every model: a few of each species.
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.9, 3.0, 5.1, 1.8]]
#: The two inputs of the two-input model.
A = [[1.5, 2.0, -3.0], [0.25, 0.5, 4.0]]
B = [[1, 2, 3], [-4, 5, 6]]


@dataclass(frozen=True)
class Artifacts:
    """The iris pipeline fitted here, its ONNX conversions, a two-input model, and their files."""

    pipeline: Pipeline
    folder: Path

    @property
    def onnx(self) -> Path:
        """Converted with ``zipmap: False``: outputs ``label`` and ``probabilities`` (a tensor)."""
        return self.folder / "iris.onnx"

    @property
    def zipmap(self) -> Path:
        """Converted with skl2onnx's defaults: ``output_probability`` is a ZipMap (a map a row)."""
        return self.folder / "zipmap.onnx"

    @property
    def two_inputs(self) -> Path:
        """Inputs ``a`` (float [N, 3]) and ``b`` (int64 [N, 3]); outputs ``sum`` (a + b, float) and ``square``
        (b * b, int64)."""
        return self.folder / "two-inputs.onnx"

    @property
    def kserve(self) -> Path:
        """A KServe-style model directory: model.onnx."""
        return self.folder / "kserve"

    @property
    def truncated(self) -> Path:
        return self.folder / "truncated.onnx"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    folder = tmp_path_factory.mktemp("onnx-artifacts")
    X, y = load_iris(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    saved = Artifacts(pipeline, folder)
    sample = X[:1].astype(np.float32)
    saved.onnx.write_bytes(to_onnx(pipeline, sample, options={"zipmap": False}).SerializeToString())
    saved.zipmap.write_bytes(to_onnx(pipeline, sample).SerializeToString())
    onnx.save(two_input_model(), saved.two_inputs)
    saved.kserve.mkdir()
    (saved.kserve / "model.onnx").write_bytes(saved.onnx.read_bytes())
    content = saved.onnx.read_bytes()
    saved.truncated.write_bytes(content[: len(content) // 2])
    return saved


def two_input_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["a", "b_float"], ["sum"]),
            helper.make_node("Mul", ["b", "b"], ["square"]),
        ],
        "two-inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("square", TensorProto.INT64, ["N", 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime this runtime accepts
    onnx.checker.check_model(model)
    return model


def session_of(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def iris_outputs(path: Path) -> dict[str, Any]:
    """What ONNX Runtime answers for ROWS, by output name."""
    session = session_of(path)
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {"X": np.asarray(ROWS, dtype=np.float32)}), strict=True))


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServer]:
    """Servers of this runtime alone (``runtime_servers``), stopped after the test."""
    with runtime_servers(RUNTIME, tmp_path) as start:
        yield start


# -- served: the same answers as ONNX Runtime ------------------------------------------------------------


@pytest.mark.server
def test_model_flag_and_kserve_folder_serve_what_onnxruntime_answers(serve: StartServer, artifacts: Artifacts) -> None:
    """``--model NAME=FILE`` and ``--model NAME=DIR`` (KServe's model.onnx), runtime guessed: every output, on
    the stevedore route (an object by name) and over V2 (any of them by name); a ZipMap model's probabilities
    as rows; a model of two inputs takes them by name; a damaged file fails its model, the others serve."""
    server = serve(
        "--model", f"iris={artifacts.onnx}",
        "--model", f"folder={artifacts.kserve}",
        "--model", f"zipmap={artifacts.zipmap}",
        "--model", f"pair={artifacts.two_inputs}",
        "--model", f"truncated={artifacts.truncated}",
    )  # fmt: skip
    expected = iris_outputs(artifacts.onnx)
    for name in ("iris", "folder"):
        answer = predict(server, name, ROWS)
        assert set(answer) == {"label", "probabilities"}
        assert answer["label"] == expected["label"].tolist()
        np.testing.assert_array_equal(np.asarray(answer["probabilities"], dtype=np.float32), expected["probabilities"])
        outputs = infer(server, name, ROWS, datatype="FP32")
        assert list(outputs) == ["label", "probabilities"]
        assert outputs["probabilities"]["datatype"] == "FP32" and outputs["label"]["datatype"] == "INT64"
        np.testing.assert_array_equal(
            tensor_values(outputs["probabilities"]).astype(np.float32), expected["probabilities"]
        )
        chosen = infer(server, name, ROWS, ["label"], datatype="FP32")
        assert list(chosen) == ["label"] and tensor_values(chosen["label"]).tolist() == expected["label"].tolist()
    assert expected["label"].tolist() == artifacts.pipeline.predict(ROWS).tolist()

    zipped = iris_outputs(artifacts.zipmap)
    rows = [[row[label] for label in sorted(row)] for row in zipped["output_probability"]]
    answer = predict(server, "zipmap", ROWS)
    np.testing.assert_array_equal(np.asarray(answer["output_probability"], dtype=np.float32), rows)
    metadata = httpx.get(f"{server.url}/v2/models/zipmap", timeout=10).json()
    assert metadata["outputs"][1] == {"name": "output_probability", "datatype": "FP32", "shape": [-1, -1]}
    probabilities = infer(server, "zipmap", ROWS, ["output_probability"], datatype="FP32")["output_probability"]
    np.testing.assert_array_equal(tensor_values(probabilities).astype(np.float32), rows)

    pair = session_of(artifacts.two_inputs).run(None, {"a": np.asarray(A, np.float32), "b": np.asarray(B)})
    answer = predict(server, "pair", {"a": A, "b": B})
    assert answer == {"sum": pair[0].tolist(), "square": pair[1].tolist()}
    outputs = infer_tensors(server, "pair", [input_tensor(B, "INT64", "b"), input_tensor(A, "FP32", "a")])
    assert tensor_values(outputs["sum"]).tolist() == pair[0].tolist()
    assert outputs["square"]["datatype"] == "INT64" and tensor_values(outputs["square"]).tolist() == pair[1].tolist()
    metadata = httpx.get(f"{server.url}/v2/models/pair", timeout=10).json()
    assert metadata["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "b", "datatype": "INT64", "shape": [-1, 3]},
    ]
    missing = httpx.post(f"{server.url}/models/pair/predict", json={"a": A}, timeout=10)
    assert missing.status_code in (400, 422) and "b" in missing.text

    truncated = failure_reason(server, "truncated")
    assert "truncated.onnx" in truncated and "cannot be read as an ONNX model" in truncated
    assert predict(server, "iris", ROWS)["label"] == expected["label"].tolist()  # still serving


@pytest.mark.server
def test_settings_output_makes_one_output_the_answer(serve: StartServer, artifacts: Artifacts, tmp_path: Path) -> None:
    config = tmp_path / "stevedore.toml"
    config.write_text(f'[models.proba]\nuri = "{artifacts.onnx}"\noutput = "probabilities"\n')
    server = serve("--config", str(config))
    expected = iris_outputs(artifacts.onnx)["probabilities"]
    np.testing.assert_array_equal(np.asarray(predict(server, "proba", ROWS), dtype=np.float32), expected)
    assert list(infer(server, "proba", ROWS, datatype="FP32")) == ["probabilities"]
    assert list(infer(server, "proba", ROWS, ["label", "probabilities"], datatype="FP32")) == ["label", "probabilities"]


# -- the runtime class, in process -----------------------------------------------------------------------


def test_runtime_derives_tensors_schema_and_fixture(artifacts: Artifacts, tmp_path: Path) -> None:
    runtime = OnnxRuntime(model_file(RUNTIME, artifacts.onnx, tmp_path / "cache"))
    runtime.load()
    schema = runtime.resolved_schema("predict")
    assert schema is not None and schema["items"]["minItems"] == schema["items"]["maxItems"] == 4
    assert runtime.resolved_fixture("predict") == [[0.0, 0.0, 0.0, 0.0]]
    assert runtime.tensor_inputs == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert runtime.tensor_outputs == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert runtime.default_outputs is None
    pair = OnnxRuntime(model_file(RUNTIME, artifacts.two_inputs, tmp_path / "cache"))
    pair.load()
    assert pair.resolved_fixture("predict") == {"a": [[0.0] * 3], "b": [[0] * 3]}
    schema = pair.resolved_schema("predict")
    assert schema is not None and schema["required"] == ["a", "b"]
    assert schema["properties"]["b"]["items"]["items"] == {"type": "integer"}


def test_runtime_refuses_what_it_cannot_serve(artifacts: Artifacts, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"no 'scores' output \(it has: label, probabilities\)"):
        OnnxRuntime(model_file(RUNTIME, artifacts.onnx, tmp_path / "cache", output="scores")).load()
    with pytest.raises(PluginError, match="intra_op_num_threads, inter_op_num_threads"):
        OnnxRuntime(model_file(RUNTIME, artifacts.onnx, tmp_path / "cache", options={"threads": 2})).load()
    threaded = OnnxRuntime(model_file(RUNTIME, artifacts.onnx, tmp_path / "cache", options={"intra_op_num_threads": 1}))
    threaded.load()
    assert threaded.predict(ROWS)["label"].tolist() == artifacts.pipeline.predict(ROWS).tolist()
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["parts"])],
        "sequence",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "sequence.onnx")
    with pytest.raises(PluginError, match="output 'parts' is a seq\\(tensor\\(float\\)\\), which stevedore cannot"):
        OnnxRuntime(model_file(RUNTIME, tmp_path / "sequence.onnx", tmp_path / "cache")).load()


def test_runtime_claims_onnx_files(artifacts: Artifacts) -> None:
    assert OnnxRuntime.claims(Path("/remote/model.onnx"))
    assert not OnnxRuntime.claims(Path("/remote/model.json"))
    assert OnnxRuntime.claims(artifacts.kserve)
    assert not OnnxRuntime.claims(artifacts.folder)  # several models in it: say which
