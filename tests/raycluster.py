"""A real multi-node Ray cluster on this machine, for the Ray Serve tests: a head and worker nodes, one CPU
each, every node a ``ray start --block`` process in a process group of its own, stopped by that group.

Every node is at 127.0.0.1 (``--node-ip-address``) with the ports Ray would otherwise fix picked free; Ray's
internal servers bind every interface, which it has no option to change. Each node keeps its files in the
cluster's own directories and ``HOME`` (a developer's ``~/.ray`` must not change what the tests see).
The logs are copied next to the test's files when the cluster stops.

The tests ask the cluster questions (``python``) through one driver process, connected once and kept: a fresh
interpreter importing Ray and connecting for each question took seconds of both cores, every second of a
polling loop.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from stevedore_server.kit.loopback import free_ports

from .venvs import INSTALLED, REPO, Venv, build_wheels, copy_source

#: The Ray tier's environment among the setups of the session's head start (``headstart.py``).
RAY_VENV = "ray venv"
#: Seconds a node may take to join; Ray starts several processes per node, slowly on two busy cores.
JOIN_TIMEOUT = 180.0


@dataclass
class Node:
    process: subprocess.Popen[bytes]
    log_path: Path
    #: The raylet's port: how ``ray.nodes()`` tells the node apart.
    manager_port: int
    _log: IO[bytes] = field(repr=False)

    def stop(self, sig: signal.Signals = signal.SIGTERM, grace: float = 10.0) -> None:
        """Stop the node's whole process group (its raylet, workers and replicas): ``sig``, then SIGKILL."""
        try:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self._log.close()


#: A line Ray's driver prints of its own, among a script's output even with ``log_to_driver=False``: the
#: cluster's events, such as a node marked dead, prefixed ``(raylet)`` (or ``(pid=...)``), maybe in colour.
RAY_LINE = re.compile(r"^\s*(\x1b\[[\d;]*m)*\([^)]*\)(\x1b\[[\d;]*m)* ")

#: Begins the driver's answer to a question, a JSON line; any other line is Ray's own.
ANSWER = "@@stevedore-test-answer "

#: The driver: connects to the cluster, then runs each question (a JSON string a line on stdin) with ``ray`` in
#: scope, and answers what it printed, or its traceback.
DRIVER = f"""
import contextlib, io, json, sys, traceback
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
for line in sys.stdin:
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(json.loads(line), {{"ray": ray}})
        answer = {{"output": printed.getvalue()}}
    except BaseException:
        answer = {{"output": printed.getvalue(), "error": traceback.format_exc()}}
    sys.stdout.write({ANSWER!r} + json.dumps(answer) + "\\n")
    sys.stdout.flush()
"""


class DriverLost(AssertionError):
    """The driver exited, or did not answer in time."""


class Driver:
    """A Python process of the cluster's environment connected to it as ``ray``: ``ask`` runs code there."""

    def __init__(self, cluster: RayCluster) -> None:
        self.log_path = cluster.root / "driver.log"
        self._log = self.log_path.open("ab")
        command = [str(cluster.environment.python), "-u", "-c", DRIVER, cluster.address]
        self.process = subprocess.Popen(
            command, env=cluster.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)  # the driver exited

    def ask(self, code: str, timeout: float) -> str:
        """What ``code`` printed; AssertionError if it raised, the driver died or it took over ``timeout`` s."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(code) + "\n")
            self.process.stdin.flush()
        except OSError:
            raise DriverLost(f"the Ray driver is gone:\n{self.log_path.read_text(errors='replace')}") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise DriverLost(f"the Ray driver did not answer in {timeout} s:\n{code}") from None
            if line is None:
                raise DriverLost(f"the Ray driver exited:\n{self.log_path.read_text(errors='replace')}")
            if line.startswith(ANSWER):
                answer = json.loads(line[len(ANSWER) :])
                if "error" in answer:
                    raise AssertionError(f"{code}\n--- raised\n{answer['error']}")
                output: str = answer["output"]
                return output

    def stop(self) -> None:
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:  # it is gone already
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@dataclass
class RayCluster:
    """A head and workers started from ``environment`` (which has Ray installed)."""

    environment: Venv
    root: Path
    #: Variables every node (and so every replica) has.
    variables: dict[str, str] = field(default_factory=dict)
    head_port: int = 0
    dashboard_port: int = 0
    #: The port of Serve's gRPC proxy for a ``stevedore-server ray`` without ``--grpc-port`` (``env``).
    grpc_port: int = field(default_factory=lambda: free_ports(1)[0])
    nodes: list[Node] = field(default_factory=list)
    driver: Driver | None = None
    #: Ray's session files: a short path, as its sockets' paths must fit in 107 bytes.
    ray_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.head_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self, **extra: str) -> dict[str, str]:
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        # ``stevedore-server ray`` starts Serve's gRPC proxy on every interface: on a free port, never the default
        # 8081 (a command's ``--grpc-port`` still wins).
        grpc = {"STEVEDORE_GRPC_PORT": str(self.grpc_port)}
        return self.environment.env(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", **grpc, **self.variables, **extra)

    def start(self, workers: int) -> None:
        self.head_port, self.dashboard_port, client_port = free_ports(3)
        self.nodes.append(self._node("head", "--head", "--port", str(self.head_port),
                                     "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                                     "--dashboard-port", str(self.dashboard_port),
                                     "--ray-client-server-port", str(client_port)))  # fmt: skip
        self.wait_for_nodes(1)
        for _ in range(workers):
            self.add_worker()

    def add_worker(self, *options: str) -> Node:
        """A worker node; ``options`` of ``ray start`` (``--resources``, a JSON object of custom resources)."""
        node = self._node(f"worker{len(self.nodes)}", "--address", self.address, *options)
        self.nodes.append(node)
        self.wait_for_nodes(len(self.alive()))
        return node

    def _node(self, name: str, *args: str) -> Node:
        agent_port, metrics_port, env_agent_port, manager_port = free_ports(4)
        log_path = self.root / f"{name}.log"
        log = log_path.open("wb")
        command = [
            str(self.environment.bin / "ray"), "start", "--block", *args,
            "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.ray_dir),
            "--dashboard-agent-listen-port", str(agent_port), "--metrics-export-port", str(metrics_port),
            "--runtime-env-agent-port", str(env_agent_port), "--node-manager-port", str(manager_port),
            "--disable-usage-stats",
        ]  # fmt: skip
        process = subprocess.Popen(
            command, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return Node(process, log_path, manager_port, log)

    def alive(self) -> list[Node]:
        return [node for node in self.nodes if node.process.poll() is None]

    def python(self, code: str, timeout: float = 120.0) -> str:
        """Run ``code`` in the cluster's environment, connected to the cluster as ``ray``; what it printed. A
        driver that died, never connected (the head not up yet) or hung is replaced at the next question."""
        if self.driver is None:
            self.driver = Driver(self)
        try:
            output = self.driver.ask(code, timeout)
        except DriverLost:
            self.driver.stop()
            self.driver = None
            raise
        return "".join(line for line in output.splitlines(keepends=True) if not RAY_LINE.match(line))

    def node_of(self, node_id: str) -> Node:
        """Our process of the node Ray calls ``node_id``."""
        ports = self.python("for node in ray.nodes():\n    print(node['NodeID'], node['NodeManagerPort'])").split()
        port = int(dict(zip(ports[::2], ports[1::2], strict=True))[node_id])
        return next(node for node in self.nodes if node.manager_port == port)

    def alive_nodes(self) -> int:
        return int(self.python("print(sum(node['Alive'] for node in ray.nodes()))").strip())

    def wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + JOIN_TIMEOUT
        while True:
            for node in self.nodes:
                if node.process.poll() is not None:
                    raise AssertionError(f"a Ray node exited:\n{node.log_path.read_text(errors='replace')}")
            try:
                if self.alive_nodes() >= count:
                    return
            except AssertionError:
                pass  # the head is not up yet
            if time.monotonic() > deadline:
                logs = "\n".join(node.log_path.read_text(errors="replace") for node in self.nodes)
                raise AssertionError(f"{count} Ray nodes did not come up in {JOIN_TIMEOUT}s:\n{logs}")
            time.sleep(1)

    def stop(self) -> None:
        if self.driver is not None:
            self.driver.stop()
            self.driver = None
        for node in reversed(self.nodes):
            node.stop()
        logs = self.ray_dir / "session_latest" / "logs"
        if logs.is_dir():  # kept to read
            shutil.copytree(logs, self.root / "logs", dirs_exist_ok=True)
        shutil.rmtree(self.ray_dir, ignore_errors=True)


def make_ray_venv(root: Path, wheelhouse: Path) -> Venv:
    """A venv in ``root`` with ``stevedore-server[ray,otel]`` (Ray from PyPI; the ``otel`` extra for the traces
    across nodes), the example plugin, the scikit-learn runtime, and the sleeper, a plugin that fails to import
    (broken) and a model that fails its self-test (failing)."""
    sources = [copy_source(INSTALLED / name, root / name) for name in ("sleeper", "broken", "failing")]
    wheels = build_wheels([*sources, copy_source(REPO, root / "core")], root / "wheels", wheelhouse)
    core = next(wheel for wheel in wheels if wheel.name.startswith("stevedore_server-"))
    environment = Venv.create(root / "venv", wheelhouse, root / "wheels")
    environment.install_from_index(
        f"stevedore-server[ray,otel] @ {core.as_uri()}", "stevedore-sklearn-logreg", "stevedore-runtime-sklearn",
        "stevedore-test-sleeper", "stevedore-test-broken", "stevedore-test-failing",
    )  # fmt: skip
    return environment
