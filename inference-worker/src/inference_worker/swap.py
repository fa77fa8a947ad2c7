"""Which model a worker should hold: the pure part of hot swapping."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mnistream_common.events import ModelPromoted, ModelRef


class SwapDecision(Enum):
    """What to do with a promotion."""

    LOAD = "load"
    ALREADY_SERVING = "already-serving"
    PREVIOUSLY_REJECTED = "previously-rejected"
    WAIT_FOR_LEDGER = "wait-for-ledger"


# A refused promotion is remembered by what was checked: the model, version and object the
# registry vouched for or not. By sha256 alone, a forged promotion reusing a real model's hash
# under another version would make every worker refuse that real model until restarted.
Refusal = tuple[str, int, str, str]


def refusal(event: ModelPromoted) -> Refusal:
    """What a refused promotion is remembered by."""
    return (event.model.name, event.model.version, event.model.sha256, event.onnx_uri)


@dataclass(frozen=True)
class Wanted:
    """The latest promotion seen, with its offset in the ledger."""

    event: ModelPromoted
    offset: int


def decide(
    wanted: Wanted | None,
    serving: ModelRef | None,
    rejected: set[Refusal],
    ledger_end_at_start: int,
) -> SwapDecision:
    """Load only the newest promotion, once the ledger has been read up to where it ended at start.

    Reading the ledger from the beginning replays old promotions; loading each would be waste,
    so nothing is loaded before the last record present at start-up has been seen.
    """
    if wanted is None or wanted.offset < ledger_end_at_start - 1:
        return SwapDecision.WAIT_FOR_LEDGER
    if serving is not None and serving.sha256 == wanted.event.model.sha256:
        return SwapDecision.ALREADY_SERVING
    if refusal(wanted.event) in rejected:
        return SwapDecision.PREVIOUSLY_REJECTED
    return SwapDecision.LOAD
