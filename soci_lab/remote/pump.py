"""A response body pumped from a blocking socket into a verified blob sink, on three threads.

The reading thread fills pooled buffers with ``recv_into`` (no allocation per chunk); one thread hashes
each filled buffer while another writes it to the file, and the buffer returns to the pool when both are
done. ``hashlib`` and file writes release the GIL, so on two cores reading, hashing and writing overlap
the way ``curl | tee | sha256sum`` would, without the pipes. The sink sees the bytes in order and only
whole buffers; when the body breaks, every byte already handed out is hashed and written before the
pump returns, so the caller can resume from the first byte not delivered.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

#: Buffers in flight (back-pressure: the reader waits when the hasher or writer is this far behind).
POOL = 8
BUFFER = 1 << 20
#: A buffer is handed on once it holds this much, so hashing starts before a whole MiB has arrived.
HANDOFF = 256 << 10


class SplitSink(Protocol):
    """A sink whose hashing and storing can run on different threads, each in order."""

    def hash_part(self, data: memoryview) -> None: ...

    def store_part(self, data: memoryview) -> None: ...


@runtime_checkable
class Pumpable(Protocol):
    """An async sink (``await sink(chunk)``) that can also take a body straight from the socket.

    ``fetch_into`` pumps a lean-path body into :meth:`split_sink` instead of calling the sink per chunk:
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
    """Applies one step (hash or store) to each buffer in order; after a failure it only releases buffers."""

    def __init__(self, name: str, step, release) -> None:
        super().__init__(name=f"soci-lab-pump-{name}", daemon=True)
        self.step = step
        self.release = release
        self.items: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None

    def run(self) -> None:
        while (item := self.items.get()) is not None:
            buf, n = item
            if self.error is None:
                try:
                    self.step(memoryview(buf)[:n])
                except BaseException as exc:  # reported by pump_body
                    self.error = exc
            self.release(buf)


def pump_body(
    sock: socket.socket,
    prefix: bytes,
    sink: SplitSink,
    *,
    body_left: int,
    skip: int,
    limit: int,
    read_timeout: float,
    deadline: float,
) -> PumpResult:
    """Read up to ``body_left`` body bytes; drop the first ``skip``; deliver the next ``limit`` to ``sink``.

    ``prefix`` holds body bytes already read with the response head. ``deadline`` is a
    ``time.monotonic()`` instant for the whole request. Blocking: call it from a worker thread. A break
    (EOF before the end, a stall longer than ``read_timeout``, a reset) is reported in ``broke``; an
    error of the sink (a size overflow, a full disk) in ``error``.
    """
    pool: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    for _ in range(POOL):
        pool.put(bytearray(BUFFER))
    refs: dict[int, int] = {}
    lock = threading.Lock()

    def release(buf: bytearray) -> None:
        with lock:
            refs[id(buf)] -= 1
            last = refs[id(buf)] == 0
        if last:
            pool.put(buf)

    stages = [_Stage("hash", sink.hash_part, release), _Stage("store", sink.store_part, release)]
    for s in stages:
        s.start()
    res = PumpResult()
    pending = memoryview(prefix)
    try:
        while res.delivered < limit and res.broke is None and not any(s.error for s in stages):
            buf = pool.get()
            view = memoryview(buf)
            n = 0
            want_total = min(BUFFER, limit - res.delivered)
            while n < want_total and res.broke is None:
                if res.received >= body_left:
                    break  # the body is shorter than asked: the caller sees it from ``delivered``
                room = min(want_total - n + skip, BUFFER - n, body_left - res.received)
                if pending:
                    k = min(room, len(pending))
                    view[n:n + k] = pending[:k]
                    pending = pending[k:]
                else:
                    k = _recv_into(sock, view[n:n + room], read_timeout, deadline, res)
                    if k == 0:
                        if res.broke == "EOF":
                            res.broke = (f"connection closed {body_left - res.received} bytes before the "
                                         "announced end")
                        break
                res.received += k
                if skip:
                    drop = min(skip, k)
                    skip -= drop
                    if drop < k:
                        view[n:n + k - drop] = bytes(view[n + drop:n + k])
                    k -= drop
                n += k
                if n >= HANDOFF:
                    break
            if n == 0:
                pool.put(buf)
                if res.received >= body_left:
                    break
                continue
            with lock:
                refs[id(buf)] = len(stages)
            for s in stages:
                s.items.put((buf, n))
            res.delivered += n
    finally:
        for s in stages:
            s.items.put(None)
        for s in stages:
            s.join()
    res.error = next((s.error for s in stages if s.error is not None), None)
    return res


def _recv_into(sock: socket.socket, view: memoryview, read_timeout: float, deadline: float, res: PumpResult) -> int:
    """One ``recv_into``; on EOF, a stall or an error sets ``res.broke`` and returns 0."""
    left = deadline - time.monotonic()
    if left <= 0:
        res.broke = "the whole-request timeout passed while the body was streaming"
        return 0
    sock.settimeout(min(read_timeout, left))
    try:
        k = sock.recv_into(view)
    except TimeoutError:
        res.broke = (f"ReadTimeout: no data for {read_timeout:g} s" if read_timeout < left
                     else "the whole-request timeout passed while the body was streaming")
        return 0
    except OSError as exc:
        res.broke = f"{type(exc).__name__}: {exc}"
        return 0
    if k == 0:
        res.broke = "EOF"
    return k
