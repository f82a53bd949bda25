"""Run one coroutine per item, a few at a time, and fail with the first real error (not an ExceptionGroup).

A user of ``index create`` or a mount should see "zTOC sha256:… does not match its digest", not a task
group's wrapper; the first failure cancels the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import anyio

T = TypeVar("T")


async def run_all(fn: Callable[[T], Awaitable[None]], items: Iterable[T], limit: int) -> None:
    """Await ``fn(item)`` for every item, at most ``limit`` at once; re-raise the first exception."""
    limiter = anyio.CapacityLimiter(max(1, limit))
    errors: list[BaseException] = []

    async with anyio.create_task_group() as tg:

        async def guarded(item: T) -> None:
            async with limiter:
                try:
                    await fn(item)
                except Exception as exc:
                    errors.append(exc)
                    tg.cancel_scope.cancel()

        for item in items:
            tg.start_soon(guarded, item)
    if errors:
        raise errors[0]
