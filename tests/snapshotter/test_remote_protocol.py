"""The remote-snapshotter rules of Prepare, with the layer mounting replaced by a stand-in (the real FUSE
server and unpacker run in test_rpull.py / test_crashes.py under containerd): which labels make a remote
Prepare, AlreadyExists on success, a plain Prepare when mounting fails, and a lost race leaving nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from soci_lab.errors import SociLabError
from soci_lab.events import EventRecorder
from soci_lab.snapshotter import SnapshotExists, Snapshotter
from soci_lab.snapshotter.remote import (
    LABEL_HOW,
    LABEL_IMAGE_REF,
    LABEL_LAYER,
    LABEL_MANIFEST,
    LABEL_TARGET,
    RemoteRequest,
)

LABELS = {LABEL_TARGET: "sha256:chain1", LABEL_IMAGE_REF: "127.0.0.1:5000/app:v1", LABEL_LAYER: "sha256:layer1"}


class StandIn:
    """Mounts by writing a marker file (what a real mount would make visible); can fail or lose a race."""

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.before_return = None
        self.unmounted: list[Path] = []

    def mount(self, req: RemoteRequest, dest: Path, serve_dir: Path) -> str:
        (dest / "from-remote").write_text(req.layer)
        if self.fail is not None:
            raise self.fail
        if self.before_return is not None:
            self.before_return()
        return "local"

    def unmount(self, dest: Path) -> None:
        self.unmounted.append(dest)

    def close(self) -> None:
        """The real one ends its event loop (and the parallel puller); nothing to end here."""


@pytest.fixture
def sn(tmp_path: Path) -> Snapshotter:
    s = Snapshotter(tmp_path / "root", events=EventRecorder(strategy="snapshotter"), remote=StandIn())  # type: ignore[arg-type]
    yield s
    s.close()


def test_request_needs_target_ref_and_layer():
    assert RemoteRequest.from_labels({LABEL_TARGET: "t"}) is None
    req = RemoteRequest.from_labels({**LABELS, LABEL_MANIFEST: "sha256:m"})
    assert req is not None and req.pinned_ref == "127.0.0.1:5000/app@sha256:m"
    assert RemoteRequest.from_labels(LABELS).pinned_ref == "127.0.0.1:5000/app:v1"


def test_mounted_layer_is_committed_as_the_target_and_answers_already_exists(sn: Snapshotter):
    with pytest.raises(SnapshotExists, match="chain1"):
        sn.prepare("extract-1 sha256:chain1", "", LABELS)
    info = sn.stat("sha256:chain1")
    assert info.kind == "committed" and info.labels[LABEL_HOW] == "local"
    assert info.labels[LABEL_TARGET] == "sha256:chain1"  # containerd's Walk filter looks for it
    assert (sn.fs_dir(info.id) / "from-remote").read_text() == "sha256:layer1"
    assert [i.key for i in sn.walk()] == ["sha256:chain1"]
    # asked again: AlreadyExists at once, nothing new made
    with pytest.raises(SnapshotExists):
        sn.prepare("extract-2 sha256:chain1", "", LABELS)
    assert [i.key for i in sn.walk()] == ["sha256:chain1"]


def test_failed_mount_leaves_a_plain_prepare(sn: Snapshotter):
    sn.remote.fail = SociLabError("registry unreachable")  # type: ignore[union-attr]
    mounts = sn.prepare("extract-1 sha256:chain1", "", LABELS)
    assert mounts[0].type == "bind"
    info = sn.stat("extract-1 sha256:chain1")
    assert info.kind == "active" and list(sn.fs_dir(info.id).iterdir()) == []  # nothing half-made left
    errors = [e for e in sn.events.events if e.kind == "error"]
    assert errors and "registry unreachable" in errors[0].error


def test_lost_race_for_the_target_leaves_nothing(sn: Snapshotter):
    def other_prepare_wins() -> None:
        sn.store.create("other", "active")
        sn.store.commit("sha256:chain1", "other")

    sn.remote.before_return = other_prepare_wins  # type: ignore[union-attr]
    with pytest.raises(SnapshotExists):
        sn.prepare("extract-1 sha256:chain1", "", LABELS)
    assert [i.key for i in sn.walk()] == ["sha256:chain1"]
    kept = sn.stat("sha256:chain1").id
    assert {p.name for p in (sn.root / "snapshots").iterdir()} <= {str(kept)}


def test_plain_prepare_without_labels_is_not_remote(sn: Snapshotter):
    sn.prepare("k", "", {LABEL_TARGET: "sha256:x"})  # containerd's own unpack: only the target label
    assert sn.stat("k").kind == "active"
