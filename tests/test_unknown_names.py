"""An unknown model's name, on every way in (the stevedore routes, the original routes, V2 over REST and gRPC, the
CLI's ``schema`` and ``models``): the closest names suggested and the served ones listed, by one message; to a
probe's caller without a key while API keys are on, the bare "no model named" (the names are not for strangers).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from click.testing import CliRunner
from tritonclient.grpc import service_pb2, service_pb2_grpc

from stevedore_server.base.errors import NotFound, SettingError, UnknownModel, did_you_mean, unknown_name
from stevedore_server.base.settings import Settings
from stevedore_server.cli import main

from .venvs import Server, Venv

KEY = "unknown-names-test-key"
AUTHORIZED = {"Authorization": f"Bearer {KEY}"}
#: The example plugin's models, as the messages list them.
LISTED = "(models: iris, iris-proba)"
SUGGESTED = f"no model named 'irs'; did you mean 'iris'? {LISTED}"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real ``stevedore-server run`` of the example plugin, API keys on."""
    log = tmp_path_factory.mktemp("unknown-names") / "server.log"
    server = Server.start(
        Venv(Path(sys.prefix), ()), log, "--plugins", "stevedore-sklearn-logreg", STEVEDORE_API_KEYS=KEY
    )
    try:
        server.wait_for("/livez")
        httpx.get(server.url + "/readyz", timeout=5)
        server.wait_for("/readyz")
        yield server
    finally:
        server.stop()


def test_the_message_suggests_the_closest_and_lists_the_names() -> None:
    assert str(UnknownModel.named("irs", ["iris-proba", "iris"])) == SUGGESTED
    assert str(UnknownModel.named("zzz", ["iris-proba", "iris"])) == f"no model named 'zzz' {LISTED}"
    assert str(UnknownModel.named("zzz", [])) == "no model named 'zzz' (no models)"
    many = unknown_name("model-07x", (f"model-{n:02}" for n in range(40)))
    assert many.startswith("; did you mean 'model-07'") and many.endswith(", model-29 and 10 more)")


def test_a_setting_and_a_model_are_suggested_in_the_same_words(tmp_path: Path) -> None:
    """One helper suggests the closest name, for an unknown model and for an unknown key of the settings file."""
    assert unknown_name("irs", ["iris", "iris-proba"]).startswith(did_you_mean("irs", ["iris", "iris-proba"]))
    config = tmp_path / "stevedore.toml"
    config.write_text("prot = 8000\n")
    with pytest.raises(SettingError) as raised:
        Settings.load({}, config=str(config))
    assert (
        raised.value.problem
        == "no such setting" + did_you_mean("prot", ["port"])
        == ("no such setting; did you mean 'port'?")
    )


def test_the_error_pickles_whole_and_is_bare_to_a_stranger() -> None:
    """A Ray replica sends its errors to the ingress pickled."""
    error = pickle.loads(pickle.dumps(UnknownModel.named("irs", ["iris"])))
    assert (type(error), str(error)) == (UnknownModel, "no model named 'irs'; did you mean 'iris'? (models: iris)")
    stranger = error.to_anonymous()
    assert (type(stranger), str(stranger)) == (NotFound, "no model named 'irs'")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/models/irs", None),
        ("GET", "/models/irs/schemas/predict", None),
        ("POST", "/models/irs/predict", [[5.1, 3.5, 1.4, 0.2]]),
        ("POST", "/models/irs/versions/1/predict", [[5.1, 3.5, 1.4, 0.2]]),
        ("GET", "/models/irs/ready", None),
        ("GET", "/v2/models/irs", None),
        ("GET", "/v2/models/irs/ready", None),
        ("POST", "/v2/models/irs/infer", {"inputs": []}),
    ],
)
def test_http_routes_suggest_and_list(keyed: Server, method: str, path: str, body: Any) -> None:
    response = httpx.request(method, keyed.url + path, json=body, headers=AUTHORIZED, timeout=10)
    assert (response.status_code, response.json()["error"]) == (404, SUGGESTED)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/predict", {"predictor": "irs", "payload": [[5.1, 3.5, 1.4, 0.2]]}),
        ("GET", "/predict_schema?model=irs", None),
        ("GET", "/health/ready?model=irs", None),
    ],
)
def test_original_routes_keep_their_message_and_add_the_names(keyed: Server, method: str, path: str, body: Any) -> None:
    response = httpx.request(method, keyed.url + path, json=body, headers=AUTHORIZED, timeout=10)
    expected = f"Model irs not found; did you mean 'iris'? {LISTED}"
    assert (response.status_code, response.json()["error"]) == (400, expected)


@pytest.mark.parametrize("path", ["/models/irs/ready", "/v2/models/irs/ready", "/health/ready?model=irs"])
def test_a_probe_without_a_key_is_not_told_the_names(keyed: Server, path: str) -> None:
    response = httpx.get(keyed.url + path, timeout=10)
    assert response.status_code in (400, 404)
    assert "iris" not in response.text and "irs" in response.text


def grpc_call(server: Server, method: str, request: Any, key: str | None) -> grpc.RpcError:
    metadata = [("authorization", f"Bearer {key}")] if key else []
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            getattr(stub, method)(request, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return error
    raise AssertionError(f"{method} answered an unknown model")


def test_grpc_suggests_and_lists_in_not_found(keyed: Server) -> None:
    infer = service_pb2.ModelInferRequest(model_name="irs")
    infer.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend([5.1, 3.5, 1, 0.2])
    for method, request in [
        ("ModelInfer", infer),
        ("ModelMetadata", service_pb2.ModelMetadataRequest(name="irs")),
        ("ModelReady", service_pb2.ModelReadyRequest(name="irs")),
    ]:
        error = grpc_call(keyed, method, request, KEY)
        assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, SUGGESTED), method


def test_grpc_probe_without_a_key_is_not_told_the_names(keyed: Server) -> None:
    error = grpc_call(keyed, "ModelReady", service_pb2.ModelReadyRequest(name="irs"), None)
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "no model named 'irs'")


def test_cli_schema_suggests_and_lists() -> None:
    result = CliRunner().invoke(main, ["schema", "irs", "--plugins", "stevedore-sklearn-logreg"])
    assert result.exit_code == 1
    assert f"Error: {SUGGESTED}" in result.output


def remote_command(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"STEVEDORE_API_KEY": KEY}
    command = [sys.executable, "-m", "stevedore_server", "models", *args, "--url", server.url]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_models_unload_shows_the_servers_suggestion(keyed: Server) -> None:
    result = remote_command(keyed, "unload", "irs")
    assert result.returncode == 1 and f"404 from {keyed.url}" in result.stderr
    assert SUGGESTED in result.stderr, result.stderr


def test_models_load_lists_what_the_plugins_provide(keyed: Server) -> None:
    result = remote_command(keyed, "load", "irs")
    assert result.returncode == 1
    assert f"no installed plugin provides a model named 'irs'; did you mean 'iris'? {LISTED}" in result.stderr


def tables_config(tmp_path: Path) -> Path:
    config = tmp_path / "stevedore.toml"
    config.write_text("[models.iris]\nmax_queue = 5\n\n[models.irs]\nmax_queue = 3\n")
    return config


def test_a_table_matching_no_model_is_a_startup_warning(tmp_path: Path) -> None:
    config = tables_config(tmp_path)
    server = Server.start(
        Venv(Path(sys.prefix), ()), tmp_path / "server.log", "--plugins", "stevedore-sklearn-logreg",
        "--config", str(config),
    )  # fmt: skip
    try:
        server.wait_for("/readyz")
        warnings = [line for line in server.log().splitlines() if "matches no model" in line]
    finally:
        server.stop()
    assert len(warnings) == 1, server.log()
    assert warnings[0].endswith(
        f"table [models.irs] in {config} matches no model, so its settings apply to nothing; did you mean 'iris'? "
        f"{LISTED}"
    )


@pytest.mark.parametrize("command", ["run", "check"])
def test_a_table_matching_no_model_stops_a_strict_start(tmp_path: Path, command: str) -> None:
    """``run --strict``; ``check`` has no flag of it, but reads the variable as every command does."""
    config = tables_config(tmp_path)
    args = [command, "--plugins", "stevedore-sklearn-logreg", "--config", str(config)]
    if command == "run":
        args += ["--strict", "--port", "0", "--grpc-port", "0"]
    result = subprocess.run(
        [str(Path(sys.prefix) / "bin" / "stevedore-server"), *args],
        env=os.environ | {"STEVEDORE_STRICT": "true"}, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: --strict: table [models.irs] in {config} matches no model, so its settings apply to nothing; "
        f"did you mean 'iris'? {LISTED}"
    )


def test_a_model_files_table_is_a_model(tmp_path: Path) -> None:
    """A table with a ``uri`` declares its model (a model file): never "matches no model", served or not (here no
    runtime is selected to serve it)."""
    config = tmp_path / "stevedore.toml"
    config.write_text(f'[models.from-a-file]\nuri = "{tmp_path / "absent.onnx"}"\n')
    result = subprocess.run(
        [str(Path(sys.prefix) / "bin" / "stevedore-server"), "check", "--plugins", "stevedore-sklearn-logreg",
         "--config", str(config)],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert "from-a-file" in result.stdout + result.stderr
    assert "matches no model" not in result.stdout + result.stderr
