"""Event contracts: every message that crosses Kafka in mnistream.

Each event is a frozen pydantic model carrying `event_id`, `occurred_at` and a
`schema_version` literal. A consumer that meets a version it does not know rejects the
message (it goes to the dead-letter topic) instead of guessing. Bumping a version is
required whenever the JSON Schema changes; `tests/unit/test_event_schemas.py` enforces it.

This module depends on pydantic only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Protocol, Self, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

DigitId = uuid.UUID
Digit = Annotated[int, Field(ge=0, le=9, description="A digit 0-9.")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="Hex sha256.")]
MediaType = Literal["image/png", "image/jpeg"]
PredictionKind = Literal["live", "rescore", "candidate", "shadow"]
RolloutMode = Literal["canary", "shadow"]


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Event(BaseModel):
    """Fields shared by every event."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,  # "3" is not a label and true is not a digit: match the JSON Schema
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )

    event_type: ClassVar[str]
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique per event.")
    occurred_at: AwareDatetime = Field(default_factory=utc_now, description="When it happened.")

    def to_bytes(self) -> bytes:
        """The JSON encoding sent as a Kafka record value."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        """Parse a Kafka record value, raising `InvalidEventError` with a readable reason."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise InvalidEventError(cls.__name__, exc) from exc


class InvalidEventError(ValueError):
    """A payload that is not a valid event of the expected type and version."""

    def __init__(self, event_name: str, error: ValidationError, *, tagged: bool = False) -> None:
        # A tagged union's errors start with the tag; the event's name already says it.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1 if tagged else 0 :]) or '<root>'}: {e['msg']}"
            for e in error.errors()[:5]
        )
        more = error.error_count() - 5
        suffix = f" (and {more} more)" if more > 0 else ""
        super().__init__(f"not a valid {event_name}: {problems}{suffix}")
        self.event_name = event_name


E_co = TypeVar("E_co", bound=Event, covariant=True)


class Parser(Protocol[E_co]):
    """What turns a topic's record values into events: an event class, or `LedgerRecords` for the
    promotion ledger's two kinds of record."""

    def from_bytes(self, raw: bytes, /) -> E_co:
        """Parse one record value, raising `InvalidEventError` with a readable reason."""
        ...


class ClientInfo(BaseModel):
    """What the gateway knows about the client that uploaded a drawing."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    source: str = Field(default="api", max_length=64, description="web, api, bench, ...")
    user_agent: str | None = Field(default=None, max_length=512)
    remote_addr: str | None = Field(default=None, max_length=64)


class DigitSubmitted(Event):
    """A drawing was accepted by the gateway (HTTP 202) and waits for a prediction.

    Version 2 carries the drawing's 28 by 28 model input, made once by the gateway: consumers run
    the model on it and never decode the image. Version 1 records (still in the topic) have no
    input; consumers derive it from the image with the shared preprocessing.
    """

    event_type: ClassVar[str] = "digit.submitted"
    schema_version: Literal[1, 2] = 2
    digit_id: DigitId
    submitted_at: AwareDatetime
    media_type: MediaType
    image: bytes = Field(description="The uploaded image bytes, base64 in JSON.")
    width: int = Field(gt=0, description="Image width in pixels, as decoded by the gateway.")
    height: int = Field(gt=0, description="Image height in pixels, as decoded by the gateway.")
    client: ClientInfo = Field(default_factory=ClientInfo)
    model_input: bytes | None = Field(
        default=None,
        min_length=784,
        max_length=784,
        description="The 28 by 28 model input, uint8 row-major, ink bright on black (base64 in "
        "JSON); required from schema version 2, absent in version 1.",
    )
    preprocessing_version: int | None = Field(
        default=None, ge=1, le=1000, description="The preprocessing that made `model_input`."
    )

    @model_validator(mode="after")
    def _input_matches_version(self) -> Self:
        has_input = self.model_input is not None and self.preprocessing_version is not None
        if self.schema_version == 2 and not has_input:
            raise ValueError("version 2 needs model_input and preprocessing_version")
        if self.schema_version == 1 and (
            self.model_input is not None or self.preprocessing_version is not None
        ):
            raise ValueError("version 1 has no model_input or preprocessing_version")
        return self


class ModelRef(BaseModel):
    """Identifies one registered model version and its exact bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200)
    version: int = Field(ge=1)
    sha256: Sha256


class Timings(BaseModel):
    """Where the time went for one prediction, in milliseconds."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    queue_ms: float = Field(ge=0, description="From submitted_at (or task start) to batch start.")
    preprocess_ms: float = Field(ge=0)
    inference_ms: float = Field(ge=0, description="The batch's session.run, shared by the batch.")
    batch_size: int = Field(ge=1)


class DigitPredicted(Event):
    """A model read one drawing.

    Version 2 adds the kind `shadow` (a candidate's reading during a shadow rollout, never the
    answer) and `rollout_id` (the rollout a live or shadow reading was made in); version 1
    records have neither.
    """

    # The rules between fields (checked by `_rollout_matches_version`), for the JSON Schema too.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"kind": {"const": "shadow"}}, "required": ["kind"]},
                    "then": {
                        "required": ["rollout_id"],
                        "properties": {"rollout_id": {"type": "string"}},
                    },
                },
                {
                    "if": {
                        "properties": {"schema_version": {"const": 1}},
                        "required": ["schema_version"],
                    },
                    "then": {
                        "properties": {
                            "kind": {"not": {"const": "shadow"}},
                            "rollout_id": {"type": "null"},
                        }
                    },
                },
            ]
        }
    )

    event_type: ClassVar[str] = "digit.predicted"
    schema_version: Literal[1, 2] = 2
    digit_id: DigitId
    model: ModelRef
    probabilities: list[float] = Field(min_length=10, max_length=10)
    predicted_digit: Digit
    confidence: float = Field(ge=0, le=1)
    kind: PredictionKind
    timings: Timings
    worker_id: str = Field(min_length=1, max_length=200)
    provider: str = Field(description="The onnxruntime execution provider that ran the model.")
    job_id: uuid.UUID | None = Field(default=None, description="Rescore or evaluation job.")
    job_total: int | None = Field(default=None, ge=0, description="Drawings in that job.")
    submitted_at: AwareDatetime | None = Field(
        default=None, description="When the drawing was submitted (live predictions)."
    )
    rollout_id: uuid.UUID | None = Field(
        default=None,
        description="The rollout this live or shadow reading was made in (from version 2).",
    )

    @model_validator(mode="after")
    def _rollout_matches_version(self) -> Self:
        if self.schema_version == 1 and (self.kind == "shadow" or self.rollout_id is not None):
            raise ValueError("version 1 predictions have no shadow kind and no rollout_id")
        if self.kind == "shadow" and self.rollout_id is None:
            raise ValueError("a shadow prediction names its rollout")
        return self


class DigitLabeled(Event):
    """A person said which digit a drawing really is. The latest label wins.

    Version 2 says who gave the label (the client, as for uploads; the gateway always sets it);
    version 1 labels have none.
    """

    event_type: ClassVar[str] = "digit.labeled"
    schema_version: Literal[1, 2] = 2
    digit_id: DigitId
    label: Digit
    labeled_at: AwareDatetime
    client: ClientInfo | None = Field(
        default=None, description="Who gave the label (from version 2; absent in version 1)."
    )

    @model_validator(mode="after")
    def _client_matches_version(self) -> Self:
        if self.schema_version == 1 and self.client is not None:
            raise ValueError("version 1 labels carry no client")
        return self


class SignalReference(BaseModel):
    """One drift signal's reference: bin cut points, and the reference's share in each bin."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    edges: list[float] = Field(max_length=9, description="Cut points between bins, ascending.")
    shares: list[float] = Field(min_length=2, max_length=10)

    @model_validator(mode="after")
    def _one_share_per_bin(self) -> Self:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError("a reference has one share per bin: one more than its cut points")
        if self.edges != sorted(self.edges):
            raise ValueError("cut points are ascending")
        return self


class DriftReference(BaseModel):
    """What a model's inputs and readings look like on its own training data (measured by the
    trainer, see `mnistream_common.drift`): live drawings are compared with it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    source: str = Field(max_length=500, description="What the reference was measured on.")
    drawings: int = Field(ge=1)
    signals: dict[str, SignalReference] = Field(max_length=16)


class ModelPromoted(Event):
    """A model version became the champion. The topic is the promotion ledger.

    Version 2 may carry the version's drift reference; version 1 records (still in the ledger)
    have none, and drift is not measured while such a version serves.
    """

    event_type: ClassVar[str] = "model.promoted"
    schema_version: Literal[1, 2] = 2
    model: ModelRef
    previous_version: int | None = Field(default=None, ge=1)
    onnx_uri: str = Field(pattern=r"^s3://[^/]+/.+", description="s3://bucket/key of the ONNX.")
    architecture: str = Field(min_length=1, max_length=100)
    metrics: dict[str, float] = Field(default_factory=dict)
    promoted_by: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)
    promoted_at: AwareDatetime
    drift_reference: DriftReference | None = Field(
        default=None, description="Reference distributions of the drift signals (version 2)."
    )

    @model_validator(mode="after")
    def _reference_matches_version(self) -> Self:
        if self.schema_version == 1 and self.drift_reference is not None:
            raise ValueError("version 1 carries no drift_reference")
        return self


class ModelRollout(Event):
    """A step of a release: a candidate served beside the champion, in the promotion ledger.

    `started` opens a rollout (at most one runs at a time), `changed` sets a canary's share,
    `aborted` ends it with the champion alone; a promotion ends whatever rollout runs (of its
    candidate: completed). Every record repeats the rollout's candidate, so any one of them says
    which model it is about. Records that do not apply to the ledger's state (a second start, a
    change of a rollout that has ended) are ignored by every reader alike.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"mode": {"const": "shadow"}}, "required": ["mode"]},
            "then": {"properties": {"percent": {"const": 100}}},
        }
    )

    event_type: ClassVar[str] = "model.rollout"
    schema_version: Literal[1] = 1
    rollout_id: uuid.UUID
    action: Literal["started", "changed", "aborted"]
    mode: RolloutMode
    candidate: ModelRef
    onnx_uri: str = Field(pattern=r"^s3://[^/]+/.+", description="s3://bucket/key of the ONNX.")
    architecture: str = Field(min_length=1, max_length=100)
    champion_version: int = Field(ge=1, description="The champion when the rollout started.")
    percent: float = Field(
        gt=0,
        le=100,
        description="The share of live drawings the candidate answers (canary), or 100 "
        "(shadow: it reads every drawing, answering none).",
    )
    requested_by: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _shadow_reads_everything(self) -> Self:
        if self.mode == "shadow" and self.percent != 100:
            raise ValueError("a shadow rollout reads every drawing: percent is 100")
        return self


LedgerEntry = ModelPromoted | ModelRollout


def _ledger_tag(value: Any) -> str:
    if isinstance(value, dict):
        return "rollout" if "rollout_id" in value else "promotion"
    return "rollout" if isinstance(value, ModelRollout) else "promotion"


_LEDGER = TypeAdapter[LedgerEntry](
    Annotated[
        Annotated[ModelPromoted, Tag("promotion")] | Annotated[ModelRollout, Tag("rollout")],
        Discriminator(_ledger_tag),
    ]
)


class LedgerRecords:
    """Parses the promotion ledger (`model.promoted`): promotions and rollout steps.

    A record with a `rollout_id` is a rollout step; every other record is read as a
    promotion (the ledger's only kind before rollouts existed).
    """

    event_type: ClassVar[str] = "model.promoted"

    @staticmethod
    def from_bytes(raw: bytes) -> LedgerEntry:
        """Parse one ledger record, raising `InvalidEventError` with a readable reason."""
        try:
            return _LEDGER.validate_json(raw)
        except ValidationError as exc:
            name = "ModelRollout" if b'"rollout_id"' in raw else "ModelPromoted"
            raise InvalidEventError(name, exc, tagged=True) from exc


class RescoreTask(Event):
    """One chunk of a rescore (kind `rescore`) or evaluation (kind `candidate`) job."""

    event_type: ClassVar[str] = "rescore.task"
    schema_version: Literal[1] = 1
    job_id: uuid.UUID
    kind: Literal["rescore", "candidate"]
    model: ModelRef
    onnx_uri: str = Field(pattern=r"^s3://[^/]+/.+")
    chunk_index: int = Field(ge=0)
    chunk_count: int = Field(ge=1)
    job_total: int = Field(ge=0, description="Drawings in the whole job.")
    digit_ids: list[DigitId] = Field(max_length=10_000)


class SkippedDrawing(BaseModel):
    """A drawing of a job that no model can read, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    digit_id: DigitId
    reason: str = Field(min_length=1, max_length=500)


class RescoreSkipped(Event):
    """The drawings of one chunk that were not scored: not stored, or not readable by any model.

    They count as done for the job's progress (a job with a skipped drawing still finishes) and
    are shown with the job. A drawing scored by the same job later (a redelivered chunk, after
    its image came back) counts as scored.
    """

    event_type: ClassVar[str] = "rescore.skipped"
    schema_version: Literal[1] = 1
    job_id: uuid.UUID
    kind: Literal["rescore", "candidate"]
    model: ModelRef
    chunk_index: int = Field(ge=0)
    job_total: int = Field(ge=0, description="Drawings in the whole job, for progress.")
    skipped: list[SkippedDrawing] = Field(min_length=1, max_length=10_000)
    worker_id: str = Field(min_length=1, max_length=200)


class DigitErased(Event):
    """An operator erased a drawing: it leaves the history's tables, its image leaves object
    storage, and a replay never brings it back. The topic is the erasure ledger.

    The erasure carries no part of the drawing (its id only), so the ledger keeps nothing of what
    it erased.
    """

    event_type: ClassVar[str] = "digit.erased"
    schema_version: Literal[1] = 1
    digit_id: DigitId
    erased_at: AwareDatetime
    requested_by: str = Field(min_length=1, max_length=200, description="Who erased it.")
    reason: str = Field(default="", max_length=2000, description="Why (a request's reference).")


class DeadLetter(Event):
    """A record some consumer could not process, kept with the reason for a later replay.

    Version 2 names the model version that failed on the record, when a model did
    (`model_version`), the rollout it was read in (`rollout_id`), and the version that answered
    the drawing instead (`answered_by`: a rollout's champion, after its candidate failed on it).
    A letter with `answered_by` records a failure, not a lost record, so it is not replayed.
    Version 1 letters have none of the three.
    """

    # The rules between fields (checked by `_model_fields_match_version`), for the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {
                        "properties": {"schema_version": {"const": 1}},
                        "required": ["schema_version"],
                    },
                    "then": {
                        "properties": {
                            "model_version": {"type": "null"},
                            "rollout_id": {"type": "null"},
                            "answered_by": {"type": "null"},
                        }
                    },
                },
                {
                    "if": {
                        "properties": {"answered_by": {"type": "integer"}},
                        "required": ["answered_by"],
                    },
                    "then": {
                        "required": ["model_version", "rollout_id"],
                        "properties": {
                            "model_version": {"type": "integer"},
                            "rollout_id": {"type": "string"},
                        },
                    },
                },
            ]
        }
    )

    event_type: ClassVar[str] = "dead.letter"
    schema_version: Literal[1, 2] = 2
    source_topic: str
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    source_key: bytes | None = None
    original: bytes = Field(description="The record value exactly as consumed.")
    error: str = Field(max_length=4000)
    service: str
    failed_at: AwareDatetime
    model_version: int | None = Field(
        default=None, ge=1, description="The model version that failed on it (from version 2)."
    )
    rollout_id: uuid.UUID | None = Field(
        default=None, description="The rollout it was read in (from version 2)."
    )
    answered_by: int | None = Field(
        default=None,
        ge=1,
        description="The version that answered the drawing instead: the letter records a "
        "failure and is not replayed (from version 2).",
    )

    @model_validator(mode="after")
    def _model_fields_match_version(self) -> Self:
        named = (self.model_version, self.rollout_id, self.answered_by)
        if self.schema_version == 1 and any(v is not None for v in named):
            raise ValueError("version 1 letters name no model version, rollout or answer")
        if self.answered_by is not None and (self.model_version is None or self.rollout_id is None):
            raise ValueError("an answered letter names the version that failed and its rollout")
        return self


ALL_EVENTS: tuple[type[Event], ...] = (
    DigitSubmitted,
    DigitPredicted,
    DigitLabeled,
    ModelPromoted,
    ModelRollout,
    RescoreTask,
    RescoreSkipped,
    DigitErased,
    DeadLetter,
)
