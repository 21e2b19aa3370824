"""One model's worker processes: a call goes to an idle one; one that dies or overruns the model's time-out
is replaced, and the call it had fails as the model's failure."""

from __future__ import annotations

import contextlib
import logging
import pickle
import queue
import subprocess
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from stevedore_server.base import tracing
from stevedore_server.base.errors import PluginError, WorkerFailure
from stevedore_server.base.logs import request_id
from stevedore_server.base.memory import resident_bytes
from stevedore_server.plugins.loading import State

from .predictor import CALL, MemoryReport
from .spawn import LOAD_TIMEOUT, STOP_GRACE, ended, kill, receive, start_worker
from .wire import call_message, failure

#: Seconds a call may run past the model's time-out before its worker process is killed and replaced.
OVERRUN_GRACE = 5.0
#: Seconds between the looks of a pool's monitor at its processes (deaths while idle, memory).
MONITOR_INTERVAL = 2.0

logger = logging.getLogger("stevedore.isolation")


@dataclass
class WorkerProcess:
    """One worker process serving one model, and the socket to it."""

    process: subprocess.Popen[bytes]
    connection: Connection
    index: int
    #: Killed by ``stop_call``: the call that had it must not hand it back to the idle ones.
    stopped: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def resident_bytes(self) -> int | None:
        """The process's resident memory (Linux ``/proc``), or None where it cannot be read."""
        return resident_bytes(self.pid)

    def stop(self) -> None:
        """Close the socket (the worker ends its loop and exits), then SIGKILL its group if it lingers."""
        self.connection.close()
        try:
            self.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            kill(self.process)


class ProcessPool:
    """The worker processes of one model version; ``call`` runs an action on an idle one, blocking."""

    def __init__(self, python: str, orders: dict[str, Any], size: int, timeout: float) -> None:
        self.python = python
        self.orders = orders
        self.size = size
        self.timeout = timeout
        self.idle: queue.Queue[WorkerProcess] = queue.Queue()
        self.workers: dict[int, WorkerProcess] = {}
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.report_memory: MemoryReport | None = None
        self.monitor: threading.Thread | None = None
        #: The worker process of each running call made under a token (``predictor.CALL``), for ``stop_call``.
        self.calls: dict[object, WorkerProcess] = {}

    @property
    def label(self) -> str:
        return f"model {self.orders['model']} version {self.orders['version']}"

    def start(self) -> dict[str, Any]:
        """Start every worker process (they load at once); what the first's loading found. PluginError if one
        fails to start or to load: the pool is then closed."""
        started: list[WorkerProcess] = []
        try:
            for index in range(self.size):
                started.append(self._launch(index))
            descriptions = [self._loaded(worker) for worker in started]
        except BaseException:
            for worker in started:
                worker.stop()
            raise
        for worker in started:
            self._add(worker)
        self.monitor = threading.Thread(target=self._watch, name=f"stevedore-pool-{self.label}", daemon=True)
        self.monitor.start()
        return descriptions[0]

    def start_job(self) -> tuple[subprocess.Popen[bytes], Connection]:
        """A process of this pool's interpreter that loads the model and runs one job (``worker.job``)."""
        return start_worker(self.python, {**self.orders, "mode": "job"})

    def _launch(self, index: int) -> WorkerProcess:
        process, connection = start_worker(self.python, self.orders)
        return WorkerProcess(process, connection, index)

    def _loaded(self, worker: WorkerProcess) -> dict[str, Any]:
        """Wait for ``worker`` to load; its description. PluginError if it fails."""
        description: dict[str, Any] = receive(worker.connection, worker.process, LOAD_TIMEOUT, f"loading {self.label}")
        if description["state"] != State.READY.value:
            raise PluginError(f"in its worker process: {description['reason']}")
        return description

    def _add(self, worker: WorkerProcess) -> None:
        with self.lock:
            self.workers[worker.index] = worker
        self.idle.put(worker)
        logger.info("%s: worker process %d (pid %d) ready", self.label, worker.index, worker.pid)

    def call(self, action: str, payload: Any) -> Any:
        """``action`` on ``payload`` in an idle worker process: its result, or its ClientError raised, or
        WorkerFailure (the model raised; the process died or overran the time-out, and is being replaced)."""
        request = call_message(action, payload, request_id.get(), tracing.carrier())
        worker = self._take()
        token = CALL.get()
        self._running(token, worker)
        try:
            with self._replaced_on_failure(worker, "call"):
                worker.connection.send_bytes(request)
                data = self._reply(worker)
        finally:
            stopped = self._ended(token, worker)
        if stopped:  # killed as its reply came: never handed to another call
            self._replace(worker)
            raise WorkerFailure(f"the worker process (pid {worker.pid}) was killed, as nobody waited for its call")
        self.idle.put(worker)
        try:
            reply = pickle.loads(data)
        except Exception as error:  # a result of a class the server's environment lacks
            raise WorkerFailure(f"the server cannot read the model's reply: {type(error).__name__}: {error}") from None
        if reply[0] == "ok":
            return reply[1]
        raise failure(reply)

    def _running(self, token: object, worker: WorkerProcess) -> None:
        if token is not None:
            with self.lock:
                self.calls[token] = worker

    def _ended(self, token: object, worker: WorkerProcess) -> bool:
        """The call under ``token`` on ``worker`` has ended: whether ``stop_call`` killed its process."""
        if token is None:
            return False
        with self.lock:
            if self.calls.get(token) is worker:
                del self.calls[token]
            return worker.stopped

    def stop_call(self, token: object, why: str) -> None:
        """Kill the worker process running the call made under ``token`` (``cancel = "kill"``: nobody waits for
        its result, ``why``); the call then fails on its thread, and the process is replaced. Nothing if that call
        has ended (its thread may run another request's call by now), or has no process yet. The kill is reaped
        off the caller's thread (the event loop's)."""
        with self.lock:
            worker = self.calls.pop(token, None)
            if worker is None:
                return
            worker.stopped = True
        logger.warning("%s: worker process %d (pid %d) killed: %s, and the model's cancel is kill; a new one is "
                       "starting", self.label, worker.index, worker.pid, why)  # fmt: skip
        threading.Thread(target=kill, args=(worker.process,), name=f"kill-{worker.pid}", daemon=True).start()

    def stream(self, payload: Any) -> Generator[Any, None, None]:
        """The items of the model's ``predict_stream`` on ``payload``, from an idle worker process, as they come;
        closing the generator early (the client left) has the worker close the model's generator too."""
        request = call_message("stream", payload, request_id.get(), tracing.carrier())
        worker = self._take()
        finished = False
        try:
            with self._replaced_on_failure(worker, "stream"):
                worker.connection.send_bytes(request)
                while (reply := self._streamed(worker))[0] == "item":
                    yield reply[1]
            finished = True
        except GeneratorExit:
            finished = self._cancel(worker)
            raise
        finally:
            if finished:
                self.idle.put(worker)
        if reply[0] != "end":
            raise failure(reply)

    @contextlib.contextmanager
    def _replaced_on_failure(self, worker: WorkerProcess, exchange: str) -> Iterator[None]:
        """Replace ``worker`` when the exchange fails: a WorkerFailure raised as it is, a closed socket as one."""
        try:
            yield
        except WorkerFailure:
            self._replace(worker)
            raise
        except (EOFError, OSError):
            self._replace(worker)
            raise WorkerFailure(f"the worker process (pid {worker.pid}) {ended(worker.process)} during the "
                                f"{exchange}; a new one is starting") from None  # fmt: skip

    def _streamed(self, worker: WorkerProcess) -> tuple[Any, ...]:
        data = self._reply(worker)
        try:
            reply: tuple[Any, ...] = pickle.loads(data)
        except Exception as error:
            raise WorkerFailure(f"the server cannot read the model's item: {type(error).__name__}: {error}") from None
        return reply

    def _cancel(self, worker: WorkerProcess) -> bool:
        """Have the worker close the stream; True once it has (the worker is then idle), False if it had to be
        replaced (it did not answer, or died)."""
        try:
            worker.connection.send_bytes(call_message("cancel", None, request_id.get(), {}))
            while self._streamed(worker)[0] == "item":  # items already sent, before it saw the cancel
                pass
        except (WorkerFailure, EOFError, OSError):
            self._replace(worker)
            return False
        return True

    def _take(self) -> WorkerProcess:
        """An idle, living worker process, waiting for one (each may be busy with a call or held by a stream
        between its items, and a replacement may still be loading). One found dead is replaced, not used."""
        waiting = False
        while True:
            if self.closed.is_set():
                raise WorkerFailure(f"{self.label} is stopping")
            try:
                worker = self.idle.get(timeout=1.0) if waiting else self.idle.get_nowait()
            except queue.Empty:
                if not waiting:  # once a call: the sign, in a debug log, of calls queueing for the processes
                    logger.debug("%s: every worker process is busy; waiting for one", self.label)
                waiting = True
                continue
            if worker.process.poll() is None:
                return worker
            logger.error("%s: worker process %d (pid %d) %s while idle; starting a new one",
                         self.label, worker.index, worker.pid, ended(worker.process))  # fmt: skip
            self._replace(worker)

    def _reply(self, worker: WorkerProcess) -> bytes:
        """The worker's reply, unread; WorkerFailure once it overruns the time-out (it is then killed)."""
        if not worker.connection.poll(self.timeout + OVERRUN_GRACE):
            kill(worker.process)
            raise WorkerFailure(
                f"the worker process (pid {worker.pid}) ran past the time-out ({self.timeout:g} s) and was "
                "killed; a new one is starting"
            )
        return worker.connection.recv_bytes()

    def _replace(self, worker: WorkerProcess) -> None:
        """Forget a dead worker process and start its successor, off the caller's thread."""
        with self.lock:
            if self.workers.get(worker.index) is not worker:
                return
            del self.workers[worker.index]
        worker.connection.close()
        if self.report_memory is not None:
            self.report_memory(self.orders["model"], self.orders["version"], worker.index, None)
        if not self.closed.is_set():
            threading.Thread(target=self._restart, args=(worker.index,), daemon=True).start()

    def _restart(self, index: int) -> None:
        """Start worker ``index`` again, retrying with a growing pause while it fails to load."""
        pause = 1.0
        while not self.closed.is_set():
            try:
                worker = self._launch(index)
                self._loaded(worker)
            except PluginError as error:
                logger.error("%s: worker process %d failed to start again: %s", self.label, index, error)
                self.closed.wait(pause)
                pause = min(pause * 2, 60.0)
                continue
            if self.closed.is_set():
                worker.stop()
                return
            self._add(worker)
            return

    def _watch(self) -> None:
        """Replace worker processes that die while idle, and report each one's memory."""
        while not self.closed.wait(MONITOR_INTERVAL):
            for worker in self.processes():
                if worker.process.poll() is not None and self._take_idle(worker):
                    logger.error("%s: worker process %d (pid %d) %s while idle; starting a new one",
                                 self.label, worker.index, worker.pid, ended(worker.process))  # fmt: skip
                    self._replace(worker)
                elif self.report_memory is not None:
                    self.report_memory(self.orders["model"], self.orders["version"], worker.index,
                                       worker.resident_bytes())  # fmt: skip

    def _take_idle(self, dead: WorkerProcess) -> bool:
        """Remove ``dead`` from the idle queue; False if a caller has it (the caller then replaces it)."""
        kept, found = [], False
        while True:
            try:
                worker = self.idle.get_nowait()
            except queue.Empty:
                break
            if worker is dead:
                found = True
            else:
                kept.append(worker)
        for worker in kept:
            self.idle.put(worker)
        return found

    def processes(self) -> list[WorkerProcess]:
        with self.lock:
            return list(self.workers.values())

    def close(self) -> None:
        """Stop every worker process: each sees its socket closed and exits (after the call it has, if any); one
        still there after the grace is killed."""
        self.closed.set()
        workers = self.processes()
        for worker in workers:
            worker.connection.close()
        deadline = time.monotonic() + STOP_GRACE
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill(worker.process)
            if self.report_memory is not None:
                self.report_memory(self.orders["model"], self.orders["version"], worker.index, None)
