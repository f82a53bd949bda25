"""Page-cache residency: evict drops a file's pages (and only that file's), a read brings back what it
read, mincore reports it page by page."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from soci_lab.workload.pagecache import PAGE, evict, read_ahead_kb, resident_bytes, resident_ranges


def test_evict_then_read_brings_back_what_was_read(tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(4 << 20))
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(1 << 20))
    other.read_bytes()
    assert resident_ranges(str(f)) == [(0, 4 << 20)]  # just written: all cached
    assert evict([str(f), str(tmp_path / "missing")]) == 1
    if resident_ranges(str(f)):
        pytest.skip("this file system keeps its pages (tmpfs?)")
    assert resident_bytes([str(other)]) == {str(other): 1 << 20}  # untouched by the other file's eviction
    fd = os.open(f, os.O_RDONLY)
    try:
        os.pread(fd, 3 * PAGE, 1 << 20)
    finally:
        os.close(fd)
    ranges = resident_ranges(str(f))
    assert any(s <= 1 << 20 and e >= (1 << 20) + 3 * PAGE for s, e in ranges)
    assert sum(e - s for s, e in ranges) < 4 << 20  # not the whole file back
    (tmp_path / "empty").touch()
    assert resident_ranges(str(tmp_path / "empty")) == []


def test_read_ahead_window_is_known_for_a_disk(tmp_path: Path) -> None:
    ra = read_ahead_kb(str(tmp_path))
    assert ra is None or ra >= 0
