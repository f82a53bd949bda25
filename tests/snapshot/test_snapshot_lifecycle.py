"""The Filesystem's lifecycle — prepare, mount, unmount, clean image — under asyncio and trio; bounded layer
concurrency; a mount that fails half-way (some FUSE servers already up) undoing everything; and overlayfs
stacks too deep for one page of mount options."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import anyio
import pytest
from snaptools import our_processes

from soci_lab.artifacts import create_soci_index
from soci_lab.config import Config
from soci_lab.errors import MountError, SociLabError
from soci_lab.events import EventRecorder, detail
from soci_lab.oci import OCILayout
from soci_lab.snapshot import Filesystem, is_mounted, mount_overlay, mounts_under, umount
from soci_lab.snapshot.overlay import MAX_OPTION_BYTES

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def _quiet() -> Config:
    cfg = Config()
    cfg.background_fetch.disable = True
    return cfg


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("mode", ["lazy", "parallel"])
def test_prepare_mount_unmount_clean(small_copy: Path, mnt: Path, tmp_path: Path, backend: str, mode: str) -> None:
    ref = f"oci:{small_copy}:v1"
    create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    state = tmp_path / "state"
    rec = EventRecorder(strategy=mode)
    fs = Filesystem(state, config=_quiet(), events=rec)

    async def main() -> str:
        async with fs.open_image(ref) as image:
            plan = await fs.prepare(image, mode)
            assert len(plan.layers) == 3 and (plan.artifacts is not None) == (mode == "lazy")
        m = await fs.mount(ref, mnt, mode)
        assert (mnt / "etc/config").read_text() == "local layer\n"
        with pytest.raises(MountError, match="one image per state directory"):
            await fs.mount(ref, mnt, mode)
        return m.image_key

    key = anyio.run(main, backend=backend)
    assert is_mounted(mnt)
    events = fs.unmount(key)
    assert not is_mounted(mnt) and mounts_under(state) == []
    assert state.exists()  # unmounted, not yet removed (the snapshot still exists)
    assert {"mount", "ready", "unmount"} <= set(events["kind"])
    fs.clean_image(key)
    assert not state.exists()
    fs.clean_image(key)  # twice is harmless


def test_max_concurrency_one_prepares_layers_one_at_a_time(small_copy: Path, mnt: Path, tmp_path: Path) -> None:
    ref = f"oci:{small_copy}:v1"
    create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    rec = EventRecorder(strategy="lazy")
    fs = Filesystem(tmp_path / "state", config=_quiet(), events=rec, max_concurrency=1)
    m = anyio.run(fs.mount, ref, mnt, "lazy")
    m.unmount()
    ev = m.events()
    layers = ev[(ev["kind"] == "mount") & ev["layer"].notna() & detail(ev, "how").notna()]
    spans = sorted(zip(layers["t_start"], layers["t_end"], strict=True))
    assert len(spans) == 3
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))


def test_a_mount_failing_half_way_leaves_nothing(small_copy: Path, mnt: Path, tmp_path: Path) -> None:
    ref = f"oci:{small_copy}:v1"
    create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    layout = OCILayout(small_copy, create=False)
    manifest = layout.read_blob(str(layout.resolve("v1").digest))
    import json

    doc = json.loads(manifest)
    if "manifests" in doc:  # the v2 SOCI-enabled image index: take the image manifest
        entry = next(d for d in doc["manifests"] if d.get("artifactType") is None)
        doc = json.loads(layout.read_blob(entry["digest"]))
    local = doc["layers"][1]["digest"]  # the small, unindexed layer: downloaded and verified
    path = layout.blob_path(local)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    state = tmp_path / "state"
    rec = EventRecorder(strategy="lazy")
    # one layer at a time, in order: layer 0's FUSE server is up when layer 1 fails its verification
    fs = Filesystem(state, config=_quiet(), events=rec, max_concurrency=1)
    with pytest.raises(SociLabError, match=r"corrupt|match"):  # one clear error, not a task group
        anyio.run(fs.mount, ref, mnt, "lazy")
    ev = rec.to_frame()
    up = ev[(ev["kind"] == "mount") & (detail(ev, "how") == "lazy")]
    assert len(up) == 1, "the failure was meant to come after a FUSE layer was mounted"
    assert (ev["kind"] == "unmount").sum() == 1
    assert mounts_under(mnt) == [] and mounts_under(state) == []
    assert our_processes([state]) == []
    assert not state.exists()


def test_overlay_of_more_layers_than_one_page_of_options(tmp_path: Path, mnt: Path) -> None:
    base = tmp_path / ("state-with-a-rather-long-name-" + "x" * 40)
    n = 120
    lowers = []
    for i in range(n):
        d = base / "layers" / f"sha256_{i:064x}" / "fs"
        d.mkdir(parents=True)
        (d / f"file-{i}").write_text(str(i))
        (d / "shared").write_text(str(i))
        lowers.append(d)
    assert sum(len(os.path.relpath(p, base)) + 1 for p in lowers) > MAX_OPTION_BYTES
    mount_overlay(mnt, list(reversed(lowers)), base=base)  # top first
    try:
        assert (mnt / "shared").read_text() == str(n - 1)  # the top layer wins
        assert sorted(os.listdir(mnt)) == sorted(["shared", *(f"file-{i}" for i in range(n))])
    finally:
        umount(mnt)
    assert not is_mounted(mnt)


@pytest.mark.parametrize("mode", ["lazy", "sequential"])
def test_an_image_listing_one_layer_twice(small_trees: list[Path], tmp_path: Path, mnt: Path, mode: str) -> None:
    from soci_lab import lab
    from soci_lab.images import build_image

    # layer 0 again on top of layer 2: its whiteout of etc/hostname is undone by the second copy
    ref = f"oci:{tmp_path / 'lay'}:v1"
    built = build_image([small_trees[0], small_trees[1], small_trees[2], small_trees[0]], ref)
    assert built.layers[0].descriptor.digest == built.layers[3].descriptor.digest
    create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    with lab.mounted(ref, mnt, mode=mode, config=_quiet()) as m:
        assert len(m.layers) == 3
        assert (mnt / "etc/hostname").read_text() == "small\n"
        assert (mnt / "data/two.bin").stat().st_size == 3 << 20
