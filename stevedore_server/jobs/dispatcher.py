"""The jobs' dispatcher: a thread that claims queued jobs from the store (a conditional UPDATE, so a job is
never started twice, even by several servers sharing the database), up to ``max_jobs`` at once, starts each in a
process of its own with a supervisor, follows the versions trainings made, and purges old jobs with their
working directories: a job's directory lives as long as its record, so what it wrote there can be looked at
until ``job_retention`` has passed."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from stevedore_server.base.errors import Unavailable
from stevedore_server.processes.predictor import ProcessPredictor

from .child import describe
from .launch import RunningJob, spawn, start_in_worker
from .records import Job, JobState, ago
from .supervisor import JobSupervisor

logger = logging.getLogger("stevedore.jobs")


#: Seconds between the dispatcher's looks at the queue (jobs submitted to another server process).
POLL_INTERVAL = 1.0
#: Seconds between two purges of the jobs past ``job_retention`` (and of the working directories no job needs).
PURGE_INTERVAL = 60.0
#: The name of a job's working directory (its job's id, a UUID): nothing else in the folder is ever removed.
WORKDIR_NAME = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def changed_before(path: Path, moment: float) -> bool:
    """Whether ``path`` was last changed before ``moment`` (``time.time``); False when it is gone."""
    try:
        return path.lstat().st_mtime < moment
    except FileNotFoundError:
        return False


class JobDispatcher(JobSupervisor):
    """The part of the jobs that starts them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dispatcher = threading.Thread(target=self._dispatch, name="stevedore-jobs", daemon=True)
        #: The queued jobs this server, stopping, has said it leaves queued.
        self.held: set[str] = set()

    def _dispatch(self) -> None:
        next_purge = 0.0
        while not self.closing:
            self.wake.wait(POLL_INTERVAL)
            self.wake.clear()
            if self.closing or not self._readable():
                continue
            try:
                self._follow_trained()
                self._start_queued()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_INTERVAL
                    self._purge()
                self.database_up()
            except Unavailable as error:  # said once an outage, not a traceback a second
                self.database_down("dispatching", error)
            except Exception:
                logger.exception("the job dispatcher failed; it tries again in %s s", POLL_INTERVAL)

    def _follow_trained(self) -> None:
        """Serve the versions trained since the last look (by any server process sharing the store)."""
        if self.trained is not None:
            self.trained.follow(self.store)

    def _purge(self) -> None:
        """Delete the jobs past ``job_retention``, then the working directories of jobs the store no longer has."""
        retention = self.settings.job_retention
        if not retention:
            return
        purged = self.store.purge(ago(retention))
        if purged:
            logger.info("deleted %d jobs finished more than %g s ago (job_retention)", purged, retention)
        self._remove_unused_workdirs(time.time() - retention)

    def _remove_unused_workdirs(self, before: float) -> None:
        """Those of jobs purged here or by another server sharing the store, and those servers left that never
        removed any: a directory goes once its job is gone from the store and it has not changed since ``before``
        (the retention's start). A job still listed keeps what it wrote; a directory of a job of another store
        sharing this state directory (another database), changed within the retention, is left alone."""
        try:
            found = {path.name: path for path in self.workdirs().iterdir() if WORKDIR_NAME.fullmatch(path.name)}
        except FileNotFoundError:
            return
        if not found:
            return
        kept = self.store.kept(list(found))
        for name, path in found.items():
            if name not in kept and changed_before(path, before):
                self.remove_workdir(name)

    def _start_queued(self) -> None:
        if self.stopping():
            self._hold_queued()
            return
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

    def _hold_queued(self) -> None:
        """Leave the queued jobs to the next server (or to another one sharing the database): one started now
        would be interrupted at once. Each is said once."""
        for job in self.store.queued(set(self.registry.names()), self.settings.max_jobs):
            if job.id not in self.held:
                self.held.add(job.id)
                logger.info("job %s stays queued: this server is stopping", job.id)

    def _launch(self, job: Job) -> None:
        try:
            predictor = self.registry.get(job.model, job.version).predictor
        except Exception as error:
            self.store.finish(job.id, JobState.FAILED, error=f"model not served here: {describe(error)}")
            return
        workdir = self.workdir(job.id)
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            if self.launcher is not None:
                process, reader = self.launcher(predictor, job, workdir)
            elif isinstance(predictor, ProcessPredictor):
                process, reader = start_in_worker(predictor, job, workdir)
            else:
                process, reader = spawn(predictor, job, workdir, self.settings.tracing)
        except Exception as error:  # the model cannot be pickled, or no process can be started
            logger.error("job %s could not start: %s", job.id, describe(error))
            self.store.finish(job.id, JobState.FAILED, error=f"the job's process could not start: {describe(error)}")
            return
        pid = process.pid
        if pid is not None:  # none for a job elsewhere: no process group here for a successor to stop
            self.until_saved(f"recording the process of job {job.id}", lambda: self.store.started(job.id, pid))
        logger.info("job %s started: model %s, process %s", job.id, job.model, pid if pid is not None else "elsewhere")
        entry = RunningJob(job, process, reader)
        entry.supervisor = threading.Thread(target=self._supervise, args=(entry,), name=f"job-{job.id}", daemon=True)
        with self.lock:
            self.running[job.id] = entry
        if self.metrics is not None:
            self.metrics.jobs_running.labels(job.model, job.kind).inc()
        entry.supervisor.start()
