"""history-service's HTTP contract: the shapes its read, internal and admin routes answer with.

history-service serves them; its clients (the gateway, rescore workers, the CLI, the bench) parse
its answers into them through `mnistream_common.history_client`. Depends on pydantic only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class PredictionOut(BaseModel):
    """One model version's reading of a drawing."""

    model_version: int
    model_name: str
    predicted_digit: int
    confidence: float
    probabilities: list[float]
    kind: str
    job_id: uuid.UUID | None
    predicted_at: datetime


class DrawingOut(BaseModel):
    """A stored drawing with every prediction and its label."""

    digit_id: uuid.UUID
    submitted_at: datetime
    media_type: str
    width: int
    height: int
    image_url: str
    input_url: str
    label: int | None
    labeled_at: datetime | None
    predictions: list[PredictionOut]


class DrawingsPage(BaseModel):
    """Newest first; pass `next_cursor` as `before` for the next page."""

    items: list[DrawingOut]
    next_cursor: str | None


class PromotionOut(BaseModel):
    """One entry of the promotion ledger."""

    version: int
    model_name: str
    previous_version: int | None
    architecture: str
    sha256: str
    onnx_uri: str
    metrics: dict[str, float]
    promoted_by: str
    reason: str
    promoted_at: datetime


class Flip(BaseModel):
    """A drawing the new version reads differently."""

    digit_id: uuid.UUID
    from_: int = Field(alias="from", serialization_alias="from")
    to: int
    label: int | None


class VersionStats(BaseModel):
    """What one model version did: counts, agreement, flips, accuracy on user labels."""

    version: int
    predicted: int
    live: int
    rescore: int
    candidate: int
    shadow: int = Field(0, description="Drawings it read only as a shadow rollout's candidate.")
    mean_confidence: float | None = None
    previous_version: int | None
    compared: int
    agreement_with_previous: float | None
    flipped: int = 0
    flips: list[Flip]
    flips_next: uuid.UUID | None = Field(
        None, description="More flips: pass it as flips_before for the next page"
    )
    flips_by_digit: dict[str, dict[str, int]]
    labeled: int
    label_accuracy: float | None
    previous_label_accuracy: float | None = None


class ChampionOut(PromotionOut):
    """The model serving now, with how it does on user labels."""

    labeled: int
    label_accuracy: float | None


class ModelsOut(BaseModel):
    """Champion, ledger and per-version statistics."""

    champion: ChampionOut | None
    promotions: list[PromotionOut]
    versions: list[int]


class SkippedOut(BaseModel):
    """A drawing a job could not score, and why."""

    digit_id: uuid.UUID
    reason: str


class RescoreJobOut(BaseModel):
    """Progress of a rescore or evaluation job."""

    job_id: uuid.UUID
    kind: str
    model_version: int
    done: int = Field(description="Drawings done: scored, or skipped (counted in `skipped`).")
    skipped: int = Field(
        default=0, description="Drawings not scored: not stored, or no model can read them."
    )
    skipped_drawings: list[SkippedOut] = Field(
        default_factory=list,
        description="Up to 20 of them with the reason (only when one job is asked for).",
    )
    total: int
    finished: bool
    superseded: bool
    started_at: datetime
    updated_at: datetime


class LabeledOut(BaseModel):
    """A drawing a person labeled."""

    digit_id: uuid.UUID
    label: int


class ReplayIn(BaseModel):
    """Where to start reading again."""

    since: AwareDatetime | None = Field(
        default=None, description="The first record time to re-read; none: from the beginning."
    )


class ReplayOut(BaseModel):
    """What the service will read again."""

    records: dict[str, int] = Field(description="Records to re-read, per topic.")
    total: int


class EraseIn(BaseModel):
    """Which drawing to erase, who asks and why."""

    digit_id: uuid.UUID
    requested_by: str = Field(min_length=1, max_length=200, description="Who erases it.")
    reason: str = Field(default="", max_length=2000, description="Why (a request's reference).")


class EraseOut(BaseModel):
    """What became of an erasure."""

    digit_id: uuid.UUID
    erased_at: AwareDatetime
    applied: bool = Field(
        description="history-service has removed the drawing's rows (its image follows at "
        "once); false: the erasure is in the ledger and will be applied shortly."
    )
    already_erased: bool = Field(description="It was erased before; nothing new was written.")


MAX_MODEL_INPUT_IDS = 10_000
# A JSON list of that many ids: 36 characters, quotes and a comma each, and the envelope.
MODEL_INPUTS_BODY_LIMIT = MAX_MODEL_INPUT_IDS * 40 + 1024


class StoredCount(BaseModel):
    """How many stored drawings a rescore plan pages through."""

    count: int


class ModelInputsIn(BaseModel):
    """The drawings whose model inputs a rescore chunk needs."""

    digit_ids: list[uuid.UUID] = Field(max_length=MAX_MODEL_INPUT_IDS)


class ModelInputOut(BaseModel):
    """One drawing's 28×28 model input (784 bytes, base64 in JSON)."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    digit_id: uuid.UUID
    model_input: bytes = Field(min_length=784, max_length=784)
    preprocessing_version: int


class UnusableOut(BaseModel):
    """A stored drawing that cannot be read by any model, and why."""

    digit_id: uuid.UUID
    reason: str


class ModelInputsOut(BaseModel):
    """The inputs found, the ids with no stored drawing, the drawings no model can read."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    inputs: list[ModelInputOut]
    missing: list[uuid.UUID]
    unusable: list[UnusableOut]


class VersionFigures(BaseModel):
    """One version's figures in a rollout: what it read, and how well on user-labeled
    drawings (with the 95 % Wilson interval)."""

    version: int
    role: Literal["champion", "candidate"]
    readings: int = Field(0, description="Drawings it read during the rollout (live or shadow).")
    answered: int = Field(0, description="Of those, the drawings it answered (live).")
    labeled: int = 0
    correct: int = 0
    accuracy: float | None = None
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    latency_p50_ms: float | None = Field(None, description="Submission to its reading.")
    latency_p99_ms: float | None = None
    failed: int = Field(
        0, description="Drawings it failed on (dead letters); a candidate's are answered."
    )
    failure_rate: float | None = Field(None, description="failed / (readings + failed).")
    failure_low: float | None = Field(None, description="Its interval (Wilson, as accuracy's).")
    failure_high: float | None = None


class RolloutOut(BaseModel):
    """A rollout's course and its verdict, measured on the drawings read during it."""

    rollout_id: uuid.UUID
    mode: Literal["canary", "shadow"]
    candidate_version: int
    champion_version: int
    percent: float
    started_at: datetime
    started_by: str
    reason: str
    state: Literal["running", "completed", "aborted", "superseded"]
    ended_at: datetime | None
    ended_by: str | None
    end_reason: str | None
    versions: list[VersionFigures]
    compared: int = Field(description="Drawings both versions read (shadow).")
    agreement: float | None = Field(description="Of those, the share they read alike.")
    verdict: str
    judged: Literal["undecided", "ahead", "behind", "level"] = "undecided"
    difference: float | None = Field(None, description="Candidate's accuracy minus champion's.")
    difference_low: float | None = None
    difference_high: float | None = None


class SignalOut(BaseModel):
    """One drift signal over one window: its score against the champion's reference."""

    window: str = Field(description="`last N` drawings, or `last hour` (its newest at most).")
    signal: str
    kind: Literal["input", "output"]
    drawings: int = Field(description="Drawings (input) or champion readings (output) counted.")
    score: float | None = Field(description="Population stability index; None: too few.")
    threshold: float
    drifted: bool


class VersionEstimateOut(BaseModel):
    """One version's accuracy on the window's drawings it read: estimated from its confidence
    on every one of them (CBPE-style), measured on the labeled ones."""

    window: str
    version: int
    readings: int
    estimated_accuracy: float | None
    labeled: int
    measured_accuracy: float | None
    gap: float | None = Field(description="Estimated minus measured, once enough are labeled.")
    gap_threshold: float
    drifted: bool


class DriftOut(BaseModel):
    """Drift of live drawings and of the champion's readings against its reference."""

    champion_version: int | None
    reference: str | None = Field(description="What the reference was measured on.")
    computed_at: AwareDatetime
    signals: list[SignalOut]
    versions: list[VersionEstimateOut]
    note: str = Field("", description="Why nothing is measured, when nothing is.")

    @property
    def alarms(self) -> list[str]:
        """The signals and versions past their threshold, in words."""
        found = [f"{s.signal} ({s.window}): {s.score:.3f}" for s in self.signals if s.drifted]
        found += [
            f"v{v.version} accuracy gap ({v.window}): {v.gap:+.3f}"
            for v in self.versions
            if v.drifted and v.gap is not None
        ]
        return found
