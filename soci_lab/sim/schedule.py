"""The parallel puller's unpack grant order, in simulated time: the policy of ``soci_lab.unpack.schedule``.

The real ``UnpackQueue`` hands one image's unpack slots to (1) the largest (compressed size) layer whose
download has finished, else (2) the largest layer still downloading that can be applied while it downloads
("streamable": one whole-blob request of a known size), if fewer than ``stream_slots`` slots are held by
layers still downloading. ``stream_slots`` defaults to one less than the slots (``slots <= 0``: unlimited,
and then every streamable layer may stream). Ties go to the layer enqueued first.

The house rules keep ``sim/`` from importing ``unpack/``, so the policy is written again here, with the
same method names and the same bookkeeping; ``tests/sim/test_unpack_order.py`` drives both queues with the
same random operations and requires the same grants. The one difference: a grant here succeeds the entry's
simpy event (:attr:`SimQueuedLayer.granted_event`) instead of waking an anyio task.
"""

from __future__ import annotations

import itertools

import simpy


class SimQueuedLayer:
    """One layer's place in the queue (fields as ``soci_lab.unpack.schedule.QueuedLayer``)."""

    __slots__ = ("done", "granted", "granted_event", "ready", "seq", "size", "streamable", "streaming")

    def __init__(self, env: simpy.Environment, size: int, *, streamable: bool, ready: bool, seq: int) -> None:
        self.size = size
        self.streamable = streamable
        self.ready = ready
        self.seq = seq
        self.granted = False
        #: granted while still downloading (to be applied as its bytes arrive)
        self.streaming = False
        self.done = False
        #: fires when the layer is granted its slot
        self.granted_event = env.event()


class SimUnpackQueue:
    """One image's unpack slots, granted as the real ``UnpackQueue`` grants them. ``slots <= 0``: unlimited."""

    def __init__(self, env: simpy.Environment, slots: int, stream_slots: int | None = None) -> None:
        self.env = env
        self.slots = slots if slots > 0 else 0
        if stream_slots is None:
            stream_slots = self.slots - 1 if self.slots else 0
        self.stream_slots = max(0, stream_slots)
        self._waiting: list[SimQueuedLayer] = []
        self.holding: list[SimQueuedLayer] = []
        #: every grant in order, with whether it was granted while downloading (for tests and reports)
        self.grants: list[tuple[SimQueuedLayer, bool]] = []
        self.peak = 0
        self.peak_streaming = 0
        self._seq = itertools.count()

    def enqueue(self, size: int, *, streamable: bool = False, ready: bool = False) -> SimQueuedLayer:
        """Put a layer in line (its premount task just started); it may be granted at once."""
        entry = SimQueuedLayer(self.env, size, streamable=streamable, ready=ready, seq=next(self._seq))
        self._waiting.append(entry)
        self._dispatch()
        return entry

    def mark_ready(self, entry: SimQueuedLayer) -> None:
        """``entry``'s download has finished (it now goes before every layer still downloading)."""
        entry.ready = True
        entry.streamable = False
        self._dispatch()

    def mark_unstreamable(self, entry: SimQueuedLayer) -> None:
        """``entry`` turned out not to be writable front to back."""
        entry.streamable = False

    def leave(self, entry: SimQueuedLayer) -> None:
        """``entry`` gives back its slot, or leaves the line without one."""
        if entry.done:
            return
        entry.done = True
        if entry in self._waiting:
            self._waiting.remove(entry)
        if entry in self.holding:
            self.holding.remove(entry)
        self._dispatch()

    def _streaming_now(self) -> int:
        return sum(1 for e in self.holding if e.streaming and not e.ready)

    def _dispatch(self) -> None:
        while self._waiting and (not self.slots or len(self.holding) < self.slots):
            pick = self._pick()
            if pick is None:
                return
            self._waiting.remove(pick)
            pick.streaming = not pick.ready
            self.holding.append(pick)
            self.peak = max(self.peak, len(self.holding))
            self.peak_streaming = max(self.peak_streaming, self._streaming_now())
            pick.granted = True
            self.grants.append((pick, pick.streaming))
            pick.granted_event.succeed(pick.streaming)

    def _pick(self) -> SimQueuedLayer | None:
        def best(entries: list[SimQueuedLayer]) -> SimQueuedLayer | None:
            return min(entries, key=lambda e: (-e.size, e.seq), default=None)

        ready = best([e for e in self._waiting if e.ready])
        if ready is not None:
            return ready
        if self.slots and self._streaming_now() >= self.stream_slots:
            return None
        return best([e for e in self._waiting if e.streamable])


__all__ = ["SimQueuedLayer", "SimUnpackQueue"]
