"""The file pages a running process has touched through ``mmap`` — what strace cannot see.

Shared libraries and the program itself are not ``read()``: the loader maps them and the process
page-faults them in. While the processes are still alive (at readiness), ``/proc/PID/maps`` lists their
file-backed mappings and ``/proc/PID/pagemap`` says which virtual pages are present (bit 63) or swapped
(bit 62); a present page of a mapping at file offset ``off`` means the file's bytes ``[off, off+4096)``
were brought in. Pages mapped by the kernel's fault-around count too — a lazy file system would have
been asked for them as well — so this is what a cold rootfs would have served for the mappings, to
within the kernel's read-ahead. Needs root (pagemap of other processes).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

from .trace import merge_ranges

PAGE = os.sysconf("SC_PAGE_SIZE")
_PRESENT = 1 << 63
_SWAPPED = 1 << 62


def mapped_file_pages(pids: Iterable[int], rootfs: str) -> dict[str, list[tuple[int, int]]]:
    """Per host path under ``rootfs``, merged ``[start, end)`` byte ranges of pages the processes touched."""
    root = os.path.realpath(rootfs)
    ranges: dict[str, list[tuple[int, int]]] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="surrogateescape") as f:
                maps = f.read().splitlines()
            pm = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        except OSError:
            continue  # gone already, or a kernel thread
        try:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) < 6 or not parts[5].startswith(root + "/"):
                    continue
                path = parts[5]
                if path.endswith(" (deleted)"):
                    continue
                start_s, end_s = parts[0].split("-")
                start, end = int(start_s, 16), int(end_s, 16)
                file_off = int(parts[2], 16)
                npages = (end - start) // PAGE
                try:
                    raw = os.pread(pm, npages * 8, (start // PAGE) * 8)
                except OSError:
                    continue
                got = ranges.setdefault(path, [])
                for i, (entry,) in enumerate(struct.iter_unpack("<Q", raw)):
                    if entry & (_PRESENT | _SWAPPED):
                        off = file_off + i * PAGE
                        got.append((off, off + PAGE))
        finally:
            os.close(pm)
    out: dict[str, list[tuple[int, int]]] = {}
    for path, rs in ranges.items():
        try:
            size = os.path.getsize(path)
        except OSError:
            continue
        clipped = [(s, min(e, size)) for s, e in merge_ranges(rs) if s < size]
        if clipped:
            out[path] = clipped
    return out
