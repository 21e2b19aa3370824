"""Servers on a loopback port, for tests (the fixtures of ``stevedore_server.pytest_plugin``).

- ``LiveServer``: a real ``stevedore-server run`` process serving installed
  plugins, started and stopped by its pid.
- ``ThreadServer``: an app of this process, served by uvicorn on a thread of
  its own over a real loopback socket: predictor instances that are no entry
  point, served from a test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stevedore_server.base.settings import Settings
from stevedore_server.hookspecs import hookimpl
from stevedore_server.predictor import Predictor

#: Seconds a server gets to stop after SIGTERM (its graceful shutdown) before SIGKILL.
STOP_GRACE = 15.0
#: Seconds between two looks at a starting server.
POLL_INTERVAL = 0.1


#: Ports are picked from FIRST_PORT up to the kernel's ephemeral range (Linux's default start where the system
#: does not say; macOS and Windows start theirs at 49152). Below 20000 lie the ports a Ray node gives its workers
#: (10002-19999 by default).
FIRST_PORT, EPHEMERAL_START = 20_000, 32_768
#: Ports this process has handed out: a server given one may not have bound it yet.
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    """The first port the kernel gives outgoing connections (Linux says; elsewhere the default is below it)."""
    try:
        low, _high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return max(FIRST_PORT + 1_000, int(low))
    except (OSError, ValueError):
        return EPHEMERAL_START


def free_ports(count: int) -> list[int]:
    """``count`` different ports nothing holds now on any address, never handed out before by this process.

    Picked below the kernel's ephemeral range, not by binding port 0: between the pick and the server's own
    bind, any outgoing connection can take an ephemeral port as its local one, and the server then fails with
    "address already in use" (a Ray node, which binds the machine's address and opens hundreds of connections
    while it starts, did). Each candidate is bound on every address to see that nothing holds it."""
    candidates = [port for port in range(FIRST_PORT, _ephemeral_start()) if port not in _handed_out]
    random.shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("", port))
            except OSError:  # held by something: a server, a connection, one in TIME_WAIT
                continue
        ports.append(port)
        _handed_out.add(port)
        if len(ports) == count:
            return ports
    raise OSError(f"no {count} free ports between {FIRST_PORT} and {_ephemeral_start()}")


def get(url: str) -> tuple[int, Any]:
    """Status and JSON body of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
    except (OSError, ValueError):
        return 0, None


@dataclass
class LiveServer:
    """A real ``stevedore-server run`` on free loopback ports (HTTP and gRPC), by this Python."""

    process: subprocess.Popen[bytes]
    url: str
    #: ``host:port`` of its gRPC server.
    grpc_target: str
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @classmethod
    def start(cls, log_path: Path, *args: str) -> LiveServer:
        """``stevedore-server run ARGS`` on loopback; the environment's ``STEVEDORE_*`` variables apply."""
        port, grpc_port = free_ports(2)
        command = [sys.executable, "-m", "stevedore_server", "run", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--grpc-port", str(grpc_port), *args]
        log = log_path.open("wb")
        environment = os.environ | {"PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
        return cls(process, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", log_path, log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_serving(self, timeout: float) -> tuple[int, Any]:
        """Wait until it answers (its models loaded and self-tested); then ``/readyz``'s status and body.

        Raises ``TimeoutError`` or ``ChildProcessError``, with its log, if it never answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ChildProcessError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            if get(self.url + "/livez")[0] == 200:
                return get(self.url + "/readyz")
            time.sleep(POLL_INTERVAL)
        raise TimeoutError(f"the server did not answer within {timeout:g} s:\n{self.log()}")

    def stop(self) -> int:
        """SIGTERM by pid, SIGKILL if it has not exited ``STOP_GRACE`` seconds later; its exit code."""
        try:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGTERM)
                try:
                    return self.process.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    os.kill(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=STOP_GRACE)
        finally:
            self._log.close()


class Provides:
    """A plugin registering the given predictors through the registration hook."""

    def __init__(self, predictors: Iterable[Predictor]) -> None:
        self.predictors = tuple(predictors)

    @hookimpl
    def stevedore_register_predictors(self, register: Callable[[Predictor], None]) -> None:
        for predictor in self.predictors:
            register(predictor)


@dataclass
class ThreadServer:
    """An app of this process served by uvicorn on its own thread, on a loopback socket of its own."""

    url: str
    server: Any
    thread: threading.Thread

    @classmethod
    def serving(cls, predictors: Iterable[Predictor], settings: Settings | None, timeout: float) -> ThreadServer:
        """The server's app with only ``predictors`` (no entry points), started: they are loaded and self-tested
        as at any startup, and one that fails is served failed (503 with its reason), as ``run`` would."""
        import uvicorn

        from stevedore_server.frontends.app import create_app
        from stevedore_server.plugins.manager import get_plugin_manager

        manager, _ = get_plugin_manager(load_entry_points=False, plugins=[Provides(predictors)])
        app = create_app(settings or Settings(), manager)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        # No logging configuration: this process's logging is pytest's (uvicorn's default would replace it).
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        started = cls(f"http://127.0.0.1:{listener.getsockname()[1]}", server, thread)
        started.wait_until_started(timeout)
        return started

    def wait_until_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the app did not start (its startup failed: see the captured log)")
            time.sleep(POLL_INTERVAL / 10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(STOP_GRACE)
