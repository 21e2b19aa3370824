"""What every part of one server process's jobs shares: the settings, the models, the metrics, the store
(opened when first needed), the state directory and the jobs' working directories in it, the running jobs with
their lock, and the log followers."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import platformdirs

from stevedore_server.base.errors import Unavailable
from stevedore_server.base.lifecycle import Lifecycle
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings import Settings
from stevedore_server.core.convergence import SharedState
from stevedore_server.core.served_models import Registry

from .followers import LogFollowers
from .launch import JobLauncher, RunningJob
from .records import Job, JobState, default_url, sqlite_file, this_owner
from .versions import TrainedServing, TrainedVersions

T = TypeVar("T")

#: Seconds a write the jobs must not lose (how a job ended) keeps being tried once the server is closing.
CLOSING_PATIENCE = 5.0
#: The folder of the state directory holding the jobs' working directories.
WORKDIRS = "jobs"
#: Longest wait between two tries of such a write while the database is down (short: once it is back, how a job
#: ended is written within it).
RETRY_CEILING = 1.0

if TYPE_CHECKING:
    from .store import JobStore

logger = logging.getLogger("stevedore.jobs")


class JobsContext:
    """The state of one server process's jobs; ``jobs.service.Jobs`` is the whole, built up from it by
    ``ArtifactKeeper`` (new versions), ``JobSupervisor`` (a running job) and ``JobDispatcher`` (the queue)."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        metrics: Metrics | None = None,
        serve_trained: TrainedServing | None = None,
        shared: SharedState | None = None,
        lifecycle: Lifecycle | None = None,
        launcher: JobLauncher | None = None,
    ) -> None:
        self.serve_trained = serve_trained
        #: Where jobs run when not in a process of this machine (``stevedore-server ray``: Ray actors).
        self.launcher = launcher
        #: The server process's: once it drains, no job starts and a job whose process dies is interrupted.
        self.lifecycle = lifecycle
        #: With ``--workers N``: the workers' files (the repository's), where each marks the trained versions it
        #: has followed.
        self.shared = shared
        self.trained = (
            TrainedVersions(registry, serve_trained, self.state_dir, settings.promote_trained, shared)
            if serve_trained is not None
            else None
        )
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.url = settings.database_url or default_url(settings.state_dir)
        self.owner = this_owner(os.getpid())
        self.running: dict[str, RunningJob] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closing = False
        #: The database could not be reached at the last try (said once per outage).
        self.outage = False
        self._store: JobStore | None = None
        self.followers = LogFollowers(settings.max_log_followers)

    def stopping(self) -> bool:
        """Whether the server process is stopping: draining (a stop signal came), or closing the jobs."""
        return self.closing or (self.lifecycle is not None and self.lifecycle.draining)

    @property
    def store(self) -> JobStore:
        """The jobs' database, opened (made, or upgraded) the first time it is needed: SQLAlchemy is imported
        then, not at startup."""
        with self.lock:
            if self._store is None:
                from .store import JobStore

                self._store = JobStore(self.url)
            return self._store

    def until_saved(self, doing: str, write: Callable[[], T]) -> T:
        """``write`` to the store, tried again until the database takes it: what a job did is never lost to an
        outage (PostgreSQL restarting). Given up only once the server is closing and ``CLOSING_PATIENCE`` more
        seconds have passed: the next server then finds the job interrupted."""
        delay, give_up_at = 0.2, None
        while True:
            try:
                written = write()
            except Unavailable as error:
                self.database_down(doing, error)
                if self.closing:
                    give_up_at = give_up_at or time.monotonic() + CLOSING_PATIENCE
                    if time.monotonic() > give_up_at:
                        raise
                time.sleep(delay)
                delay = min(2 * delay, RETRY_CEILING)
                continue
            self.database_up()
            return written

    def database_down(self, doing: str, error: Unavailable) -> None:
        """Say once an outage that the database cannot be reached, with the driver's words (for the operator)."""
        with self.lock:
            first, self.outage = not self.outage, True
        logger.debug("the jobs database cannot be reached (%s)", doing)
        if first:
            cause = str(error.__cause__ or error).strip().splitlines()[0]
            logger.warning(
                "the jobs database cannot be reached (%s): %s; what the jobs report waits for it", doing, cause
            )

    def database_up(self) -> None:
        with self.lock:
            was_down, self.outage = self.outage, False
        if was_down:
            logger.info("the jobs database is reachable again")

    def _readable(self) -> bool:
        """Whether there is a database to read: reading never makes one (a server that ran no job has none)."""
        return self._store is not None or self._store_exists()

    def _store_exists(self) -> bool:
        path = sqlite_file(self.url)
        return path is None or path.exists()

    def state_dir(self) -> Path:
        path = sqlite_file(self.url)
        if self.settings.state_dir is not None:
            return Path(self.settings.state_dir)
        return path.parent if path is not None else Path(platformdirs.user_data_dir("stevedore-server"))

    def workdirs(self) -> Path:
        """The folder of the jobs' working directories."""
        return self.state_dir() / WORKDIRS

    def workdir(self, job_id: str) -> Path:
        """The job's working directory, ``<state dir>/jobs/<job id>``: made when it starts, removed with the job's
        record (``job_retention``)."""
        return self.workdirs() / job_id

    def remove_workdir(self, job_id: str) -> None:
        """Remove the job's working directory (a symbolic link put in its place is refused, and logged)."""
        path = self.workdir(job_id)
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            return
        except OSError as error:
            logger.warning("job %s: its working directory %s could not be removed: %s", job_id, path, error)
            return
        logger.debug("job %s: working directory removed", job_id)

    def _count(self, job: Job, state: JobState, seconds: float | None) -> None:
        """A job that ended, in the metrics; its duration where this process ran it."""
        if self.metrics is None:
            return
        self.metrics.jobs_finished.labels(job.model, job.kind, state).inc()
        if seconds is not None:
            self.metrics.job_seconds.labels(job.model, job.kind, state).observe(seconds)
