"""rollouts: the ledger's rollout steps and offsets, and the readings made during a rollout

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("promotions", sa.Column("ledger_offset", sa.BigInteger(), nullable=True))
    op.create_table(
        "rollout_steps",
        sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("ledger_offset", sa.BigInteger(), nullable=False),
        sa.Column("rollout_id", UUID(as_uuid=True), nullable=False),
        sa.Column("body", JSONB(), nullable=False),
    )
    op.create_index("ix_rollout_steps_rollout_id", "rollout_steps", ["rollout_id"])
    op.create_table(
        "rollout_readings",
        sa.Column("rollout_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("digit_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("model_version", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("predicted_digit", sa.SmallInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
    )
    # An erasure deletes a drawing's readings by digit id.
    op.create_index("ix_rollout_readings_digit_id", "rollout_readings", ["digit_id"])


def downgrade() -> None:
    op.drop_index("ix_rollout_readings_digit_id", "rollout_readings")
    op.drop_table("rollout_readings")
    op.drop_index("ix_rollout_steps_rollout_id", "rollout_steps")
    op.drop_table("rollout_steps")
    op.drop_column("promotions", "ledger_offset")
