"""Pace: a rescore worker's drawings per second, when RESCORE_MAX_RATE sets one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rescore_worker.handlers import Pace
from rescore_worker.settings import Settings


class Clock:
    """A clock that moves only when the pace sleeps (asyncio.sleep is replaced)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr("rescore_worker.handlers.asyncio.sleep", sleep)
    return clock


async def test_chunks_are_spaced_by_their_size_over_the_rate(clock: Clock) -> None:
    pace = Pace(rate=100.0, clock=clock)
    waits = [await pace.take(20) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.2, 0.2, 0.2, 0.2])
    assert clock.now == pytest.approx(100.8)  # 100 drawings in 1 s once the fifth may start


async def test_time_left_unused_is_not_saved_up(clock: Clock) -> None:
    pace = Pace(rate=100.0, clock=clock)
    await pace.take(20)
    clock.now += 3600  # an hour with no chunks
    assert await pace.take(20) == 0.0
    assert await pace.take(20) == pytest.approx(0.2)


async def test_no_rate_means_no_wait(clock: Clock) -> None:
    pace = Pace(clock=clock)
    assert [await pace.take(10_000) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert clock.now == 100.0


def test_a_chunk_that_would_be_held_over_a_minute_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="over 60 s a chunk"):
        Settings(rescore_chunk_size=500, rescore_max_rate=5)
    assert Settings(rescore_chunk_size=500, rescore_max_rate=10).rescore_max_rate == 10
