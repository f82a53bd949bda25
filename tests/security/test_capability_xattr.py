"""A malformed ``security.capability`` xattr in a layer (issue 20, finding 8).

The kernel refuses it with EINVAL. Before, the apply failed with ``[Errno 22] Invalid argument: 6`` (the
descriptor number), naming neither the entry nor the xattr; now it is one :class:`ArchiveError` line naming
both, for regular files (with and without file workers), directories and symlinks alike.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from soci_lab.errors import ArchiveError
from soci_lab.unpack.chunkstream import ChunkStream
from soci_lab.unpack.tarapply import ApplyOptions, apply_tar

BAD_CAP = b"\x01\x02\x03\x04\x05\x06"  # 6 bytes: no vfs_cap_data revision is this short

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="setting security.capability needs root")


def _tar(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("usr/")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        info = tarfile.TarInfo(f"usr/{kind}")
        info.pax_headers = {"SCHILY.xattr.security.capability": BAD_CAP.decode("latin-1")}
        if kind == "dir":
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        elif kind == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "ping"
            tf.addfile(info)
        else:
            data = b"#!/bin/sh\n"
            info.size, info.mode = len(data), 0o755
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    # tarfile encodes pax values as UTF-8: put the raw bytes back (the applier decodes surrogateescape)
    return raw.replace(BAD_CAP.decode("latin-1").encode("utf-8"), BAD_CAP)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", ["ping", "dir", "link"])
def test_bad_capability_names_entry_and_xattr(tmp_path: Path, kind: str, workers: int):
    data = _tar(kind)
    dest = tmp_path / "dest"
    dest.mkdir()
    chunks = iter([data])
    with pytest.raises(ArchiveError) as info:
        apply_tar(ChunkStream(lambda: next(chunks, None)), dest, ApplyOptions(file_workers=workers))
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    assert f"usr/{kind}" in msg and "security.capability" in msg and "Invalid argument" in msg
    assert not (tmp_path / "usr").exists()  # nothing outside the destination
