"""The showcase as a user gets it: its wheel built, installed, and served by a real ``stevedore-server run``.

``make test`` runs these tests in the repository's ``.venv``, where the showcase is not installed (the other
tests count the models installed there): the wheel goes into a folder of its own that only the processes these
tests start have on ``PYTHONPATH``. Where the showcase is installed (``pip install -e 'contrib/showcase[test]'``),
the tests serve that installation instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from stevedore_server.kit.loopback import LiveServer, free_ports

SHOWCASE = Path(__file__).resolve().parents[1]
DISTRIBUTION = "stevedore-showcase"
#: Seconds the server gets to load and self-test the two models.
STARTUP_TIMEOUT = 120.0
#: What a build leaves in a source tree, and the tests: not part of the wheel's source.
NOT_SOURCE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "tests")


def installed_here() -> bool:
    try:
        distribution(DISTRIBUTION)
    except PackageNotFoundError:
        return False
    return True


def run(*command: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; a failure shows what it printed."""
    result = subprocess.run([str(part) for part in command], env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def showcase_site(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The folder the showcase's wheel is installed into; None when this environment has it installed.

    Built offline: without build isolation, with the setuptools of this environment (the test extras bring it)."""
    if installed_here():
        return None
    root = tmp_path_factory.mktemp("showcase")
    source = shutil.copytree(SHOWCASE, root / "source", ignore=NOT_SOURCE)  # setuptools writes into the tree
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
    run(*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", root / "wheels", source)
    (wheel,) = (root / "wheels").glob("*.whl")
    run(*pip, "install", "--quiet", "--no-deps", "--no-index", "--target", root / "site", wheel)
    return root / "site"


@pytest.fixture(scope="session")
def showcase_env(showcase_site: Path | None) -> dict[str, str]:
    """The environment of the commands the tests run: the showcase installed, no ``STEVEDORE_*`` settings of the
    developer's (an API key would refuse the documented commands)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STEVEDORE_")}
    env["PYTHONUNBUFFERED"] = "1"
    if showcase_site is not None:
        env["PYTHONPATH"] = str(showcase_site)
    return env


@pytest.fixture(scope="session")
def showcase_server(showcase_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``stevedore-server run --plugins stevedore-showcase`` on free loopback ports, ready; stopped by its pid."""
    port, grpc_port = free_ports(2)
    command = [sys.executable, "-m", "stevedore_server", "run", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--grpc-port", str(grpc_port), "--plugins", DISTRIBUTION]
    log_path = tmp_path_factory.mktemp("showcase-server") / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, env=showcase_env, stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(process, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", log_path, log)
    try:
        status, body = server.wait_until_serving(STARTUP_TIMEOUT)
        if status != 200:
            raise AssertionError(f"the showcase is not ready ({status}): {body}\n{server.log()}")
        yield server
    finally:
        server.stop()
