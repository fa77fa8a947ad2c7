"""The one place where topic names and their partition and retention settings live."""

from __future__ import annotations

from dataclasses import dataclass, field

from mnistream_common.events import (
    DeadLetter,
    DigitErased,
    DigitLabeled,
    DigitPredicted,
    DigitSubmitted,
    Event,
    LedgerRecords,
    ModelPromoted,
    ModelRollout,
    Parser,
    RescoreSkipped,
    RescoreTask,
)

UNLIMITED = -1
ONE_DAY_MS = 24 * 3600 * 1000
SEVEN_DAYS_MS = 7 * ONE_DAY_MS


@dataclass(frozen=True)
class TopicSpec:
    """A Kafka topic as mnistream creates it."""

    name: str
    event: type[Event]
    key: str
    partitions: int
    retention_ms: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    extra_config: dict[str, str] = field(default_factory=dict)
    # Other events the topic carries beside `event` (the ledger's rollout steps), and what
    # parses its records then.
    also: tuple[type[Event], ...] = ()
    parser: Parser[Event] | None = None

    @property
    def reader(self) -> Parser[Event]:
        """What turns this topic's records into events."""
        return self.parser or self.event

    @property
    def events(self) -> tuple[type[Event], ...]:
        """Every event the topic carries."""
        return (self.event, *self.also)

    def config(self) -> dict[str, str]:
        """Topic-level configuration passed to CreateTopics."""
        return {"retention.ms": str(self.retention_ms), **self.extra_config}


# Uploads are at most 512 KB, base64 grows them by a third; leave room for the envelope.
# Every consumed topic has this limit, so that the dead letter of any record (the record
# base64-encoded, about 1.4 MiB) fits digits.deadletter (2 MiB).
_BIG_RECORDS = {"max.message.bytes": str(1024 * 1024)}
# digits.submitted holds one record per digit id (ids are never reused), so compaction keeps
# every drawing and removes only what an erasure marked with a tombstone (a null record of the
# drawing's key): once its segment is closed and a day has passed (`max.compaction.lag.ms`),
# the image and the client's details leave the log; the tombstone itself goes a day later
# (`delete.retention.ms`, Kafka's default). Kafka closes a segment when it appends to the
# partition, so on a partition that receives nothing more the record stays until it does.
_ERASABLE = {"cleanup.policy": "compact", "max.compaction.lag.ms": str(ONE_DAY_MS)}

DIGITS_SUBMITTED = TopicSpec(
    name="digits.submitted",
    event=DigitSubmitted,
    key="digit id",
    partitions=12,
    retention_ms=UNLIMITED,
    producers=("gateway", "history-service (erasure tombstones)"),
    consumers=("inference-worker (group inference)", "history-service (group history)"),
    extra_config=_BIG_RECORDS | _ERASABLE,
)
DIGITS_PREDICTED = TopicSpec(
    name="digits.predicted",
    event=DigitPredicted,
    key="digit id",
    partitions=12,
    retention_ms=UNLIMITED,
    producers=("inference-worker", "rescore-worker"),
    consumers=("gateway (every instance, no group)", "history-service (group history)"),
    extra_config=_BIG_RECORDS,
)
DIGITS_LABELED = TopicSpec(
    name="digits.labeled",
    event=DigitLabeled,
    key="digit id",
    partitions=12,
    retention_ms=UNLIMITED,
    producers=("gateway",),
    consumers=("history-service (group history)",),
    extra_config=_BIG_RECORDS,
)
MODEL_PROMOTED = TopicSpec(
    name="model.promoted",
    event=ModelPromoted,
    also=(ModelRollout,),
    parser=LedgerRecords,
    key="model name",
    partitions=1,
    retention_ms=UNLIMITED,
    producers=(
        "mnistream promote / rollback / canary / shadow / abort",
        "history-service (guardrails abort a rollout)",
    ),
    consumers=(
        "inference-worker (every instance, no group)",
        "gateway (every instance, no group: the page's model and rollout news)",
        "rescore-worker (group rescore-planner)",
        "history-service (group history)",
    ),
    extra_config=_BIG_RECORDS,
)
RESCORE_TASKS = TopicSpec(
    name="rescore.tasks",
    event=RescoreTask,
    key="job id",
    partitions=12,
    retention_ms=SEVEN_DAYS_MS,
    producers=("rescore-worker planner", "mnistream evaluate"),
    consumers=("rescore-worker (group rescore)",),
    extra_config=_BIG_RECORDS,
)
RESCORE_SKIPPED = TopicSpec(
    name="rescore.skipped",
    event=RescoreSkipped,
    key="job id",
    partitions=12,
    retention_ms=UNLIMITED,
    producers=("rescore-worker",),
    consumers=("history-service (group history)",),
    extra_config=_BIG_RECORDS,
)
DIGITS_ERASED = TopicSpec(
    name="digits.erased",
    event=DigitErased,
    key="digit id",
    partitions=12,
    retention_ms=UNLIMITED,
    producers=("history-service (POST /admin/erasures: mnistream erase)",),
    consumers=("history-service (group history)",),
    extra_config=_BIG_RECORDS,
)
DIGITS_DEADLETTER = TopicSpec(
    name="digits.deadletter",
    event=DeadLetter,
    key="source key",
    partitions=3,
    retention_ms=UNLIMITED,
    producers=("inference-worker", "history-service", "rescore-worker"),
    consumers=("mnistream replay deadletter", "history-service (group history)"),
    extra_config={"max.message.bytes": str(2 * 1024 * 1024)},
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    DIGITS_SUBMITTED,
    DIGITS_PREDICTED,
    DIGITS_LABELED,
    MODEL_PROMOTED,
    RESCORE_TASKS,
    RESCORE_SKIPPED,
    DIGITS_ERASED,
    DIGITS_DEADLETTER,
)

# What history-service consumes (group `history`); a replay rewinds the group on these.
HISTORY_TOPICS: tuple[TopicSpec, ...] = (
    DIGITS_SUBMITTED,
    DIGITS_PREDICTED,
    DIGITS_LABELED,
    MODEL_PROMOTED,
    RESCORE_SKIPPED,
    DIGITS_ERASED,
    DIGITS_DEADLETTER,  # for the failures of rollouts' versions
)


def topic_for(name: str) -> TopicSpec:
    """The spec of a topic by name, or a KeyError naming the known topics."""
    for spec in ALL_TOPICS:
        if spec.name == name:
            return spec
    known = ", ".join(t.name for t in ALL_TOPICS)
    raise KeyError(f"unknown topic {name!r}; known topics: {known}")


class Groups:
    """Consumer group ids. Consumers not listed here read without a group (every instance)."""

    INFERENCE = "inference"
    HISTORY = "history"
    RESCORE = "rescore"
    RESCORE_PLANNER = "rescore-planner"


# What each group reads. Every one of them starts from the earliest offset, so a partition it has
# not committed on yet is behind by everything the partition holds.
GROUP_TOPICS: dict[str, tuple[TopicSpec, ...]] = {
    Groups.INFERENCE: (DIGITS_SUBMITTED,),
    Groups.HISTORY: HISTORY_TOPICS,
    Groups.RESCORE: (RESCORE_TASKS,),
    Groups.RESCORE_PLANNER: (MODEL_PROMOTED,),
}
