"""The whole-image mount on a realistic image from the real distribution registry, in all three modes.

The image (conftest ``realistic_image``): a Python environment with thousands of files, every kind of tar
entry, two 16 MiB compressible files, a small unindexed layer, and whiteouts (file, directory, opaque).
Each mode's rootfs must equal ``umoci raw unpack`` of the same image: types, modes, ownership, mtimes,
contents, link targets, devices, xattrs, hard links, and the whiteouts' effects. In lazy mode every file
read goes through FUSE and the span manager, so this also checks every byte the lazy path serves.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from treecmp import diff_trees

from soci_lab import lab
from soci_lab.config import Config
from soci_lab.snapshot import is_mounted, mounts_under

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")

EXPECTED_HOWS = {
    "lazy": ["lazy", "lazy", "local", "local"],  # layers 2 and 3 are under the index's 1 MiB minimum
    "parallel": ["parallel"] * 4,
    "sequential": ["sequential"] * 4,
}


def quiet_config() -> Config:
    """Upstream defaults without the background fetcher, so only reads fetch spans."""
    cfg = Config()
    cfg.background_fetch.disable = True
    return cfg


@pytest.mark.parametrize("mode", ["lazy", "parallel", "sequential"])
def test_rootfs_is_identical_to_umoci(realistic_image, umoci_rootfs: Path, mnt: Path, mode: str) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    with lab.mounted(realistic_image.ref, mnt, mode=mode, config=quiet_config(), insecure=True) as m:
        ready = time.monotonic() - t0
        assert [lay.plan.how for lay in m.layers] == EXPECTED_HOWS[mode]
        assert is_mounted(mnt)
        problems = diff_trees(umoci_rootfs, mnt)
        # the whiteouts took effect (umoci and we agree on that above; say it plainly too)
        assert not (mnt / "etc/motd").exists() and not (mnt / "opt/gone").exists()
        assert sorted(os.listdir(mnt / "var/lib/opaque")) == ["new.txt"]
        assert (mnt / "etc/app.conf").read_text() == "version = 2\n"
        assert not (mnt / ".soci-snapshotter").exists()  # each FUSE layer's state dir is masked
    print(f"{mode}: ready in {m.ready_s:.3f}s (wall {ready:.3f}s)")
    assert problems == [], "\n".join(problems[:40])
    assert mounts_under(mnt) == [] and mounts_under(m.state.root) == []
    assert not m.state.root.exists()
    ev = m.events()
    assert (ev["kind"] == "ready").sum() == 1
    layer_mounts = ev[(ev["kind"] == "mount") & ev["layer"].notna() & (ev["strategy"] == mode)]
    assert set(layer_mounts["layer"]) == {lay.plan.digest for lay in m.layers}
    assert set(ev["run_id"]) == {m.recorder.run_id}
    if mode == "lazy":
        # the FUSE servers' events were merged: every span read for the comparison was fetched and verified
        fetched = ev[(ev["kind"] == "span_fetch") & ev["ok"]]
        errors = ev[ev["kind"] == "error"]
        assert errors.empty, errors[["layer", "error"]].to_string()
        assert set(fetched["layer"]) == {m.layers[0].plan.digest, m.layers[1].plan.digest}
        assert (ev["kind"] == "span_verify").sum() >= len(fetched)
        ready_t = ev[ev["kind"] == "ready"]["t_end"].iloc[0]
        assert fetched["t_start"].min() > ready_t - 0.05  # spans come after ready: nothing eager


def test_reading_one_small_file_fetches_only_its_spans(realistic_image, mnt: Path) -> None:  # type: ignore[no-untyped-def]
    with lab.mounted(realistic_image.ref, mnt, mode="lazy", config=quiet_config(), insecure=True) as m:
        data = (mnt / "etc/small.conf").read_bytes()
        layer0 = m.layers[0].plan.digest
        z = m.plan.artifacts.ztoc_for(layer0)
    assert data.startswith(b"key0 = value 0\n") and len(data) > 30_000
    entry = next(e for e in z.toc if e.name.lstrip("./") == "etc/small.conf")
    first = z.span_of(entry.tar_header_offset)  # the header is read too: it is verified against the TOC
    last = z.span_of(entry.uncompressed_offset + entry.uncompressed_size - 1)
    want = set(range(first, last + 1))
    ev = m.events()
    fetched = ev[(ev["kind"] == "span_fetch") & ev["ok"]]
    assert set(fetched["layer"]) == {layer0}, "a read of one file fetched spans of another layer"
    assert set(fetched["span"].astype(int)) == want
    want_bytes = sum(z.compressed_range(s)[1] - z.compressed_range(s)[0] for s in want)
    assert int(fetched["bytes"].sum()) == want_bytes
    # on the wire: the spans, the gzip header check at mount, and the 2-byte redirect probe — nothing else
    blob_path = f"/blobs/{layer0}"
    http = ev[(ev["kind"] == "http_request") & ev["ok"] & ev["path"].str.endswith(blob_path, na=False)]
    header = z.compressed_range(0)[0]
    assert int(http["bytes"].sum()) <= want_bytes + header + 2
    assert int(http["bytes"].sum()) >= want_bytes
    print(f"read {len(data)} B: spans {sorted(want)} of {z.span_count}, {want_bytes} B compressed fetched")
