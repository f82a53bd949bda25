"""Record the file accesses of a command chrooted in any rootfs (a plain tree, an overlay, a FUSE mount).

``record_trace`` runs the command under ``strace`` (:mod:`.strace`) through :class:`.RunningWorkload`, so
the same mounts, user, readiness rule and clean-up apply; at readiness, while the processes still run,
it also collects the pages they touched through ``mmap`` (:mod:`.pagemap`) and adds them as ``read``
rows at the time the file was first opened or mapped. Startup ends at readiness: the trace holds what
happened before it (the command is stopped right after). Pages of processes that exited or ``exec``-ed
before readiness are not seen: the mapped part covers the processes alive at readiness.

For a command whose readiness is ``exit``, the processes are gone by then, so mapped pages cannot be
seen: the trace then holds ``read()`` calls only and :attr:`Recording.mapped_pages` is ``False``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ReadinessTimeout, WorkloadError
from ..events import EventRecorder
from .mounts import DEFAULT_MOUNTS
from .pagemap import mapped_file_pages
from .readiness import Readiness
from .runner import RunningWorkload, RunResult, processes_in
from .strace import PSEUDO_PREFIXES, parse_strace, strace_argv
from .trace import Trace, TraceRow, merge_ranges, save_trace


@dataclass
class Recording:
    """A recorded trace and how it was made."""

    trace: Trace
    run: RunResult
    mapped_pages: bool  #: whether pages touched through mmap were collected (processes alive at readiness)
    mapped_bytes: int  #: bytes of those pages
    syscalls: int  #: traced calls seen
    syscall_bytes_read: int = 0  #: distinct bytes of ``read``/``pread`` calls alone (a lower bound)

    def run_json(self) -> dict[str, object]:
        """The keys ``soci-lab run --json`` adds (cli.md): ``cmd_s, total_s, exit_code, files_read, bytes_read``."""
        return {
            "cmd_s": self.run.cmd_s,
            "total_s": self.run.total_s,
            "exit_code": self.run.exit_code,
            "files_read": len(self.trace.read_ranges()),
            "bytes_read": self.trace.bytes_read(),
        }

    def to_json(self) -> dict[str, object]:
        return {
            "rows": len(self.trace),
            "bytes_read": self.trace.bytes_read(),
            "files": len(self.trace.paths()),
            "mapped_pages": self.mapped_pages,
            "mapped_bytes": self.mapped_bytes,
            "syscall_bytes_read": self.syscall_bytes_read,
            "syscalls": self.syscalls,
            "run": self.run.to_json(),
        }


def record_trace(
    rootfs: str | os.PathLike[str],
    cmd: Sequence[str],
    readiness: Readiness | str = "exit",
    timeout: float = 120.0,
    *,
    out: str | os.PathLike[str] | None = None,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str = "/",
    mounts: tuple[str, ...] = DEFAULT_MOUNTS,
    recorder: EventRecorder | None = None,
    strace_log: str | os.PathLike[str] | None = None,
    settle_s: float = 0.25,
    on_ready: Callable[[RunningWorkload], None] | None = None,
    raise_on_timeout: bool = True,
) -> Recording:
    """Run ``cmd`` in ``rootfs`` under strace until ``readiness``; return (and save to ``out``) its trace.

    ``strace_log`` keeps the raw strace output at that path (for debugging); otherwise it lives in a
    temporary directory removed afterwards. Mapped pages are collected at readiness and again ``settle_s``
    later (a process caught in ``exec`` at readiness has no mappings yet); a service idle after readiness
    adds nothing in between. ``on_ready(workload)`` is called at readiness too, after that first look,
    while the processes still run. Raises :class:`WorkloadError` if the command fails before readiness,
    and :class:`ReadinessTimeout` when it is not ready within ``timeout`` — unless ``raise_on_timeout`` is
    false: then the command is stopped, the trace holds what it did until then and ``run.timed_out`` is set
    (as :func:`~.runner.run_in_rootfs` does).
    """
    if shutil.which("strace") is None:
        raise WorkloadError("recording a command's file accesses needs strace, which is not installed "
                            "(apt-get install strace; scripts/setup.sh installs it)")
    root = os.path.realpath(os.fspath(rootfs))
    rule = readiness if isinstance(readiness, Readiness) else Readiness.parse(readiness)
    mapped: dict[str, list[tuple[int, int]]] = {}
    alive_at_ready = False

    def snapshot(w: RunningWorkload) -> None:
        nonlocal alive_at_ready, mapped
        pids = processes_in(root)
        alive_at_ready = bool(pids)
        mapped = mapped_file_pages(pids, root)
        if on_ready is not None:
            on_ready(w)

    with tempfile.TemporaryDirectory(prefix=f"soci-lab-record-{os.getpid()}-") as tmp:
        log_path = Path(strace_log) if strace_log else Path(tmp) / "strace.log"
        w = RunningWorkload(
            root, cmd, rule, user=user, env=env, cwd=cwd, mounts=mounts, recorder=recorder,
            wrapper=strace_argv(str(log_path)),
        )
        timed_out = False
        with w:
            try:
                w.wait_ready(timeout, snapshot)
            except ReadinessTimeout:
                if raise_on_timeout:
                    raise
                timed_out = True
            assert w.proc is not None
            exit_code = w.proc.poll()
            if settle_s > 0 and exit_code is None and not timed_out:
                # a second look once the processes settle: a process caught mid-exec at readiness
                time.sleep(settle_s)
                later = mapped_file_pages(processes_in(root), root)
                for path, ranges in later.items():
                    mapped[path] = merge_ranges(mapped.get(path, []) + ranges)
        # strace flushes when it ends: the log is complete only after stop()
        with open(log_path, encoding="utf-8", errors="surrogateescape") as f:
            conv = parse_strace(f, root)
    if conv.t0 is None:
        raise WorkloadError(f"strace recorded nothing for {' '.join(cmd)}")
    ready_s = w.ready_s if w.ready_s is not None else w.elapsed()
    durations = conv.durations if len(conv.durations) == len(conv.rows) else [0.0] * len(conv.rows)
    kept = [(r, d) for r, d in zip(conv.rows, durations, strict=True) if r.t_s <= ready_s]
    rows = [replace(r, dur_s=round(d, 6)) if d > 0 else r for r, d in kept]  # the trace keeps each call's time
    n_syscall_rows = len(rows)
    syscall_bytes = Trace(rows).bytes_read()
    mapped_bytes = 0
    for host, ranges in mapped.items():
        inside = host[len(root) :]
        if inside.startswith(tuple(p + "/" for p in PSEUDO_PREFIXES)):
            continue  # shared memory in /dev/shm and the like: not image content
        t = conv.first_seen.get(inside, ready_s)
        for start, end in ranges:
            rows.append(TraceRow(round(min(t, ready_s), 6), "read", inside, start, end - start))
            mapped_bytes += end - start
    trace = Trace(rows)
    if recorder is not None:
        _emit_rows(recorder, w, rows, n_syscall_rows, [d for _, d in kept])
    if out is not None:
        save_trace(trace, out)
    run = RunResult(
        cmd=tuple(cmd), readiness=str(rule), ready=w.ready_s is not None, cmd_s=w.ready_s, total_s=w.elapsed(),
        exit_code=exit_code, timed_out=timed_out, output_tail=list(w.tail),
    )
    return Recording(trace, run, alive_at_ready, mapped_bytes, conv.calls, syscall_bytes)


def _emit_rows(
    recorder: EventRecorder, w: RunningWorkload, rows: list[TraceRow], n_syscall_rows: int, durations: list[float]
) -> None:
    """One ``file_read`` (reads) or ``file_op`` event per trace row, at the run's clock: the command's start
    plus the row's ``t_s``, ending when the call returned (strace ``-T``; mapped pages have no duration).
    ``attrs.via`` says ``syscall`` (strace) or ``mmap`` (pages seen in pagemap)."""
    origin = w.event_origin
    for i, r in enumerate(rows):
        via = "syscall" if i < n_syscall_rows else "mmap"
        t = origin + r.t_s
        t_end = t + (durations[i] if i < n_syscall_rows else 0.0)
        if r.op == "read":
            recorder.emit("file_read", t, t_end, path=r.path, nbytes=r.size, offset=r.offset, via=via, recorded=True)
        else:
            recorder.emit("file_op", t, t_end, path=r.path, op=r.op, result=r.size, via=via, recorded=True)
