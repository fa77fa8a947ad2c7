"""flips are kept for the ledger's comparisons only: each promoted version with the champion
before it

Revision ID: 0006
Revises: 0005

Revision 0005 kept a flip row for every pair of versions that read a drawing differently: rows
that grow with the square of the versions, and a write that slowed with each new version. The
flip report reads a version against the champion before it; a report against any other version
is read from the predictions. This revision drops the flips of every other pair of versions.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM prediction_flips f WHERE NOT EXISTS (SELECT FROM promotions c "
        "WHERE c.version = f.model_version AND c.previous_version = f.other_version)"
    )


def downgrade() -> None:
    """Back to a flip row for every pair of versions (what 0005 kept), from the rows."""
    op.execute(
        "INSERT INTO prediction_flips (model_version, other_version, digit_id, from_digit, "
        "to_digit) SELECT n.model_version, o.model_version, n.digit_id, o.predicted_digit, "
        "n.predicted_digit FROM predictions n JOIN predictions o ON o.digit_id = n.digit_id "
        "AND o.model_version <> n.model_version WHERE o.predicted_digit <> n.predicted_digit "
        "ON CONFLICT DO NOTHING"
    )
