"""Alembic's environment: the migrations run on the connection ``upgrade`` hands over (online only)."""

from __future__ import annotations

from alembic import context

if context.is_offline_mode():
    raise RuntimeError("the jobs database's migrations run online only, at the server's startup")

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
