"""The kernel file systems a chrooted command needs (``/proc``, ``/dev``, ``/dev/shm``, ``/sys``), mounted
into a rootfs for the duration of a ``with`` block and always unmounted after, even on failure.

Mounts are made with ``mount(2)``/``umount2(2)`` through libc: ``proc`` and ``sysfs`` fresh (read-only
``sysfs``), ``/dev`` as a non-recursive bind of the host's (device nodes, no host sub-mounts), and a
private ``tmpfs`` on ``/dev/shm`` so POSIX shared memory (PostgreSQL's) never lands in the host's. A
mount point that is already a mount (a caller prepared it) is left alone. Unmounting goes in reverse
order; every mount is made private (no propagation to the host's peers), and a busy mount
is detached lazily (``MNT_DETACH``) rather than left behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import WorkloadError

log = logging.getLogger(__name__)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    rc = _libc.mount(
        source.encode(), target.encode(), fstype.encode() if fstype else None, ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise WorkloadError(f"mount {fstype or 'bind'} {source} on {target}: {os.strerror(err)}")


def umount(target: str) -> None:
    """Unmount ``target``; when it is busy, detach it lazily so nothing stays visible."""
    if _libc.umount2(target.encode(), 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EBUSY,):
        if _libc.umount2(target.encode(), MNT_DETACH) == 0:
            log.warning("%s was busy; detached lazily", target)
            return
        err = ctypes.get_errno()
    if err == errno.EINVAL:  # not a mount point (any more)
        return
    raise WorkloadError(f"umount {target}: {os.strerror(err)}")


def _unescape_mount(field: str) -> str:
    """Undo the octal escapes (``\\040`` for a space) of a ``/proc/self/mounts`` field, bytes-exact."""
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def mounts_under(path: str | os.PathLike[str]) -> list[str]:
    """Mount points at or below ``path`` (from ``/proc/self/mounts``), deepest last."""
    base = os.path.realpath(os.fspath(path)).rstrip("/") or "/"
    out: list[str] = []
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            target = _unescape_mount(line.split()[1])
            if target == base or target.startswith(base + "/"):
                out.append(target)
    return out


#: what ``chroot_mounts`` mounts by default, in order
DEFAULT_MOUNTS: tuple[str, ...] = ("proc", "dev", "dev/shm", "sys")


@contextmanager
def chroot_mounts(rootfs: str | os.PathLike[str], which: tuple[str, ...] = DEFAULT_MOUNTS) -> Iterator[list[str]]:
    """Mount ``which`` (names from :data:`DEFAULT_MOUNTS`) under ``rootfs``; yields the mount points made."""
    root = os.path.realpath(os.fspath(rootfs))
    made: list[str] = []
    try:
        for name in which:
            target = os.path.join(root, name)
            if os.path.islink(target):
                raise WorkloadError(f"{target} is a symlink; refusing to mount over it")
            Path(target).mkdir(parents=True, exist_ok=True)
            if os.path.ismount(target):
                continue
            if name == "proc":
                _mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            elif name == "sys":
                _mount("sysfs", target, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
            elif name == "dev":
                _mount("/dev", target, None, MS_BIND)
            elif name == "dev/shm":
                _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=256m")
            else:
                raise WorkloadError(f"unknown chroot mount {name!r}; known: {', '.join(DEFAULT_MOUNTS)}")
            made.append(target)
            # never let a mount under the rootfs propagate to (or from) a shared peer such as the host's /dev
            _mount("none", target, None, MS_PRIVATE)
        yield list(made)
    finally:
        errors: list[str] = []
        for target in reversed(made):
            try:
                umount(target)
            except WorkloadError as exc:
                errors.append(str(exc))
        if errors:
            raise WorkloadError("; ".join(errors))


@contextmanager
def bind_mount(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Iterator[None]:
    """Bind ``source`` on ``target`` (created if needed), private, for the block; always unmounted after."""
    Path(target).mkdir(parents=True, exist_ok=True)
    _mount(os.fspath(source), os.fspath(target), None, MS_BIND)
    try:
        _mount("none", os.fspath(target), None, MS_PRIVATE)
        yield
    finally:
        umount(os.fspath(target))
