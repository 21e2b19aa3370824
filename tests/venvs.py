"""Helpers for the tests that do what a user does: build wheels, make virtual environments, run the server.

Only the wheelhouse is built with network access; every install after that is
``--no-index`` from it, so a missing dependency in the wheelhouse fails the test
instead of being fetched quietly, and each environment installs in seconds.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import venv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from stevedore_server.kit.loopback import LiveServer, free_ports

REPO = Path(__file__).resolve().parents[1]
CONTRIB = REPO / "contrib" / "sklearn_logreg"
#: Source trees of the test plugin distributions.
INSTALLED = Path(__file__).resolve().parent / "installed"

#: Never part of a distribution's source; copying them would also copy another engineer's stale build.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    "*.pyc",
    "build",
    "dist",
    "*.egg-info",
    ".pytest_cache",
    ".tox",
    ".hypothesis",
    ".mypy_cache",
    ".ruff_cache",
    ".venvs",  # the benchmark's venvs, gigabytes
    "wheelhouse",
)

#: Generous: a cold pip cache on a slow CI runner downloads scipy and scikit-learn.
NETWORK_TIMEOUT = 900
COMMAND_TIMEOUT = 300


def run_command(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = COMMAND_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; with ``check``, a failure shows that output in the test report.

    Always with an environment of its own, made before the fork: the head start runs commands on a thread of
    its own, and a child forked while the main thread changes ``os.environ`` would exec with a torn ``environ``
    (EFAULT, "Bad address")."""
    result = subprocess.run(
        [str(arg) for arg in args],
        env=environment_snapshot() if env is None else env,
        cwd=cwd,
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{describe(result)}\nexited {result.returncode}")
    return result


def environment_snapshot() -> dict[str, str]:
    """A copy of ``os.environ`` (retried if another thread changes it while it is copied)."""
    while True:
        try:
            return dict(os.environ)
        except RuntimeError:  # "dictionary changed size during iteration"
            continue


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """A command and everything it printed, for assertion messages."""
    command = " ".join(str(arg) for arg in result.args)
    return f"$ {command}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def offline_env(bin_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a command run in a test venv, cut off from the developer's own setup.

    The outer virtualenv, ``PYTHONPATH`` and ``STEVEDORE_*`` settings would leak
    into the child; pip's configuration could add indexes or find-links that
    hide a gap in the wheelhouse.
    """
    env = {
        key: value
        for key, value in environment_snapshot().items()
        if not key.startswith(("STEVEDORE_", "PIP_", "UV_", "PYTHON")) and key != "VIRTUAL_ENV"
    }
    env |= {
        "UV_NO_CONFIG": "1",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


_uv_cache_lock = threading.Lock()


@functools.cache
def _new_uv_cache() -> Path:
    path = Path(tempfile.mkdtemp(prefix="stevedore-tests-uv-cache-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def uv_cache() -> Path:
    """uv's cache for this test run, deleted when it ends.

    uv takes a wheel it found in a ``--find-links`` directory as immutable, known by its
    file name and directory. The tests build their wheels again in every run, at
    paths that come back (pytest numbers its directories from ``pytest-0`` again
    once they are gone): with uv's cache shared across runs, a venv got the
    stevedore-server wheel of an earlier run, and the tests ran old code.
    """
    with _uv_cache_lock:  # the head start's thread makes venvs too
        return _new_uv_cache()


def copy_source(source: Path, destination: Path) -> Path:
    """A clean copy of a source tree: setuptools writes ``build/`` into the tree it builds."""
    shutil.copytree(source, destination, ignore=NOT_SOURCE)
    return destination


def build_wheelhouse(directory: Path, sources: Sequence[Path], requirements: Sequence[str] = ()) -> Path:
    """Wheels of ``sources`` and of every dependency, plus ``requirements``; the one step that uses the network."""
    run_command(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", directory, *sources, *requirements],
        timeout=NETWORK_TIMEOUT,
    )
    return directory


def build_wheels(
    sources: Sequence[Path], out: Path, wheelhouse: Path, python: Path | str = sys.executable
) -> list[Path]:
    """Build each source's wheel offline (setuptools for the isolated build comes from the wheelhouse)."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.whl"))
    run_command(
        [
            python,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-index",
            "--find-links",
            wheelhouse,
            "--wheel-dir",
            out,
            *sources,
        ],
        env=offline_env(),
    )
    return sorted(set(out.glob("*.whl")) - before)


def plugins_venv(
    root: Path, wheelhouse: Path, plugins: Sequence[str], requirements: Sequence[str], symlinks: bool = False
) -> Venv:
    """A fresh venv in ``root`` with ``requirements`` installed from the wheelhouse and from the wheels of the
    test ``plugins`` (directories of ``tests/installed``), built here."""
    sources = [copy_source(INSTALLED / name, root / name) for name in plugins]
    build_wheels(sources, root / "wheels", wheelhouse)
    environment = Venv.create(root / "venv", wheelhouse, root / "wheels", symlinks=symlinks)
    environment.install(*requirements)
    return environment


def pinned_plugin(root: Path, label: str, pin: str, wheelhouse: Path) -> Path:
    """A directory of the wheels of ``stevedore-test-pinned-LABEL`` (the pinned test plugin, its toolz pinned to
    ``pin``; its model is ``toolz-MAJOR``) and of that toolz (from the index: no wheelhouse holds two)."""
    links = build_wheelhouse(root / f"pinned-{label}", [], [f"toolz=={pin}"])
    source = copy_source(INSTALLED / "pinned", root / f"pinned-src-{label}")
    project = source / "pyproject.toml"
    text = project.read_text().replace('"stevedore-test-pinned"', f'"stevedore-test-pinned-{label}"')
    project.write_text(text.replace('"toolz"', f'"toolz=={pin}"'))
    build_wheels([source], links, wheelhouse)
    return links


@dataclass(frozen=True)
class Venv:
    """A virtual environment made by the ``venv`` module, installed into by uv, only from local wheels unless
    told otherwise (``install_from_index``)."""

    path: Path
    find_links: tuple[Path, ...]

    @classmethod
    def create(cls, path: Path, *find_links: Path, symlinks: bool = False, pip: bool = True) -> Venv:
        # Same interpreter as the test run, so the wheelhouse's binary wheels fit. ``symlinks``: its bin/python a
        # link to that interpreter, as `python3 -m venv` makes it on Linux. ``pip`` comes from the wheelhouse, as
        # uv installs it in a tenth of the time ensurepip takes; the tests that install while serving use it.
        venv.EnvBuilder(with_pip=False, clear=True, symlinks=symlinks).create(path)
        environment = cls(path, find_links)
        if pip:
            environment.install("pip")
        return environment

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def env(self, **extra: str) -> dict[str, str]:
        return offline_env(self.bin, VIRTUAL_ENV=str(self.path), **extra)

    def install(self, *requirements: str) -> None:
        self._uv_install("--no-index", *requirements)

    def install_from_index(self, *requirements: str) -> None:
        """Install with the package index too: for what no wheelhouse holds (Ray, half a gigabyte)."""
        self._uv_install(*requirements, timeout=NETWORK_TIMEOUT)

    def _uv_install(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> None:
        """``uv pip install`` into this venv: what pip installs, ten times as fast (a fresh venv of the core and
        scikit-learn in under 2 s instead of 17). The cache is this run's own (``uv_cache``). Files are copied out
        of it, never linked: a test that edits an installed file must not edit the cache under the next venv."""
        links = [arg for directory in self.find_links for arg in ("--find-links", str(directory))]
        command = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--link-mode", "copy"]
        command += ["--cache-dir", str(uv_cache())]
        run_command([*command, "--python", self.python, *links, *args], env=offline_env(), timeout=timeout)

    def run(
        self,
        command: str,
        *args: str | os.PathLike[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run one of this venv's commands (``python``, ``pip``, a console script)."""
        return run_command([self.bin / command, *args], env=env or self.env(), cwd=cwd, check=check, timeout=timeout)


def free_port() -> int:
    """A port nothing holds now (``free_ports``)."""
    return free_ports(1)[0]


class Server(LiveServer):
    """A real ``stevedore-server run`` of a test venv on loopback ports, stopped by its pid (as the kit's
    ``LiveServer``, which runs this Python's)."""

    @classmethod
    def start(cls, environment: Venv, log_path: Path, *args: str, **env: str) -> Server:  # type: ignore[override]
        """Serve on free loopback ports, HTTP and gRPC (unless ``args`` choose the gRPC port)."""
        port, free_grpc_port = free_ports(2)
        grpc_port = str(free_grpc_port)
        if "--grpc-port" in args:
            grpc_port = args[args.index("--grpc-port") + 1]
        else:
            args = (*args, "--grpc-port", grpc_port)
        log = log_path.open("wb")
        command = [str(environment.bin / "stevedore-server"), "run", "--host", "127.0.0.1", "--port", str(port), *args]
        # A process group of its own, as a service has: a test may signal the whole group, as systemd does.
        process = subprocess.Popen(
            command, env=environment.env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return cls(process, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", log_path, log)

    def signal_group(self, signum: int) -> None:
        """``signum`` to every process of the server's group at once, as systemd's stop or a terminal's Ctrl+C."""
        os.killpg(self.process.pid, signum)

    def wait_for(self, path: str, status: int = 200, deadline: float = 90.0) -> httpx.Response:
        """Poll ``path`` until it answers ``status``; fail with the server's log if it exits or the deadline passes."""
        stop_at = time.monotonic() + deadline
        last: Any = "no answer"
        while time.monotonic() < stop_at:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                response = httpx.get(self.url + path, timeout=5)
            except httpx.TransportError as error:
                last = error
            else:
                if response.status_code == status:
                    return response
                last = f"{response.status_code} {response.text}"
            time.sleep(0.2)
        raise AssertionError(f"GET {path} did not answer {status} within {deadline}s (last: {last}):\n{self.log()}")


def ready_server(environment: Venv, log_path: Path, *args: str, deadline: float = 90.0, **env: str) -> Server:
    """``Server.start``, then ready (``/readyz`` 200); stopped, and the failure raised, if it never is."""
    server = Server.start(environment, log_path, *args, **env)
    try:
        server.wait_for("/readyz", deadline=deadline)
    except AssertionError:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def example_server_at(log_path: Path) -> Iterator[Server]:
    """The real ``stevedore-server run`` of the environment running the tests, serving the example plugin, ready;
    stopped by its pid on the way out."""
    running = Server.start(Venv(Path(sys.prefix), ()), log_path, "--plugins", "stevedore-sklearn-logreg")
    try:
        running.wait_for("/readyz")
        yield running
    finally:
        running.stop()
