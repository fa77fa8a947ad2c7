"""a job's drawing may be done without a prediction: skipped, with the reason

Revision ID: 0004
Revises: 0003

A drawing that is not stored, or that no model can read, counts as done for its job (the job
finishes) and keeps why it was skipped; a drawing scored by the job has no reason.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rescore_job_items", sa.Column("skipped", sa.String(500), nullable=True))


def downgrade() -> None:
    op.drop_column("rescore_job_items", "skipped")
