"""Fixtures of the lazy room: realistic small tar.gz layers and a guard that no FUSE mount is left behind."""

from __future__ import annotations

import gzip
import io
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def soci_mounts() -> list[str]:
    """Mount points of soci_lab FUSE servers (fsname ``soci``) currently listed in /proc/self/mounts."""
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "soci" and parts[2].startswith("fuse"):
                out.append(parts[1])
    return out


@pytest.fixture(scope="session", autouse=True)
def no_mount_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Session-end check: every test that mounted must have unmounted, even when it failed.

    Only mounts under this session's temporary directory count (others may run servers on this machine).
    """
    base = str(tmp_path_factory.getbasetemp().resolve())
    before = set(soci_mounts())
    yield
    left = {p for p in set(soci_mounts()) - before if p.startswith(base + "/")}
    for path in left:  # clean up so the machine stays usable, then fail loudly
        from soci_lab.lazy.mount import force_unmount

        force_unmount(path)
    assert not left, f"FUSE mounts left behind: {sorted(left)}"


def _add(tf: tarfile.TarFile, name: str, data: bytes | None = None, **attrs) -> None:
    info = tarfile.TarInfo(name)
    for k, v in attrs.items():
        setattr(info, k, v)
    if data is not None:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        tf.addfile(info)


def make_layer_tar(seed: int = 0, *, big: int = 3 << 20) -> bytes:
    """A layer with every entry kind a real one has: dirs (odd modes, owners), small and large files,
    symlinks, hard links, devices, a fifo, SCHILY xattrs, PAX long names, whiteouts and an opaque dir."""
    rng = random.Random(seed)
    buf = io.BytesIO()
    mt = 1_700_000_000
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, "etc/", type=tarfile.DIRTYPE, mode=0o755, mtime=mt)
        _add(tf, "etc/os-release", b"NAME=soci-lab\nVERSION=1\n", mode=0o644, mtime=mt)
        _add(tf, "etc/secret", b"s3cr3t\n", mode=0o600, uid=1000, gid=1001, uname="u", gname="g", mtime=mt + 1)
        _add(tf, "usr/bin/tool", rng.randbytes(200_000), mode=0o4755, mtime=mt)
        _add(tf, "usr/lib/big.bin", rng.randbytes(big // 2) + bytes(big - big // 2), mode=0o644, mtime=mt)
        for i in range(60):
            body = (f"file {i}\n" * rng.randint(1, 400)).encode() + rng.randbytes(rng.randint(0, 3000))
            _add(tf, f"usr/share/doc/pkg{i % 7}/f{i}.txt", body, mode=0o644, mtime=mt + i)
        _add(tf, "usr/share/" + "long" * 40 + "/name.txt", b"long path\n", mode=0o644, mtime=mt)
        _add(tf, "usr/bin/tool-link", type=tarfile.SYMTYPE, linkname="tool", mtime=mt)
        _add(tf, "usr/bin/tool-hard", type=tarfile.LNKTYPE, linkname="usr/bin/tool", mtime=mt)
        _add(tf, "dev/null0", type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666, mtime=mt)
        _add(tf, "dev/blk0", type=tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660, mtime=mt)
        _add(tf, "run/fifo", type=tarfile.FIFOTYPE, mode=0o644, mtime=mt)
        _add(
            tf,
            "var/x.txt",
            b"with xattrs\n",
            mode=0o644,
            mtime=mt,
            pax_headers={"SCHILY.xattr.user.color": "blue", "SCHILY.xattr.trusted.k": "v"},
        )
        _add(tf, "var/.wh.removed", b"", mode=0o644, mtime=mt)
        _add(tf, "opq/", type=tarfile.DIRTYPE, mode=0o755, mtime=mt)
        _add(tf, "opq/.wh..wh..opq", b"", mode=0o644, mtime=mt)
        _add(tf, "opq/kept", b"kept\n", mode=0o644, mtime=mt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def layer_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """(path of a tar.gz layer, its uncompressed tar)."""
    raw = make_layer_tar(0)
    path = tmp_path_factory.mktemp("layer") / "layer.tar.gz"
    path.write_bytes(gzip.compress(raw, 6))
    return path, raw
