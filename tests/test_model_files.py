"""Model files served with no code, through runtimes (``stevedore.runtimes`` entry points): the core's part, with
the tests' own file format (``tests/file_runtimes.py``). Every runtime's own tests live with it in ``plugins/``.

One real server serves a settings file of model files, good and bad: the good ones serve, each bad one is a failed
model with its reason, and the server (and the example plugin's models) stay up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from stevedore_server.base.errors import PluginError, StartupError
from stevedore_server.base.settings import ModelSettings, Settings, read_document
from stevedore_server.plugins.model_files import model_files

from .file_runtimes import Weights
from .helpers import record_distribution
from .venvs import INSTALLED, REPO, Server, Venv

pytestmark = pytest.mark.server

WEIGHTS = [1.0, 2.0, 3.0]
RUNTIMES = {
    "weights": "tests.file_runtimes:Weights",
    "pickled": "tests.file_runtimes:Pickled",
    "opaque": "tests.file_runtimes:Opaque",
    "broken": "tests.file_runtimes:Broken",
    "two": "tests.file_runtimes:TwoOutputs",
    "crashes": "tests.file_runtimes:Crashes",
}


def write_models(folder: Path) -> str:
    """The model files, and the settings file's text that declares them (paths relative to it)."""
    (folder / "models").mkdir()
    (folder / "models" / "dot.weights").write_bytes(orjson.dumps(WEIGHTS))
    (folder / "models" / "bad.weights").write_bytes(orjson.dumps(WEIGHTS)[:-3])
    (folder / "models" / "dot.pickled").write_bytes(pickle.dumps(WEIGHTS))
    (folder / "models" / "dot.opaque").write_bytes(orjson.dumps(WEIGHTS))
    (folder / "models" / "model.broken").write_text("")
    (folder / "models" / "dot.two").write_bytes(orjson.dumps(WEIGHTS))
    (folder / "models" / "model.crash").write_text("")
    (folder / "models" / "model.xyz").write_text("")
    (folder / "models" / "dot.txt").write_bytes(orjson.dumps(WEIGHTS))  # named by no runtime's patterns
    (folder / "schema.json").write_bytes(orjson.dumps({"type": "array", "items": {"type": "array"}}))
    (folder / "fixture.json").write_bytes(orjson.dumps([[1, 1, 1]]))
    folder_model = folder / "kserve"
    folder_model.mkdir()
    (folder_model / "model.weights").write_bytes(orjson.dumps(WEIGHTS))
    pinned = hashlib.sha256((folder / "models" / "dot.pickled").read_bytes()).hexdigest()
    return f"""
[models.dot]
uri = "models/dot.weights"
version = "v3"
[models.dot-in-processes]
uri = "models/dot.weights"
processes = 2
[models.pickled-unpinned]
uri = "models/dot.pickled"
[models.pickled-pinned]
uri = "models/dot.pickled"
sha256 = "{pinned}"
[models.pickled-trusted]
uri = "models/dot.pickled"
trust = true
[models.mismatch]
uri = "models/dot.weights"
sha256 = "{"0" * 64}"
[models.missing]
uri = "models/nowhere.weights"
[models.truncated]
uri = "models/bad.weights"
[models.unknown-runtime]
uri = "models/dot.weights"
runtime = "nope"
[models.unclaimed]
uri = "models/model.xyz"
[models.opaque]
uri = "models/dot.opaque"
[models.opaque-given]
uri = "models/dot.opaque"
predict_schema = "schema.json"
predict_fixture = "fixture.json"
[models.broken]
uri = "models/model.broken"
[models.two]
uri = "models/dot.two"
[models.two-in-processes]
uri = "models/dot.two"
processes = 2
[models.crashes]
uri = "models/model.crash"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("model-files")
    site = folder / "site"
    record_distribution(site, "stevedore-test-runtimes", RUNTIMES, group="stevedore.runtimes")
    (folder / "stevedore.toml").write_text(write_models(folder))
    options = (
        "--config", str(folder / "stevedore.toml"), "--state-dir", str(folder / "state"),
        "--model", f"guessed={folder / 'models' / 'dot.weights'}",
        "--model", f"folder={folder / 'kserve'}",
        "--model", f"named=weights:{folder / 'models' / 'dot.txt'}",
    )  # fmt: skip
    path = f"{REPO}:{site}:{INSTALLED / 'sleeper'}"
    running = Server.start(Venv(Path(sys.prefix), ()), folder / "server.log", *options, PYTHONPATH=path)
    try:
        running.wait_for("/livez", deadline=120)
        yield running
    finally:
        running.stop()


def models(server: Server) -> dict[str, dict[str, Any]]:
    listed = httpx.get(server.url + "/models", timeout=30).json()
    return {model["name"]: model for model in listed["models"]}


def predict(server: Server, name: str, rows: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/models/{name}/predict", json=rows, timeout=30)


@pytest.mark.parametrize("name", ["dot", "guessed", "folder", "named", "dot-in-processes"])
def test_a_model_file_is_served_as_a_plugins_model(server: Server, name: str) -> None:
    answer = predict(server, name, [[1, 1, 1], [1, 0, 0]])
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [6.0, 1.0]
    refused = predict(server, name, [[1, 1]])  # the schema derived from the file: rows of three numbers
    assert refused.status_code == 422, refused.text


def test_a_model_file_speaks_the_open_inference_protocol(server: Server) -> None:
    request = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 3], "data": [1, 1, 1, 0, 0, 1]}]}
    answer = httpx.post(server.url + "/v2/models/dot/versions/v3/infer", json=request, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [6.0, 3.0]
    metadata = httpx.get(server.url + "/v2/models/dot", timeout=30).json()
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 3]}]


@pytest.mark.parametrize("name", ["two", "two-in-processes"])
def test_a_runtime_computes_the_outputs_a_request_names_in_the_server_or_its_processes(
    server: Server, name: str
) -> None:
    inputs = [{"name": "input-0", "datatype": "FP64", "shape": [1, 3], "data": [1, 1, 1]}]
    url = f"{server.url}/v2/models/{name}/infer"
    default = httpx.post(url, json={"inputs": inputs}, timeout=30).json()
    assert [(output["name"], output["data"]) for output in default["outputs"]] == [("dot", [6.0])]
    chosen = httpx.post(url, json={"inputs": inputs, "outputs": [{"name": "double"}]}, timeout=30)
    assert chosen.status_code == 200, chosen.text
    assert [(output["name"], output["data"]) for output in chosen.json()["outputs"]] == [("double", [12.0])]


def test_the_catalogue_says_which_runtime_and_file_serve_a_model(server: Server) -> None:
    listed = models(server)["dot"]
    assert listed["state"] == "ready"
    assert listed["version"] == "v3"
    assert "weights model file" in listed["description"] and listed["description"].endswith("dot.weights")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("pickled-unpinned", "a pickle file runs code when it is loaded"),
        ("mismatch", "sha256"),
        ("missing", "nowhere.weights"),
        ("truncated", "JSONDecodeError"),
        ("unknown-runtime", "runtime 'nope' is not installed or not selected"),
        ("unclaimed", "no runtime claims"),
        ("opaque", "says too little of its input"),
        ("broken", "this runtime is broken"),
        ("crashes", "killed the process that read it (SIGABRT)"),
    ],
)
def test_a_model_file_that_cannot_serve_is_a_failed_model_with_its_reason(
    server: Server, name: str, reason: str
) -> None:
    listed = models(server)[name]
    assert listed["state"] == "failed", listed
    assert reason in listed["reason"], listed["reason"]
    assert predict(server, name, [[1, 1, 1]]).status_code == 503
    assert predict(server, "dot", [[1, 1, 1]]).status_code == 200  # the others serve
    assert predict(server, "iris", [[5.1, 3.5, 1.4, 0.2]]).status_code == 200  # and so do the plugins' models


def test_the_untrusted_pickles_reason_says_what_to_do(server: Server) -> None:
    reason = models(server)["pickled-unpinned"]["reason"]
    for advice in ("sha256", "trust = true", "--allow-pickle", "skops"):
        assert advice in reason, reason


@pytest.mark.parametrize("name", ["pickled-pinned", "pickled-trusted", "opaque-given"])
def test_a_pin_trust_or_a_schema_from_the_settings_lets_a_model_file_serve(server: Server, name: str) -> None:
    answer = predict(server, name, [[1, 1, 1]])
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [6.0]


def test_model_entries_merge_into_the_model_tables(tmp_path: Path) -> None:
    (tmp_path / "stevedore.toml").write_text('[models.a]\nuri = "a.joblib"\nmax_batch_size = 8\n')
    settings = Settings.load(
        {}, config=str(tmp_path / "stevedore.toml"), model=("a=sklearn:s3://bucket/a.joblib", "b=b.onnx")
    )
    assert settings.models["a"].uri == "s3://bucket/a.joblib"
    assert settings.models["a"].runtime == "sklearn"
    assert settings.models["a"].max_batch_size == 8
    assert settings.models["b"].uri == str(Path.cwd() / "b.onnx")
    assert Settings.load({}, config=str(tmp_path / "stevedore.toml")).models["a"].uri == str(tmp_path / "a.joblib")


@pytest.mark.parametrize("entry", ["no-equals-sign", "=a.joblib", "a b=c.joblib", "a="])
def test_a_model_entry_that_is_no_name_and_uri_is_refused(entry: str) -> None:
    with pytest.raises(StartupError, match="setting model"):
        Settings(model=(entry,))


def test_model_files_reach_every_server_process_and_a_ray_replicas_settings(tmp_path: Path) -> None:
    """``--workers 2`` hands the settings on as variables, Ray Serve as a document: both keep the model files."""
    site = tmp_path / "site"
    record_distribution(site, "stevedore-test-runtimes", RUNTIMES, group="stevedore.runtimes")
    (tmp_path / "dot.weights").write_bytes(orjson.dumps(WEIGHTS))
    settings = Settings(model=(f"dot=weights:{tmp_path / 'dot.weights'}",))
    assert Settings(**read_document(settings.document(), "a Serve config")).models == settings.models
    options = ("--workers", "2", "--model", f"dot={tmp_path / 'dot.weights'}", "--state-dir", str(tmp_path))
    path = f"{REPO}:{site}:{INSTALLED / 'sleeper'}"
    running = Server.start(Venv(Path(sys.prefix), ()), tmp_path / "server.log", *options, PYTHONPATH=path)
    try:
        running.wait_for("/readyz", deadline=120)
        for _ in range(20):  # new connections spread over both processes: each must serve the model
            with httpx.Client() as client:
                answer = client.post(running.url + "/models/dot/predict", json=[[1, 1, 1]], timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == [6.0]
    finally:
        running.stop()


def test_check_and_schema_take_model_files_as_run_does(tmp_path: Path) -> None:
    site = tmp_path / "site"
    record_distribution(site, "stevedore-test-runtimes", RUNTIMES, group="stevedore.runtimes")
    (tmp_path / "dot.weights").write_bytes(orjson.dumps(WEIGHTS))
    environment = os.environ | {"PYTHONPATH": f"{REPO}:{site}"}
    files = ("--model", f"dot={tmp_path / 'dot.weights'}", "--state-dir", str(tmp_path / "state"))
    command = [sys.executable, "-m", "stevedore_server"]
    schema = subprocess.run([*command, "schema", "dot", *files], env=environment, capture_output=True, text=True)
    assert schema.returncode == 0, schema.stderr
    assert orjson.loads(schema.stdout)["items"]["maxItems"] == 3
    bad = ("--model", f"gone={tmp_path / 'gone.weights'}")
    check = subprocess.run([*command, "check", *files, *bad], env=environment, capture_output=True, text=True)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "gone.weights" in check.stdout + check.stderr


@pytest.mark.parametrize("digest", ["", "abc", "g" * 64])
def test_a_sha256_that_is_no_digest_is_refused_and_trusts_nothing(digest: str) -> None:
    with pytest.raises(StartupError, match="is not a SHA-256 digest"):
        Settings(models={"m": ModelSettings(uri="/m.pickled", sha256=digest)})


def test_a_uris_password_and_signature_are_never_shown(tmp_path: Path) -> None:
    uri = "http://alice:s3cret@127.0.0.1:9/models/dot.weights?signature=abc"
    settings = Settings(model=(f"dot=weights:{uri}",))
    shown = str(settings.masked())
    assert "s3cret" not in shown and "signature=abc" not in shown and "127.0.0.1:9/models/dot.weights" in shown
    (spec,) = model_files(dataclasses.replace(settings, state_dir=str(tmp_path)))
    predictor = Weights(spec)
    assert "s3cret" not in predictor.description and "abc" not in predictor.description
    with pytest.raises(PluginError) as refused:
        predictor.opened()  # nothing answers there: the reason names the URI, without its secrets
    assert "s3cret" not in str(refused.value) and "abc" not in str(refused.value)
    assert "127.0.0.1:9/models/dot.weights" in str(refused.value)
