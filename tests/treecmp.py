"""Compare two directory trees the way an image unpacker must reproduce them (a shared test helper).

Importable from any test (``tests/`` is on ``sys.path`` through the rootdir conftest)::

    from treecmp import assert_same_tree, diff_trees, snapshot

What is compared, per relative path (the roots themselves are left out unless ``include_root``):
type; permission bits with setuid/setgid/sticky; uid and gid; mtime in nanoseconds; for regular files
size and sha256; for symlinks the target; for devices major and minor; extended attributes (all
namespaces, minus ``IGNORED_XATTRS``); and hard links — the partition of paths into groups that share
an inode must be the same in both trees. Each of ownership, mtimes and xattrs can be switched off, and
``mtime_kinds`` limits mtime checks to some types (e.g. FUSE mounts that do not keep symlink times).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

#: attributes that say where a tree was made, not what it holds
IGNORED_XATTRS = frozenset({"security.selinux", "user.rootlesscontainers"})

KINDS = ("file", "dir", "symlink", "fifo", "chr", "blk", "socket")


@dataclass(frozen=True)
class Entry:
    """What one path is, as far as a layer can say."""

    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int | None = None
    sha256: str | None = None
    target: str | None = None
    rdev: tuple[int, int] | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()
    inode: tuple[int, int] = (0, 0)

    def describe(self) -> str:
        extra = {"file": f" size={self.size}", "symlink": f" -> {self.target}"}.get(self.kind, "")
        if self.rdev:
            extra = f" {self.rdev[0]},{self.rdev[1]}"
        return f"{self.kind} {self.mode:04o} {self.uid}:{self.gid}{extra}"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "chr"),
        (stat.S_ISBLK, "blk"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "unknown"


def _xattrs(path: str, ignored: frozenset[str]) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for name in sorted(names):
        if name in ignored:
            continue
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(out)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def entry(path: str | os.PathLike[str], *, ignored_xattrs: frozenset[str] = IGNORED_XATTRS) -> Entry:
    """The ``Entry`` of one path (not following a symlink)."""
    p = os.fspath(path)
    st = os.lstat(p)
    kind = _kind(st.st_mode)
    return Entry(
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if kind == "file" else None,
        sha256=_sha256(p) if kind == "file" else None,
        target=os.readlink(p) if kind == "symlink" else None,
        rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("chr", "blk") else None,
        xattrs=_xattrs(p, ignored_xattrs),
        inode=(st.st_dev, st.st_ino),
    )


def snapshot(
    root: str | os.PathLike[str],
    *,
    include_root: bool = False,
    ignored_xattrs: frozenset[str] = IGNORED_XATTRS,
    exclude: Callable[[str], bool] | None = None,
) -> dict[str, Entry]:
    """Every path under ``root`` (relative, ``/``-separated; ``.`` for the root) → its ``Entry``."""
    base = os.fspath(root)
    out: dict[str, Entry] = {}
    if include_root:
        out["."] = entry(base, ignored_xattrs=ignored_xattrs)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            if exclude is not None and exclude(rel):
                continue
            out[rel] = entry(full, ignored_xattrs=ignored_xattrs)
    return out


def hardlink_groups(snap: dict[str, Entry]) -> set[frozenset[str]]:
    """Groups of two or more paths of a snapshot that are one inode."""
    by_inode: dict[tuple[int, int], set[str]] = {}
    for rel, e in snap.items():
        if e.kind != "dir":
            by_inode.setdefault(e.inode, set()).add(rel)
    return {frozenset(paths) for paths in by_inode.values() if len(paths) > 1}


def diff_snapshots(
    a: dict[str, Entry],
    b: dict[str, Entry],
    *,
    ownership: bool = True,
    mtime: bool = True,
    mtime_kinds: Iterable[str] = KINDS,
    xattrs: bool = True,
    hardlinks: bool = True,
) -> list[str]:
    """Human-readable differences between two snapshots (empty when they are the same tree)."""
    problems: list[str] = []
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    problems += [f"only in first: {p} ({a[p].describe()})" for p in only_a]
    problems += [f"only in second: {p} ({b[p].describe()})" for p in only_b]
    kinds = set(mtime_kinds)
    for rel in sorted(set(a) & set(b)):
        x, y = a[rel], b[rel]
        if x.kind != y.kind:
            problems.append(f"{rel}: type {x.kind} != {y.kind}")
            continue
        if x.kind != "symlink" and x.mode != y.mode:  # a symlink's mode is not kept by Linux
            problems.append(f"{rel}: mode {x.mode:04o} != {y.mode:04o}")
        if ownership and (x.uid, x.gid) != (y.uid, y.gid):
            problems.append(f"{rel}: owner {x.uid}:{x.gid} != {y.uid}:{y.gid}")
        if mtime and x.kind in kinds and x.mtime_ns != y.mtime_ns:
            problems.append(f"{rel}: mtime {x.mtime_ns} != {y.mtime_ns}")
        if (x.size, x.sha256) != (y.size, y.sha256):
            problems.append(f"{rel}: content differs (size {x.size} vs {y.size})")
        if x.target != y.target:
            problems.append(f"{rel}: link target {x.target!r} != {y.target!r}")
        if x.rdev != y.rdev:
            problems.append(f"{rel}: device {x.rdev} != {y.rdev}")
        if xattrs and x.xattrs != y.xattrs:
            problems.append(f"{rel}: xattrs {dict(x.xattrs)} != {dict(y.xattrs)}")
    if hardlinks:
        ga, gb = hardlink_groups(a), hardlink_groups(b)
        problems += [f"hard links only in first: {sorted(g)}" for g in sorted(ga - gb, key=sorted)]
        problems += [f"hard links only in second: {sorted(g)}" for g in sorted(gb - ga, key=sorted)]
    return problems


def diff_trees(a: str | os.PathLike[str], b: str | os.PathLike[str], **options: object) -> list[str]:
    """``diff_snapshots`` of two directories; ``include_root``/``exclude``/``ignored_xattrs`` go to
    ``snapshot``, the rest to ``diff_snapshots``."""
    snap_keys = ("include_root", "exclude", "ignored_xattrs")
    snap_opts = {k: options.pop(k) for k in snap_keys if k in options}
    return diff_snapshots(snapshot(a, **snap_opts), snapshot(b, **snap_opts), **options)  # type: ignore[arg-type]


def assert_same_tree(a: str | os.PathLike[str], b: str | os.PathLike[str], **options: object) -> None:
    """Fail with the list of differences (the first 50) unless the two trees are the same."""
    problems = diff_trees(a, b, **options)
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise AssertionError(f"trees differ: {Path(a)} vs {Path(b)}\n  {shown}{more}")
