"""Several serving processes on one port (``--workers N``): uvicorn's supervisor, its workers each a
``DrainingServer``, and the stop of the whole service told to every worker before it is signalled.

The supervisor marks the stop in the workers' shared ``service_stopping`` the
moment a stop signal reaches it, in the signal handler: when the signal went to
the whole process group (systemd, a terminal's Ctrl+C, ``kill -- -PGID``), each
worker got it at the same moment and waits a bounded moment for that mark
before it decides whether the shared socket stops taking connections."""

from __future__ import annotations

import pickle
import signal
import socket
import time
from types import FrameType

import uvicorn
from uvicorn.supervisors import multiprocess

from stevedore_server.base.metrics import forget_process

from .draining import DrainingServer, ServerConfig

#: Seconds between two looks, while a ping waits, at whether the worker has exited.
PING_SLICE = 0.1


class DrainingProcess(multiprocess.Process):
    """One of uvicorn's worker processes, serving with a ``DrainingServer``."""

    config: ServerConfig

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(self.config)
        return self._server

    def _healthcheck(self, timeout: float) -> bool | None:
        """uvicorn's ping, waiting up to ``timeout`` for the answer but giving up as soon as the worker has exited:
        the supervisor holds both ends of the pipe, so a worker that ends mid-ping never closes it, and its
        replacement would wait the whole (long: ``WORKER_HEALTHCHECK``) time-out."""
        try:
            self.parent_conn.send(b"ping")
            deadline = time.monotonic() + timeout
            while not self.parent_conn.poll(PING_SLICE):
                if not self.process.is_alive() or time.monotonic() >= deadline:
                    return None
            started: bool = self.parent_conn.recv()
            return started
        except (OSError, EOFError, pickle.UnpicklingError):
            return None


class Supervisor(multiprocess.Multiprocess):
    """uvicorn's supervisor of worker processes, each serving with a ``DrainingServer``."""

    config: ServerConfig

    def __init__(self, config: ServerConfig, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, self.stop_signal)

    def stop_signal(self, signum: int, frame: FrameType | None) -> None:
        """Mark the whole service stopping now, then let uvicorn's loop (twice a second) stop the workers."""
        if self.config.service_stopping is not None:
            self.config.service_stopping.set()
        self.signal_queue.append(signum)

    def run(self) -> None:
        # uvicorn (0.52 on) makes every worker, restarts included, as its module's ``Process(config, sockets)`` and
        # takes no target any more: ours there is the one way to choose the server its workers run.
        multiprocess.Process = DrainingProcess  # type: ignore[misc]
        super().run()

    def terminate_all(self) -> None:
        # Only now may a worker stop handshakes on the socket all of them share (see DrainingServer.stop_accepting):
        # when one worker stops alone (a restart), the others go on accepting.
        if self.config.service_stopping is not None:
            self.config.service_stopping.set()
        super().terminate_all()

    def keep_subprocess_alive(self) -> None:
        # A worker that died (killed, or crashed) is replaced here; what its live gauges counted (the jobs it
        # ran) goes with it.
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                forget_process(pid)
