"""Starting a worker process under an interpreter (the server's or another environment's), hearing from it,
and stopping it with its process group."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from stevedore_server.base.errors import PluginError
from stevedore_server.base.pids import exit_description, kill_group
from stevedore_server.base.settings import ENV_PREFIX, ModelSettings

from .wire import ORDERS_ENV

#: Seconds a worker process gets to import the plugins, load the model and self-test it.
LOAD_TIMEOUT = 600.0
#: Seconds a stopping worker process gets to exit once its socket is closed, before SIGKILL.
STOP_GRACE = 5.0
#: Variables a worker under another interpreter does not inherit: they would mix the two environments.
ENVIRONMENT_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")


def interpreter(model: ModelSettings) -> str:
    """The worker processes' interpreter: ``python`` (a virtual environment directory means its ``bin/python``),
    else the server's own."""
    if model.python is None:
        return sys.executable
    path = Path(model.python).expanduser()
    return str(path / "bin" / "python" if path.is_dir() else path)


def isolated(model: ModelSettings) -> bool:
    """The model runs under an interpreter that is not the server's (so its plugin is found there, not here).

    Paths are compared as given, symbolic links not followed: a virtual environment's ``bin/python`` is often
    a link to the base interpreter, and only its own path makes it that environment."""
    return model.python is not None and os.path.abspath(interpreter(model)) != os.path.abspath(sys.executable)


def worker_environment(python: str) -> dict[str, str]:
    """The server's environment less what a worker (a model's, or a job's) must not have: the metrics directory,
    every ``STEVEDORE_*`` variable (the secret settings, API keys and the database's URL, the others, and a
    client's key: a worker takes its orders from its own variable, set after), and for another interpreter what
    would mix the two environments."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PROMETHEUS_") and not key.startswith(ENV_PREFIX)
    }
    if python != sys.executable:
        for key in ENVIRONMENT_VARIABLES:
            environment.pop(key, None)
    return environment


def start_worker(python: str, orders: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Connection]:
    """A worker process under ``python`` with ``orders``, in a session of its own, and the socket to it."""
    ours, theirs = socket.socketpair()
    environment = worker_environment(python)
    environment[ORDERS_ENV] = orjson.dumps({**orders, "fd": theirs.fileno()}).decode()
    try:
        process = subprocess.Popen(
            [python, "-m", "stevedore_server.worker"],
            env=environment,
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped as a whole, not by the terminal's Ctrl+C
        )
    except OSError as error:
        ours.close()
        raise PluginError(f"the interpreter {python} cannot be started: {error}") from None
    finally:
        theirs.close()
    return process, Connection(ours.detach())


def receive(connection: Connection, process: subprocess.Popen[bytes], timeout: float, doing: str) -> Any:
    """The worker's next message; PluginError if it exits or says nothing in ``timeout`` seconds."""
    if not connection.poll(timeout):
        kill(process)
        raise PluginError(f"the worker process said nothing in {timeout:g} s while {doing}; it was stopped")
    try:
        return pickle.loads(connection.recv_bytes())
    except (EOFError, OSError):
        raise PluginError(f"the worker process {ended(process)} while {doing}") from None


def ended(process: subprocess.Popen[bytes]) -> str:
    """How a worker process ended, in words: 'exited with status 3', 'was killed by SIGKILL'."""
    try:
        code = process.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        kill(process)
        return "closed its socket and hung (it was killed)"
    return exit_description(code)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's process group (the model may have started processes of its own), then reap it."""
    kill_group(process.pid)
    process.wait()
