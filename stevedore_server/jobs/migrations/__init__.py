"""The jobs database's schema, brought up to date with Alembic at startup: ``upgrade(engine)``.

The migrations are package data (``versions/``), run through a ``Config``
built here, so a user needs no ``alembic.ini``. Several server processes may
open one database at once (``--workers N``, or several machines on one
PostgreSQL): the upgrade runs under a lock, a PostgreSQL advisory lock held
by its transaction or, for SQLite, a lock on a file beside the database, so
one process migrates and the others find the schema up to date. A database
made before migrations (by ``create_all``: the tables, but no
``alembic_version``) is stamped with the first revision, whose schema it has,
then upgraded.

A developer makes a new revision with ``alembic -c stevedore_server/jobs/migrations/alembic.ini revision -m "..."``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger("stevedore.migrations")

#: The revision whose schema ``create_all`` made before there were migrations.
BASELINE = "0001"
#: The PostgreSQL advisory lock of the upgrade (any constant number; this one spells "stevedor").
ADVISORY_LOCK = 0x73746576_65646F72 - 2**63


def config(connection: Connection) -> Config:
    """Alembic's configuration, in code: the scripts in this package, run on ``connection``."""
    alembic_config = Config()
    alembic_config.set_main_option("script_location", str(Path(__file__).parent))
    alembic_config.attributes["connection"] = connection
    return alembic_config


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision, once, whichever of several processes gets there first."""
    with file_lock(engine), engine.connect() as connection:
        if connection.dialect.name == "postgresql":  # released when the transaction ends
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK)))
        alembic_config = config(connection)
        if adopted(connection):
            logger.info("the jobs database predates migrations: stamped with revision %s", BASELINE)
            command.stamp(alembic_config, BASELINE)
        before = current(connection)
        command.upgrade(alembic_config, "head")
        after = current(connection)
        connection.commit()
    if after != before:
        logger.info("the jobs database upgraded from revision %s to %s", before or "(none: new)", after)


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def adopted(connection: Connection) -> bool:
    """Whether the database has the tables of ``create_all`` but no revision (it is then stamped)."""
    inspector = sa.inspect(connection)
    return inspector.has_table("jobs") and not inspector.has_table("alembic_version")


@contextlib.contextmanager
def file_lock(engine: Engine) -> Iterator[None]:
    """For a SQLite file, an exclusive lock on ``<file>.migrate-lock`` (SQLite has no advisory lock of its own)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
