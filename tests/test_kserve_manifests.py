"""``stevedore-server manifests``' KServe runtime for model files: a ``ClusterServingRuntime`` declaring the runtime
wheels' formats, started with exactly KServe's runtime arguments, and a sample ``InferenceService`` whose
``storageUri`` KServe's storage initializer downloads into ``/mnt/models``. The runtime's container, run here as
KServe runs it (its folder and ports this machine's), serves a scikit-learn file once the pickle choice allows it,
and refuses it, with why, while it does not."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from stevedore_server.cli import main

from .test_kserve_args import ROWS, fit_iris
from .venvs import Server, Venv, free_ports

#: The arguments KServe's own runtimes get (config/runtimes/kserve-sklearnserver.yaml), and the gRPC port's.
KSERVE_ARGS = ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080", "--grpc_port=8081"]
FORMATS = ["sklearn", "xgboost", "lightgbm", "onnx", "mlflow"]


def write_manifests(directory: Path, *options: str) -> dict[str, Any]:
    args = ["manifests", "--image", "registry.example/models:1", "--output", str(directory), "--model", "iris"]
    result = CliRunner().invoke(main, [*args, *options])
    assert result.exit_code == 0, result.output
    return {path.name: yaml.safe_load(path.read_text()) for path in directory.iterdir()}


def container_of(runtime: dict[str, Any]) -> dict[str, Any]:
    (server,) = runtime["spec"]["containers"]
    return server


def env_of(server: dict[str, Any]) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in server["env"]}


@pytest.mark.unit
def test_the_files_runtime_declares_the_runtimes_formats_and_runs_with_kserves_arguments(tmp_path: Path) -> None:
    written = write_manifests(tmp_path)
    runtime = written["clusterservingruntime-files.yaml"]
    assert runtime["kind"] == "ClusterServingRuntime" and runtime["metadata"]["name"] == "stevedore-server-files"
    # Chosen by name only: it never takes over an InferenceService that relies on KServe's own runtimes.
    assert runtime["spec"]["supportedModelFormats"] == [{"name": name, "autoSelect": False} for name in FORMATS]
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    server = container_of(runtime)
    assert server["name"] == "kserve-container" and server["image"] == "registry.example/models:1"
    assert server["command"] == ["stevedore-server", "run"] and server["args"] == KSERVE_ARGS
    assert env_of(server)["STEVEDORE_HOST"] == "0.0.0.0"
    assert "STEVEDORE_ALLOW_PICKLE" not in env_of(server)  # pickles refused unless the operator says otherwise
    # The plugin models' runtime is unchanged beside it.
    assert container_of(written["clusterservingruntime.yaml"])["args"][0] == "run"


@pytest.mark.unit
def test_allow_pickle_is_the_operators_choice_for_every_model_of_the_runtime(tmp_path: Path) -> None:
    runtime = write_manifests(tmp_path, "--allow-pickle")["clusterservingruntime-files.yaml"]
    assert env_of(container_of(runtime))["STEVEDORE_ALLOW_PICKLE"] == "true"


@pytest.mark.unit
def test_the_sample_inference_service_names_the_runtime_the_format_and_the_storage_uri(tmp_path: Path) -> None:
    written = write_manifests(tmp_path, "--model-format", "xgboost", "--storage-uri", "s3://models/booster")
    service = written["inferenceservice-files.yaml"]
    model = service["spec"]["predictor"]["model"]
    assert model == {
        "modelFormat": {"name": "xgboost"},
        "runtime": written["clusterservingruntime-files.yaml"]["metadata"]["name"],
        "protocolVersion": "v2",
        "storageUri": "s3://models/booster",
    }
    assert service["metadata"]["name"] == "stevedore-server-xgboost"
    result = CliRunner().invoke(main, ["manifests", "--image", "i", "--output", str(tmp_path), "--model-format", "pt"])
    assert result.exit_code == 2 and "'pt' is not one of 'sklearn', 'xgboost'" in result.output


@contextmanager
def runtime_container(runtime: dict[str, Any], name: str, models: Path, root: Path, **env: str) -> Iterator[Server]:
    """The runtime's container command, arguments and environment run here as KServe runs them: ``{{.Name}}`` the
    InferenceService's name, ``/mnt/models`` the folder the storage initializer filled, the ports free ones,
    every interface loopback (as every server of the tests), and ``env`` merged in as an InferenceService's."""
    server = container_of(runtime)
    http_port, grpc_port = free_ports(2)
    where = {"{{.Name}}": name, "/mnt/models": str(models), "8080": str(http_port), "8081": str(grpc_port)}
    args = [localized(arg, where) for arg in server["args"]]
    local = {"0.0.0.0": "127.0.0.1", "/var/lib/stevedore": str(root / "state"), "/tmp": str(root)}
    variables = {key: local.get(value, value) for key, value in env_of(server).items()} | env
    environment = Venv(Path(sys.prefix), ())
    command = [str(environment.bin / server["command"][0]), *server["command"][1:], *args]
    log_path = root / "runtime.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        command, env=environment.env(**variables), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    running = Server(process, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log_path, log)
    try:
        running.wait_for("/livez", deadline=120)
        yield running
    finally:
        running.stop()


def localized(arg: str, where: dict[str, str]) -> str:
    """``--option=VALUE`` with the value as it is here."""
    option, value = arg.split("=", 1)
    return f"{option}={where.get(value, value)}"


@pytest.fixture(scope="module")
def mnt_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """What KServe's storage initializer leaves in /mnt/models for a ``storageUri`` naming a joblib file."""
    import joblib

    model = fit_iris()
    folder = tmp_path_factory.mktemp("mnt-models")
    joblib.dump(model, folder / "model.joblib")
    return model, folder


@pytest.mark.server
def test_the_runtime_refuses_a_pickle_with_why_until_the_inference_service_opts_in(
    mnt_models: tuple[Any, Path], tmp_path: Path
) -> None:
    model, folder = mnt_models
    runtime = write_manifests(tmp_path / "manifests")["clusterservingruntime-files.yaml"]
    (tmp_path / "refused").mkdir()
    with runtime_container(runtime, "flowers", folder, tmp_path / "refused") as refused:
        ready = refused.wait_for("/readyz", status=503)
        assert any("runs code when it is loaded" in reason for reason in ready.json()["reasons"]), ready.text
        assert httpx.get(refused.url + "/livez", timeout=10).status_code == 200  # the server stays up
    # The InferenceService's `env: [{name: STEVEDORE_ALLOW_PICKLE, value: "true"}]`, merged by KServe.
    (tmp_path / "allowed").mkdir()
    with runtime_container(runtime, "flowers", folder, tmp_path / "allowed", STEVEDORE_ALLOW_PICKLE="true") as allowed:
        allowed.wait_for("/readyz")
        rows = np.ravel(ROWS).tolist()
        body = {"inputs": [{"name": "input-0", "shape": [len(ROWS), 4], "datatype": "FP64", "data": rows}]}
        answer = httpx.post(allowed.url + "/v2/models/flowers/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == model.predict(np.asarray(ROWS)).tolist()
