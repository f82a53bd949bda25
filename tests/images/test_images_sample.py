"""The demo's sample image: deterministic trees, whiteouts, and one layer above SOCI's minimum size."""

from __future__ import annotations

import io
import os

from imgtools import soci_lab
from treecmp import diff_snapshots, snapshot

from soci_lab.images import build_image, sample_image_trees
from soci_lab.images.compress import ZstdFramesCompressor
from soci_lab.oci import OCILayout

SOCI_MIN_LAYER_SIZE = 10 << 20


def test_same_call_same_trees_same_digests(tmp_path):
    a = sample_image_trees(tmp_path / "a", scale=0.05)
    b = sample_image_trees(tmp_path / "b", scale=0.05)
    assert [d.name for d in a] == ["00-base", "01-libs", "02-data", "03-app", "04-upper"]
    for x, y in zip(a, b, strict=True):
        assert diff_snapshots(snapshot(x), snapshot(y)) == []
    ra = build_image(a, f"oci:{tmp_path / 'la'}:s")
    rb = build_image(b, f"oci:{tmp_path / 'lb'}:s")
    assert ra.digest == rb.digest
    # made again in place (the old trees are replaced, not merged)
    (a[3] / "stray").write_text("left over")
    again = sample_image_trees(tmp_path / "a", scale=0.05)
    assert build_image(again, f"oci:{tmp_path / 'lc'}:s").digest == ra.digest


def test_upper_layer_holds_whiteouts_and_an_opaque_dir(tmp_path):
    dirs = sample_image_trees(tmp_path, scale=0.02)
    upper = dirs[-1]
    assert (upper / "etc" / ".wh.motd").is_file() and (dirs[0] / "etc" / "motd").is_file()
    assert (upper / "etc" / "legacy" / ".wh..wh..opq").is_file() and (dirs[0] / "etc" / "legacy").is_dir()
    assert (upper / "opt" / "data" / ".wh.extra").is_file() and (dirs[2] / "opt" / "data" / "extra").is_dir()
    st = os.lstat(dirs[3] / "app" / "bin" / "tool")
    assert st.st_nlink == 2 and os.readlink(dirs[3] / "app" / "current-config") == "config/app.json"
    for d in dirs:
        snap = snapshot(d)
        assert {(e.uid, e.gid) for e in snap.values()} == {(0, 0)}
        assert len({e.mtime_ns for e in snap.values()}) == 1  # one fixed time per layer


def test_full_scale_has_a_layer_above_the_soci_minimum(tmp_path):
    out = soci_lab("image", "sample", str(tmp_path / "trees"))
    dirs = out.stdout.split()
    assert len(dirs) == 5
    res = build_image(dirs, f"oci:{tmp_path / 'lay'}:sample")
    sizes = [la.descriptor.size for la in res.layers]
    assert max(sizes) > SOCI_MIN_LAYER_SIZE
    assert sum(1 for s in sizes if s < SOCI_MIN_LAYER_SIZE) >= 2  # small layers too (fetched eagerly by soci)
    assert OCILayout(tmp_path / "lay").resolve("sample").digest == res.digest


def test_zstd_frames_match_the_ztoc_rooms_writer_and_index_one_span_per_frame(tmp_path):
    from soci_lab.ztoc import compress_zstd_frames, scan_zstd

    data = os.urandom(1 << 20) * 3 + b"tail" * 1000
    ours = io.BytesIO()
    comp = ZstdFramesCompressor(ours.write, level=3, frame_size=1 << 20)
    for i in range(0, len(data), 100_000):  # pushed in pieces that do not line up with frames
        comp.write(data[i : i + 100_000])
    comp.finish()
    theirs = io.BytesIO()
    compress_zstd_frames(io.BytesIO(data), theirs, frame_size=1 << 20, level=3)
    assert ours.getvalue() == theirs.getvalue()
    scan = scan_zstd(io.BytesIO(ours.getvalue()), span_size=1 << 20)
    assert scan.frames == 4 and scan.zinfo.span_count == 4 and scan.uncompressed_size == len(data)
