"""The model repository against a real server: a plugin wheel ``pip install``ed next to the running server is
indexed, loaded and served without a restart, then unloaded, driven by NVIDIA's ``tritonclient.http``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from .venvs import INSTALLED, Server, Venv, build_wheels, copy_source

pytestmark = [pytest.mark.venv, pytest.mark.server]


#: The good test plugin's distribution: each test installs it while its server runs.
GOOD = "stevedore-test-good"


@pytest.fixture(scope="module")
def installation(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Venv, Path]:
    """A venv of the core and the example plugin, and the good test plugin's wheel, not installed: built once for
    the module's tests, which take turns (``running`` gives each the venv without the good plugin)."""
    root = tmp_path_factory.mktemp("repository")
    environment = Venv.create(root / "venv", wheelhouse)
    environment.install("stevedore-server", "stevedore-sklearn-logreg")
    wheels = build_wheels([copy_source(INSTALLED / "good", root / "good")], root / "wheels", wheelhouse)
    return environment, wheels[0]


@pytest.fixture
def running(
    installation: tuple[Venv, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Server, Venv, Path]]:
    """A server of the example plugin in the module's venv (``--workers`` from an indirect parameter, else 1), and
    the good test plugin's wheel, not installed yet: each test installs it, and it is uninstalled after."""
    environment, wheel = installation
    installed = environment.run("python", "-m", "pip", "show", "--quiet", GOOD, check=False)
    if installed.returncode == 0:
        pytest.fail(f"{GOOD} is installed in the shared venv before the test: an earlier test left it")
    workers = str(getattr(request, "param", 1))
    server = Server.start(environment, tmp_path / "server.log", "--workers", workers)
    try:
        server.wait_for("/readyz")
        yield server, environment, wheel
    finally:
        server.stop()
        # The venv is the module's: the next test must start from the example plugin alone, as if it were fresh.
        environment.run("python", "-m", "pip", "uninstall", "--quiet", "--yes", GOOD)


def test_a_wheel_installed_while_serving_is_loaded_and_served_without_restart(
    running: tuple[Server, Venv, Path],
) -> None:
    server, environment, wheel = running
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert {m["name"] for m in client.get_model_repository_index()} == {"iris", "iris-proba"}
    environment.run("python", "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel))

    index = {(m["name"], m["version"]): m for m in client.get_model_repository_index()}
    assert index[("gamma", "1")]["state"] == "UNAVAILABLE"
    assert not client.is_model_ready("gamma")
    client.load_model("gamma")
    assert client.is_model_ready("gamma")
    answer = httpx.post(server.url + "/models/gamma/predict", json=[[1, 2]])
    assert answer.status_code == 200, answer.text
    assert client.is_model_ready("iris")  # the models already served were not disturbed

    client.unload_model("gamma")
    assert not client.is_model_ready("gamma")
    assert httpx.post(server.url + "/models/gamma/predict", json=[[1, 2]]).status_code == 503
    with pytest.raises(InferenceServerException, match="no installed plugin provides a model named 'nope'"):
        client.load_model("nope")

    with triton_grpc.InferenceServerClient(server.grpc_target) as over_grpc:  # the same over gRPC
        over_grpc.load_model("gamma")
        assert over_grpc.is_model_ready("gamma")
        assert httpx.post(server.url + "/models/gamma/predict", json=[[1, 2]]).status_code == 200
        over_grpc.unload_model("gamma")
        assert not over_grpc.is_model_ready("gamma") and not client.is_model_ready("gamma")
    assert "SIGTERM" not in server.log() and "Traceback" not in server.log()


def test_the_models_commands_drive_a_running_server(running: tuple[Server, Venv, Path]) -> None:
    server, environment, wheel = running
    environment.run("python", "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel))

    def models(*args: str, check: bool = True) -> str:
        result = environment.run("stevedore-server", "models", *args, "--url", server.url, check=check)
        return result.stdout + result.stderr

    assert "gamma  1  UNAVAILABLE  not loaded" in models("index")
    assert models("load", "gamma") == "gamma loaded\n"
    index = {(m["name"], m["state"]) for m in json.loads(models("index", "--json", "--ready"))}
    assert index == {("iris", "READY"), ("iris-proba", "READY"), ("gamma", "READY")}
    assert models("unload", "gamma") == "gamma unloaded\n"
    refused = models("load", "nope", check=False)
    assert "Error: 404 from" in refused and "no installed plugin provides a model named 'nope'" in refused


@pytest.mark.parametrize("running", [2], indirect=True, ids=["workers-2"])
def test_every_worker_serves_a_load_or_unload_before_it_is_answered(running: tuple[Server, Venv, Path]) -> None:
    server, environment, wheel = running
    environment.run("python", "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel))

    def readiness_on_fresh_connections() -> set[int]:
        statuses = set()
        for _ in range(24):  # a new connection each: both workers take some
            with httpx.Client() as client:
                statuses.add(client.get(server.url + "/v2/models/gamma/ready").status_code)
        return statuses

    assert httpx.post(server.url + "/v2/repository/models/gamma/load", timeout=60).status_code == 200
    assert readiness_on_fresh_connections() == {200}
    assert server.log().count("model gamma loaded") == 2  # one line a worker
    assert httpx.post(server.url + "/v2/repository/models/gamma/unload", timeout=60).status_code == 200
    assert readiness_on_fresh_connections() == {400}
    assert server.log().count("model gamma unloaded") == 2
