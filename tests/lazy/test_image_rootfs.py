"""A whole image mounted lazily — one FUSE layer per image layer, stacked by overlayfs — is the same tree as
``umoci raw unpack`` of that image: types, modes, ownership, contents, link targets, xattrs, whiteouts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess

import pytest
from treecmp import diff_trees

from soci_lab.lazy.mount import LazyLayerSpec, ServeOptions, is_mounted, mount_layer
from soci_lab.oci import OCILayout

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse"),
    pytest.mark.skipif(shutil.which("umoci") is None, reason="needs umoci"),
]


def test_lazy_rootfs_equals_umoci_unpack(tmp_path):
    from soci_lab.images.sample import build_sample_image

    layout = tmp_path / "layout"
    build_sample_image(f"oci:{layout}:v1", tmp_path / "trees", scale=0.05)
    ref_root = tmp_path / "umoci"
    subprocess.run(
        ["umoci", "raw", "unpack", "--image", f"{layout}:v1", str(ref_root)], check=True, capture_output=True
    )
    lay = OCILayout(layout, create=False)
    manifest = json.loads(lay.read_blob(str(lay.resolve("v1").digest)))
    layer_digests = [layer["digest"] for layer in manifest["layers"]]
    root = tmp_path / "rootfs"
    root.mkdir()
    with contextlib.ExitStack() as stack:
        mnts = []
        for i, digest in enumerate(layer_digests):
            spec = LazyLayerSpec.from_layer_file(lay.blob_path(digest), digest=digest, span_size=256 << 10)
            mnt = tmp_path / f"l{i}"
            mnt.mkdir()
            stack.enter_context(mount_layer(spec, mnt, ServeOptions(background=False)))
            mnts.append(mnt)
        lower = ":".join(str(m) for m in reversed(mnts))
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(root)], check=True)
        stack.callback(subprocess.run, ["umount", str(root)], check=False)
        problems = diff_trees(ref_root, root, exclude=lambda rel: rel.split("/")[0] == ".soci-snapshotter")
        assert problems == [], "\n".join(problems[:40])
    assert not is_mounted(root)
