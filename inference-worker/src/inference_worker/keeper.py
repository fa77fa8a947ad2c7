"""Keeps the worker's models: the champion (the newest promotion, loaded beside the old one,
then swapped in) and, during a rollout, the candidate beside it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mnistream_common.events import ModelPromoted, ModelRef, ModelRollout
from mnistream_common.ledger import LedgerState, Rollout
from mnistream_common.logs import get_logger
from mnistream_serving.loader import ModelUnavailableError
from mnistream_serving.model import LoadedModel, ModelRejectedError

from inference_worker.swap import Refusal, SwapDecision, Wanted, decide, refusal

log = get_logger(__name__)

Loader = Callable[[ModelRef, str], Awaitable[LoadedModel]]
"""Loads a model version from its ONNX object (s3://bucket/key), checked."""
SwapListener = Callable[[LoadedModel, LoadedModel | None], Awaitable[None]]


@dataclass(frozen=True)
class Release:
    """A running rollout and its candidate, loaded: what a batch needs to route its drawings.
    Set and cleared as one value, so a batch never sees a rollout without its model."""

    rollout: Rollout
    candidate: LoadedModel


class ModelKeeper:
    """The model slot read by every batch, and the background task that fills it.

    A batch reads `current` and `release` once when it starts, so a swap, or a rollout
    starting or ending, always falls between two batches and no batch ever waits for a load.
    A candidate that cannot be loaded leaves the champion serving alone.
    """

    def __init__(
        self,
        loader: Loader,
        on_swap: SwapListener,
        retry_seconds: float = 2.0,
        on_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.current: LoadedModel | None = None
        self.ledger_end_at_start = 0
        self.unreadable_up_to = -1
        self.last_error: str | None = None
        self.decisions = 0  # promotions weighed so far (tests wait on it)
        # Why the model serving is not the ledger's newest promotion (None: it is).
        self.fallback: str | None = None
        self.release: Release | None = None
        self.candidate_error: str | None = None  # why the rollout's candidate is not loaded
        self.ledger = LedgerState()
        self.read_up_to = -1  # the last ledger offset read, valid or not
        self._wanted: Wanted | None = None
        self._candidates_rejected: set[tuple[str, int, str, str]] = set()
        # The candidate (and its object) of the rollout a promotion just completed.
        self._retired: tuple[LoadedModel, str] | None = None
        self._ledger: dict[int, ModelPromoted] = {}  # every promotion read, by offset
        self._rejected: set[Refusal] = set()
        self._loader = loader
        self._on_swap = on_swap
        self._on_ready = on_ready
        self.ready = False  # the models to serve with are in place: consuming may start
        self._retry_seconds = retry_seconds
        self._wake = asyncio.Event()

    @property
    def serving(self) -> ModelRef | None:
        """The model now serving, if any."""
        return self.current.ref if self.current else None

    def promoted(self, event: ModelPromoted, offset: int) -> None:
        """Record a promotion read from the ledger (cheap; the load happens in `run`)."""
        self._ledger[offset] = event
        self._apply(event, offset)
        if self._wanted is None or offset >= self._wanted.offset:
            self._wanted = Wanted(event, offset)
        self._wake.set()

    def rollout_step(self, event: ModelRollout, offset: int) -> None:
        """Record a rollout step read from the ledger (the candidate loads in `run`)."""
        self._apply(event, offset)
        self._wake.set()

    def _apply(self, event: ModelPromoted | ModelRollout, offset: int) -> None:
        self.read_up_to = max(self.read_up_to, offset)
        ignored = self.ledger.apply(event, offset)
        self._sync_release()
        if ignored is not None and isinstance(event, ModelRollout):
            log.warning(
                "a rollout step does not apply; ignored",
                rollout_id=str(event.rollout_id),
                action=event.action,
                offset=offset,
                why=ignored,
            )

    def skipped(self, offset: int) -> None:
        """An unreadable ledger record at `offset`: the ledger has still been read that far."""
        self.unreadable_up_to = max(self.unreadable_up_to, offset)
        self.read_up_to = max(self.read_up_to, offset)
        self._wake.set()

    def _ledger_end_to_wait_for(self) -> int:
        # Once the ledger is read up to where it ended at start (the last record may be a
        # rollout step, or invalid), nothing is left to wait for.
        if self.read_up_to >= self.ledger_end_at_start - 1:
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
            self._retired = None  # used by that load, or not wanted: not held any longer
            if self.current is not None and self._ledger_end_to_wait_for() == 0:
                await self._settle_release()
                await self._announce_ready()

    async def _announce_ready(self) -> None:
        """Once, when the champion is in place and the running rollout's candidate has been
        tried (loaded, refused, or not loadable yet): a worker restarted during a canary must not
        answer the candidate's share with the champion while the candidate still loads."""
        if self.ready:
            return
        self.ready = True
        if self._on_ready is not None:
            await self._on_ready()

    async def _settle_release(self) -> None:
        """Load the running rollout's candidate when it is not held yet."""
        rollout = self.ledger.rollout
        if rollout is None:
            self.candidate_error = None
            return
        if self.release is not None:
            return  # `_apply` keeps it in step with the ledger
        start = rollout.started
        key = (
            start.candidate.name,
            start.candidate.version,
            start.candidate.sha256,
            start.onnx_uri,
        )
        if key in self._candidates_rejected:
            return
        try:
            candidate = await self._loader(start.candidate, start.onnx_uri)
        except ModelRejectedError as exc:
            self._candidates_rejected.add(key)
            self.candidate_error = f"candidate v{start.candidate.version} rejected: {exc}"
            log.error(
                "rollout candidate rejected; the champion serves alone",
                version=start.candidate.version,
                reason=str(exc),
            )
            return
        except ModelUnavailableError as exc:
            self.candidate_error = f"candidate v{start.candidate.version} unavailable: {exc}"
            log.warning(
                "rollout candidate not loadable yet; retrying",
                version=start.candidate.version,
                reason=str(exc),
            )
            await asyncio.sleep(self._retry_seconds)
            self._wake.set()
            return
        now = self.ledger.rollout
        if now is None or now.rollout_id != rollout.rollout_id:
            self._wake.set()  # it ended (or another started) while loading: not installed
            return
        self.release = Release(now, candidate)
        self.candidate_error = None
        log.info(
            "rollout candidate loaded",
            rollout_id=str(now.rollout_id),
            mode=start.mode,
            candidate=start.candidate.version,
            percent=now.percent,
            provider=candidate.provider,
        )

    def _sync_release(self) -> None:
        """Keep the release in step with the ledger at once: a rollout that ended is not
        served another batch, and a new share applies to the next batch."""
        release, rollout = self.release, self.ledger.rollout
        if release is None:
            return
        if rollout is None or rollout.rollout_id != release.rollout.rollout_id:
            self.release = None
            ended = self.ledger.ended[-1] if self.ledger.ended else None
            if ended is not None and ended.outcome == "completed":
                # The promotion that completed it swaps it in.
                self._retired = (release.candidate, release.rollout.started.onnx_uri)
            log.info(
                "rollout ended; the champion serves alone",
                rollout_id=str(release.rollout.rollout_id),
                candidate=release.candidate.ref.version,
            )
        elif rollout != release.rollout:
            self.release = Release(rollout, release.candidate)
            log.info("rollout share changed", percent=rollout.percent)

    async def _champion_model(self, event: ModelPromoted) -> LoadedModel:
        """The promoted model: the rollout's candidate this worker held, when the promotion
        completes that rollout (already checked and warm: the swap is at once), else loaded."""
        retired, self._retired = self._retired, None
        if retired is not None and (retired[0].ref, retired[1]) == (event.model, event.onnx_uri):
            return retired[0]  # the same model from the same object, checked when loaded
        return await self._loader(event.model, event.onnx_uri)

    async def _try_load(self, wanted: Wanted) -> None:
        ref = wanted.event.model
        try:
            model = await self._champion_model(wanted.event)
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
                if self.current is not None:
                    # Consuming starts before the fallback is reported: a worker that says
                    # what it serves instead is serving it.
                    await self._settle_release()
                    await self._announce_ready()
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
                model = await self._loader(event.model, event.onnx_uri)
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
