"""The versions trainings made: which job made which version of which model, and where its artifact is kept.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No foreign key to jobs: a version keeps serving after its job is deleted (job_retention).
    op.create_table(
        "trained_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("base_version", sa.String(200), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("artifact", sa.Text, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("model", "version", name="uq_trained_versions_model_version"),
    )


def downgrade() -> None:
    op.drop_table("trained_versions")
