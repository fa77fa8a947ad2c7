"""Rescore progress for the browser: polled from history-service while a job's predictions flow."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from mnistream_common.history_client import (
    HistoryClient,
    HistoryRefusedError,
    HistoryUnavailableError,
)
from mnistream_common.logs import get_logger

from gateway.hub import EventHub, ServerEvent

log = get_logger(__name__)


class RescoreProgress:
    """One poller per active job; each broadcasts `rescore` events until the job finishes."""

    def __init__(
        self, hub: EventHub, history: HistoryClient, interval: float = 0.3, idle: float = 30.0
    ) -> None:
        self._hub = hub
        self._history = history
        self._interval = interval
        self._idle = idle
        self._last_seen: dict[uuid.UUID, float] = {}
        self._pollers: dict[uuid.UUID, asyncio.Task[None]] = {}

    def seen(self, job_id: uuid.UUID) -> None:
        """A prediction of this job went by."""
        self._last_seen[job_id] = time.monotonic()
        if job_id not in self._pollers:
            self._pollers[job_id] = asyncio.create_task(self._poll(job_id))

    async def close(self) -> None:
        """Stop every poller."""
        for task in self._pollers.values():
            task.cancel()
        for task in self._pollers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self, job_id: uuid.UUID) -> None:
        last: dict[str, Any] | None = None
        try:
            while time.monotonic() - self._last_seen[job_id] < self._idle:
                status = await self._fetch(job_id)
                if status is not None and status != last:
                    self._hub.broadcast(ServerEvent("rescore", status))
                    last = status
                    if status.get("finished"):
                        return
                await asyncio.sleep(self._interval)
        finally:
            self._pollers.pop(job_id, None)
            self._last_seen.pop(job_id, None)

    async def _fetch(self, job_id: uuid.UUID) -> dict[str, Any] | None:
        try:
            job = await self._history.job(job_id)
        except (HistoryUnavailableError, HistoryRefusedError) as exc:
            log.warning("rescore progress unavailable", job_id=str(job_id), error=str(exc))
            return None
        return None if job is None else job.model_dump(mode="json")
