"""The zTOC: TOC + CompressionInfo in one FlatBuffer (``fbs/ztoc.fbs``), its builder and its reader.

Byte layout follows upstream's schema (namespace ``ztoc``, root ``Ztoc``, no file identifier) and builder
call order (``ztocToFlatbuffer``): version and build-tool strings, FileMetadata tables from the last entry to
the first (strings name, type, linkname, uname, gname, mod_time; PAX records sorted by key; fields added in
schema order), the metadata vector, the TOC, the checkpoints byte vector, the span digest strings and their
vector, CompressionInfo (max_span_id, span_digests, checkpoints, then compression_algorithm), then Ztoc
(version, build tool, toc, the two sizes, compression_info). Scalars equal to their schema default are
omitted, as Go's builder does (``compression_algorithm`` for gzip, ``uid = 0``, …); strings and vectors are
always written. The result is byte-identical to Go's FlatBuffers builder run in upstream's order
(``tests/ztoc/test_ztoc_upstream_oracles.py``), so a zTOC has the digest upstream would give it.

Reading is defensive (:mod:`soci_lab.ztoc._fb`): every offset and count is checked against the buffer, so a
truncated or hostile blob gives one :class:`~soci_lab.errors.FormatError`, never a crash or a huge allocation.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

import flatbuffers

from ..errors import FormatError, IncorrectMaxSpanID, IncorrectSpanDigest, InvalidInput, UnsupportedCompression
from ._fb import FastBuilder, FbBuffer, FbTable
from .gzip_zinfo import GzipZinfo, scan_gzip
from .tar_zinfo import TarZinfo, scan_tar
from .toc import FileMetadata, TarScanner, check_toc, derive_header_offsets
from .zstd_zinfo import ZSTD_MAGIC, ZstdZinfo, scan_zstd

if TYPE_CHECKING:
    from ..events import EventRecorder

ZTOC_VERSION = "0.9"
DEFAULT_BUILD_TOOL_IDENTIFIER = "AWS SOCI CLI v0.2"
DEFAULT_SPAN_SIZE = 1 << 22
DEFAULT_MIN_LAYER_SIZE = 10 << 20

#: CompressionAlgorithm enum of ztoc.fbs (+ soci_lab's Zstd = 3).
ALGORITHM_CODES: dict[str, int] = {"gzip": 1, "uncompressed": 2, "zstd": 3}
ALGORITHM_NAMES: dict[int, str] = {v: k for k, v in ALGORITHM_CODES.items()}

#: layer media type → compression algorithm (containerd DiffCompression + soci's mapping).
MEDIA_TYPE_COMPRESSION: dict[str, str] = {
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar": "uncompressed",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "uncompressed",
    "application/vnd.docker.image.rootfs.diff.tar": "uncompressed",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
}


class Zinfo(Protocol):
    """What the three checkpoint kinds (gzip, uncompressed tar, zstd) have in common."""

    algorithm: str
    span_size: int

    @property
    def max_span_id(self) -> int: ...
    @property
    def span_count(self) -> int: ...
    def start_compressed_offset(self, i: int) -> int: ...
    def end_compressed_offset(self, i: int) -> int: ...
    def start_uncompressed_offset(self, i: int) -> int: ...
    def end_uncompressed_offset(self, i: int) -> int: ...
    def span_of(self, offset: int) -> int: ...
    def validate(self) -> None: ...
    def verify_header(self, data: bytes) -> None: ...
    def extract(self, span_id: int, data: bytes | memoryview, offset: int, length: int) -> bytes: ...
    def decompress_span(self, span_id: int, data: bytes | memoryview) -> bytes: ...
    def to_bytes(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Span:
    """One span: compressed ``[start_comp, end_comp)`` and uncompressed ``[start_uncomp, end_uncomp)``."""

    id: int
    start_comp: int
    end_comp: int
    start_uncomp: int
    end_uncomp: int
    digest: str


@dataclass(eq=False)
class Ztoc:
    """A parsed or freshly built zTOC. ``checkpoints`` is the raw zinfo blob; :attr:`zinfo` parses it.

    Besides the upstream fields it is a pure span-geometry object (no I/O): :meth:`spans`,
    :meth:`span_of`, :meth:`compressed_range`, :meth:`uncompressed_range`, :meth:`decompress`,
    :meth:`read` — matching the ``SpanGeometry`` protocol of :mod:`soci_lab.lazy.span`.
    """

    toc: list[FileMetadata]
    compressed_archive_size: int
    uncompressed_archive_size: int
    compression_algorithm: str
    max_span_id: int
    span_digests: list[str]
    checkpoints: bytes | memoryview
    version: str = ZTOC_VERSION
    build_tool_identifier: str = DEFAULT_BUILD_TOOL_IDENTIFIER
    _zinfo: Zinfo | None = field(default=None, repr=False)

    # --- structure ---------------------------------------------------------------------------------

    @property
    def zinfo(self) -> Zinfo:
        """The parsed checkpoints (GzipZinfo, TarZinfo or ZstdZinfo)."""
        if self._zinfo is None:
            self._zinfo = parse_zinfo(
                self.compression_algorithm, self.checkpoints, self.compressed_archive_size,
                self.uncompressed_archive_size,
            )
        return self._zinfo

    @property
    def span_size(self) -> int:
        """The span size recorded in the checkpoints."""
        return self.zinfo.span_size

    def validate(self) -> None:
        """Upstream's SpanManager consistency checks plus range checks.

        :class:`IncorrectMaxSpanID` when ``max_span_id`` disagrees with the checkpoints, :class:`FormatError`
        when the digest count differs, :class:`NonMonotonicCheckpoints` when offsets do not increase.
        """
        zi = self.zinfo
        if zi.max_span_id != self.max_span_id:
            raise IncorrectMaxSpanID(
                f"zTOC max span id {self.max_span_id} disagrees with its {zi.span_count} checkpoints"
            )
        if len(self.span_digests) != self.max_span_id + 1:
            raise FormatError(f"zTOC has {len(self.span_digests)} span digests for {self.max_span_id + 1} spans")
        for d in self.span_digests:
            if not (d.startswith("sha256:") and len(d) == 71):
                raise FormatError(f"malformed span digest {d[:80]!r}")
        zi.validate()
        check_toc(self.toc)

    # --- pickling -----------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, object]:
        """Picklable as parsed (a lazy layer's serving process receives the zTOC its mount parsed, instead of
        parsing the FlatBuffer again: unpickling costs about a fifth of a parse). The checkpoints travel as
        bytes; their parsed form is rebuilt on first use."""
        state = dict(self.__dict__)
        if not isinstance(state["checkpoints"], bytes):
            state["checkpoints"] = bytes(state["checkpoints"])
        state["_zinfo"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)

    # --- SpanGeometry ------------------------------------------------------------------------------

    @property
    def span_count(self) -> int:
        """Number of spans."""
        return self.max_span_id + 1

    @property
    def uncompressed_size(self) -> int:
        """Size of the uncompressed tar stream as the TOC builder saw it."""
        return self.uncompressed_archive_size

    def compressed_range(self, span_id: int) -> tuple[int, int]:
        """``[start, end)`` of span ``span_id`` in the layer blob (the gzip one-byte overlap included)."""
        zi = self.zinfo
        return zi.start_compressed_offset(span_id), zi.end_compressed_offset(span_id)

    def uncompressed_range(self, span_id: int) -> tuple[int, int]:
        """``[start, end)`` of span ``span_id`` in the uncompressed stream."""
        zi = self.zinfo
        return zi.start_uncompressed_offset(span_id), zi.end_uncompressed_offset(span_id)

    def span_of(self, uncompressed_offset: int) -> int:
        """The span holding ``uncompressed_offset`` (the last span at or past the end)."""
        return self.zinfo.span_of(uncompressed_offset)

    def span_digest(self, span_id: int) -> str | None:
        """``"sha256:<hex>"`` of the span's compressed bytes."""
        return self.span_digests[span_id] if 0 <= span_id < len(self.span_digests) else None

    def spans(self) -> list[Span]:
        """Every span with its ranges and digest."""
        zi = self.zinfo
        return [
            Span(i, zi.start_compressed_offset(i), zi.end_compressed_offset(i), zi.start_uncompressed_offset(i),
                 zi.end_uncompressed_offset(i), self.span_digests[i] if i < len(self.span_digests) else "")
            for i in range(zi.span_count)
        ]

    def verify_span(self, span_id: int, compressed: bytes | memoryview) -> None:
        """Raise :class:`IncorrectSpanDigest` unless ``compressed`` hashes to the span's digest."""
        got = "sha256:" + hashlib.sha256(compressed).hexdigest()
        want = self.span_digest(span_id)
        if got != want:
            raise IncorrectSpanDigest(f"span digests do not match for span {span_id}: {got} != {want}")

    def header_range(self) -> tuple[int, int]:
        """``[0, start of span 0)`` of the layer blob: the gzip header, checked by :meth:`verify_header`."""
        return 0, self.zinfo.start_compressed_offset(0)

    def verify_header(self, data: bytes) -> None:
        """Check the bytes of :meth:`header_range` (gzip: one complete member header; tar, zstd: trivial)."""
        self.zinfo.verify_header(data)

    def decompress(self, span_id: int, compressed: bytes | memoryview) -> bytes:
        """The span's uncompressed bytes from exactly its compressed bytes."""
        return self.zinfo.decompress_span(span_id, compressed)

    def read(
        self, offset: int, length: int, fetch: Callable[[int, int], bytes], *, verify: bool = True
    ) -> bytes:
        """Uncompressed ``[offset, offset+length)`` (clamped to the archive) via ``fetch(start, end)``.

        ``fetch`` returns the layer bytes ``[start, end)``; each touched span is fetched whole, verified
        against its digest (unless ``verify=False``) and the needed slice is decompressed.
        """
        end = min(offset + length, self.uncompressed_archive_size)
        if offset < 0 or length < 0:
            raise InvalidInput(f"invalid range {offset}+{length}")
        parts = []
        pos = offset
        zi = self.zinfo
        while pos < end:
            sid = zi.span_of(pos)
            cs, ce = zi.start_compressed_offset(sid), zi.end_compressed_offset(sid)
            data = fetch(cs, ce)
            if verify:
                self.verify_span(sid, data)
            take = min(end, zi.end_uncompressed_offset(sid)) - pos
            if take <= 0:
                raise FormatError(f"span {sid} does not advance the read at {pos}")
            parts.append(zi.extract(sid, data, pos, take))
            pos += take
        return b"".join(parts)

    def read_file(self, entry: FileMetadata, fetch: Callable[[int, int], bytes], *, verify: bool = True) -> bytes:
        """A regular file's content through the spans."""
        return self.read(entry.uncompressed_offset, entry.uncompressed_size, fetch, verify=verify)

    def entries(self) -> Iterator[FileMetadata]:
        """The TOC entries in stream order."""
        return iter(self.toc)

    # --- serialization -----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The zTOC FlatBuffer."""
        return ztoc_to_flatbuffer(self)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, validate: bool = True) -> Ztoc:
        """Parse a zTOC FlatBuffer (ours or upstream's). ``validate`` runs :meth:`validate` too."""
        z = ztoc_from_flatbuffer(data)
        if validate:
            z.validate()
        return z

    def digest(self) -> str:
        """``sha256:<hex>`` of :meth:`to_bytes` — the zTOC descriptor digest."""
        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()


def parse_zinfo(algorithm: str, blob: bytes | memoryview, compressed_size: int, uncompressed_size: int) -> Zinfo:
    """The checkpoints object for ``algorithm`` from its serialized blob."""
    if algorithm == "gzip":
        return GzipZinfo.from_bytes(blob, compressed_size, uncompressed_size)
    if algorithm == "uncompressed":
        return TarZinfo.from_bytes(blob)
    if algorithm == "zstd":
        return ZstdZinfo.from_bytes(blob)
    raise UnsupportedCompression(f"unsupported compression algorithm {algorithm!r}")


# --- flatbuffer write -----------------------------------------------------------------------------


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _offset_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def ztoc_to_flatbuffer(z: Ztoc) -> bytes:
    """Serialize ``z`` the way upstream's ``ztocToFlatbuffer`` does (call order and omitted defaults).

    Uses :class:`~soci_lab.ztoc._fb.FastBuilder`, which yields the bytes ``flatbuffers.Builder`` would
    (see :func:`ztoc_to_flatbuffer_reference`), several times faster.
    """
    code = ALGORITHM_CODES.get(z.compression_algorithm)
    if code is None:
        raise UnsupportedCompression(f"cannot write a zTOC for compression {z.compression_algorithm!r}")
    b = FastBuilder()
    string = b.string
    start, scalar, offset, end = b.start, b.scalar, b.offset, b.end
    version = string(_enc(z.version))
    tool = string(_enc(z.build_tool_identifier))
    fms = [0] * len(z.toc)
    for i in range(len(z.toc) - 1, -1, -1):
        e = z.toc[i]
        name = string(_enc(e.name))
        typ = string(_enc(e.type))
        link = string(_enc(e.linkname))
        uname = string(_enc(e.uname))
        gname = string(_enc(e.gname))
        mtime = string(_enc(e.mod_time))
        xs = []
        pax = e.pax_headers
        for k in sorted(pax):
            ko = string(_enc(k))
            vo = string(_enc(pax[k]))
            start(2)
            offset(0, ko)
            offset(1, vo)
            xs.append(end())
        xv = b.offset_vector(xs)
        start(14)
        offset(0, name)
        offset(1, typ)
        scalar(2, "q", e.uncompressed_offset, 0)
        scalar(3, "q", e.uncompressed_size, 0)
        offset(4, link)
        scalar(5, "q", e.mode, 0)
        scalar(6, "I", e.uid & 0xFFFFFFFF, 0)  # Go: uint32(me.UID) truncates
        scalar(7, "I", e.gid & 0xFFFFFFFF, 0)
        offset(8, uname)
        offset(9, gname)
        offset(10, mtime)
        scalar(11, "q", e.devmajor, 0)
        scalar(12, "q", e.devminor, 0)
        offset(13, xv)
        fms[i] = end()
    mv = b.offset_vector(fms)
    start(1)
    offset(0, mv)
    toc = end()
    cpv = b.byte_vector(bytes(z.checkpoints))
    dv = b.offset_vector([string(_enc(d)) for d in z.span_digests])
    start(4)
    scalar(1, "i", z.max_span_id, 0)
    offset(2, dv)
    offset(3, cpv)
    scalar(0, "b", code, 1)  # added last, as upstream does
    ci = end()
    start(6)
    offset(0, version)
    offset(1, tool)
    offset(4, toc)
    scalar(2, "q", z.compressed_archive_size, 0)
    scalar(3, "q", z.uncompressed_archive_size, 0)
    offset(5, ci)
    return b.finish(end())


def ztoc_to_flatbuffer_reference(z: Ztoc) -> bytes:
    """The same bytes as :func:`ztoc_to_flatbuffer`, through ``flatbuffers.Builder`` (slow; used by tests)."""
    code = ALGORITHM_CODES.get(z.compression_algorithm)
    if code is None:
        raise UnsupportedCompression(f"cannot write a zTOC for compression {z.compression_algorithm!r}")
    cps = bytes(z.checkpoints)
    b = flatbuffers.Builder(len(cps) + 256 * len(z.toc) + 1024)
    version = b.CreateString(_enc(z.version))
    tool = b.CreateString(_enc(z.build_tool_identifier))
    fms = [0] * len(z.toc)
    for i in range(len(z.toc) - 1, -1, -1):
        e = z.toc[i]
        name = b.CreateString(_enc(e.name))
        typ = b.CreateString(_enc(e.type))
        link = b.CreateString(_enc(e.linkname))
        uname = b.CreateString(_enc(e.uname))
        gname = b.CreateString(_enc(e.gname))
        mtime = b.CreateString(_enc(e.mod_time))
        xs = []
        for k in sorted(e.pax_headers):
            ko = b.CreateString(_enc(k))
            vo = b.CreateString(_enc(e.pax_headers[k]))
            b.StartObject(2)
            b.PrependUOffsetTRelativeSlot(0, ko, 0)
            b.PrependUOffsetTRelativeSlot(1, vo, 0)
            xs.append(b.EndObject())
        xv = _offset_vector(b, xs)
        b.StartObject(14)
        b.PrependUOffsetTRelativeSlot(0, name, 0)
        b.PrependUOffsetTRelativeSlot(1, typ, 0)
        b.PrependInt64Slot(2, e.uncompressed_offset, 0)
        b.PrependInt64Slot(3, e.uncompressed_size, 0)
        b.PrependUOffsetTRelativeSlot(4, link, 0)
        b.PrependInt64Slot(5, e.mode, 0)
        b.PrependUint32Slot(6, e.uid & 0xFFFFFFFF, 0)
        b.PrependUint32Slot(7, e.gid & 0xFFFFFFFF, 0)
        b.PrependUOffsetTRelativeSlot(8, uname, 0)
        b.PrependUOffsetTRelativeSlot(9, gname, 0)
        b.PrependUOffsetTRelativeSlot(10, mtime, 0)
        b.PrependInt64Slot(11, e.devmajor, 0)
        b.PrependInt64Slot(12, e.devminor, 0)
        b.PrependUOffsetTRelativeSlot(13, xv, 0)
        fms[i] = b.EndObject()
    mv = _offset_vector(b, fms)
    b.StartObject(1)
    b.PrependUOffsetTRelativeSlot(0, mv, 0)
    toc = b.EndObject()
    cpv = b.CreateByteVector(cps)
    ds = [b.CreateString(_enc(d)) for d in z.span_digests]
    dv = _offset_vector(b, ds)
    b.StartObject(4)
    b.PrependInt32Slot(1, z.max_span_id, 0)
    b.PrependUOffsetTRelativeSlot(2, dv, 0)
    b.PrependUOffsetTRelativeSlot(3, cpv, 0)
    b.PrependInt8Slot(0, code, 1)
    ci = b.EndObject()
    b.StartObject(6)
    b.PrependUOffsetTRelativeSlot(0, version, 0)
    b.PrependUOffsetTRelativeSlot(1, tool, 0)
    b.PrependUOffsetTRelativeSlot(4, toc, 0)
    b.PrependInt64Slot(2, z.compressed_archive_size, 0)
    b.PrependInt64Slot(3, z.uncompressed_archive_size, 0)
    b.PrependUOffsetTRelativeSlot(5, ci, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


# --- flatbuffer read ------------------------------------------------------------------------------


_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_I64 = struct.Struct("<q").unpack_from
_HH = struct.Struct("<HH").unpack_from
_FM_FIELDS = 14


def _read_file_metadata(fb: FbBuffer, pos: int) -> FileMetadata:
    """One FileMetadata table, bounds-checked, without the generic reader's per-field call layers."""
    buf, n = fb.buf, fb.n
    if pos + 4 > n:
        raise fb.fail(f"table offset {pos} outside the buffer")
    vt = pos - _I32(buf, pos)[0]
    if vt < 0 or vt + 4 > n:
        raise fb.fail("vtable offset outside the buffer")
    vt_len, tbl_len = _HH(buf, vt)
    if vt_len < 4 or vt + vt_len > n or pos + tbl_len > n:
        raise fb.fail("malformed vtable")
    nf = min((vt_len - 4) // 2, _FM_FIELDS)
    offs = struct.unpack_from(f"<{nf}H", buf, vt + 4) + (0,) * (_FM_FIELDS - nf)
    for o in offs:
        if o and o + 4 > tbl_len:
            raise fb.fail("field lies outside its table")

    def sval(o: int) -> str:
        if not o:
            return ""
        p = pos + o
        sp = p + _U32(buf, p)[0]
        if sp + 4 > n:
            raise fb.fail("string offset outside the buffer")
        c = _U32(buf, sp)[0]
        e = sp + 4 + c
        if e >= n or buf[e] != 0:
            raise fb.fail("string overruns the buffer or is not NUL-terminated")
        return str(buf[sp + 4 : e], "utf-8", "surrogateescape")

    def ival(o: int) -> int:
        if not o:
            return 0
        if o + 8 > tbl_len:
            raise fb.fail("field lies outside its table")
        return _I64(buf, pos + o)[0]

    pax: dict[str, str] = {}
    if offs[13]:
        for x in _tables_at(fb, pos + offs[13]):
            pax[x.string(0)] = x.string(1)
    return FileMetadata(
        name=sval(offs[0]),
        type=sval(offs[1]),
        uncompressed_offset=ival(offs[2]),
        uncompressed_size=ival(offs[3]),
        linkname=sval(offs[4]),
        mode=ival(offs[5]),
        uid=_U32(buf, pos + offs[6])[0] if offs[6] else 0,
        gid=_U32(buf, pos + offs[7])[0] if offs[7] else 0,
        uname=sval(offs[8]),
        gname=sval(offs[9]),
        mod_time=sval(offs[10]),
        devmajor=ival(offs[11]),
        devminor=ival(offs[12]),
        pax_headers=pax,
    )


def _tables_at(fb: FbBuffer, field_pos: int) -> list[FbTable]:
    """The tables of the vector whose uoffset field is at ``field_pos``."""
    start, count = fb._vector(field_pos, 4)
    rel = struct.unpack_from(f"<{count}I", fb.buf, start)
    return [fb.table_at(start + 4 * i + r) for i, r in enumerate(rel)]


def _metadata_positions(fb: FbBuffer, toc: FbTable) -> list[int]:
    p = toc._field(0, 4)
    if not p:
        return []
    start, count = fb._vector(p, 4)
    rel = struct.unpack_from(f"<{count}I", fb.buf, start)
    return [start + 4 * i + r for i, r in enumerate(rel)]


def ztoc_from_flatbuffer(data: bytes | bytearray | memoryview) -> Ztoc:
    """Parse a zTOC FlatBuffer; entries are sorted and tar header offsets derived (``flatbufferToTOC``)."""
    fb = FbBuffer(bytes(data) if not isinstance(data, bytes) else data, "zTOC")
    root = fb.root()
    version = root.string(0)
    if not version:
        raise fb.fail("no version string (not a zTOC?)")
    toc_t = root.table(4)
    entries = [_read_file_metadata(fb, p) for p in _metadata_positions(fb, toc_t)] if toc_t is not None else []
    derive_header_offsets(entries)
    ci = root.table(5)
    if ci is None:
        raise fb.fail("no compression_info")
    code = ci.scalar(0, "b", 1)
    algo = ALGORITHM_NAMES.get(code)
    if algo is None:
        raise UnsupportedCompression(f"zTOC uses unknown compression algorithm code {code}")
    return Ztoc(
        toc=entries,
        compressed_archive_size=root.scalar(2, "q"),
        uncompressed_archive_size=root.scalar(3, "q"),
        compression_algorithm=algo,
        max_span_id=ci.scalar(1, "i"),
        span_digests=ci.strings(2),
        checkpoints=bytes(ci.bytes_vector(3)),
        version=version,
        build_tool_identifier=root.string(1),
    )


# --- building -------------------------------------------------------------------------------------


def detect_compression(head: bytes) -> str:
    """Sniff ``gzip`` / ``zstd`` / ``uncompressed`` from a blob's first bytes."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == ZSTD_MAGIC:
        return "zstd"
    return "uncompressed"


def compression_for_media_type(media_type: str) -> str:
    """The algorithm upstream picks for a layer media type (unknown ``+zstd``-like types raise)."""
    try:
        return MEDIA_TYPE_COMPRESSION[media_type]
    except KeyError:
        raise UnsupportedCompression(f"layer media type {media_type!r} cannot be indexed") from None


LayerSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


def build_ztoc(
    layer: LayerSource,
    *,
    compression: str | None = None,
    media_type: str | None = None,
    span_size: int = DEFAULT_SPAN_SIZE,
    build_tool_identifier: str = DEFAULT_BUILD_TOOL_IDENTIFIER,
    recorder: EventRecorder | None = None,
    layer_digest: str | None = None,
) -> Ztoc:
    """Build the zTOC of one layer in a single pass (``soci create`` for one layer).

    ``layer`` is a path, the blob's bytes, or a readable binary stream (read once, sequentially).
    ``compression`` (``gzip``/``zstd``/``uncompressed``) wins over ``media_type``; with neither, the magic
    bytes decide. Emits a ``ztoc_build`` event on ``recorder`` when given.
    """
    if span_size <= 0:
        raise InvalidInput(f"span size must be positive, not {span_size}")
    if compression is None and media_type is not None:
        compression = compression_for_media_type(media_type)
    if compression is not None and compression not in ALGORITHM_CODES:
        raise UnsupportedCompression(f"unsupported compression {compression!r} (gzip, zstd, uncompressed)")
    if recorder is None:
        return _build(layer, compression, span_size, build_tool_identifier)
    with recorder.step("ztoc_build", layer=layer_digest) as info:
        z = _build(layer, compression, span_size, build_tool_identifier)
        info["nbytes"] = z.compressed_archive_size
        info.update(spans=z.span_count, entries=len(z.toc), compression=z.compression_algorithm,
                    uncompressed_bytes=z.uncompressed_archive_size)
        return z


def _build(layer: LayerSource, compression: str | None, span_size: int, tool: str) -> Ztoc:
    if isinstance(layer, bytes | bytearray | memoryview):
        return _build_stream(io.BytesIO(bytes(layer)), compression, span_size, tool)
    if isinstance(layer, str | os.PathLike):
        with open(Path(layer), "rb", buffering=0) as f:
            return _build_stream(f, compression, span_size, tool)
    return _build_stream(layer, compression, span_size, tool)


class _Peeked:
    """A reader that gives back ``head`` before the rest of ``src``."""

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self.head, self.src = head, src

    def read(self, n: int = -1) -> bytes:
        if self.head:
            h, self.head = self.head[:n] if n >= 0 else self.head, self.head[n:] if n >= 0 else b""
            return h
        return self.src.read(n)

    def readinto(self, mv: memoryview) -> int:
        if self.head:
            k = min(len(mv), len(self.head))
            mv[:k] = self.head[:k]
            self.head = self.head[k:]
            return k
        ri = getattr(self.src, "readinto", None)
        if ri is not None:
            return ri(mv)
        b = self.src.read(len(mv))
        mv[: len(b)] = b
        return len(b)


def _build_stream(src: BinaryIO, compression: str | None, span_size: int, tool: str) -> Ztoc:
    head = src.read(4) or b""
    reader = _Peeked(head, src)
    algo = compression or detect_compression(head)
    tar = TarScanner()
    zinfo: Zinfo
    if algo == "gzip":
        g = scan_gzip(reader, span_size, tar.feed)  # type: ignore[arg-type]
        zinfo, digests, csize = g.zinfo, g.span_digests, g.compressed_size
    elif algo == "zstd":
        s = scan_zstd(reader, span_size, tar.feed, lambda: tar.end)  # type: ignore[arg-type]
        zinfo, digests, csize = s.zinfo, s.span_digests, s.compressed_size
    elif algo == "uncompressed":
        t = scan_tar(reader, span_size, tar.feed)  # type: ignore[arg-type]
        zinfo, digests, csize = t.zinfo, t.span_digests, t.size
    else:
        raise UnsupportedCompression(f"unsupported compression {algo!r}")
    uas = tar.finish()
    if algo in ("gzip", "zstd"):
        # the last span ends at the tar end as upstream reads it (EndUncompressedOffset of the last span)
        zinfo.uncompressed_size = uas  # type: ignore[attr-defined,misc]
    return Ztoc(
        toc=tar.entries,
        compressed_archive_size=csize,
        uncompressed_archive_size=uas,
        compression_algorithm=algo,
        max_span_id=zinfo.max_span_id,
        span_digests=digests,
        checkpoints=zinfo.to_bytes(),
        build_tool_identifier=tool,
        _zinfo=zinfo,
    )
