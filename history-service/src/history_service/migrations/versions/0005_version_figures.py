"""per-version figures and job progress kept up as rows are written

Revision ID: 0005
Revises: 0004

Reading a version's counts, agreement, flips and label accuracy, or a job's progress, scanned
every row of the version or job. These tables hold the figures, adjusted by every write
(history_service.figures); this revision creates them and fills them from the rows stored so
far, in one pass each (the same aggregates as history_service.figures.RECOMPUTE, written out
here so that this revision stays what it was when that module changes).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for column in ("done", "skipped"):
        op.add_column(
            "rescore_jobs", sa.Column(column, sa.BigInteger(), server_default="0", nullable=False)
        )
    op.create_table(
        "version_counts",
        sa.Column("model_version", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("predictions", sa.BigInteger(), nullable=False),
        sa.Column("confidence_micros", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "version_labels",
        sa.Column("model_version", sa.Integer(), primary_key=True),
        sa.Column("labeled", sa.BigInteger(), nullable=False),
        sa.Column("correct", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "version_pairs",
        sa.Column("model_version", sa.Integer(), primary_key=True),
        sa.Column("other_version", sa.Integer(), primary_key=True),
        sa.Column("other_digit", sa.SmallInteger(), primary_key=True),
        sa.Column("digit", sa.SmallInteger(), primary_key=True),
        sa.Column("drawings", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "prediction_flips",
        sa.Column("model_version", sa.Integer(), primary_key=True),
        sa.Column("other_version", sa.Integer(), primary_key=True),
        sa.Column("digit_id", sa.UUID(), primary_key=True),
        sa.Column("from_digit", sa.SmallInteger(), nullable=False),
        sa.Column("to_digit", sa.SmallInteger(), nullable=False),
    )
    for statement in FILL:
        op.execute(statement)


PAIRS = (
    "FROM predictions n JOIN predictions o "
    "ON o.digit_id = n.digit_id AND o.model_version <> n.model_version"
)
FILL = (
    "INSERT INTO version_counts (model_version, kind, predictions, confidence_micros) "
    "SELECT model_version, kind, count(*), sum(floor(confidence * 1000000.0::float8))::bigint "
    "FROM predictions GROUP BY model_version, kind",
    "INSERT INTO version_labels (model_version, labeled, correct) "
    "SELECT p.model_version, count(*), count(*) FILTER (WHERE p.predicted_digit = l.label) "
    "FROM predictions p JOIN labels l ON l.digit_id = p.digit_id GROUP BY p.model_version",
    "INSERT INTO version_pairs (model_version, other_version, other_digit, digit, drawings) "
    f"SELECT n.model_version, o.model_version, o.predicted_digit, n.predicted_digit, count(*) "
    f"{PAIRS} GROUP BY 1, 2, 3, 4",
    "INSERT INTO prediction_flips (model_version, other_version, digit_id, from_digit, to_digit) "
    f"SELECT n.model_version, o.model_version, n.digit_id, o.predicted_digit, n.predicted_digit "
    f"{PAIRS} WHERE o.predicted_digit <> n.predicted_digit",
    "UPDATE rescore_jobs j SET done = c.done, skipped = c.skipped FROM ("
    "SELECT job_id, count(*) AS done, count(skipped) AS skipped FROM rescore_job_items "
    "GROUP BY job_id) c WHERE c.job_id = j.job_id",
)


def downgrade() -> None:
    for table in ("prediction_flips", "version_pairs", "version_labels", "version_counts"):
        op.drop_table(table)
    op.drop_column("rescore_jobs", "skipped")
    op.drop_column("rescore_jobs", "done")
