"""A small, defensive FlatBuffers table reader.

The generated Python accessors trust every offset in the buffer: a truncated or hostile blob makes them
raise ``IndexError``/``struct.error`` deep inside, or loop over a vector length of four billion. This reader
checks every offset and length against the buffer before using it and turns any inconsistency into one
:class:`~soci_lab.errors.FormatError` naming what was wrong. Writing uses the ``flatbuffers`` library's
``Builder`` (see :mod:`soci_lab.ztoc.flatbuf`).
"""

from __future__ import annotations

import struct

from ..errors import FormatError

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")
_SCALARS = {
    "b": struct.Struct("<b"),
    "B": struct.Struct("<B"),
    "i": _I32,
    "I": _U32,
    "q": struct.Struct("<q"),
    "Q": struct.Struct("<Q"),
}


class FbBuffer:
    """A FlatBuffers buffer with bounds-checked reads. ``what`` names the artifact in error messages."""

    def __init__(self, data: bytes | bytearray | memoryview, what: str) -> None:
        self.buf = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        self.n = len(self.buf)
        self.what = what

    def fail(self, msg: str) -> FormatError:
        """A FormatError about this buffer."""
        return FormatError(f"{self.what}: {msg}")

    def _u32(self, pos: int) -> int:
        if pos < 0 or pos + 4 > self.n:
            raise self.fail(f"offset {pos} outside the {self.n}-byte buffer")
        return _U32.unpack_from(self.buf, pos)[0]

    def root(self) -> FbTable:
        """The root table (no file identifier, no size prefix)."""
        if self.n < 8:
            raise self.fail(f"{self.n} bytes is too short for a flatbuffer")
        return self.table_at(self._u32(0))

    def table_at(self, pos: int) -> FbTable:
        """The table whose start is at ``pos`` (its vtable is checked too)."""
        if pos < 0 or pos + 4 > self.n:
            raise self.fail(f"table offset {pos} outside the {self.n}-byte buffer")
        vt = pos - _I32.unpack_from(self.buf, pos)[0]
        if vt < 0 or vt + 4 > self.n:
            raise self.fail(f"vtable offset {vt} outside the buffer")
        vt_len, tbl_len = _U16.unpack_from(self.buf, vt)[0], _U16.unpack_from(self.buf, vt + 2)[0]
        if vt_len < 4 or vt_len & 1 or vt + vt_len > self.n or pos + tbl_len > self.n:
            raise self.fail("malformed vtable")
        return FbTable(self, pos, vt, vt_len, tbl_len)

    def _vector(self, pos: int, elem: int) -> tuple[int, int]:
        """(start, count) of the vector whose uoffset field is at ``pos``."""
        vpos = pos + self._u32(pos)
        count = self._u32(vpos)
        start = vpos + 4
        if count * elem > self.n - start:
            raise self.fail(f"vector of {count} elements overruns the {self.n}-byte buffer")
        return start, count

    def string_at(self, pos: int) -> bytes:
        """The string whose uoffset field is at ``pos`` (raw bytes, without the NUL)."""
        start, count = self._vector(pos, 1)
        if start + count >= self.n or self.buf[start + count] != 0:
            raise self.fail("string is not NUL-terminated inside the buffer")
        return bytes(self.buf[start : start + count])


class FbTable:
    """One table; field ids are 0-based as in the schema."""

    __slots__ = ("fb", "pos", "tbl_len", "vt", "vt_len")

    def __init__(self, fb: FbBuffer, pos: int, vt: int, vt_len: int, tbl_len: int) -> None:
        self.fb, self.pos, self.vt, self.vt_len, self.tbl_len = fb, pos, vt, vt_len, tbl_len

    def _field(self, fid: int, size: int) -> int:
        """Absolute position of field ``fid`` or 0 if absent."""
        slot = 4 + 2 * fid
        if slot + 2 > self.vt_len:
            return 0
        off = _U16.unpack_from(self.fb.buf, self.vt + slot)[0]
        if not off:
            return 0
        if off + size > self.tbl_len:
            raise self.fb.fail(f"field {fid} lies outside its table")
        return self.pos + off

    def has(self, fid: int) -> bool:
        """Whether field ``fid`` is present."""
        return self._field(fid, 1) != 0

    def scalar(self, fid: int, fmt: str, default: int = 0) -> int:
        """A scalar field (``fmt`` a struct code: b B i I q Q), or its default when absent."""
        st = _SCALARS[fmt]
        p = self._field(fid, st.size)
        return st.unpack_from(self.fb.buf, p)[0] if p else default

    def string(self, fid: int, *, required: bool = False) -> str:
        """A string field as ``str`` (UTF-8 with surrogateescape, so any bytes round-trip)."""
        p = self._field(fid, 4)
        if not p:
            if required:
                raise self.fb.fail(f"required string field {fid} is missing")
            return ""
        return self.fb.string_at(p).decode("utf-8", "surrogateescape")

    def table(self, fid: int) -> FbTable | None:
        """A sub-table field, or None."""
        p = self._field(fid, 4)
        return self.fb.table_at(p + self.fb._u32(p)) if p else None

    def bytes_vector(self, fid: int) -> memoryview:
        """A ``[ubyte]`` field as a zero-copy view (empty when absent)."""
        p = self._field(fid, 4)
        if not p:
            return memoryview(b"")
        start, count = self.fb._vector(p, 1)
        return self.fb.buf[start : start + count]

    def scalar_vector(self, fid: int, fmt: str) -> list[int]:
        """A vector of scalars (``fmt`` a struct code)."""
        p = self._field(fid, 4)
        if not p:
            return []
        st = _SCALARS[fmt]
        start, count = self.fb._vector(p, st.size)
        return list(struct.unpack_from(f"<{count}{fmt}", self.fb.buf, start))

    def _offsets(self, fid: int) -> list[int]:
        p = self._field(fid, 4)
        if not p:
            return []
        start, count = self.fb._vector(p, 4)
        rel = struct.unpack_from(f"<{count}I", self.fb.buf, start)
        return [start + 4 * i + r for i, r in enumerate(rel)]

    def tables(self, fid: int) -> list[FbTable]:
        """A vector of tables."""
        return [self.fb.table_at(p) for p in self._offsets(fid)]

    def strings(self, fid: int) -> list[str]:
        """A vector of strings."""
        out = []
        for p in self._offsets(fid):
            if p + 4 > self.fb.n:
                raise self.fb.fail("string offset outside the buffer")
            count = self.fb._u32(p)
            if count >= self.fb.n - p - 4 or self.fb.buf[p + 4 + count] != 0:
                raise self.fb.fail("string overruns the buffer or is not NUL-terminated")
            out.append(bytes(self.fb.buf[p + 4 : p + 4 + count]).decode("utf-8", "surrogateescape"))
        return out


# --- writing ---------------------------------------------------------------------------------------

_PU32 = struct.Struct("<I").pack
_PI32 = struct.Struct("<i").pack
_ZEROS = [bytes(i) for i in range(8)]
_SCALAR_PACK = {"b": (1, struct.Struct("<b").pack), "i": (4, _PI32), "I": (4, _PU32),
                "q": (8, struct.Struct("<q").pack)}


class FastBuilder:
    """A FlatBuffers builder producing byte-for-byte what ``flatbuffers.Builder`` produces for the same calls.

    The library's pure-Python builder spends ~90 µs per zTOC entry (a Python call per byte-level step and a
    bytearray it grows by copying); this one keeps the buffer as a list of chunks written back to front and
    does the alignment arithmetic once per object, about 5x faster. Only the operations the zTOC needs are
    here; the test suite checks equality with ``flatbuffers.Builder`` output.
    """

    __slots__ = ("minalign", "obj_end", "off", "parts", "vt", "vtables")

    def __init__(self) -> None:
        self.parts: list[bytes] = []  # chunks in reverse order; each chunk in memory order
        self.off = 0  # bytes written (offset from the end of the final buffer)
        self.minalign = 1
        self.vt: list[int] = []
        self.obj_end = 0
        self.vtables: dict[tuple[int, ...], int] = {}

    def prep(self, size: int, additional: int) -> None:
        """Pad so that ``size``-aligned data can follow ``additional`` bytes (Builder.Prep)."""
        if size > self.minalign:
            self.minalign = size
        pad = (-(self.off + additional)) & (size - 1)
        if pad:
            self.parts.append(_ZEROS[pad])
            self.off += pad

    def string(self, x: bytes) -> int:
        """CreateString."""
        n = len(x)
        self.prep(4, n + 1)
        self.parts.append(_PU32(n) + x + b"\0")
        self.off += n + 5
        return self.off

    def byte_vector(self, x: bytes) -> int:
        """CreateByteVector."""
        n = len(x)
        self.prep(4, n)
        self.parts.append(x)
        self.parts.append(_PU32(n))
        self.off += n + 4
        return self.off

    def offset_vector(self, offsets: list[int]) -> int:
        """A vector of uoffsets (tables or strings), elements in the given order."""
        n = len(offsets)
        self.prep(4, 4 * n)
        base = self.off + 4 * n  # offset just after the last element is prepended, + 4 per relative rule
        vals = [base - 4 * i - o for i, o in enumerate(offsets)]
        self.parts.append(struct.pack(f"<I{n}I", n, *vals))
        self.off += 4 * n + 4
        return self.off

    def int64_vector(self, values: list[int]) -> int:
        """A vector of int64."""
        n = len(values)
        self.prep(4, 8 * n)
        self.prep(8, 8 * n)
        self.parts.append(struct.pack(f"<I{n}q", n, *values))
        self.off += 8 * n + 4
        return self.off

    def start(self, nfields: int) -> None:
        """StartObject."""
        self.vt = [0] * nfields
        self.obj_end = self.off

    def scalar(self, slot: int, fmt: str, x: int, default: int) -> None:
        """Prepend<T>Slot: omitted when equal to the default."""
        if x != default:
            size, pack = _SCALAR_PACK[fmt]
            self.prep(size, 0)
            self.parts.append(pack(x))
            self.off += size
            self.vt[slot] = self.off

    def offset(self, slot: int, target: int) -> None:
        """PrependUOffsetTRelativeSlot (0 = absent)."""
        if target:
            self.prep(4, 0)
            self.parts.append(_PU32(self.off + 4 - target))
            self.off += 4
            self.vt[slot] = self.off

    def end(self) -> int:
        """EndObject: write (or share) the vtable; returns the table's offset."""
        self.prep(4, 0)
        obj = self.off + 4
        key: list[int] = []
        trim = True
        for elem in reversed(self.vt):
            if elem == 0:
                if trim:
                    continue
                key.append(0)
            else:
                key.append(obj - elem)
                trim = False
        size = obj - self.obj_end
        key.append(size)
        tkey = tuple(key)
        existing = self.vtables.get(tkey)
        if existing is None:
            nf = len(key) - 1
            vbytes = (nf + 2) * 2
            self.parts.append(_PI32(vbytes))
            fields = key[-2::-1]
            self.parts.append(struct.pack(f"<{nf + 2}H", vbytes, size, *fields))
            self.off = obj + vbytes
            if self.minalign < 2:
                self.minalign = 2
            self.vtables[tkey] = self.off
        else:
            self.parts.append(_PI32(existing - obj))
            self.off = obj
        return obj

    def finish(self, root: int) -> bytes:
        """Finish (no identifier, no size prefix) and return the buffer."""
        self.prep(self.minalign, 4)
        self.prep(4, 0)
        self.parts.append(_PU32(self.off + 4 - root))
        self.off += 4
        self.parts.reverse()
        return b"".join(self.parts)
