"""A lean tar header reader: :func:`read_header` is ``tarfile.TarInfo.fromtarfile(src)``, only faster.

What
----
:func:`read_header` returns the next member of a tar stream exactly as the running Python's
``tarfile.TarInfo.fromtarfile`` would: a :class:`tarfile.TarInfo` with the same attribute values (name,
linkname, size, mode, uid, gid, mtime, chksum, type, uname, gname, devmajor, devminor, offset,
offset_data, pax_headers, sparse), the same ``src.offset`` afterwards (where the next header starts) and the
same exception class on bad input. ``src`` is what :mod:`.tarapply` hands to tarfile: an object with
``fileobj`` (``read``/``tell``), ``offset``, ``encoding``, ``errors`` and ``pax_headers``.

Why
---
py-spy on a 24,425-entry layer put ``fromtarfile`` at ~29 % of the apply thread: ``calc_chksums`` unpacks
and sums the block twice (signed and unsigned), every numeric field goes through ``nts``/``decode``/
``strip``/``int``, and a tar written by Python's tarfile in PAX format has a pax ``x`` header with a float
mtime before every member, for which ``_proc_pax`` runs ``re.search``/``re.compile`` each time. The pull is
CPU-bound on two cores, so the ~1 CPU-s this costs over a 51,000-entry image is worth taking back.

How — a fast path for the common shapes, tarfile's own code for everything else
---------------------------------------------------------------------------------
* **Plain header** (types ``0``, ``\\0``, ``1``-``7``) whose numeric fields are octal text: fields are sliced
  out and converted with ``int(field, 8)``; the checksum is the unsigned sum only, computed in C with two
  Adler-32s (the low half of ``adler32`` over at most 256 bytes is ``1 + sum`` exactly, as 256 * 255 <
  65521). A header that only the *signed* sum matches goes to tarfile.
* **pax ``x`` header** whose records are well framed (``<len> <key>=<value>\\n``, the rest of the block NUL)
  and whose keys are all simple (``path``, ``linkpath``, ``size``, ``uid``, ``gid``, ``uname``, ``gname``,
  ``mtime``, ``atime``, ``ctime``, ``SCHILY.xattr.*``), followed by a plain header: records are split with
  ``find``/slicing (no regex) and applied as ``_apply_pax_info`` does (3.11-3.14 alike): numbers through
  ``tarfile.PAX_NUMBER_FIELDS``' converters, ``path`` with trailing ``/`` stripped, ``size`` moving where
  the next header starts.
* **Everything else falls back** to ``tarfile.TarInfo.fromtarfile`` itself, on a replay of the very bytes
  already read (:class:`_Replay`), so its behaviour there is unchanged by construction: GNU ``L``/``K``
  long names, sparse (``S``, ``GNU.sparse.*``), global ``g`` headers and a source with global pax headers
  in force, Solaris ``X``, base-256 or negative or otherwise odd numbers, a checksum only the signed sum
  matches, ``hdrcharset`` anywhere in a pax block, unknown or non-UTF-8 pax keys, badly framed records
  (``0 x=``, no ``=``, a length past the block, junk after the records), a pax number tarfile would turn
  into 0 (or a negative / non-finite one), a V7 directory (``\\0`` type, name ending in ``/``) right after a
  pax header (tarfile >= 3.14 stopped converting those there), truncated input, end-of-archive blocks, any
  encoding other than utf-8/surrogateescape, and every error: the exception always comes from tarfile.
  A read never happens on the fast path that tarfile would not do at the same point with the same size.
* On the first call, :func:`_self_check` (~3 ms) runs both readers over a few tars that tarfile writes
  (ustar, GNU, PAX: long and non-ASCII names, float mtimes, xattrs, links, devices) and turns the fast path
  off if they disagree in anything (a future tarfile that changed its semantics loses speed, not
  correctness).

The fast path takes about a quarter of tarfile's CPU per header (figures: ``benchmarks/README.md``).
"""

from __future__ import annotations

import contextlib
import io
import math
import tarfile
from typing import Any, Protocol
from zlib import adler32

__all__ = ["HeaderSource", "fast_path_enabled", "plain_fields", "read_header"]

_TarInfo = tarfile.TarInfo
_fromtarfile = tarfile.TarInfo.fromtarfile

#: type bytes (as ints) of the members the fast path builds itself
_PLAIN_TYPES = frozenset(b"01234567\0")
#: those whose data blocks follow the header (tarfile.REGULAR_TYPES without the sparse ``S``)
_DATA_TYPES = frozenset(b"07\0")
_AREGTYPE = 0
#: regular files (``0``, old ``\0``) and directories: the headers :func:`plain_fields` reads
_FILE_DIR_TYPES = frozenset(b"0\0" b"5")
_DIRTYPE = ord("5")
_XHDTYPE = ord("x")
#: pax keys that ``_apply_pax_info`` turns into attributes, with the attribute they set
_PAX_ATTRS = {"path": "name", "linkpath": "linkname", "uname": "uname", "gname": "gname"}
#: pax keys that are numbers, with tarfile's converter (float or int)
_PAX_NUMBERS: dict[str, Any] = {k: tarfile.PAX_NUMBER_FIELDS[k] for k in ("size", "uid", "gid", "mtime")}
#: pax keys that are only kept in ``pax_headers``
_PAX_KEPT = frozenset({"atime", "ctime"})
_PAX_KEPT_PREFIX = "SCHILY.xattr."


class _Reader(Protocol):
    def read(self, n: int = ..., /) -> bytes: ...

    def tell(self) -> int: ...


class HeaderSource(Protocol):
    """The part of a ``tarfile.TarFile`` that ``TarInfo.fromtarfile`` uses."""

    fileobj: Any
    offset: int
    encoding: str
    errors: str
    pax_headers: dict[str, str]


class _Fallback(Exception):
    """Internal: this header is not one the fast path is sure about."""


class _Replay:
    """A file object that first serves bytes already read from ``fileobj``, then ``fileobj`` itself, so
    that tarfile can read a header again from where the fast path started."""

    __slots__ = ("_data", "_fileobj", "_pos")

    def __init__(self, fileobj: _Reader, data: bytes) -> None:
        self._fileobj = fileobj
        self._data = data
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        rest = len(self._data) - self._pos
        if not rest:
            return self._fileobj.read(n)
        if 0 <= n <= rest:
            self._pos += n
            return self._data[self._pos - n : self._pos]
        head = self._data[self._pos :]
        self._pos = len(self._data)
        return head + self._fileobj.read(n - rest if n >= 0 else n)

    def tell(self) -> int:
        return self._fileobj.tell() - (len(self._data) - self._pos)


class _ReplaySource:
    """``src`` as tarfile sees it on a fallback: the replaying file object, the rest shared."""

    __slots__ = ("encoding", "errors", "fileobj", "offset", "pax_headers")

    def __init__(self, src: HeaderSource, data: bytes) -> None:
        self.fileobj = _Replay(src.fileobj, data)
        self.offset = src.offset
        self.encoding = src.encoding
        self.errors = src.errors
        self.pax_headers = src.pax_headers  # the same dict: a global header updates it in place


def _fallback(src: HeaderSource, *read: bytes) -> tarfile.TarInfo:
    """tarfile's own ``fromtarfile`` over the bytes already read, then the rest of the stream."""
    proxy = _ReplaySource(src, b"".join(read))
    try:
        return _fromtarfile(proxy)  # type: ignore[arg-type]
    finally:
        src.offset = proxy.offset


def _device_number(buf: bytes, at: int) -> int:
    """The 8-byte devmajor/devminor field at ``at``: GNU tar leaves it all NUL (``nti`` reads 0); the
    usual 7 octal digits and a NUL are read directly, anything else as :func:`_octal` does."""
    if not buf[at]:
        return 0
    if not buf[at + 7]:
        try:
            return int(buf[at : at + 7], 8)
        except ValueError:
            pass
    return _octal(buf[at : at + 8])


def _octal(field: bytes) -> int:
    """A numeric field the way tarfile's ``nti`` reads octal text (NUL ends it, blanks around it, empty is
    0); raises :class:`_Fallback` for a base-256 field and for anything ``nti`` would refuse."""
    if field[0] in (0o200, 0o377):
        raise _Fallback
    end = field.find(0)
    if end >= 0:
        field = field[:end]
    try:
        return int(field.decode("ascii").strip() or "0", 8)
    except ValueError:
        raise _Fallback from None


def _numbers(buf: bytes) -> tuple[int, int, int, int, int, int, int, int]:
    """mode, uid, gid, size, mtime, chksum, devmajor, devminor of a 512-byte header block whose checksum
    field equals its unsigned sum; raises :class:`_Fallback` for anything else (tarfile then decides)."""
    # Canonical fields (tarfile, GNU tar, Go): zero-padded octal digits ended by a NUL, the checksum as six
    # digits, NUL, space. int() on bytes without a NUL gives what nti gives (blanks, "+", "_" and "0o" are
    # read alike; a "-" is refused below); anything int() refuses goes through _octal.
    try:
        if buf[107] or buf[115] or buf[123] or buf[135] or buf[147] or buf[154]:
            raise ValueError
        mode = int(buf[100:107], 8)
        uid = int(buf[108:115], 8)
        gid = int(buf[116:123], 8)
        size = int(buf[124:135], 8)
        mtime = int(buf[136:147], 8)
        chksum = int(buf[148:154], 8)
    except ValueError:
        mode = _octal(buf[100:108])
        uid = _octal(buf[108:116])
        gid = _octal(buf[116:124])
        size = _octal(buf[124:136])
        mtime = _octal(buf[136:148])
        chksum = _octal(buf[148:156])
    devmajor = _device_number(buf, 329)
    devminor = _device_number(buf, 337)
    if min(mode, uid, gid, size, mtime, devmajor, devminor) < 0:
        raise _Fallback  # tarfile >= 3.14 refuses a negative size; keep every such oddity with tarfile
    # the unsigned sum with the checksum field counted as 8 spaces (256); the signed one is tarfile's job
    if (adler32(buf[:256]) & 0xFFFF) + (adler32(buf[256:]) & 0xFFFF) - 2 - sum(buf[148:156]) + 256 != chksum:
        raise _Fallback
    return mode, uid, gid, size, mtime, chksum, devmajor, devminor


def _text(buf: bytes, start: int, stop: int) -> str:
    """tarfile's ``nts`` with utf-8/surrogateescape (which cannot fail)."""
    end = buf.find(0, start, stop)
    return buf[start : stop if end < 0 else end].decode("utf-8", "surrogateescape")


def _plain(buf: bytes, after_pax: bool) -> tarfile.TarInfo:
    """The member a plain header block describes, as ``frombuf`` + ``_proc_builtin`` (with no global pax
    headers) build it, offsets aside; raises :class:`_Fallback` for anything else."""
    kind = buf[156]
    if kind not in _PLAIN_TYPES:
        raise _Fallback
    mode, uid, gid, size, mtime, chksum, devmajor, devminor = _numbers(buf)
    name = _text(buf, 0, 100)
    type_ = buf[156:157]
    if kind == _AREGTYPE and name.endswith("/"):
        if after_pax:
            raise _Fallback  # 3.11-3.13 make it a directory, 3.14 (dircheck=False) a file
        kind = _DIRTYPE
        type_ = tarfile.DIRTYPE
    info = _TarInfo()
    info.mode = mode
    info.uid = uid
    info.gid = gid
    info.size = size
    info.mtime = mtime
    info.chksum = chksum
    info.type = type_
    info.linkname = _text(buf, 157, 257) if buf[157] else ""
    info.uname = _text(buf, 265, 297) if buf[265] else ""
    info.gname = _text(buf, 297, 329) if buf[297] else ""
    info.devmajor = devmajor
    info.devminor = devminor
    info.name = _full_name(buf, name, kind == _DIRTYPE)
    return info


def _full_name(buf: bytes, name: str, is_dir: bool) -> str:
    """The member name from the name field's text and the ustar prefix, as ``_proc_builtin`` joins them."""
    if is_dir:
        name = name.rstrip("/")
    if buf[345]:
        prefix = _text(buf, 345, 500)
        if prefix:
            name = prefix + "/" + name
            if is_dir:
                name = name.rstrip("/")  # _proc_builtin strips again after the prefix is joined
    return name


def plain_fields(buf: bytes) -> tuple[bool, str, int, int, int, int, int] | None:
    """``(is_dir, name, mode, uid, gid, size, mtime)`` of a plain regular-file or directory header block,
    exactly as :func:`read_header` would give them for it (no pax header before it, no global pax headers,
    utf-8); ``None`` for every other block, which then goes through :func:`read_header`.

    Why: most entries of a layer are such headers, and the applier can create them from these seven values
    without building a :class:`tarfile.TarInfo` (see :meth:`.tarapply.TarApplier.apply`)."""
    kind = buf[156]
    if kind not in _FILE_DIR_TYPES or len(buf) != 512 or not (_fast is True or _check_once()):
        return None
    try:
        mode, uid, gid, size, mtime, _chksum, _major, _minor = _numbers(buf)
    except _Fallback:
        return None
    name = _text(buf, 0, 100)
    is_dir = kind == _DIRTYPE or (kind == _AREGTYPE and name.endswith("/"))
    return is_dir, _full_name(buf, name, is_dir), mode, uid, gid, size, mtime


def _pax_records(data: bytes) -> dict[str, str]:
    """The records of a pax ``x`` block when every one is well framed and simple; raises
    :class:`_Fallback` otherwise (tarfile's two parsers, regex and framed, agree on what is accepted)."""
    if b"hdrcharset" in data:
        raise _Fallback  # 3.11's tarfile finds it anywhere, even inside another record's value
    records: dict[str, str] = {}
    pos = 0
    n = len(data)
    while pos < n:
        if not data[pos]:
            if data.count(0, pos) != n - pos:
                raise _Fallback  # junk after the NUL that ends the records
            break
        space = data.find(b" ", pos, pos + 21)  # at most 20 digits
        if space <= pos or not data[pos:space].isdigit():
            raise _Fallback
        end = pos + int(data[pos:space])  # one past the record's newline
        if end - pos < 5 or end > n or data[end - 1] != 0x0A:
            raise _Fallback
        equals = data.find(b"=", space + 1, end - 1)
        if equals <= space + 1:
            raise _Fallback  # no "=" or an empty keyword
        try:
            key = data[space + 1 : equals].decode("utf-8")
        except UnicodeDecodeError:
            raise _Fallback from None
        if not (key in _PAX_NUMBERS or key in _PAX_ATTRS or key in _PAX_KEPT or key.startswith(_PAX_KEPT_PREFIX)):
            raise _Fallback
        # tarfile tries strict utf-8, then utf-8 (or the archive encoding, also utf-8 here) with
        # surrogateescape: that is surrogateescape alone
        records[key] = data[equals + 1 : end - 1].decode("utf-8", "surrogateescape")
        pos = end
    return records


def _apply_pax(info: tarfile.TarInfo, records: dict[str, str]) -> None:
    """``_apply_pax_info`` for the simple keys :func:`_pax_records` lets through."""
    for key, value in records.items():
        convert = _PAX_NUMBERS.get(key)
        if convert is not None:
            try:
                number = convert(value)
            except ValueError:
                raise _Fallback from None  # tarfile makes it 0; rare enough to leave to tarfile
            if not number >= 0 or (convert is float and not math.isfinite(number)):
                raise _Fallback
            setattr(info, key, number)
            continue
        attr = _PAX_ATTRS.get(key)
        if attr is not None:
            setattr(info, attr, value.rstrip("/") if key == "path" else value)
    info.pax_headers = records


def _read_fast(src: HeaderSource) -> tarfile.TarInfo:
    f = src.fileobj
    buf = f.read(512)
    if len(buf) != 512:
        return _fallback(src, buf)
    if buf[156] == _XHDTYPE:
        try:
            size = _numbers(buf)[3]  # the other fields must be valid too
        except _Fallback:
            return _fallback(src, buf)
        start = f.tell() - 512
        data = f.read((size + 511) & ~511)
        try:
            if len(data) != (size + 511) & ~511:
                raise _Fallback
            records = _pax_records(data)
        except _Fallback:
            return _fallback(src, buf, data)
        nxt = f.read(512)
        try:
            if len(nxt) != 512:
                raise _Fallback
            info = _plain(nxt, True)
            _apply_pax(info, records)
        except _Fallback:
            return _fallback(src, buf, data, nxt)
        info.offset = start
    else:
        try:
            info = _plain(buf, False)
        except _Fallback:
            return _fallback(src, buf)
        info.offset = f.tell() - 512
    data_at = f.tell()
    info.offset_data = data_at
    src.offset = data_at + ((info.size + 511) & ~511) if info.type[0] in _DATA_TYPES else data_at
    return info


#: None until the first call runs :func:`_self_check` (kept out of import time), then its verdict
_fast: bool | None = None


def read_header(src: HeaderSource) -> tarfile.TarInfo:
    """The next member of the tar stream ``src.fileobj``: exactly ``tarfile.TarInfo.fromtarfile(src)``
    (same attributes, same ``src.offset`` afterwards, same exceptions), faster on the common headers."""
    if _fast is not True and not _check_once():
        return _fromtarfile(src)  # type: ignore[arg-type]
    if src.pax_headers or src.encoding != "utf-8" or src.errors != "surrogateescape":
        return _fromtarfile(src)  # type: ignore[arg-type]
    return _read_fast(src)


def fast_path_enabled() -> bool:
    """False when :func:`_self_check` found the running tarfile disagreeing with the fast path."""
    return _check_once()


def _check_once() -> bool:
    global _fast
    if _fast is None:
        try:
            _fast = _self_check()
        except Exception:  # a tarfile we do not understand at all: leave every header to it
            _fast = False
    return bool(_fast)


class _Source:
    def __init__(self, data: bytes) -> None:
        self.fileobj = io.BytesIO(data)
        self.offset = 0
        self.encoding = "utf-8"
        self.errors = "surrogateescape"
        self.pax_headers: dict[str, str] = {}


def _members(data: bytes, reader: Any) -> list[tuple[Any, ...]]:
    src = _Source(data)
    out: list[tuple[Any, ...]] = []
    while True:
        try:
            info = reader(src)
        except tarfile.HeaderError as exc:
            out.append((type(exc),))
            return out
        out.append(
            (*(getattr(info, k) for k in ("name", "linkname", "size", "mode", "uid", "gid", "mtime", "chksum")),
             *(getattr(info, k) for k in ("type", "uname", "gname", "devmajor", "devminor", "offset")),
             info.offset_data, info.pax_headers, info.sparse, src.offset)
        )  # fmt: skip
        src.fileobj.seek(src.offset)


def _self_check() -> bool:
    """Both readers over tars the running tarfile writes; True when they agree on everything."""
    entries: list[tuple[str, bytes, dict[str, Any]]] = [
        ("d/", tarfile.DIRTYPE, {"mode": 0o755, "mtime": 1_700_000_000}),
        ("d/file", tarfile.REGTYPE, {"size": 700, "mtime": 1_700_000_000.25, "uname": "u", "gname": "g"}),
        ("d/" + "ü" * 60 + "/" + "long" * 30, tarfile.REGTYPE, {"size": 3, "uid": 1000, "gid": 1000}),
        ("d/link", tarfile.SYMTYPE, {"linkname": "file" * 40}),
        ("d/hard", tarfile.LNKTYPE, {"linkname": "d/file"}),
        ("d/dev", tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3, "mode": 0o666}),
        ("d/fifo", tarfile.FIFOTYPE, {"mode": 0o4755}),
        ("d/x", tarfile.REGTYPE, {"pax_headers": {"SCHILY.xattr.user.a": "b", "SCHILY.xattr.user.ü": "\x01\n"}}),
        ("d/bin", tarfile.REGTYPE, {"pax_headers": {"SCHILY.xattr.user.bin": "\udcff"}}),  # hdrcharset=BINARY
        ("d/big", tarfile.REGTYPE, {"uid": 1 << 22, "mtime": 1_700_000_000.5, "size": 1}),
    ]
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
            for name, kind, attrs in entries:
                info = tarfile.TarInfo(name)
                info.type = kind
                for key, value in attrs.items():
                    setattr(info, key, value)
                with contextlib.suppress(ValueError):  # not representable in this format: nothing written
                    tar.addfile(info, io.BytesIO(b"x" * info.size) if info.size else None)
        data = out.getvalue()
        if _members(data, _read_fast) != _members(data, _fromtarfile):
            return False
    return True
