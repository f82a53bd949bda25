"""gzip checkpoints ("zinfo"): build, (de)serialize, span geometry and random-access extraction.

Build rule (upstream ``generate_zinfo_from_fp``, itself zlib's ``zran.c``): inflate with ``Z_BLOCK``; at a
deflate block boundary (``data_type & 128``) that is not after the last block (``!(data_type & 64)``) add a
checkpoint when ``totout == 0`` or ``totout - last > span_size`` (strict), exactly as upstream: an empty first
member (or an empty stored block at the start) gives a second checkpoint at ``out = 0``, and checkpoints are
placed in tar record padding and in trailing members past the tar end too, so the zinfo blob, the span
digests and ``max_span_id`` are byte-identical to upstream's. A checkpoint is
``(in, out, bits, window)``: compressed offset of the first full byte after the boundary, uncompressed offset,
how many bits of byte ``in-1`` belong to the next block, and the 32 KiB of output before ``out`` (zeros while fewer were
produced). Concatenated gzip members are followed (``inflateReset2``), counters running on; a boundary right
after a member's header is a candidate like any other.

Blob layout (little-endian, no magic, version by length): ``int32 count, int64 span_size`` then ``count``
records ``int64 in, int64 out, uint8 bits, 32768-byte window`` (v2). A v1 blob omits record 0, which is
synthesized as ``in=10, out=0, bits=0, zero window`` and re-serialized the v1 way.

Speed: the scan feeds 1 MiB of input per refill and inflates into a 1 MiB output buffer preceded by a 32 KiB
copy of the previous output, so a checkpoint's window is one contiguous slice (copied only then) and the
Python work per deflate block is a handful of attribute reads. Span digests are hashed on the fly from the
input buffer.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import ExceedMaxSpan, FormatError, NonMonotonicCheckpoints
from . import _zlib as z
from .span_inflate import gzip_header_size, inflate_from

WINSIZE = 32768
PACKED_CHECKPOINT_SIZE = 8 + 8 + 1 + WINSIZE
BLOB_HEADER_SIZE = 12
ZINFO_VERSION_ONE = 1
ZINFO_VERSION_TWO = 2
_ZERO_WINDOW = bytes(WINSIZE)
_HDR = struct.Struct("<iq")
_REC = struct.Struct("<qqB")

_IN_CHUNK = 1 << 20
_OUT_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One access point: ``in_`` (compressed), ``out`` (uncompressed), ``bits`` (0..7), 32 KiB ``window``."""

    in_: int
    out: int
    bits: int
    window: bytes | memoryview


class GzipZinfo:
    """Gzip checkpoints plus the archive sizes needed for the last span's end (span geometry)."""

    algorithm = "gzip"

    def __init__(
        self,
        checkpoints: list[Checkpoint],
        span_size: int,
        compressed_size: int = 0,
        uncompressed_size: int = 0,
        version: int = ZINFO_VERSION_TWO,
    ) -> None:
        self.checkpoints = checkpoints
        self.span_size = span_size
        self.compressed_size = compressed_size
        self.uncompressed_size = uncompressed_size
        self.version = version

    # --- geometry ---------------------------------------------------------------------------------

    @property
    def max_span_id(self) -> int:
        """Number of spans − 1 (upstream ``MaxSpanID``)."""
        return len(self.checkpoints) - 1

    @property
    def span_count(self) -> int:
        """Number of spans."""
        return len(self.checkpoints)

    def _check(self, i: int) -> None:
        if not 0 <= i < len(self.checkpoints):
            raise ExceedMaxSpan(f"span {i} does not exist (max span id {self.max_span_id})")

    def start_compressed_offset(self, i: int) -> int:
        """``in_i`` minus one when the checkpoint starts mid-byte."""
        self._check(i)
        c = self.checkpoints[i]
        return c.in_ - (1 if c.bits else 0)

    def end_compressed_offset(self, i: int) -> int:
        """``in_{i+1}``, or the blob size for the last span (includes the gzip trailer)."""
        self._check(i)
        return self.checkpoints[i + 1].in_ if i + 1 < len(self.checkpoints) else self.compressed_size

    def start_uncompressed_offset(self, i: int) -> int:
        """``out_i``."""
        self._check(i)
        return self.checkpoints[i].out

    def end_uncompressed_offset(self, i: int) -> int:
        """``out_{i+1}``, or the uncompressed archive size for the last span.

        When the last checkpoint lies past the archive end (upstream places checkpoints in record padding
        and trailing members), the last span is empty here (``out_last``) where upstream's arithmetic would
        give an end before its start."""
        self._check(i)
        if i + 1 < len(self.checkpoints):
            return self.checkpoints[i + 1].out
        return max(self.uncompressed_size, self.checkpoints[i].out)

    def span_of(self, offset: int) -> int:
        """Largest ``i`` with ``out_i <= offset`` (upstream ``UncompressedOffsetToSpanID``)."""
        lo, hi = 0, len(self.checkpoints) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.checkpoints[mid].out <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def validate(self) -> None:
        """Checkpoint sanity, as tolerant as what upstream's builder writes.

        Raises :class:`NonMonotonicCheckpoints` when a span other than the last does not start before the
        next one in the compressed stream (upstream SpanManager's ``startCompOffset >= endCompOffset``) or
        when uncompressed offsets go back. Unlike upstream's SpanManager, an empty span (two checkpoints at
        the same ``out``, which upstream's builder writes for an empty first member) is accepted here, and
        so is a last checkpoint past the archive end (record padding, a trailing member).
        """
        prev_out = -1
        n = len(self.checkpoints)
        for i, c in enumerate(self.checkpoints):
            if not 0 <= c.bits <= 7:
                raise FormatError(f"checkpoint {i} has {c.bits} bits (must be 0..7)")
            if c.in_ < 0 or c.out < 0 or (c.bits and c.in_ < 1):
                raise FormatError(f"checkpoint {i} has negative offsets")
            if i + 1 < n and self.start_compressed_offset(i) >= self.checkpoints[i + 1].in_:
                nxt = self.checkpoints[i + 1]
                raise NonMonotonicCheckpoints(
                    f"checkpoint {i + 1} (in={nxt.in_}, out={nxt.out}) does not follow (in={c.in_}, out={c.out})"
                )
            if c.out < prev_out:
                raise NonMonotonicCheckpoints(f"checkpoint {i} (out={c.out}) goes back from out={prev_out}")
            prev_out = c.out
        if n and self.compressed_size and self.checkpoints[-1].in_ > self.compressed_size:
            raise FormatError(f"last checkpoint at compressed offset {self.checkpoints[-1].in_} beyond the layer size")

    def verify_header(self, data: bytes) -> None:
        """Check that ``data`` — the bytes ``[0, start_compressed_offset(0))`` — is exactly one gzip member
        header (upstream ``VerifyHeader`` reads it with ``gzip.NewReader``). Raises FormatError."""
        n = gzip_header_size(data)
        if n != len(data):
            raise FormatError(f"gzip header is {n} bytes but the first span starts at byte {len(data)}")

    # --- serialization ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The zinfo blob (v2; a v1-loaded zinfo re-serializes as v1, byte for byte)."""
        parts = [_HDR.pack(len(self.checkpoints), self.span_size)]
        first = 1 if self.version == ZINFO_VERSION_ONE else 0
        for c in self.checkpoints[first:]:
            parts.append(_REC.pack(c.in_, c.out, c.bits))
            parts.append(bytes(c.window))
        return b"".join(parts)

    @classmethod
    def from_bytes(
        cls, blob: bytes | memoryview, compressed_size: int = 0, uncompressed_size: int = 0
    ) -> GzipZinfo:
        """Parse a v2 (or legacy v1) blob. Length must match the count exactly; windows are zero-copy views."""
        mv = memoryview(blob).cast("B") if not isinstance(blob, memoryview) else blob
        n = len(mv)
        if n < BLOB_HEADER_SIZE:
            raise FormatError(f"gzip zinfo blob of {n} bytes is shorter than its 12-byte header")
        count, span = _HDR.unpack_from(mv, 0)
        if count < 0:
            raise FormatError(f"gzip zinfo claims {count} checkpoints")
        body = n - BLOB_HEADER_SIZE
        if body == PACKED_CHECKPOINT_SIZE * count:
            version, first = ZINFO_VERSION_TWO, 0
        elif count >= 1 and body == PACKED_CHECKPOINT_SIZE * (count - 1):
            version, first = ZINFO_VERSION_ONE, 1
        else:
            raise FormatError(
                f"gzip zinfo blob of {n} bytes does not hold the {count} checkpoints it claims "
                f"(expected {BLOB_HEADER_SIZE + PACKED_CHECKPOINT_SIZE * count} bytes)"
            )
        cps: list[Checkpoint] = []
        if first:
            cps.append(Checkpoint(10, 0, 0, _ZERO_WINDOW))
        pos = BLOB_HEADER_SIZE
        for _ in range(first, count):
            i, o, b = _REC.unpack_from(mv, pos)
            w0 = pos + 17
            cps.append(Checkpoint(i, o, b, mv[w0 : w0 + WINSIZE]))
            pos = w0 + WINSIZE
        return cls(cps, span, compressed_size, uncompressed_size, version)

    # --- extraction -------------------------------------------------------------------------------

    def extract(self, span_id: int, data: bytes | memoryview, offset: int, length: int) -> bytes:
        """Uncompressed bytes ``[offset, offset+length)`` from span ``span_id``'s compressed bytes.

        ``data`` starts at :meth:`start_compressed_offset` of the span and may run on into later spans
        (a request may cross span ends). Handles non-byte-aligned checkpoints and member boundaries.
        """
        self._check(span_id)
        cp = self.checkpoints[span_id]
        skip = offset - cp.out
        if skip < 0 or length < 0:
            raise FormatError(f"offset {offset} is before span {span_id} (starts at {cp.out})")
        return inflate_from(data, cp.bits, cp.window, skip, length)  # the shared span engine (ISA-L where it can)

    def decompress_span(self, span_id: int, data: bytes | memoryview) -> bytes:
        """The whole uncompressed content of span ``span_id`` from exactly its compressed bytes."""
        start = self.start_uncompressed_offset(span_id)
        return self.extract(span_id, data, start, self.end_uncompressed_offset(span_id) - start)


# --- building -------------------------------------------------------------------------------------


@dataclass
class GzipScan:
    """Result of :func:`scan_gzip`."""

    zinfo: GzipZinfo
    span_digests: list[str]
    compressed_size: int
    uncompressed_size: int


def scan_gzip(
    src: BinaryIO,
    span_size: int,
    sink: Callable[[memoryview], None] | None = None,
) -> GzipScan:
    """Inflate a (multi-member) gzip stream once: checkpoints, span digests and sizes.

    ``sink`` receives the uncompressed stream in order as memoryviews valid only during the call (the TOC
    scanner uses it). ``src`` needs only ``readinto`` (or ``read``). Checkpoints follow upstream's rule to
    the byte, wherever the tar ends (see the module docstring).
    """
    if span_size <= 0:
        raise FormatError(f"span size must be positive, not {span_size}")
    readinto = getattr(src, "readinto", None)
    inbuf = ctypes.create_string_buffer(_IN_CHUNK)
    inmv = memoryview(inbuf).cast("B")
    inaddr = ctypes.addressof(inbuf)
    outbuf = ctypes.create_string_buffer(WINSIZE + _OUT_CHUNK)
    outmv = memoryview(outbuf).cast("B")
    outaddr = ctypes.addressof(outbuf)
    inflate = z.libz.inflate

    checkpoints: list[Checkpoint] = []
    digests: list[str] = []
    hasher = None  # current span's sha256 (None before checkpoint 0)
    hashed = 0  # file offset up to which the input was hashed
    prev_last_byte = b""  # last byte of the previous input chunk (for a bits != 0 checkpoint at a chunk start)

    totin = totout = last = 0
    fill = 0  # output bytes in outbuf[WINSIZE : WINSIZE+fill]
    fed = 0  # of which already given to the sink
    member_done = False

    with z.Inflater(z.WBITS_AUTO) as inf:
        s = inf.strm
        ref = inf.ref
        while True:
            if readinto is not None:
                n = readinto(inmv)
            else:
                b = src.read(_IN_CHUNK)
                n = len(b)
                inmv[:n] = b
            if not n:
                break
            base = totin  # file offset of inbuf[0]: every earlier chunk was consumed entirely
            s.next_in = inaddr
            s.avail_in = n
            hashed = base
            while s.avail_in:
                if member_done:
                    inf.reset(z.WBITS_AUTO)
                    member_done = False
                if fill == _OUT_CHUNK:
                    if sink is not None and fed < fill:
                        sink(outmv[WINSIZE + fed : WINSIZE + _OUT_CHUNK])
                    ctypes.memmove(outaddr, outaddr + _OUT_CHUNK, WINSIZE)
                    fill = fed = 0
                avail_in = s.avail_in
                room = _OUT_CHUNK - fill
                s.next_out = outaddr + WINSIZE + fill
                s.avail_out = room
                ret = inflate(ref, z.Z_BLOCK)
                totin += avail_in - s.avail_in
                produced = room - s.avail_out
                fill += produced
                totout += produced
                if ret == z.Z_STREAM_END:
                    member_done = True
                    continue
                if ret != z.Z_OK:
                    if ret == z.Z_BUF_ERROR:
                        raise FormatError(f"gzip stream stalled at byte {totin}")
                    raise FormatError(f"invalid gzip data at byte {totin}: {inf.message()}")
                dt = s.data_type
                if dt & 128 and not dt & 64 and (totout == 0 or totout - last > span_size):
                    b_ = dt & 7
                    # close the running span's digest at `totin`, start the next one
                    k = totin - base
                    if hasher is not None:
                        hasher.update(inmv[hashed - base : k])
                        digests.append("sha256:" + hasher.hexdigest())
                    hasher = hashlib.sha256()
                    if b_:
                        hasher.update(inmv[k - 1 : k] if k >= 1 else prev_last_byte)
                    hashed = totin
                    checkpoints.append(Checkpoint(totin, totout, b_, bytes(outmv[fill : fill + WINSIZE])))
                    last = totout
            if hasher is not None:
                hasher.update(inmv[hashed - base : n])
            hashed = base + n
            prev_last_byte = bytes(inmv[n - 1 : n])
        if sink is not None and fed < fill:
            sink(outmv[WINSIZE + fed : WINSIZE + fill])
    if not checkpoints:
        raise FormatError("not a gzip stream (no deflate data found)")
    if not member_done:
        raise FormatError(f"gzip stream truncated after {totin} compressed bytes")
    assert hasher is not None
    digests.append("sha256:" + hasher.hexdigest())
    zinfo = GzipZinfo(checkpoints, span_size, totin, totout)
    return GzipScan(zinfo, digests, totin, totout)
