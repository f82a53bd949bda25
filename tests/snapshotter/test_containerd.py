"""containerd 1.6 (Debian) with soci-lab as its proxy snapshotter: pull an image, run a real container (runc)."""

from __future__ import annotations

import signal
import time

from ctdtools import CatImage, Containerd, Daemon, needs_containerd
from test_rpull import wait_usable

from soci_lab.events import detail, read_events

pytestmark = [needs_containerd, __import__("pytest").mark.root, __import__("pytest").mark.slow]


def pull(ctd: Containerd, ref: str) -> None:
    ctd.ctr("images", "pull", "--plain-http", "--snapshotter", "soci-lab", ref)


def test_container_cats_a_file_on_soci_lab_snapshots(containerd: Containerd, daemon: Daemon, cat_image: CatImage):
    pull(containerd, cat_image.ref)
    out = containerd.ctr("run", "--rm", "--snapshotter", "soci-lab", cat_image.ref, "c1", "/bin/cat",
                         "/data/hello.txt").stdout
    assert out == cat_image.data
    # the layers are soci-lab's: containerd lists two committed snapshots, one on the other
    ls = containerd.ctr("snapshots", "--snapshotter", "soci-lab", "ls").stdout.decode().splitlines()[1:]
    committed = [line.split() for line in ls if line.split()[-1] == "Committed"]
    assert len(committed) == 2 and {len(c) for c in committed} == {2, 3}
    # containerd removes the container's snapshot in its garbage collection, after `ctr run --rm` returns:
    # the daemon's Remove comes a moment later
    deadline = time.monotonic() + 30
    while True:
        frame = read_events(daemon.events)
        ops = set(detail(frame, "op"))
        if "Remove" in ops or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {"Prepare", "Commit", "Remove"} <= ops
    assert set(frame["source"]) == {"real"} and set(frame["strategy"]) == {"snapshotter"}


def test_restarted_daemon_serves_the_same_snapshots(containerd: Containerd, daemon: Daemon, cat_image: CatImage):
    pull(containerd, cat_image.ref)
    before = containerd.ctr("snapshots", "--snapshotter", "soci-lab", "ls").stdout
    daemon.stop(signal.SIGKILL)  # no goodbye: the state on disk is all a restart has
    daemon.start()
    wait_usable(containerd)
    assert containerd.ctr("snapshots", "--snapshotter", "soci-lab", "ls").stdout == before
    out = containerd.ctr("run", "--rm", "--snapshotter", "soci-lab", cat_image.ref, "c2", "/bin/cat",
                         "/data/hello.txt").stdout
    assert out == cat_image.data
    # removing the image and pruning leaves the snapshotter empty
    containerd.ctr("images", "rm", "--sync", cat_image.ref)
    ls = containerd.ctr("snapshots", "--snapshotter", "soci-lab", "ls").stdout.decode().splitlines()[1:]
    assert ls == []
    assert sorted(p.name for p in (daemon.root / "snapshots").iterdir()) == []
