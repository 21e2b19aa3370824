"""Running jobs: each in a spawned process of its own, in a process group of its own, up to ``max_jobs`` at once.

    jobs = Jobs(settings, registry); jobs.start() ... jobs.submit(model, params) ... jobs.close()

This module is the jobs' API and lifecycle (submit, read, cancel, recover,
close). The rest is built up below it: ``context`` (what every part shares),
``artifacts`` (the versions trainings make), ``supervisor`` (a thread per
running job), ``dispatcher`` (the queue), ``launch`` (a job's process).

A dispatcher thread claims queued jobs from the store (a conditional UPDATE,
so a job is never started twice, even by several servers sharing the
database) and starts each in a ``multiprocessing`` spawn process running
``child.run_job`` (a model in worker processes: in a process of their
interpreter, ``child.run_in_worker``, which loads the model itself). A
supervisor thread per running job reads what the job sends through its pipe
(progress, log lines, result or error) and writes it to the store, then reads
the process's exit status: a job that raised, or whose process died, ends
failed with the reason. The store is written by the server only, never by the
job's process, so a job needs no database driver, and a job killed halfway
leaves no half-written transaction.

A job is a training (``Predictor.train``) or a long predict. A training that
returns ``{"artifact": PATH}`` in its workdir makes a new version: its
artifact is kept under the state directory, the version is served here
through ``serve_trained`` (the app's, by the model repository), then recorded
in the store, where every server process finds it (``versions``: the
dispatcher follows the recorded versions, at startup and on every round).

A job records the key that started it (``started_by``, its id: never the
key). ``get``, ``find``, ``logs`` and ``cancel`` answer for a ``Viewer``:
every job (an admin, the server itself, anyone with keys off), or the jobs of
one key, to which another key's job is no job at all (NotFound). At most
``max_queued_jobs`` jobs wait to run (``JobQueueFull`` beyond).

Cancel: SIGTERM to the job's process group, SIGKILL after ``job_grace_period``.
At startup, jobs left ``running`` by a server process that is gone become
``interrupted`` and their process group is stopped; at shutdown, the running
jobs are stopped and marked ``interrupted``."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from stevedore_server.base import tracing
from stevedore_server.base.errors import Conflict, JobQueueFull, NotFound
from stevedore_server.base.pids import alive, started_at, stop_group

from .dispatcher import POLL_INTERVAL, JobDispatcher
from .launch import START_TOLERANCE, leftover_of, parse_owner
from .records import EVERY_JOB, FINISHED, Job, JobState, Viewer

logger = logging.getLogger("stevedore.jobs")


KIND_TRAIN = "train"
#: Seconds a new version made by a training gets to load and self-test.
SERVE_TIMEOUT = 600.0


class Jobs(JobDispatcher):
    """The jobs of one server process (see the module's docstring)."""

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

    def submit(
        self, model: str, version: str, params: Any, kind: str = KIND_TRAIN, started_by: str | None = None
    ) -> Job:
        """Queue a job of ``kind`` (``train``, or ``predict`` for a long prediction) on valid parameters, for the
        key ``started_by`` (its id; None with keys off); JobQueueFull once ``max_queued_jobs`` jobs wait.

        The count and the insert are two statements: clients racing past the bound at once may each queue one (a
        bound on the queue's growth, not an exact count)."""
        self.check_room()
        # The request's trace context (``submit`` runs in it): the job's spans, in its process, link to it.
        job = self.store.create(model, version, str(kind), params, started_by, tracing.carrier() or None)
        logger.info("job %s queued: %s model %s version %s", job.id, kind, model, version)
        self.wake.set()
        return job

    def check_room(self) -> None:
        """JobQueueFull (429) once ``max_queued_jobs`` jobs wait: what a route asks before it reads a job's body."""
        limit = self.settings.max_queued_jobs
        queued = self.store.count_queued() if self._readable() else 0  # asking must not make a database
        if queued >= limit:
            raise JobQueueFull(f"{limit} jobs are queued already (max_queued_jobs); try again later")

    def get(self, job_id: str, viewer: Viewer = EVERY_JOB) -> Job:
        """The job; NotFound for no such job, and for one ``viewer`` may not see (as if there were none)."""
        job = self.store.get(job_id) if self._readable() else None
        if job is None or not viewer.sees(job):
            raise NotFound(f"no job {job_id!r}")
        return job

    def find(
        self, model: str | None, state: str | None, limit: int, offset: int, viewer: Viewer = EVERY_JOB
    ) -> list[Job]:
        return self.store.find(model, state, limit, offset, viewer) if self._readable() else []

    def logs(self, job_id: str, after: int, limit: int, viewer: Viewer = EVERY_JOB) -> list[dict[str, Any]]:
        """The job's log lines after the line ``after`` (NotFound for no such job, or one not ``viewer``'s)."""
        self.get(job_id, viewer)
        return list(self.store.logs(job_id, after, limit))

    def cancel(self, job_id: str, viewer: Viewer = EVERY_JOB) -> Job:
        """Cancel a queued job at once, or stop a running one (it ends cancelled); 409 for a finished one, 404 for
        one ``viewer`` may not see."""
        job = self.get(job_id, viewer)
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
