"""Replay an access trace against a mounted rootfs — any directory: a FUSE/overlay mount or a plain tree.

Each row is performed for real (``open``, ``pread`` of exactly ``[offset, offset + size)``, ``lstat``/``stat``,
a directory listing, ``readlink``), with paths resolved inside the rootfs (:mod:`.resolve`), so a lazy
mount sees the same requests the recorded workload made. With ``speed=None`` rows run back to back (as
fast as possible); with ``speed=1.0`` each row waits until its ``t_s`` (``speed=2.0``: twice as fast).

Events go to an optional :class:`~soci_lab.events.EventRecorder`: one ``file_read`` per read (``path``,
``bytes`` actually read, ``attrs.offset``, ``attrs.size`` asked for), one ``file_op`` per other row
(``attrs.op``), and one ``workload`` event spanning the whole replay. A failing row (missing file, short
file) is recorded with ``ok=False`` and the replay goes on: a trace from one image replayed on another
should show what is missing, not stop at the first difference.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..events import EventRecorder
from .resolve import resolve_in_root
from .trace import Trace, TraceRow

ReadSink = Callable[[TraceRow, bytes], None]


@dataclass
class ReplayResult:
    """What a replay did: counts, distinct and total bytes, wall time, the first errors."""

    rows: int = 0
    ok: int = 0
    failed: int = 0
    bytes_read: int = 0  #: total bytes returned by reads (repeats counted)
    files_read: int = 0  #: distinct paths read
    duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)  #: first 20 failures, "line: message"

    def to_json(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "ok": self.ok,
            "failed": self.failed,
            "bytes_read": self.bytes_read,
            "files_read": self.files_read,
            "duration_s": self.duration_s,
            "errors": list(self.errors),
        }


class _Files:
    """Open descriptors by host path, kept open across rows as a process would keep them."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def get(self, host: str) -> int:
        fd = self.fds.get(host)
        if fd is None:
            fd = os.open(host, os.O_RDONLY | os.O_CLOEXEC)
            self.fds[host] = fd
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _do_row(root: str, row: TraceRow, files: _Files) -> tuple[int, bytes | None]:
    """Perform one row; returns (bytes count for the event, data for reads)."""
    if row.op == "read":
        fd = files.get(resolve_in_root(root, row.path))
        data = os.pread(fd, row.size, row.offset)
        return len(data), data
    if row.op == "open":
        files.get(resolve_in_root(root, row.path))
        return 0, None
    if row.op == "stat":
        os.lstat(resolve_in_root(root, row.path))
        return 0, None
    if row.op == "readdir":
        with os.scandir(resolve_in_root(root, row.path)) as it:
            return sum(1 for _ in it), None
    if row.op == "readlink":
        return len(os.readlink(resolve_in_root(root, row.path, follow_last=False))), None
    raise ValueError(f"unknown op {row.op!r}")  # Trace validation makes this unreachable


def replay_trace(
    rootfs: str | os.PathLike[str],
    trace: Trace | Iterable[TraceRow],
    *,
    speed: float | None = None,
    recorder: EventRecorder | None = None,
    on_read: ReadSink | None = None,
    strict_size: bool = False,
) -> ReplayResult:
    """Replay ``trace`` against the tree at ``rootfs``; see the module docstring.

    ``on_read(row, data)`` receives the bytes of every read (tests compare them with direct reads).
    ``strict_size=True`` counts a short read (fewer bytes than ``size``) as a failure.
    """
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be > 0 or None, not {speed}")
    rows = trace if isinstance(trace, Trace) else Trace(trace)
    root = os.path.abspath(os.fspath(rootfs))
    if not Path(root).is_dir():
        raise FileNotFoundError(f"rootfs {root} is not a directory")
    result = ReplayResult()
    files = _Files()
    read_paths: set[str] = set()
    t_origin = time.monotonic()
    w_start = recorder.now() if recorder else 0.0
    try:
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            if speed is not None:
                delay = t_origin + row.t_s / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            t0 = recorder.now() if recorder else 0.0
            error: str | None = None
            nbytes = 0
            try:
                nbytes, data = _do_row(root, row, files)
                if data is not None:
                    if strict_size and len(data) != row.size:
                        error = f"short read: {len(data)} of {row.size} bytes at {row.offset}"
                    if on_read is not None:
                        on_read(row, data)
            except OSError as exc:
                error = f"{exc.strerror or exc}: {row.path}"
            result.rows += 1
            if error is None:
                result.ok += 1
            else:
                result.failed += 1
                if len(result.errors) < 20:
                    result.errors.append(f"line {line}: {row.op} {error}")
            if row.op == "read":
                result.bytes_read += nbytes
                if nbytes:
                    read_paths.add(row.path)
            if recorder is not None:
                if row.op == "read":
                    recorder.emit(
                        "file_read", t0, path=row.path, nbytes=nbytes, ok=error is None, error=error,
                        offset=row.offset, size=row.size, trace_t_s=row.t_s,
                    )
                else:
                    recorder.emit(
                        "file_op", t0, path=row.path, ok=error is None, error=error, op=row.op, result=nbytes,
                        trace_t_s=row.t_s,
                    )
    finally:
        files.close()
        result.duration_s = time.monotonic() - t_origin
        result.files_read = len(read_paths)
        if recorder is not None:
            recorder.emit(
                "workload", w_start, ok=result.failed == 0, nbytes=result.bytes_read,
                error=result.errors[0] if result.errors else None,
                mode="replay", speed=speed, rows=result.rows, failed=result.failed,
            )
    return result
