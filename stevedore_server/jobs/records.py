"""What the jobs are, without the database: a job and its states, a version a training made, the database's
default place, and times as the store keeps them. The server imports this at startup; SQLAlchemy (``store``) only
when the jobs' database is first opened."""

from __future__ import annotations

import enum
import socket
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa
from stevedore_server.base.pids import started_at

DATABASE_FILE = "jobs.db"
#: Longest log line kept; a model printing megabytes on one line must not fill the database.
MAX_LOG_LINE = 4000


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED})


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """A stored time with its zone: SQLite hands times back without it, and they are UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def ago(seconds: float) -> datetime:
    return now() - timedelta(seconds=seconds)


def iso(moment: datetime | None) -> str | None:
    """A stored time as ISO 8601 UTC."""
    if moment is None:
        return None
    return aware(moment).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def this_owner(pid: int) -> str:
    """``host:pid:start``: the server process running a job, its start time telling it from a later process
    given the same pid (``jobs.Jobs.recover``)."""
    start = started_at(pid)
    return f"{socket.gethostname()}:{pid}" + (f":{start:.0f}" if start is not None else "")


@dataclass(frozen=True)
class Job:
    """One row of the jobs table."""

    id: str
    model: str
    version: str
    kind: str
    state: JobState
    progress: float
    message: str
    params: Any
    result: Any
    error: str | None
    created: datetime
    started: datetime | None
    finished: datetime | None
    pid: int | None
    pgid: int | None
    owner: str | None
    cancel_requested: bool
    #: The first characters of the digest of the API key that started it (never the key); None with keys off.
    started_by: str | None
    #: The trace context (W3C headers) of the request that started it, which its spans link to; None untraced.
    trace: dict[str, str] | None = None

    @classmethod
    def of(cls, row: sa.Row[Any]) -> Job:
        values = dict(row._mapping)
        values["state"] = JobState(values["state"])
        return cls(**values)

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        end = aware(self.finished) if self.finished is not None else now()
        return round((end - aware(self.started)).total_seconds(), 3)

    def as_dict(self) -> dict[str, Any]:
        """What the API answers of a job."""
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "kind": self.kind,
            "state": str(self.state),
            "progress": self.progress,
            "message": self.message,
            "params": self.params,
            "result": self.result,
            "error": self.error,
            "created": iso(self.created),
            "started": iso(self.started),
            "finished": iso(self.finished),
            "duration": self.duration,
            "pid": self.pid,
            "started_by": self.started_by,
            "links": {"self": f"/jobs/{self.id}", "logs": f"/jobs/{self.id}/logs"},
        }


@dataclass(frozen=True)
class Viewer:
    """Whose jobs a request may see and cancel: every job (an admin, or any caller with keys off), or only those
    the key ``key_id`` started. A viewer of no key and not every job sees none."""

    key_id: str | None
    every: bool

    def sees(self, job: Job) -> bool:
        return self.every or (self.key_id is not None and job.started_by == self.key_id)


#: The server's own view (and any caller's with keys off): every job.
EVERY_JOB = Viewer(None, every=True)


@dataclass(frozen=True)
class TrainedVersion:
    """A version a training made: served by every server process from its kept artifact."""

    model: str
    version: str
    base_version: str
    job_id: str
    #: The artifact's absolute path, under the state directory's ``artifacts/<job id>/``.
    artifact: str
    created: datetime
    #: Its row's number: the versions recorded after one a process has seen are those with a larger one.
    id: int = 0

    @classmethod
    def of(cls, row: sa.Row[Any]) -> TrainedVersion:
        return cls(**row._mapping)


def default_url(state_dir: str | None) -> str:
    """SQLite in ``state_dir``, or in the user's data directory (``platformdirs``)."""
    if state_dir is None:
        import platformdirs

        state_dir = platformdirs.user_data_dir("stevedore-server")
    return f"sqlite:///{Path(state_dir) / DATABASE_FILE}"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (``sqlite:///relative.db``, ``sqlite+pysqlite:////absolute.db?mode=ro``), or None
    for another database or one in memory: read as SQLAlchemy reads it (a test compares the two), without
    importing it."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.split("+", 1)[0] != "sqlite":
        return None
    database = urllib.parse.unquote(rest.partition("/")[2].partition("?")[0])
    return None if database in ("", ":memory:") else Path(database)
