"""Fan-out of events to SSE clients and to uploads waiting for their prediction (`?wait=`)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerEvent:
    """One SSE message: an event name and its JSON-ready data."""

    name: str
    data: dict[str, Any]


class EventHub:
    """Every gateway instance reads all predictions; the hub hands each to whoever waits for it.

    Slow SSE clients lose their oldest events rather than slowing the consumer down.
    """

    def __init__(self, queue_size: int = 1000, recent_ids: int = 50_000) -> None:
        self._queue_size = queue_size
        self._clients: set[asyncio.Queue[ServerEvent]] = set()
        self._waiters: dict[uuid.UUID, asyncio.Future[dict[str, Any]]] = {}
        self._recent: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._recent_limit = recent_ids

    @property
    def client_count(self) -> int:
        """Connected SSE clients."""
        return len(self._clients)

    def accepted(self, digit_id: uuid.UUID) -> None:
        """Remember an id this gateway accepted (labels may arrive before history stores it)."""
        self._recent[digit_id] = None
        if len(self._recent) > self._recent_limit:
            self._recent.popitem(last=False)

    def recently_accepted(self, digit_id: uuid.UUID) -> bool:
        """Whether this instance accepted the id recently."""
        return digit_id in self._recent

    def expect(self, digit_id: uuid.UUID) -> asyncio.Future[dict[str, Any]]:
        """A future resolved with the first live prediction of `digit_id`."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[digit_id] = future
        return future

    def forget(self, digit_id: uuid.UUID) -> None:
        """Stop waiting for `digit_id` (timed out or answered)."""
        self._waiters.pop(digit_id, None)

    def prediction(self, digit_id: uuid.UUID, data: dict[str, Any]) -> None:
        """Deliver a live prediction to its waiter and to every SSE client."""
        waiter = self._waiters.pop(digit_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(data)
        self.broadcast(ServerEvent("prediction", data))

    def broadcast(self, event: ServerEvent) -> None:
        """Queue an event for every SSE client, dropping a slow client's oldest event."""
        for queue in self._clients:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[ServerEvent]:
        """The events for one SSE client, until it disconnects."""
        queue: asyncio.Queue[ServerEvent] = asyncio.Queue(self._queue_size)
        self._clients.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._clients.discard(queue)
