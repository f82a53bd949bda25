"""Stack layer directories into one rootfs with overlayfs, read the mount table, and unmount.

``mount -t overlay SOURCE -o nosuid,nodev,ro,lowerdir=TOP:...:BOTTOM MOUNTPOINT`` — lower directories are
given top first; SOURCE is a name the snapshotter gives each mount so ``umount`` can tell its own
(:mod:`.ownership`), and ``nosuid,nodev`` are left out only on request (``allow_setuid_and_devices``).
The kernel takes the whole option string in one page (4096 bytes), so the mount runs with its working
directory at the state directory and names the layers by short *relative* paths (``layers/sha256_<hex>/mnt``,
~80 bytes each); past :data:`MAX_OPTION_BYTES` (about fifty layers) each layer gets a symlink ``l/<n>`` and
the option names those (a few bytes each; overlayfs follows them), so
hundreds of layers fit. FUSE lower layers must answer ``statfs`` — the lazy room's ``LayerFS`` does.

With ``upper``/``work`` the rootfs is writable (a container's view; ``run`` uses it so a command can
create its ``/proc``, ``/dev``, ``/tmp``); the lowers are never written.

The *mask* layer (:func:`make_mask_layer`) is a tiny directory put on top of the lowers holding one
whiteout (a 0:0 character device) for ``.soci-snapshotter``: each FUSE layer shows its state directory at
its root (as upstream's does), and the mask hides it in the merged view so lazy, parallel and sequential
mounts show the same tree. Each layer's state stays readable at its own FUSE mount point.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import MountError

#: longest overlay option string we hand to the kernel (one page, minus room for the other options)
MAX_OPTION_BYTES = 3800
#: the FUSE layers' state directory, whited out by the mask layer
STATE_DIR_NAME = ".soci-snapshotter"
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _unescape(field: str) -> str:
    """The kernel escapes space, tab, newline and backslash in mount tables as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class MountInfo:
    """One line of ``/proc/self/mountinfo``: what identifies a mount (id, source, type) and its flags."""

    mount_id: int
    target: str
    fstype: str
    source: str
    options: tuple[str, ...]  # the per-mount options (``ro``, ``nosuid``, ``nodev``, …)

    def describe(self) -> str:
        return f"{self.fstype} {self.source!r} at {self.target} (mount id {self.mount_id})"


def mountinfo() -> list[MountInfo]:
    """Every mount of this mount namespace, in mount order (``/proc/self/mountinfo``)."""
    out: list[MountInfo] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, sep, right = line.rstrip("\n").partition(" - ")
            parts, tail = left.split(), right.split()
            if not sep or len(parts) < 6 or len(tail) < 2:
                continue
            try:
                mount_id = int(parts[0])
            except ValueError:
                continue
            options = tuple(parts[5].split(","))
            out.append(MountInfo(mount_id, _unescape(parts[4]), tail[0], _unescape(tail[1]), options))
    return out


def mount_at(path: str | os.PathLike[str]) -> MountInfo | None:
    """The top-most mount at ``path`` itself (the one a lookup of the path sees), or None."""
    target = os.path.realpath(os.fspath(path))
    found = [m for m in mountinfo() if m.target == target]
    return found[-1] if found else None


def mountinfo_under(path: str | os.PathLike[str]) -> list[MountInfo]:
    """Mounts at or below ``path``, in mount order (deepest last)."""
    base = os.path.realpath(os.fspath(path)).rstrip("/") or "/"
    return [m for m in mountinfo() if m.target == base or m.target.startswith(base + "/")]


def mounts_under(path: str | os.PathLike[str]) -> list[str]:
    """Mount points at or below ``path`` (from ``/proc/self/mounts``), in mount order (deepest last)."""
    base = os.path.realpath(os.fspath(path)).rstrip("/") or "/"
    out: list[str] = []
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            target = _unescape(parts[1])
            if target == base or target.startswith(base + "/"):
                out.append(target)
    return out


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` itself is a mount point listed in ``/proc/self/mounts``."""
    target = os.path.realpath(os.fspath(path))
    return target in mounts_under(target)


def make_mask_layer(path: Path, names: Sequence[str] = (STATE_DIR_NAME,)) -> Path:
    """A directory holding a whiteout (0:0 char device) per name; see the module docstring."""
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in names:
        target = path / name
        if not target.exists():
            os.mknod(target, 0o600 | 0o020000, os.makedev(0, 0))
    return path


def _option_paths(base: Path, lowers: Sequence[Path]) -> list[str]:
    rel = [os.path.relpath(p, base) for p in lowers]
    if sum(len(r) + 1 for r in rel) <= MAX_OPTION_BYTES:
        return rel
    links = base / "l"
    links.mkdir(exist_ok=True)
    out = []
    for i, p in enumerate(lowers):
        link = links / format(i, "x")
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(os.path.relpath(p, links))
        out.append(f"l/{i:x}")
    if sum(len(r) + 1 for r in out) > MAX_OPTION_BYTES:
        raise MountError(f"{len(lowers)} layers do not fit in one overlay mount option")
    return out


def mount_overlay(
    target: str | os.PathLike[str],
    lowers: Sequence[Path],
    *,
    base: Path,
    upper: Path | None = None,
    work: Path | None = None,
    source: str = "overlay",
    allow_setuid_and_devices: bool = False,
) -> None:
    """Mount ``lowers`` (top first) at ``target``; read-only unless ``upper`` and ``work`` are given.

    ``base`` is the directory the layer paths are relative to (the state directory). ``source`` names the
    mount in ``/proc/self/mountinfo`` (the snapshotter gives each mount a name of its own, so ``umount``
    can tell its mounts from anyone else's). The mount is ``nosuid,nodev`` — an image's setuid binaries
    and device nodes give nobody privileges on the host — unless ``allow_setuid_and_devices``.
    """
    if not lowers:
        raise MountError("an overlay needs at least one lower layer")
    for p in lowers:
        if ":" in str(p) or "," in str(p):
            raise MountError(f"layer path {p} has a ':' or ',' that overlayfs cannot take")
    target_s = os.path.realpath(os.fspath(target))
    if is_mounted(target_s):
        raise MountError(f"{target_s} is already a mount point")
    paths = _option_paths(base, lowers)
    if len(paths) == 1 and upper is None:
        # overlayfs wants two lowers without an upper: stack the single layer with an empty one
        empty = base / "empty"
        empty.mkdir(exist_ok=True)
        paths.append(os.path.relpath(empty, base))
    opts = "lowerdir=" + ":".join(paths)
    if upper is not None and work is not None:
        upper.mkdir(mode=0o755, parents=True, exist_ok=True)
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        opts += f",upperdir={os.path.relpath(upper, base)},workdir={os.path.relpath(work, base)}"
    else:
        opts = "ro," + opts
    if not allow_setuid_and_devices:
        opts = "nosuid,nodev," + opts
    if not source or any(c in source for c in " \t\n,\\"):
        raise MountError(f"overlay source name {source!r} must be one word")
    proc = subprocess.run(
        ["mount", "-t", "overlay", source, "-o", opts, target_s],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise MountError(f"overlay mount at {target_s} failed: {msg[-1] if msg else proc.returncode}")


def umount(target: str | os.PathLike[str]) -> None:
    """Unmount ``target``; a busy mount is detached lazily. Not a mount point: nothing to do."""
    path = os.fspath(target).encode()
    for _ in range(20):
        if _libc.umount2(path, 0) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EINVAL or err == errno.ENOENT:
            return
        if err != errno.EBUSY:
            break
        time.sleep(0.05)
    if _libc.umount2(path, MNT_DETACH) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return
    # a FUSE mount whose server died answers ENOTCONN to everything: fusermount3 -u -z clears it
    subprocess.run(["fusermount3", "-u", "-z", os.fspath(target)], capture_output=True, check=False, timeout=30)
    if is_mounted(target):
        raise MountError(f"umount {os.fspath(target)}: {os.strerror(err)}")


def umount_tree(path: str | os.PathLike[str]) -> None:
    """Unmount every mount at or under ``path``, deepest first."""
    for target in reversed(mounts_under(path)):
        umount(target)


__all__ = [
    "MAX_OPTION_BYTES",
    "STATE_DIR_NAME",
    "MountInfo",
    "is_mounted",
    "make_mask_layer",
    "mount_at",
    "mount_overlay",
    "mountinfo",
    "mountinfo_under",
    "mounts_under",
    "umount",
    "umount_tree",
]
