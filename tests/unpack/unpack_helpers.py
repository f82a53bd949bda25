"""Helpers of the unpack tests: craft tar files entry by entry, images of them, and watch a sentinel tree."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class E:
    """One crafted tar entry."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_600_000_000
    size: int | None = None  # override the header's size (absurd or lying sizes)
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)


def tar_bytes(entries: list[E], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar archive of ``entries`` exactly as written (no sanitising)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = e.type
            ti.mode = e.mode
            ti.uid, ti.gid = e.uid, e.gid
            ti.mtime = e.mtime
            ti.linkname = e.linkname
            ti.devmajor, ti.devminor = e.devmajor, e.devminor
            ti.pax_headers = dict(e.pax)
            if e.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                ti.size = len(e.data)
                if e.size is not None:
                    # write the header with the claimed size, followed by the (short) data
                    ti.size = e.size
                    buf.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
                    buf.write(e.data)
                    buf.write(b"\0" * ((512 - len(e.data) % 512) % 512))
                    tf.offset = buf.tell()
                    continue
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def write_layer(path: Path, entries: list[E], *, compress: str = "gzip") -> tuple[str, str]:
    """Write a layer blob; returns (compressed digest, diffID)."""
    raw = tar_bytes(entries)
    blob = gzip.compress(raw, 1) if compress == "gzip" else raw
    path.write_bytes(blob)
    return "sha256:" + hashlib.sha256(blob).hexdigest(), "sha256:" + hashlib.sha256(raw).hexdigest()


GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
ZST = "application/vnd.oci.image.layer.v1.tar+zstd"


def layer_image(tmp: Path, layers: list[tuple[str, list[E], str]]) -> tuple[list[Any], dict[str, Path], Path]:
    """Blobs of ``(name, entries, media type)`` layers (gzip or zstd) under ``tmp/blobs``, their specs, and
    each layer applied alone under ``tmp/expected/<i>`` (what a pull must produce at its mountpoint)."""
    import zstandard

    from soci_lab.unpack import LayerSpec, apply_layer

    blobs = tmp / "blobs"
    blobs.mkdir()
    specs, paths = [], {}
    for name, entries, media_type in layers:
        raw = tar_bytes(entries)
        blob = gzip.compress(raw, 1) if media_type == GZ else zstandard.ZstdCompressor(level=1).compress(raw)
        path = blobs / f"{name}.blob"
        path.write_bytes(blob)
        spec = LayerSpec(
            "sha256:" + hashlib.sha256(blob).hexdigest(),
            len(blob),
            media_type,
            "sha256:" + hashlib.sha256(raw).hexdigest(),
        )
        specs.append(spec)
        paths[spec.digest] = path
    expected = tmp / "expected"
    for i, spec in enumerate(specs):
        (expected / str(i)).mkdir(parents=True)
        apply_layer(paths[spec.digest], expected / str(i))
    return specs, paths, expected


def scan(root: Path, skip: Path | None = None, *, mtimes: bool = False) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root`` (except under ``skip``): (mode, uid, gid, content or link target), and with
    ``mtimes`` the mtime in ns after the mode (None for a directory: one made as a parent, without an entry
    of its own, keeps the time it was made)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if skip is not None and (d == skip or skip in d.parents):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = d / name
            if skip is not None and p == skip:
                continue
            st = p.lstat()
            content: bytes | str | None = None
            if stat.S_ISREG(st.st_mode):
                content = p.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            if mtimes:
                mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
                out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, mtime, content)
            else:
                out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, content)
    return out
