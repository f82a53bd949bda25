"""A hostile layer on the snapshotter path: a tar entry climbing out of the layer (``../``) and a
symlinked directory used to write through. Whether the layer is indexed (lazy) or not (local), nothing
may be written outside the snapshot, and the pull either refuses with one line or sanitises."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from ctdtools import CLI_CODE, REPO, Containerd, Daemon, needs_containerd

from soci_lab.oci.layout import OCILayout
from soci_lab.oci.manifest import Manifest

pytestmark = [needs_containerd, pytest.mark.root, pytest.mark.slow]


def hostile_layer(marker: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes = b"", **kw: object) -> None:
            info = tarfile.TarInfo(name)
            for k, v in kw.items():
                setattr(info, k, v)
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("ok.txt", b"fine\n")
        add(f"../../../../{marker}-dotdot", b"escaped\n")
        add("link", type=tarfile.SYMTYPE, linkname="/tmp")
        add(f"link/{marker}-through-link", b"escaped\n")
    return buf.getvalue()


def push_hostile(registry_ref: str, tmp: Path, marker: str) -> None:
    tar = hostile_layer(marker)
    blob = gzip.compress(tar, mtime=0)
    lay = OCILayout(tmp / "layout")
    layer = lay.write_blob(blob)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}}).encode()
    cfg = lay.write_blob(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(cfg), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": str(layer),
                    "size": len(blob)}],
    }).encode()
    lay.put_document(Manifest.from_bytes(manifest), "v1")
    from soci_lab.images import copy_image

    copy_image(f"oci:{tmp / 'layout'}:v1", registry_ref, insecure=True)


@pytest.mark.parametrize("indexed", [False, True], ids=["local", "lazy"])
def test_hostile_layer_writes_nothing_outside(containerd: Containerd, daemon: Daemon, embedded_registry,  # type: ignore[no-untyped-def]
                                              tmp_path: Path, indexed: bool):
    marker = f"soci-lab-escape-{uuid.uuid4().hex[:8]}"
    ref = embedded_registry.ref(f"hostile/{marker}", "v1")
    push_hostile(ref, tmp_path, marker)
    if indexed:
        from soci_lab.artifacts import create_soci_index

        try:
            create_soci_index(ref, span_size=1 << 20, min_layer_size=0)
        except Exception as exc:  # the index builder refusing the layer is an acceptable outcome too
            pytest.skip(f"index builder refused the hostile layer: {exc}")
    res = subprocess.run([sys.executable, "-c", CLI_CODE, "image", "rpull", "--address", str(containerd.socket),
                          "--namespace", containerd.namespace, ref, "--json"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, timeout=300)
    if res.returncode != 0:
        assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("soci-lab image:"), res.stderr
        # refused: containerd has no image and no half-made snapshot of it
        assert ref.encode() not in containerd.ctr("images", "ls", "-q").stdout
    # nothing escaped: not next to any of the directories involved, not in /tmp (where the symlink points)
    escaped = [p for base in (Path("/tmp"), tmp_path, daemon.root, daemon.root / "snapshots")
               for p in base.glob(f"{marker}*")]
    escaped += [p for p in tmp_path.rglob(f"{marker}*") if "/fs/" not in str(p)]
    assert escaped == []
    if res.returncode == 0:  # sanitised: the good file is there, the escapes are inside the layer or dropped
        assert any((d / "ok.txt").exists() for d in daemon.root.glob("snapshots/*/fs"))
    print("outcome:", "refused: " + res.stderr.strip() if res.returncode else "sanitised")
