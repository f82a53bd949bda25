"""The parallel puller's unpack grant order, in simulated time: the policy of :mod:`soci_lab.slotqueue`.

The real puller (``soci_lab.unpack.schedule``) and this model run the same policy code; the one difference
is how a granted layer's task wakes: here its simpy event (its ``waiter``) succeeds
with whether the layer was granted while still downloading. ``tests/sim/test_unpack_order.py`` drives both
queues with the same random operations and requires the same grants.
"""

from __future__ import annotations

import simpy

from ..slotqueue import QueuedLayer, SlotQueue

#: a layer's place in the queue; its ``waiter`` is the simpy event that fires at its grant
SimQueuedLayer = QueuedLayer


class SimUnpackQueue(SlotQueue):
    """One image's unpack slots, granted as the real ``UnpackQueue`` grants them. ``slots <= 0``: unlimited."""

    def __init__(self, env: simpy.Environment, slots: int, stream_slots: int | None = None) -> None:
        super().__init__(slots, stream_slots)
        self.env = env

    def _made(self, entry: QueuedLayer) -> None:
        entry.waiter = self.env.event()

    def _granted(self, entry: QueuedLayer) -> None:
        entry.waiter.succeed(entry.streaming)


__all__ = ["SimQueuedLayer", "SimUnpackQueue"]
