"""Download a layer blob into its ingest file: whole, or as concurrent ranged chunks (soci-formats.md §5.7).

The ingest file must not exist; it is created and preallocated to the blob's size (``posix_fallocate``),
then every request writes its bytes at their own offset with ``os.pwrite`` (batched to 1 MiB and done in a
worker thread, or — for bodies on the registry client's fast path — straight from the connection on the
pump's writer thread, :mod:`soci_lab.remote.pump`), so chunks may arrive in any order. Chunk ``i``
covers ``[i·chunk, min((i+1)·chunk, size)−1]``.
More than one chunk is used only when the first fetch of the image learned that the server serves ranges
(upstream's ``doInitialFetch``); each request holds one download lease (per-image, then global) while it
runs. Each chunk is a ``chunk_download`` event, the layer a ``blob_download`` event.

A download made of one request writes the file front to back; its blocks are then reserved without
growing the file (``fallocate`` with ``FALLOC_FL_KEEP_SIZE``), so the file's size is the number of bytes
received so far, and the layer's apply may read it while it grows (:class:`IngestProgress`, used by
:mod:`.parallel`).

Nothing here verifies the digest: the compressed digest is checked while the file is decompressed
(:mod:`.archive`), before anything is renamed into place.
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from ..errors import SizeMismatch
from ..events import EventRecorder, NullRecorder
from .resources import LayerUnpackResourceController
from .source import BlobSource, LayerSpec

#: bytes gathered before one ``pwrite``.
WRITE_BATCH = 1 << 20


#: fallocate(2) mode: reserve blocks beyond the end without changing the file's size.
_FALLOC_FL_KEEP_SIZE = 1


@dataclass
class IngestProgress:
    """What a download in flight tells its layer's apply: when the ingest file exists, and whether it is
    written front to back (one request), so that its size is always the count of bytes received."""

    created: anyio.Event = field(default_factory=anyio.Event)
    sequential: bool = False


def _reserve_keeping_size(fd: int, size: int) -> None:
    """Reserve ``size`` bytes of blocks for ``fd`` without growing it. Through ctypes because the os module
    has only ``posix_fallocate``, which also sets the size. Best effort: a file system without it simply
    allocates as the writes come."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = libc.fallocate
    except (OSError, AttributeError):
        return
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, size)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class _PositionalSink:
    """Async sink writing a byte range of the ingest file, at most ``limit`` bytes."""

    def __init__(self, fd: int, offset: int, limit: int | None) -> None:
        self.fd = fd
        self.pos = offset
        self.limit = limit
        self.received = 0
        self._parts: list[bytes] = []
        self._buffered = 0

    async def __call__(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.limit is not None and self.received > self.limit:
            raise SizeMismatch(f"server sent more than the {self.limit} bytes asked for")
        self._parts.append(bytes(chunk))
        self._buffered += len(chunk)
        if self._buffered >= WRITE_BATCH:
            await self.flush()

    async def flush(self) -> None:
        if not self._buffered:
            return
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts.clear()
        self._buffered = 0
        await anyio.to_thread.run_sync(_pwrite_all, self.fd, data, self.pos)
        self.pos += len(data)

    # --- the pump's face (soci_lab.remote.pump.Pumpable): the body goes from the connection to pwrite ---

    async def drain(self) -> None:
        await self.flush()

    def split_sink(self) -> _PositionalSink:
        return self

    def pumped(self, n: int) -> None:
        """Nothing: :meth:`store_part` counted every byte it wrote."""

    def hash_part(self, data: memoryview) -> None:
        """Nothing: the digest is checked while the file is decompressed (module docstring)."""

    def store_part(self, data: memoryview) -> None:
        if self.limit is not None and self.received + len(data) > self.limit:
            raise SizeMismatch(f"server sent more than the {self.limit} bytes asked for")
        _pwrite_all(self.fd, data, self.pos)
        self.pos += len(data)
        self.received += len(data)


def chunk_ranges(size: int, chunk_size: int) -> list[tuple[int, int]]:
    """Inclusive ``(lower, upper)`` ranges covering ``size`` bytes; one range if ``chunk_size <= 0``."""
    if size <= 0:
        return []
    if chunk_size <= 0 or chunk_size >= size:
        return [(0, size - 1)]
    return [(i * chunk_size, min((i + 1) * chunk_size, size) - 1) for i in range(math.ceil(size / chunk_size))]


async def download_layer(
    source: BlobSource,
    layer: LayerSpec,
    ingest: str | os.PathLike[str],
    *,
    image: str = "",
    chunk_size: int = -1,
    ranges_ok: bool | None = None,
    resources: LayerUnpackResourceController | None = None,
    recorder: EventRecorder | None = None,
    progress: IngestProgress | None = None,
) -> int:
    """Download ``layer`` into the new file ``ingest``; returns the number of bytes written.

    ``ranges_ok`` is what the initial fetch learned (None: probe now if more than one chunk is wanted).
    ``progress`` is told when the file exists and whether it is written front to back.
    """
    rec = recorder if recorder is not None else NullRecorder()
    res = resources or LayerUnpackResourceController(max_downloads_per_image=-1)
    path = Path(ingest)
    size = layer.size
    t0 = rec.now()
    total = 0
    try:
        if size <= 0 or (ranges_ok is None and chunk_size > 0 and chunk_size < size):
            probe = await source.probe(layer)
            size = size if size > 0 else probe.size
            ranges_ok = probe.accept_ranges if ranges_ok is None else ranges_ok
        parts = chunk_ranges(size, chunk_size if ranges_ok else -1)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            sequential = len(parts) <= 1
            if size > 0 and sequential:
                _reserve_keeping_size(fd, size)
            elif size > 0:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError:
                    os.ftruncate(fd, size)
            if progress is not None:
                progress.sequential = sequential
                progress.created.set()
            if sequential:
                async with res.download_lease(image):
                    sink = _PositionalSink(fd, 0, size if size > 0 else None)
                    await source.fetch(layer, sink)
                    await sink.flush()
                    total = sink.received
            else:
                received = [0] * len(parts)

                async def one(i: int, lower: int, upper: int) -> None:
                    async with res.download_lease(image):
                        # span = chunk index, as the simulator records it (soci_lab.sim.eager)
                        with rec.step("chunk_download", layer=layer.digest, span=i, chunk=i) as info:
                            sink = _PositionalSink(fd, lower, upper - lower + 1)
                            await source.fetch_range(layer, lower, upper, sink)
                            await sink.flush()
                            info["nbytes"] = sink.received
                            info["lower"], info["upper"] = lower, upper
                            if sink.received != upper - lower + 1:
                                raise SizeMismatch(
                                    f"chunk {lower}-{upper} of {layer.digest}: got {sink.received} bytes"
                                )
                            received[i] = sink.received

                async with anyio.create_task_group() as tg:
                    for i, (lower, upper) in enumerate(parts):
                        tg.start_soon(one, i, lower, upper)
                total = sum(received)
        finally:
            os.close(fd)
        if size > 0 and total != size:
            raise SizeMismatch(f"blob {layer.digest}: downloaded {total} bytes, expected {size}")
    except BaseException as exc:
        rec.emit(
            "blob_download",
            t0,
            layer=layer.digest,
            nbytes=total,
            ok=False,
            error=(str(exc) or type(exc).__name__).splitlines()[0],
            image=image,
        )
        raise
    rec.emit("blob_download", t0, layer=layer.digest, nbytes=total, image=image, chunks=max(1, len(parts)))
    return total


__all__ = ["WRITE_BATCH", "IngestProgress", "chunk_ranges", "download_layer"]
