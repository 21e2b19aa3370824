"""``stevedore-server run`` with KServe's runtime arguments, as a KServe ServingRuntime passes them
(``--model_name=NAME --model_dir=/mnt/models --http_port=8080 --grpc_port=8081``): a real server serves the
folder's scikit-learn model on those ports, over the stevedore routes, V2 REST and V2 gRPC, answering as the
library called directly; the arguments that do not go together are clear usage errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from click.testing import CliRunner

from stevedore_server.cli import main
from stevedore_server.cli.options import make_run_settings

from .venvs import Server, Venv, free_ports

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def fit_iris() -> Any:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(features, labels)


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """An iris classifier, and a folder holding it as ``model.joblib`` (what KServe's storage initializer leaves
    in /mnt/models for a ``storageUri`` naming the file)."""
    import joblib

    model = fit_iris()
    folder = tmp_path_factory.mktemp("mnt-models")
    joblib.dump(model, folder / "model.joblib")
    return model, folder


@pytest.fixture(scope="module")
def kserve_server(iris: tuple[Any, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server started with KServe's arguments, in its ``=`` forms, alone (no --port, no --model); a second
    model from STEVEDORE_MODEL, which the KServe model adds to."""
    _, folder = iris
    root = tmp_path_factory.mktemp("kserve-args")
    http_port, grpc_port = free_ports(2)
    environment = Venv(Path(sys.prefix), ())
    kserve_args = ["--model_name=iris", f"--model_dir={folder}", f"--http_port={http_port}", f"--grpc_port={grpc_port}"]
    command = [str(environment.bin / "stevedore-server"), "run", "--host", "127.0.0.1", *kserve_args]
    command += ["--allow-pickle", "--plugins", "stevedore-runtime-sklearn"]
    env = environment.env(STEVEDORE_STATE_DIR=str(root / "state"), STEVEDORE_MODEL=f"from-env={folder}")
    log_path = root / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log_path, log)
    try:
        server.wait_for("/readyz", deadline=120)
        yield server
    finally:
        server.stop()


@pytest.mark.server
def test_the_model_dir_is_served_on_kserves_ports_as_the_library_answers(
    kserve_server: Server, iris: tuple[Any, Path]
) -> None:
    model, _ = iris
    expected = model.predict(np.asarray(ROWS)).tolist()
    listed = httpx.get(kserve_server.url + "/models", timeout=30).json()["models"]
    assert sorted(entry["name"] for entry in listed) == ["from-env", "iris"]
    answer = httpx.post(kserve_server.url + "/models/iris/predict", json=ROWS, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == expected
    body = {
        "inputs": [{"name": "input-0", "shape": [len(ROWS), 4], "datatype": "FP64", "data": np.ravel(ROWS).tolist()}]
    }
    over_v2 = httpx.post(kserve_server.url + "/v2/models/iris/infer", json=body, timeout=30)
    assert over_v2.status_code == 200, over_v2.text
    (predicted,) = over_v2.json()["outputs"]
    assert predicted["shape"] == [len(ROWS), 1]  # a column, as MLServer's scikit-learn runtime answers
    assert np.ravel(predicted["data"]).tolist() == expected
    with triton_grpc.InferenceServerClient(kserve_server.grpc_target) as over_grpc:
        assert over_grpc.is_model_ready("iris")
        tensor = triton_grpc.InferInput("input-0", [len(ROWS), 4], "FP64")
        tensor.set_data_from_numpy(np.asarray(ROWS, dtype=np.float64))
        result = over_grpc.infer("iris", [tensor])
        assert result.as_numpy(result.get_response().outputs[0].name).ravel().tolist() == expected


@pytest.mark.unit
def test_the_spaced_forms_are_the_same_settings_as_model_and_ports(tmp_path: Path) -> None:
    kserve = {"kserve_model_name": "iris", "kserve_model_dir": str(tmp_path), "kserve_http_port": 9000,
              "kserve_grpc_port": 9001}  # fmt: skip
    given = make_run_settings(**(empty_values() | kserve))
    ours = make_run_settings(**(empty_values() | {"model": f"iris={tmp_path}", "port": 9000, "grpc_port": 9001}))
    assert given == ours
    assert (given.port, given.grpc_port, given.models["iris"].uri) == (9000, 9001, str(tmp_path))


def empty_values() -> dict[str, Any]:
    """Every option of ``run`` unset, as click hands them over."""
    return {parameter.name: None for parameter in main.commands["run"].params if parameter.name}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model_name", "iris"], "--model_name needs --model_dir DIR"),
        (["--model_dir=/mnt/models"], "--model_dir needs --model_name NAME"),
        (["--model_name", "a=b", "--model_dir", "/mnt/models"], "--model_name 'a=b': a model's name is letters"),
        (["--model_name", "iris", "--model_dir="], "--model_dir: empty"),
        (["--http_port", "9000", "--port", "9001"], "--http_port 9000 and --port 9001 disagree"),
        (["--grpc_port=9000", "--grpc-port", "9001"], "--grpc_port 9000 and --grpc-port 9001 disagree"),
    ],
)
def test_kserve_arguments_that_do_not_go_together_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["run", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.unit
def test_the_other_commands_take_no_kserve_arguments() -> None:
    for command in ("config", "check", "list", "manifests"):
        result = CliRunner().invoke(main, [command, "--model_name", "iris"])
        assert result.exit_code == 2 and "No such option '--model_name'" in result.output, (command, result.output)


@pytest.mark.unit
def test_check_passes_with_runtimes_only_as_an_image_for_kserve_has_them() -> None:
    """``stevedore-server build`` runs ``check`` in the image: one with runtime wheels only (KServe's model-file
    runtime) has no model until one is declared where it runs, and must still build."""
    result = CliRunner().invoke(main, ["check", "--plugins", "stevedore-runtime-sklearn"])
    assert result.exit_code == 0, result.output
    assert "no models; runtimes installed: sklearn" in result.output
    nothing = CliRunner().invoke(main, ["check", "--plugins", "no-such-distribution"])
    assert nothing.exit_code == 1 and "--plugins no-such-distribution: no installed plugin" in nothing.output
