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


@pytest.mark.parametrize("source", ["layout", "distribution"])
def test_lazy_rootfs_equals_umoci_unpack(tmp_path, source, request):
    """Layers from the OCI layout's files, or ranged GETs against the real distribution registry."""
    from soci_lab.images.copy import copy_image
    from soci_lab.images.sample import build_sample_image

    layout = tmp_path / "layout"
    build_sample_image(f"oci:{layout}:v1", tmp_path / "trees", scale=0.05)
    registry = None
    if source == "distribution":
        registry = request.getfixturevalue("distribution_registry")
        copy_image(f"oci:{layout}:v1", registry.ref("lazy/sample", "v1"))
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
            if registry is not None:  # same zTOC, bytes from the registry
                spec.blob_path, spec.registry, spec.repository = None, registry.url, "lazy/sample"
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
