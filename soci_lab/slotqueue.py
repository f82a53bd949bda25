"""The order in which one image's layers get their unpack slots, and which may unpack while downloading.

Upstream hands the per-image unpack semaphore to layers in the order their downloads finish, so the small
layers, downloaded first, are unpacked first and the largest one — the longest apply — starts last and runs
alone at the end. Here every layer waits in a :class:`SlotQueue` from the moment its premount task starts,
and a free slot goes to, in this order:

1. the largest (by compressed size) layer whose download has finished, else
2. the largest layer still downloading, if it can be applied **while it downloads** (its download is one
   request written front to back) and fewer than ``stream_slots`` slots are held by such layers.

Ties go to the layer enqueued first. ``stream_slots`` defaults to one less than the slots, so one slot is
always left for a layer that is ready: a layer applied while it downloads runs at the network's pace, and on
a slow link a slot held by it would otherwise keep ready layers waiting. With one slot (upstream's default
per image) nothing is applied while downloading, which is upstream's behaviour.

This module is the policy alone — synchronous, no I/O, no event loop — so that the real puller
(:mod:`soci_lab.unpack.schedule`, which adds the async wait) and the simulator (:mod:`soci_lab.sim.schedule`,
which wakes a simpy process) run the very same code: the house rules keep ``sim/`` from importing
``unpack/``, not from sharing a leaf module with it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any


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
    #: what wakes the layer's task when it is granted (an anyio or a simpy event; the queue's subclass sets it)
    waiter: Any = None


class SlotQueue:
    """Grants one image's unpack slots (see the module docstring). ``slots <= 0`` means unlimited.

    Subclasses wake the granted layer's task: :meth:`_made` runs when a layer is put in line, before it can
    be granted, and :meth:`_granted` at its grant."""

    def __init__(self, slots: int, stream_slots: int | None = None) -> None:
        self.slots = slots if slots > 0 else 0
        if stream_slots is None:
            stream_slots = self.slots - 1 if self.slots else 0  # unlimited slots: everyone may stream
        self.stream_slots = max(0, stream_slots)
        self._waiting: list[QueuedLayer] = []
        self.holding: list[QueuedLayer] = []
        #: every grant in order, with whether it was granted while downloading (for tests and reports)
        self.grants: list[tuple[QueuedLayer, bool]] = []
        #: the most slots ever held at once, and by layers still downloading
        self.peak = 0
        self.peak_streaming = 0
        self._seq = itertools.count()

    def enqueue(self, size: int, *, streamable: bool = False, ready: bool = False) -> QueuedLayer:
        """Put a layer in line (its premount task just started); it may be granted at once."""
        entry = QueuedLayer(size, streamable=streamable, ready=ready, seq=next(self._seq))
        self._made(entry)
        self._waiting.append(entry)
        self._dispatch()
        return entry

    def mark_ready(self, entry: QueuedLayer) -> None:
        """``entry``'s download has finished (it now goes before every layer still downloading)."""
        entry.ready = True
        entry.streamable = False
        self._dispatch()

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

    def streaming_now(self) -> int:
        """Slots held by layers still downloading."""
        return sum(1 for e in self.holding if e.streaming and not e.ready)

    def _made(self, entry: QueuedLayer) -> None:
        """A layer was put in line (nothing to do here)."""

    def _granted(self, entry: QueuedLayer) -> None:
        """A layer got its slot (nothing to do here)."""

    def _dispatch(self) -> None:
        while self._waiting and (not self.slots or len(self.holding) < self.slots):
            pick = self._pick()
            if pick is None:
                return
            self._waiting.remove(pick)
            pick.streaming = not pick.ready
            self.holding.append(pick)
            self.peak = max(self.peak, len(self.holding))
            self.peak_streaming = max(self.peak_streaming, self.streaming_now())
            pick.granted = True
            self.grants.append((pick, pick.streaming))
            self._granted(pick)

    def _pick(self) -> QueuedLayer | None:
        def best(entries: list[QueuedLayer]) -> QueuedLayer | None:
            return min(entries, key=lambda e: (-e.size, e.seq), default=None)

        ready = best([e for e in self._waiting if e.ready])
        if ready is not None:
            return ready
        if self.slots and self.streaming_now() >= self.stream_slots:
            return None
        return best([e for e in self._waiting if e.streamable])


__all__ = ["QueuedLayer", "SlotQueue"]
