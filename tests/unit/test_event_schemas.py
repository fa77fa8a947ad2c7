"""The committed JSON Schemas (schemas/) are the machines' contract: a schema change without a
schema_version bump must not pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mnistream_common.events import (
    ALL_EVENTS,
    DeadLetter,
    DigitPredicted,
    Event,
    InvalidEventError,
    ModelRollout,
    RescoreTask,
)
from mnistream_common.schemas import (
    SCHEMA_FILE,
    SchemaChangedError,
    event_schema,
    event_schemas,
    export_schemas,
    main,
    schema_filename,
    schema_problem,
    schema_version,
)

from tests.unit.test_events import sample_events

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: e.event_type)
def test_the_committed_schema_of_the_current_version_is_the_models_schema(
    event: type[Event],
) -> None:
    problem = schema_problem(SCHEMAS, event.event_type, schema_version(event), event_schema(event))
    if problem:
        pytest.fail(problem)


def test_every_committed_schema_file_belongs_to_an_event_version() -> None:
    current = {e.event_type: schema_version(e) for e in ALL_EVENTS}
    for path in SCHEMAS.iterdir():
        match = SCHEMA_FILE.match(path.name)
        assert match, f"{path.name} is not named <event_type>.v<version>.json"
        assert match["event_type"] in current, f"{path.name}: no event {match['event_type']!r}"
        assert int(match["version"]) <= current[match["event_type"]], f"{path.name} is ahead"


def test_schemas_are_json_schema_documents_of_the_wire_format() -> None:
    schema = event_schemas()[schema_filename("rescore.task", 1)]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert {"event_id", "occurred_at", "schema_version"} <= set(schema["properties"])
    assert schema["properties"]["schema_version"]["const"] == 1


def test_the_export_is_stable_text(tmp_path: Path) -> None:
    [path, *_] = export_schemas(tmp_path)
    text = path.read_text()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert export_schemas(tmp_path)[0].read_text() == text


# ---------------------------------------------------------------- the check really fails


def _task_schema_with_an_extra_field() -> dict[str, object]:
    schema = event_schema(RescoreTask)
    properties = {**schema["properties"], "comment": {"type": "string"}}
    return {**schema, "properties": properties}


def test_a_changed_schema_without_a_version_bump_fails(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    problem = schema_problem(tmp_path, "rescore.task", 1, _task_schema_with_an_extra_field())
    assert problem is not None
    assert "changed but its schema_version is still 1" in problem
    assert "bump schema_version to 2" in problem
    assert "`make schemas`" in problem


def test_a_new_version_without_its_exported_file_fails(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    problem = schema_problem(tmp_path, "rescore.task", 2, _task_schema_with_an_extra_field())
    assert problem is not None
    assert "new schema_version 2 of rescore.task was introduced (committed: v1)" in problem
    assert "run `make schemas`" in problem


def test_a_missing_file_fails(tmp_path: Path) -> None:
    problem = schema_problem(tmp_path, "rescore.task", 1, event_schema(RescoreTask))
    assert problem is not None
    assert "rescore.task.v1.json is missing; run `make schemas`" in problem


def test_an_unchanged_schema_passes(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    assert schema_problem(tmp_path, "rescore.task", 1, event_schema(RescoreTask)) is None


def test_the_export_refuses_to_rewrite_a_committed_version(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    committed = tmp_path / "rescore.task.v1.json"
    committed.write_text(committed.read_text().replace("One chunk of a rescore", "Edited."))
    with pytest.raises(SchemaChangedError, match=r"rescore\.task\.v1\.json would change"):
        export_schemas(tmp_path)
    assert "Edited." in committed.read_text()
    export_schemas(tmp_path, force=True)
    assert "Edited." not in committed.read_text()


def test_the_command_checks_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", str(tmp_path)]) == 1
    assert "is missing" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 0
    assert main(["--check", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(event_schemas())


# ------------------------------------------------- rules between fields, for machines too


ROLLOUT_ID = "2c6d4e7f-8a9b-4c0d-9e1f-2a3b4c5d6e7f"


@pytest.mark.parametrize(
    ("event", "changes", "valid"),
    [
        (DigitPredicted, {"kind": "shadow", "rollout_id": None}, False),
        (
            DigitPredicted,
            {"kind": "shadow", "rollout_id": "2c6d4e7f-8a9b-4c0d-9e1f-2a3b4c5d6e7f"},
            True,
        ),
        (
            DigitPredicted,
            {"schema_version": 1, "rollout_id": "2c6d4e7f-8a9b-4c0d-9e1f-2a3b4c5d6e7f"},
            False,
        ),
        (DigitPredicted, {"schema_version": 1, "kind": "live", "rollout_id": None}, True),
        (ModelRollout, {"mode": "shadow", "percent": 50.0}, False),
        (ModelRollout, {"mode": "shadow", "percent": 100.0}, True),
        (DeadLetter, {"model_version": 2, "rollout_id": ROLLOUT_ID, "answered_by": 1}, True),
        (DeadLetter, {"model_version": 2, "rollout_id": None, "answered_by": None}, True),
        (DeadLetter, {"model_version": 2, "rollout_id": None, "answered_by": 1}, False),
        (DeadLetter, {"model_version": None, "rollout_id": ROLLOUT_ID, "answered_by": 1}, False),
        (DeadLetter, {"schema_version": 1, "model_version": 2}, False),
        (DeadLetter, {"schema_version": 1, "model_version": None}, True),
    ],
)
def test_the_exported_schema_enforces_the_rules_between_fields(
    event: type[Event], changes: dict[str, object], valid: bool
) -> None:
    """What the models' validators refuse, the committed JSON Schema refuses too (checked with
    jsonschema-rs, schemathesis' validator)."""
    import jsonschema_rs

    sample = next(e for e in sample_events() if type(e) is event)
    payload = json.loads(sample.to_bytes()) | changes
    schema = json.loads(
        (SCHEMAS / schema_filename(event.event_type, schema_version(event))).read_text()
    )
    assert jsonschema_rs.validator_for(schema).is_valid(payload) is valid
    try:
        event.from_bytes(json.dumps(payload).encode())
        parsed = True
    except InvalidEventError:
        parsed = False
    assert parsed is valid
