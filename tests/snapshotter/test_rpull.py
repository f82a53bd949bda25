"""``soci-lab image rpull`` into containerd 1.6: layers mounted by the snapshotter (remote-snapshotter
protocol), a runc container on the lazily loaded rootfs, and a daemon restart under running layers."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from ctdtools import CatImage, Containerd, Daemon, fuse_mounts_under, needs_containerd, soci_lab

from soci_lab.events import detail, read_events

pytestmark = [needs_containerd, pytest.mark.root, pytest.mark.slow]


def rpull(ctd: Containerd, ref: str) -> dict:
    out = soci_lab("image", "rpull", "--address", str(ctd.socket), "--namespace", ctd.namespace, ref, "--json")
    return json.loads(out.stdout)


def run_cat(ctd: Containerd, ref: str, name: str, path: str = "/data/hello.txt") -> bytes:
    return ctd.ctr("run", "--rm", "--snapshotter", "soci-lab", ref, name, "/bin/cat", path).stdout


def remote_ops(daemon: Daemon) -> list[dict]:
    """The daemon's remote-layer decisions (``op`` remote/restore) with their ``how``, from its events file."""
    frame = read_events(daemon.events)
    ops, hows = detail(frame, "op"), detail(frame, "how")
    return [{"op": o, "how": h} for o, h in zip(ops, hows, strict=True) if o in ("remote", "restore")]


def test_rpull_runs_a_container_on_lazily_mounted_layers(containerd: Containerd, daemon: Daemon,
                                                         lazy_image: CatImage):
    res = rpull(containerd, lazy_image.ref)
    assert res["layers_mounted"] == 2 and res["layers_present"] == 0
    # both layers are FUSE mounts of soci-lab's lazy layer server, not directories containerd unpacked
    assert len(fuse_mounts_under(daemon.root)) == 2
    assert [a["how"] for a in remote_ops(daemon)] == ["lazy", "lazy"]
    # containerd fetched no layer blob: its content store holds the manifest and config only
    blobs = list((containerd.base / "root" / "io.containerd.content.v1.content" / "blobs" / "sha256").iterdir())
    assert len(blobs) == 2
    assert run_cat(containerd, lazy_image.ref, "lazy1") == lazy_image.data
    # a second rpull finds everything in place
    assert rpull(containerd, lazy_image.ref)["layers_present"] == 2
    # removing the image removes the snapshots and takes the FUSE servers down
    containerd.ctr("images", "rm", "--sync", lazy_image.ref)
    assert fuse_mounts_under(daemon.root) == []
    assert containerd.ctr("snapshots", "--snapshotter", "soci-lab", "ls").stdout.decode().splitlines()[1:] == []


def test_rpull_of_an_image_without_index_unpacks_locally(containerd: Containerd, daemon: Daemon,
                                                          cat_image: CatImage):
    res = rpull(containerd, cat_image.ref)
    assert res["layers_mounted"] == 2
    assert fuse_mounts_under(daemon.root) == []
    assert [a["how"] for a in remote_ops(daemon)] == ["local", "local"]
    assert run_cat(containerd, cat_image.ref, "local1") == cat_image.data


def wait_usable(ctd: Containerd, timeout: float = 30.0) -> None:
    """containerd's channel to the proxy reconnects with back-off after a daemon restart: wait until a
    call that must reach the snapshotter (Prepare of a probe snapshot, then Remove) gets through."""
    deadline = time.monotonic() + timeout
    while (res := ctd.ctr("snapshots", "--snapshotter", "soci-lab", "prepare", "probe", check=False)).returncode:
        assert b"unavailable" in res.stderr and time.monotonic() < deadline, res.stderr
        time.sleep(0.2)
    ctd.ctr("snapshots", "--snapshotter", "soci-lab", "rm", "probe")


def test_killed_daemon_restarts_onto_its_lazy_layers(containerd: Containerd, daemon: Daemon, lazy_image: CatImage):
    rpull(containerd, lazy_image.ref)
    before = sorted(fuse_mounts_under(daemon.root))
    daemon.stop(signal.SIGKILL)
    # the layer servers are processes of their own: the layers still answer while the daemon is down
    assert sorted(fuse_mounts_under(daemon.root)) == before
    daemon.start()
    wait_usable(containerd)
    assert [a["how"] for a in remote_ops(daemon) if a["op"] == "restore"] == ["attached", "attached"]
    assert run_cat(containerd, lazy_image.ref, "lazy2") == lazy_image.data


def test_two_containers_at_once_share_the_layer_servers(containerd: Containerd, daemon: Daemon,
                                                        lazy_image: CatImage):
    import subprocess

    rpull(containerd, lazy_image.ref)
    runs = [
        subprocess.Popen(["ctr", "--address", str(containerd.socket), "--namespace", containerd.namespace, "run",
                          "--rm", "--snapshotter", "soci-lab", lazy_image.ref, f"twin{i}", "/bin/cat",
                          "/data/hello.txt"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], [e for _, e in outs]
    assert [o for o, _ in outs] == [lazy_image.data, lazy_image.data]
    # one server per layer for both containers, and no span of it came over the network twice
    from ctdtools import layer_servers

    servers = layer_servers(daemon.root)
    assert len(servers) == 2
    for pid in servers:  # a layer server writes its events when it stops
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") for pid in servers):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    fetched = []
    for path in daemon.root.glob("snapshots/*/serve/events.jsonl"):
        frame = read_events(path)
        # demand reads (the layer check of a pinned zTOC runs once every span is in, and fetches again)
        ok = frame[(frame["kind"] == "span_fetch") & frame["ok"] & (detail(frame, "reason") != "verify")]
        fetched += list(zip(ok["layer"], ok["span"], strict=True))
    assert fetched and len(fetched) == len(set(fetched))


def test_lazy_layers_serve_before_their_bytes_are_fetched(containerd: Containerd, daemon: Daemon,
                                                          lazy_image: CatImage):
    """A layer whose zTOC came through the pinned image (v2 index) is served at once and checked in the
    background, as ``soci-lab mount`` serves it: the pull fetches no span; a container's read fetches what
    it reads."""
    rpull(containerd, lazy_image.ref)
    from ctdtools import layer_servers

    servers = layer_servers(daemon.root)
    assert len(servers) == 2
    for pid in servers:  # a layer server writes its events when it stops
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") for pid in servers):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    frames = [read_events(p) for p in daemon.root.glob("snapshots/*/serve/events.jsonl")]
    assert len(frames) == 2
    assert all((f["kind"] == "mount").any() for f in frames)
    assert sum(int((f["kind"] == "span_fetch").sum()) for f in frames) == 0
