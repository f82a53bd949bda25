"""The parallel puller's unpack slots: the policy of :mod:`soci_lab.slotqueue` with an async wait.

Which layer gets a slot, and which may be applied while it downloads, is decided there (the simulator runs
the same code). Measured on the eager benchmark image (9 layers, 525 MB gzip; the largest 255 MB;
distribution on loopback, 2 cores): see ``benchmarks/README.md`` and :mod:`.parallel`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ..slotqueue import QueuedLayer, SlotQueue


class UnpackQueue(SlotQueue):
    """One image's unpack slots for the real puller; its bookkeeping is synchronous (no event loop needed,
    so it can be tested as a state machine); only :meth:`turn` waits."""

    def _granted(self, entry: QueuedLayer) -> None:
        if entry.waiter is not None:
            entry.waiter.set()

    @asynccontextmanager
    async def turn(self, entry: QueuedLayer) -> AsyncIterator[bool]:
        """Wait for ``entry``'s slot and hold it; yields whether it was granted while still downloading."""
        try:
            if not entry.granted:
                entry.waiter = anyio.Event()
                await entry.waiter.wait()
            yield entry.streaming
        finally:
            self.leave(entry)


__all__ = ["QueuedLayer", "UnpackQueue"]
