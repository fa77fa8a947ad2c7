"""Waiting in tests: poll a condition until it holds, and fail with what was awaited.

`eventually` is the one way to wait (never a bare sleep). It takes a sync or an async predicate
and returns its first truthy result. `eventually_sync` is the same loop for the browser tests,
whose Playwright driver is synchronous.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import pytest

T = TypeVar("T")


class _Deadline:
    def __init__(self, within: float, message: str) -> None:
        self.within = within
        self.message = message
        self.end = time.monotonic() + within

    def check(self, last: object) -> None:
        if time.monotonic() >= self.end:
            pytest.fail(
                f"{self.message}: still not the case after {self.within:g} s (last: {last!r})"
            )


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]], within: float, message: str, interval: float = ...
) -> T: ...
@overload
async def eventually(
    predicate: Callable[[], T], within: float, message: str, interval: float = ...
) -> T: ...
async def eventually(
    predicate: Callable[[], Any], within: float, message: str, interval: float = 0.1
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy; return that."""
    deadline = _Deadline(within, message)
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        deadline.check(value)
        await asyncio.sleep(interval)


def eventually_sync(
    predicate: Callable[[], T], within: float, message: str, interval: float = 0.1
) -> T:
    """`eventually` for synchronous tests (the browser's): blocks between polls."""
    deadline = _Deadline(within, message)
    while True:
        value = predicate()
        if value:
            return value
        deadline.check(value)
        time.sleep(interval)
