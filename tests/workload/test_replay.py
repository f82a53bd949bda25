"""Replay against a plain tree: exactly the bytes the trace asks for, symlinks resolved inside the
rootfs, timing kept (loosely) or ignored, events emitted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from soci_lab.events import EventRecorder
from soci_lab.workload import Trace, TraceRow, replay_trace, resolve_in_root

DATA = os.urandom(1 << 16)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr/lib/libdata.so").write_bytes(DATA)
    (root / "etc/conf").write_text("key=value\n")
    os.symlink("/usr/lib/libdata.so", root / "etc/abs-link")  # absolute: must stay inside root
    os.symlink("../usr/lib", root / "etc/rel-dir")
    os.symlink("/../../../..", root / "etc/escape")
    return root


def test_reads_exactly_the_asked_bytes(tree: Path) -> None:
    rows = [
        TraceRow(0.0, "open", "/usr/lib/libdata.so"),
        TraceRow(0.001, "read", "/usr/lib/libdata.so", 0, 4096),
        TraceRow(0.002, "read", "/usr/lib/libdata.so", 12345, 777),
        TraceRow(0.003, "read", "/etc/abs-link", 60000, 5536),
        TraceRow(0.004, "read", "/etc/rel-dir/libdata.so", 65000, 536),
        TraceRow(0.005, "read", "/etc/conf", 4, 100),  # past the end: a short read, as the kernel gives
        TraceRow(0.006, "stat", "/etc"),
        TraceRow(0.007, "readdir", "/usr/lib"),
        TraceRow(0.008, "readlink", "/etc/abs-link"),
    ]
    got: list[tuple[TraceRow, bytes]] = []
    result = replay_trace(tree, rows, on_read=lambda r, d: got.append((r, d)))
    assert result.failed == 0 and result.ok == len(rows)
    assert len(got) == 5
    for row, data in got:
        host = resolve_in_root(tree, row.path)
        with open(host, "rb") as f:
            f.seek(row.offset)
            assert data == f.read(row.size)
    assert got[0][1] == DATA[:4096]
    assert got[2][1] == DATA[60000:65536]
    assert got[4][1] == b"value\n"
    assert result.bytes_read == 4096 + 777 + 5536 + 536 + 6
    assert result.files_read == 4  # as traced paths


def test_symlinks_never_escape_the_root(tree: Path) -> None:
    assert resolve_in_root(tree, "/etc/abs-link") == str(tree / "usr/lib/libdata.so")
    assert resolve_in_root(tree, "/etc/escape") == str(tree)
    assert resolve_in_root(tree, "/../../etc/conf") == str(tree / "etc/conf")
    assert resolve_in_root(tree, "/etc/abs-link", follow_last=False) == str(tree / "etc/abs-link")
    os.symlink("loop", tree / "etc/loop")
    with pytest.raises(OSError, match="Too many levels"):
        resolve_in_root(tree, "/etc/loop")


def test_failures_are_recorded_and_replay_goes_on(tree: Path) -> None:
    rec = EventRecorder(strategy="replay")
    rows = [
        TraceRow(0.0, "read", "/missing/file", 0, 10),
        TraceRow(0.1, "read", "/etc/conf", 0, 3),
        TraceRow(0.2, "stat", "/nope"),
    ]
    result = replay_trace(tree, rows, recorder=rec)
    assert (result.ok, result.failed) == (1, 2)
    assert result.errors[0].startswith("line 2: read")
    frame = rec.to_frame()
    reads = frame[frame.kind == "file_read"]
    assert list(reads.ok) == [False, True]
    assert reads.iloc[1]["bytes"] == 3 and reads.iloc[1]["offset"] == 0
    assert list(frame[frame.kind == "file_op"].ok) == [False]
    workload = frame[frame.kind == "workload"]
    assert len(workload) == 1 and not workload.iloc[0]["ok"]


def test_events_carry_offsets_and_one_workload_event(tree: Path) -> None:
    rec = EventRecorder(strategy="replay")
    rows = [TraceRow(i * 0.001, "read", "/usr/lib/libdata.so", i * 1000, 100) for i in range(20)]
    replay_trace(tree, rows, recorder=rec)
    frame = rec.to_frame()
    reads = frame[frame.kind == "file_read"]
    assert list(reads["offset"]) == [i * 1000 for i in range(20)]
    assert set(reads.path) == {"/usr/lib/libdata.so"} and set(reads["bytes"]) == {100}
    (w,) = frame[frame.kind == "workload"].itertuples()
    assert w.t_start <= reads.t_start.min() and w.t_end >= reads.t_end.max()
    assert w.bytes == 2000


def test_timed_replay_respects_t_s(tree: Path) -> None:
    rows = [TraceRow(t, "stat", "/etc/conf") for t in (0.0, 0.15, 0.3, 0.45)]
    seen: list[float] = []
    rec = EventRecorder()
    t0 = time.monotonic()
    replay_trace(tree, rows, speed=1.0, recorder=rec)
    took = time.monotonic() - t0
    seen = list(rec.to_frame().query("kind == 'file_op'").t_start)
    assert took >= 0.45 * 0.95
    assert took < 0.45 + 1.0  # loosely: the machine is shared
    for expected, got in zip((0.0, 0.15, 0.3, 0.45), seen, strict=True):
        assert got >= expected * 0.95 - 0.01
    t0 = time.monotonic()
    replay_trace(tree, rows, speed=3.0)
    assert 0.15 * 0.95 <= time.monotonic() - t0 < 0.15 + 1.0


def test_fast_replay_does_not_wait(tree: Path) -> None:
    rows = [TraceRow(t, "read", "/etc/conf", 0, 4) for t in (0.0, 50.0, 100.0, 3600.0)]
    t0 = time.monotonic()
    result = replay_trace(tree, Trace(rows))
    assert time.monotonic() - t0 < 1.0
    assert result.ok == 4


def test_bad_arguments(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="speed"):
        replay_trace(tree, [], speed=0)
    with pytest.raises(FileNotFoundError):
        replay_trace(tmp_path / "nothing", [])


def test_events_of_a_replay_give_the_trace_back(tree: Path) -> None:
    from soci_lab.workload import trace_from_events

    rows = [
        TraceRow(0.0, "open", "/usr/lib/libdata.so"),
        TraceRow(0.01, "read", "/usr/lib/libdata.so", 100, 50),
        TraceRow(0.02, "stat", "/etc/conf"),
        TraceRow(0.03, "readdir", "/usr/lib", 0, 1),
        TraceRow(0.04, "readlink", "/etc/abs-link", 0, len("/usr/lib/libdata.so")),
        TraceRow(0.05, "read", "/missing", 0, 10),  # fails: left out
    ]
    rec = EventRecorder()
    replay_trace(tree, rows, speed=1.0, recorder=rec)
    back = trace_from_events(rec.to_frame())
    assert [(r.op, r.path, r.offset, r.size) for r in back] == [(r.op, r.path, r.offset, r.size) for r in rows[:5]]
    for got, want in zip(back, rows, strict=False):
        assert abs(got.t_s - want.t_s) < 0.25  # timed replay: events land near their t_s
    assert len(trace_from_events(rec.events, keep_failed=True)) == 6


def test_replay_events_summarize_to_the_trace_fraction(tree: Path) -> None:
    """The analysis room's summary reads the same distinct bytes from replay events as the trace says."""
    from soci_lab.analysis.summary import summarize

    rows = Trace([TraceRow(i * 0.001, "read", "/usr/lib/libdata.so", (i * 7919) % 60000, 3000) for i in range(40)])
    rec = EventRecorder(strategy="replay")
    replay_trace(tree, rows, recorder=rec)
    s = summarize(rec.to_frame(), image_bytes=1 << 20)
    assert s["bytes_read"] == rows.bytes_read()
    assert s["fraction_read"] == rows.bytes_read() / (1 << 20)
    assert s["files_read"] == 1
    assert s["workload_done_s"] > 0


def test_trace_from_events_takes_the_workloads_accesses_over_the_fuse_servers() -> None:
    """A lazy run holds the command's own accesses (no layer) and its FUSE servers' (layer set, paths
    relative to the layer root): only the former make the trace, and layer-level paths become absolute."""
    from soci_lab.events import EventRecorder
    from soci_lab.workload import trace_from_events

    rec = EventRecorder(strategy="lazy")
    rec.emit("file_read", 1.0, 1.1, layer="sha256:aa", path="usr/lib/os.py", nbytes=131072, offset=0)
    rec.emit("workload", 0.9, 2.0)
    rec.emit("file_read", 1.0, 1.0, path="/usr/lib/os.py", nbytes=40000, offset=0)
    rec.emit("file_op", 0.95, 0.95, path="/usr/lib/os.py", op="open", result=0)
    trace = trace_from_events(rec.to_frame())
    assert [(r.op, r.path, r.size) for r in trace] == [("open", "/usr/lib/os.py", 0), ("read", "/usr/lib/os.py", 40000)]
    fuse_only = EventRecorder(strategy="lazy")
    fuse_only.emit("file_read", 1.0, 1.1, layer="sha256:aa", path="usr/lib/os.py", nbytes=131072, offset=0)
    assert [r.path for r in trace_from_events(fuse_only.to_frame())] == ["/usr/lib/os.py"]
