"""The TOC: one :class:`FileMetadata` per tar entry, filled exactly as upstream's ``metadataFromTarReader``.

Upstream reads the decompressed layer with Go's ``archive/tar`` through a byte-position tracker. To get the
same answers (names verbatim — Python's :mod:`tarfile` strips the trailing ``/`` of directories —, raw PAX
records, nanosecond mtimes, Go's end-of-archive rule), this module has its own small *push* tar scanner that
follows ``archive/tar``'s reader rules: header checksum, V7/USTAR/PAX/GNU/STAR formats, PAX (``x``) and GNU
long-name (``L``/``K``) meta headers (at most 1 MiB each), base-256 numbers, header-only types (hard/sym
links, devices, dirs and fifos carry no data even with a size), ``\\0`` type with a trailing ``/`` → dir.
Being push-based, it is fed the decompressed chunks while the checkpoint scan runs (one pass, no seeking)
and only copies header bytes.

Strings are ``str`` decoded from the raw bytes as UTF-8 with ``surrogateescape``, so any byte string
round-trips (Go strings are bytes).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ..errors import FileVerificationError, FormatError, InvalidTOCEntry, SociLabError, UnsupportedTarEntry

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_MAX_SPECIAL = 1 << 20  # Go archive/tar maxSpecialFileSize

#: tar typeflag → TOC type string (upstream ``getType``).
TYPE_NAMES: dict[bytes, str] = {
    b"1": "hardlink",
    b"2": "symlink",
    b"5": "dir",
    b"0": "reg",
    b"3": "char",
    b"4": "block",
    b"6": "fifo",
}
FILE_TYPES: tuple[str, ...] = ("hardlink", "symlink", "dir", "reg", "char", "block", "fifo")
_HEADER_ONLY = frozenset(b"123456")  # typeflags whose data size is taken as 0 (Go isHeaderOnlyType)
SCHILY_XATTR = "SCHILY.xattr."
_S_IFMT = {
    "reg": stat.S_IFREG,
    "hardlink": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


def _s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def align_to_tar_block(n: int) -> int:
    """Round ``n`` up to a multiple of 512 (upstream ``AlignToTarBlock``)."""
    return (n + BLOCK - 1) & ~(BLOCK - 1)


# --- Go time text ---------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_TIME_RE = re.compile(r"(-?\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


#: Go's zero time (0001-01-01T00:00:00Z) in Unix seconds: what an empty ``mod_time`` reads back as.
GO_ZERO_TIME = -62135596800


def go_time_text(sec: int, nsec: int = 0) -> str:
    """Go's ``time.Unix(sec, nsec).UTC().MarshalText()``: RFC 3339, fraction without trailing zeros.

    Outside the years 1..9999 Go's MarshalText fails and upstream's marshaler ignores the error and
    writes an empty string; so does this function.
    """
    sec += nsec // 1_000_000_000
    nsec %= 1_000_000_000
    try:
        dt = _EPOCH + timedelta(seconds=sec)
    except OverflowError:
        return ""
    frac = f".{nsec:09d}".rstrip("0") if nsec else ""
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}{frac}Z"


def parse_go_time(text: str) -> tuple[int, int]:
    """Inverse of :func:`go_time_text` (any RFC 3339 offset accepted): ``(unix seconds, nanoseconds)``.

    An empty text is Go's zero time, as upstream's ``UnmarshalText`` (error ignored) leaves it.
    """
    if text == "":
        return GO_ZERO_TIME, 0
    m = _TIME_RE.fullmatch(text)
    if not m:
        raise FormatError(f"not an RFC 3339 time: {text[:40]!r}")
    y, mo, d, h, mi, s = map(int, m.group(1, 2, 3, 4, 5, 6))
    try:
        day = datetime(y, mo, d, h, mi, s).toordinal()  # validates every field
    except ValueError:
        raise FormatError(f"not an RFC 3339 time: {text[:40]!r}") from None
    # what (datetime(…, UTC) - epoch) // 1 s gives, without the aware arithmetic (a third of the cost: this runs
    # once per TOC entry when a lazy layer server builds its inode tree)
    sec = (day - _EPOCH_ORDINAL) * 86400 + h * 3600 + mi * 60 + s
    tz = m.group(8)
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        sec -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    frac = m.group(7) or ""
    return sec, int(frac.ljust(9, "0")) if frac else 0


# --- the model ------------------------------------------------------------------------------------


@dataclass
class FileMetadata:
    """One tar entry as upstream's ``ztoc.FileMetadata``.

    ``pax_headers`` holds the entry's raw PAX records (serialized in the zTOC field named ``xattrs`` —
    upstream's historical misnomer); :meth:`xattrs` derives the real extended attributes from them.
    ``tar_header_offset`` is not serialized: it is derived on read (and on build) from the previous entry.
    """

    name: str
    type: str
    uncompressed_offset: int
    uncompressed_size: int = 0
    linkname: str = ""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""
    mod_time: str = "1970-01-01T00:00:00Z"
    devmajor: int = 0
    devminor: int = 0
    pax_headers: dict[str, str] = field(default_factory=dict)
    tar_header_offset: int = field(default=0, compare=False)

    def xattrs(self) -> dict[str, str]:
        """Extended attributes: ``SCHILY.xattr.<name>`` PAX records with the prefix stripped (``ztoc/tar.go``)."""
        n = len(SCHILY_XATTR)
        return {k[n:]: v for k, v in self.pax_headers.items() if k.startswith(SCHILY_XATTR)}

    @property
    def tar_header_size(self) -> int:
        """Bytes of header blocks (incl. PAX / GNU long-name headers) before the data."""
        return self.uncompressed_offset - self.tar_header_offset

    def st_mode(self) -> int:
        """POSIX ``st_mode``: permission bits incl. setuid/setgid/sticky plus the file type bits (upstream
        ``FileMode()``; a hard link reports a regular file — resolve it to its target for real attributes)."""
        return (self.mode & 0o7777) | _S_IFMT[self.type]

    def mod_time_ns(self) -> int:
        """``mod_time`` as integer nanoseconds since the epoch."""
        sec, nsec = parse_go_time(self.mod_time)
        return sec * 1_000_000_000 + nsec


def entry_view(e: FileMetadata) -> tuple[object, ...]:
    """What of an entry a mounted layer shows, plus where its data is: name, type, data offset and size,
    link target, permission bits, uid, gid, mtime (ns), device numbers, xattrs. Two entries with the same
    view are served the same (``uname``/``gname`` and non-xattr PAX records are not shown)."""
    return (
        e.name, e.type, e.uncompressed_offset, e.uncompressed_size, e.linkname, e.mode & 0o7777,
        e.uid & 0xFFFFFFFF, e.gid & 0xFFFFFFFF, e.mod_time_ns(), e.devmajor, e.devminor, sorted(e.xattrs().items()),
    )  # fmt: skip


def derive_header_offsets(entries: list[FileMetadata]) -> list[FileMetadata]:
    """Sort by ``uncompressed_offset`` and derive ``tar_header_offset`` as upstream's ``flatbufferToTOC``.

    Raises :class:`InvalidTOCEntry` when a derived header offset lies beyond the entry's data offset.
    """
    entries.sort(key=lambda e: e.uncompressed_offset)
    prev_end = 0
    for i, e in enumerate(entries):
        hdr = 0 if i == 0 else align_to_tar_block(prev_end)
        if hdr > e.uncompressed_offset or e.uncompressed_offset < 0 or e.uncompressed_size < 0:
            raise InvalidTOCEntry(
                f"invalid toc entry {e.name!r}: header offset {hdr} > data offset {e.uncompressed_offset}"
            )
        e.tar_header_offset = hdr
        prev_end = e.uncompressed_offset + e.uncompressed_size
    return entries


# --- the scanner ----------------------------------------------------------------------------------


def _octal(b: bytes) -> int:
    b = b.strip(b" \0")
    if not b:
        return 0
    if b.strip(b"01234567"):
        raise FormatError(f"invalid octal number in tar header: {b[:20]!r}")
    return int(b, 8)


def _numeric(b: bytes) -> int:
    """Go ``parser.parseNumeric``: base-256 when the top bit is set, else octal."""
    if b and b[0] & 0x80:
        inv = 0xFF if b[0] & 0x40 else 0
        x = 0
        for i, c in enumerate(b):
            c ^= inv
            if i == 0:
                c &= 0x7F
            if x >> 56:
                raise FormatError("base-256 number in tar header overflows int64")
            x = (x << 8) | c
        if x >> 63:
            raise FormatError("base-256 number in tar header overflows int64")
        return ~x if inv else x
    return _octal(b)


def _cstr(b: bytes) -> bytes:
    i = b.find(b"\0")
    return b if i < 0 else b[:i]


_INT_RE = re.compile(rb"[+-]?[0-9]+")


def _pax_int(v: str, key: str) -> int:
    if not _INT_RE.fullmatch(v.encode("utf-8", "surrogateescape")):
        raise FormatError(f"invalid PAX {key} record: {v[:30]!r}")
    return int(v)


def _pax_time(v: str) -> tuple[int, int]:
    ss, _, sn = v.partition(".")
    sec = _pax_int(ss, "mtime")
    if not sn:
        return sec, 0
    if sn.strip("0123456789"):
        raise FormatError(f"invalid PAX mtime record: {v[:30]!r}")
    nsec = int(sn[:9].ljust(9, "0"))
    if ss.startswith("-"):
        nsec = -nsec
    return sec, nsec


def parse_pax_records(buf: bytes) -> dict[str, str]:
    """PAX extended header records ``"<len> <key>=<value>\\n"`` (Go ``parsePAX``; trailing NULs tolerated)."""
    out: dict[str, str] = {}
    pos, n = 0, len(buf)
    while pos < n:
        if buf[pos] == 0 and not buf[pos:].strip(b"\0"):
            break
        sp = buf.find(b" ", pos, min(n, pos + 20))
        if sp <= pos or not buf[pos:sp].isdigit():
            raise FormatError("malformed PAX record length")
        length = int(buf[pos:sp])
        end = pos + length
        if length <= sp - pos + 1 or end > n or buf[end - 1] != 0x0A:
            raise FormatError("malformed PAX record")
        rec = buf[sp + 1 : end - 1]
        key, eq, value = rec.partition(b"=")
        if not eq or not key:
            raise FormatError("malformed PAX record (no key=value)")
        out[_s(key)] = _s(value)
        pos = end
    return out


class TarScanner:
    """Push parser over an uncompressed tar stream; collects :class:`FileMetadata` in stream order.

    Call :meth:`feed` with consecutive chunks (bytes or memoryview; never retained), then :meth:`finish`
    with nothing; it returns ``uncompressed_archive_size`` by Go's rule: the reader position once
    ``Next()`` returned EOF (after two zero blocks, one zero block then end of stream, or end of stream
    exactly at a header boundary).
    """

    def __init__(self) -> None:
        self.entries: list[FileMetadata] = []
        self._pos = 0  # bytes fed so far
        self._want = 0  # absolute offset of the next wanted byte
        self._need = BLOCK  # bytes still wanted for the current region
        self._buf = bytearray()
        self._state = "header"  # header | zero2 | pax | gnulong | done
        self._pax: dict[str, str] | None = None
        self._long_name: bytes | None = None
        self._long_link: bytes | None = None
        self._special: bytes = b""  # typeflag of the meta header whose data we are reading
        self._special_size = 0
        self._entry_start = 0  # offset of the first header block of the current entry
        self.end: int | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Consume the next chunk of the uncompressed stream."""
        n = len(data)
        end = self._pos + n
        while self._state != "done" and self._want < end:
            off = self._want - self._pos
            take = min(self._need, end - self._want)
            if take == self._need and not self._buf:
                region = bytes(data[off : off + take])
            else:
                self._buf += data[off : off + take]
                region = None
            self._want += take
            self._need -= take
            if self._need == 0:
                if region is None:
                    region = bytes(self._buf)
                    self._buf.clear()
                self._process(region)
        self._pos = end

    def finish(self) -> int:
        """Signal end of stream; returns ``uncompressed_archive_size``. Raises FormatError if truncated."""
        if self._state == "done":
            assert self.end is not None
            return self.end
        if self._buf or self._want > self._pos or self._state not in ("header", "zero2"):
            raise FormatError(f"tar stream truncated at byte {self._pos} (inside an entry or header)")
        if self._state == "header" and (self._pax is not None or self._long_name or self._long_link):
            raise FormatError("tar stream ends after a PAX or GNU long-name header")
        self._state = "done"
        self.end = self._pos
        return self._pos

    # ----------------------------------------------------------------------------------------------

    def _process(self, region: bytes) -> None:
        st = self._state
        if st == "header":
            self._header(region)
        elif st == "zero2":
            if region != _ZERO_BLOCK:
                raise FormatError(f"tar: zero block followed by a non-zero block at byte {self._want - BLOCK}")
            self._state = "done"
            self.end = self._want
        else:  # pax / gnulong data
            if self._special == b"x":
                self._pax = parse_pax_records(region)
            elif self._special == b"L":
                self._long_name = _cstr(region)
            else:
                self._long_link = _cstr(region)
            self._state = "header"
            self._want = self._want - self._special_size + align_to_tar_block(self._special_size)
            self._need = BLOCK

    def _header(self, blk: bytes) -> None:
        hdr_pos = self._want - BLOCK
        if blk == _ZERO_BLOCK:
            if self._pax is not None or self._long_name or self._long_link:
                raise FormatError(f"tar: meta header not followed by an entry at byte {hdr_pos}")
            self._state = "zero2"
            self._need = BLOCK
            return
        if self._pax is None and self._long_name is None and self._long_link is None:
            self._entry_start = hdr_pos
        # checksum (Go accepts the unsigned or the signed sum)
        stored = _octal(blk[148:156])
        unsigned = sum(blk) - sum(blk[148:156]) + 8 * 32
        high = len(blk[:148].translate(None, _LOW)) + len(blk[156:].translate(None, _LOW))
        if stored != unsigned and stored != unsigned - 256 * high:
            raise FormatError(f"invalid tar header checksum at byte {hdr_pos}")
        magic, version, trailer = blk[257:263], blk[263:265], blk[508:512]
        if magic == b"ustar\0":
            fmt = "star" if trailer == b"tar\0" else "ustar"
        elif magic == b"ustar " and version == b" \0":
            fmt = "gnu"
        else:
            fmt = "v7"
        typeflag = blk[156:157]
        size = _numeric(blk[124:136])
        if size < 0:
            raise FormatError(f"negative size in tar header at byte {hdr_pos}")
        data_pos = self._want

        if typeflag in (b"x", b"L", b"K"):
            if size > _MAX_SPECIAL:
                raise FormatError(f"tar meta header of {size} bytes exceeds 1 MiB at byte {hdr_pos}")
            self._special = typeflag
            self._special_size = size
            if size == 0:
                self._state = "pax"
                self._process(b"")
                return
            self._state = "pax" if typeflag == b"x" else "gnulong"
            self._need = size
            return

        name = _cstr(blk[0:100])
        linkname = _cstr(blk[157:257])
        mode = _numeric(blk[100:108])
        uid = _numeric(blk[108:116])
        gid = _numeric(blk[116:124])
        mtime = _numeric(blk[136:148])
        uname = gname = b""
        devmajor = devminor = 0
        if fmt != "v7":
            uname = _cstr(blk[265:297])
            gname = _cstr(blk[297:329])
            devmajor = _numeric(blk[329:337])
            devminor = _numeric(blk[337:345])
            prefix = _cstr(blk[345:500]) if fmt == "ustar" else _cstr(blk[345:476]) if fmt == "star" else b""
            if prefix:
                name = prefix + b"/" + name
        sname, slink, suname, sgname = _s(name), _s(linkname), _s(uname), _s(gname)
        nsec = 0
        pax = self._pax or {}
        for k, v in pax.items():
            if v == "":
                continue
            if k == "path":
                sname = v
            elif k == "linkpath":
                slink = v
            elif k == "uname":
                suname = v
            elif k == "gname":
                sgname = v
            elif k == "uid":
                uid = _pax_int(v, k)
            elif k == "gid":
                gid = _pax_int(v, k)
            elif k == "size":
                size = _pax_int(v, k)
                if size < 0:
                    raise FormatError(f"negative PAX size at byte {hdr_pos}")
            elif k == "mtime":
                mtime, nsec = _pax_time(v)
            elif k.startswith("GNU.sparse."):
                raise UnsupportedTarEntry(f"unsupported input tar entry: sparse file {sname!r}")
        if self._long_name is not None:
            sname = _s(self._long_name)
        if self._long_link is not None:
            slink = _s(self._long_link)
        if typeflag in (b"\0", b""):
            typeflag = b"5" if sname.endswith("/") else b"0"
        ftype = TYPE_NAMES.get(typeflag)
        if ftype is None:
            raise UnsupportedTarEntry(f"unsupported input tar entry {typeflag.decode('latin-1')!r} ({sname!r})")
        self.entries.append(
            FileMetadata(
                name=sname,
                type=ftype,
                uncompressed_offset=data_pos,
                uncompressed_size=size,
                linkname=slink,
                mode=mode,
                uid=uid,
                gid=gid,
                uname=suname,
                gname=sgname,
                mod_time=go_time_text(mtime, nsec),
                devmajor=devmajor,
                devminor=devminor,
                pax_headers=dict(sorted(pax.items())),
                tar_header_offset=self._entry_start,
            )
        )
        self._pax = None
        self._long_name = self._long_link = None
        nb = 0 if typeflag[0] in _HEADER_ONLY else size
        self._want = data_pos + align_to_tar_block(nb)
        self._need = BLOCK


_LOW = bytes(range(128))


def toc_from_tar_chunks(chunks: Iterable[bytes]) -> tuple[list[FileMetadata], int]:
    """Build the TOC from an iterable of uncompressed tar chunks: ``(entries, uncompressed_archive_size)``."""
    sc = TarScanner()
    for c in chunks:
        sc.feed(c)
    size = sc.finish()
    return sc.entries, size


def verify_tar_header(entry: FileMetadata, header: bytes | bytearray | memoryview) -> None:
    """Upstream's per-file check (``fs/reader`` ``Verify``): ``header`` — the layer's uncompressed bytes
    ``[tar_header_offset, uncompressed_offset)``, read through verified spans — must parse as exactly one tar
    header of that length whose fields match the TOC entry (name, size, mtime, linkname, mode and type, uid,
    gid, device numbers, SCHILY xattrs). Ties the TOC to the span-digest-verified layer bytes.

    Raises :class:`~soci_lab.errors.FileVerificationError`.
    """
    sc = TarScanner()
    try:
        sc.feed(header)
    except SociLabError as exc:
        raise FileVerificationError(f"tar header of {entry.name!r} does not parse: {exc}") from None
    if len(sc.entries) != 1 or sc.entries[0].uncompressed_offset != len(header):
        raise FileVerificationError(
            f"tar header of {entry.name!r} is not one header of {len(header)} bytes as the TOC says"
        )
    h = sc.entries[0]
    got = (h.name, h.type, h.uncompressed_size, h.mod_time, h.linkname, h.st_mode(), h.uid & 0xFFFFFFFF,
           h.gid & 0xFFFFFFFF, h.devmajor, h.devminor, h.xattrs())
    want = (entry.name, entry.type, entry.uncompressed_size, entry.mod_time, entry.linkname, entry.st_mode(),
            entry.uid & 0xFFFFFFFF, entry.gid & 0xFFFFFFFF, entry.devmajor, entry.devminor, entry.xattrs())
    if got != want:
        names = ("name", "type", "size", "mod_time", "linkname", "mode", "uid", "gid", "devmajor", "devminor",
                 "xattrs")
        diff = next(n for n, a, b in zip(names, got, want, strict=True) if a != b)
        raise FileVerificationError(f"tar header of {entry.name!r} disagrees with the TOC on {diff}")


def check_toc(entries: Sequence[FileMetadata]) -> None:
    """Reject entries a zTOC cannot carry (unknown type strings, negative numbers)."""
    for e in entries:
        if e.type not in FILE_TYPES:
            raise UnsupportedTarEntry(f"unsupported toc entry type {e.type!r} for {e.name!r}")
