"""docs/events.md stays true: its kcat examples are valid events with the right key, and its tables
match the event models and topics.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from mnistream_common.events import (
    DeadLetter,
    DigitErased,
    DigitLabeled,
    DigitPredicted,
    DigitSubmitted,
    Event,
    InvalidEventError,
    ModelPromoted,
    ModelRollout,
    RescoreSkipped,
    RescoreTask,
)
from mnistream_common.preprocessing import decode, preprocess
from mnistream_common.schemas import schema_filename, schema_version
from mnistream_common.topics import ALL_TOPICS, UNLIMITED, TopicSpec, topic_for
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "events.md"
ENVELOPE = {"event_id", "occurred_at", "schema_version"}
HEREDOC = re.compile(r"<<'EOF'\n(?P<body>.*?)\nEOF", re.DOTALL)
TABLE_ROW = re.compile(r"^\| *(?P<first>[^|]+?) *\| *(?P<second>[^|]*?) *\|", re.MULTILINE)


@dataclass(frozen=True)
class Produced:
    """One `key|value` line of a documented `kcat -P` command."""

    topic: str
    key: str
    value: str


def sections() -> dict[str, str]:
    """Level-2 heading → the text under it."""
    parts = re.split(r"^## (.+)$", DOC.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def section(topic: str) -> str:
    """The section of one topic, or a failure naming the missing heading."""
    found = sections().get(topic)
    if found is None:
        pytest.fail(f"docs/events.md has no section '## {topic}'")
    return found


def code_blocks(text: str) -> list[str]:
    """The fenced shell blocks of some markdown."""
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def produced(text: str) -> list[Produced]:
    """Every record that the `kcat -P` commands in `text` write."""
    records = []
    for block in code_blocks(text):
        command = re.search(r"kcat -P .*?-t (\S+) .*?-K '\|'", block)
        if command is None:
            continue
        for line in HEREDOC.search(block)["body"].splitlines():  # type: ignore[index]
            key, _, value = line.partition("|")
            records.append(Produced(command[1], key, value))
    return records


def rows(text: str) -> dict[str, str]:
    """First cell → second cell, for every table row in `text`."""
    return {m["first"].strip("`"): m["second"] for m in TABLE_ROW.finditer(text)}


def field_rows(text: str) -> set[str]:
    """The field names of the field tables in `text` (first cells written as `code`)."""
    return {m[1] for m in re.finditer(r"^\| `([a-z_.0-9]+)` \|", text, flags=re.MULTILINE)}


def retention_text(retention_ms: int) -> str:
    """How the doc writes a retention."""
    return "unlimited" if retention_ms == UNLIMITED else f"{retention_ms / 86_400_000:g} days"


def expected_key(event: Event) -> str:
    """The record key a producer writes for an event."""
    match event:
        case DigitSubmitted() | DigitPredicted() | DigitLabeled() | DigitErased():
            return str(event.digit_id)
        case ModelPromoted():
            return event.model.name
        case ModelRollout():
            return event.candidate.name
        case RescoreTask() | RescoreSkipped():
            return str(event.job_id)
        case DeadLetter():
            return (event.source_key or b"").decode()
    raise AssertionError(f"no key rule for {type(event).__name__}")


def documented_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every field of a model, nested models' fields as `outer.inner`."""
    names = set()
    for name, field in model.model_fields.items():
        names.add(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names |= documented_fields(field.annotation, f"{prefix}{name}.")
    return names


def parse_example(record: Produced) -> Event:
    """The event a documented record parses to, or a failure quoting the reason."""
    try:
        event: Event = topic_for(record.topic).reader.from_bytes(record.value.encode())
    except InvalidEventError as exc:
        pytest.fail(f"the docs/events.md example for {record.topic} is invalid: {exc}")
    return event


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=lambda t: t.name)
def test_each_topic_has_a_valid_produce_example_with_its_key(spec: TopicSpec) -> None:
    examples = produced(section(spec.name))
    assert examples, f"the section of {spec.name} has no `kcat -P ... -K '|'` example"
    for record in examples:
        assert record.topic == spec.name
        event = parse_example(record)
        assert record.key == expected_key(event), f"{spec.name}: the key is not the {spec.key}"


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=lambda t: t.name)
def test_each_topic_has_a_read_command(spec: TopicSpec) -> None:
    blocks = code_blocks(section(spec.name))
    assert any(f"kcat -C -b 127.0.0.1:9092 -t {spec.name} " in block for block in blocks)


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=lambda t: t.name)
def test_each_topic_section_states_what_topics_py_says(spec: TopicSpec) -> None:
    facts = rows(section(spec.name))
    assert facts["key"] == spec.key
    assert facts["partitions"] == str(spec.partitions)
    assert facts["retention"] == retention_text(spec.retention_ms)
    for event in spec.events:
        name, version = event.event_type, schema_version(event)
        assert f"`{event.__name__}` v{version}" in facts["value"]
        assert f"schemas/{schema_filename(name, version)}" in facts["value"]
        assert (ROOT / "schemas" / schema_filename(name, version)).exists()


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=lambda t: t.name)
def test_each_topic_lists_exactly_its_events_fields(spec: TopicSpec) -> None:
    fields = set().union(*(documented_fields(event) for event in spec.events))
    assert field_rows(section(spec.name)) == fields - ENVELOPE


def test_the_envelope_table_lists_the_envelope() -> None:
    envelope = section("Records").split("### The envelope")[1].split("###")[0]
    assert field_rows(envelope) == ENVELOPE


def test_the_overview_table_matches_topics_py() -> None:
    overview = DOC.read_text().split("## Records")[0]
    for spec in ALL_TOPICS:
        row = re.search(rf"^\| \[`{re.escape(spec.name)}`\]\(#[a-z]+\) \|(.*)$", overview, re.M)
        assert row, f"the overview table has no row for {spec.name}"
        cells = [cell.strip() for cell in row[1].strip(" |").split("|")]
        values = " or ".join(f"`{e.__name__}` v{schema_version(e)}" for e in spec.events)
        expected = [spec.key, values, str(spec.partitions)]
        assert cells == [*expected, retention_text(spec.retention_ms)]


def test_the_submitted_example_carries_a_drawing_the_workers_can_read() -> None:
    [record] = produced(section("digits.submitted"))
    event = parse_example(record)
    assert isinstance(event, DigitSubmitted)
    image = decode(event.image)
    assert (image.media_type, image.width, image.height) == (
        event.media_type,
        event.width,
        event.height,
    )
    assert preprocess(event.image).max() > 0.5


def test_the_dead_letter_example_quotes_the_real_error_of_its_original() -> None:
    [record] = produced(section("digits.deadletter"))
    letter = parse_example(record)
    assert isinstance(letter, DeadLetter)
    with pytest.raises(InvalidEventError) as caught:
        topic_for(letter.source_topic).reader.from_bytes(letter.original)
    assert letter.error == str(caught.value)
