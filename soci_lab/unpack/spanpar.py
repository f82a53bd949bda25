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

Engines: ``isal`` (the default when the ``isal`` package is installed, like the serial path) inflates a span
with ISA-L, 2-3x faster than libz. ISA-L has no ``inflatePrime``, so a checkpoint that starts mid-byte is
reached through a synthetic byte-aligned prefix (:func:`aligned_prefix`: fixed-Huffman blocks that re-emit the
window's tail, sized so the checkpoint's leftover bits complete the last byte); the rare span where no such
prefix exists (odd ``bits`` and no window byte >= 144) is inflated with libz. ``zlib`` uses libz throughout.
Cost: about 20 % more CPU than a serial ISA-L inflate (a separate CRC-32 pass over the output, the copies);
it pays off when a second core is idle — when creating files is the bottleneck (many small files) the apply
thread already keeps one core busy and the serial path is as fast.

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

Measured (``benchmarks/unpack_span_parallel.py``, 214 MB gzip -6 layer, 630 MB out, 147 spans of 4 MiB, a
shared 2-core machine at load 4): serial ISA-L 0.92 s / 0.91 CPU-s; span-parallel ISA-L x2 1.11 s / 1.21
CPU-s; serial zlib 1.89 s, span-parallel libz x2 1.25-1.76 s. The wall-clock gain needs an idle second core.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DecompressionError, FormatError
from ..ztoc import _zlib as z
from ..ztoc.gzip_zinfo import GzipZinfo, gzip_header_size
from ..ztoc.ztoc import Ztoc
from .decompress import INFLATE_IMPL, MAX_CHUNK, SpanDecompressor, gzip_chunks
from .source import LayerSpec

#: compressed layer size from which a zTOC-backed gzip layer is inflated span-parallel (smaller: serial).
#: 64 MiB: below that a serial ISA-L inflate takes well under a second and the thread setup is not worth it.
DEFAULT_MIN_LAYER_SIZE = 64 << 20

_OUT_STEP = 1 << 20  # output buffer growth for the length-free last span


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


def member_header_size(data: bytes | memoryview) -> int:
    """Length of the gzip member header at the start of ``data``; also checks FHCRC when present."""
    n = gzip_header_size(data)
    if data[3] & 0x02:
        want = int.from_bytes(bytes(data[n - 2 : n]), "little")
        if zlib.crc32(bytes(data[: n - 2])) & 0xFFFF != want:
            raise FormatError("header crc mismatch")
    return n


# --- one span ---------------------------------------------------------------------------------------


@dataclass
class SpanOutput:
    """One span's bytes and its member bookkeeping.

    ``pieces`` splits ``data`` at member ends: ``(crc32, length)`` of each piece, in order; ``ends[k]`` is the
    ``(crc32, isize)`` trailer closing piece ``k`` (one fewer than ``pieces`` unless the span ends with a
    member end, then as many).
    """

    data: list[bytearray] | list[bytes]
    pieces: list[tuple[int, int]] = field(default_factory=list)
    ends: list[tuple[int, int]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.data)


def inflate_span(src: bytes, bits: int, window: bytes | memoryview, length: int | None) -> SpanOutput:
    """Raw-inflate ``src`` (a span's compressed bytes, from ``start_compressed_offset``) from a checkpoint.

    ``length`` given: ``src`` must be exactly the span (up to the next checkpoint) and inflate to exactly
    ``length`` bytes. ``length=None`` (the last span): inflate through every member to the end of ``src``,
    where only zero bytes may follow the last trailer. Member ends are followed (trailer read, next header
    parsed); CRCs are computed per piece for the caller to combine. Raises FormatError on corrupt data.
    """
    n = len(src)
    if not n:
        raise FormatError("span data is empty")
    inaddr = ctypes.cast(ctypes.c_char_p(src), ctypes.c_void_p).value or 0
    bufs: list[bytearray] = []
    cbufs: list[ctypes.Array[ctypes.c_char]] = []

    def new_buf(size: int) -> int:
        b = bytearray(size)
        cb = (ctypes.c_char * size).from_buffer(b)
        bufs.append(b)
        cbufs.append(cb)
        return ctypes.addressof(cb)

    # boundaries: absolute output offsets where a member ends, with its trailer
    ends: list[tuple[int, int, int]] = []
    produced = 0
    scratch = ctypes.create_string_buffer(1)
    inflate = z.libz.inflate
    with z.Inflater(z.WBITS_RAW) as inf:
        s = inf.strm
        ref = inf.ref
        pos = inf.resume_at(bits, src[0] if bits else 0, bytes(window))
        s.next_in = inaddr + pos
        s.avail_in = n - pos
        if length is not None:
            base = new_buf(length) if length else 0
            cap = length
        else:
            base = new_buf(_OUT_STEP)
            cap = _OUT_STEP
        used = 0  # bytes used in the current (last) buffer
        while True:
            room = cap - used
            if room > 0:
                s.next_out = base + used
                s.avail_out = room
            elif length is not None:  # the span is full: anything more is an error
                room = 1
                s.next_out = ctypes.addressof(scratch)
                s.avail_out = 1
            else:
                base = new_buf(_OUT_STEP)
                cap, used, room = _OUT_STEP, 0, _OUT_STEP
                s.next_out = base
                s.avail_out = room
            ret = inflate(ref, z.Z_NO_FLUSH)
            got = room - s.avail_out
            if used < cap:
                used += got
                produced += got
            elif got:
                raise FormatError(f"span inflates to more than the {length} bytes its checkpoints say")
            if ret == z.Z_STREAM_END:
                left = s.avail_in
                if left < 8:
                    raise FormatError("gzip stream truncated (member trailer)")
                p = n - left
                crc = int.from_bytes(src[p : p + 4], "little")
                isize = int.from_bytes(src[p + 4 : p + 8], "little")
                ends.append((produced, crc, isize))
                p += 8
                if p == n:
                    break
                rest = memoryview(src)[p:]
                if length is None and not bytes(rest).strip(b"\x00"):
                    break  # zero padding after the last member, as the serial path allows
                try:
                    h = member_header_size(rest)
                except FormatError as exc:
                    raise FormatError(f"incorrect header check ({exc})") from None
                inf.reset(z.WBITS_RAW)
                s.next_in = inaddr + p + h
                s.avail_in = n - p - h
                if p + h == n:
                    if length is None:
                        raise FormatError("gzip stream truncated (member header at the end)")
                    break
                continue
            if ret == z.Z_OK:
                if s.avail_in == 0 and s.avail_out > 0:
                    break  # all input used and all output delivered
                continue
            if ret == z.Z_BUF_ERROR:
                break  # no progress possible: input used up
            raise FormatError(inf.message())
    if length is None:
        if not ends or ends[-1][0] != produced:
            raise FormatError("gzip stream truncated")
        bufs[-1] = bufs[-1][:used] if used < len(bufs[-1]) else bufs[-1]
    elif produced != length:
        raise FormatError(f"span inflates to {produced} bytes, its checkpoints say {length}")
    cbufs.clear()  # drop the ctypes views of the buffers
    return _finish(bufs, ends, produced)  # per-piece CRCs (zlib.crc32 releases the GIL on large buffers)


# --- ISA-L: the same, 2-3x faster, through a synthetic byte-aligned prefix -----------------------------

try:  # optional, faster inflate (as in .decompress)
    from isal import isal_zlib as _isal  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    _isal = None  # type: ignore[assignment]


class _Bits:
    """A deflate bit writer (LSB-first; Huffman codes MSB-first)."""

    def __init__(self) -> None:
        self.acc = 0
        self.n = 0

    def put(self, value: int, n: int) -> None:
        self.acc |= (value & ((1 << n) - 1)) << self.n
        self.n += n

    def code(self, code: int, n: int) -> None:
        self.put(int(f"{code:0{n}b}"[::-1], 2), n)

    def fixed_block(self, literals: bytes) -> None:
        self.put(0, 1)  # BFINAL = 0
        self.put(1, 2)  # BTYPE = 01, fixed Huffman codes
        for x in literals:
            if x < 144:
                self.code(0x30 + x, 8)
            else:
                self.code(0x190 + x - 144, 9)
        self.code(0, 7)  # end of block

    def to_bytes(self) -> bytes:
        assert self.n % 8 == 0
        return self.acc.to_bytes(self.n // 8, "little")


def _lit_bits(x: int) -> int:
    return 8 if x < 144 else 9


def aligned_prefix(bits: int, first: int, window: bytes) -> tuple[bytes, bytes, int] | None:
    """Byte-aligned raw-deflate bytes that put an inflater where a checkpoint with ``bits`` leftover bits is.

    ISA-L has no ``inflatePrime``. Instead: a non-final fixed-Huffman block re-emitting the window's last
    ``b`` bytes as literals (so dictionary ``window[:-b]`` plus that output is the whole window again), then
    ``m`` empty fixed blocks (10 bits each), sized so that the ``bits`` bits of ``first`` (the checkpoint's
    byte ``in-1``) complete the last byte. Returns ``(prefix, dictionary, b)`` — ``b`` output bytes to discard
    — or None when the window offers no way (odd ``bits`` and no window byte >= 144: no 9-bit literal).
    """
    need = (8 - bits) % 8
    b = cost = 0
    if need % 2:  # an odd block length needs an odd count of 9-bit literals
        n9 = 0
        for j in range(1, len(window) + 1):
            if window[-j] >= 144:
                n9 += 1
                b = j
                break
        if not n9:
            return None
        tail = window[-b:]
        cost = 10 + sum(_lit_bits(x) for x in tail)
    m = next(m for m in range(4) if (cost + 10 * m) % 8 == need)
    w = _Bits()
    if b:
        w.fixed_block(window[-b:])
    for _ in range(m):
        w.fixed_block(b"")
    if bits:
        w.put(first >> (8 - bits), bits)
    return w.to_bytes(), window[:-b] if b else window, b


def inflate_span_isal(src: bytes, bits: int, window: bytes | memoryview, length: int | None) -> SpanOutput | None:
    """:func:`inflate_span` with ISA-L (same checks, same result), or None when no aligned prefix exists."""
    if _isal is None or not src:
        return None
    win = bytes(window)
    pre = aligned_prefix(bits, src[0], win)
    if pre is None:
        return None
    prefix, zdict, skip = pre
    data: bytes = prefix + (src[1:] if bits else src)
    parts: list[bytes] = []
    ends: list[tuple[int, int, int]] = []
    produced = 0
    member_open = True
    try:
        d = _isal.decompressobj(-15, zdict=zdict) if zdict else _isal.decompressobj(-15)
        while True:
            limit = (length - produced + skip + 1) if length is not None else MAX_CHUNK
            chunk = d.decompress(data, limit)
            if skip:
                cut = min(skip, len(chunk))
                skip -= cut
                out = chunk[cut:]
            else:
                out = chunk
            if out:
                parts.append(out)
                produced += len(out)
            if length is not None and produced > length:
                raise FormatError(f"span inflates to more than the {length} bytes its checkpoints say")
            if d.eof:
                rest = d.unused_data
                if len(rest) < 8:
                    raise FormatError("gzip stream truncated (member trailer)")
                ends.append((produced, int.from_bytes(rest[:4], "little"), int.from_bytes(rest[4:8], "little")))
                member_open = False
                rest = rest[8:]
                if not rest or (length is None and not rest.strip(b"\x00")):
                    break
                try:
                    h = member_header_size(rest)
                except FormatError as exc:
                    raise FormatError(f"incorrect header check ({exc})") from None
                data = rest[h:]
                member_open = True
                d = _isal.decompressobj(-15)
                if not data:
                    break
                continue
            data = d.unconsumed_tail
            if not data and len(chunk) < limit:
                break
    except _isal.error as exc:
        raise FormatError(str(exc)) from None
    if length is None:
        if member_open:
            raise FormatError("gzip stream truncated")
    elif produced != length:
        raise FormatError(f"span inflates to {produced} bytes, its checkpoints say {length}")
    return _finish(parts, ends, produced)


def _finish(bufs: list[bytes] | list[bytearray], ends: list[tuple[int, int, int]], produced: int) -> SpanOutput:
    out = SpanOutput(bufs)  # type: ignore[arg-type]
    flat = _Flat(bufs)  # type: ignore[arg-type]
    start = 0
    for off, crc, isize in ends:
        out.pieces.append((flat.crc(start, off), off - start))
        out.ends.append((crc, isize))
        start = off
    if start < produced or not ends:
        out.pieces.append((flat.crc(start, produced), produced - start))
    return out


class _Flat:
    """CRC-32 of a byte range across a list of buffers."""

    def __init__(self, bufs: list[bytearray] | list[bytes]) -> None:
        self.bufs = bufs

    def crc(self, a: int, b: int) -> int:
        crc = 0
        pos = 0
        for buf in self.bufs:
            lo, hi = max(a, pos), min(b, pos + len(buf))
            if lo < hi:
                crc = zlib.crc32(memoryview(buf)[lo - pos : hi - pos], crc)
            pos += len(buf)
            if pos >= b:
                break
        return crc


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
        self.engine = "zlib" if engine == "zlib" or _isal is None else "isal"
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
            if self.engine == "isal":
                out = inflate_span_isal(src, sp.bits, sp.window, sp.length)
                if out is not None:
                    self.spans_by_engine["isal"] += 1
                    return out
            self.spans_by_engine["zlib"] += 1
            return inflate_span(src, sp.bits, sp.window, sp.length)

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
