"""drawings keep their 28×28 model input beside the original image

Revision ID: 0003
Revises: 0002

Rows stored before this revision have no input; history-service derives it from the original
image when a rescore first asks for it, and stores it then.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("drawings", sa.Column("model_input", sa.LargeBinary(), nullable=True))
    op.add_column(
        "drawings", sa.Column("preprocessing_version", sa.SmallInteger(), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("drawings", "preprocessing_version")
    op.drop_column("drawings", "model_input")
