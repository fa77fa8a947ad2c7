"""JSON Schema of every event, for machines: exported to the committed `schemas/` folder.

    python -m mnistream_common.schemas schemas          # export, what `make schemas` runs
    python -m mnistream_common.schemas --check schemas  # exit 1 when the folder is out of date

One file per event and version, `<event_type>.v<schema_version>.json`. A committed version is a
published contract: export refuses to rewrite it with a different schema (bump `schema_version`
instead; `--force` overrides, for a version nobody has produced yet). Files of older versions
stay: they document what consumers may still meet when replaying a topic from the beginning.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from mnistream_common.events import ALL_EVENTS, Event

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILE = re.compile(r"^(?P<event_type>.+)\.v(?P<version>\d+)\.json$")

JsonSchema = dict[str, Any]


def schema_version(event: type[Event]) -> int:
    """The version an event class produces (its `schema_version` default)."""
    version = event.model_fields["schema_version"].default
    if not isinstance(version, int):
        raise TypeError(f"{event.__name__}.schema_version must default to an int, not {version!r}")
    return version


def schema_filename(event_type: str, version: int) -> str:
    """The file name of one event version's schema: `digit.submitted.v1.json`."""
    return f"{event_type}.v{version}.json"


def event_schema(event: type[Event]) -> JsonSchema:
    """The JSON Schema of the current version of one event, as a consumer validates it."""
    return {"$schema": JSON_SCHEMA_DIALECT, **event.model_json_schema()}


def event_schemas() -> dict[str, JsonSchema]:
    """File name → JSON Schema, for the current version of every event."""
    return {
        schema_filename(event.event_type, schema_version(event)): event_schema(event)
        for event in ALL_EVENTS
    }


def render_schema(schema: JsonSchema) -> str:
    """Stable text of a schema: sorted keys, 2-space indent, a trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class SchemaChangedError(Exception):
    """A committed schema version would be rewritten with a different schema."""


def export_schemas(directory: Path, *, force: bool = False) -> list[Path]:
    """Write the current schema of every event into `directory`; returns the files written.

    Raises `SchemaChangedError` (and writes nothing) when a committed version would change.
    """
    directory.mkdir(parents=True, exist_ok=True)
    schemas = event_schemas()
    changed = [name for name in schemas if _differs(directory / name, schemas[name])]
    if changed and not force:
        raise SchemaChangedError(
            f"{', '.join(changed)} would change; a committed schema version is a published "
            "contract: bump the event's schema_version instead (or pass --force for a version "
            "nobody has produced yet)"
        )
    written = []
    for name, schema in schemas.items():
        path = directory / name
        path.write_text(render_schema(schema), encoding="utf-8")
        written.append(path)
    return written


def _differs(path: Path, schema: JsonSchema) -> bool:
    return path.exists() and path.read_text(encoding="utf-8") != render_schema(schema)


def committed_versions(directory: Path, event_type: str) -> list[int]:
    """The versions of one event that have a schema file in `directory`, ascending."""
    versions = []
    for path in directory.glob("*.json"):
        match = SCHEMA_FILE.match(path.name)
        if match and match["event_type"] == event_type:
            versions.append(int(match["version"]))
    return sorted(versions)


def schema_problem(
    directory: Path, event_type: str, version: int, schema: JsonSchema
) -> str | None:
    """Why the committed schema of one event version does not match `schema`, or None."""
    path = directory / schema_filename(event_type, version)
    if not path.exists():
        return _missing_file_problem(directory, event_type, version, path)
    if path.read_text(encoding="utf-8") == render_schema(schema):
        return None
    return (
        f"the schema of {event_type} changed but its schema_version is still {version} "
        f"({path} differs from the model). Consumers may already hold v{version} records, so a "
        f"changed contract needs a new version: bump schema_version to {version + 1} and run "
        "`make schemas` (keep the old file)."
    )


def _missing_file_problem(directory: Path, event_type: str, version: int, path: Path) -> str:
    older = [v for v in committed_versions(directory, event_type) if v < version]
    if older:
        return (
            f"a new schema_version {version} of {event_type} was introduced (committed: "
            f"v{', v'.join(map(str, older))}); run `make schemas` to export {path.name} "
            "and commit it next to the old file."
        )
    return f"{path} is missing; run `make schemas` to export it and commit it."


def schema_problems(directory: Path) -> list[str]:
    """Every way the committed folder differs from the current event models."""
    problems = []
    for event in ALL_EVENTS:
        problem = schema_problem(
            directory, event.event_type, schema_version(event), event_schema(event)
        )
        if problem:
            problems.append(problem)
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: export (default) or check the schema folder."""
    parser = argparse.ArgumentParser(
        prog="python -m mnistream_common.schemas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", type=Path, help="the schema folder, normally schemas/")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    parser.add_argument("--force", action="store_true", help="rewrite changed committed versions")
    args = parser.parse_args(argv)
    if args.check:
        problems = schema_problems(args.directory)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    try:
        written = export_schemas(args.directory, force=args.force)
    except SchemaChangedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
