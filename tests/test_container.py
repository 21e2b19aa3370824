"""The container image, built for real with Podman and run with buildah, from a venv with only the core (how
the images are made: ``containers.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as triton_grpc

from stevedore_server.deploy.manifests import Deployment, render

from .containers import (
    EXAMPLE_IMAGE,
    ExampleBuild,
    build,
    buildah,
    ensure_base_image,
    image_exists,
    remove_image,
)
from .headstart import HeadStart
from .venvs import INSTALLED, Venv, build_wheels, copy_source, describe, free_ports, pinned_plugin

pytestmark = pytest.mark.container

SETOSA = [5.1, 3.5, 1.4, 0.2]
#: The example image's plugins: the example plugin, and the scikit-learn runtime (model files, KServe's).
PLUGINS = "stevedore-sklearn-logreg==0.1.0,stevedore-runtime-sklearn==0.1.0"


@pytest.fixture(scope="session")
def base_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    return ensure_base_image(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def example_build(head_start: HeadStart) -> Iterator[ExampleBuild]:
    """The example plugin's image (``containers.build_example_image``), built ahead by the session."""
    built: ExampleBuild = head_start.result(EXAMPLE_IMAGE)
    try:
        yield built
    finally:
        remove_image(built.tag)


@pytest.fixture(scope="module")
def core_only_venv(example_build: ExampleBuild) -> Venv:
    """What a user has after ``pip install stevedore-server``: the venv that built the example image."""
    return example_build.builder


@pytest.fixture(scope="module")
def example_image(example_build: ExampleBuild) -> tuple[str, str]:
    """The example image's tag and the output of its build, which succeeded."""
    assert example_build.result.returncode == 0, describe(example_build.result)
    return example_build.tag, example_build.result.stdout + example_build.result.stderr


def inspect(tag: str) -> dict[str, Any]:
    image: dict[str, Any] = json.loads(buildah("inspect", "--type", "image", tag).stdout)
    return image


def test_build_reports_what_it_built(example_image: tuple[str, str]) -> None:
    tag, output = example_image
    assert f"built {tag}: stevedore-server 0.1.0, plugins: {PLUGINS}" in output
    assert "all 3 models passed" in output  # `stevedore-server check` ran inside the image, isolated model too


def test_labels_list_the_server_and_plugins(example_image: tuple[str, str]) -> None:
    labels = inspect(example_image[0])["Docker"]["config"]["Labels"]
    assert labels["io.stevedore.plugins"] == PLUGINS
    assert labels["io.stevedore.isolated-plugins"] == "stevedore-test-pinned-old==1.0.0"
    assert labels["io.stevedore.server.version"] == labels["org.opencontainers.image.version"] == "0.1.0"


def test_production_command_healthcheck_and_user(example_image: tuple[str, str]) -> None:
    config = inspect(example_image[0])["Docker"]["config"]
    assert config["Cmd"] == ["stevedore-server", "run", "--host", "0.0.0.0"]  # the port: 8000, or from PORT
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {"8000/tcp", "8081/tcp"}
    assert config["Healthcheck"]["Test"][0] == "CMD" and "/readyz" in config["Healthcheck"]["Test"][-1]


@pytest.fixture(scope="module")
def container(example_image: tuple[str, str]) -> Iterator[str]:
    name = buildah("from", example_image[0]).stdout.strip().splitlines()[-1]
    yield name
    buildah("rm", name, check=False)


def inside(container: str, *command: str) -> subprocess.CompletedProcess[str]:
    return buildah("run", "--isolation", "chroot", container, "--", *command, check=False)


def test_runs_as_non_root(container: str) -> None:
    result = inside(container, "python3", "-c", "import os; print(os.getuid(), os.getgid())")
    assert result.stdout.split() == ["10001", "10001"], describe(result)  # numeric: runAsNonRoot can tell


def test_the_state_directory_is_var_lib_stevedore_and_writable(container: str) -> None:
    script = "import os; state = os.environ['STEVEDORE_STATE_DIR']; print(state, os.access(state, os.W_OK))"
    result = inside(container, "python3", "-c", script)
    assert result.stdout.split() == ["/var/lib/stevedore", "True"], describe(result)


def test_no_wheelhouse_pip_cache_or_compiler_left(container: str) -> None:
    script = (
        "import importlib.util, os, shutil; "
        "print(importlib.util.find_spec('pip') is None, os.path.exists('/tmp/wheelhouse'), "
        "os.path.exists('/root/.cache/pip'), any(shutil.which(c) for c in ('gcc', 'cc', 'g++')))"
    )
    result = inside(container, "python3", "-c", script)
    assert result.stdout.split() == ["True", "False", "False", "False"], describe(result)


@contextlib.contextmanager
def serving(
    container: str, log_path: Path, env: dict[str, str], command: list[str], url: str, volumes: tuple[str, ...] = ()
) -> Iterator[None]:
    """``command`` run in the container with ``env`` (and ``volumes``, ``HOST:CONTAINER`` bind mounts), until ready
    at ``url``; stopped by its process group."""
    log = log_path.open("wb")
    run = ["buildah", "run", "--isolation", "chroot", *(f"--volume={volume}" for volume in volumes)]
    for name, value in env.items():
        run += ["--env", f"{name}={value}"]
    process = subprocess.Popen([*run, container, "--", *command], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    try:
        wait_ready(process, url, log_path)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        log.close()


def test_the_server_inside_answers(container: str, tmp_path: Path) -> None:
    """As a platform runs it: the image's user, the port from ``PORT``."""
    port, grpc_port = free_ports(2)
    url = f"http://127.0.0.1:{port}"
    env = {"PORT": str(port), "STEVEDORE_GRPC_PORT": str(grpc_port)}
    with serving(container, tmp_path / "container.log", env, ["stevedore-server", "run", "--host", "127.0.0.1"], url):
        assert httpx.get(url + "/livez").json() == {"status": "live"}
        assert httpx.get(url + "/healthz").json()["status"] == "ok"
        names = [m["name"] for m in httpx.get(url + "/models").json()["models"]]
        assert names == ["iris", "iris-proba", "toolz-0"]
        isolated = httpx.post(url + "/models/toolz-0/predict", json=[1]).json()["predictions"]
        assert isolated == [{"toolz": "0.12.1", "prefix": "/opt/stevedore-envs/stevedore-test-pinned-old"}]
        predicted = httpx.post(url + "/models/iris/predict", json=[SETOSA])
        assert predicted.json() == {"model_name": "iris", "model_version": "1", "predictions": [0]}
        scored = httpx.post(url + "/models/iris/score", json=[{"x": SETOSA, "y": 0}])
        assert scored.json()["score"] == 1.0
        assert httpx.get(url + "/models/iris/score").json()["score"] > 0.9
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}") as over_grpc:
            assert over_grpc.is_model_ready("iris")


def test_the_image_serves_as_its_kserve_runtime_runs_it(
    container: str, example_image: tuple[str, str], tmp_path: Path
) -> None:
    """The generated runtime's container command, arguments and environment, run here: the V2 routes answer on
    the manifest's port. (Its host, every interface, is loopback here, as every server in the tests.)"""
    http_port, grpc_port = free_ports(2)
    deployment = Deployment(example_image[0], ["iris", "iris-proba"], http_port=http_port, grpc_port=grpc_port)
    (spec,) = render(deployment)["clusterservingruntime.yaml"]["spec"]["containers"]
    args = ["127.0.0.1" if arg == "0.0.0.0" else arg for arg in spec["args"]]
    env = {variable["name"]: variable["value"] for variable in spec["env"]}
    port = spec["ports"][0]["containerPort"]
    url = f"http://127.0.0.1:{port}"
    with serving(container, tmp_path / "runtime.log", env, [*spec["command"], *args], url):
        assert httpx.get(url + spec["readinessProbe"]["httpGet"]["path"]).status_code == 200
        assert httpx.get(url + spec["livenessProbe"]["httpGet"]["path"]).status_code == 200
        assert httpx.get(url + "/v2/health/ready").status_code == 200
        body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": SETOSA}]}
        answer = httpx.post(url + "/v2/models/iris/infer", json=body)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [0], answer.text


def test_the_image_serves_mnt_models_as_its_kserve_model_file_runtime_runs_it(
    container: str, example_image: tuple[str, str], tmp_path: Path
) -> None:
    """The generated model-file runtime's container command, arguments and environment, exactly, with a folder
    mounted at /mnt/models as KServe's storage initializer fills it (a skops file: served without the pickle
    opt-in): the image's scikit-learn runtime serves it as the InferenceService's name, as the library answers."""
    import skops.io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    models = tmp_path / "mnt-models"
    models.mkdir()
    skops.io.dump(model, models / "model.skops")
    models.chmod(0o755)
    http_port, grpc_port = free_ports(2)
    deployment = Deployment(example_image[0], ["iris"], http_port=http_port, grpc_port=grpc_port)
    (spec,) = render(deployment)["clusterservingruntime-files.yaml"]["spec"]["containers"]
    assert spec["args"] == [
        "--model_name={{.Name}}", "--model_dir=/mnt/models", f"--http_port={http_port}", f"--grpc_port={grpc_port}"
    ]  # fmt: skip
    args = [arg.replace("{{.Name}}", "flowers") for arg in spec["args"]]  # KServe's template: the service's name
    env = {variable["name"]: variable["value"] for variable in spec["env"]} | {"STEVEDORE_HOST": "127.0.0.1"}
    url = f"http://127.0.0.1:{spec['ports'][0]['containerPort']}"
    with serving(container, tmp_path / "files.log", env, [*spec["command"], *args], url, (f"{models}:/mnt/models",)):
        rows = [SETOSA, [6.7, 3.0, 5.2, 2.3]]
        body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [*rows[0], *rows[1]]}]}
        answer = httpx.post(url + "/v2/models/flowers/infer", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == model.predict(rows).tolist()
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}") as over_grpc:
            assert over_grpc.is_model_ready("flowers")


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, deadline: float = 120) -> None:
    import time

    stop_at = time.monotonic() + deadline
    while time.monotonic() < stop_at:
        assert process.poll() is None, f"the server in the container exited:\n{log.read_text()}"
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"not ready within {deadline}s:\n{log.read_text()}")


def test_a_plugin_failing_its_self_test_fails_the_build(
    base_image: str, core_only_venv: Venv, wheelhouse: Path, tmp_path: Path
) -> None:
    source = copy_source(INSTALLED / "failing", tmp_path / "failing")
    (failing_wheel,) = build_wheels([source], tmp_path / "wheels", wheelhouse)
    tag = f"localhost/stevedore-test-failing:{uuid.uuid4().hex[:8]}"
    try:
        result = build(core_only_venv, wheelhouse, tag, failing_wheel)
        output = result.stdout + result.stderr
        assert result.returncode == 1, describe(result)
        assert (
            "failing 1 (entry point 'failing' (stevedore.predictors) of stevedore-test-failing 0.1.0): FAILED" in output
        )
        assert "ZeroDivisionError: the model divides by zero on its own fixture" in output
        assert "Error: podman build failed" in output
        assert not image_exists(tag)
    finally:
        remove_image(tag)


def test_no_engine_is_a_clear_error(core_only_venv: Venv) -> None:
    env = core_only_venv.env(PATH=str(core_only_venv.bin))
    result = core_only_venv.run("stevedore-server", "build", "--engine", "docker", env=env, check=False)
    assert result.returncode == 1
    assert "no container engine found (docker is not on PATH)" in result.stderr
    assert "--output-context" in result.stderr


def test_output_context_needs_no_engine(core_only_venv: Venv, wheelhouse: Path, tmp_path: Path) -> None:
    (plugin_wheel,) = wheelhouse.glob("stevedore_sklearn_logreg-*.whl")
    links = pinned_plugin(tmp_path, "new", "1.0.0", wheelhouse)
    (isolated_wheel,) = links.glob("stevedore_test_pinned_new-*.whl")
    env = core_only_venv.env(PATH=str(core_only_venv.bin), PIP_NO_INDEX="1", PIP_FIND_LINKS=f"{wheelhouse} {links}")
    context = tmp_path / "context"
    args = ["build", "--plugin", str(plugin_wheel), "--output-context", str(context), "--base-image", "debian:12"]
    args += ["--isolated-plugin", str(isolated_wheel)]
    result = core_only_venv.run("stevedore-server", *args, env=env, check=False)
    assert result.returncode == 0, describe(result)
    containerfile = (context / "Containerfile").read_text()
    assert (
        "ARG BASE_IMAGE=debian:12" in containerfile and "ARG PLUGINS=stevedore-sklearn-logreg==0.1.0" in containerfile
    )
    requirements = (context / "wheelhouse" / "requirements.txt").read_text().split()
    assert requirements == ["stevedore-server==0.1.0", "stevedore-sklearn-logreg==0.1.0"]
    # The isolated plugin: a wheelhouse of its own, resolved alone (its toolz, not the server's), and a label.
    isolated = context / "isolated" / "stevedore-test-pinned-new"
    assert (isolated / "requirements.txt").read_text().split() == [
        "stevedore-server==0.1.0", "stevedore-test-pinned-new==1.0.0"
    ]  # fmt: skip
    assert (isolated / "toolz-1.0.0-py3-none-any.whl").is_file()
    assert not list((context / "wheelhouse").glob("toolz-*"))
    assert "ARG ISOLATED_PLUGINS=stevedore-test-pinned-new==1.0.0" in containerfile
    assert (context / "wheelhouse" / "stevedore_server-0.1.0-py3-none-any.whl").is_file()  # repacked, no repository
