"""Which API key started each job: the first characters of its digest (never the key), to show a key only its own
jobs. NULL for the jobs started with keys off, and for those made before this revision.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("started_by", sa.String(64)))
    op.create_index("ix_jobs_started_by", "jobs", ["started_by"])


def downgrade() -> None:
    op.drop_index("ix_jobs_started_by", table_name="jobs")
    op.drop_column("jobs", "started_by")
