"""A response body pumped into a verified blob sink on three threads: read, hash, store.

The reading thread takes the body in pieces of :data:`HANDOFF` bytes from a blocking reader (the fast
path's urllib3 response, :mod:`.fastpath`); one thread hashes each piece while another writes it to the
file. ``hashlib`` and file writes release the GIL, so on two cores reading, hashing and writing overlap the
way ``curl | tee | sha256sum`` would, without the pipes. The sink sees the bytes in order; when the body
breaks, every byte already handed out is hashed and written before the pump returns, so the caller can
resume from the first byte not delivered.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

#: Pieces in flight (back-pressure: the reader waits when the hasher or writer is this far behind).
POOL = 8
#: The unit of the hypothesis test's sizes.
BUFFER = 1 << 20
#: The piece read at once and handed on: whole pieces this large (one ``read`` each, one copy) cost fewer
#: hand-offs than what single receives bring (often 64 KiB on loopback), and still overlap the three threads.
HANDOFF = 1 << 20

#: Reads up to ``n`` body bytes, blocking; ``b""`` at the end of the stream. A stall raises ``TimeoutError``,
#: any other failure an exception whose text says what broke.
Reader = Callable[[int], bytes]


class SplitSink(Protocol):
    """A sink whose hashing and storing can run on different threads, each in order."""

    def hash_part(self, data: memoryview) -> None: ...

    def store_part(self, data: memoryview) -> None: ...


@runtime_checkable
class Pumpable(Protocol):
    """An async sink (``await sink(chunk)``) that can also take a body straight from the fast path's reader.

    ``fetch_into`` pumps a fast-path body into :meth:`split_sink` instead of calling the sink per chunk:
    first :meth:`drain` (whatever earlier attempts fed is written), then the pump, then :meth:`pumped`
    with the count delivered, so the sink's own bookkeeping stays right.
    """

    async def __call__(self, chunk: bytes) -> None: ...

    async def drain(self) -> None: ...

    def split_sink(self) -> SplitSink: ...

    def pumped(self, n: int) -> None: ...


@dataclass
class PumpResult:
    """How a pump ended: bytes delivered to the sink, raw bytes read, and why the body broke (or None)."""

    delivered: int = 0
    received: int = 0
    broke: str | None = None
    error: BaseException | None = field(default=None, repr=False)


class _Stage(threading.Thread):
    """Applies one step (hash or store) to each piece in order; after a failure it only drains its queue.

    Its queues are ``SimpleQueue``s (C, no ``Condition``): ``items`` brings pieces, ``slots`` holds one token per
    piece it may still take (:data:`POOL` at first) — the reader takes a token before handing a piece on and
    the stage gives it back once done, which is the back-pressure a bounded queue would give, for less."""

    def __init__(self, name: str, step: Callable[[memoryview], None]) -> None:
        super().__init__(name=f"soci-lab-pump-{name}", daemon=True)
        self.step = step
        self.items: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(POOL):
            self.slots.put(None)
        self.error: BaseException | None = None

    def hand(self, piece: bytes | None) -> None:
        """Queue ``piece`` (None: the end), waiting while :data:`POOL` pieces are still queued."""
        if piece is not None:
            self.slots.get()
        self.items.put(piece)

    def run(self) -> None:
        while (item := self.items.get()) is not None:
            if self.error is None:
                try:
                    self.step(memoryview(item))
                except BaseException as exc:  # reported by pump_body
                    self.error = exc
            self.slots.put(None)


def pump_body(
    read: Reader,
    sink: SplitSink,
    *,
    body_left: int,
    skip: int,
    limit: int,
    read_timeout: float,
    deadline: float,
) -> PumpResult:
    """Read up to ``body_left`` body bytes; drop the first ``skip``; deliver the next ``limit`` to ``sink``.

    ``deadline`` is a ``time.monotonic()`` instant for the whole request (checked between reads; each read is
    bounded by the reader's own timeout, ``read_timeout``). Blocking: call it from a worker thread. A break
    (the end before the announced length, a stall, a reset) is reported in ``broke``; an error of the sink
    (a size overflow, a full disk) in ``error``.
    """
    stages = [_Stage("hash", sink.hash_part), _Stage("store", sink.store_part)]
    for s in stages:
        s.start()
    res = PumpResult()
    try:
        while res.delivered < limit and res.received < body_left and not any(s.error for s in stages):
            if time.monotonic() > deadline:
                res.broke = "the whole-request timeout passed while the body was streaming"
                break
            want = min(HANDOFF, body_left - res.received)  # (a skip is read in pieces too: memory stays bounded)
            try:
                piece = read(want)
            except TimeoutError:
                res.broke = f"ReadTimeout: no data for {read_timeout:g} s"
                break
            except Exception as exc:  # a reset, a protocol error: the caller resumes from ``delivered``
                text = str(exc).splitlines()[0] if str(exc) else ""
                res.broke = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
                break
            if not piece:
                res.broke = f"connection closed {body_left - res.received} bytes before the announced end"
                break
            res.received += len(piece)
            if skip:
                drop = min(skip, len(piece))
                skip -= drop
                piece = piece[drop:]
            piece = piece[: limit - res.delivered]
            if not piece:
                continue
            for s in stages:
                s.hand(piece)
            res.delivered += len(piece)
    finally:
        for s in stages:
            s.hand(None)
        for s in stages:
            s.join()
    res.error = next((s.error for s in stages if s.error is not None), None)
    return res
