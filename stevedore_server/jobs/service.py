"""Running jobs: each in a spawned process of its own, in a process group of its own, up to ``max_jobs`` at once.

    jobs = Jobs(settings, registry); jobs.start() ... jobs.submit(model, params) ... jobs.close()

A dispatcher thread claims queued jobs from the store (a conditional UPDATE,
so a job is never started twice, even by several servers sharing the
database) and starts each in a ``multiprocessing`` spawn process running
``training.run_job`` (a model in worker processes: in a process of their
interpreter, ``worker.job``, which loads the model itself). A supervisor
thread per running job reads what the job sends through its pipe (progress,
log lines, result or error) and writes it to the store, then reads the
process's exit status: a job that raised, or whose process died, ends failed
with the reason. The store is written by the server only, never by the job's
process, so a job needs no database driver, and a job killed halfway leaves no
half-written transaction.

A job is a training (``Predictor.train``) or a long predict. A training that
returns ``{"artifact": PATH}`` in its workdir makes a new version: its
artifact is kept under the state directory, the version is served here
through ``serve_trained`` (the app's, by the model repository), then recorded
in the store, where every server process finds it (``trained.py``: the
dispatcher follows the recorded versions, at startup and on every round).

Cancel: SIGTERM to the job's process group, SIGKILL after ``job_grace_period``.
At startup, jobs left ``running`` by a server process that is gone become
``interrupted`` and their process group is stopped; at shutdown, the running
jobs are stopped and marked ``interrupted``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import orjson
import platformdirs

from stevedore_server.base.errors import Conflict, NotFound
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings import Settings
from stevedore_server.core.convergence import SharedState, alive, started_at
from stevedore_server.core.registry import Registry
from stevedore_server.processes.predictor import ProcessPredictor

from .child import describe, run_job
from .store import (
    FINISHED,
    Job,
    JobState,
    JobStore,
    TrainedVersion,
    ago,
    aware,
    default_url,
    now,
    sqlite_file,
    this_owner,
)
from .versions import (
    FOLLOW_TIMEOUT,
    ServeTrained,
    TrainedVersions,
    forget_artifact,
    keep_artifact,
    version_of,
    wait_until_followed,
)

logger = logging.getLogger("stevedore.jobs")

#: Seconds between the dispatcher's looks at the queue (jobs submitted to another server process).
POLL_INTERVAL = 1.0
#: Seconds two start times of "the same" process may differ by (``/proc`` gives the boot time to a second; a
#: job's process is forked right after the job is marked started).
START_TOLERANCE = 5.0
#: Seconds between two purges of the jobs past ``job_retention``.
PURGE_INTERVAL = 60.0
#: Seconds between a supervisor's looks at a cancel asked through another server process.
CANCEL_POLL_INTERVAL = 1.0
KIND_TRAIN = "train"
#: Seconds a new version made by a training gets to load and self-test.
SERVE_TIMEOUT = 600.0


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
    #: ``time.monotonic()`` at the start of its process.
    started: float = field(default_factory=time.monotonic)
    supervisor: threading.Thread | None = field(default=None, repr=False)


class Jobs:
    """The jobs of one server process (see the module's docstring)."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        metrics: Metrics | None = None,
        serve_trained: ServeTrained | None = None,
        shared: SharedState | None = None,
    ) -> None:
        self.serve_trained = serve_trained
        #: With ``--workers N``: the workers' files (the repository's), where each marks the trained versions it
        #: has followed.
        self.shared = shared
        self.trained = TrainedVersions(registry, serve_trained, shared) if serve_trained is not None else None
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.url = settings.database_url or default_url(settings.state_dir)
        self.owner = this_owner(os.getpid())
        self.running: dict[str, RunningJob] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closing = False
        self._store: JobStore | None = None
        self.dispatcher = threading.Thread(target=self._dispatch, name="stevedore-jobs", daemon=True)

    # -- the store, opened when first needed ------------------------------

    @property
    def store(self) -> JobStore:
        with self.lock:
            if self._store is None:
                self._store = JobStore(self.url)
            return self._store

    def _store_exists(self) -> bool:
        path = sqlite_file(self.url)
        return path is None or path.exists()

    def state_dir(self) -> Path:
        path = sqlite_file(self.url)
        if self.settings.state_dir is not None:
            return Path(self.settings.state_dir)
        return path.parent if path is not None else Path(platformdirs.user_data_dir("stevedore-server"))

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Recover what a previous server left running and serve the trained versions (only if there is a
        database already), then dispatch."""
        if self._store_exists():
            self.recover()
            self._follow_trained()
        self.dispatcher.start()

    def close(self) -> None:
        """Stop the running jobs (interrupted) and wait for their supervisors."""
        self.closing = True
        self.wake.set()
        if self.dispatcher.is_alive():  # first, so that no job starts after the ones running are listed
            self.dispatcher.join(POLL_INTERVAL + 5)
        with self.lock:
            running = list(self.running.values())
        for entry in running:
            self._stop(entry, "shutdown")
        for entry in running:
            if entry.supervisor is not None:
                entry.supervisor.join(self.settings.job_grace_period + 10)
        if self._store is not None:
            self._store.close()

    def recover(self) -> None:
        """Jobs left running by a server process that is gone: interrupted, their process groups stopped."""
        for job in self.store.running():
            if not self._orphaned(job):
                continue
            if self.store.finish(job.id, JobState.INTERRUPTED, error="the server running it stopped"):
                self._count(job, JobState.INTERRUPTED, None)
                self.store.add_log(job.id, "warning", "interrupted: the server running this job stopped")
                logger.warning("job %s (model %s) interrupted: its server stopped", job.id, job.model)
            if job.pgid is not None and leftover_of(job):
                stop_group(job.pgid, self.settings.job_grace_period)

    def _orphaned(self, job: Job) -> bool:
        """Whether the server process that ran ``job`` is gone (only known for one on this host): its pid is
        ours (we are its successor), no process has it, or the one that has it started at another time (the pid
        was given to a later process)."""
        host, pid, start = parse_owner(job.owner or "")
        if host != socket.gethostname() or pid is None:
            return False
        if pid == os.getpid() or not alive(pid):
            return True
        now_started = started_at(pid)
        return start is not None and now_started is not None and abs(now_started - start) > START_TOLERANCE

    # -- the API's operations ----------------------------------------------

    def submit(self, model: str, version: str, params: Any, kind: str = KIND_TRAIN) -> Job:
        """Queue a job of ``kind`` (``train``, or ``predict`` for a long prediction) on valid parameters."""
        job = self.store.create(model, version, str(kind), params)
        logger.info("job %s queued: %s model %s version %s", job.id, kind, model, version)
        self.wake.set()
        return job

    def _readable(self) -> bool:
        """Whether there is a database to read: reading never makes one (a server that ran no job has none)."""
        return self._store is not None or self._store_exists()

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id) if self._readable() else None
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def find(self, model: str | None, state: str | None, limit: int, offset: int) -> list[Job]:
        return self.store.find(model, state, limit, offset) if self._readable() else []

    def logs(self, job_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        """The job's log lines after the line ``after`` (NotFound for no such job)."""
        self.get(job_id)
        return list(self.store.logs(job_id, after, limit))

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or stop a running one (it ends cancelled); 409 for a finished one."""
        job = self.get(job_id)
        if job.state is JobState.QUEUED and self.store.finish(job_id, JobState.CANCELLED, error="cancelled"):
            self._count(job, JobState.CANCELLED, None)
            logger.info("job %s cancelled while queued", job_id)
            return self.get(job_id)
        if job.state in FINISHED:
            raise Conflict(f"job {job_id!r} has already finished: {job.state}")
        self.store.request_cancel(job_id)
        with self.lock:
            entry = self.running.get(job_id)
        if entry is not None:
            self._stop(entry, "cancel")
        return self.get(job_id)

    # -- dispatching ---------------------------------------------------------

    def _dispatch(self) -> None:
        next_purge = 0.0
        while not self.closing:
            self.wake.wait(POLL_INTERVAL)
            self.wake.clear()
            if self.closing or (self._store is None and not self._store_exists()):
                continue
            try:
                self._follow_trained()
                self._start_queued()
                if self.settings.job_retention and time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_INTERVAL
                    self._purge()
            except Exception:
                logger.exception("the job dispatcher failed; it tries again in %s s", POLL_INTERVAL)

    def _follow_trained(self) -> None:
        """Serve the versions trained since the last look (by any server process sharing the store)."""
        if self.trained is not None:
            self.trained.follow(self.store)

    def _purge(self) -> None:
        purged = self.store.purge(ago(self.settings.job_retention))
        if purged:
            retention = self.settings.job_retention
            logger.info("deleted %d jobs finished more than %g s ago (job_retention)", purged, retention)

    def _start_queued(self) -> None:
        with self.lock:
            free = self.settings.max_jobs - len(self.running)
        if free <= 0:
            return
        models = set(self.registry.names())
        for job in self.store.queued(models, free):
            if self.closing:
                return
            if self.store.claim(job.id, self.owner):
                self._launch(job)

    def _launch(self, job: Job) -> None:
        try:
            predictor = self.registry.get(job.model, job.version).predictor
        except Exception as error:
            self.store.finish(job.id, JobState.FAILED, error=f"model not served here: {describe(error)}")
            return
        workdir = self.state_dir() / "jobs" / job.id
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            if isinstance(predictor, ProcessPredictor):
                process, reader = start_in_worker(predictor, job, workdir)
            else:
                process, reader = spawn(predictor, job, workdir)
        except Exception as error:  # the model cannot be pickled, or no process can be started
            logger.error("job %s could not start: %s", job.id, describe(error))
            self.store.finish(job.id, JobState.FAILED, error=f"the job's process could not start: {describe(error)}")
            return
        pid = process.pid or 0
        self.store.started(job.id, pid)
        logger.info("job %s started: model %s, process %s", job.id, job.model, pid)
        entry = RunningJob(job, process, reader)
        entry.supervisor = threading.Thread(target=self._supervise, args=(entry,), name=f"job-{job.id}", daemon=True)
        with self.lock:
            self.running[job.id] = entry
        if self.metrics is not None:
            self.metrics.jobs_running.labels(job.model, job.kind).inc()
        entry.supervisor.start()

    # -- supervising one job -------------------------------------------------

    def _supervise(self, entry: RunningJob) -> None:
        try:
            self._follow(entry)
            entry.process.join()
            self._finish(entry)
        except Exception:
            logger.exception("supervising job %s failed", entry.job.id)
            self.store.finish(entry.job.id, JobState.FAILED, error="the server lost track of the job")
        finally:
            entry.reader.close()
            if self.metrics is not None:
                self.metrics.jobs_running.labels(entry.job.model, entry.job.kind).dec()
            with self.lock:
                self.running.pop(entry.job.id, None)
            self.wake.set()

    def _follow(self, entry: RunningJob) -> None:
        """Read the job's messages until its process closes the pipe; SIGKILL when its grace period is over."""
        next_cancel_check = time.monotonic() + CANCEL_POLL_INTERVAL
        while True:
            if entry.reader.poll(0.2):
                try:
                    data = entry.reader.recv_bytes()
                except (EOFError, OSError):
                    return
                self._handle(entry, data)
            elif not entry.process.is_alive() and not entry.reader.poll(0):
                return
            now = time.monotonic()
            if entry.kill_at is not None and now >= entry.kill_at:
                signal_group(entry.process, signal.SIGKILL)
                entry.kill_at = None
            if entry.stop_reason is None and now >= next_cancel_check:
                next_cancel_check = now + CANCEL_POLL_INTERVAL
                job = self.store.get(entry.job.id)
                if job is not None and job.cancel_requested:  # asked through another server process
                    self._stop(entry, "cancel")

    def _handle(self, entry: RunningJob, data: bytes) -> None:
        message = orjson.loads(data)
        kind = message.get("type")
        if kind == "progress":
            self.store.progress(entry.job.id, message["fraction"], message["message"])
        elif kind == "log":
            self._log(entry, message["level"], message["line"])
        elif kind == "result":
            entry.result, entry.has_result = message["result"], True
        elif kind == "error":
            entry.error = message["error"]

    def _log(self, entry: RunningJob, level: str, line: str) -> None:
        """Keep a line of the job's log, up to ``max_job_log_lines``; then say how many more were dropped."""
        entry.log_lines += 1
        if entry.log_lines <= self.settings.max_job_log_lines:
            self.store.add_log(entry.job.id, level, line)

    def _finish(self, entry: RunningJob) -> None:
        job_id = entry.job.id
        dropped = entry.log_lines - self.settings.max_job_log_lines
        if dropped > 0:
            self.store.add_log(job_id, "warning", f"{dropped} more log lines dropped (max_job_log_lines)")
        signal_group(entry.process, signal.SIGKILL)  # whatever the job left behind in its group
        state, error = outcome(entry)
        result = entry.result if state is JobState.SUCCEEDED else None
        if state is JobState.SUCCEEDED and isinstance(result, dict) and isinstance(result.get("artifact"), str):
            result = {**result, "served_version": self._serve_artifact(entry, result["artifact"])}
        if self.store.finish(job_id, state, result=result, error=error):
            self._count(entry.job, state, time.monotonic() - entry.started)
            level = logging.INFO if state is JobState.SUCCEEDED else logging.WARNING
            logger.log(level, "job %s %s%s", job_id, state, f": {error}" if error else "")

    def _serve_artifact(self, entry: RunningJob, artifact: str) -> str | None:
        """Keep the artifact a training returned, serve it here as a new version, and record it for every server
        process; the new version, or None (and why, in the job's log) if not served."""
        job = entry.job
        state_dir = self.state_dir()
        workdir = (state_dir / "jobs" / job.id).resolve()
        path = (workdir / artifact).resolve()
        try:
            if self.serve_trained is None:
                raise RuntimeError("this server cannot serve new versions")
            if not path.is_relative_to(workdir) or not path.exists():
                raise FileNotFoundError(f"the artifact {artifact!r} is no file in the job's workdir")
            kept_path = keep_artifact(state_dir, job.id, path)
            trained = TrainedVersion(job.model, version_of(job), job.version, job.id, str(kept_path), now())
            try:
                self.serve_trained(trained)
            except Exception:
                forget_artifact(state_dir, job.id)
                raise
            row = self.store.record_trained(trained)
        except Exception as error:
            logger.warning("job %s: its artifact is not served: %s", job.id, describe(error))
            self.store.add_log(job.id, "warning", f"the new version is not served: {describe(error)}")
            return None
        self.store.add_log(job.id, "info", f"serving the new version {trained.version}")
        if not self._followed_by_every_worker(row):
            late = f"not every worker looked at the new version {trained.version} within {FOLLOW_TIMEOUT:g} s"
            self.store.add_log(job.id, "warning", late)
        return trained.version

    def _followed_by_every_worker(self, row: int) -> bool:
        """With ``--workers N``: wait until every worker has looked at the trained version in ``row``."""
        if self.shared is None:
            return True
        return wait_until_followed(self.shared, row, self.settings.workers, lambda: self.closing)

    def _count(self, job: Job, state: JobState, seconds: float | None) -> None:
        """A job that ended, in the metrics; its duration where this process ran it."""
        if self.metrics is None:
            return
        self.metrics.jobs_finished.labels(job.model, job.kind, state).inc()
        if seconds is not None:
            self.metrics.job_seconds.labels(job.model, job.kind, state).observe(seconds)

    def _stop(self, entry: RunningJob, reason: str) -> None:
        """SIGTERM to the job's process group now, SIGKILL after the grace period (its supervisor sends it)."""
        if entry.stop_reason is not None:
            return
        entry.stop_reason = reason
        logger.info("job %s: stopping (%s)", entry.job.id, reason)
        signal_group(entry.process, signal.SIGTERM)
        entry.kill_at = time.monotonic() + self.settings.job_grace_period


def spawn(predictor: Any, job: Job, workdir: Path) -> tuple[JobProcess, Connection]:
    """A spawned process running ``job`` on a copy of ``predictor`` (pickled), and the pipe it answers on."""
    context = multiprocessing.get_context("spawn")
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=run_job, args=(writer, predictor, job.kind, job.params, str(workdir)), name=job.id)
    try:
        process.start()
    except BaseException:
        reader.close()
        raise
    finally:
        writer.close()
    return process, reader


def start_in_worker(predictor: ProcessPredictor, job: Job, workdir: Path) -> tuple[JobProcess, Connection]:
    """A process of the model's worker interpreter that loads the model and runs ``job``, and its socket."""
    popen, connection = predictor.start_job()
    try:
        connection.send_bytes(orjson.dumps({"kind": job.kind, "params": job.params, "workdir": str(workdir)}))
    except OSError:  # it died at once: its exit status says why
        pass
    return StartedProcess(popen), connection


def outcome(entry: RunningJob) -> tuple[JobState, str | None]:
    """The final state of a job whose process has ended, and why it did not succeed."""
    if entry.stop_reason == "cancel":
        return JobState.CANCELLED, "cancelled"
    if entry.stop_reason == "shutdown":
        return JobState.INTERRUPTED, "the server stopped"
    if entry.has_result:
        return JobState.SUCCEEDED, None
    if entry.error is not None:
        return JobState.FAILED, entry.error
    return JobState.FAILED, f"the job's process {exit_reason(entry.process.exitcode)} without a result"


def exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with status {exitcode}"


def signal_group(process: JobProcess, signum: int) -> None:
    """Signal the job's process group (the process alone if it has not made its group yet)."""
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
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), float(parts[2])
    host, _, pid_text = owner.rpartition(":")
    return host, int(pid_text) if pid_text.isdigit() else None, None


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


def stop_group(pgid: int, grace: float) -> None:
    """SIGTERM to a leftover process group, SIGKILL if it is still there after ``grace`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    logger.warning("stopping the process group %s of an interrupted job", pgid)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(-pgid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
