"""The lean header reader agrees with ``tarfile.TarInfo.fromtarfile`` on everything, valid or not.

Each property reads a whole archive twice, member after member, once with
:func:`soci_lab.unpack.tarheader.read_header` and once with the running Python's
``tarfile.TarInfo.fromtarfile`` (both over a :class:`ChunkStream` cut into random chunks, as the applier
reads it), and compares every ``TarInfo`` slot, the source's ``offset`` after each header, its global pax
headers and, where reading stops, the exception class. Archives are written by tarfile itself (ustar, GNU,
PAX, with global headers) and then mutated (byte flips with and without a repaired checksum, truncation,
base-256 and odd numeric fields, hand-made pax records, good and bogus).
"""

from __future__ import annotations

import io
import math
import tarfile
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from soci_lab.unpack import tarheader
from soci_lab.unpack.chunkstream import ChunkStream
from soci_lab.unpack.tarheader import read_header

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_MISSING = "<unset>"
_SLOTS = [name for cls in tarfile.TarInfo.__mro__ for name in getattr(cls, "__slots__", ())]


class _Src:
    """What the applier gives tarfile: ``fileobj``, ``offset``, ``encoding``, ``errors``, ``pax_headers``."""

    def __init__(self, data: bytes, cuts: list[int]) -> None:
        chunks: list[bytes] = []
        pos = 0
        for cut in sorted(set(cuts)):
            if 0 < cut < len(data):
                chunks.append(data[pos:cut])
                pos = cut
        chunks.append(data[pos:])
        feed = iter(chunks)
        self.fileobj = ChunkStream(lambda: next(feed, None))
        self.offset = 0
        self.encoding = "utf-8"
        self.errors = "surrogateescape"
        self.pax_headers: dict[str, str] = {}


def _snapshot(info: tarfile.TarInfo) -> dict[str, Any]:
    out = {name: getattr(info, name, _MISSING) for name in _SLOTS}
    if isinstance(info.mtime, float) and math.isnan(info.mtime):
        out["mtime"] = "NaN"  # nan != nan
    out["pax_headers"] = dict(info.pax_headers)  # compare contents and key order
    out["pax_order"] = list(info.pax_headers)
    return out


def _read_all(data: bytes, reader: Callable[[Any], tarfile.TarInfo], cuts: list[int]) -> list[Any]:
    """Every member's slots and the source's offset, then what stopped the reading."""
    src = _Src(data, cuts)
    out: list[Any] = []
    for _ in range(10_000):
        try:
            info = reader(src)
        except Exception as exc:
            out.append(("raised", type(exc), src.offset, dict(src.pax_headers)))
            return out
        out.append((_snapshot(info), src.offset, dict(src.pax_headers), src.fileobj.tell()))
        rest = src.offset - src.fileobj.tell()
        if rest < 0:
            out.append(("overrun",))
            return out
        try:
            src.fileobj.skip(rest)
        except Exception as exc:
            out.append(("skip", type(exc)))
            return out
    return out


def _agree(data: bytes, cuts: list[int] | None = None) -> list[Any]:
    cuts = cuts or []
    lean = _read_all(data, read_header, cuts)
    ref = _read_all(data, tarfile.TarInfo.fromtarfile, cuts)
    assert lean == ref
    return ref


# --- archives written by tarfile ---------------------------------------------------------------------

_name_part = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=40
) | st.sampled_from(["a", "ü", "名前", "x" * 99, ".wh.f", ".."])
_names = st.lists(_name_part, min_size=1, max_size=6).map("/".join).map(lambda n: n[:300])
_types = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
    ]
)
_mtimes = (
    st.integers(0, 8**11 - 1)
    | st.integers(-(2**40), 2**40)
    | st.floats(0, 2**33, allow_nan=False)
    | st.floats(-(2**33), 2**35, allow_nan=False, allow_infinity=False)
)
_ids = st.integers(0, 2**21 - 1) | st.integers(0, 2**40)
_xattrs = st.dictionaries(
    st.sampled_from(["user.a", "user.ü", "security.capability", "trusted.overlay.opaque", "user." + "k" * 50]),
    st.text(max_size=30) | st.sampled_from(["\udcff\udc80", "", "a\nb", "=", "y"]),
    max_size=3,
)


@st.composite
def _entries(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(_types)
    return {
        "name": draw(_names) + draw(st.sampled_from(["", "", "/", "//"])),
        "type": kind,
        "size": draw(st.integers(0, 1500)) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) else 0,
        "mode": draw(st.integers(0, 0o7777) | st.integers(0, 8**7 - 1)),
        "uid": draw(_ids),
        "gid": draw(_ids),
        "mtime": draw(_mtimes),
        "linkname": draw(_names | st.just("")) if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else "",
        "uname": draw(st.sampled_from(["", "root", "üser", "u" * 32])),
        "gname": draw(st.sampled_from(["", "wheel", "g" * 31])),
        "devmajor": draw(st.integers(0, 300)),
        "devminor": draw(st.integers(0, 2**21)),
        "xattrs": draw(_xattrs),
    }


def _write(entries: list[dict[str, Any]], fmt: int, global_pax: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape", pax_headers=global_pax
    ) as tar:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            for key in ("type", "size", "mode", "uid", "gid", "mtime", "linkname", "uname", "gname"):
                setattr(info, key, e[key])
            info.devmajor, info.devminor = e["devmajor"], e["devminor"]
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e["xattrs"].items()}
            try:
                tar.addfile(info, io.BytesIO(b"d" * info.size) if info.size else None)
            except (ValueError, UnicodeError):
                continue  # not representable in this format; tobuf raised before writing anything
    return out.getvalue()


_formats = st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
_cuts = st.lists(st.integers(0, 20_000), max_size=6)


@SETTINGS
@given(st.lists(_entries(), min_size=1, max_size=8), _formats, _cuts)
def test_archives_written_by_tarfile(entries: list[dict[str, Any]], fmt: int, cuts: list[int]) -> None:
    _agree(_write(entries, fmt), cuts)


@SETTINGS
@given(
    st.lists(_entries(), min_size=1, max_size=5),
    st.dictionaries(st.sampled_from(["comment", "mtime", "uid", "path", "SCHILY.xattr.user.g"]), st.text(max_size=12)),
    _cuts,
)
def test_global_pax_headers(entries: list[dict[str, Any]], global_pax: dict[str, str], cuts: list[int]) -> None:
    _agree(_write(entries, tarfile.PAX_FORMAT, global_pax or {"comment": "x"}), cuts)


# --- mutated archives --------------------------------------------------------------------------------


def _fix_checksum(block: bytearray, signed: bool = False) -> None:
    """Rewrite the checksum field of a 512-byte header block (unsigned sum, or the signed one)."""
    block[148:156] = b"        "
    total = sum((b - 256 if b > 127 else b) for b in block) if signed else sum(block)
    block[148:156] = b"%06o\0 " % (total & 0o777777)


def _header_offsets(data: bytes) -> list[int]:
    """Where each header block of a well-formed archive starts (walking with tarfile)."""
    src = _Src(data, [])
    out = []
    while True:
        start = src.offset
        try:
            tarfile.TarInfo.fromtarfile(src)  # type: ignore[arg-type]
        except Exception:
            return out
        out.append(start)
        src.fileobj.skip(src.offset - src.fileobj.tell())


@SETTINGS
@given(
    st.lists(_entries(), min_size=1, max_size=4),
    _formats,
    st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=6),
    st.sampled_from(["none", "unsigned", "signed"]),
    _cuts,
)
def test_byte_flips(
    entries: list[dict[str, Any]], fmt: int, flips: list[tuple[int, int]], fix: str, cuts: list[int]
) -> None:
    data = bytearray(_write(entries, fmt))
    for pos, value in flips:
        data[pos % len(data)] = value
    if fix != "none":
        for off in range(0, min(len(data), 4096), 512):
            block = data[off : off + 512]
            if block.count(0) != 512 and len(block) == 512:
                _fix_checksum(block, signed=fix == "signed")
                data[off : off + 512] = block
    _agree(bytes(data), cuts)


@SETTINGS
@given(st.lists(_entries(), min_size=1, max_size=4), _formats, st.integers(0, 8000), _cuts)
def test_truncation(entries: list[dict[str, Any]], fmt: int, cut: int, cuts: list[int]) -> None:
    data = _write(entries, fmt)
    _agree(data[: cut % (len(data) + 1)], cuts)


#: (offset, length) of the numeric fields: mode, uid, gid, size, mtime, chksum, devmajor, devminor
_NUMERIC = [(100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (148, 8), (329, 8), (337, 8)]


@st.composite
def _numeric_field(draw: st.DrawFn, length: int) -> bytes:
    """Field texts that tarfile's nti reads, refuses or reads oddly."""
    digits = length - 1
    n = draw(st.integers(0, 8**digits - 1))
    kind = draw(
        st.sampled_from(
            [
                "canonical",
                "space",
                "nul-pad",
                "lead-nul",
                "base256",
                "neg256",
                "sign",
                "under",
                "0o",
                "blank",
                "garbage",
                "non-ascii",
                "full",
                "tail-junk",
                "inner-space",
                "empty-space",
                "ctrl-ws",
            ]
        )
    )
    text = b"%0*o" % (digits, n)
    if kind == "canonical":
        field = text + b"\0"
    elif kind == "space":
        field = (b"%*o " % (digits - 1, n))[-length + 1 :].rjust(length - 1) + b"\0"
    elif kind == "nul-pad":
        field = (b"%o" % n).ljust(length, b"\0")[:length]
    elif kind == "lead-nul":
        field = b"\0" + text[1:] + b"\0"
    elif kind == "base256":
        field = b"\x80" + n.to_bytes(length - 1, "big")
    elif kind == "neg256":
        field = b"\xff" + draw(st.binary(min_size=length - 1, max_size=length - 1))
    elif kind == "sign":
        field = draw(st.sampled_from([b"-", b"+"])) + text[1:] + b"\0"
    elif kind == "under":
        field = (text[:2] + b"_" + text[3:]) + b"\0"
    elif kind == "0o":
        field = b"0o" + text[2:] + b"\0"
    elif kind == "blank":
        field = b" " * length
    elif kind == "garbage":
        field = draw(st.binary(min_size=length, max_size=length))
    elif kind == "non-ascii":
        field = text[:2] + b"\xa0" + text[3:] + b"\0"
    elif kind == "full":
        field = b"%0*o" % (length, draw(st.integers(0, 8**length - 1)))
    elif kind == "tail-junk":
        field = text[: digits - 3] + b"\0x9\0"
    elif kind == "inner-space":
        field = text[:2] + b" " + text[3:] + b"\0"
    elif kind == "empty-space":
        field = b"   " + b"\0" * (length - 3)
    else:  # ctrl-ws: characters str.strip() removes but int(bytes) does not
        field = b"\x1c" + text[1:] + b"\0"
    assert len(field) == length, (kind, field)
    return field


@SETTINGS
@given(
    st.lists(_entries(), min_size=1, max_size=3),
    _formats,
    st.data(),
    st.sampled_from(["unsigned", "signed", "none"]),
    _cuts,
)
def test_numeric_fields(
    entries: list[dict[str, Any]], fmt: int, data: st.DataObject, fix: str, cuts: list[int]
) -> None:
    raw = bytearray(_write(entries, fmt))
    offsets = _header_offsets(bytes(raw))
    assume(offsets)
    off = data.draw(st.sampled_from(offsets))
    block = raw[off : off + 512]
    fields = data.draw(st.lists(st.sampled_from(_NUMERIC), min_size=1, max_size=4))
    for start, length in fields:
        block[start : start + length] = data.draw(_numeric_field(length))
    if fix != "none" and (148, 8) not in fields:
        _fix_checksum(block, signed=fix == "signed")
    raw[off : off + 512] = block
    _agree(bytes(raw), cuts)


# --- hand-made pax headers ---------------------------------------------------------------------------


def _record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n += 1
    return b"%d" % n + body


_good_records = st.builds(
    _record,
    st.sampled_from(
        [
            b"path",
            b"linkpath",
            b"size",
            b"uid",
            b"gid",
            b"uname",
            b"gname",
            b"mtime",
            b"atime",
            b"ctime",
            b"SCHILY.xattr.user.a",
            b"SCHILY.xattr.security.capability",
            b"SCHILY.xattr.",
            b"comment",
            b"hdrcharset",
            b"GNU.sparse.map",
            b"GNU.sparse.size",
            b"GNU.sparse.name",
            b"charset",
            b"k\xffey",
        ]
    ),
    st.sampled_from(
        [
            b"1700000000.123456789",
            b"1700000000",
            b"-5",
            b"0",
            b"12",
            b" 12 ",
            b"1_000",
            b"abc",
            b"nan",
            b"inf",
            b"1e400",
            b"",
            b"a/b/",
            b"/",
            b"\xff\xfe",
            b"\xc3\xbc",
            b"BINARY",
            b"x\ny",
            b"a=b",
            b"0,10,20,5",
            b"99",
        ]
    )
    | st.binary(max_size=20),
)
_bogus_records = st.sampled_from(
    [
        b"0 x=\n",
        b"5 x=\n",
        b"4 =\n",
        b"6 path\n",
        b"30 path=short\n",
        b"3 a=b\n",
        b"12 path=abc\n",
        b"x path=a\n",
        b"7 path=a",
        b"006 x=y\n",
        b"000000000000000000006 x=y\n",
        b" 9 path=a\n",
        b"9  path=a\n",
        b"9 path=ab\n",
        b"11 a=b\n1 hdrcharset=BINARY\n",
        b"\0junk",
        b"18 path=a\0b\n",
    ]
)


def _pax_block(records: bytes, *, kind: bytes = tarfile.XHDTYPE) -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = kind
    info.size = len(records)
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape") + records.ljust(
        -(-len(records) // 512) * 512, b"\0"
    )


@SETTINGS
@given(
    st.lists(_good_records | _bogus_records, max_size=6),
    st.binary(max_size=3) | st.just(b""),
    st.lists(_entries(), min_size=1, max_size=2),
    _formats,
    st.sampled_from([tarfile.XHDTYPE, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE]),
    _cuts,
)
def test_pax_records(
    records: list[bytes], tail: bytes, entries: list[dict[str, Any]], fmt: int, kind: bytes, cuts: list[int]
) -> None:
    body = _write(entries, fmt)
    _agree(_pax_block(b"".join(records) + tail, kind=kind) + body, cuts)


@SETTINGS
@given(
    st.lists(_good_records, max_size=4),
    st.sampled_from([tarfile.AREGTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, b"S", b"L", b"x", b"g"]),
    st.sampled_from(["dir/", "file", "a" * 100, "", "/"]),
    st.integers(0, 1200),
    _cuts,
)
def test_pax_then_any_header(records: list[bytes], kind: bytes, name: str, size: int, cuts: list[int]) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    header = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    data = _pax_block(b"".join(records)) + header + b"z" * (-(-size // 512) * 512) + b"\0" * 1024
    _agree(data, cuts)


# --- examples and the fast path's reach --------------------------------------------------------------


def _doc_like(fmt: int) -> bytes:
    entries = [
        {"name": f"usr/share/doc/pkg{i}/{n}", "type": t, "size": s, "mode": 0o644, "uid": 0, "gid": 0}
        | {"mtime": 1_700_000_000.123 + i, "linkname": "", "uname": "root", "gname": "root"}
        | {"devmajor": 0, "devminor": 0, "xattrs": {}}
        for i in range(20)
        for n, t, s in (
            ("", tarfile.DIRTYPE, 0),
            ("copyright", tarfile.REGTYPE, 700),
            ("changelog.gz", tarfile.REGTYPE, 3),
        )
    ]
    return _write(entries, fmt)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_common_archives_take_the_fast_path(fmt: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tarheader.fast_path_enabled(), "the running tarfile disagrees with the fast path (see _self_check)"
    calls: list[int] = []
    real = tarheader._fallback

    def counting(src: Any, *read: bytes) -> tarfile.TarInfo:
        calls.append(len(read))
        return real(src, *read)

    monkeypatch.setattr(tarheader, "_fallback", counting)
    members = _agree(_doc_like(fmt))
    assert len(members) == 61  # 60 members, then the end-of-archive block
    assert calls == [1]  # only the end-of-archive block went to tarfile


def test_fallbacks_replay_across_chunks() -> None:
    """A GNU long name, a global header and a sparse-looking pax header after plain members, read through
    one-byte-ish chunks: offsets stay right after every fallback."""
    plain = _write([{**_entry_fixture(), "name": f"f{i}"} for i in range(3)], tarfile.GNU_FORMAT)
    longname = _write([{**_entry_fixture(), "name": "n" * 150}], tarfile.GNU_FORMAT)
    glob = _write([_entry_fixture()], tarfile.PAX_FORMAT, {"comment": "hi"})
    sparse = _pax_block(_record(b"GNU.sparse.size", b"5")) + plain
    data = _members_only(plain) + _members_only(longname) + _members_only(sparse) + plain + glob
    _agree(data, list(range(0, len(data), 97)))
    _agree(data, list(range(0, len(data), 511)))


def _members_only(data: bytes) -> bytes:
    """The archive without its end-of-archive blocks."""
    offsets = _header_offsets(data)
    src = _Src(data, [])
    src.fileobj.skip(offsets[-1])
    src.offset = offsets[-1]
    tarfile.TarInfo.fromtarfile(src)  # type: ignore[arg-type]
    return data[: src.offset]


def _entry_fixture() -> dict[str, Any]:
    return {"name": "f", "type": tarfile.REGTYPE, "size": 100, "mode": 0o600, "uid": 1, "gid": 2} | {
        "mtime": 1_700_000_000,
        "linkname": "",
        "uname": "",
        "gname": "",
        "devmajor": 0,
        "devminor": 0,
        "xattrs": {},
    }


def test_self_check_passes_here() -> None:
    assert tarheader._self_check()


def test_other_encodings_go_to_tarfile(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> None:
        raise AssertionError("fast path used")

    monkeypatch.setattr(tarheader, "_read_fast", boom)
    src = _Src(_doc_like(tarfile.PAX_FORMAT), [])
    src.errors = "strict"
    assert read_header(src).name == "usr/share/doc/pkg0"


def _header(
    name: str = "f", kind: bytes = tarfile.REGTYPE, data_size: int = 0, *, signed: bool = False, **fields: bytes
) -> bytes:
    """A ustar header block with some numeric fields replaced (by name) and the checksum made right (the
    unsigned sum, or the signed one)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = data_size
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"))
    where = dict(zip(["mode", "uid", "gid", "size", "mtime", "chksum", "devmajor", "devminor"], _NUMERIC, strict=True))
    for key, value in fields.items():
        start, length = where[key]
        block[start : start + length] = value.ljust(length, b"\0")
    if "chksum" not in fields:
        _fix_checksum(block, signed=signed)
    return bytes(block)


_EOF = b"\0" * 1024
_EXAMPLES = {
    "negative mode": _header(mode=b"-000001"),
    "negative size": _header(size=b"-0000000001"),
    "base-256 uid": _header(uid=b"\x80\0\0\0\0\x01\0\0"),
    "negative base-256 size": _header(size=b"\xff" * 12),
    "space-ended devminor": _header(devminor=b"0000001 "),
    "devmajor with inner NUL": _header(devmajor=b"00\x000001\0"),
    "8-digit mode": _header(mode=b"00000644"),
    "signed checksum only": _header("ü/é", signed=True) + _EOF,
    "pax then signed checksum": _pax_block(_record(b"uid", b"1")) + _header("ü", signed=True) + _EOF,
    "v7 directory": _header(name="d/", kind=tarfile.AREGTYPE) + _EOF,
    "pax then nothing": _pax_block(_record(b"mtime", b"1.5")),
    "pax then half a header": _pax_block(_record(b"mtime", b"1.5")) + _header()[:300],
    "pax then end of archive": _pax_block(_record(b"path", b"x")) + _EOF,
    "pax negative size": _pax_block(_record(b"size", b"-5")) + _header(data_size=600) + b"z" * 1024 + _EOF,
    "pax size moves data": _pax_block(_record(b"size", b"1025")) + _header(data_size=1) + b"z" * 1536 + _EOF,
    "pax size on a symlink": _pax_block(_record(b"size", b"700")) + _header(kind=tarfile.SYMTYPE) + _EOF,
    "pax v7 directory": _pax_block(_record(b"mtime", b"1")) + _header("d/", tarfile.AREGTYPE, 512) + b"z" * 512,
    "pax path of slashes": _pax_block(_record(b"path", b"a///")) + _header() + _EOF,
    "pax bad mtime": _pax_block(_record(b"mtime", b"soon")) + _header() + _EOF,
    "pax duplicate keys": _pax_block(_record(b"path", b"a") + _record(b"uid", b"7") + _record(b"path", b"b"))
    + _header(),
    "pax header of size 0": _pax_block(b"") + _header() + _EOF,
    "pax with a bad checksum": _pax_block(_record(b"path", b"a"))[:148] + b"0000000\0" + b"\0" * 356 + _header(),
}


@pytest.mark.parametrize("data", list(_EXAMPLES.values()), ids=list(_EXAMPLES))
def test_examples(data: bytes) -> None:
    _agree(data)
    _agree(data, list(range(1, len(data), 7)))


# --- plain_fields: the applier's shortcut for plain file and directory headers --------------------------


def _plain_agrees(block: bytes) -> bool:
    """``plain_fields(block)`` is None or exactly what tarfile reads from that block alone; True if not None."""
    fields = tarheader.plain_fields(block)
    if fields is None:
        return False
    info = tarfile.TarInfo.fromtarfile(_Src(block + bytes(1024), []))  # type: ignore[arg-type]
    assert info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)
    assert not info.pax_headers
    assert fields == (info.isdir(), info.name, info.mode, info.uid, info.gid, info.size, info.mtime)
    return True


@SETTINGS
@given(
    st.lists(_entries(), min_size=1, max_size=4),
    _formats,
    st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=6),
    st.sampled_from(["none", "unsigned", "signed"]),
)
def test_plain_fields_are_what_tarfile_reads(
    entries: list[dict[str, Any]], fmt: int, flips: list[tuple[int, int]], fix: str
) -> None:
    """Every 512-byte block of written and byte-flipped archives: plain_fields gives tarfile's values for a
    plain file or directory header, and None for anything else (a pax or GNU header, a link, a bad field)."""
    data = bytearray(_write(entries, fmt))
    for pos, value in flips:
        data[pos % len(data)] = value
    for off in range(0, len(data) - 511, 512):
        block = bytearray(data[off : off + 512])
        if fix != "none" and block.count(0) != 512:
            _fix_checksum(block, signed=fix == "signed")
        _plain_agrees(bytes(block))


def test_plain_fields_take_ustar_files_and_directories() -> None:
    """Not vacuous: on a ustar archive of files and directories every header is read by plain_fields."""
    entries = [
        {**_entry_fixture(), "name": name, "type": kind, "size": size}
        for name, kind, size in [("d/", tarfile.DIRTYPE, 0), ("d/f", tarfile.REGTYPE, 7), ("d/e", tarfile.AREGTYPE, 0)]
    ]
    entries.append({**_entry_fixture(), "name": "p" * 120 + "/q", "type": tarfile.REGTYPE})  # uses the prefix
    data = _write(entries, tarfile.USTAR_FORMAT)
    taken = [_plain_agrees(data[off : off + 512]) for off in _header_offsets(data)]
    assert taken == [True] * 4
    assert tarheader.plain_fields(data[-1024:-512]) is None  # the end-of-archive block
