"""drawings newest first: index for keyset pagination on (submitted_at, digit_id)

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_drawings_submitted_at_digit_id", "drawings", ["submitted_at", "digit_id"]
    )
    op.create_index("ix_predictions_job_id", "predictions", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_predictions_job_id", table_name="predictions")
    op.drop_index("ix_drawings_submitted_at_digit_id", table_name="drawings")
