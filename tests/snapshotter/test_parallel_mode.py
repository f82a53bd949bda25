"""The daemon in parallel mode (``[pull_modes.parallel_pull_unpack] enable``): an image's layers go through
the daemon's one ParallelPuller — the first Prepare starts every layer, each Prepare renames its verified
tree into place — and a real container (runc) runs on them."""

from __future__ import annotations

import pytest
from ctdtools import CatImage, Containerd, Daemon, fuse_mounts_under, needs_containerd
from test_rpull import remote_ops, rpull, run_cat

from soci_lab.events import detail, read_events

pytestmark = [needs_containerd, pytest.mark.root, pytest.mark.slow]

PARALLEL = "[pull_modes.parallel_pull_unpack]\nenable = true\n"


@pytest.mark.parametrize("daemon", [PARALLEL], indirect=True)
def test_parallel_mode_pulls_through_the_puller_and_runs_a_container(containerd: Containerd, daemon: Daemon,
                                                                     cat_image: CatImage):
    res = rpull(containerd, cat_image.ref)
    assert res["layers_mounted"] == 2
    assert [a["how"] for a in remote_ops(daemon)] == ["parallel", "parallel"]
    assert fuse_mounts_under(daemon.root) == []
    assert run_cat(containerd, cat_image.ref, "par1") == cat_image.data

    frame = read_events(daemon.events)
    manifest = res["manifest_digest"]
    jobs = frame[frame["kind"] == "job_status"]
    # the puller's job state machine, per layer of this image: InProgress → Claimed → Done
    assert set(detail(jobs, "image")) == {manifest}
    for _layer, rows in jobs.groupby("layer"):
        assert list(detail(rows, "to")) == ["IN_PROGRESS", "CLAIMED", "DONE"]
    assert jobs["layer"].nunique() == 2
    # each layer's verified tree renamed into its snapshot (rebase)
    renames = frame[(frame["kind"] == "file_op") & (detail(frame, "op") == "rename")]
    assert renames["layer"].nunique() == 2 and all("/snapshots/" in p for p in renames["path"])
    # the first Prepare started both downloads (preload): the second layer's download began before the
    # first layer's Prepare ended
    first_prepare = frame[(frame["kind"] == "mount") & (detail(frame, "op") == "remote")].sort_values("t_end").iloc[0]
    downloads = frame[frame["kind"] == "blob_download"]
    assert downloads["layer"].nunique() == 2
    assert (downloads["t_start"] < first_prepare["t_end"]).all()
    # a second pull finds the layers in place; the puller holds nothing for the image any more
    assert rpull(containerd, cat_image.ref)["layers_present"] == 2
