"""Which promotion is the newest: a job planned for an older one is superseded."""

from __future__ import annotations

import uuid

from mnistream_common.events import ModelPromoted
from mnistream_common.rescore import job_id_for


class Ledger:
    """Offsets of the promotions this worker has read from `model.promoted`."""

    def __init__(self) -> None:
        self._offsets: dict[uuid.UUID, int] = {}
        self.latest_offset = -1

    def record(self, event: ModelPromoted, offset: int) -> None:
        """Remember a promotion and its ledger offset."""
        self._offsets[job_id_for(event)] = offset
        self.latest_offset = max(self.latest_offset, offset)

    def superseded(self, job_id: uuid.UUID) -> bool:
        """True when a newer promotion than this job's has been seen.

        A job this worker has not read the promotion of yet is not superseded (when unsure,
        rescoring is the safe side).
        """
        offset = self._offsets.get(job_id)
        return offset is not None and offset < self.latest_offset
