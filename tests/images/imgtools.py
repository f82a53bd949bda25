"""Helpers of the images room's tests: run the CLI and outside tools, and make a tree holding every kind
of thing a layer must carry (importable as ``imgtools`` from tests in this directory)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

MAIN = Path(__file__).resolve().parents[2]
CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"
#: sub-second, pre-1970, and ordinary mtimes
T0 = 1_600_000_000_123_456_789
OLD = -315_619_200_500_000_000  # 1960, with half a second


def soci_lab(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the ``soci-lab`` CLI of this checkout in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-c", CLI_CODE, *args],
        capture_output=True,
        text=True,
        cwd=MAIN,
        **kw,  # type: ignore[call-overload]
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"soci-lab {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run an outside tool (skopeo, umoci); fail the test with its stderr when it fails."""
    if shutil.which(args[0]) is None:
        pytest.fail(f"{args[0]} is not installed (scripts/setup.sh installs it)")
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


@contextlib.contextmanager
def bound_unix_socket(path: Path) -> Iterator[socket.socket]:
    """A UNIX socket bound at ``path`` for the ``with`` block, closed after it (the socket file stays).

    A tar cannot hold a socket, so layer builders must skip one with a warning; the tests that check this
    all need a live socket in a source tree.
    """
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        yield sock


def _write(path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0), mtime: int = T0) -> Path:
    path.write_bytes(data)
    os.chown(path, *owner)
    os.chmod(path, mode)  # after chown, which clears setuid/setgid
    os.utime(path, ns=(mtime, mtime))
    return path


def make_rich_tree(root: Path, seed: int = 1) -> Path:
    """A directory with every file type, odd modes and owners, xattrs, hard links and long names.

    All mtimes are set last, so the tree is the same every time it is made.
    """
    rng = random.Random(seed)
    root.mkdir(parents=True)
    d = root / "dirs"
    for name, mode in (("plain", 0o755), ("private", 0o700), ("sticky", 0o1777), ("setgid", 0o2755)):
        (d / name).mkdir(parents=True)
        os.chmod(d / name, mode)
    os.chown(d / "private", 1000, 1000)
    f = root / "files"
    f.mkdir()
    _write(f / "empty", b"")
    _write(f / "text", b"hello, layer\n" * 100)
    _write(f / "random.bin", rng.randbytes(3 * 1024 * 1024 + 17))  # several read blocks, odd size
    _write(f / "setuid", b"#!/bin/sh\n", 0o4755)
    _write(f / "setgid", b"#!/bin/sh\n", 0o2711, (0, 50))
    _write(f / "secret", b"s3cret", 0o600, (1000, 1000))
    _write(f / "bigids", b"ids beyond ustar's octal fields", 0o640, (3_000_000, 4_000_000))
    _write(f / "old", b"before the epoch", mtime=OLD)
    _write(f / "whole-second", b"x", mtime=1_500_000_000_000_000_000)
    # extended attributes: text and binary values, user and trusted namespaces, on a dir too
    os.setxattr(f / "text", "user.comment", b"plain text")
    os.setxattr(f / "text", "user.binary", bytes([0, 255, 128, 10, 0]))
    os.setxattr(f / "random.bin", "trusted.test", b"\x00\xfb\x21")
    os.setxattr(d / "plain", "user.dir", b"on a directory")
    # hard links: three names of one file in different directories, and the first name sorts last
    _write(f / "zz-original", b"linked content\n" * 10, 0o640, (7, 8))
    os.link(f / "zz-original", f / "aa-link")
    os.link(f / "zz-original", d / "plain" / "link-elsewhere")
    # symlinks: relative, absolute, dangling, owned, long target; xattr on a symlink (trusted only)
    s = root / "links"
    s.mkdir()
    os.symlink("../files/text", s / "relative")
    os.symlink("/etc/passwd", s / "absolute")
    os.symlink("nowhere/at/all", s / "dangling")
    os.symlink("t" * 180, s / "long-target")
    os.symlink("relative", s / "owned")
    os.chown(s / "owned", 123, 456, follow_symlinks=False)
    os.setxattr(s / "relative", "trusted.sym", b"on a symlink", follow_symlinks=False)
    # special files
    sp = root / "special"
    sp.mkdir()
    os.mkfifo(sp / "fifo", 0o620)
    os.mknod(sp / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(sp / "chr-big", 0o600 | 0o020000, os.makedev(4095, 1_000_000))
    os.mknod(sp / "loop0", 0o660 | 0o060000, os.makedev(7, 0))
    os.chown(sp / "loop0", 0, 6)
    # names: long component, long path, non-ASCII, not UTF-8, spaces
    n = root / "names"
    deep = n / ("d" * 90) / ("e" * 90) / ("f" * 90)
    deep.mkdir(parents=True)
    _write(deep / ("g" * 200), b"a path of more than 255 bytes")
    _write(n / ("h" * 254), b"a long component")
    _write(n / "naïve-файл.txt", b"utf-8 name")
    _write(n / os.fsdecode(b"latin1-\xe9t\xe9"), b"not utf-8")
    _write(n / "with space", b"")
    os.link(deep / ("g" * 200), n / "link-to-deep")
    # whiteout-looking names pass through as plain files
    wh = root / "wh"
    wh.mkdir()
    _write(wh / ".wh.gone", b"")
    _write(wh / ".wh..wh..opq", b"")
    # mtimes last (directories change when entries are added), deepest first
    for dirpath, dirnames, filenames in sorted(os.walk(root), key=lambda t: -len(t[0])):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink() or p.is_dir() or not p.is_file():
                os.utime(p, ns=(T0 + 7, T0 + 7), follow_symlinks=False)
        os.utime(dirpath, ns=(T0 + 11, T0 + 11))
    os.utime(root, ns=(T0, T0))
    return root
