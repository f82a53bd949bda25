"""The sync face of async code: run a coroutine function to completion from a script or a notebook cell.

``anyio.run`` refuses to start inside a thread that already runs an event loop — which is exactly where a
Jupyter cell runs. There the call is handed to a worker thread with its own loop, so every sync helper of
the library (``pull``, ``create_soci_index``, ``copy_image`` …) works the same in a script and in a notebook.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


def run_sync(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run to completion, even when this thread already runs an event loop."""
    call = functools.partial(fn, *args, **kwargs)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(call)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="soci-lab-sync") as pool:
        return pool.submit(anyio.run, call).result()
