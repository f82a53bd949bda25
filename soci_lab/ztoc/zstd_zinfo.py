"""zstd layers — beyond upstream, which skips them: random access at frame boundaries.

A zstd frame decodes independently of the others, so frame starts are natural checkpoints that need no
window. A layer written as many frames (``compress_zstd_frames``, used by ``image build --compression
zstd``) can therefore be indexed; a layer that is one single frame larger than a span cannot be cut into
spans and is refused with :class:`~soci_lab.errors.UnsupportedCompression`.

How it is recorded in a zTOC (documented in ``docs/formats.md``):

* ``CompressionInfo.compression_algorithm = 3`` (``Zstd``), written explicitly (it is not the default, so
  the builder always emits it). The upstream enum stops at ``Uncompressed = 2``; an upstream reader turns
  the unknown value into the name ``"compressionalgorithm(3)"`` and refuses the zTOC as an unsupported
  algorithm — a clean error. gzip zTOCs written by soci_lab are untouched by this (field omitted = gzip).
* ``checkpoints`` holds a nested FlatBuffer ``ZstdZinfo`` (``fbs/zinfo.fbs``)::

      table ZstdZinfo { version:int32 (=1); span_size:int64; compressed_size:int64; uncompressed_size:int64;
                        compressed_offsets:[int64]; uncompressed_offsets:[int64]; }

  ``compressed_offsets[i]``/``uncompressed_offsets[i]`` are where span ``i`` starts (a frame start). Span
  ``i`` ends where span ``i+1`` starts, the last one at the layer/archive size.
* Checkpoint rule: a frame start becomes a checkpoint when it is the first frame or when at least
  ``span_size`` uncompressed bytes lie since the previous checkpoint (``>=``, so a writer producing frames of
  exactly ``span_size`` bytes gets one frame per span). Skippable frames are carried inside spans.
* Span digests: sha256 of each span's compressed bytes, as for gzip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import flatbuffers
import zstandard

from ..errors import ExceedMaxSpan, FormatError, InvalidInput, NonMonotonicCheckpoints, UnsupportedCompression
from ._fb import FbBuffer

ZSTD_ZINFO_VERSION = 1
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20


class ZstdZinfo:
    """Frame-boundary checkpoints of a multi-frame zstd layer."""

    algorithm = "zstd"

    def __init__(
        self,
        compressed_offsets: list[int],
        uncompressed_offsets: list[int],
        span_size: int,
        compressed_size: int,
        uncompressed_size: int,
        version: int = ZSTD_ZINFO_VERSION,
    ) -> None:
        if len(compressed_offsets) != len(uncompressed_offsets) or not compressed_offsets:
            raise FormatError(
                f"zstd zinfo has {len(compressed_offsets)} compressed and {len(uncompressed_offsets)} "
                "uncompressed checkpoint offsets (must be equal and non-zero)"
            )
        self.cofs = compressed_offsets
        self.uofs = uncompressed_offsets
        self.span_size = span_size
        self.compressed_size = compressed_size
        self.uncompressed_size = uncompressed_size
        self.version = version

    @property
    def max_span_id(self) -> int:
        """Number of spans − 1."""
        return len(self.cofs) - 1

    @property
    def span_count(self) -> int:
        """Number of spans."""
        return len(self.cofs)

    def _check(self, i: int) -> None:
        if not 0 <= i < len(self.cofs):
            raise ExceedMaxSpan(f"span {i} does not exist (max span id {self.max_span_id})")

    def start_compressed_offset(self, i: int) -> int:
        """Where span ``i``'s first frame starts."""
        self._check(i)
        return self.cofs[i]

    def end_compressed_offset(self, i: int) -> int:
        """Next span's start, or the layer size."""
        self._check(i)
        return self.cofs[i + 1] if i + 1 < len(self.cofs) else self.compressed_size

    def start_uncompressed_offset(self, i: int) -> int:
        """Uncompressed offset of span ``i``'s first byte."""
        self._check(i)
        return self.uofs[i]

    def end_uncompressed_offset(self, i: int) -> int:
        """Next span's uncompressed start, or the archive size."""
        self._check(i)
        return self.uofs[i + 1] if i + 1 < len(self.uofs) else self.uncompressed_size

    def span_of(self, offset: int) -> int:
        """Largest ``i`` with ``uncompressed_offsets[i] <= offset``."""
        lo, hi = 0, len(self.uofs) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.uofs[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def validate(self) -> None:
        """Offsets must start at 0 and strictly increase, and stay within the sizes."""
        if self.cofs[0] < 0 or self.uofs[0] != 0:
            raise FormatError("zstd zinfo's first checkpoint must be at uncompressed offset 0")
        for i in range(1, len(self.cofs)):
            if self.cofs[i] <= self.cofs[i - 1] or self.uofs[i] <= self.uofs[i - 1]:
                raise NonMonotonicCheckpoints(f"zstd checkpoint {i} does not follow checkpoint {i - 1}")
        if self.cofs[-1] > self.compressed_size or self.uofs[-1] > self.uncompressed_size:
            raise FormatError("zstd zinfo's last checkpoint lies beyond the layer")

    def verify_header(self, data: bytes) -> None:
        """The layer must start with a zstd frame (or a skippable frame)."""
        if len(data) >= 4 and not (data[:4] == ZSTD_MAGIC or (data[0] & 0xF0 == 0x50 and data[1:4] == b"\x2a\x4d\x18")):
            raise FormatError("layer does not start with a zstd frame")

    def extract(self, span_id: int, data: bytes | memoryview, offset: int, length: int) -> bytes:
        """Uncompressed ``[offset, offset+length)`` from data starting at span ``span_id``'s first frame."""
        self._check(span_id)
        skip = offset - self.uofs[span_id]
        if skip < 0 or length < 0:
            raise FormatError(f"offset {offset} is before span {span_id}")
        out = _decompress_frames(data, skip + length)
        if len(out) < skip + length:
            raise FormatError(f"span data ended after {max(0, len(out) - skip)} of {length} requested bytes")
        return out[skip : skip + length]

    def decompress_span(self, span_id: int, data: bytes | memoryview) -> bytes:
        """The whole span from exactly its compressed bytes."""
        start = self.start_uncompressed_offset(span_id)
        return self.extract(span_id, data, start, self.end_uncompressed_offset(span_id) - start)

    def to_bytes(self) -> bytes:
        """The nested ZstdZinfo flatbuffer."""
        b = flatbuffers.Builder(64 + 16 * len(self.cofs))
        vecs = []
        for arr in (self.cofs, self.uofs):
            b.StartVector(8, len(arr), 8)
            for v in reversed(arr):
                b.PrependInt64(v)
            vecs.append(b.EndVector())
        b.StartObject(6)
        b.PrependUOffsetTRelativeSlot(5, vecs[1], 0)
        b.PrependUOffsetTRelativeSlot(4, vecs[0], 0)
        b.PrependInt64Slot(3, self.uncompressed_size, 0)
        b.PrependInt64Slot(2, self.compressed_size, 0)
        b.PrependInt64Slot(1, self.span_size, 0)
        b.PrependInt32Slot(0, self.version, 0)
        b.Finish(b.EndObject())
        return bytes(b.Output())

    @classmethod
    def from_bytes(cls, blob: bytes | memoryview) -> ZstdZinfo:
        """Parse the nested ZstdZinfo flatbuffer (bounds-checked)."""
        t = FbBuffer(blob, "zstd zinfo").root()
        version = t.scalar(0, "i")
        if version != ZSTD_ZINFO_VERSION:
            raise FormatError(f"zstd zinfo version {version} is not supported")
        return cls(
            t.scalar_vector(4, "q"),
            t.scalar_vector(5, "q"),
            t.scalar(1, "q"),
            t.scalar(2, "q"),
            t.scalar(3, "q"),
            version,
        )


def _decompress_frames(data: bytes | memoryview, limit: int) -> bytes:
    """Decompress consecutive frames of ``data`` until ``limit`` bytes are out or the data ends."""
    dctx = zstandard.ZstdDecompressor()
    rest = bytes(data)
    parts: list[bytes] = []
    have = 0
    try:
        while rest and have < limit:
            obj = dctx.decompressobj()
            out = obj.decompress(rest)
            parts.append(out)
            have += len(out)
            if not obj.eof:
                break
            rest = obj.unused_data
    except zstandard.ZstdError as exc:
        raise FormatError(f"cannot decompress zstd span: {exc}") from None
    return b"".join(parts)


@dataclass
class ZstdScan:
    """Result of :func:`scan_zstd`."""

    zinfo: ZstdZinfo
    span_digests: list[str]
    compressed_size: int
    uncompressed_size: int
    frames: int


def scan_zstd(
    src: BinaryIO,
    span_size: int,
    sink: Callable[[bytes], None] | None = None,
    limit: Callable[[], int | None] | None = None,
) -> ZstdScan:
    """Decompress a zstd layer once, frame by frame: checkpoints at frame starts, digests, sizes.

    ``limit()`` as for :func:`~soci_lab.ztoc.gzip_zinfo.scan_gzip`: no checkpoint at or past the tar end.

    Raises :class:`UnsupportedCompression` for a single frame larger than one span (no random access).
    """
    if span_size <= 0:
        raise FormatError(f"span size must be positive, not {span_size}")
    dctx = zstandard.ZstdDecompressor()
    cofs: list[int] = []
    uofs: list[int] = []
    digests: list[str] = []
    hasher: hashlib._Hash | None = None
    totin = totout = 0
    last = 0
    frames = 0
    obj = None  # decompressor of the current frame
    pending = b""  # input not yet given to a frame decompressor
    frame_start = 0
    eof = False
    while True:
        if not pending:
            chunk = src.read(_CHUNK)
            if not chunk:
                eof = True
                break
            pending = chunk
        if obj is None:  # a frame starts at totin
            frame_start = totin
            frames += 1
            end = limit() if limit is not None and frames > 1 else None
            if frames == 1 or (totout - last >= span_size and (end is None or totout < end)):
                if hasher is not None:
                    digests.append("sha256:" + hasher.hexdigest())
                hasher = hashlib.sha256()
                cofs.append(totin)
                uofs.append(totout)
                last = totout
            obj = dctx.decompressobj()
        data = pending
        try:
            out = obj.decompress(data)
        except zstandard.ZstdError as exc:
            raise FormatError(f"invalid zstd data in the frame at byte {frame_start}: {exc}") from None
        if out:
            totout += len(out)
            if sink is not None:
                sink(out)
        if obj.eof:
            rest = obj.unused_data
            used = len(data) - len(rest)
            obj = None
        else:
            rest = b""
            used = len(data)
        assert hasher is not None
        hasher.update(data[:used] if rest else data)
        totin += used
        pending = rest
    if obj is not None:
        raise FormatError(f"zstd layer truncated inside the frame starting at byte {frame_start}")
    if not eof or frames == 0:
        raise FormatError("empty zstd layer (no frame)")
    assert hasher is not None
    digests.append("sha256:" + hasher.hexdigest())
    if frames == 1 and totout > span_size:
        raise UnsupportedCompression(
            f"this zstd layer is a single frame of {totout} uncompressed bytes: it cannot be indexed for random "
            f"access (span size {span_size}); recompress it as many frames, e.g. soci-lab image build "
            "--compression zstd, which writes one frame per span"
        )
    return ZstdScan(ZstdZinfo(cofs, uofs, span_size, totin, totout), digests, totin, totout, frames)


class ZstdFrameWriter:
    """Streaming multi-frame zstd writer: one independent frame per ``frame_size`` uncompressed bytes.

    ``out`` is a binary file or a callable taking bytes. Call :meth:`write` with any chunks, then
    :meth:`finish`; :attr:`frames` lists ``(compressed_offset, uncompressed_offset)`` of every frame. Frames
    carry their content size and a checksum. An empty stream still yields one (empty) frame.
    """

    def __init__(
        self, out: BinaryIO | Callable[[bytes], object], frame_size: int = 4 << 20, level: int = 3, *, threads: int = 0
    ) -> None:
        if frame_size <= 0:
            raise InvalidInput(f"zstd frame size must be positive, not {frame_size}")
        if not 1 <= level <= 22:
            raise InvalidInput(f"zstd level must be 1..22, not {level}")
        self._out = out if callable(out) else out.write
        self.frame_size = frame_size
        self._cctx = zstandard.ZstdCompressor(
            level=level, write_content_size=True, write_checksum=True, threads=threads
        )
        self._buf = bytearray()
        self.frames: list[tuple[int, int]] = []
        self._cpos = self._upos = 0

    def _emit(self, block: bytes | bytearray | memoryview) -> None:
        data = self._cctx.compress(block)
        self._out(data)
        self.frames.append((self._cpos, self._upos))
        self._cpos += len(data)
        self._upos += len(block)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Add uncompressed bytes; full frames are compressed and written at once."""
        mv = memoryview(data).cast("B")
        while len(mv):
            if not self._buf and len(mv) >= self.frame_size:
                self._emit(mv[: self.frame_size])  # a whole frame straight from the caller's buffer
                mv = mv[self.frame_size :]
                continue
            take = min(len(mv), self.frame_size - len(self._buf))
            self._buf += mv[:take]
            mv = mv[take:]
            if len(self._buf) == self.frame_size:
                self._emit(self._buf)
                self._buf = bytearray()

    def finish(self) -> list[tuple[int, int]]:
        """Write the last (partial) frame; returns :attr:`frames`."""
        if self._buf or not self.frames:
            self._emit(self._buf)
            self._buf = bytearray()
        return self.frames


def compress_zstd_frames(
    src: BinaryIO, dst: BinaryIO, frame_size: int = 4 << 20, level: int = 3, *, threads: int = 0
) -> list[tuple[int, int]]:
    """Compress ``src`` into ``dst`` as independent zstd frames of ``frame_size`` uncompressed bytes each.

    Returns ``[(compressed_offset, uncompressed_offset)]`` of every frame. With ``frame_size`` equal to the
    index span size, :func:`scan_zstd` makes one span per frame. (Streaming form: :class:`ZstdFrameWriter`.)
    """
    w = ZstdFrameWriter(dst, frame_size, level, threads=threads)
    while True:
        block = _read_full(src, frame_size)
        if not block:
            break
        w.write(block)
        if len(block) < frame_size:
            break
    return w.finish()


def _read_full(src: BinaryIO, n: int) -> bytes:
    parts = []
    while n:
        b = src.read(n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)
