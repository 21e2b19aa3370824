"""Errors about plugins and ports, as a user meets them with the real command: a plugin ``pip install -e``d into
a running server and loaded through the repository (and one that fails to import), a ``--plugins`` or
``--disable-plugins`` that names nothing installed, ``/readyz`` with no model, and a busy HTTP port."""

from __future__ import annotations

import importlib.metadata
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .venvs import Server, Venv, describe, free_ports, ready_server

#: The environment running the tests: its ``stevedore-server`` serves the example plugin (and the runtimes).
HERE = Venv(Path(sys.prefix), ())
#: What the example plugin's model answers, loaded at startup: a line the log shows only once a model loaded.
MODEL_LOADED = re.compile(r"model \S+ version \S+ ready")


def installed_distributions(group: str) -> list[str]:
    return sorted({point.dist.name for point in importlib.metadata.entry_points(group=group) if point.dist})


# -- a plugin installed into a running server -----------------------------------


@pytest.fixture(scope="module")
def serving_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh venv of the core and the example plugin, into which the tests install plugins while it serves."""
    environment = Venv.create(tmp_path_factory.mktemp("plugin-errors") / "venv", wheelhouse)
    environment.install("stevedore-server", "stevedore-sklearn-logreg")
    return environment


@pytest.fixture
def running(serving_venv: Venv, tmp_path: Path) -> Iterator[Server]:
    """A ready server of ``serving_venv``; the plugins a test installed are uninstalled after it stopped."""
    before = installed_in(serving_venv)
    server = ready_server(serving_venv, tmp_path / "server.log")
    try:
        yield server
    finally:
        server.stop()
        added = installed_in(serving_venv) - before
        if added:
            serving_venv.run("python", "-m", "pip", "uninstall", "--quiet", "--yes", *added)


def installed_in(environment: Venv) -> set[str]:
    """The distributions installed in ``environment``, by name (editable ones too)."""
    listed = environment.run("python", "-m", "pip", "list", "--format", "freeze").stdout.splitlines()
    return {line.split("==")[0] for line in listed}


def new_plugin(environment: Venv, name: str, where: Path) -> Path:
    """``stevedore-server new-plugin NAME``, as its author runs it."""
    source = where / f"stevedore-{name}"
    created = environment.run("stevedore-server", "new-plugin", name, "--directory", str(source))
    assert f"created {source}" in created.stdout, describe(created)
    return source


def pip_install_editable(environment: Venv, source: Path, wheelhouse: Path) -> None:
    """``pip install -e DIR`` with the venv's pip, offline: setuptools for the build from the wheelhouse."""
    environment.run("pip", "install", "--quiet", "--no-index", "--find-links", str(wheelhouse), "-e", str(source))


def load(server: Server, name: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/repository/models/{name}/load", timeout=60)


def test_a_plugin_pip_installed_editable_into_a_running_server_is_loaded_and_serves(
    running: Server, serving_venv: Venv, wheelhouse: Path, tmp_path: Path
) -> None:
    source = new_plugin(serving_venv, "my-model", tmp_path)
    pip_install_editable(serving_venv, source, wheelhouse)

    loaded = load(running, "my-model")

    assert loaded.status_code == 200, f"{loaded.text}\n{running.log()}"
    fixture = (source / "stevedore_my_model" / "fixtures" / "predict.json").read_bytes()
    answer = httpx.post(running.url + "/models/my-model/predict", content=fixture, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_name"] == "my-model"
    assert httpx.get(running.url + "/healthz").json()["failed_plugins"] == []
    assert "__editable__.stevedore_my_model-0.1.0.pth, installed since the server started" in running.log()


def test_a_plugin_that_fails_to_import_on_load_is_a_400_with_the_import_error_and_a_failed_plugin(
    running: Server, serving_venv: Venv, wheelhouse: Path, tmp_path: Path
) -> None:
    source = new_plugin(serving_venv, "bad-model", tmp_path)
    module = source / "stevedore_bad_model" / "predictor.py"
    working = module.read_text()
    future = "from __future__ import annotations\n"
    module.write_text(working.replace(future, future + "import stevedore_missing_dependency  # noqa: F401\n", 1))
    pip_install_editable(serving_venv, source, wheelhouse)

    refused = load(running, "bad-model")

    assert refused.status_code == 400, refused.text
    assert refused.json()["error"].startswith(
        "cannot load model 'bad-model': plugin stevedore-bad-model (entry point bad-model = "
        "stevedore_bad_model.predictor:BadModelPredictor) failed to import: "
        "ModuleNotFoundError: No module named 'stevedore_missing_dependency'"
    )
    assert "Traceback" not in refused.text
    # The server's environment is in its log, not in what a client reads.
    assert str(serving_venv.path) not in refused.text and str(serving_venv.path) in running.log()
    # A typo is still told the models there are; the failed plugin, which may provide it, is named too.
    typo = load(running, "irs")
    assert typo.status_code == 404, typo.text
    assert typo.json()["error"].startswith(
        "no installed plugin provides a model named 'irs'; did you mean 'iris'? (models: iris, iris-proba); a "
        "plugin that failed may provide it: plugin stevedore-bad-model (entry point bad-model = "
        "stevedore_bad_model.predictor:BadModelPredictor) failed to import: "
    )
    health = httpx.get(running.url + "/healthz").json()
    [failed] = health["failed_plugins"]
    assert (failed["distribution"], failed["entry_point"]) == ("stevedore-bad-model", "bad-model")
    assert failed["error"] == "ModuleNotFoundError: No module named 'stevedore_missing_dependency'"
    assert "since, a repository load found: entry point 'bad-model'" in health["checks"]["plugins"]["detail"]
    # What it serves is as it was: a failed load does not take the server out of rotation.
    assert httpx.get(running.url + "/readyz").status_code == 200

    module.write_text(working)  # the author fixes it (an editable install: the source is what is imported)
    assert load(running, "bad-model").status_code == 200
    assert httpx.get(running.url + "/healthz").json()["failed_plugins"] == []


# -- readiness with no model --------------------------------------------------


def test_readyz_tells_no_plugin_selected_from_none_installed(
    wheelhouse: Path, tmp_path: Path, serving_venv: Venv
) -> None:
    bare = Venv.create(tmp_path / "bare", wheelhouse, pip=False)
    bare.install("stevedore-server")

    for environment, args, reason in [
        (bare, (), "no models installed: pip install a plugin that provides stevedore.predictors"),
        (
            serving_venv,
            ("--disable-plugins", "stevedore-sklearn-logreg"),
            "no plugin selected: --disable-plugins stevedore-sklearn-logreg selects none of the installed "
            "stevedore-sklearn-logreg",
        ),
    ]:
        server = Server.start(environment, tmp_path / f"{environment.path.name}.log", *args)
        try:
            readiness = server.wait_for("/readyz", status=503)
        finally:
            server.stop()
        assert any(reason in line for line in readiness.json()["reasons"]), readiness.text


# -- --plugins and --disable-plugins naming nothing installed ------------------


@pytest.mark.parametrize("flag", ["--plugins", "--disable-plugins"])
@pytest.mark.parametrize("command", ["run", "check", "list"])
def test_a_selection_naming_no_installed_plugin_stops_the_command(command: str, flag: str) -> None:
    port, grpc_port = free_ports(2)
    ports = ["--port", str(port), "--grpc-port", str(grpc_port)] if command == "run" else []
    started = time.monotonic()

    result = HERE.run("stevedore-server", command, flag, "stevedore-nonexistent", *ports, check=False, timeout=60)

    assert result.returncode == 1, describe(result)
    assert time.monotonic() - started < 30  # it stopped; it did not serve
    assert f"Error: {flag} stevedore-nonexistent: no installed plugin has this name" in result.stderr, describe(result)
    installed = installed_distributions("stevedore.predictors") + installed_distributions("stevedore.runtimes")
    assert f"the installed plugins are {', '.join(sorted(installed))} (" in result.stderr, describe(result)
    assert "Traceback" not in result.stderr and not MODEL_LOADED.search(result.stderr)


# -- a busy port ----------------------------------------------------------------


def run_with_port_taken(which: str) -> tuple[subprocess.CompletedProcess[str], int, float]:
    """``stevedore-server run`` while a socket listens on its HTTP or gRPC port; what it printed, that port and
    how long it took."""
    port, grpc_port = free_ports(2)
    taken = port if which == "http" else grpc_port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        started = time.monotonic()
        result = HERE.run(
            "stevedore-server", "run", "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port),
            "--plugins", "stevedore-sklearn-logreg", "--log-level", "info", check=False, timeout=120,
        )  # fmt: skip
    return result, taken, time.monotonic() - started


def test_a_busy_http_port_stops_run_before_any_model_loads_as_a_busy_grpc_port_does() -> None:
    result, port, took = run_with_port_taken("http")
    grpc_result, _, _ = run_with_port_taken("grpc")

    output = result.stdout + result.stderr
    assert f"HTTP cannot listen on 127.0.0.1:{port}: port {port} is in use" in output, describe(result)
    assert "choose another port with --port" in output
    assert not MODEL_LOADED.search(output), describe(result)  # found before any model loaded
    assert "Traceback" not in output and "Errno" not in output
    assert took < 30
    assert result.returncode == grpc_result.returncode == 1, describe(grpc_result)


@pytest.mark.parametrize("host", ["no-such-host.invalid", "192.0.2.1"])  # a name that does not resolve; TEST-NET-1
def test_a_host_that_is_no_address_of_this_machine_points_at_host(host: str) -> None:
    port, grpc_port = free_ports(2)
    result = HERE.run(
        "stevedore-server", "run", "--host", host, "--port", str(port), "--grpc-port", str(grpc_port),
        "--plugins", "stevedore-sklearn-logreg", check=False, timeout=60,
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert f"HTTP cannot listen on {host}:{port}:" in output, describe(result)
    assert "(--host chooses another address)" in output and "--port" not in output, describe(result)
    assert "Traceback" not in output and not MODEL_LOADED.search(output)
    assert result.returncode == 1, describe(result)
