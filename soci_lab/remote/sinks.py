"""Where downloaded blob bytes go: a verified file, or an OCI layout writer, fed from worker threads.

The network loop hands batches of chunks to a worker thread that hashes and writes them while the next
batch arrives (hashlib and file writes release the GIL); a large body on the fast path skips the loop and
is pumped from its connection by :mod:`.pump`, hashing and writing on two threads. Nothing becomes visible
under its final name until every byte matched the digest and size.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Protocol

import anyio

from ..errors import SociLabError
from ..oci import Digest, DigestVerifier


class BlobSink(Protocol):
    """A verified destination: ``write`` chunks, then ``commit`` (verify, make visible) or ``abort``.

    ``write`` is ``hash_part`` then ``store_part``; the two halves may run on different threads, each
    seeing every chunk in order (the pump does that).
    """

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def hash_part(self, data: bytes | bytearray | memoryview) -> None: ...

    def store_part(self, data: bytes | bytearray | memoryview) -> None: ...

    def commit(self) -> Digest: ...

    def abort(self) -> None: ...


class FileSink:
    """Writes to ``<path>.part-<random>`` beside ``path`` and renames it into place once verified.

    ``fsync`` is off by default: a download into a scratch file need not survive a power cut, and the
    OCI layout (which does fsync) is the durable store.
    """

    def __init__(self, path: str | os.PathLike[str], digest: Digest, size: int | None, fsync: bool = False) -> None:
        self.path = Path(path)
        self.digest = Digest(digest)
        self.verifier = DigestVerifier(self.digest, size)
        self.fsync = fsync
        self.tmp = self.path.with_name(f".{self.path.name}.part-{secrets.token_hex(4)}")
        self._f = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.hash_part(data)
        self.store_part(data)

    def hash_part(self, data: bytes | bytearray | memoryview) -> None:
        self.verifier.update(data)

    def store_part(self, data: bytes | bytearray | memoryview) -> None:
        self._f.write(data)

    def commit(self) -> Digest:
        try:
            self._f.flush()
            if self.fsync:
                os.fsync(self._f.fileno())
            self._f.close()
            self.verifier.check(f"blob {self.digest}")
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.digest

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


class ThreadedFeeder:
    """Collects chunks on the event loop and writes them to a sink from a worker thread, one batch behind.

    Use as ``async with ThreadedFeeder(sink) as feed: await feed(chunk) …``; leaving the block waits for
    the last batch. The first error in the worker (e.g. the bytes outgrew the announced size) is raised
    from the next ``feed`` call or at exit.
    """

    def __init__(self, sink: BlobSink, batch: int = 4 << 20) -> None:
        self.sink = sink
        self.batch = batch
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._in_flight: anyio.Event | None = None
        self._error: BaseException | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        #: bytes handed to the sink so far (through this feeder or pumped into ``sink`` directly)
        self.fed = 0

    def _write_all(self, chunks: list[bytes]) -> None:
        for c in chunks:
            self.sink.write(c)

    async def _run(self, chunks: list[bytes], done: anyio.Event) -> None:
        try:
            await anyio.to_thread.run_sync(self._write_all, chunks)
        except SociLabError as exc:
            self._error = exc
        except Exception as exc:
            self._error = exc
        finally:
            done.set()

    async def _flush(self) -> None:
        if self._in_flight is not None:
            await self._in_flight.wait()
            self._in_flight = None
        if self._error is not None:
            raise self._error
        if self._pending:
            chunks, self._pending, self._pending_bytes = self._pending, [], 0
            done = anyio.Event()
            self._in_flight = done
            assert self._tg is not None
            self._tg.start_soon(self._run, chunks, done)

    async def drain(self) -> None:
        """Wait until every chunk fed so far is in the sink (raises the worker's error, if any)."""
        await self._flush()
        await self._flush()

    def split_sink(self) -> BlobSink:
        """Where a pumped body goes (:class:`~.pump.Pumpable`): the blob sink itself."""
        return self.sink

    def pumped(self, n: int) -> None:
        self.fed += n

    async def __call__(self, chunk: bytes) -> None:
        self.fed += len(chunk)
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= self.batch:
            await self._flush()

    async def __aenter__(self) -> ThreadedFeeder:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool | None:
        try:
            if exc is None:
                await self.drain()
        finally:
            assert self._tg is not None
            await self._tg.__aexit__(None, None, None)
        return None
