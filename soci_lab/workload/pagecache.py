"""Page-cache residency of files: evict them, run something, see which of their pages it brought in.

A cross-check of a recorded trace that needs no tracing at all: after :func:`evict` (``fsync`` then
``posix_fadvise(DONTNEED)`` on each file — only these files, never the whole machine's cache), a file's
pages are in memory again only if something read them, through ``read()`` or a mapping, plus what the
kernel's read-ahead pulled in around those reads — which is what a cold, lazily fetched file system
would have been asked for too. :func:`resident_ranges` asks ``mincore(2)`` on a fresh ``PROT_READ``
mapping of the file (mapping faults nothing in).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import os
from collections.abc import Iterable

from .trace import merge_ranges

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
_MAP_FAILED = ctypes.c_void_p(-1).value


def evict(paths: Iterable[str]) -> int:
    """Write back and drop the cached pages of ``paths`` (regular files); returns how many were done."""
    done = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)  # dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            done += 1
        finally:
            os.close(fd)
    return done


def resident_ranges(path: str) -> list[tuple[int, int]]:
    """The merged ``[start, end)`` byte ranges of ``path`` that are in the page cache (clipped to its size)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return []
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), f"mmap {path}: {os.strerror(ctypes.get_errno())}")
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}: {os.strerror(ctypes.get_errno())}")
            ranges = [(i * PAGE, min((i + 1) * PAGE, size)) for i in range(pages) if vec[i] & 1]
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)
    return merge_ranges(ranges)


def resident_bytes(paths: Iterable[str]) -> dict[str, int]:
    """Per path (regular files only), the bytes that are in the page cache; paths with none are left out."""
    out: dict[str, int] = {}
    for path in paths:
        try:
            n = sum(e - s for s, e in resident_ranges(path))
        except OSError:
            continue
        if n:
            out[path] = n
    return out


def read_ahead_kb(path: str) -> int | None:
    """The read-ahead window (KiB) of the block device holding ``path``, or None (not a block device)."""
    st = os.stat(path)
    base = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    for candidate in (f"{base}/queue/read_ahead_kb", f"{base}/../queue/read_ahead_kb"):
        try:
            with open(candidate) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            continue
    return None
