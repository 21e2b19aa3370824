"""A job's process, from the server's side: started (a spawned process, or one of the model's worker
interpreter), signalled with its process group, and told apart from a stranger given its number later."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from stevedore_server.base.pids import started_at
from stevedore_server.base.serialization import ascii_digits
from stevedore_server.processes.predictor import ProcessPredictor
from stevedore_server.processes.spawn import worker_environment

from .child import JOB_ENV
from .records import Job, aware

logger = logging.getLogger("stevedore.jobs")


#: A job process's first lines: the server's ``sys.path`` (from ``JOB_ENV``), then ``jobs.child.spawned``.
BOOTSTRAP = (
    f"import json, os, sys; sys.path[:] = json.loads(os.environ[{JOB_ENV!r}])['path']; "
    "from stevedore_server.jobs.child import spawned; spawned()"
)

#: Seconds two start times of "the same" process may differ by (``/proc`` gives the boot time to a second; a
#: job's process is forked right after the job is marked started).
START_TOLERANCE = 5.0


class JobProcess(Protocol):
    """A job's process: a ``multiprocessing`` process, or a ``Popen`` seen as one (``StartedProcess``)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def join(self) -> None: ...


class StartedProcess:
    """A ``subprocess.Popen`` with the face of a ``multiprocessing`` process (the exit codes agree: a signal's
    is its number, negated)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen

    @property
    def pid(self) -> int | None:
        return self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def join(self) -> None:
        self.popen.wait()


@runtime_checkable
class RemoteProcess(Protocol):
    """A job's process run elsewhere than on this machine (a Ray actor): signalled through its own means, never
    with ``os.killpg`` (it has no process group here)."""

    def send_signal(self, signum: int) -> None: ...


class JobLauncher(Protocol):
    """Starts a job elsewhere than in a process of this machine (``JobsContext``'s ``launcher``; Ray's, for
    ``stevedore-server ray``): the job's process, and the connection its messages come through, as ``spawn``'s
    (progress, log lines, result or error: the JSON messages of ``child``; a result's artifact in ``workdir``)."""

    def __call__(self, predictor: Any, job: Job, workdir: Path) -> tuple[JobProcess, Connection]: ...


@dataclass
class RunningJob:
    """A job's process as its supervisor sees it."""

    job: Job
    process: JobProcess
    reader: Connection
    #: Why the server stops it: "cancel" or "shutdown"; None while it runs its course.
    stop_reason: str | None = None
    kill_at: float | None = None
    result: Any = None
    error: str | None = None
    has_result: bool = False
    log_lines: int = 0
    #: Log lines (level, line) and the last progress (fraction, message) not written yet: the database was down.
    unsaved_logs: list[tuple[str, str]] = field(default_factory=list)
    unsaved_progress: tuple[float, str] | None = None
    #: ``time.monotonic()`` before which no write of them is tried again.
    save_again_at: float = 0.0
    #: ``time.monotonic()`` at the start of its process.
    started: float = field(default_factory=time.monotonic)
    supervisor: threading.Thread | None = field(default=None, repr=False)


def spawn(predictor: Any, job: Job, workdir: Path, traced: bool = False) -> tuple[JobProcess, Connection]:
    """A process of this interpreter running ``job`` on a copy of ``predictor`` (pickled), and its socket;
    ``traced`` (the ``tracing`` setting): the job's spans are exported from there, linked to ``job.trace``.

    It leads a session of its own from its first instruction (``setsid`` before the interpreter starts): a
    signal to the server's process group (systemd's stop, a terminal's Ctrl+C) never reaches it, and the server
    stops it, as a whole with what it starts, when it means to. It gets the server's ``sys.path``, so that what
    the server imported the predictor from is where the job imports it from."""
    payload = pickle.dumps((predictor, job.kind, job.params, str(workdir)), protocol=pickle.HIGHEST_PROTOCOL)
    ours, theirs = socket.socketpair()
    environment = worker_environment(sys.executable)  # as a model's worker process's: no STEVEDORE_* variable
    orders = {"fd": theirs.fileno(), "path": sys.path, "tracing": traced, **trace_orders(job)}
    environment[JOB_ENV] = orjson.dumps(orders).decode()
    try:
        popen = subprocess.Popen(
            [sys.executable, "-c", BOOTSTRAP], env=environment, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    connection = Connection(ours.detach())
    try:
        connection.send_bytes(payload)
    except OSError:  # it died at once: its exit status says why
        pass
    return StartedProcess(popen), connection


def start_in_worker(predictor: ProcessPredictor, job: Job, workdir: Path) -> tuple[JobProcess, Connection]:
    """A process of the model's worker interpreter that loads the model and runs ``job``, and its socket."""
    popen, connection = predictor.start_job()  # traced as the model's worker processes are (their orders)
    order = {"kind": job.kind, "params": job.params, "workdir": str(workdir), **trace_orders(job)}
    try:
        connection.send_bytes(orjson.dumps(order))
    except OSError:  # it died at once: its exit status says why
        pass
    return StartedProcess(popen), connection


def trace_orders(job: Job) -> dict[str, Any]:
    """What a job's process needs for its spans: the job's id and the trace context of the request it links to."""
    return {"job": job.id, "trace": job.trace}


def signal_group(process: JobProcess, signum: int) -> None:
    """Signal the job's process group (the process alone if it has not made its group yet)."""
    if isinstance(process, RemoteProcess):
        process.send_signal(signum)
        return
    pid = process.pid
    if pid is None:
        return
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        if process.is_alive():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
    except PermissionError:
        logger.warning("no permission to signal the process group %s", pid)


def parse_owner(owner: str) -> tuple[str, int | None, float | None]:
    """Host, pid and start time of a job's ``owner`` (``host:pid:start``, or ``host:pid`` as older servers
    wrote it)."""
    parts = owner.rsplit(":", 2)
    if len(parts) == 3 and ascii_digits(parts[1]) and ascii_digits(parts[2]):
        return parts[0], int(parts[1]), float(parts[2])
    host, _, pid_text = owner.rpartition(":")
    return host, int(pid_text) if ascii_digits(pid_text) else None, None


def leftover_of(job: Job) -> bool:
    """Whether the process group ``job.pgid`` is still the job's: its leader is gone while the group lives on
    (a group's id is never given to a new process while the group exists), or the leader started before the
    job did. A leader started later is a stranger given the same number: left alone, and logged."""
    if job.pgid is None:
        return False
    leader_started = started_at(job.pgid)
    if leader_started is None or job.started is None:
        return True
    if leader_started <= aware(job.started).timestamp() + START_TOLERANCE:
        return True
    logger.warning("job %s: process %s is not its process (it started later); left running", job.id, job.pgid)
    return False
