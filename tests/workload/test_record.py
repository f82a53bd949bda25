"""Recording: strace output → trace rows (on synthetic logs), and a real recording of commands chrooted
in the mini rootfs that must show the opens, reads (with offsets), stats, readdirs and readlinks of files
we chose — and nothing from outside the rootfs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wltools import DATA

from soci_lab.errors import WorkloadError
from soci_lab.workload import Trace, TraceRow, load_trace, parse_strace, record_trace, replay_trace

ROOT = "/srv/root"

LOG = f"""\
100 1000.000000 execve("/usr/sbin/chroot", [...], 0x7ffd /* 3 vars */) = 0
100 1000.000100 openat(AT_FDCWD</home>, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3</etc/ld.so.cache>
100 1000.000200 read(3</etc/ld.so.cache>, ""..., 832) = 832
100 1000.000300 chroot("{ROOT}") = 0
100 1000.000400 execve("/bin/app", [...], 0x7ffd /* 3 vars */) = 0
100 1000.001000 openat(AT_FDCWD<{ROOT}>, "/data/f", O_RDONLY) = 3<{ROOT}/data/f>
100 1000.001100 read(3<{ROOT}/data/f>, ""..., 100) = 100
100 1000.001200 read(3<{ROOT}/data/f>, <unfinished ...>
101 1000.001250 openat(AT_FDCWD<{ROOT}/data>, "g", O_RDONLY) = 4<{ROOT}/data/g\\x20x>
100 1000.001300 <... read resumed>""..., 100) = 50
100 1000.001400 lseek(3<{ROOT}/data/f>, 4096, SEEK_SET) = 4096
100 1000.001500 read(3<{ROOT}/data/f>, ""..., 10) = 10
100 1000.001600 pread64(3<{ROOT}/data/f>, ""..., 64, 8192) = 64
100 1000.001700 newfstatat(3<{ROOT}/data/f>, "", {{st_mode=S_IFREG|0644, st_size=9000, ...}}, AT_EMPTY_PATH) = 0
100 1000.001800 newfstatat(AT_FDCWD<{ROOT}/data>, "rel/x", {{st_mode=S_IFREG|0644, ...}}, 0) = 0
100 1000.001900 newfstatat(AT_FDCWD<{ROOT}>, "/missing", 0x7ffe, 0) = -1 ENOENT (No such file or directory)
100 1000.002000 openat(AT_FDCWD<{ROOT}>, "/proc/self/status", O_RDONLY) = 5<{ROOT}/proc/1/status>
100 1000.002100 read(5<{ROOT}/proc/1/status>, ""..., 1024) = 900
100 1000.002200 openat(AT_FDCWD<{ROOT}>, "/usr", O_RDONLY|O_DIRECTORY) = 6<{ROOT}/usr>
100 1000.002300 getdents64(6<{ROOT}/usr>, 0x55 /* 5 entries */, 32768) = 136
100 1000.002400 getdents64(6<{ROOT}/usr>, 0x55 /* 0 entries */, 32768) = 0
100 1000.002500 readlink("/bin/sh", ""..., 4096) = 4
100 1000.002600 readlinkat(AT_FDCWD<{ROOT}/etc>, "alt", ""..., 4096) = 9
100 1000.002700 read(0<pipe:[1234]>, ""..., 10) = 10
100 1000.002800 mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, 7<{ROOT}/lib/libx.so>, 0) = 0x7f0000
100 1000.002900 +++ exited with 0 +++
"""


def test_parse_strace_log() -> None:
    conv = parse_strace(LOG.splitlines(), ROOT)
    rows = [(r.op, r.path, r.offset, r.size) for r in Trace(conv.rows)]  # ordered by start time
    assert rows == [
        ("open", "/bin/app", 0, 0),
        ("open", "/data/f", 0, 0),
        ("read", "/data/f", 0, 100),
        ("read", "/data/f", 100, 50),  # the resumed read, at its start time
        ("open", "/data/g x", 0, 0),
        ("read", "/data/f", 4096, 10),  # after lseek
        ("read", "/data/f", 8192, 64),  # pread64
        ("stat", "/data/f", 0, 0),
        ("stat", "/data/rel/x", 0, 0),
        ("open", "/usr", 0, 0),
        ("readdir", "/usr", 0, 136),
        ("readlink", "/bin/sh", 0, 4),
        ("readlink", "/etc/alt", 0, 9),
    ]
    assert conv.rows[0].t_s == pytest.approx(0.0004)
    assert conv.first_seen["/lib/libx.so"] == pytest.approx(0.0028)  # known from mmap alone


def test_positions_are_per_process_and_shared_with_threads_and_children() -> None:
    log = f"""\
100 1.0 chroot("{ROOT}") = 0
100 1.1 openat(AT_FDCWD<{ROOT}>, "/etc/a", O_RDONLY) = 3<{ROOT}/etc/a>
200 1.2 openat(AT_FDCWD<{ROOT}>, "/etc/a", O_RDONLY) = 3<{ROOT}/etc/a>
200 1.3 read(3<{ROOT}/etc/a>, ""..., 4096) = 2996
100 1.4 read(3<{ROOT}/etc/a>, ""..., 4096) = 2996
101 1.5 read(3<{ROOT}/etc/a>, ""..., 4096) = 10
100 1.6 read(3<{ROOT}/etc/a>, ""..., 4096) = 5
"""
    reads = [(r.offset, r.size) for r in parse_strace(log.splitlines(), ROOT).rows if r.op == "read"]
    # two processes opened the file on the same fd number: each reads from 0; 101 (a thread or child of the
    # last opener, 200) moves 200's position; 100 goes on from its own
    assert reads == [(0, 2996), (0, 2996), (2996, 10), (2996, 5)]


@pytest.mark.root
@pytest.mark.usefixtures("needs_root")
def test_record_a_small_command(mini_rootfs: Path, tmp_path: Path) -> None:
    script = (
        "cat /data/hello.txt; "
        "dd if=/data/file.bin of=/dev/null bs=1000 skip=3 count=2 2>/dev/null; "
        "head -c 10 /data/sub/abs-link >/dev/null; "
        "ls /data >/dev/null; readlink /data/sub/rel-link >/dev/null; stat /data/hello.txt >/dev/null; "
        "echo ready; exec sleep 60"
    )
    out = tmp_path / "trace.csv"
    rec = record_trace(mini_rootfs, ["/bin/sh", "-c", script], "line:^ready$", 20, out=out)
    trace = load_trace(out)
    assert trace == rec.trace
    rows = list(trace)
    by = {(r.op, r.path) for r in rows}
    assert ("open", "/bin/sh") in by
    assert ("open", "/data/hello.txt") in by
    assert TraceRow in {type(r) for r in rows}
    hello = [r for r in rows if r.op == "read" and r.path == "/data/hello.txt"]
    assert [(r.offset, r.size) for r in hello] == [(0, 14)]
    dd = [(r.offset, r.size) for r in rows if r.op == "read" and r.path == "/data/file.bin"]
    assert (3000, 1000) in dd and (4000, 1000) in dd  # dd's lseek then two reads
    assert (0, 10) in dd  # head through the absolute symlink: the kernel's resolved path
    assert ("readdir", "/data") in by
    assert ("readlink", "/data/sub/rel-link") in by
    assert ("stat", "/data/hello.txt") in by
    # nothing outside the rootfs (the host's chroot binary and its libraries), nothing under /proc or /dev
    assert all(not r.path.startswith(("/proc", "/dev", "/sys")) for r in rows)
    assert all((mini_rootfs / r.path.lstrip("/")).exists() or r.path == "/" for r in rows)
    # libc is mapped, not read: its pages come from pagemap at readiness
    assert rec.mapped_pages and rec.mapped_bytes > 0
    libc = [r for r in rows if r.op == "read" and "libc.so" in r.path]
    assert sum(r.size for r in libc) >= 100_000
    # times are seconds since start, within the startup
    assert 0 <= rows[0].t_s <= rows[-1].t_s <= rec.run.cmd_s + 0.01
    # and the trace replays on the same tree, every row succeeding
    got: dict[tuple[int, int], bytes] = {}
    result = replay_trace(mini_rootfs, trace,
                          on_read=lambda r, d: got.__setitem__((r.offset, r.size), d) if r.path == "/data/file.bin"
                          else None)
    assert result.failed == 0
    assert got[(3000, 1000)] == DATA[3000:4000]


@pytest.mark.root
@pytest.mark.usefixtures("needs_root")
def test_record_exit_command_has_no_mapped_pages(mini_rootfs: Path) -> None:
    rec = record_trace(mini_rootfs, ["/bin/cat", "/data/hello.txt"], "exit", 20)
    assert not rec.mapped_pages and rec.mapped_bytes == 0
    j = rec.run_json()
    assert j["exit_code"] == 0 and j["files_read"] >= 1 and j["bytes_read"] >= 14
    assert 0 < j["cmd_s"] <= j["total_s"]
    assert any(r.op == "read" and r.path == "/data/hello.txt" and r.size == 14 for r in rec.trace)
    with pytest.raises(WorkloadError, match="exited with 1"):
        record_trace(mini_rootfs, ["/bin/cat", "/data/none"], "exit", 20)


@pytest.mark.root
@pytest.mark.usefixtures("needs_root")
def test_recording_emits_events_on_the_run_clock(mini_rootfs: Path) -> None:
    from soci_lab.events import EventRecorder

    rec_events = EventRecorder(strategy="local")
    rec = record_trace(mini_rootfs, ["/bin/sh", "-c", "cat /data/hello.txt; echo ready; exec sleep 60"],
                       "line:^ready$", 20, recorder=rec_events)
    frame = rec_events.to_frame()
    reads = frame[frame.kind == "file_read"]
    assert len(reads) == sum(1 for r in rec.trace if r.op == "read")
    hello = reads[reads.path == "/data/hello.txt"]
    assert len(hello) == 1 and hello.iloc[0]["bytes"] == 14 and hello.iloc[0]["offset"] == 0
    assert hello.iloc[0]["via"] == "syscall"
    assert set(reads["via"]) == {"syscall", "mmap"}
    (ready,) = frame[frame.kind == "ready"].itertuples()
    assert reads.t_start.max() <= ready.t_end + 0.05
    assert set(frame.kind) == {"file_read", "file_op", "ready", "workload"}


_FILES = {"/lib/a.so": 50_000, "/etc/b": 3_000, "/data/c d": 9_999}


@st.composite
def _syscalls(draw):
    """Random open/read/lseek/pread64 calls of a few processes, with the rows they must give."""
    n = draw(st.integers(1, 40))
    fds: dict[int, dict[int, list]] = {}  # pid → fd → [path, pos]
    lines, expected = [f'100 0.000000 chroot("{ROOT}") = 0'], []
    for i in range(n):
        ts = f"{1 + i * 0.001:.6f}"
        pid = draw(st.sampled_from([100, 200, 300]))
        table = fds.setdefault(pid, {})
        action = draw(st.sampled_from(["open", "read", "lseek", "pread"])) if table else "open"
        if action == "open":
            path = draw(st.sampled_from(sorted(_FILES)))
            fd = min(set(range(3, 64)) - set(table))
            table[fd] = [path, 0]
            host = f"{ROOT}{path}".replace(" ", "\\x20")
            lines.append(f'{pid} {ts} openat(AT_FDCWD<{ROOT}>, "{path}", O_RDONLY) = {fd}<{host}>')
            expected.append(("open", path, 0, 0))
            continue
        fd = draw(st.sampled_from(sorted(table)))
        path, pos = table[fd]
        size = _FILES[path]
        host = f"{ROOT}{path}".replace(" ", "\\x20")
        if action == "read":
            want = draw(st.integers(1, 20_000))
            got = max(0, min(want, size - pos))
            lines.append(f'{pid} {ts} read({fd}<{host}>, ""..., {want}) = {got}')
            if got:
                expected.append(("read", path, pos, got))
            table[fd][1] = pos + got
        elif action == "lseek":
            to = draw(st.integers(0, size))
            lines.append(f"{pid} {ts} lseek({fd}<{host}>, {to}, SEEK_SET) = {to}")
            table[fd][1] = to
        else:
            off = draw(st.integers(0, size))
            want = draw(st.integers(1, 20_000))
            got = max(0, min(want, size - off))
            lines.append(f'{pid} {ts} pread64({fd}<{host}>, ""..., {want}, {off}) = {got}')
            if got:
                expected.append(("read", path, off, got))
    return lines, expected


@settings(max_examples=200, deadline=None)
@given(_syscalls())
def test_offsets_follow_every_process_position(case) -> None:
    lines, expected = case
    rows = parse_strace(lines, ROOT).rows
    assert [(r.op, r.path, r.offset, r.size) for r in rows] == expected


@pytest.mark.root
@pytest.mark.usefixtures("needs_root")
def test_record_can_report_a_timeout_instead_of_raising(mini_rootfs: Path) -> None:
    """As run_in_rootfs does (lab.pull records every command this way): the accesses made until the
    timeout are kept, the run says it timed out, and nothing is left running."""
    from soci_lab.errors import ReadinessTimeout
    from soci_lab.workload import processes_in

    rec = record_trace(mini_rootfs, ["/bin/sh", "-c", "cat /data/hello.txt; exec sleep 300"], "line:never", 1.0,
                       raise_on_timeout=False)
    assert rec.run.timed_out and not rec.run.ready and rec.run.cmd_s is None
    assert any(r.op == "read" and r.path == "/data/hello.txt" and r.size == 14 for r in rec.trace)
    with pytest.raises(ReadinessTimeout):
        record_trace(mini_rootfs, ["/bin/sleep", "300"], "exit", 0.3)
    assert processes_in(mini_rootfs) == []


def test_strace_durations_give_each_recorded_call_its_latency() -> None:
    """``strace -T``: each row carries its call's time in the kernel (a split call's on its resumed half),
    and the annotation of the returned descriptor is not swallowed by it."""
    log = f"""\
100 1000.000000 chroot("{ROOT}") = 0 <0.000005>
100 1000.001000 openat(AT_FDCWD<{ROOT}>, "/data/f", O_RDONLY) = 3<{ROOT}/data/f> <0.000012>
100 1000.001100 read(3<{ROOT}/data/f>, <unfinished ...>
101 1000.001150 openat(AT_FDCWD<{ROOT}>, "/data/g", O_RDONLY) = 4<{ROOT}/data/g> <0.000020>
100 1000.041100 <... read resumed>""..., 4096) = 4096 <0.040000>
100 1000.041200 newfstatat(AT_FDCWD<{ROOT}>, "/missing", 0x7ffe, 0) = -1 ENOENT (No such file) <0.000003>
"""
    conv = parse_strace(log.splitlines(), ROOT)
    got = [(r.op, r.path, r.offset, r.size, d) for r, d in zip(conv.rows, conv.durations, strict=True)]
    assert got == [
        ("open", "/data/f", 0, 0, 0.000012),
        ("open", "/data/g", 0, 0, 0.00002),
        ("read", "/data/f", 0, 4096, 0.04),
    ]
    assert conv.rows[2].t_s == pytest.approx(0.0011)  # the read started when it was called


@pytest.mark.root
@pytest.mark.usefixtures("needs_root")
def test_recorded_reads_last_as_long_as_their_calls(mini_rootfs: Path) -> None:
    from soci_lab.events import EventRecorder

    events = EventRecorder(strategy="local")
    record_trace(mini_rootfs, ["/bin/cat", "/data/file.bin"], "exit", 20, recorder=events)
    reads = events.to_frame().query("kind == 'file_read' and path == '/data/file.bin'")
    assert len(reads) >= 1
    assert (reads["t_end"] >= reads["t_start"]).all() and (reads["t_end"] > reads["t_start"]).any()


def test_recording_without_strace_says_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no strace on this PATH
    with pytest.raises(WorkloadError, match=r"needs strace, which is not installed \(apt-get install strace"):
        record_trace(tmp_path, ["/bin/true"], "exit", 5)
