"""The trace context of the request that started each job (its W3C ``traceparent`` and ``tracestate``, as JSON),
which the job's spans link to. NULL for the jobs started untraced, and for those made before this revision.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("trace", sa.JSON))


def downgrade() -> None:
    op.drop_column("jobs", "trace")
