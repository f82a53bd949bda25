"""Helpers for the workload and datasets tests: a tiny chroot-able rootfs made from the host's own
binaries and their libraries, and the leak checks every test of these rooms runs under (importable as
``wltools`` here; the datasets conftest loads it by path)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

#: host programs copied into the mini rootfs (with every library ldd names)
MINI_PROGRAMS = ("sh", "cat", "dd", "ls", "sleep", "true", "false", "stat", "readlink", "setsid", "head", "echo")
#: temporary-directory prefixes our code creates (none may be left behind)
TMP_PREFIXES = ("soci-lab-record-", "soci-lab-startup-")
#: the data file of the mini rootfs: 10,000 deterministic bytes
DATA = bytes((i * 37 + 11) % 251 for i in range(10_000))


def _libs(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
    return libs


def make_mini_rootfs(root: Path) -> Path:
    """A minimal rootfs: a few host programs in /bin, their libraries, /etc/passwd, and /data files."""
    root.mkdir(parents=True)
    for d in ("bin", "etc", "data/sub", "tmp", "proc", "dev", "sys", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    for prog in MINI_PROGRAMS:
        src = shutil.which(prog)
        assert src is not None, prog
        shutil.copy2(os.path.realpath(src), root / "bin" / prog)
        for lib in _libs(src):
            dest = root / lib.lstrip("/")
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.realpath(lib), dest)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nworker:x:4242:4242:w:/data:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nworker:x:4242:\n")
    (root / "data/file.bin").write_bytes(DATA)
    (root / "data/hello.txt").write_text("hello, rootfs\n")
    os.symlink("/data/file.bin", root / "data/sub/abs-link")
    os.symlink("../hello.txt", root / "data/sub/rel-link")
    return root


def mounts() -> set[str]:
    with open("/proc/self/mounts") as f:
        return {line.split()[1] for line in f}


def _under(path: str, prefixes: list[str]) -> bool:
    return any(path == p.rstrip("/") or path.startswith(p) for p in prefixes)


def chrooted_under(prefixes: list[str]) -> list[int]:
    """PIDs whose root directory starts with one of ``prefixes`` (``/dir/`` means under ``/dir``)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            root = os.readlink(f"/proc/{name}/root")
        except OSError:
            continue
        if _under(root, prefixes):
            out.append(int(name))
    return out


def children_of(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(name))
    return out


def our_tmp_dirs() -> set[str]:
    """Temporary directories this process's recordings made (their names carry the pid)."""
    tmp = tempfile.gettempdir()
    mine = tuple(f"{p}{os.getpid()}-" for p in TMP_PREFIXES)
    return {p for p in os.listdir(tmp) if p.startswith(mine)}


def leak_report(mounts_before: set[str], tmp_before: set[str], prefixes: list[str],
                children_before: frozenset[int] = frozenset()) -> list[str]:
    """What a test left behind: new mounts and chrooted processes under ``prefixes`` (others share the
    machine: their mounts elsewhere are theirs), new child processes (session fixtures such as a registry
    started before the test are not), our temporary directories."""
    problems = []
    new_mounts = {m for m in mounts() - mounts_before if _under(m, prefixes)}
    if new_mounts:
        problems.append(f"mounts left: {sorted(new_mounts)}")
    procs = chrooted_under(prefixes) + [p for p in children_of(os.getpid()) if p not in children_before]
    if procs:
        problems.append(f"processes left: {procs}")
    new_tmp = our_tmp_dirs() - tmp_before
    if new_tmp:
        problems.append(f"temporary directories left: {sorted(new_tmp)}")
    return problems
