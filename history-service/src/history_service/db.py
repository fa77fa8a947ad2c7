"""The application tables (owned by history-service). No foreign keys: events about one digit
arrive in any order across topics, so rows are joined when read, never rejected when written."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the history tables."""


class Drawing(Base):
    """A submitted drawing; the original image itself is in object storage."""

    __tablename__ = "drawings"

    digit_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    media_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    image_bucket: Mapped[str] = mapped_column(String(63))
    image_key: Mapped[str] = mapped_column(String(200))
    image_sha256: Mapped[str] = mapped_column(String(64))
    client_source: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    # The 28×28 uint8 input every model reads, and the preprocessing that made it (null: a row
    # from before inputs were kept; derived from the image when first needed).
    model_input: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    preprocessing_version: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)

    __table_args__ = (Index("ix_drawings_submitted_at_digit_id", "submitted_at", "digit_id"),)


class Prediction(Base):
    """One model version's reading of one drawing."""

    __tablename__ = "predictions"

    digit_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    model_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_sha256: Mapped[str] = mapped_column(String(64))
    predicted_digit: Mapped[int] = mapped_column(SmallInteger)
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[list[float]] = mapped_column(ARRAY(Float))
    kind: Mapped[str] = mapped_column(String(16))
    kind_rank: Mapped[int] = mapped_column(SmallInteger)
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    worker_id: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(64))
    timings: Mapped[dict[str, Any]] = mapped_column(JSONB)
    predicted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))

    __table_args__ = (
        Index("ix_predictions_version_digit", "model_version", "digit_id"),
        Index("ix_predictions_job_id", "job_id"),
    )


class Label(Base):
    """A person's true label for a drawing; the latest wins."""

    __tablename__ = "labels"

    digit_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    label: Mapped[int] = mapped_column(SmallInteger)
    labeled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))


class Promotion(Base):
    """One entry of the promotion ledger."""

    __tablename__ = "promotions"

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    onnx_uri: Mapped[str] = mapped_column(Text)
    architecture: Mapped[str] = mapped_column(String(100))
    metrics: Mapped[dict[str, float]] = mapped_column(JSONB)
    promoted_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    promoted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # Its place in the ledger (promotions stored before rollouts existed have none: they come
    # before every rollout step).
    ledger_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The version's drift reference (model.promoted v2; none before references existed).
    drift_reference: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)


class RolloutStep(Base):
    """One rollout step of the promotion ledger, as published, with its place in the ledger:
    folded with the promotions (`mnistream_common.ledger`), they give every rollout's course."""

    __tablename__ = "rollout_steps"

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    ledger_offset: Mapped[int] = mapped_column(BigInteger)
    rollout_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)


class RolloutReading(Base):
    """A reading made during a rollout, live (the answer) or shadow: a rollout's verdict is
    counted from these rows and the labels."""

    __tablename__ = "rollout_readings"

    rollout_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # Indexed: an erasure deletes a drawing's readings by digit id.
    digit_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, index=True)
    model_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    predicted_digit: Mapped[int] = mapped_column(SmallInteger)
    # From submission to the reading; a redelivered reading keeps the smallest.
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)


class RolloutFailure(Base):
    """A drawing a model version failed on during a rollout, from its dead letter: a rollout's
    failure rate per version is counted from these rows and the readings."""

    __tablename__ = "rollout_failures"

    rollout_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # Indexed: an erasure deletes a drawing's failures by digit id.
    digit_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, index=True)
    model_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The version that answered the drawing instead; a redelivered letter keeps the first.
    answered_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RescoreJob(Base):
    """A rescore or evaluation job, as seen from its predictions."""

    __tablename__ = "rescore_jobs"

    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Kept up as its items are written (history_service.figures): drawings done, and of those
    # skipped, so a job's progress is read without counting its items.
    done: Mapped[int] = mapped_column(BigInteger, server_default="0")
    skipped: Mapped[int] = mapped_column(BigInteger, server_default="0")


class RescoreJobItem(Base):
    """One drawing done by a job (so redelivered chunks do not count twice): scored, or skipped
    with the reason (not stored, or no model can read it)."""

    __tablename__ = "rescore_job_items"

    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    digit_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    skipped: Mapped[str | None] = mapped_column(String(500), nullable=True)


class Erasure(Base):
    """A drawing an operator erased (the erasure ledger, digits.erased, as a table): nothing of it
    is stored again, whatever arrives later or is replayed."""

    __tablename__ = "erasures"

    digit_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    requested_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))


# Per-version figures, kept up as predictions and labels are written (history_service.figures):
# a function of the rows above, whatever order the events arrived in.


class VersionCount(Base):
    """How many predictions a version made of one kind, and their confidence summed."""

    __tablename__ = "version_counts"

    model_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    predictions: Mapped[int] = mapped_column(BigInteger)
    confidence_micros: Mapped[int] = mapped_column(BigInteger)


class VersionLabels(Base):
    """A version's predictions of labeled drawings, and how many match the label."""

    __tablename__ = "version_labels"

    model_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    labeled: Mapped[int] = mapped_column(BigInteger)
    correct: Mapped[int] = mapped_column(BigInteger)


class VersionPair(Base):
    """Drawings read as `other_digit` by `other_version` and as `digit` by `model_version`."""

    __tablename__ = "version_pairs"

    model_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    other_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    other_digit: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    digit: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    drawings: Mapped[int] = mapped_column(BigInteger)


class PredictionFlip(Base):
    """A drawing a promoted version reads differently from the champion before it (the ledger's
    comparisons only), for paging flips."""

    __tablename__ = "prediction_flips"

    model_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    other_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    digit_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    from_digit: Mapped[int] = mapped_column(SmallInteger)
    to_digit: Mapped[int] = mapped_column(SmallInteger)
