"""The jobs database's Alembic migrations: a fresh database, one made by ``create_all`` before migrations
(adopted), the tables the queries use agreeing with the migrations, and several processes upgrading at once.
The same on PostgreSQL is in ``test_jobs_postgres.py``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from stevedore_server.jobs.migrations import config
from stevedore_server.jobs.records import JobState, default_url, now
from stevedore_server.jobs.store import JobStore, job_logs, jobs, make_engine, metadata

#: Each process opens the store at the same moment (a start time given to both).
OPEN_AT_ONCE = """
import sys, time
from stevedore_server.jobs.store import JobStore
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
JobStore(sys.argv[1]).close()
"""


def head() -> str:
    with make_engine("sqlite://").connect() as connection:
        found = ScriptDirectory.from_config(config(connection)).get_current_head()
    assert found is not None
    return found


def revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def open_at_once(url: str, processes: int = 2) -> list[subprocess.CompletedProcess[str]]:
    """Open the store in several processes at the same moment; their outcomes."""
    start = f"{time.time() + 2.0}"
    running = [
        subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, url, start], stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(60), "", p.stderr.read() if p.stderr else "") for p in running]


def test_a_fresh_database_is_upgraded_to_the_newest_revision(tmp_path: Path) -> None:
    url = default_url(str(tmp_path))
    JobStore(url).close()
    assert revision(url) == head()
    JobStore(url).close()  # a second start finds it up to date
    assert revision(url) == head()


def test_the_tables_of_the_queries_agree_with_the_migrations(tmp_path: Path) -> None:
    url = default_url(str(tmp_path))
    JobStore(url).close()
    engine = make_engine(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    assert differences == []


def test_a_database_made_before_migrations_is_adopted_with_its_jobs(tmp_path: Path) -> None:
    url = default_url(str(tmp_path))
    engine = make_engine(url)
    metadata.create_all(engine, tables=[jobs, job_logs])  # what the server made before migrations
    row = {
        "id": "old-job", "model": "iris-trainer", "version": "1", "kind": "train", "state": "queued",
        "progress": 0.0, "message": "", "params": {"C": 1.0}, "created": now(), "cancel_requested": False,
    }  # fmt: skip
    with engine.begin() as connection:
        connection.execute(jobs.insert().values(**row))
    engine.dispose()
    assert revision(url) is None
    store = JobStore(url)
    try:
        assert revision(url) == head()
        found = store.get("old-job")
        assert found is not None and found.state is JobState.QUEUED
        assert store.trained() == []
    finally:
        store.close()


def test_two_processes_opening_a_new_database_at_once_both_succeed(tmp_path: Path) -> None:
    url = default_url(str(tmp_path))
    tmp_path.mkdir(exist_ok=True)
    outcomes = open_at_once(url)
    assert [outcome.returncode for outcome in outcomes] == [0, 0], [outcome.stderr for outcome in outcomes]
    assert revision(url) == head()
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()
