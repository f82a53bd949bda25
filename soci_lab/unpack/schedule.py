"""The order in which one image's layers get their unpack slots, and which may unpack while downloading.

Upstream hands the per-image unpack semaphore to layers in the order their downloads finish, so the small
layers, downloaded first, are unpacked first and the largest one — the longest apply — starts last and runs
alone at the end. Here every layer waits in an :class:`UnpackQueue` from the moment its premount task
starts, and a free slot goes to, in this order:

1. the largest (by compressed size) layer whose download has finished, else
2. the largest layer still downloading, if it can be applied **while it downloads** (its download is one
   request written front to back, see :mod:`.fetch`) and fewer than ``stream_slots`` slots are held by
   such layers.

``stream_slots`` defaults to one less than the slots, so one slot is always left for a layer that is
ready: a layer applied while it downloads runs at the network's pace, and on a slow link a slot held by it
would otherwise keep ready layers waiting. With one slot (upstream's default per image) nothing is applied
while downloading, which is upstream's behaviour.

Measured on the eager benchmark image (9 layers, 525 MB gzip; the largest 255 MB; distribution on
loopback, 2 cores): see ``benchmarks/README.md`` and :mod:`.parallel`.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio


@dataclass(eq=False)
class QueuedLayer:
    """One layer's place in the queue."""

    size: int
    streamable: bool = False
    ready: bool = False
    seq: int = 0
    granted: bool = False
    #: granted while still downloading (to be applied as its bytes arrive)
    streaming: bool = False
    done: bool = False
    _wakeup: anyio.Event | None = None


class UnpackQueue:
    """Grants one image's unpack slots (see the module docstring). ``slots <= 0`` means unlimited.

    Its bookkeeping is synchronous (no event loop needed, so it can be tested as a state machine); only
    :meth:`turn` waits."""

    def __init__(self, slots: int, stream_slots: int | None = None) -> None:
        self.slots = slots if slots > 0 else 0
        if stream_slots is None:
            stream_slots = self.slots - 1 if self.slots else 0  # unlimited slots: everyone may stream
        self.stream_slots = max(0, stream_slots)
        self._waiting: list[QueuedLayer] = []
        self.holding: list[QueuedLayer] = []
        #: the most slots ever held at once, and by layers still downloading (for tests and reports)
        self.peak = 0
        self.peak_streaming = 0
        self._seq = itertools.count()

    def enqueue(self, size: int, *, streamable: bool = False, ready: bool = False) -> QueuedLayer:
        """Put a layer in line (its premount task just started); it may be granted at once."""
        entry = QueuedLayer(size, streamable=streamable, ready=ready, seq=next(self._seq))
        self._waiting.append(entry)
        self._dispatch()
        return entry

    def mark_ready(self, entry: QueuedLayer) -> None:
        """``entry``'s download has finished (it now goes before every layer still downloading)."""
        entry.ready = True
        entry.streamable = False
        self._dispatch()

    def mark_unstreamable(self, entry: QueuedLayer) -> None:
        """``entry`` turned out not to be writable front to back (e.g. it is downloaded in chunks)."""
        entry.streamable = False

    def leave(self, entry: QueuedLayer) -> None:
        """``entry`` gives back its slot, or leaves the line without one (its task ended or was cancelled)."""
        if entry.done:
            return
        entry.done = True
        if entry in self._waiting:
            self._waiting.remove(entry)
        if entry in self.holding:
            self.holding.remove(entry)
        self._dispatch()

    @asynccontextmanager
    async def turn(self, entry: QueuedLayer) -> AsyncIterator[bool]:
        """Wait for ``entry``'s slot and hold it; yields whether it was granted while still downloading."""
        try:
            if not entry.granted:
                entry._wakeup = anyio.Event()
                await entry._wakeup.wait()
            yield entry.streaming
        finally:
            self.leave(entry)

    def _dispatch(self) -> None:
        while self._waiting and (not self.slots or len(self.holding) < self.slots):
            pick = self._pick()
            if pick is None:
                return
            self._waiting.remove(pick)
            pick.streaming = not pick.ready
            self.holding.append(pick)
            self.peak = max(self.peak, len(self.holding))
            self.peak_streaming = max(self.peak_streaming, sum(1 for e in self.holding if e.streaming and not e.ready))
            pick.granted = True
            if pick._wakeup is not None:
                pick._wakeup.set()

    def _pick(self) -> QueuedLayer | None:
        def best(entries: list[QueuedLayer]) -> QueuedLayer | None:
            return min(entries, key=lambda e: (-e.size, e.seq), default=None)

        ready = best([e for e in self._waiting if e.ready])
        if ready is not None:
            return ready
        streaming_now = sum(1 for e in self.holding if e.streaming and not e.ready)
        if self.slots and streaming_now >= self.stream_slots:
            return None
        return best([e for e in self._waiting if e.streamable])


__all__ = ["QueuedLayer", "UnpackQueue"]
