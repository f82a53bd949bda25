"""Parallel and sequential pulls from real registries (embedded and CNCF distribution) via soci_lab.remote.

The image is built by ``soci_lab.images`` from directories and pushed; each pulled layer must equal the
directory it was built from, and the same blobs applied directly (``apply_layer``) must give the same tree.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import anyio
import pytest
from treecmp import assert_same_tree

from soci_lab.config import ParallelPullUnpackConfig
from soci_lab.events import EventRecorder
from soci_lab.images import build_image
from soci_lab.remote import RegistryClient
from soci_lab.unpack import ParallelPuller, RegistryBlobSource, SequentialPuller, image_layer_specs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership round trip needs root")


def _trees(base: Path) -> list[Path]:
    lib = Path(os.path.dirname(os.__file__))
    one = base / "l1"
    shutil.copytree(lib / "json", one / "usr/lib/json", ignore=shutil.ignore_patterns("__pycache__"))
    (one / "etc").mkdir()
    (one / "etc/hostname").write_text("box\n")
    (one / "big.bin").write_bytes(os.urandom(600 << 10))
    os.symlink("usr/lib", one / "lib")
    two = base / "l2"
    (two / "etc").mkdir(parents=True)
    (two / "etc/.wh.hostname").write_text("")
    (two / "app").mkdir()
    (two / "app/run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(two / "app/run.sh", 0o755)
    os.chown(two / "app/run.sh", 1000, 1000)
    return [one, two]


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_pull_from_registry(registry, tmp_path: Path, mode: str) -> None:  # type: ignore[no-untyped-def]
    dirs = _trees(tmp_path / "src")
    ref = registry.ref("unpack/pull", mode)
    build_image(dirs, ref, insecure=True)
    rec = EventRecorder(strategy=mode)
    mounts = [tmp_path / "snap" / str(i) for i in range(len(dirs))]

    async def main() -> list[str]:
        async with RegistryClient(registry.host, insecure=True, events=rec) as client:
            resolved = await client.resolve_image(ref)
            specs = image_layer_specs(resolved.layers, resolved.config.diff_ids)
            source = RegistryBlobSource(client, resolved.reference.repository)
            key = str(resolved.manifest_descriptor.digest)
            if mode == "parallel":
                cfg = ParallelPullUnpackConfig(enable=True, concurrent_download_chunk_size="128kb")
                async with ParallelPuller(tmp_path / "root", source, config=cfg, recorder=rec) as puller:
                    return [o.how for o in await puller.pull(key, specs, mounts)]
            outcomes = await SequentialPuller(tmp_path / "root", source, recorder=rec).pull(key, specs, mounts)
            return [o.how for o in outcomes]

    assert anyio.run(main) == ["remote", "remote"]
    assert_same_tree(dirs[0], mounts[0])
    # layer 2: the whiteout became a 0:0 char device, the rest is as built
    wh = os.lstat(mounts[1] / "etc/hostname")
    assert wh.st_rdev == 0 and not (mounts[1] / "etc/.wh.hostname").exists()
    assert (mounts[1] / "app/run.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert os.stat(mounts[1] / "app/run.sh").st_uid == 1000
    kinds = [e.kind for e in rec.events]
    if mode == "parallel":
        assert "chunk_download" in kinds
        ranged = [e for e in rec.events if e.kind == "http_request" and "range" in str(e.attrs).lower()]
        assert ranged, "chunked download made no ranged request"
    assert kinds.count("verify") == 4  # compressed digest and diffID of each layer
    assert all(e.ok for e in rec.events if e.kind == "verify")


def test_registry_layer_tar_is_plain_gnu_compatible(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The built layer applied by GNU tar and by soci_lab agree (same blob, two unpackers)."""
    dirs = _trees(tmp_path / "src")[:1]
    ref = registry.ref("unpack/gnu", "v1")
    build_image(dirs, ref, insecure=True)

    async def fetch() -> bytes:
        async with RegistryClient(registry.host, insecure=True) as client:
            resolved = await client.resolve_image(ref)
            return await client.get_blob(resolved.reference.repository, resolved.layers[0])

    blob = tmp_path / "layer.tar.gz"
    blob.write_bytes(anyio.run(fetch))
    gnu = tmp_path / "gnu"
    gnu.mkdir()
    with tarfile.open(blob) as tf:
        names = tf.getnames()
    assert names
    import subprocess

    subprocess.run(["tar", "-xzf", str(blob), "-C", str(gnu), "--numeric-owner"], check=True)
    from soci_lab.unpack import apply_layer

    ours = tmp_path / "ours"
    ours.mkdir()
    apply_layer(blob, ours)
    assert_same_tree(gnu, ours)
