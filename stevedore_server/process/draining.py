"""One serving process: uvicorn's server with its gRPC server beside it, draining on SIGTERM or SIGINT so
that no accepted request is lost (the steps are in ``process``'s docstring), and the heap frozen after startup."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import logging
import multiprocessing
import signal
import socket
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette

from stevedore_server.base import tracing
from stevedore_server.base.errors import StevedoreError
from stevedore_server.base.lifecycle import Lifecycle
from stevedore_server.base.logs import lighten_records, logging_config
from stevedore_server.base.settings import Settings, read_file
from stevedore_server.frontends.app import ServingProcess, app_from_env, create_app
from stevedore_server.frontends.state import AppState, of_lifespan

from .sockets import copy_of, refuse_new_handshakes, take_backlog

if TYPE_CHECKING:
    from stevedore_server.frontends.grpc_server import GrpcServer

logger = logging.getLogger("stevedore.process")

#: What each of ``--workers N`` serves (uvicorn imports it in every worker): ``serving_app``.
APP_FACTORY = "stevedore_server.process.draining:serving_app"
#: Seconds for handshakes already past their SYN to complete once new ones are refused: a round trip, with room.
HANDSHAKE_TIME = 0.1
#: Seconds a connection that has sent no request yet (fresh from the backlog, or idle keep-alive) gets to send one.
FIRST_REQUEST_GRACE = 1.0
#: Seconds a worker signalled directly waits, from the signal, for the supervisor to say whether the whole service
#: stops (a signal to the process group reaches both at once); past it, the worker stops alone (a restart).
DECISION_TIME = 0.5
#: How often the shutdown looks again at what it waits for.
POLL_INTERVAL = 0.01


def exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serving_app() -> Starlette:
    """The app of each of ``--workers N``: its settings from the environment the supervisor set, and its heap
    released here when a model is dropped."""
    return app_from_env(release_memory=release_frozen_heap)


def release_frozen_heap() -> None:
    """Collect what an unloaded or replaced model left: a frozen heap is thawed for one full collection (objects
    in reference cycles are never collected while frozen), then frozen again."""
    frozen = gc.get_freeze_count()
    if not frozen:
        return
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    logger.info("heap thawed for one collection after a model was dropped: %d objects collected", collected)


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


#: Seconds a worker has to answer the supervisor's ping (every half second), and a replacement started by SIGHUP
#: to be ready, before it is killed as hung. uvicorn's 5 killed busy workers with their requests on a loaded
#: machine, and aborted every rolling restart of workers whose models take longer than that to load.
WORKER_HEALTHCHECK = 60


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration for ``settings``, and the flag that the whole service is stopping."""

    def __init__(self, settings: Settings) -> None:
        # One serving process makes its app from these settings; each of several, from the environment.
        one = functools.partial(create_app, settings, process=ServingProcess(release_memory=release_frozen_heap))
        super().__init__(
            APP_FACTORY if settings.workers > 1 else one,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            log_config=logging_config(settings.log_level, settings.log_format),
            access_log=False,  # the server writes its own, with request ids
            lifespan="on",
            timeout_graceful_shutdown=settings.graceful_timeout,  # type: ignore[arg-type]  # seconds, any number
            # uvicorn counts the connection a request came on among those open: one more, so that
            # ``max_connections`` connections are served and a request on one beyond them gets the 503.
            limit_concurrency=settings.max_connections + 1,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK,
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
    #: ``time.monotonic()`` when it started draining.
    drain_started = 0.0

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        lighten_records()
        tracing.configure(self.config.settings.tracing)
        # uvicorn re-raises the SIGTERM it handled once it has drained; ending there makes that a clean exit 0.
        signal.signal(signal.SIGTERM, exit_cleanly)
        try:
            super().run(sockets)
        finally:  # the spans of the last requests go out before the process ends
            tracing.shutdown()

    @property
    def state(self) -> AppState | None:
        """The app's state, with its ``Lifecycle``; None until the lifespan starts."""
        lifespan = getattr(self, "lifespan", None)
        return of_lifespan(lifespan.state) if lifespan is not None else None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        settings = self.config.settings
        if self.should_exit:  # the lifespan failed
            return
        if settings.grpc_port and self.state is not None:
            from stevedore_server.frontends.grpc_server import GrpcServer  # gRPC is imported where its port is on

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
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_traffic)

    def reload_traffic(self) -> None:
        """SIGHUP: the settings file's ``[traffic.*]`` tables read again and served from now on (the rest of the
        file is read at the next start; with workers, uvicorn's supervisor takes SIGHUP and restarts each worker,
        which reads the whole file)."""
        path, state = self.config.settings.config, self.state
        if state is None or not path:
            logger.warning("SIGHUP: no settings file to read again (--config)")
            return
        try:
            state.server.traffic.reload(read_file(path).get("traffic", {}))
        except StevedoreError as error:
            logger.error("SIGHUP: %s; the traffic names serve as before", error)

    async def on_tick(self, counter: int) -> bool:
        # With workers, the supervisor marks the stop the moment its signal comes: each worker drains within a
        # tick (a tenth of a second), not when the supervisor's loop (twice a second) passes the signal on.
        stopping = self.config.service_stopping
        if stopping is not None and not self.should_exit and stopping.is_set():
            self.drain("the service is stopping")
            self.should_exit = True
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.drain(signal.Signals(sig).name)
        super().handle_exit(sig, frame)

    def drain(self, reason: str) -> None:
        lifecycle: Lifecycle | None = self.state.lifecycle if self.state is not None else None
        if lifecycle is None or lifecycle.draining:
            return
        lifecycle.drain()
        self.drain_started = time.monotonic()
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
        await self.learn_whether_the_service_stops()
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

    async def learn_whether_the_service_stops(self) -> None:
        """With workers: wait up to ``DECISION_TIME`` after the signal for the supervisor's mark that the whole
        service stops. A signal to the process group reached this worker and the supervisor at once; the
        supervisor marks it in its handler, so the wait is short, and only a worker stopped alone waits it all."""
        stopping = self.config.service_stopping
        if stopping is None:
            return
        deadline = self.drain_started + DECISION_TIME
        while not stopping.is_set() and not self.force_exit and time.monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL)

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
