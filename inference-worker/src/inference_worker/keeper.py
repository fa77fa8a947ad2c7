"""Keeps the worker's one live model: loads the newest promotion beside the old one, then swaps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mnistream_common.events import ModelPromoted, ModelRef
from mnistream_common.logs import get_logger
from mnistream_serving.loader import ModelUnavailableError
from mnistream_serving.model import LoadedModel, ModelRejectedError

from inference_worker.swap import Refusal, SwapDecision, Wanted, decide, refusal

log = get_logger(__name__)

Loader = Callable[[ModelPromoted], Awaitable[LoadedModel]]
SwapListener = Callable[[LoadedModel, LoadedModel | None], Awaitable[None]]


class ModelKeeper:
    """The model slot read by every batch, and the background task that fills it.

    A batch reads `current` once when it starts, so a swap always falls between two batches
    and no batch ever waits for a load.
    """

    def __init__(self, loader: Loader, on_swap: SwapListener, retry_seconds: float = 2.0) -> None:
        self.current: LoadedModel | None = None
        self.ledger_end_at_start = 0
        self.unreadable_up_to = -1
        self.last_error: str | None = None
        self.decisions = 0  # promotions weighed so far (tests wait on it)
        # Why the model serving is not the ledger's newest promotion (None: it is).
        self.fallback: str | None = None
        self._wanted: Wanted | None = None
        self._ledger: dict[int, ModelPromoted] = {}  # every promotion read, by offset
        self._rejected: set[Refusal] = set()
        self._loader = loader
        self._on_swap = on_swap
        self._retry_seconds = retry_seconds
        self._wake = asyncio.Event()

    @property
    def serving(self) -> ModelRef | None:
        """The model now serving, if any."""
        return self.current.ref if self.current else None

    def promoted(self, event: ModelPromoted, offset: int) -> None:
        """Record a promotion read from the ledger (cheap; the load happens in `run`)."""
        self._ledger[offset] = event
        if self._wanted is None or offset >= self._wanted.offset:
            self._wanted = Wanted(event, offset)
            self._wake.set()

    def skipped(self, offset: int) -> None:
        """An unreadable ledger record at `offset`: the ledger has still been read that far."""
        self.unreadable_up_to = max(self.unreadable_up_to, offset)
        self._wake.set()

    def _ledger_end_to_wait_for(self) -> int:
        # An invalid record at the end of the ledger must not keep a starting worker waiting
        # for a promotion that will never be read.
        if self.unreadable_up_to >= self.ledger_end_at_start - 1:
            return 0
        return self.ledger_end_at_start

    async def run(self) -> None:
        """Load whatever the newest promotion asks for, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            wanted = self._wanted
            decision = decide(wanted, self.serving, self._rejected, self._ledger_end_to_wait_for())
            self.decisions += 1
            if decision is SwapDecision.ALREADY_SERVING:
                self.fallback = None  # the ledger's newest is the model serving again
            if decision is SwapDecision.LOAD and wanted is not None:
                await self._try_load(wanted)

    async def _try_load(self, wanted: Wanted) -> None:
        ref = wanted.event.model
        try:
            model = await self._loader(wanted.event)
        except ModelRejectedError as exc:
            self._rejected.add(refusal(wanted.event))
            self.last_error = f"v{ref.version} rejected: {exc}"
            log.error(
                "model rejected; the old model keeps serving",
                version=ref.version,
                reason=str(exc),
                serving=self.serving.version if self.serving else None,
            )
            if self.current is None:
                await self._fall_back(wanted.offset)
            self._note_fallback(ref)
            return
        except ModelUnavailableError as exc:
            self.last_error = f"v{ref.version} unavailable: {exc}"
            log.warning("model not loadable yet; retrying", version=ref.version, reason=str(exc))
            await asyncio.sleep(self._retry_seconds)
            self._wake.set()
            return
        if self._wanted is not wanted and self._wanted is not None:
            self._wake.set()  # a newer promotion arrived meanwhile; it wins
        previous, self.current = self.current, model
        self.last_error, self.fallback = None, None
        log.info(
            "model swapped in",
            version=ref.version,
            sha256=ref.sha256,
            provider=model.provider,
            previous=previous.ref.version if previous else None,
        )
        await self._on_swap(model, previous)

    async def _fall_back(self, rejected_offset: int) -> None:
        """Nothing serves and the newest promotion cannot (a worker started after an unloadable
        promotion): serve the newest earlier champion that loads."""
        for offset in sorted((o for o in self._ledger if o < rejected_offset), reverse=True):
            event = self._ledger[offset]
            if refusal(event) in self._rejected:
                continue
            try:
                model = await self._loader(event)
            except (ModelRejectedError, ModelUnavailableError) as exc:
                # Unavailable (storage or the registry down) is not a refusal: the next start,
                # or the next promotion, tries it again.
                if isinstance(exc, ModelRejectedError):
                    self._rejected.add(refusal(event))
                log.error(
                    "older champion not loadable either",
                    version=event.model.version,
                    reason=str(exc),
                )
                continue
            self.current = model
            log.warning(
                "serving an earlier champion: the newest promotion cannot be loaded",
                version=event.model.version,
            )
            await self._on_swap(model, None)
            return

    def _note_fallback(self, rejected: ModelRef) -> None:
        if self.current is not None:
            self.fallback = (
                f"v{rejected.version}, the ledger's newest promotion, cannot be loaded; serving "
                f"v{self.current.ref.version}, the newest champion that loads"
            )
