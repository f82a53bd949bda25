"""A pull killed with SIGKILL half-way leaves no layer that looks complete; the next start removes orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from treecmp import assert_same_tree
from unpack_helpers import E, write_layer

from soci_lab.unpack import LayerUnpackDiskStorage, apply_layer

CHILD = r"""
import json, sys, anyio
from soci_lab.unpack import LayerSpec, LocalFileSource, ParallelPuller
from soci_lab.config import ParallelPullUnpackConfig
spec = json.loads(sys.argv[1])
layers = [LayerSpec(**l) for l in spec["layers"]]
src = LocalFileSource(spec["blobs"], chunk=8 << 10, delay_s=spec["delay"])
cfg = ParallelPullUnpackConfig(enable=True, max_concurrent_unpacks_per_image=3)
async def main():
    async with ParallelPuller(spec["root"], src, config=cfg) as puller:
        await puller.pull("img", layers, spec["mounts"])
anyio.run(main)
print("finished")
"""


def test_sigkill_half_way_leaves_no_complete_looking_layer(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    layer_entries = [
        [E("small/", tarfile.DIRTYPE), E("small/a", data=b"a")],
        [E("many/", tarfile.DIRTYPE)] + [E(f"many/f{i:05d}", data=os.urandom(64)) for i in range(6000)],
        [E("slow/", tarfile.DIRTYPE), E("slow/big", data=os.urandom(2 << 20))],
    ]
    layers, blob_paths = [], {}
    for i, entries in enumerate(layer_entries):
        path = blobs / f"l{i}"
        digest, diff_id = write_layer(path, entries)
        layers.append({"digest": digest, "size": path.stat().st_size, "diff_id": diff_id})
        blob_paths[digest] = str(path)
    root = tmp_path / "root"
    mounts = [tmp_path / "snap" / str(i) for i in range(3)]
    spec = {
        "layers": layers,
        "blobs": blob_paths,
        "root": str(root),
        "mounts": [str(m) for m in mounts],
        "delay": 0.004,
    }
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        killed_mid_apply = False
        while time.monotonic() < deadline and child.poll() is None:
            fs_dirs = list((root / "unpack").glob("*/fs")) if (root / "unpack").exists() else []
            if any(len(os.listdir(d / "many")) > 100 for d in fs_dirs if (d / "many").is_dir()):
                killed_mid_apply = True
                break
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert killed_mid_apply, "the pull never reached the middle of the big layer's apply"
    assert child.returncode == -signal.SIGKILL

    # whatever exists at a mountpoint is complete and verified; the killed layers are absent
    for i, mp in enumerate(mounts):
        if mp.exists():
            ref = tmp_path / f"ref{i}"
            ref.mkdir()
            apply_layer(blobs / f"l{i}", ref)
            assert_same_tree(ref, mp)
    assert not mounts[1].exists() and not mounts[2].exists()
    assert list((root / "unpack").iterdir()), "the kill should have left job directories behind"

    # next start: storage init wipes every orphan
    storage = LayerUnpackDiskStorage(root)
    assert storage.keys() == []
    assert list((root / "unpack").iterdir()) == []
