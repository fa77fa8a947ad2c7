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


@dataclass(frozen=True)
class Wanted:
    """The latest promotion seen, with its offset in the ledger."""

    event: ModelPromoted
    offset: int


def decide(
    wanted: Wanted | None,
    serving: ModelRef | None,
    rejected: set[str],
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
    if wanted.event.model.sha256 in rejected:
        return SwapDecision.PREVIOUSLY_REJECTED
    return SwapDecision.LOAD
