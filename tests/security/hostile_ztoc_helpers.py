"""Helpers of the hostile-zTOC tests: one layer with every kind of entry, its eager and lazy views, and
zTOC mutations an attacker can make (span digests recomputed over the real blob, as an attacker can).

The *view* of a layer is what a mount shows: per path its kind, permission bits, owner, content digest or
link target or device number, and extended attributes (mtimes aside: eager stamps implicit directories
with the time of the unpack).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import random
import stat
import tarfile
from pathlib import Path
from typing import Any

import anyio

from soci_lab.errors import SociLabError
from soci_lab.lazy.fetcher import BytesRangeFetcher
from soci_lab.lazy.reader import LayerReader, LayerTree
from soci_lab.lazy.span_manager import SpanManager
from soci_lab.unpack import apply_layer
from soci_lab.ztoc import Ztoc, build_ztoc
from soci_lab.ztoc.gzip_zinfo import Checkpoint, GzipZinfo
from soci_lab.ztoc.toc import FileMetadata

SPAN = 32 << 10
View = dict[str, tuple[Any, ...]]


def _inner_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        data = b"#!/bin/sh\necho owned\n"
        ti = tarfile.TarInfo("bin/sh")
        ti.size, ti.mode, ti.mtime = len(data), 0o755, 1_600_000_000
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def layer_tar() -> bytes:
    """A layer with files over several spans, dirs, links, devices, whiteouts, xattrs and a tar inside a file."""
    rnd = random.Random(20)
    buf = io.BytesIO()

    def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: Any) -> None:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mtime = 1_600_000_000
        ti.mode = kw.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
        ti.pax_headers = kw.pop("pax", {})
        for k, v in kw.items():
            setattr(ti, k, v)
        if kind == tarfile.REGTYPE:
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        else:
            tf.addfile(ti)

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        add("bin", tarfile.DIRTYPE)
        add("bin/evil", data=b"EVIL " * 400, mode=0o755)
        add("bin/good", data=rnd.randbytes(70_000) + b"good " * 9000, mode=0o755)
        add("bin/good2", tarfile.LNKTYPE, linkname="bin/good")
        add("etc", tarfile.DIRTYPE)
        add("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n" * 30, uid=0, gid=0, mode=0o644)
        add("etc/shadow", data=rnd.randbytes(3000), mode=0o600, uid=0, gid=42)
        add("usr/lib", tarfile.DIRTYPE)
        add("usr/lib/libc.so", data=rnd.randbytes(50_000), mode=0o755)
        add("lib", tarfile.SYMTYPE, linkname="usr/lib", mode=0o777)
        add("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
        add("run/fifo", tarfile.FIFOTYPE, mode=0o600)
        add("var/.wh.old", data=b"")
        add("opt", tarfile.DIRTYPE)
        add("opt/.wh..wh..opq", data=b"")
        add("data", tarfile.DIRTYPE, pax={"SCHILY.xattr.user.note": "hello"})
        add("data/file", data=b"x" * 100_000, pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc"})
        add("data/inner.tar", data=_inner_tar())
        add("srv/www/index.html", data=(b"<p>hello</p>\n" * 6000) + rnd.randbytes(20_000), uid=33, gid=33)
    return buf.getvalue()


@dataclasses.dataclass(repr=False)
class Layer:
    """A layer blob, its digest and its honest zTOC."""

    blob: bytes
    digest: str
    ztoc: Ztoc
    path: Path

    def __repr__(self) -> str:
        return f"Layer({self.digest}, {len(self.blob)} bytes, {len(self.ztoc.toc)} entries)"


def make_layer(tmp: Path, raw: bytes | None = None) -> Layer:
    """The layer of ``raw`` (default :func:`layer_tar`) gzipped into ``tmp``, with its zTOC."""
    blob = gzip.compress(layer_tar() if raw is None else raw, 6, mtime=0)
    path = tmp / "layer.tar.gz"
    path.write_bytes(blob)
    z = build_ztoc(path, span_size=SPAN)
    return Layer(blob, "sha256:" + hashlib.sha256(blob).hexdigest(), Ztoc.from_bytes(z.to_bytes()), path)


# --- views ------------------------------------------------------------------------------------------------


def eager_view(layer: Layer, dest: Path) -> View:
    """Apply the layer with the eager unpacker and describe the tree it wrote."""
    dest.mkdir()
    apply_layer(layer.path, dest, expected_digest=layer.digest)
    view: View = {}
    for root, dirs, files in os.walk(dest):
        for name in dirs + files:
            p = Path(root, name)
            rel = str(p.relative_to(dest))
            st = os.lstat(p)
            xattrs = tuple(sorted((k, os.getxattr(p, k, follow_symlinks=False))
                                  for k in os.listxattr(p, follow_symlinks=False)))  # fmt: skip
            view[rel] = _describe(st.st_mode, st.st_uid, st.st_gid, st.st_rdev, xattrs,
                                  lambda p=p: p.read_bytes(), lambda p=p: os.readlink(p))  # fmt: skip
    return view


def _describe(
    mode: int, uid: int, gid: int, rdev: int, xattrs: tuple[Any, ...], content: Any, link: Any
) -> tuple[Any, ...]:
    kind = stat.S_IFMT(mode)
    if stat.S_ISREG(mode):
        what: Any = hashlib.sha256(content()).hexdigest()
    elif stat.S_ISLNK(mode):
        what = link()
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = (os.major(rdev), os.minor(rdev))
    else:
        what = None
    perm = None if stat.S_ISLNK(mode) else mode & 0o7777
    return (kind, perm, uid, gid, what, xattrs)


async def lazy_view_async(layer: Layer, ztoc_bytes: bytes, *, check: bool = True) -> View:
    """What a lazy mount of ``ztoc_bytes`` serves (its reader layer, no FUSE): the zTOC parsed, the layer
    checked against it (unless ``check=False``: the server before the check existed), the tree built and
    every file read. Raises :class:`SociLabError` where the mount would refuse or answer EIO."""
    z = Ztoc.from_bytes(ztoc_bytes)
    spans = SpanManager(z, BytesRangeFetcher(layer.blob))
    if check:
        try:
            from soci_lab.lazy.layercheck import check_layer
        except ModuleNotFoundError:  # the code before the check: served unchecked, so these tests fail there
            check_layer = None  # type: ignore[assignment]  # on the view, not on the import
        if check_layer is not None:
            await check_layer(spans, z, digest=layer.digest, blob_size=len(layer.blob))
    tree = LayerTree(list(z.toc))
    reader = LayerReader(tree, spans)
    view: View = {}
    for path, node in tree.by_path.items():
        if path == "":
            continue
        xattrs = dict(node.xattrs)
        if node.opaque:
            xattrs["trusted.overlay.opaque"] = b"y"
        data = await reader.read_all(node) if stat.S_ISREG(node.mode) else b""
        view[path] = _describe(node.mode, node.uid, node.gid, node.rdev, tuple(sorted(xattrs.items())),
                               lambda data=data: data, lambda node=node: node.linkname)  # fmt: skip
    return view


def lazy_view(layer: Layer, ztoc_bytes: bytes, *, check: bool = True) -> View | str:
    """:func:`lazy_view_async`, or the one-line refusal (a :class:`SociLabError`) as a string."""
    try:
        return anyio.run(lambda: lazy_view_async(layer, ztoc_bytes, check=check))
    except SociLabError as exc:
        return f"refused: {exc}"


# --- mutations --------------------------------------------------------------------------------------------


def rebuild(z: Ztoc, blob: bytes, *, toc: list[FileMetadata] | None = None,
            checkpoints: list[Checkpoint] | None = None) -> bytes:  # fmt: skip
    """The zTOC with a new TOC and/or checkpoints, span digests recomputed over the real blob."""
    zi = z.zinfo
    assert isinstance(zi, GzipZinfo)
    new_zi = GzipZinfo(checkpoints if checkpoints is not None else list(zi.checkpoints), zi.span_size,
                       zi.compressed_size, zi.uncompressed_size, zi.version)  # fmt: skip
    digests = []
    for i in range(new_zi.span_count):
        cs, ce = new_zi.start_compressed_offset(i), new_zi.end_compressed_offset(i)
        digests.append("sha256:" + hashlib.sha256(blob[max(0, cs) : max(0, ce)]).hexdigest())
    out = dataclasses.replace(
        z,
        toc=[dataclasses.replace(e) for e in (toc if toc is not None else z.toc)],
        checkpoints=new_zi.to_bytes(),
        span_digests=digests,
        max_span_id=new_zi.span_count - 1,
        _zinfo=None,
    )
    return bytes(out.to_bytes())


def tamper_window(z: Ztoc, blob: bytes, k: int, pos: int, xor: int) -> bytes:
    cps = list(z.zinfo.checkpoints)  # type: ignore[attr-defined]
    w = bytearray(bytes(cps[k].window))
    w[pos] ^= xor
    cps[k] = dataclasses.replace(cps[k], window=bytes(w))
    return rebuild(z, blob, checkpoints=cps)


def entry(z: Ztoc, name: str) -> FileMetadata:
    return next(e for e in z.toc if e.name == name)


def add_entry(z: Ztoc, blob: bytes, new: FileMetadata) -> bytes:
    return rebuild(z, blob, toc=[*z.toc, new])


def inner_tar_alias(z: Ztoc, blob: bytes) -> bytes:
    """``bin/sh`` listed where the header of a tar *inside* ``data/inner.tar`` lies (and inner.tar emptied
    so the derived header offset lands on it): every header check passes, the file is not in the image."""
    inner = entry(z, "data/inner.tar")
    toc = [dataclasses.replace(e, uncompressed_size=0) if e is inner else e for e in z.toc]
    toc.append(FileMetadata(name="bin/sh", type="reg", uncompressed_offset=inner.uncompressed_offset + 512,
                            uncompressed_size=len(b"#!/bin/sh\necho owned\n"), mode=0o755,
                            mod_time="2020-09-13T12:26:40Z"))  # fmt: skip
    return rebuild(z, blob, toc=toc)
