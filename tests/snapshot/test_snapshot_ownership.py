"""Unmounting touches only the mounts an image made (issue 20, finding 2), in process as through the CLI
(``tests/security/test_host_safety.py``): a tmpfs someone mounted inside the rootfs makes
:meth:`MountedImage.unmount` refuse with one line, leaving everything mounted; once it is gone the unmount
goes through. The mount table names the overlay by its own source and the FUSE layers by theirs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest

from soci_lab.artifacts import create_soci_index
from soci_lab.config import Config
from soci_lab.errors import MountError
from soci_lab.events import EventRecorder
from soci_lab.snapshot import Filesystem, mounts_under
from soci_lab.snapshot.overlay import mount_at
from soci_lab.snapshot.ownership import classify

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def test_unmount_refuses_while_a_foreign_mount_is_inside(small_copy: Path, mnt: Path, tmp_path: Path) -> None:
    ref = f"oci:{small_copy}:v1"
    create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    cfg = Config()
    cfg.background_fetch.disable = True
    state = tmp_path / "state"
    fs = Filesystem(state, config=cfg, events=EventRecorder(strategy="lazy"))
    m = anyio.run(fs.mount, ref, mnt, "lazy")
    overlay = mount_at(mnt)
    assert overlay is not None and overlay.fstype == "overlay" and overlay.source == m.overlay_source
    assert overlay.mount_id == m.overlay_id and {"nosuid", "nodev"} <= set(overlay.options)
    ours, foreign = classify(m.record())
    assert foreign == [] and len(ours) == 1 + len(m.lazy_layers) == 3
    inner = mnt / "etc"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "ownership-test", str(inner)], check=True)
    try:
        (inner / "mine").write_text("keep")
        before = mounts_under(mnt) + mounts_under(state)
        with pytest.raises(MountError) as exc:
            m.unmount()
        msg = str(exc.value)
        assert "\n" not in msg and "refusing to unmount" in msg and "ownership-test" in msg and str(inner) in msg
        assert mounts_under(mnt) + mounts_under(state) == before  # nothing was unmounted
        assert (inner / "mine").read_text() == "keep"
        assert all(lay.mount.process.poll() is None for lay in m.lazy_layers)  # nor any FUSE server stopped
    finally:
        subprocess.run(["umount", str(inner)], check=True)
    m.unmount()
    assert mounts_under(mnt) == [] and not state.exists()
