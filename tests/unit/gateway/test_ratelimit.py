"""The upload limit is one per client across every gateway process: counted in a shared file,
under a lock, with the sliding window rule and a Retry-After a client can act on."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from gateway.ratelimit import WINDOW_S, SharedRateLimiter

T0 = 1_800_000_000.0  # the start of a minute


def test_the_limit_refuses_the_next_upload_and_says_when_to_retry(tmp_path: Path) -> None:
    limiter = SharedRateLimiter(tmp_path / "limit", 5)

    verdicts = [limiter.hit("10.0.0.1", now=T0 + 10) for _ in range(6)]

    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert verdicts[-1].retry_after_s == 50, "the window rolls over at T0 + 60"


def test_clients_have_limits_of_their_own(tmp_path: Path) -> None:
    limiter = SharedRateLimiter(tmp_path / "limit", 2)
    for _ in range(2):
        limiter.hit("10.0.0.1", now=T0)

    assert not limiter.hit("10.0.0.1", now=T0).allowed
    assert limiter.hit("10.0.0.2", now=T0).allowed


def test_the_previous_minute_counts_as_much_as_it_still_overlaps(tmp_path: Path) -> None:
    limiter = SharedRateLimiter(tmp_path / "limit", 10)
    for _ in range(10):
        assert limiter.hit("c", now=T0 + 59).allowed

    # 15 s into the next minute, 3/4 of the last one still counts: 7.5 of 10 are used, so a
    # third upload still fits (9.5 before it) and a fourth does not (10.5).
    allowed = [limiter.hit("c", now=T0 + WINDOW_S + 15).allowed for _ in range(4)]

    assert allowed == [True, True, True, False]


def test_two_limiters_on_one_file_share_the_count(tmp_path: Path) -> None:
    first = SharedRateLimiter(tmp_path / "limit", 3)
    second = SharedRateLimiter(tmp_path / "limit", 3)

    results = [first.hit("c", now=T0).allowed, second.hit("c", now=T0).allowed]
    results += [first.hit("c", now=T0).allowed, second.hit("c", now=T0).allowed]

    assert results == [True, True, True, False]


LIMIT, TRIES, RACERS = 20_000, 10_000, 3


def _hammer(path: str, go: Any, allowed: Any) -> None:
    limiter = SharedRateLimiter(Path(path), LIMIT)
    go.wait(30)  # every process starts counting at once
    allowed.put(sum(limiter.hit("one client", now=T0).allowed for _ in range(TRIES)))


def test_processes_racing_never_let_more_than_the_limit_through(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    go, allowed = context.Event(), context.Queue()
    path = str(tmp_path / "limit")
    workers = [context.Process(target=_hammer, args=(path, go, allowed)) for _ in range(RACERS)]
    for worker in workers:
        worker.start()
    go.set()
    counts = [allowed.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(10)

    assert sum(counts) == LIMIT, counts
