"""Crashes on the snapshotter path: layer servers and daemon killed, daemon killed in the middle of an
rpull. containerd must stay consistent and a restarted daemon must serve what containerd believes exists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ctdtools import (
    CLI_CODE,
    REPO,
    CatImage,
    Containerd,
    Daemon,
    fuse_mounts_under,
    layer_servers,
    needs_containerd,
    soci_lab,
)
from test_rpull import remote_ops, rpull, run_cat, wait_usable

pytestmark = [needs_containerd, pytest.mark.root, pytest.mark.slow]


def ops_so_far(daemon: Daemon) -> list[str]:
    """The ``op`` of each event the daemon has written so far (a line being written is skipped)."""
    ops = []
    for line in daemon.events.read_text().splitlines():
        try:
            ops.append(json.loads(line).get("op"))
        except ValueError:
            continue
    return ops


def test_dead_layers_are_mounted_again_on_restart(containerd: Containerd, daemon: Daemon, lazy_image: CatImage):
    rpull(containerd, lazy_image.ref)
    servers = layer_servers(daemon.root)
    assert len(servers) == 2
    daemon.stop(signal.SIGKILL)
    for pid in servers:
        os.kill(pid, signal.SIGKILL)
    for mnt in fuse_mounts_under(daemon.root):  # dead FUSE mounts: "transport endpoint is not connected"
        with pytest.raises(OSError):
            os.listdir(mnt)
    daemon.start()
    wait_usable(containerd)
    assert [a["how"] for a in remote_ops(daemon) if a["op"] == "restore"] == ["remounted", "remounted"]
    assert run_cat(containerd, lazy_image.ref, "again") == lazy_image.data
    assert len(layer_servers(daemon.root)) == 2  # the dead ones replaced, not added to


def test_daemon_killed_mid_rpull_leaves_containerd_consistent(containerd: Containerd, daemon: Daemon,
                                                              lazy_image: CatImage):
    pull = subprocess.Popen(
        [sys.executable, "-c", CLI_CODE, "image", "rpull", "--address", str(containerd.socket), "--namespace",
         containerd.namespace, lazy_image.ref, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 120
        while "remote" not in ops_so_far(daemon):  # the first layer is mounted
            assert pull.poll() is None and time.monotonic() < deadline, pull.communicate()
            time.sleep(0.02)
        daemon.stop(signal.SIGKILL)
        _out, err = pull.communicate(timeout=120)
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.communicate()
    if pull.returncode != 0:  # the kill came before the last layer: one clear line, no traceback
        assert len(err.strip().splitlines()) == 1 and err.startswith("soci-lab image:"), err
    daemon.start()
    wait_usable(containerd)
    # every snapshot containerd lists, the restarted snapshotter knows
    keys = [line.split()[0] for line in
            containerd.ctr("snapshots", "--snapshotter", "soci-lab", "ls").stdout.decode().splitlines()[1:]]
    for key in keys:
        containerd.ctr("snapshots", "--snapshotter", "soci-lab", "info", key)
    # pulling again completes the image, and a container runs on it
    res = json.loads(soci_lab("image", "rpull", "--address", str(containerd.socket), "--namespace",
                              containerd.namespace, lazy_image.ref, "--json").stdout)
    assert res["layers_mounted"] + res["layers_present"] == 2
    assert run_cat(containerd, lazy_image.ref, "after") == lazy_image.data
    # and removing the image leaves nothing mounted or stored: containerd's GC removes what the crash orphaned
    containerd.ctr("images", "rm", "--sync", lazy_image.ref)
    assert fuse_mounts_under(daemon.root) == []
    assert sorted(p.name for p in (daemon.root / "snapshots").iterdir()) == []


def test_cleanup_removes_everything_the_snapshotter_made(containerd: Containerd, daemon: Daemon,
                                                         lazy_image: CatImage):
    rpull(containerd, lazy_image.ref)
    assert fuse_mounts_under(daemon.root)
    daemon.stop()
    soci_lab("snapshotter", "cleanup", "--root", str(daemon.root))
    assert fuse_mounts_under(daemon.root) == [] and not daemon.root.exists()
    deadline = time.monotonic() + 10
    while layer_servers(daemon.root.parent) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert layer_servers(daemon.root.parent) == []
