"""The process entry point of ``stevedore-server run``: uvicorn, stopping so that no accepted request is lost.

With one worker this process serves; with several, uvicorn's supervisor
starts them and each serves. Either way every serving process runs a
``DrainingServer`` of the app that ``app_from_env`` makes from the
``STEVEDORE_*`` variables. On SIGTERM (or SIGINT) it:

1. marks itself draining at once: readiness answers 503 (gRPC health
   NOT_SERVING) and every response says ``Connection: close``;
2. keeps serving for ``shutdown_delay`` seconds, while load balancers take it
   out of rotation;
3. refuses new gRPC calls (UNAVAILABLE) and lets those in flight finish
   (``grpc_server``); meanwhile it stops new handshakes on the HTTP listening
   socket (Linux), takes the connections already waiting in its backlog, and
   closes it: a client that came too late is refused, none is reset;
4. gives connections that have sent no request yet a moment to send one;
5. lets in-flight requests finish (``graceful_timeout``), runs the lifespan
   shutdown, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

from stevedore_server.base.errors import StevedoreError
from stevedore_server.base.lifecycle import Lifecycle
from stevedore_server.base.logs import lighten_records, logging_config
from stevedore_server.base.metrics import MULTIPROC_ENV, fresh_multiprocess_dir
from stevedore_server.base.settings import Settings
from stevedore_server.core import startup
from stevedore_server.core.convergence import SharedState
from stevedore_server.frontends.grpc_server import GrpcServer, check_port

logger = logging.getLogger("stevedore.process")

#: What every serving process serves: the app of the settings in its ``STEVEDORE_*`` variables.
APP_FACTORY = "stevedore_server.frontends.app:app_from_env"
#: Seconds for handshakes already past their SYN to complete once new ones are refused: a round trip, with room.
HANDSHAKE_TIME = 0.1
#: Seconds a connection that has sent no request yet (fresh from the backlog, or idle keep-alive) gets to send one.
FIRST_REQUEST_GRACE = 1.0
#: How often the shutdown looks again at what it waits for.
POLL_INTERVAL = 0.01

#: ``setsockopt`` option of a classic BPF socket filter (``<asm-generic/socket.h>``; Python has no name for it).
SO_ATTACH_FILTER = 26
SYN, ACK = 0x02, 0x10
#: A socket filter dropping every segment that opens a handshake (SYN without ACK) and keeping every other.
#: A TCP socket's filter sees the segment from its TCP header, whose byte 13 holds the flags. The listener runs
#: it on SYNs and on the ACK that completes a handshake: dropping every segment would also drop the ACKs of
#: handshakes under way, whose clients, connected as far as they know, would then be reset.
REFUSE_NEW_HANDSHAKES = (
    (0x30, 0, 0, 13),  # BPF_LD | BPF_B | BPF_ABS: A = flags
    (0x54, 0, 0, SYN | ACK),  # BPF_ALU | BPF_AND | BPF_K
    (0x15, 0, 1, SYN),  # BPF_JMP | BPF_JEQ | BPF_K: a SYN alone goes on, any other segment skips one
    (0x06, 0, 0, 0),  # BPF_RET | BPF_K: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # BPF_RET | BPF_K: keep, whole
)


def serve(settings: Settings) -> None:
    """Serve with ``settings`` until SIGTERM or SIGINT, then drain and return (exit 0).

    A startup error found before any worker starts is raised as a ``StevedoreError``.
    """
    preflight(settings)
    os.environ.update(settings.to_env())  # every serving process reads its settings from the environment
    config = ServerConfig(settings)
    if settings.workers == 1:
        serve_here(config)
        return
    metrics_configured = MULTIPROC_ENV in os.environ
    metrics_dir = fresh_multiprocess_dir()
    os.environ[MULTIPROC_ENV] = str(metrics_dir)  # before any worker imports prometheus_client
    shared_dir = SharedState.create_for_workers()  # where the workers agree on the models loaded
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

    The gRPC port must be free; duplicates and unknown hooks need no model loaded; ``--strict`` needs the full load.
    """
    check_port(settings)
    if settings.strict:
        startup.build_server(settings, startup.load(settings))
        return
    startup.find(settings)


def exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def freeze_heap() -> None:
    """Move every object the startup left (libraries, models) to the garbage collector's permanent generation.

    Measured by ``benchmarks/micro/heap_freeze.py``: delete this when full collections come close without it.

    Under load, the objects of requests in flight outlive young collections and
    pile up in the oldest generation, which then triggers full collections. Each
    walked the whole heap: about 75 ms with the example plugin, a stall of the
    event loop that showed as the p99 of the batching benchmark, several times a
    second. Frozen objects are still freed when their last reference goes; only
    cycles among them are never collected. The startup leaves almost none (40
    objects with the example plugin), so no collection is run first.
    """
    gc.freeze()
    logger.info("startup heap frozen: %d objects left out of garbage collection (gc.freeze)", gc.get_freeze_count())


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration for ``settings``, and the flag that the whole service is stopping."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            APP_FACTORY,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            log_config=logging_config(settings.log_level, settings.log_format),
            access_log=False,  # the server writes its own, with request ids
            lifespan="on",
            timeout_graceful_shutdown=settings.graceful_timeout,  # type: ignore[arg-type]  # seconds, any number
        )
        self.settings = settings
        # Set by the supervisor before it stops every worker; workers get it when they are spawned.
        # Only with workers: a semaphore of the spawn context starts multiprocessing's resource tracker, a process
        # of its own (about 10 MiB), which one worker has no use for.
        self.service_stopping = multiprocessing.get_context("spawn").Event() if settings.workers > 1 else None


class DrainingServer(uvicorn.Server):
    """uvicorn's server, stopping without leaving any connection it accepted unanswered (see the module)."""

    config: ServerConfig
    #: The gRPC front end, once started (``--grpc-port``).
    grpc: GrpcServer | None = None

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        lighten_records()
        # uvicorn re-raises the SIGTERM it handled once it has drained; ending there makes that a clean exit 0.
        signal.signal(signal.SIGTERM, exit_cleanly)
        super().run(sockets)

    @property
    def state(self) -> dict[str, Any]:
        """The app's lifespan state, with its ``Lifecycle``; empty until the lifespan starts."""
        lifespan = getattr(self, "lifespan", None)
        return lifespan.state if lifespan is not None else {}

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        settings = self.config.settings
        if self.should_exit:  # the lifespan failed
            return
        if settings.grpc_port:
            self.grpc = GrpcServer(settings, self.state)
            try:
                await self.grpc.start()
            except StevedoreError as error:
                logger.error("%s", error)
                self.started, self.should_exit = False, True
                await self.lifespan.shutdown()
                return
        if settings.freeze_heap:
            freeze_heap()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.drain(signal.Signals(sig).name)
        super().handle_exit(sig, frame)

    def drain(self, reason: str) -> None:
        lifecycle: Lifecycle | None = self.state.get("lifecycle")
        if lifecycle is None or lifecycle.draining:
            return
        lifecycle.drain()
        delay = self.config.settings.shutdown_delay
        # In a context of its own: a signal handler runs in whichever request's was current, and its id would show.
        contextvars.Context().run(
            logger.info,
            "%s: draining; not ready, serving with Connection: close for %gs more, then refusing new connections; "
            "in-flight requests finish",
            reason, delay,
        )  # fmt: skip

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        settings = self.config.settings
        self.drain("stopping")  # when the stop came from no signal
        await self.wait(settings.shutdown_delay)
        grpc_stopped = self.grpc.stop(settings.graceful_timeout) if self.grpc else None
        await self.stop_accepting()
        await self.wait_for_first_requests()
        if grpc_stopped is not None:  # gRPC calls in flight finish, while HTTP ones go on, before the models stop
            await grpc_stopped
        await super().shutdown(sockets)  # the rest as uvicorn does: in-flight requests, then the lifespan
        if settings.freeze_heap:
            gc.unfreeze()

    async def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, unless a second Ctrl+C forces the exit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.force_exit and loop.time() < deadline:
            await asyncio.sleep(min(0.1, deadline - loop.time()))

    async def stop_accepting(self) -> None:
        """Close the listening sockets without resetting the connections in their backlog: those are served.

        Closing a listener resets every connection still in its backlog. So new
        handshakes are stopped first, the loop stops accepting while a copy of
        each listener keeps it open, the handshakes under way complete, and the
        backlog is taken before the copies close.
        """
        listeners = [copy_of(listener) for server in self.servers for listener in server.sockets or ()]
        try:
            # Workers share one listening socket: only a stop of them all may stop its handshakes.
            stopping = self.config.service_stopping
            if stopping is None or stopping.is_set():
                refuse_new_handshakes(listeners)
            for server in self.servers:
                server.close()
            await asyncio.sleep(HANDSHAKE_TIME)
            waiting = [connection for listener in listeners for connection in take_backlog(listener)]
        finally:
            for listener in listeners:
                listener.close()
        loop = asyncio.get_running_loop()
        for connection in waiting:
            try:
                await loop.connect_accepted_socket(self.make_protocol, connection)
            except OSError as error:  # its client is gone already
                logger.warning("a connection taken from the backlog could not be served: %s", error)
                connection.close()
        if waiting:
            logger.info("took %d connections from the backlog before closing it", len(waiting))

    def make_protocol(self) -> asyncio.Protocol:
        """A connection's protocol, as uvicorn makes it for the connections it accepts."""
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        return protocol

    async def wait_for_first_requests(self) -> None:
        """Give each connection that has sent no request yet a moment to send one (answered, with Connection:
        close); uvicorn's own shutdown closes such a connection at once, and a request already on its way there
        would meet a reset."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_REQUEST_GRACE
        while not self.force_exit and loop.time() < deadline:
            if not any(awaits_request(connection) for connection in self.server_state.connections):
                return
            await asyncio.sleep(POLL_INTERVAL)


def awaits_request(connection: Any) -> bool:
    """Whether a connection of uvicorn's has no request to answer: none came yet, or the last one is answered."""
    cycle = getattr(connection, "cycle", None)
    return cycle is None or bool(cycle.response_complete)


def copy_of(listener: socket.socket) -> socket.socket:
    """A socket of its own on a listener of the loop's (which closes its own): it keeps the listener open."""
    return socket.socket(fileno=os.dup(listener.fileno()))


def refuse_new_handshakes(listeners: Sequence[socket.socket]) -> None:
    """Attach ``REFUSE_NEW_HANDSHAKES`` to each listener: a client's SYN goes unanswered until the socket closes,
    then is refused. Linux only; elsewhere clients that come during the close may be reset."""
    if not sys.platform.startswith("linux"):
        return
    instructions = [SocketFilter(*instruction) for instruction in REFUSE_NEW_HANDSHAKES]
    program = (SocketFilter * len(instructions))(*instructions)  # referenced by the option, alive until set
    option = bytes(SocketFilterProgram(len(instructions), program))
    for listener in listeners:
        try:
            listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, option)
        except OSError as error:
            logger.warning("new connections may be reset while the server stops: no socket filter: %s", error)


def take_backlog(listener: socket.socket) -> list[socket.socket]:
    """Accept every connection waiting in ``listener``'s backlog, without blocking."""
    listener.setblocking(False)
    taken: list[socket.socket] = []
    while True:
        try:
            connection, _ = listener.accept()
        except ConnectionAbortedError:  # reset by its client while it waited
            continue
        except BlockingIOError:
            return taken
        except OSError as error:  # out of file descriptors: what is left waiting is reset
            logger.error("could not take every connection waiting in the backlog: %s", error)
            return taken
        connection.setblocking(False)
        taken.append(connection)


class SocketFilter(ctypes.Structure):
    """One classic BPF instruction: ``struct sock_filter``."""

    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SocketFilterProgram(ctypes.Structure):
    """``struct sock_fprog``: the instructions' count and address."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SocketFilter))]


class DrainingProcess(multiprocess.Process):
    """One of uvicorn's worker processes, serving with a ``DrainingServer``."""

    config: ServerConfig

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(self.config)
        return self._server


class Supervisor(multiprocess.Multiprocess):
    """uvicorn's supervisor of worker processes, each serving with a ``DrainingServer``."""

    config: ServerConfig

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
