"""The jobs database's Alembic migrations: a fresh database, one made by ``create_all`` before migrations
(adopted), the tables the queries use agreeing with the migrations, and several processes upgrading at once.
The same on PostgreSQL is in ``test_jobs_postgres.py``."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from stevedore_server.jobs.migrations import config
from stevedore_server.jobs.records import JobState, default_url, now
from stevedore_server.jobs.store import JobStore, make_engine, metadata

#: A racer: imports everything first, says it is ready, and opens the store when told to go (every racer is ready
#: by then, however long each took to start); then its start and end on the system-wide monotonic clock.
OPEN_WHEN_TOLD = """
import sys, time
from stevedore_server.jobs.store import JobStore
print("ready", flush=True)
sys.stdin.readline()
started = time.monotonic()
JobStore(sys.argv[1]).close()
print(started, time.monotonic(), flush=True)
"""
#: Bound on each wait of the race (the racers' start, their opening of the store).
RACE_DEADLINE = 60.0


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


def open_at_once(url: str, processes: int = 2) -> None:
    """Open the store in several processes at once: they meet at a barrier (each ready, then all told to go); fails
    unless every one succeeded and their openings overlapped (each began before any finished)."""
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_WHEN_TOLD, url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(processes)
    ]  # fmt: skip
    try:
        for racer in racers:
            if next_line(racer) != "ready":
                racer.kill()
                pytest.fail(f"a racer never got ready:\n{racer.communicate()[1]}")
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        outcomes = [racer.communicate(timeout=RACE_DEADLINE) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()
    assert [racer.returncode for racer in racers] == [0] * processes, [stderr for _, stderr in outcomes]
    spans = [[float(stamp) for stamp in stdout.split()] for stdout, _ in outcomes]
    assert max(start for start, _ in spans) < min(end for _, end in spans), f"no overlap: {spans}"


def next_line(racer: subprocess.Popen[str]) -> str:
    """The racer's next line on its stdout, or "" if it wrote none within the deadline."""
    assert racer.stdout is not None
    readable, _, _ = select.select([racer.stdout], [], [], RACE_DEADLINE)
    return racer.stdout.readline().strip() if readable else ""


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


#: A job as every revision's table holds it (the columns of the first).
OLD_JOB = {
    "id": "old-job", "model": "iris-trainer", "version": "1", "kind": "train", "state": "queued",
    "progress": 0.0, "message": "", "params": {"C": 1.0}, "created": now(), "cancel_requested": False,
}  # fmt: skip


def database_at(url: str, revision_id: str, *, unversioned: bool = False) -> None:
    """A database with the schema of ``revision_id`` and one job, ``OLD_JOB``; ``unversioned``: without Alembic's
    table, as ``create_all`` made it before there were migrations."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(config(connection), revision_id)
            if unversioned:
                connection.execute(sa.text("DROP TABLE alembic_version"))
            old_jobs = sa.Table("jobs", sa.MetaData(), autoload_with=connection)
            connection.execute(old_jobs.insert().values(**OLD_JOB))
    finally:
        engine.dispose()


def test_a_database_made_before_migrations_is_adopted_with_its_jobs(tmp_path: Path) -> None:
    url = default_url(str(tmp_path))
    database_at(url, "0001", unversioned=True)  # what the server made before migrations
    assert revision(url) is None
    store = JobStore(url)
    try:
        assert revision(url) == head()
        found = store.get("old-job")
        assert found is not None and found.state is JobState.QUEUED
        assert store.trained() == []
    finally:
        store.close()


def test_the_jobs_of_a_database_before_started_by_were_started_by_no_key(tmp_path: Path) -> None:
    url = default_url(str(tmp_path))
    database_at(url, "0002")
    store = JobStore(url)
    try:
        assert revision(url) == head()
        found = store.get("old-job")
        assert found is not None and found.started_by is None and found.as_dict()["started_by"] is None
        made = store.create("iris-trainer", "1", "train", {"C": 1.0}, started_by="0123456789ab")
        assert store.get(made.id) == made and made.started_by == "0123456789ab"
    finally:
        store.close()


def test_two_processes_opening_a_new_database_at_once_both_succeed(tmp_path: Path) -> None:
    url = default_url(str(tmp_path))
    tmp_path.mkdir(exist_ok=True)
    open_at_once(url)
    assert revision(url) == head()
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()
