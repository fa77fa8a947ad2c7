"""The per-client upload limit, shared by every gateway process on the host.

With GATEWAY_WORKERS > 1 the kernel hands a client's connections to any process, so a limit kept
in one process's memory would let a client through N times. The counters live in a small
memory-mapped file instead, one slot per client (by a hash of its address), updated under an
exclusive file lock: a few microseconds per upload.

The rule is a sliding window counter, as `limits` has it: the count of the current minute plus
the previous minute's, weighted by how much of it still overlaps the last 60 s. Two clients whose
addresses hash to one slot share a limit (4,096 slots make that rare, and it only ever errs on the
strict side).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

SLOTS = 4096
# Per slot: the window's start (minutes since the epoch), its count, the previous window's count.
SLOT = struct.Struct("<qqq")
WINDOW_S = 60


@dataclass(frozen=True)
class Verdict:
    """Whether an upload may go on, and when to retry if not."""

    allowed: bool
    retry_after_s: int


class SharedRateLimiter:
    """`limit` uploads per client per minute, counted across the processes sharing `path`."""

    def __init__(self, path: Path, limit: int) -> None:
        self.limit = limit
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = SLOTS * SLOT.size
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)

    def hit(self, client: str, now: float | None = None) -> Verdict:
        """Count one upload by `client` unless it is over its limit."""
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        offset = self._slot(client) * SLOT.size
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            start, count, previous = SLOT.unpack_from(self._map, offset)
            if start != window:
                previous = count if start == window - 1 else 0
                start, count = window, 0
            overlap = 1.0 - (now - window * WINDOW_S) / WINDOW_S
            if count + previous * overlap >= self.limit:
                return Verdict(False, self._retry_after(now, window, count, previous))
            SLOT.pack_into(self._map, offset, start, count + 1, previous)
            return Verdict(True, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the mapping."""
        self._map.close()
        os.close(self._fd)

    def _retry_after(self, now: float, window: int, count: int, previous: int) -> int:
        # The earliest time the weighted count drops below the limit: the previous window's
        # share fades out over this one, then the window itself rolls over.
        next_window = (window + 1) * WINDOW_S
        if previous and count < self.limit:
            fraction = 1.0 - (self.limit - count) / previous
            at = window * WINDOW_S + fraction * WINDOW_S
            return max(1, math.ceil(min(at, next_window) - now))
        return max(1, math.ceil(next_window - now))

    @staticmethod
    def _slot(client: str) -> int:
        digest = hashlib.blake2b(client.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") % SLOTS
