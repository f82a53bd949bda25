"""Split a rootfs built in steps into image layers, as ``docker build`` does: layer N holds what step N
added or changed over the tree after step N-1, plus a whiteout (``.wh.NAME``) for what it deleted.

A :class:`Snapshot` is the metadata of every entry of a tree (type, mode, owner, size, mtime, link
target, device number, xattrs), taken by walking it. Two snapshots give a :class:`LayerDiff`; a
diff materialises into a layer directory (:func:`materialize_layer`) that ``soci_lab.images`` tars
as it is, whiteouts included. An entry counts as changed when any of that metadata differs — as the
docker/containerd change walkers decide without hashing content; a directory whose entries changed has a
new mtime and so is carried too (with its metadata), and every parent of a carried entry is written into
the layer with the new tree's metadata so the tar is self-contained.

Rules for deletions: a deleted path gets a whiteout only when its parent directory survives as a
directory (a deleted directory is one whiteout, not one per child; a path whose parent changed type is
removed by that change already). ``exclude`` names top-level directories whose *contents* never go
into a layer (``dev``, ``proc``, ``sys``: the runtime mounts them), as real images have them empty.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError

WHITEOUT_PREFIX = ".wh."
#: top-level directories kept empty in every layer
DEFAULT_EXCLUDE: tuple[str, ...] = ("dev", "proc", "sys")


@dataclass(frozen=True, slots=True)
class EntryMeta:
    """What decides whether an entry changed between two snapshots."""

    kind: str  #: "f" file, "d" directory, "l" symlink, "c"/"b" device, "p" fifo, "s" socket
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    target: str = ""
    rdev: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()


Snapshot = Mapping[str, EntryMeta]  #: relative path ("usr/bin/sh") → metadata


def _kind(mode: int) -> str:
    for test, k in ((stat.S_ISREG, "f"), (stat.S_ISDIR, "d"), (stat.S_ISLNK, "l"), (stat.S_ISCHR, "c"),
                    (stat.S_ISBLK, "b"), (stat.S_ISFIFO, "p"), (stat.S_ISSOCK, "s")):
        if test(mode):
            return k
    return "?"


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in sorted(names):
        if n == "security.selinux":
            continue
        try:
            out.append((n, os.getxattr(path, n, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(out)


def entry_meta(path: str) -> EntryMeta:
    """The :class:`EntryMeta` of one path (not following a final symlink)."""
    st = os.lstat(path)
    kind = _kind(st.st_mode)
    return EntryMeta(
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if kind == "f" else 0,
        mtime_ns=st.st_mtime_ns if kind != "l" else 0,
        target=os.readlink(path) if kind == "l" else "",
        rdev=st.st_rdev if kind in "cb" else 0,
        xattrs=_xattrs(path),
    )


def snapshot_tree(root: str | os.PathLike[str], exclude: Iterable[str] = DEFAULT_EXCLUDE) -> dict[str, EntryMeta]:
    """Walk ``root`` (not following symlinks, not crossing into mounts) into a :data:`Snapshot`."""
    base = os.fspath(root)
    skip = set(exclude)
    dev = os.lstat(base).st_dev
    snap: dict[str, EntryMeta] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        full = os.path.join(base, rel) if rel else base
        with os.scandir(full) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            r = f"{rel}/{e.name}" if rel else e.name
            meta = entry_meta(e.path)
            snap[r] = meta
            if meta.kind == "d" and r not in skip and e.stat(follow_symlinks=False).st_dev == dev:
                stack.append(r)
    return snap


@dataclass
class LayerDiff:
    """What one step did to the tree: paths added, changed, and whiteouts for paths deleted."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  #: one per whiteout to write

    @property
    def carried(self) -> list[str]:
        """Every path whose new version goes into the layer, sorted."""
        return sorted(self.added + self.changed)

    def whiteouts(self) -> list[str]:
        """The whiteout names, e.g. ``usr/share/doc/.wh.pkg`` for deleted ``usr/share/doc/pkg``."""
        out = []
        for p in self.deleted:
            parent, _, name = p.rpartition("/")
            out.append(f"{parent}/{WHITEOUT_PREFIX}{name}" if parent else f"{WHITEOUT_PREFIX}{name}")
        return sorted(out)

    def summary(self) -> dict[str, int]:
        return {"added": len(self.added), "changed": len(self.changed), "deleted": len(self.deleted)}


def diff_snapshots(old: Snapshot, new: Snapshot) -> LayerDiff:
    """The :class:`LayerDiff` turning ``old`` into ``new`` (see the module docstring for the rules)."""
    d = LayerDiff()
    for path, meta in new.items():
        before = old.get(path)
        if before is None:
            d.added.append(path)
        elif before != meta:
            d.changed.append(path)
    for path in old:
        if path in new:
            continue
        parent = path.rpartition("/")[0]
        if parent and (parent not in new or new[parent].kind != "d" or old[parent].kind != "d"):
            continue  # the parent went too (its whiteout covers this) or changed type
        d.deleted.append(path)
    d.added.sort()
    d.changed.sort()
    d.deleted.sort()
    return d


def _copy_meta(src: str, dst: str, meta: EntryMeta) -> None:
    os.chown(dst, meta.uid, meta.gid, follow_symlinks=False)
    if meta.kind != "l":
        os.chmod(dst, meta.mode)  # after chown, which clears setuid/setgid bits
    for name, value in meta.xattrs:
        try:
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as exc:
            raise DatasetError(f"cannot copy xattr {name} of {src}: {exc.strerror}") from None


def _set_mtime(dst: str, meta: EntryMeta, src: str) -> None:
    st = os.lstat(src)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def materialize_layer(
    diff: LayerDiff, src_root: str | os.PathLike[str], dest: str | os.PathLike[str], new: Snapshot
) -> dict[str, int]:
    """Write the layer of ``diff`` into the empty directory ``dest``, copying from ``src_root`` (the tree
    ``new`` describes). Keeps modes, owners, xattrs, mtimes and hard links within the layer.
    Returns counts: entries, files, whiteouts, bytes (file content)."""
    src = os.fspath(src_root)
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=False)
    dirs: list[str] = []  # relative dirs written, to fix their mtimes last
    made: set[str] = set()
    inodes: dict[tuple[int, int], str] = {}
    counts = {"entries": 0, "files": 0, "whiteouts": 0, "bytes": 0}

    def ensure_parents(rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p in made:
                continue
            meta = new.get(p)
            if meta is None or meta.kind != "d":
                raise DatasetError(f"parent {p} of {rel} is not a directory in the new tree")
            os.mkdir(out / p)
            _copy_meta(os.path.join(src, p), str(out / p), meta)
            made.add(p)
            dirs.append(p)
            counts["entries"] += 1

    for rel in diff.carried:
        meta = new[rel]
        s = os.path.join(src, rel)
        t = str(out / rel)
        ensure_parents(rel)
        if rel in made:
            continue
        st = os.lstat(s)
        if meta.kind == "d":
            os.mkdir(t)
            dirs.append(rel)
        elif meta.kind == "f":
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in inodes:
                os.link(out / inodes[key], t)
                made.add(rel)
                counts["entries"] += 1
                continue
            shutil.copyfile(s, t, follow_symlinks=False)
            inodes[key] = rel
            counts["files"] += 1
            counts["bytes"] += st.st_size
        elif meta.kind == "l":
            os.symlink(meta.target, t)
        elif meta.kind in "cb":
            os.mknod(t, stat.S_IFCHR if meta.kind == "c" else stat.S_IFBLK, meta.rdev)
        elif meta.kind == "p":
            os.mkfifo(t)
        else:
            continue  # sockets cannot go into a tar
        _copy_meta(s, t, meta)
        if meta.kind != "d":
            _set_mtime(t, meta, s)
        made.add(rel)
        counts["entries"] += 1
    for wh in diff.whiteouts():
        ensure_parents(wh)
        (out / wh).touch(mode=0o644)
        counts["whiteouts"] += 1
        counts["entries"] += 1
    for rel in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
        _set_mtime(str(out / rel), new[rel], os.path.join(src, rel))
    return counts
