"""Where layer unpack jobs keep their bytes on disk (soci-formats.md §5.9).

:class:`LayerUnpackDiskStorage` lays jobs out as ``<root>/unpack/<id>/`` with ``fs/`` (the directory the
layer is unpacked into, later renamed into the snapshot) and ``<layer digest>`` (the ingest file of the
compressed blob). ``<id>`` is 10 random characters of ``[a-zA-Z0-9]``. The ``unpack`` directory is wiped
when the storage is created: whatever a previous process left there (a pull killed half-way) is an orphan,
since nothing is renamed into place before it is complete and verified. Directories are 0700.

Each new job directory and its ``fs/`` carry the ext4 "top of a directory hierarchy" flag (``chattr +T``,
:func:`mark_top_dir`), so the kernel places their subdirectories (and the files in them) in block groups of
their own instead of the state directory's. Why: on ext4 without a journal (the host root file system of
this machine kind) a new inode is looked for from the start of its parent's group, skipping every inode
freed in the last 5 s — or 305 s while that inode-table block is still dirty — at one buffer-cache lookup
each; in a group where a tree was just removed (the previous pull's state, anything deleted by another
program) every create then costs ~300-450 µs of kernel time, the same for ``tar -xf``. Spread, a layer's
creates start in groups that hold no recently freed inodes (see ``benchmarks/README.md``, "Eager pulls on
the host file system"). Best effort: elsewhere the flag is not supported and nothing changes.

Anything that satisfies the :class:`LayerUnpackJobStorage` protocol can replace it (the tests use the
disk storage on a temporary root).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import string
import struct
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import JobStorageError

_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 10
_MAX_ID_ATTEMPTS = 10
#: ioctl numbers of FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (linux/fs.h; the fcntl module has them from 3.12 only)
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
#: the inode flag ``chattr +T`` sets: the Orlov allocator treats the directory as a top-level one
FS_TOPDIR_FL = 0x00020000


@runtime_checkable
class LayerUnpackJobStorage(Protocol):
    """The storage of layer unpack jobs: one directory per job id."""

    def create(self) -> str:
        """Make a new job directory (with an empty ``fs/``) and return its id."""
        ...

    def job_path(self, job_id: str) -> Path:
        """The directory of a job."""
        ...

    def keys(self) -> list[str]:
        """The ids of every job directory present (empty if the root does not exist)."""
        ...

    def delete(self, job_id: str) -> None:
        """Remove a job directory and everything in it; a missing one is not an error."""
        ...


def new_job_id() -> str:
    """10 random characters of ``[a-zA-Z0-9]``."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(ID_LENGTH))


def mark_top_dir(path: str | os.PathLike[str]) -> bool:
    """Set the "top of directory hierarchy" inode flag (``chattr +T``) on directory ``path``, so ext4 spreads
    its subdirectories over block groups of their own (module docstring). Returns whether the flag is set;
    a file system without inode flags (tmpfs, overlayfs, ...) or one refusing it is not an error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0\0\0\0"))[0]
        if flags & FS_TOPDIR_FL:
            return True
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags | FS_TOPDIR_FL))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def is_job_id(name: str) -> bool:
    return len(name) == ID_LENGTH and all(c in _ALPHABET for c in name)


class LayerUnpackDiskStorage:
    """Job directories under ``<root>/unpack``; the ``unpack`` directory is wiped at construction."""

    def __init__(self, root: str | os.PathLike[str], *, wipe: bool = True) -> None:
        self.root = Path(root)
        self.dir = self.root / "unpack"
        if wipe and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def create(self) -> str:
        for _ in range(_MAX_ID_ATTEMPTS):
            job_id = new_job_id()
            path = self.dir / job_id
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                continue
            except OSError as exc:
                raise JobStorageError(f"cannot create unpack job directory {path}: {exc.strerror}") from None
            mark_top_dir(path)  # before creating fs/, so that fs/ itself is placed in a group of its own
            (path / "fs").mkdir(mode=0o700)
            mark_top_dir(path / "fs")
            return job_id
        raise JobStorageError(f"could not generate a unique unpack job id in {_MAX_ID_ATTEMPTS} attempts")

    def job_path(self, job_id: str) -> Path:
        if not is_job_id(job_id):
            raise JobStorageError(f"not an unpack job id: {job_id!r}")
        return self.dir / job_id

    def keys(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if is_job_id(n))

    def delete(self, job_id: str) -> None:
        # ignore_errors: a worker thread may still be finishing inside; what stays is an orphan the GC
        # removes on its next pass.
        shutil.rmtree(self.job_path(job_id), ignore_errors=True)


__all__ = [
    "FS_TOPDIR_FL",
    "ID_LENGTH",
    "JobStorageError",
    "LayerUnpackDiskStorage",
    "LayerUnpackJobStorage",
    "mark_top_dir",
    "new_job_id",
]
