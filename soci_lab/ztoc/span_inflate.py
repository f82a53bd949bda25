"""The span-inflate engine: a gzip span's bytes from its checkpoint, shared by the lazy reader and the
span-parallel unpacker.

A gzip checkpoint ``(in, out, bits, window)`` lets any span be inflated on its own: prime the ``bits``
leftover bits of byte ``in-1``, set the (up to) 32 KiB ``window`` as the dictionary, raw-inflate on. Two
callers need that, with different contracts, and both go through :func:`inflate_checkpoint` here so they
share one engine (and ISA-L):

* the lazy reader (:meth:`GzipZinfo.extract <soci_lab.ztoc.gzip_zinfo.GzipZinfo.extract>`, via
  :func:`inflate_from`) wants ``length`` bytes after skipping ``skip``, from data that may run on into later
  spans; it stops as soon as it has them ("prefix" mode);
* the span-parallel unpacker (:mod:`soci_lab.unpack.spanpar`, via :func:`inflate_span`) wants a whole span
  checked: exactly ``length`` bytes from exactly its compressed bytes, or (``length=None``, the last span)
  everything to the end of the data, with every member's trailer and the per-piece CRC-32s so it can
  check each member's CRC across spans ("exact" mode).

Engines (``engine=``): ``isal`` inflates with ISA-L (``isal.isal_zlib``), 2-3x faster than libz; ``zlib``
inflates with the system libz through :mod:`._zlib` (ctypes, for ``inflatePrime``); ``auto`` is ``isal``
when the ``isal`` package is importable. ISA-L (python-isal's ``decompressobj`` and ``igzip_lib``) takes a
preset dictionary and raw deflate (``wbits=-15``) but has no ``inflatePrime`` and no bit offset, so it
cannot start mid-byte. A checkpoint that starts mid-byte is reached through a synthetic byte-aligned prefix
(:func:`aligned_prefix`: fixed-Huffman blocks that re-emit the window's tail, sized so the checkpoint's
leftover bits complete the last byte). Where no such prefix exists (odd ``bits`` and no window byte >= 144,
so no 9-bit literal to fix the parity), or it would re-emit more than 4 KiB of the window, the span falls
back to libz. :attr:`SpanOutput.engine` says which
engine produced a span. The lazy reader's default (``engine=None``) is ``auto`` unless the environment variable
``SOCI_LAB_SPAN_ENGINE`` names another engine (``zlib``: the libz-only engine the lazy path used before; for
side-by-side benchmarks and bisecting — it reaches FUSE server processes, which inherit the environment).

Both engines give the same bytes and raise :class:`~soci_lab.errors.FormatError` on corrupt or short data.
"""

from __future__ import annotations

import ctypes
import os
import zlib
from dataclasses import dataclass, field
from typing import Literal

from ..errors import FormatError
from . import _zlib as z

try:  # the faster inflate (a project dependency; libz still serves everything without it)
    from isal import isal_zlib as _isal  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    _isal = None  # type: ignore[assignment]

#: whether ISA-L is available (``engine="auto"`` then means ISA-L)
HAVE_ISAL = _isal is not None

Engine = Literal["auto", "isal", "zlib"]
ENGINES: tuple[str, ...] = ("auto", "isal", "zlib")
#: the environment variable that sets the lazy reader's engine (:func:`inflate_from` with ``engine=None``)
ENGINE_ENV = "SOCI_LAB_SPAN_ENGINE"

_OUT_STEP = 1 << 20  # output buffer growth for the length-free last span (libz)
_ISAL_STEP = 8 << 20  # output per ISA-L call for the length-free last span
_DISCARD = 1 << 16  # libz scratch buffer for skipped output (prefix mode)
#: longest window tail :func:`aligned_prefix` may re-emit for ISA-L; beyond it libz inflates the span (the
#: prefix is built bit by bit in Python: ~1 ms for 1 KiB, ~130 ms for the whole 32 KiB window)
_MAX_REEMIT = 4096


# --- gzip member headers --------------------------------------------------------------------------------


def gzip_header_size(data: bytes | memoryview) -> int:
    """Length of the gzip member header at the start of ``data`` (RFC 1952: FEXTRA, FNAME, FCOMMENT, FHCRC).

    Raises FormatError when ``data`` does not start with a complete gzip header."""
    b = bytes(data[:10])
    if len(b) < 10 or b[:2] != b"\x1f\x8b" or b[2] != 8:
        raise FormatError("layer does not start with a gzip header")
    flg = b[3]
    if flg & 0xE0:
        raise FormatError("gzip header has reserved flag bits set")
    pos = 10
    if flg & 0x04:  # FEXTRA
        if len(data) < pos + 2:
            raise FormatError("truncated gzip header (FEXTRA)")
        pos += 2 + int.from_bytes(bytes(data[pos : pos + 2]), "little")
    for bit in (0x08, 0x10):  # FNAME, FCOMMENT: NUL-terminated
        if flg & bit:
            end = bytes(data).find(b"\0", pos)
            if end < 0:
                raise FormatError("truncated gzip header (file name or comment)")
            pos = end + 1
    if flg & 0x02:  # FHCRC
        pos += 2
    if pos > len(data):
        raise FormatError("truncated gzip header")
    return pos


def member_header_size(data: bytes | memoryview) -> int:
    """Length of the gzip member header at the start of ``data``; also checks FHCRC when present."""
    n = gzip_header_size(data)
    if data[3] & 0x02:
        want = int.from_bytes(bytes(data[n - 2 : n]), "little")
        if zlib.crc32(bytes(data[: n - 2])) & 0xFFFF != want:
            raise FormatError("header crc mismatch")
    return n


# --- the result -----------------------------------------------------------------------------------------


@dataclass
class SpanOutput:
    """One span's bytes and its member bookkeeping.

    ``pieces`` splits ``data`` at member ends: ``(crc32, length)`` of each piece, in order; ``ends[k]`` is the
    ``(crc32, isize)`` trailer closing piece ``k`` (one fewer than ``pieces`` unless the span ends with a
    member end, then as many). Prefix mode (:func:`inflate_from`) leaves both empty. ``engine`` is ``isal``
    or ``zlib``: what inflated the span.
    """

    data: list[bytearray] | list[bytes]
    pieces: list[tuple[int, int]] = field(default_factory=list)
    ends: list[tuple[int, int]] = field(default_factory=list)
    engine: str = "zlib"

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.data)


# --- the one entry point --------------------------------------------------------------------------------


def inflate_checkpoint(
    src: bytes | memoryview,
    bits: int,
    window: bytes | memoryview,
    length: int | None,
    *,
    skip: int = 0,
    exact: bool = True,
    engine: str = "auto",
) -> SpanOutput:
    """Raw-inflate ``src`` (compressed bytes from ``start_compressed_offset``) from a checkpoint.

    ``exact=True``: ``src`` is exactly one span; ``length`` given, it must inflate to exactly ``length``
    bytes; ``length=None`` (the last span), through every member to the end of ``src``, where only zero
    bytes may follow the last trailer; CRCs per piece are returned for the caller to combine.
    ``exact=False``: discard ``skip`` bytes and return the next ``length`` bytes; ``src`` may run on past
    them; fewer → FormatError "span data ended after …". Member ends are followed in both modes (trailer,
    next header). ``engine`` picks ISA-L or libz (see the module docstring); the result is the same.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be auto, isal or zlib, not {engine!r}")
    if not exact and length is None:
        raise ValueError("prefix mode (exact=False) needs a length")
    if skip < 0 or (length is not None and length < 0):
        raise FormatError(f"cannot inflate {length} bytes after skipping {skip}")
    data = src if isinstance(src, bytes) else bytes(src)
    if engine != "zlib" and _isal is not None:
        out = _inflate_isal(data, bits, window, length, skip, exact)
        if out is not None:
            return out
    if exact:
        return _inflate_zlib_exact(data, bits, window, length)
    assert length is not None
    return SpanOutput([_inflate_zlib_prefix(data, bits, window, skip, length)], engine="zlib")


def inflate_span(
    src: bytes, bits: int, window: bytes | memoryview, length: int | None, *, engine: str = "auto"
) -> SpanOutput:
    """A whole span, checked (:func:`inflate_checkpoint` with ``exact=True``)."""
    return inflate_checkpoint(src, bits, window, length, exact=True, engine=engine)


def inflate_from(
    data: bytes | memoryview,
    bits: int,
    window: bytes | memoryview,
    skip: int,
    length: int,
    *,
    engine: str | None = None,
) -> bytes:
    """``length`` uncompressed bytes after ``skip`` from a checkpoint (:func:`inflate_checkpoint` with
    ``exact=False``): what a lazy read of a byte range needs. Short data → FormatError. ``engine=None``:
    ``$SOCI_LAB_SPAN_ENGINE``, else ``auto``."""
    if length == 0:
        return b""
    if engine is None:
        engine = os.environ.get(ENGINE_ENV) or "auto"
    out = inflate_checkpoint(data, bits, window, length, skip=skip, exact=False, engine=engine)
    return out.data[0] if len(out.data) == 1 else b"".join(out.data)  # type: ignore[return-value]


# --- libz (ctypes: inflatePrime) ------------------------------------------------------------------------


def _inflate_zlib_prefix(src: bytes, bits: int, window: bytes | memoryview, skip: int, length: int) -> bytes:
    """Prefix mode with libz: ``bytes`` input is inflated in place (no copy); skipped output goes to a small
    reused buffer, so only the ``length`` requested bytes are allocated. At the end of a gzip member the 8-byte
    trailer is skipped and the next member (with its header) is inflated on."""
    if length == 0:
        return b""
    n = len(src)
    if bits and not n:
        raise FormatError("span data is empty")
    inaddr = ctypes.cast(ctypes.c_char_p(src), ctypes.c_void_p).value or 0  # points into `src`, kept alive here
    out = ctypes.create_string_buffer(length)
    outaddr = ctypes.addressof(out)
    discard = ctypes.create_string_buffer(min(skip, _DISCARD)) if skip else None
    daddr = ctypes.addressof(discard) if discard is not None else 0
    inflate = z.libz.inflate
    produced = 0
    with z.Inflater(z.WBITS_RAW) as inf:
        s = inf.strm
        ref = inf.ref
        pos = inf.resume_at(bits, src[0] if bits else 0, bytes(window))
        raw = True
        s.next_in = inaddr + pos
        s.avail_in = n - pos
        while True:
            if skip:
                room = min(skip, _DISCARD)
                s.next_out = daddr
            else:
                room = length - produced
                s.next_out = outaddr + produced
            s.avail_out = room
            ret = inflate(ref, z.Z_NO_FLUSH)
            got = room - s.avail_out
            if skip:
                skip -= got
            else:
                produced += got
                if produced == length:
                    break
            if ret == z.Z_OK:
                continue
            if ret == z.Z_STREAM_END:
                left = s.avail_in
                if raw:
                    if left < 8:
                        break
                    s.next_in = s.next_in + 8
                    s.avail_in = left - 8
                    left -= 8
                if left == 0:
                    break
                inf.reset(z.WBITS_AUTO)
                raw = False
                continue
            if ret == z.Z_BUF_ERROR:
                break
            raise FormatError(f"cannot inflate span data: {inf.message()}")
    if produced < length:
        raise FormatError(f"span data ended after {produced} of {length} requested bytes")
    return out.raw


def _inflate_zlib_exact(src: bytes, bits: int, window: bytes | memoryview, length: int | None) -> SpanOutput:
    """Exact mode with libz (see :func:`inflate_checkpoint`)."""
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
    return _finish(bufs, ends, produced, "zlib")  # per-piece CRCs (zlib.crc32 releases the GIL on large buffers)


# --- ISA-L, through a synthetic byte-aligned prefix -----------------------------------------------------


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
    """:func:`inflate_span` with ISA-L only (same checks, same result), or None when ISA-L cannot start there
    (no aligned prefix or one re-emitting more than 4 KiB, or the ``isal`` package is missing)."""
    if _isal is None:
        return None
    return _inflate_isal(src, bits, window, length, 0, True)


def _inflate_isal(
    src: bytes, bits: int, window: bytes | memoryview, length: int | None, skip: int, exact: bool
) -> SpanOutput | None:
    """Both modes with ISA-L; None when no aligned prefix exists (the caller falls back to libz)."""
    if not src:
        if exact:
            return None  # libz raises the error
        if bits:
            raise FormatError("span data is empty")
    win = bytes(window)
    pre = aligned_prefix(bits, src[0] if src else 0, win)
    if pre is None or pre[2] > _MAX_REEMIT:
        return None  # no prefix, or one so long that building it in Python costs more than libz saves
    prefix, zdict, drop = pre
    drop += skip  # output to discard: the prefix's re-emitted window tail, then the caller's skip
    data: bytes = prefix + (src[1:] if bits else src)
    parts: list[bytes] = []
    ends: list[tuple[int, int, int]] = []
    produced = 0
    member_open = True
    try:
        d = _isal.decompressobj(-15, zdict=zdict) if zdict else _isal.decompressobj(-15)
        while True:
            # exact: one byte more than the span holds, to see an overlong span
            limit = _ISAL_STEP if length is None else length - produced + drop + (1 if exact else 0)
            chunk = d.decompress(data, limit) if limit else b""
            if drop:
                cut = min(drop, len(chunk))
                drop -= cut
                out = chunk[cut:]
            else:
                out = chunk
            if out:
                parts.append(out)
                produced += len(out)
            if length is not None and produced >= length:
                if exact and produced > length:
                    raise FormatError(f"span inflates to more than the {length} bytes its checkpoints say")
                if not exact:
                    break
            if d.eof:
                rest = d.unused_data
                if len(rest) < 8:
                    if not exact:
                        break  # short: reported below
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
    except _isal.error as exc:  # type: ignore[misc]  # isal_zlib.error is an exception class (untyped module)
        raise FormatError(str(exc) if exact else f"cannot inflate span data: {exc}") from None
    if not exact:
        assert length is not None
        if produced < length:
            raise FormatError(f"span data ended after {produced} of {length} requested bytes")
        return SpanOutput(parts, engine="isal")
    if length is None:
        if member_open:
            raise FormatError("gzip stream truncated")
    elif produced != length:
        raise FormatError(f"span inflates to {produced} bytes, its checkpoints say {length}")
    return _finish(parts, ends, produced, "isal")


# --- per-piece CRCs -------------------------------------------------------------------------------------


def _finish(
    bufs: list[bytes] | list[bytearray], ends: list[tuple[int, int, int]], produced: int, engine: str
) -> SpanOutput:
    out = SpanOutput(bufs, engine=engine)
    flat = _Flat(bufs)
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


__all__ = [
    "ENGINES",
    "ENGINE_ENV",
    "HAVE_ISAL",
    "SpanOutput",
    "aligned_prefix",
    "gzip_header_size",
    "inflate_checkpoint",
    "inflate_from",
    "inflate_span",
    "inflate_span_isal",
    "member_header_size",
]
