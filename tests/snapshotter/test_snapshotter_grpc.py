"""containerd's snapshots gRPC API on a real unix socket (the daemon's server, containerd's generated
stubs as the client): replies, status codes containerd maps back to its errdefs, streaming List."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from soci_lab.events import EventRecorder
from soci_lab.snapshotter import Snapshotter, SnapshotterServer, client
from soci_lab.snapshotter._api import snapshots_pb2 as pb


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[object]:
    sn = Snapshotter(tmp_path / "root", events=EventRecorder(strategy="snapshotter"))
    server = SnapshotterServer(sn, tmp_path / "sn.sock").start()
    try:
        yield client(tmp_path / "sn.sock")
    finally:
        server.stop()
        sn.close()


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_prepare_commit_view_over_grpc(stub, tmp_path: Path):  # type: ignore[no-untyped-def]
    m = stub.Prepare(pb.PrepareSnapshotRequest(key="k1", labels={"l": "v"})).mounts
    assert [(x.type, list(x.options)) for x in m] == [("bind", ["rw", "rbind"])]
    Path(m[0].source, "f").write_bytes(b"x" * 10000)
    assert stub.Usage(pb.UsageRequest(key="k1")).size >= 10000
    stub.Commit(pb.CommitSnapshotRequest(name="base", key="k1", labels={"c": "1"}))
    info = stub.Stat(pb.StatSnapshotRequest(key="base")).info
    assert (info.name, info.kind, dict(info.labels)) == ("base", pb.COMMITTED, {"c": "1"})
    assert info.created_at.seconds > 0
    m = stub.Prepare(pb.PrepareSnapshotRequest(key="k2", parent="base")).mounts
    assert m[0].type == "overlay" and any(o.startswith("lowerdir=") and o.endswith("/fs") for o in m[0].options)
    v = stub.View(pb.ViewSnapshotRequest(key="v1", parent="base")).mounts
    assert (v[0].type, list(v[0].options)) == ("bind", ["ro", "rbind"])
    assert list(stub.Mounts(pb.MountsRequest(key="k2")).mounts) == list(m)
    names = [i.name for r in stub.List(pb.ListSnapshotsRequest()) for i in r.info]
    assert sorted(names) == ["base", "k2", "v1"]
    only = [i.name for r in stub.List(pb.ListSnapshotsRequest(filters=["kind==view"])) for i in r.info]
    assert only == ["v1"]
    upd = stub.Update(pb.UpdateSnapshotRequest(
        info=pb.Info(name="base", labels={"c": "2", "d": "3"}),
        update_mask=field_mask_pb2.FieldMask(paths=["labels.c"]))).info
    assert dict(upd.labels) == {"c": "2"}


def test_errors_come_back_as_containerd_status_codes(stub):  # type: ignore[no-untyped-def]
    stub.Prepare(pb.PrepareSnapshotRequest(key="a"))
    assert code_of(lambda: stub.Prepare(pb.PrepareSnapshotRequest(key="a"))) == grpc.StatusCode.ALREADY_EXISTS
    assert code_of(lambda: stub.Stat(pb.StatSnapshotRequest(key="nope"))) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: stub.Prepare(pb.PrepareSnapshotRequest(key="b", parent="a"))) == \
        grpc.StatusCode.FAILED_PRECONDITION  # an active snapshot is no parent
    stub.Commit(pb.CommitSnapshotRequest(name="c", key="a"))
    stub.Prepare(pb.PrepareSnapshotRequest(key="d", parent="c"))
    assert code_of(lambda: stub.Remove(pb.RemoveSnapshotRequest(key="c"))) == grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(lambda: stub.List(pb.ListSnapshotsRequest(filters=["colour==red"])).next()) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: stub.Mounts(pb.MountsRequest(key="c"))) == grpc.StatusCode.FAILED_PRECONDITION


def test_cleanup_removes_directories_no_snapshot_owns(tmp_path: Path):
    sn = Snapshotter(tmp_path / "root")
    sn.prepare("keep")
    stray = tmp_path / "root" / "snapshots" / "99" / "fs"
    stray.mkdir(parents=True)
    (stray / "junk").write_text("x")
    assert sn.cleanup() == ["99"]
    assert sorted(p.name for p in (tmp_path / "root" / "snapshots").iterdir()) == ["1"]
    sn.close()


def test_rpull_without_containerd_fails_with_one_line(embedded_registry, tmp_path: Path):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    from ctdtools import CLI_CODE, REPO

    from soci_lab.images import build_image

    (tmp_path / "l" / "d").mkdir(parents=True)
    (tmp_path / "l" / "d" / "f").write_text("x")
    ref = embedded_registry.ref("svc/tiny", "v1")
    build_image([tmp_path / "l"], ref, insecure=True)
    res = subprocess.run([sys.executable, "-c", CLI_CODE, "image", "rpull", "--address", str(tmp_path / "no.sock"),
                          ref], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("soci-lab image: containerd at "), res.stderr


def test_serve_refuses_an_events_file_it_cannot_append_to(tmp_path: Path):
    import os
    import subprocess
    import sys

    from ctdtools import CLI_CODE, REPO

    res = subprocess.run([sys.executable, "-c", CLI_CODE, "snapshotter", "serve", "--address", str(tmp_path / "s.sock"),
                          "--root", str(tmp_path / "root"), "--events", str(tmp_path / "ev.csv"), "--no-remote"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and ".jsonl" in res.stderr, res.stderr
    assert not (tmp_path / "s.sock").exists() and not (tmp_path / "root").exists()
