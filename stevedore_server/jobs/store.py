"""The jobs database: jobs, their log lines and the versions trainings made, with SQLAlchemy Core (SQLite by
default, PostgreSQL by URL).

Every state change is one conditional UPDATE (``WHERE state = ...``), so two
server processes sharing the database never both start, or both finish, one
job: whoever's UPDATE matched a row owns the change. The schema is made and
upgraded by the Alembic migrations in ``migrations/`` when the store opens;
the tables here describe it for the queries (a test checks the two agree)."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stevedore_server.base.errors import Unavailable

from .migrations import upgrade
from .records import EVERY_JOB, MAX_LOG_LINE, Job, JobState, TrainedVersion, Viewer, iso, now, sqlite_file

metadata = sa.MetaData()

#: Job ids asked about in one query (far below SQLite's limit on a statement's parameters).
ID_BATCH = 500


jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False, index=True),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("state", sa.String(20), nullable=False, index=True),
    sa.Column("progress", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("params", sa.JSON),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started", sa.DateTime(timezone=True)),
    sa.Column("finished", sa.DateTime(timezone=True)),
    sa.Column("pid", sa.Integer),
    sa.Column("pgid", sa.Integer),
    #: ``host:pid`` of the server process running the job.
    sa.Column("owner", sa.String(300)),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    #: The first characters of the digest of the API key that started the job; NULL with keys off.
    sa.Column("started_by", sa.String(64), index=True),
    #: The trace context (W3C headers) of the request that started the job, for its spans' link; NULL untraced.
    sa.Column("trace", sa.JSON),
)


job_logs = sa.Table(
    "job_logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("level", sa.String(20), nullable=False),
    sa.Column("line", sa.Text, nullable=False),
)


#: Which job made which version of which model, and where its artifact is kept (no foreign key: a version keeps
#: serving after its job is deleted).
trained_versions = sa.Table(
    "trained_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("base_version", sa.String(200), nullable=False),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("artifact", sa.Text, nullable=False),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("model", "version", name="uq_trained_versions_model_version"),
)


@contextlib.contextmanager
def reachable() -> Iterator[None]:
    """The database's errors of connection (PostgreSQL restarting, a network cut, SQLite locked too long) as
    ``Unavailable``: 503 with Retry-After for a client, a retry for the server's own writes. The driver's words,
    which may name hosts and ports, stay in its cause, for the server's log."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
        raise Unavailable("the jobs database cannot be reached for now; try again shortly") from error


def make_engine(url: str) -> Engine:
    parsed = sa.engine.make_url(url)
    if parsed.drivername == "postgresql":  # psycopg 3 (the `postgres` extra), not SQLAlchemy's default psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def configure(connection: Any, record: Any) -> None:
        # WAL: the API reads while job supervisors write; foreign keys: logs go with their job.
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


class JobStore:
    """The jobs and their logs in one database; every method is blocking (call it off the event loop)."""

    def __init__(self, url: str) -> None:
        path = sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine = make_engine(url)
        with reachable():
            upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        with reachable(), self.engine.connect() as connection:
            yield connection

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """A transaction, committed at the end."""
        with reachable(), self.engine.begin() as connection:
            yield connection

    def _update(self, condition: Any, **values: Any) -> int:
        with self._writing() as connection:
            return connection.execute(jobs.update().where(condition).values(**values)).rowcount

    def create(
        self,
        model: str,
        version: str,
        kind: str,
        params: Any,
        started_by: str | None = None,
        trace: dict[str, str] | None = None,
    ) -> Job:
        row = {
            "id": str(uuid.uuid4()), "model": model, "version": version, "kind": kind,
            "state": JobState.QUEUED.value, "progress": 0.0, "message": "", "params": params,
            "created": now(), "cancel_requested": False, "started_by": started_by, "trace": trace,
        }  # fmt: skip
        with self._writing() as connection:
            connection.execute(jobs.insert().values(**row))
        created = self.get(row["id"])
        if created is None:  # only a database that lost the row just written
            raise RuntimeError(f"job {row['id']} vanished after its insert")
        return created

    def get(self, job_id: str) -> Job | None:
        with self._reading() as connection:
            row = connection.execute(jobs.select().where(jobs.c.id == job_id)).first()
        return None if row is None else Job.of(row)

    def find(
        self,
        model: str | None = None,
        state: str | None = None,
        limit: int = 50,
        offset: int = 0,
        viewer: Viewer = EVERY_JOB,
    ) -> list[Job]:
        """The jobs ``viewer`` sees, newest first."""
        if not viewer.every and viewer.key_id is None:
            return []
        query = jobs.select().order_by(jobs.c.created.desc(), jobs.c.id).limit(limit).offset(offset)
        if model is not None:
            query = query.where(jobs.c.model == model)
        if state is not None:
            query = query.where(jobs.c.state == state)
        if not viewer.every:
            query = query.where(jobs.c.started_by == viewer.key_id)
        with self._reading() as connection:
            return [Job.of(row) for row in connection.execute(query)]

    def count_queued(self) -> int:
        """How many jobs wait to run, of every model."""
        query = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.state == JobState.QUEUED.value)
        with self._reading() as connection:
            return int(connection.execute(query).scalar_one())

    def kept(self, job_ids: list[str]) -> set[str]:
        """Those of ``job_ids`` whose jobs the store still has (the others were purged, or never were)."""
        found: set[str] = set()
        with self._reading() as connection:
            for start in range(0, len(job_ids), ID_BATCH):
                query = sa.select(jobs.c.id).where(jobs.c.id.in_(job_ids[start : start + ID_BATCH]))
                found.update(connection.execute(query).scalars())
        return found

    def queued(self, models: set[str], limit: int) -> list[Job]:
        """The oldest queued jobs of these models."""
        query = jobs.select().where(jobs.c.state == JobState.QUEUED.value, jobs.c.model.in_(models))
        with self._reading() as connection:
            return [Job.of(row) for row in connection.execute(query.order_by(jobs.c.created).limit(limit))]

    def claim(self, job_id: str, owner: str) -> bool:
        """Queued to running, for ``owner``; False when another process claimed (or cancelled) it first."""
        condition = (jobs.c.id == job_id) & (jobs.c.state == JobState.QUEUED.value)
        return self._update(condition, state=JobState.RUNNING.value, started=now(), owner=owner) == 1

    def started(self, job_id: str, pid: int) -> None:
        """The job's process and its process group (the child makes a session of its own, so the two ids agree)."""
        self._update(jobs.c.id == job_id, pid=pid, pgid=pid)

    def progress(self, job_id: str, fraction: float, message: str) -> None:
        running = (jobs.c.id == job_id) & (jobs.c.state == JobState.RUNNING.value)
        self._update(running, progress=fraction, message=message)

    def finish(self, job_id: str, state: JobState, result: Any = None, error: str | None = None) -> bool:
        """Running (or queued) to a final state; False when the job had already finished."""
        condition = (jobs.c.id == job_id) & jobs.c.state.in_([JobState.QUEUED.value, JobState.RUNNING.value])
        values: dict[str, Any] = {"state": state.value, "finished": now(), "result": result, "error": error}
        if state is JobState.SUCCEEDED:
            values["progress"] = 1.0
        return self._update(condition, **values) == 1

    def request_cancel(self, job_id: str) -> None:
        self._update(jobs.c.id == job_id, cancel_requested=True)

    def running(self, owner: str | None = None) -> list[Job]:
        query = jobs.select().where(jobs.c.state == JobState.RUNNING.value)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        with self._reading() as connection:
            return [Job.of(row) for row in connection.execute(query)]

    def add_log(self, job_id: str, level: str, line: str) -> None:
        row = {"job_id": job_id, "time": now(), "level": level, "line": line[:MAX_LOG_LINE]}
        with self._writing() as connection:
            connection.execute(job_logs.insert().values(**row))

    def purge(self, finished_before: datetime) -> int:
        """Delete the jobs that finished before the time, with their logs; how many."""
        old = sa.select(jobs.c.id).where(jobs.c.finished.is_not(None), jobs.c.finished < finished_before)
        with self._writing() as connection:
            connection.execute(job_logs.delete().where(job_logs.c.job_id.in_(old)))
            return connection.execute(jobs.delete().where(jobs.c.id.in_(old))).rowcount

    def record_trained(self, trained: TrainedVersion) -> int:
        """Record ``trained``; its row's number."""
        row = {key: value for key, value in dataclasses.asdict(trained).items() if key != "id"}
        with self._writing() as connection:
            inserted = connection.execute(trained_versions.insert().values(**row))
        key = inserted.inserted_primary_key
        if key is None:  # SQLAlchemy gives it for a single-row insert on SQLite and PostgreSQL alike
            raise RuntimeError("the database did not say which row it recorded the trained version in")
        return int(key[0])

    def trained(self, after: int = 0) -> list[TrainedVersion]:
        """The trained versions recorded after the row ``after``, oldest first."""
        query = trained_versions.select().where(trained_versions.c.id > after).order_by(trained_versions.c.id)
        with self._reading() as connection:
            return [TrainedVersion.of(row) for row in connection.execute(query)]

    def delete_trained(self, row: int) -> bool:
        """Delete the record of a trained version (every server process then stops serving it); False when there
        was none (another process deleted it first)."""
        with self._writing() as connection:
            return connection.execute(trained_versions.delete().where(trained_versions.c.id == row)).rowcount == 1

    def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> Iterator[dict[str, Any]]:
        query = (
            job_logs.select()
            .where(job_logs.c.job_id == job_id, job_logs.c.id > after)
            .order_by(job_logs.c.id)
            .limit(limit)
        )
        with self._reading() as connection:
            rows = connection.execute(query).all()
        for row in rows:
            yield {"id": row.id, "time": iso(row.time), "level": row.level, "line": row.line}
