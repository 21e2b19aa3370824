"""Models in worker processes of their own, under the server's interpreter or another environment's.

``[models.NAME] processes = N`` runs a model's inferences in N worker
processes (``worker.py``) instead of the server's threads, for CPU-bound
models that hold the GIL; ``python = ...`` runs them under another
interpreter, whose environment has the plugin and its own dependencies.

The server never loads such a model itself. Each worker process finds the
plugins installed where it runs, loads and self-tests the model, and tells the
server what it found; the server serves it through a ``ProcessPredictor``, a
predictor whose ``predict`` and ``score`` are calls to the pool. Everything
else is unchanged: ``loading.load_model`` compiles its schemas and self-tests
it again (through a worker, so the round trip is tested too), and its runtime
validates, admits, batches and counts its calls as any model's, on one thread
a worker process. A worker process that dies or overruns the model's time-out
is replaced; the call it had fails as a model failure (a 500 with an error id).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, fields
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from stevedore_server.base.errors import ClientError, PluginError, StartupError, WorkerFailure
from stevedore_server.base.logs import request_id
from stevedore_server.base.settings import ModelSettings, Settings, env_name
from stevedore_server.base.sources import PluginFailure, PluginSource
from stevedore_server.plugins.discovery import Candidate
from stevedore_server.plugins.loading import LoadedModel, State, load_model

from .predictor import MemoryReport, ProcessPredictor

logger = logging.getLogger("stevedore.isolation")

#: The variable holding a worker's orders (JSON): what to do, the socket's descriptor, the plugins to use.
ORDERS_ENV = "STEVEDORE_WORKER"
#: Pickle protocol of every message (both interpreters are Python 3.11 or later).
PROTOCOL = 5

#: Seconds a worker process gets to import the plugins, load the model and self-test it.
LOAD_TIMEOUT = 600.0
#: Seconds a call may run past the model's time-out before its worker process is killed and replaced.
OVERRUN_GRACE = 5.0
#: Seconds between the looks of a pool's monitor at its processes (deaths while idle, memory).
MONITOR_INTERVAL = 2.0
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
    """The server's environment less what a worker must not have: the metrics directory, the secrets (API keys,
    the database's URL), and for another interpreter what would mix the two environments."""
    secrets = {env_name(item.name) for item in fields(Settings) if item.metadata["secret"]}
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("PROMETHEUS_") and key not in secrets
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
    """How a worker process ended, in words: 'exited with code 3', 'was killed by SIGKILL'."""
    try:
        code = process.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        kill(process)
        return "closed its socket and hung (it was killed)"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's process group (the model may have started processes of its own), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def describe_environment(
    python: str, names: list[str] | None, settings: Settings
) -> tuple[list[Candidate], list[PluginFailure]]:
    """The models named ``names`` (None: all) that the plugins of ``python``'s environment provide, as candidates
    not yet loaded, and the plugins that failed there; a StartupError if the interpreter cannot tell."""
    orders = {"mode": "describe", "names": names, **selection_orders(settings)}
    try:
        process, connection = start_worker(python, orders)
        with connection:
            found = receive(connection, process, LOAD_TIMEOUT, "finding its plugins")
        process.wait(timeout=STOP_GRACE)
    except (PluginError, subprocess.TimeoutExpired) as error:
        which = f"models {', '.join(names)}: " if names else ""
        raise StartupError(f"{which}python = {python}: {error}") from None
    candidates = [
        Candidate(ProcessPredictor.placeholder(name, version), source) for name, version, source in found["models"]
    ]
    return candidates, list(found["failures"])


def selection_orders(settings: Settings) -> dict[str, Any]:
    plugins = list(settings.plugins) if settings.plugins is not None else None
    return {
        "plugins": plugins,
        "disable_plugins": list(settings.disable_plugins),
        "log_level": settings.log_level,
        "log_format": settings.log_format,
    }


def failure(reply: tuple[Any, ...]) -> Exception:
    """The exception of a worker's failed reply: the client's error it sent, or the model's, as WorkerFailure."""
    if reply[0] == "client" and isinstance(reply[1], ClientError):
        return reply[1]
    if reply[0] != "error" or len(reply) != 3:
        return WorkerFailure(f"the worker process answered what the server cannot use: {reply[0]!r}")
    return WorkerFailure(str(reply[1]), reply[2])


@dataclass
class WorkerProcess:
    """One worker process serving one model, and the socket to it."""

    process: subprocess.Popen[bytes]
    connection: Connection
    index: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def resident_bytes(self) -> int | None:
        """The process's resident memory (Linux ``/proc``), or None where it cannot be read."""
        try:
            pages = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return pages * os.sysconf("SC_PAGE_SIZE")

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
        request = pickle.dumps((action, payload, request_id.get()), protocol=PROTOCOL)
        worker = self._take()
        with self._replaced_on_failure(worker, "call"):
            worker.connection.send_bytes(request)
            data = self._reply(worker)
        self.idle.put(worker)
        try:
            reply = pickle.loads(data)
        except Exception as error:  # a result of a class the server's environment lacks
            raise WorkerFailure(f"the server cannot read the model's reply: {type(error).__name__}: {error}") from None
        if reply[0] == "ok":
            return reply[1]
        raise failure(reply)

    def stream(self, payload: Any) -> Generator[Any, None, None]:
        """The items of the model's ``predict_stream`` on ``payload``, from an idle worker process, as they come;
        closing the generator early (the client left) has the worker close the model's generator too."""
        request = pickle.dumps(("stream", payload, request_id.get()), protocol=PROTOCOL)
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
            worker.connection.send_bytes(pickle.dumps(("cancel", None, request_id.get()), protocol=PROTOCOL))
            while self._streamed(worker)[0] == "item":  # items already sent, before it saw the cancel
                pass
        except (WorkerFailure, EOFError, OSError):
            self._replace(worker)
            return False
        return True

    def _take(self) -> WorkerProcess:
        """An idle, living worker process, waiting for one (the runtime admits at most as many calls as there
        are processes, but a replacement may still be loading). One found dead is replaced, not used."""
        while True:
            if self.closed.is_set():
                raise WorkerFailure(f"{self.label} is stopping")
            try:
                worker = self.idle.get(timeout=1.0)
            except queue.Empty:
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


def load_in_processes(candidate: Candidate, settings: Settings) -> LoadedModel:
    """Start the model's worker processes (each loads and self-tests it), then load its ``ProcessPredictor`` as
    any model: a failure anywhere is the model's recorded failure, with why."""
    name, version = candidate.predictor.name, candidate.predictor.version
    own = settings.for_model(name)
    python = interpreter(own)
    orders = {"mode": "serve", "model": name, "version": version, **selection_orders(settings)}
    pool = ProcessPool(python, orders, own.worker_processes, settings.limits_for(candidate.predictor).timeout)
    try:
        description = pool.start()
    except PluginError as error:
        reason = f"worker processes ({python}): {error}"
        logger.error("model %s version %s not served: %s", name, version, reason)
        return LoadedModel(candidate.predictor, candidate.source, State.FAILED, reason, None)
    placement = {
        "kind": "processes",
        "processes": own.worker_processes,
        "python": description["python"]["executable"],
        "python_version": description["python"]["version"],
    }
    predictor = ProcessPredictor(pool, description["declared"], placement)
    predictor.make_pool = functools.partial(ProcessPool, python, size=own.worker_processes, timeout=pool.timeout)
    predictor.created = description["created"]
    predictor.distribution_metadata = description["distribution"]
    predictor.streams = description["streams"]
    loaded = load_model(predictor, candidate.source)
    if not loaded.ready:
        pool.close()
    return loaded


def load_candidate(candidate: Candidate, settings: Settings) -> LoadedModel:
    """Load a model where its settings say it runs: in worker processes, or in the server itself."""
    if settings.for_model(candidate.predictor.name).in_processes:
        return load_in_processes(candidate, settings)
    return load_model(candidate.predictor, candidate.source)


def isolated_candidates(settings: Settings) -> tuple[list[Candidate], list[PluginFailure], set[str]]:
    """The models of the ``[models.NAME]`` tables whose ``python`` is another interpreter, as that interpreter's
    plugins provide them (one start of each interpreter); the names they take from the server's own plugins."""
    by_python: dict[str, list[str]] = {}
    for name, model in settings.models.items():
        if isolated(model):
            by_python.setdefault(interpreter(model), []).append(name)
    candidates: list[Candidate] = []
    failures: list[PluginFailure] = []
    for python, names in by_python.items():
        found, failed = describe_environment(python, names, settings)
        candidates += found
        failures += failed
        missing = set(names) - {candidate.predictor.name for candidate in found}
        for name in sorted(missing):
            source = PluginSource(entry_point=f"[models.{name}] python = {python}")
            failures.append(PluginFailure(source, f"no plugin under {python} provides a model named {name!r}"))
            logger.error("model %s: no plugin under %s provides it", name, python)
    return candidates, failures, {name for names in by_python.values() for name in names}


def environment_settings(environments: list[Path], settings: Settings) -> str:
    """``[models.NAME]`` tables (TOML) running every model of each virtual environment in ``environments``
    there: the settings file of an image with plugins in environments of their own."""
    tables = []
    for environment in environments:
        python = interpreter(ModelSettings(python=str(environment)))
        candidates, failures = describe_environment(python, None, settings)
        if failures:
            raise StartupError(f"{environment}: " + "; ".join(f"{f.source.describe()}: {f.error}" for f in failures))
        for name in sorted({candidate.predictor.name for candidate in candidates}):
            tables.append(f"[models.{toml_key(name)}]\npython = {orjson.dumps(str(environment)).decode()}\n")
    return "\n".join(tables)


def toml_key(name: str) -> str:
    """A model name as a TOML key: bare where it can be (letters, digits, ``-``, ``_``), else quoted."""
    return name if all(c.isalnum() or c in "-_" for c in name) else orjson.dumps(name).decode()
