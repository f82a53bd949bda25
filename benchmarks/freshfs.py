"""A brand-new ext4 file system on a loop device, for one timed run's files.

Why: on this VM's root ext4 (made without a journal) creating a file costs 19 µs in fresh inode groups, 75
µs in used ones, and up to 340 µs for minutes after many files were deleted (the allocator skips and
rescans recently freed inodes; ``benchmarks/README.md``, eager findings). A pull's time then depends on
what ran before it. Giving each timed run a file system of its own, made the same way as the root one
(no journal), puts every run in the same state; the run's time then measures the puller, not the
allocator's history. Unmounting writes everything back before the next run starts, outside its timing.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


def available() -> bool:
    """True when loop devices and ``mkfs.ext4`` can be used (root, a kernel with loop support)."""
    try:
        subprocess.run(["losetup", "-f"], check=True, capture_output=True)
        subprocess.run(["mkfs.ext4", "-V"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


@contextlib.contextmanager
def fresh_ext4(
    mountpoint: Path, size: str = "4G", *, journal: bool = False, direct_io: bool = False
) -> Iterator[Path]:
    """Mount a new ext4 (sparse image beside ``mountpoint``) on ``mountpoint``; unmount and delete on exit.

    ``direct_io``: the loop device reads and writes its backing file with ``O_DIRECT`` (``losetup
    --direct-io=on``), so a page written on the new file system is not copied a second time into the root
    file system's page cache: write-back then costs about what the disk itself costs.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    image = mountpoint.with_name(mountpoint.name + ".ext4")
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    features = [] if journal else ["-O", "^has_journal"]
    subprocess.run(["mkfs.ext4", "-q", "-F", *features, str(image)], check=True)
    if direct_io:
        dev = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", str(image)], check=True,
                             capture_output=True, text=True).stdout.strip()
        try:
            subprocess.run(["mount", dev, str(mountpoint)], check=True)
        except BaseException:
            subprocess.run(["losetup", "-d", dev], check=False)
            raise
    else:
        dev = None
        subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        if dev is not None:
            subprocess.run(["losetup", "-d", dev], check=False)
        image.unlink(missing_ok=True)
