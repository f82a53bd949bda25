"""Span-parallel inflate of a big gzip layer from its zTOC checkpoints (beyond upstream, issue 5 item 6).

A zTOC's gzip checkpoints ``(in, out, bits, window)`` let any span be inflated on its own: prime ``bits`` bits,
set the 32 KiB ``window`` as dictionary, raw-inflate from ``in``. :class:`ZtocSpanDecompressor` does that on
``workers`` threads (the ctypes libz calls release the GIL, and so do ``os.pread`` and ``zlib.crc32``) and
yields the spans' bytes **in order**, so :func:`~.archive.apply_layer` hashes the diffID over exactly the byte
stream a serial inflate gives and the tar side sees no difference. At most ``in_flight`` spans (default
``2 × workers``) are read or held at once: memory is about ``in_flight × span_size`` plus the apply queue.

What each span worker checks, so a corrupt byte gives the same :class:`~soci_lab.errors.DecompressionError`
as the serial path (never a silently wrong tree, never a tree renamed into place):

* a span that is not the last must produce exactly ``out_{i+1} - out_i`` bytes from exactly its compressed
  bytes ``[in_i, in_{i+1})`` (the structural check: a desynchronised Huffman stream ends short or long);
* every member end inside a span is followed by its 8-byte trailer and either the end of the layer, zero
  padding (ignored like the serial path does), or the next member's header (parsed here, FHCRC checked);
* the CRC-32 of every member is assembled in order from the workers' per-piece CRCs with
  ``crc32_combine`` and compared with the trailer, and so is ISIZE — the serial path's "incorrect data check".

Engines: each span goes through the span-inflate engine shared with the lazy reader
(:func:`soci_lab.ztoc.span_inflate.inflate_span`). ``isal`` (the default when the ``isal`` package is installed,
like the serial path) inflates a span with ISA-L, 2-3x faster than libz; a checkpoint that starts mid-byte is
reached through a synthetic byte-aligned prefix, and the rare span where none exists is inflated with libz
(``spans_by_engine`` counts both). ``zlib`` uses libz throughout. Cost: a separate CRC-32 pass over the output
and the copies make it use more CPU than a serial ISA-L inflate; it pays off when a second core is idle — when
creating files is the bottleneck (many small files) the apply thread already keeps one core busy and the
serial path is as fast (figures: ``benchmarks/README.md``, ``unpack_span_parallel.py``).

The zTOC's uncompressed size stops at the tar end, but the diffID covers the whole decompressed stream, so the
**last span is inflated length-free**, through the end of its member and of any later members (record
padding, an extra member after the tar end), to the end of the file.

Before the first byte is produced the plan is checked against the file (its size against the zTOC's
compressed size, the first member's header against ``[0, in_0)``, the checkpoints' geometry); anything that
does not fit falls back to the serial inflater (:func:`~.decompress.gzip_chunks`) — a zTOC is an
optimisation here, never a source of truth: the compressed digest and the diffID are verified as always.

Use it through the puller's hook::

    lookup = ztoc_span_decompressors({layer_digest: ztoc, ...}, min_layer_size=64 << 20, workers=2)
    ParallelPuller(root, source, span_decompressor=lookup)

Layers smaller than ``min_layer_size`` (compressed bytes; default :data:`DEFAULT_MIN_LAYER_SIZE`), layers
without a zTOC, non-gzip zTOCs and single-span zTOCs use the serial path.

Wired into mounts: a ``parallel`` mount (``soci_lab/snapshot/filesystem.py`` ``_mount_eager``) runs lazy mode's
SOCI discovery when a gzip layer is at least ``span_parallel_min_layer_size`` (default: this module's 64 MiB)
and passes the zTOCs found through this hook; with no index it inflates serially as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DecompressionError, FormatError
from ..ztoc.gzip_zinfo import GzipZinfo
from ..ztoc.span_inflate import (
    HAVE_ISAL,
    SpanOutput,
    aligned_prefix,
    inflate_span,
    inflate_span_isal,
    member_header_size,
)
from ..ztoc.ztoc import Ztoc
from .decompress import INFLATE_IMPL, MAX_CHUNK, SpanDecompressor, gzip_chunks
from .source import LayerSpec

#: compressed layer size from which a zTOC-backed gzip layer is inflated span-parallel (smaller: serial).
#: 64 MiB: below that a serial ISA-L inflate takes well under a second and the thread setup is not worth it.
DEFAULT_MIN_LAYER_SIZE = 64 << 20

def _load_crc32_combine() -> Callable[[int, int, int], int]:
    lib = ctypes.CDLL(ctypes.util.find_library("z") or "libz.so.1")  # own handle: own prototypes
    fn = getattr(lib, "crc32_combine64", None) or lib.crc32_combine
    fn.argtypes = (ctypes.c_ulong, ctypes.c_ulong, ctypes.c_int64)
    fn.restype = ctypes.c_ulong
    return fn  # type: ignore[no-any-return]


_crc32_combine = _load_crc32_combine()


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)`` (zlib's ``crc32_combine``)."""
    if len2 <= 0:
        return crc1
    return int(_crc32_combine(crc1, crc2, len2)) & 0xFFFFFFFF


# --- the plan and the ordered producer ----------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    index: int
    start: int  # compressed [start, end)
    end: int
    bits: int
    window: bytes | memoryview
    length: int | None  # None: the last span, length-free


class ZtocSpanDecompressor(SpanDecompressor):
    """Inflates a gzip layer's zTOC spans on ``workers`` threads and yields the bytes in order."""

    def __init__(
        self, ztoc: Ztoc, *, workers: int | None = None, in_flight: int | None = None, engine: str = "auto"
    ) -> None:
        if ztoc.compression_algorithm != "gzip":
            raise ValueError(f"span-parallel inflate needs a gzip zTOC, not {ztoc.compression_algorithm}")
        self.ztoc = ztoc
        self.workers = max(1, workers or min(4, os.cpu_count() or 1))
        self.in_flight = max(1, in_flight or 2 * self.workers)
        if engine not in ("auto", "isal", "zlib"):
            raise ValueError(f"engine must be auto, isal or zlib, not {engine!r}")
        #: ``isal`` (ISA-L where a byte-aligned prefix exists, libz for the other spans) or ``zlib`` (libz)
        self.engine = "zlib" if engine == "zlib" or not HAVE_ISAL else "isal"
        #: spans inflated by each engine in the last :meth:`chunks` call
        self.spans_by_engine: dict[str, int] = {"isal": 0, "zlib": 0}
        #: why the last :meth:`chunks` call fell back to the serial inflater (None: it did not)
        self.fallback_reason: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as the zTOC's FlatBuffer (parsed zTOCs hold memoryviews), e.g. for an apply worker process."""
        return (_rebuild, (self.ztoc.to_bytes(), self.workers, self.in_flight, self.engine))

    @property
    def impl(self) -> str:
        """What inflated the last layer, for the ``decompress`` event (``span-parallel/isal x2``, or serial)."""
        if self.fallback_reason is not None:
            return f"{INFLATE_IMPL} (serial: {self.fallback_reason})"
        return f"span-parallel/{self.engine} x{self.workers}"

    def plan(self, fd: int, size: int) -> list[_Span] | str:
        """The spans to inflate, or the reason why the zTOC does not fit this file (→ serial)."""
        zi = self.ztoc.zinfo
        if not isinstance(zi, GzipZinfo) or zi.span_count == 0:
            return "not a gzip zinfo"
        cs = self.ztoc.compressed_archive_size
        if cs and cs != size:
            return f"zTOC is for a {cs}-byte layer, the file has {size} bytes"
        cps = zi.checkpoints
        try:
            zi.validate()
        except FormatError as exc:
            return str(exc)
        if cps[-1].in_ >= size:
            return "last checkpoint beyond the end of the file"
        h0 = zi.start_compressed_offset(0)
        head = os.pread(fd, h0, 0) if h0 else b""
        try:
            if member_header_size(head + os.pread(fd, 1, h0)) != h0 or cps[0].out != 0:
                return "the first checkpoint is not at the start of the first member's deflate data"
        except FormatError as exc:
            return f"gzip header: {exc}"
        spans = []
        last = len(cps) - 1
        for i, c in enumerate(cps):
            start = c.in_ - (1 if c.bits else 0)
            end = cps[i + 1].in_ if i < last else size
            length = cps[i + 1].out - c.out if i < last else None
            spans.append(_Span(i, start, end, c.bits, c.window, length))
        return spans

    def chunks(self, ingest: Path, stop: threading.Event) -> Iterator[bytes]:
        """Decompressed chunks of ``ingest`` from offset 0 to the end, in order."""
        ingest = Path(ingest)
        fd = os.open(ingest, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            plan = self.plan(fd, size)
            if isinstance(plan, str):
                self.fallback_reason = plan
                os.close(fd)
                fd = -1
                yield from gzip_chunks(ingest, stop)
                return
            self.fallback_reason = None
            yield from self._ordered(ingest.name, fd, plan, stop)
        finally:
            if fd >= 0:
                os.close(fd)

    def _ordered(self, name: str, fd: int, plan: list[_Span], stop: threading.Event) -> Iterator[bytes]:
        def work(sp: _Span) -> SpanOutput:
            if stop.is_set():
                raise _Stopped
            src = os.pread(fd, sp.end - sp.start, sp.start)
            if len(src) != sp.end - sp.start:
                raise FormatError("layer file is shorter than its zTOC says")
            out = inflate_span(src, sp.bits, sp.window, sp.length, engine=self.engine)  # the shared engine
            self.spans_by_engine[out.engine] += 1
            return out

        pending: deque[tuple[_Span, Future[SpanOutput]]] = deque()
        todo = iter(plan)
        crc = 0  # running CRC-32 and length of the current member
        mlen = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="soci-unpack-span") as pool:
            try:
                for sp in todo:
                    pending.append((sp, pool.submit(work, sp)))
                    if len(pending) >= self.in_flight:
                        break
                while pending:
                    sp, fut = pending.popleft()
                    try:
                        out = fut.result()
                    except _Stopped:
                        return
                    except (FormatError, DecompressionError) as exc:
                        raise DecompressionError(f"{name}: corrupt gzip data: {exc} (span {sp.index})") from None
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.append((nxt, pool.submit(work, nxt)))
                    for k, (pcrc, plen) in enumerate(out.pieces):
                        crc = crc32_combine(crc, pcrc, plen)
                        mlen += plen
                        if k < len(out.ends):
                            want_crc, want_size = out.ends[k]
                            if crc != want_crc:
                                raise DecompressionError(
                                    f"{name}: corrupt gzip data: incorrect data check (span {sp.index})"
                                )
                            if mlen & 0xFFFFFFFF != want_size:
                                raise DecompressionError(
                                    f"{name}: corrupt gzip data: incorrect length check (span {sp.index})"
                                )
                            crc = mlen = 0
                    if len(out.ends) > len(out.pieces):  # pragma: no cover - inflate_span never does this
                        raise DecompressionError(f"{name}: inconsistent member ends in span {sp.index}")
                    for buf in out.data:
                        for a in range(0, len(buf), MAX_CHUNK):
                            if stop.is_set():
                                return
                            yield buf if len(buf) <= MAX_CHUNK else buf[a : a + MAX_CHUNK]
                    del out
                if stop.is_set():
                    return
                if mlen or crc:  # the last span always ends with a member end
                    raise DecompressionError(f"{name}: gzip stream truncated")
            finally:
                for _, fut in pending:
                    fut.cancel()
                with contextlib.suppress(Exception):
                    pool.shutdown(wait=True, cancel_futures=True)


def _rebuild(ztoc: bytes, workers: int, in_flight: int, engine: str) -> ZtocSpanDecompressor:
    return ZtocSpanDecompressor(
        Ztoc.from_bytes(ztoc, validate=False), workers=workers, in_flight=in_flight, engine=engine
    )


class _Stopped(Exception):
    pass


# --- the puller's hook ---------------------------------------------------------------------------------


def ztoc_span_decompressors(
    ztocs: Mapping[str, Ztoc] | Callable[[LayerSpec], Ztoc | None],
    *,
    min_layer_size: int = DEFAULT_MIN_LAYER_SIZE,
    workers: int | None = None,
    in_flight: int | None = None,
) -> Callable[[LayerSpec], SpanDecompressor | None]:
    """The ``span_decompressor=`` hook of :class:`~.parallel.ParallelPuller` for the zTOCs one has.

    ``ztocs`` maps layer digests to zTOCs (or is a function of the layer). A layer gets a
    :class:`ZtocSpanDecompressor` when it has a gzip zTOC with at least two spans and its compressed size is
    at least ``min_layer_size`` bytes (default :data:`DEFAULT_MIN_LAYER_SIZE`, 64 MiB); otherwise ``None``,
    i.e. the serial inflater.
    """

    def lookup(layer: LayerSpec) -> SpanDecompressor | None:
        if layer.size < min_layer_size:
            return None
        zt = ztocs.get(layer.digest) if isinstance(ztocs, Mapping) else ztocs(layer)
        if zt is None or zt.compression_algorithm != "gzip" or zt.span_count < 2:
            return None
        return ZtocSpanDecompressor(zt, workers=workers, in_flight=in_flight)

    return lookup


__all__ = [
    "DEFAULT_MIN_LAYER_SIZE",
    "SpanOutput",
    "ZtocSpanDecompressor",
    "aligned_prefix",
    "crc32_combine",
    "inflate_span",
    "inflate_span_isal",
    "member_header_size",
    "ztoc_span_decompressors",
]
