"""rollout_failures: the drawings a model version failed on during a rollout (from dead letters)

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollout_failures",
        sa.Column("rollout_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("digit_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("model_version", sa.Integer(), primary_key=True),
        sa.Column("answered_by", sa.Integer(), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
    )
    # An erasure deletes a drawing's failures by digit id.
    op.create_index("ix_rollout_failures_digit_id", "rollout_failures", ["digit_id"])


def downgrade() -> None:
    op.drop_index("ix_rollout_failures_digit_id", "rollout_failures")
    op.drop_table("rollout_failures")
