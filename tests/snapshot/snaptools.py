"""Helpers of the snapshot room's tests: the trees images are built from, outside tools, the CLI, and what
counts as "ours" when looking for leftover mounts and processes (importable as ``snaptools``)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

MAIN = Path(__file__).resolve().parents[2]
CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"
SITE = Path(sysconfig.get_paths()["purelib"])
MiB = 1 << 20
T0 = 1_650_000_000


def soci_lab(*args: str, check: bool = True, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the ``soci-lab`` CLI of this checkout in a subprocess (environment inherited: state root, TMPDIR)."""
    proc = subprocess.run(
        [sys.executable, "-c", CLI_CODE, *args],
        capture_output=True,
        text=True,
        cwd=MAIN,
        timeout=timeout,
        **kw,  # type: ignore[call-overload]
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"soci-lab {' '.join(args)} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return proc


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run an outside tool (skopeo, umoci); fail the test with its stderr when it fails."""
    if shutil.which(args[0]) is None:
        pytest.fail(f"{args[0]} is not installed (scripts/setup.sh installs it)")
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def compressible(path: Path, size: int, seed: int) -> None:
    """``size`` bytes of 16 symbols from a seeded generator (4 bits of entropy a byte: gzip halves it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    table = bytes(b"0123456789abcdef"[b & 15] for b in range(256))
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, MiB)
            f.write(rng.randbytes(n).translate(table))
            left -= n


def _copy_packages(dst: Path, names: list[str]) -> None:
    for name in names:
        src = SITE / name
        if not src.exists():
            pytest.fail(f"{src} is missing from the venv")
        shutil.copytree(src, dst / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))


def _write(path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def build_realistic_trees(base: Path) -> list[Path]:
    """Four layer directories, bottom first (about 120 MB in ~4,300 entries, 50 MB compressed):

    0. a Python environment (pip, pygments and numpy from this venv: source, data and shared objects)
       plus every kind of entry — symlinks, hard links, a fifo, a device, xattrs (user and trusted),
       setuid, odd owners — and things the top layer deletes or makes opaque;
    1. pandas and dask (more files, bigger ones) and two 16 MiB pseudo-random compressible files;
    2. a small layer (< 1 MiB: not indexed, so mounted locally) changing a file of layer 0;
    3. whiteouts: a file, a directory, and an opaque directory with new content.
    """
    dirs = [base / f"l{i}" for i in range(4)]
    l0, l1, l2, l3 = dirs
    site = l0 / "usr/lib/python3/site-packages"
    _copy_packages(site, ["pip", "pygments", "numpy"])
    _write(l0 / "etc/os-release", b'NAME="soci-lab test"\nID=test\n')
    _write(l0 / "etc/motd", b"deleted by the top layer\n")
    _write(l0 / "etc/small.conf", b"".join(b"key%d = value %d\n" % (i, i * i) for i in range(2000)))
    _write(l0 / "etc/app.conf", b"version = 1\n")
    _write(l0 / "usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o4755)
    _write(l0 / "home/user/secret", b"s3cret\n", 0o600, (1000, 1000))
    os.chown(l0 / "home/user", 1000, 1000)
    _write(l0 / "usr/share/doc/linked", b"one inode, three names\n" * 50, 0o640, (7, 8))
    os.link(l0 / "usr/share/doc/linked", l0 / "usr/share/doc/linked-2")
    os.link(l0 / "usr/share/doc/linked", l0 / "usr/bin/linked-3")
    os.symlink("../lib/python3/site-packages", l0 / "usr/share/site")
    os.symlink("/etc/os-release", l0 / "usr/share/os-release")
    os.symlink("nowhere", l0 / "usr/share/dangling")
    os.setxattr(l0 / "etc/os-release", "user.comment", b"hello xattr")
    os.setxattr(l0 / "usr/share/doc", "trusted.dir", b"\x00\x01binary")
    os.mkfifo(l0 / "usr/share/fifo", 0o600)
    os.mknod(l0 / "usr/share/null", 0o666 | 0o020000, os.makedev(1, 3))
    _write(l0 / "opt/gone/a.txt", b"a\n")
    _write(l0 / "opt/gone/sub/b.txt", b"b\n")
    _write(l0 / "var/lib/opaque/old.txt", b"hidden by the opaque dir above\n")
    _copy_packages(l1 / "usr/lib/python3/site-packages", ["pandas", "dask"])
    compressible(l1 / "opt/data/big-1.bin", 16 * MiB, 1)
    compressible(l1 / "opt/data/big-2.bin", 16 * MiB, 2)
    _write(l2 / "etc/app.conf", b"version = 2\n")
    _write(l2 / "app/run.sh", b"#!/bin/sh\ncat /etc/app.conf\n", 0o755)
    l3.mkdir(parents=True)
    _write(l3 / "etc/.wh.motd", b"")
    _write(l3 / "opt/.wh.gone", b"")
    _write(l3 / "var/lib/opaque/.wh..wh..opq", b"")
    _write(l3 / "var/lib/opaque/new.txt", b"only this\n")
    for d in dirs:
        _fix_times(d)
    return dirs


def build_small_trees(base: Path) -> list[Path]:
    """Three small layers: two indexable (> 1 MiB compressed) around one that is not."""
    dirs = [base / f"s{i}" for i in range(3)]
    compressible(dirs[0] / "data/one.bin", 3 * MiB, 11)
    _write(dirs[0] / "etc/hostname", b"small\n")
    _write(dirs[1] / "etc/config", b"local layer\n")
    compressible(dirs[2] / "data/two.bin", 3 * MiB, 12)
    _write(dirs[2] / "etc/.wh.hostname", b"")
    for d in dirs:
        _fix_times(d)
    return dirs


def _fix_times(root: Path) -> None:
    """Fixed mtimes, deepest first (so directories keep theirs)."""
    for dirpath, dirnames, filenames in sorted(os.walk(root), key=lambda t: -len(t[0])):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(T0 * 10**9, T0 * 10**9), follow_symlinks=False)
    os.utime(root, ns=(T0 * 10**9, T0 * 10**9))


def our_mounts(bases: list[Path]) -> list[str]:
    """Mount points under any of ``bases`` (this session's directories)."""
    roots = [os.path.realpath(b) for b in bases]
    out = []
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            target = line.split()[1].encode().decode("unicode_escape")
            if any(target == r or target.startswith(r + "/") for r in roots):
                out.append(target)
    return out


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def our_processes(bases: list[Path]) -> list[str]:
    """Live processes (other than this one and registries) that belong to this session's directories: their
    command line names one, or their working directory or an open file is under one (a FUSE server forked
    by the lazy room's zygote has the zygote's command line, but its log file is in our state dir)."""
    roots = [os.path.realpath(b) for b in bases]
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z" or "docker-registry" in cmd:
            continue
        paths = []
        try:
            paths.append(os.readlink(f"/proc/{name}/cwd"))
            for fd in os.listdir(f"/proc/{name}/fd"):
                with contextlib.suppress(OSError):
                    paths.append(os.readlink(f"/proc/{name}/fd/{fd}"))
        except OSError:
            pass
        if any(r in cmd for r in roots) or any(_under(p, roots) for p in paths):
            out.append(f"{name}: {cmd[:160]}")
    return out


def children_of(pid: int, needle: str = "") -> list[int]:
    """Live children of ``pid`` whose command line contains ``needle``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and needle in cmd:
            out.append(int(name))
    return out
