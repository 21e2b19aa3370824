"""MLServer 1.7.1's documented example folders served by us (``stevedore-server run --mlserver DIR``) and by
MLServer (``mlserver start DIR``) side by side on loopback, asked the same V2 REST requests built by MLServer's own
client codecs: the same answers. A scikit-learn ``model-settings.json`` folder (MLServer's runtime there, ours
here), custom runtimes (``MLModel`` subclasses, run unchanged by the ``mlserver`` runtime here), and KServe's
``MLSERVER_MODEL_*`` variables.

They need MLServer, its scikit-learn runtime and our two runtimes: marked ``mlserver``, they run in the virtual
environment ``make test-mlserver`` makes, where the imports below fail plainly if one is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from stevedore_server.kit.loopback import LiveServer, free_ports

pytestmark = [pytest.mark.mlserver, pytest.mark.server]

#: Seconds a server gets to load its models.
START_TIMEOUT = 120.0
MLSERVER = Path(sys.executable).parent / "mlserver"

SCALER = '''
import json

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class Scaler(MLModel):
    """MLServer's docs' simple custom runtime: weights read in load(), a NumPy request decoded in predict()."""

    async def load(self) -> bool:
        with open(await get_model_uri(self._settings)) as file:
            self._weights = np.asarray(json.load(file)["weights"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        features = self.decode_request(payload, default_codec=NumpyRequestCodec)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output("scores", features @ self._weights)],
        )
'''

SHOUTER = '''
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse


class Shouter(MLModel):
    """Text in, by its name and content type: what the model is told of its inputs."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        said = self.decode(payload.inputs[0])
        told = [f"{payload.inputs[0].name}:{payload.inputs[0].parameters.content_type}"] * len(said)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                StringCodec.encode_output("shout", [text.upper() for text in said]),
                StringCodec.encode_output("told", told),
            ],
        )
'''


# -- the example folders ----------------------------------------------------------------


def write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray[Any, Any]]:
    """MLServer's scikit-learn example: an iris classifier saved with joblib (as its docs' notebook does)."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    path = tmp_path_factory.mktemp("artifact") / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), path)
    return path, X[::15]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, iris_model: tuple[Path, Any]) -> Path:
    """A folder of MLServer model folders, as ``mlserver start`` takes it."""
    root = tmp_path_factory.mktemp("models")
    (root / "iris").mkdir()
    (root / "iris" / "model.joblib").write_bytes(iris_model[0].read_bytes())
    write_json(
        root / "iris" / "model-settings.json",
        {
            "name": "iris",
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "v0.1.0"},
        },
    )
    (root / "custom" / "scaler").mkdir(parents=True)
    (root / "custom" / "scaler" / "models.py").write_text(textwrap.dedent(SCALER))
    write_json(root / "custom" / "scaler" / "weights.json", {"weights": [[1.0, 0.5], [2.0, -1.0], [0.0, 3.0]]})
    write_json(
        root / "custom" / "scaler" / "model-settings.json",
        {
            "name": "scaler",
            "implementation": "models.Scaler",
            "parameters": {"uri": "./weights.json"},
            "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 3]}],
        },
    )
    (root / "shouter").mkdir()
    (root / "shouter" / "shouting.py").write_text(textwrap.dedent(SHOUTER))
    write_json(
        root / "shouter" / "model-settings.json",
        {
            "name": "shouter",
            "implementation": "shouting.Shouter",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1, 1], "parameters": {"content_type": "str"}}],
        },
    )
    return root


# -- the two servers ------------------------------------------------------------------------


class MLServer:
    """``mlserver start FOLDER`` from this environment on free loopback ports, stopped by its pid."""

    def __init__(self, folder: Path, log_path: Path, environ: dict[str, str] | None = None) -> None:
        http, grpc, metrics = free_ports(3)
        self.url = f"http://127.0.0.1:{http}"
        self.log_path = log_path
        environment = os.environ | (environ or {})
        environment |= {
            "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_HTTP_PORT": str(http),
            "MLSERVER_GRPC_PORT": str(grpc),
            "MLSERVER_METRICS_PORT": str(metrics),
            "MLSERVER_PARALLEL_WORKERS": "0",
        }
        self.log = log_path.open("wb")
        command = [str(MLSERVER), "start", str(folder)]
        self.process = subprocess.Popen(command, env=environment, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_until_ready(self, models: list[str]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ChildProcessError(f"mlserver exited: {self.log_path.read_text(errors='replace')}")
            try:
                if all(httpx.get(f"{self.url}/v2/models/{name}/ready").status_code == 200 for name in models):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"mlserver not ready: {self.log_path.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def ours(tmp_path: Path, *args: str, environ: dict[str, str] | None = None) -> LiveServer:
    """``stevedore-server run ARGS`` of this environment, its state in ``tmp_path``."""
    saved = dict(os.environ)
    os.environ.update({"STEVEDORE_STATE_DIR": str(tmp_path / "state")} | (environ or {}))
    try:
        server = LiveServer.start(tmp_path / "stevedore.log", *args)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    server.wait_until_serving(START_TIMEOUT)
    return server


@pytest.fixture(scope="module")
def side_by_side(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(MLServer's URL, ours) serving the same folder."""
    logs = tmp_path_factory.mktemp("logs")
    theirs = MLServer(repository, logs / "mlserver.log")
    try:
        stevedore = ours(logs, "--mlserver", str(repository), "--allow-pickle")
        try:
            theirs.wait_until_ready(["iris", "scaler", "shouter"])
            yield theirs.url, stevedore.url
        finally:
            stevedore.stop()
    finally:
        theirs.stop()


# -- asking both --------------------------------------------------------------------------


def infer(url: str, model: str, request: Any) -> Any:
    """POST a request MLServer's codecs built; its answer as MLServer's client reads it."""
    from mlserver.types import InferenceResponse

    body = request.model_dump_json(exclude_none=True)
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{url}/v2/models/{model}/infer", content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return InferenceResponse.model_validate(response.json())


def decoded(response: Any) -> dict[str, tuple[str, list[int], list[Any]]]:
    """Each output's datatype, shape and elements, by name."""
    from mlserver.codecs import NumpyCodec, StringCodec

    outputs = {}
    for output in response.outputs:
        if output.datatype == "BYTES":
            values = StringCodec.decode_output(output)
        else:
            values = NumpyCodec.decode_output(output).ravel().tolist()
        outputs[output.name] = (output.datatype, list(output.shape), values)
    return outputs


def same_answers(side_by_side: tuple[str, str], model: str, request: Any) -> dict[str, Any]:
    """Both answer the same outputs, datatypes, shapes and elements."""
    theirs, stevedore = side_by_side
    expected = decoded(infer(theirs, model, request))
    got = decoded(infer(stevedore, model, request))
    assert got.keys() == expected.keys()
    for name, (datatype, shape, values) in expected.items():
        assert got[name][0] == datatype, name
        assert got[name][1] == shape, name
        if datatype == "BYTES":
            assert got[name][2] == values, name
        else:
            np.testing.assert_allclose(np.asarray(got[name][2], dtype=float), np.asarray(values, dtype=float))
    return got


def test_a_scikit_learn_folder_answers_as_mlserver(
    side_by_side: tuple[str, str], iris_model: tuple[Path, np.ndarray[Any, Any]]
) -> None:
    from mlserver.codecs import NumpyRequestCodec
    from mlserver.types import RequestOutput

    rows = iris_model[1]
    # NumpyRequestCodec names the one input ``input-1``: a model of one input takes it by any name.
    request = NumpyRequestCodec.encode_request(rows)
    # Both answer `predict` in shape [rows, 1] (MLServer's NumpyCodec makes a column of a vector).
    got = same_answers(side_by_side, "iris", request)
    assert got["predict"][1] == [len(rows), 1]
    request.outputs = [RequestOutput(name="predict_proba")]
    got = same_answers(side_by_side, "iris", request)
    assert got["predict_proba"][1] == [len(rows), 3]


def test_a_custom_runtime_runs_unchanged_and_answers_as_mlserver(side_by_side: tuple[str, str]) -> None:
    from mlserver.codecs import NumpyCodec, NumpyRequestCodec
    from mlserver.types import InferenceRequest

    features = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    got = same_answers(side_by_side, "scaler", NumpyRequestCodec.encode_request(features))
    assert got["scores"][2] == (features @ np.array([[1.0, 0.5], [2.0, -1.0], [0.0, 3.0]])).ravel().tolist()
    named = InferenceRequest(inputs=[NumpyCodec.encode_input("features", features)])
    same_answers(side_by_side, "scaler", named)


def test_a_custom_runtime_sees_its_inputs_names_and_content_types(side_by_side: tuple[str, str]) -> None:
    from mlserver.codecs import StringCodec
    from mlserver.types import InferenceRequest

    request = InferenceRequest(inputs=[StringCodec.encode_input("text", ["ahoy", "ship"])])
    got = same_answers(side_by_side, "shouter", request)
    assert got["shout"][2] == ["AHOY", "SHIP"]
    assert got["told"][2] == ["text:str", "text:str"]


def test_kserves_mlserver_variables_serve_the_model_as_mlserver(
    tmp_path: Path, iris_model: tuple[Path, np.ndarray[Any, Any]]
) -> None:
    from mlserver.codecs import NumpyRequestCodec

    environ = {
        "MLSERVER_MODEL_NAME": "iris-env",
        "MLSERVER_MODEL_IMPLEMENTATION": "mlserver_sklearn.SKLearnModel",
        "MLSERVER_MODEL_URI": str(iris_model[0]),
    }
    (tmp_path / "empty").mkdir()
    theirs = MLServer(tmp_path / "empty", tmp_path / "mlserver.log", environ)
    try:
        stevedore = ours(tmp_path, "--allow-pickle", environ=environ)
        try:
            theirs.wait_until_ready(["iris-env"])
            request = NumpyRequestCodec.encode_request(iris_model[1])
            same_answers((theirs.url, stevedore.url), "iris-env", request)
        finally:
            stevedore.stop()
    finally:
        theirs.stop()


def test_a_custom_runtime_runs_no_code_where_the_operator_did_not_allow_it(tmp_path: Path) -> None:
    """A custom runtime is Python imported from the model's folder (and MLServer's own runtimes unpickle): without
    ``--allow-pickle`` or ``trust = true`` it is a failed model with the reason, and its module is never run."""
    folder = tmp_path / "models" / "planted"
    folder.mkdir(parents=True)
    ran = tmp_path / "ran"
    (folder / "planted.py").write_text(
        f"from pathlib import Path\nPath({str(ran)!r}).write_text('ran')\n"
        "from mlserver import MLModel\n\n\nclass Planted(MLModel):\n    async def load(self) -> bool:\n"
        "        return True\n"
    )
    (folder / "model-settings.json").write_text(json.dumps({"name": "planted", "implementation": "planted.Planted"}))
    stevedore = ours(tmp_path, "--mlserver", str(tmp_path / "models"))
    try:
        model = httpx.get(stevedore.url + "/models/planted", timeout=10).json()
    finally:
        stevedore.stop()
    assert model["state"] == "failed", model
    assert "an MLServer runtime (Python imported from" in model["reason"] and "--allow-pickle" in model["reason"]
    assert not ran.exists()
