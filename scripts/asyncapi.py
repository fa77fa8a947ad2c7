"""Generate the AsyncAPI 3.0 document of every service's topics with FastStream.

    uv run python scripts/asyncapi.py docs/asyncapi          # write
    uv run python scripts/asyncapi.py docs/asyncapi --check  # fail if the committed ones differ

Each service's broker is built with the service's own registration code (nothing connects).
Handlers take raw records and parse them in `mnistream_common.consume` (so that poison can be
dead-lettered instead of failing validation), which leaves FastStream without payload types; the
payload of every message is therefore filled in from the event model of its topic
(mnistream_common.topics).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from mnistream_common.topics import ALL_TOPICS


def gateway_broker() -> KafkaBroker:
    """The gateway's publishers and subscribers."""
    from gateway.app import describe_broker

    return describe_broker()


def inference_broker() -> KafkaBroker:
    """An inference worker's publishers and subscribers."""
    from inference_worker.app import describe_broker

    return describe_broker()


def history_broker() -> KafkaBroker:
    """history-service's subscribers and dead-letter publisher."""
    from history_service.app import describe_broker

    return describe_broker()


def rescore_broker() -> KafkaBroker:
    """A rescore worker's publishers and subscribers."""
    from rescore_worker.app import describe_broker

    return describe_broker()


SERVICES: dict[str, Callable[[], KafkaBroker]] = {
    "gateway": gateway_broker,
    "inference-worker": inference_broker,
    "history-service": history_broker,
    "rescore-worker": rescore_broker,
}


def document(service: str, broker: KafkaBroker) -> dict[str, Any]:
    """The AsyncAPI document of one service, with event payload schemas."""
    spec = AsyncAPI(
        broker,
        title=f"mnistream {service}",
        version="1",
        description=f"Kafka topics {service} consumes and produces. See docs/events.md.",
    ).to_specification()
    doc: dict[str, Any] = json.loads(spec.to_json())
    topics = {t.name: t.events for t in ALL_TOPICS}
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for channel in doc.get("channels", {}).values():
        events = topics.get(channel["address"])
        if events is None:
            continue
        for event in events:
            schemas[event.__name__] = event.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            for defs_name, sub in schemas[event.__name__].pop("$defs", {}).items():
                schemas[defs_name] = sub
        refs = [{"$ref": f"#/components/schemas/{e.__name__}"} for e in events]
        for ref in channel["messages"].values():
            message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
            message["payload"] = refs[0] if len(refs) == 1 else {"oneOf": refs}
            message["title"] = " or ".join(e.__name__ for e in events)
    schemas.pop("EmptyPayload", None)
    for name in [n for n in schemas if n.endswith(":Payload")]:
        schemas.pop(name)
    return doc


def main() -> int:
    """Write (or check) docs/asyncapi/<service>.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    # The documents show the default local broker, whatever this shell points at.
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = "127.0.0.1:9092"
    stale = []
    for service, build in SERVICES.items():
        text = json.dumps(document(service, build()), indent=2, sort_keys=True) + "\n"
        path = args.folder / f"{service}.json"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            args.folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run `make asyncapi`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
