"""Alembic's revisions of the jobs database, one file each (0001, 0002, ...), applied in order by
``jobs.migrations.upgrade`` when the store opens."""
