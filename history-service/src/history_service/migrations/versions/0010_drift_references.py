"""promotions.drift_reference: the champion's drift reference, from model.promoted v2

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("promotions", sa.Column("drift_reference", JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("promotions", "drift_reference")
