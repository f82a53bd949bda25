"""``lab.pull(..., keep_state=True)``: the benchmarks' way to keep a pull's files until after the last timing
(deleting a large tree right away slows the next pulls' file creation on ext4 without a journal)."""

from __future__ import annotations

import random

import pytest


def test_keep_state_leaves_the_files_and_no_mount(tmp_path):
    lab = pytest.importorskip("soci_lab.lab")
    ok, why = lab.can_mount()
    if not ok:
        pytest.skip(f"cannot mount here: {why}")
    from soci_lab.images.build import build_image
    from soci_lab.netlab import EmbeddedRegistry

    d = tmp_path / "l0" / "d0"
    d.mkdir(parents=True)
    rnd = random.Random(3)
    for i in range(20):
        (d / f"f{i}").write_bytes(rnd.randbytes(10_000))
    build_image([tmp_path / "l0"], f"oci:{tmp_path / 'layout'}:t")
    with EmbeddedRegistry(root=tmp_path / "reg", layouts={"img": tmp_path / "layout"}) as reg:
        ref = f"{reg.host_port}/img:t"
        kept = lab.pull(ref, "sequential", state_dir=tmp_path / "kept", keep_state=True)
        gone = lab.pull(ref, "sequential", state_dir=tmp_path / "gone")
    assert kept.summary["requests"] == gone.summary["requests"] > 0
    with open("/proc/self/mounts") as fh:
        assert str(tmp_path) not in fh.read()  # unmounted either way
    files = [p for p in (tmp_path / "kept").rglob("f*") if p.is_file() and p.parent.name == "d0"]
    assert len(files) == 20  # the applied layer is still there
    assert not any((tmp_path / "gone").rglob("f*"))  # the default removes the contents
