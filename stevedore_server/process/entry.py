"""The entry point of ``stevedore-server run``: the settings checked before any worker starts, then one
serving process here or ``--workers N`` under a supervisor, and the run's temporary directories removed at the end."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import sys

from uvicorn.config import STARTUP_FAILURE

from stevedore_server.base import tracing
from stevedore_server.base.errors import StartupError
from stevedore_server.base.exposure import warn_if_open
from stevedore_server.base.metrics import MULTIPROC_ENV, fresh_multiprocess_dir
from stevedore_server.base.settings import Settings
from stevedore_server.core import startup
from stevedore_server.core.convergence import DIRECTORY_ENV, SharedState
from stevedore_server.plugins.builtin import payload_log as payload_sinks
from stevedore_server.processes import isolation

from .draining import DrainingServer, ServerConfig
from .supervisor import Supervisor

logger = logging.getLogger("stevedore.process")


def serve(settings: Settings) -> None:
    """Serve with ``settings`` until SIGTERM or SIGINT, then drain and return (exit 0).

    A startup error found before any worker starts is raised as a ``StevedoreError``.
    """
    preflight(settings)
    warn_if_open(settings)
    config = ServerConfig(settings)
    if settings.workers == 1:
        serve_here(config)
        return
    os.environ.update(settings.to_env())  # every worker reads its settings from the environment (``app_from_env``)
    metrics_configured = MULTIPROC_ENV in os.environ
    metrics_dir = fresh_multiprocess_dir()
    os.environ[MULTIPROC_ENV] = str(metrics_dir)  # before any worker imports prometheus_client
    shared_dir = SharedState.create_for_workers()  # where the workers agree on the models loaded
    os.environ[DIRECTORY_ENV] = str(shared_dir)
    try:
        Supervisor(config, sockets=[config.bind_socket()]).run()
    except KeyboardInterrupt:  # as uvicorn.run: a second Ctrl+C while the workers stop
        pass
    finally:  # the workers have exited: the run's temporary directories go with it (not one a user named)
        shutil.rmtree(shared_dir, ignore_errors=True)
        if not metrics_configured:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def serve_here(config: ServerConfig) -> None:
    """Serve in this process, as ``uvicorn.run`` does with one worker."""
    server = DrainingServer(config)
    try:
        server.run()
    except KeyboardInterrupt:  # the SIGINT uvicorn re-raises once it has drained: the stop that was asked for
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def preflight(settings: Settings) -> None:
    """Fail before serving on what would fail each worker: uvicorn's supervisor would exit 0.

    The ports must be free (before any model loads: loading may take minutes); the selection must name installed
    plugins; duplicates and unknown hooks need no model loaded; ``--strict`` needs the full load.
    """
    tracing.require(settings.tracing)
    payload_sinks.check_target(settings.payload_log)
    check_port(settings.host, settings.port, "HTTP", "--port")
    if settings.grpc_port:
        check_port(settings.host, settings.grpc_port, "gRPC", "--grpc-port", " (0 turns gRPC off)")
    if settings.strict:
        startup.build_server(settings, startup.load(settings))
        return
    environments = isolation.isolated_candidates(settings)
    startup.find(settings, environments=environments)
    startup.check_selected(settings, environments)


def check_port(host: str, port: int, protocol: str, flag: str, more: str = "") -> None:
    """StartupError unless ``port`` is free on ``host``: bound without ``SO_REUSEPORT``, as nothing else may hold
    it (with workers, each binds the gRPC port with that option, so a second server would share it silently).
    Port 0 (any free port) needs no look."""
    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT does not count
        try:
            probe.bind((host, port))
        except OSError as error:
            problem = f"{protocol} cannot listen on {host}:{port}:"
            if error.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"{problem} port {port} is in use: stop what holds it or choose another port with {flag}{more}"
                ) from None
            # A name that does not resolve, or an address not of this machine: the host is wrong, not the port.
            if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:
                raise StartupError(f"{problem} {error.strerror} (--host chooses another address)") from None
            raise StartupError(f"{problem} {error.strerror} ({flag} chooses another port{more})") from None
