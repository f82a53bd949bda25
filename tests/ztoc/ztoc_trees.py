"""Hypothesis strategies for tar trees and layer compressions used by the ztoc tests.

A tree is a list of entries (regular files from empty to several 64 KiB spans long, dirs, symlinks,
hardlinks, names long enough to need PAX, SCHILY xattrs, fifos, char/block devices); it is written with
:mod:`tarfile` in PAX or GNU format, then compressed as gzip (levels 0/1/6/9, one or several members),
left uncompressed, or cut into multi-frame zstd.
"""

from __future__ import annotations

import io
import itertools
import os
import tarfile
import zlib
from dataclasses import dataclass

from hypothesis import strategies as st

from soci_lab.ztoc.zstd_zinfo import compress_zstd_frames

SPAN = 64 * 1024

_name_part = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-é", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)


@st.composite
def file_data(draw: st.DrawFn) -> bytes:
    """Empty to ~3 spans; a mix of compressible text and incompressible random bytes."""
    size = draw(st.one_of(st.integers(0, 600), st.integers(0, 3 * SPAN + 5000)))
    kind = draw(st.sampled_from(["random", "text", "zeros", "mixed"]))
    seed = draw(st.integers(0, 2**32 - 1))
    if kind == "random":
        return os.urandom(size) if size > 5000 else seed.to_bytes(4, "little") * (size // 4) + b"x" * (size % 4)
    if kind == "zeros":
        return bytes(size)
    text = (f"line {seed} of some text with words and numbers {seed * 7}\n" * (size // 40 + 1)).encode()[:size]
    if kind == "mixed" and size > 100:
        return text[: size // 2] + os.urandom(size - size // 2)
    return text


@dataclass
class Entry:
    """One tar entry to write."""

    name: str
    kind: str  # reg dir sym hard fifo chr blk
    data: bytes = b""
    link: str = ""
    xattrs: dict[str, str] | None = None
    mtime: float = 1_700_000_000
    uid: int = 0
    mode: int = 0o644
    major: int = 0
    minor: int = 0


@st.composite
def trees(draw: st.DrawFn, max_entries: int = 12) -> list[Entry]:
    """A list of tar entries; names unique; hardlinks point at an earlier regular file."""
    n = draw(st.integers(0, max_entries))
    entries: list[Entry] = []
    names: set[str] = set()
    regs: list[str] = []
    for _ in range(n):
        parts = draw(st.lists(_name_part, min_size=1, max_size=3))
        if draw(st.booleans()) and draw(st.integers(0, 4)) == 0:
            parts.insert(0, "long" * draw(st.integers(20, 40)))  # > 100 chars → PAX path
        name = "/".join(parts)
        if name in names:
            continue
        names.add(name)
        kind = draw(st.sampled_from(["reg", "reg", "reg", "dir", "sym", "hard", "fifo", "chr", "blk"]))
        if kind == "hard" and not regs:
            kind = "reg"
        e = Entry(name=name, kind=kind)
        e.mtime = draw(st.one_of(st.just(1_700_000_000), st.integers(0, 2**33), st.floats(0, 2e9).map(
            lambda f: round(f, 3))))
        e.uid = draw(st.sampled_from([0, 1000, 65534, 2**21 + 1]))
        e.mode = draw(st.sampled_from([0o644, 0o755, 0o4755, 0o1777, 0o600]))
        if kind == "reg":
            e.data = draw(file_data())
            regs.append(name)
        elif kind == "sym":
            e.link = draw(st.one_of(st.just("../target"), st.text("abc/xyz", min_size=1, max_size=150)))
        elif kind == "hard":
            e.link = draw(st.sampled_from(regs))
        elif kind in ("chr", "blk"):
            e.major, e.minor = draw(st.integers(0, 255)), draw(st.integers(0, 255))
        if draw(st.integers(0, 3)) == 0:
            e.xattrs = {
                "user." + draw(_name_part): draw(st.text(max_size=20)),
                "security.capability": "\x01\x00\x00\x02",
            }
        entries.append(e)
    return entries


_TYPES = {
    "reg": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "sym": tarfile.SYMTYPE,
    "hard": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
}


def write_tar(entries: list[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """Serialize ``entries`` with :mod:`tarfile` (xattrs only in PAX format)."""
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=fmt) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name + ("/" if e.kind == "dir" and fmt == tarfile.GNU_FORMAT else ""))
            ti.type = _TYPES[e.kind]
            ti.mtime = e.mtime
            ti.uid = e.uid
            ti.gid = e.uid // 2
            ti.uname = "user" if e.uid else "root"
            ti.gname = "grp"
            ti.mode = e.mode
            ti.linkname = e.link
            ti.devmajor, ti.devminor = e.major, e.minor
            if e.xattrs and fmt == tarfile.PAX_FORMAT:
                ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in e.xattrs.items()}
            if e.kind == "reg":
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return bio.getvalue()


def gzip_bytes(raw: bytes, level: int) -> bytes:
    """One gzip member at ``level`` (0 = stored blocks)."""
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(raw) + c.flush()


def gzip_members(raw: bytes, cuts: list[int], level: int) -> bytes:
    """Several gzip members, split at the (sorted, clamped) uncompressed ``cuts``."""
    bounds = [0, *sorted({min(max(c, 0), len(raw)) for c in cuts}), len(raw)]
    return b"".join(gzip_bytes(raw[a:b], level) for a, b in itertools.pairwise(bounds) if b > a or a == 0)


def zstd_frames(raw: bytes, frame_size: int, level: int = 3) -> bytes:
    """Multi-frame zstd through :func:`compress_zstd_frames`."""
    out = io.BytesIO()
    compress_zstd_frames(io.BytesIO(raw), out, frame_size, level)
    return out.getvalue()


@st.composite
def layers(draw: st.DrawFn, max_entries: int = 10) -> tuple[str, bytes, bytes, list[Entry]]:
    """``(compression label, layer blob, raw tar, entries)``."""
    entries = draw(trees(max_entries))
    fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))
    raw = write_tar(entries, fmt)
    kind = draw(st.sampled_from(["gzip0", "gzip1", "gzip6", "gzip9", "members", "uncompressed", "zstd"]))
    if kind.startswith("gzip"):
        return kind, gzip_bytes(raw, int(kind[4:])), raw, entries
    if kind == "members":
        cuts = draw(st.lists(st.integers(0, len(raw)), min_size=1, max_size=3))
        level = draw(st.sampled_from([0, 1, 6, 9]))
        return f"members{level}", gzip_members(raw, cuts, level), raw, entries
    if kind == "zstd":
        fs = draw(st.sampled_from([SPAN // 4, SPAN, SPAN + 777]))
        return kind, zstd_frames(raw, fs), raw, entries
    return kind, raw, raw, entries
