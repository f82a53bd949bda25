"""Job directories are marked as tops of directory hierarchies (``chattr +T``), where the file system can.

Why (see :mod:`soci_lab.unpack.storage`): on no-journal ext4, a layer unpacked next to a recently removed
tree pays a scan of every recently freed inode per create; the flag makes the allocator place the layer's
subdirectories in block groups of their own. The flag is a placement hint only: nothing else changes.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

import pytest

from soci_lab.unpack.storage import FS_TOPDIR_FL, LayerUnpackDiskStorage, mark_top_dir

_FS_IOC_GETFLAGS = 0x80086601


def _flags(path: Path) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0\0\0\0"))[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def test_job_dir_and_fs_are_top_dirs_on_ext4(tmp_path: Path) -> None:
    if _flags(tmp_path) is None:
        pytest.skip("the temporary directory's file system has no inode flags (not ext4-like)")
    storage = LayerUnpackDiskStorage(tmp_path)
    job = storage.job_path(storage.create())
    job_flags, fs_flags = _flags(job), _flags(job / "fs")
    assert job_flags is not None and job_flags & FS_TOPDIR_FL
    assert fs_flags is not None and fs_flags & FS_TOPDIR_FL
    # the hint is not inherited: the layer's own directories are placed near their parents as usual
    (job / "fs" / "usr").mkdir()
    usr = _flags(job / "fs" / "usr")
    assert usr is not None and not usr & FS_TOPDIR_FL
    # the rest of the layout is unchanged: 0700 directories, an empty fs/
    assert (job.stat().st_mode & 0o777, (job / "fs").stat().st_mode & 0o777) == (0o700, 0o700)


def test_mark_top_dir_is_best_effort(tmp_path: Path) -> None:
    assert mark_top_dir(tmp_path / "missing") is False
    (tmp_path / "file").write_bytes(b"x")
    assert mark_top_dir(tmp_path / "file") is False  # not a directory: refused, no error
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    assert mark_top_dir(link) is False  # a symlink is never followed


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no tmpfs at /dev/shm")
def test_storage_on_a_file_system_without_inode_flags(tmp_path: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        storage = LayerUnpackDiskStorage(shm)
        job = storage.job_path(storage.create())
        assert (job / "fs").is_dir() and not any((job / "fs").iterdir())
