"""Workloads: what runs on top of a rootfs — replay an access trace, or run a real command and record one.

- ``Trace``/``TraceRow``, ``load_trace``/``save_trace``/``parse_trace`` — the ``t_s,op,path,offset,size``
  CSV of cli.md, validated (``trace.py``);
- ``replay_trace(rootfs, trace, speed=None|1.0, recorder=...)`` → ``ReplayResult`` (``replay.py``);
- ``Readiness`` (``exit``, ``line:REGEX``, ``path:/P``) — when startup is over (``readiness.py``);
- ``RunningWorkload``/``run_in_rootfs(rootfs, cmd, readiness, timeout)`` → ``RunResult``: chroot with
  ``/proc``, ``/dev``, ``/sys`` mounted, readiness, timings, the process tree killed and everything
  unmounted after (``runner.py``, ``mounts.py``);
- ``record_trace(rootfs, cmd, readiness, ...)`` → ``Recording``: strace plus mapped pages (``record.py``,
  ``strace.py``, ``pagemap.py``);
- ``trace_from_events(events)`` — a trace from ``file_read``/``file_op`` events of any layer (``fromevents.py``);
- ``resolve_in_root`` — symlinks followed inside a rootfs, never out of it (``resolve.py``);
- ``pagecache.evict``/``resident_ranges``/``resident_bytes`` — a trace-free check of what a run read from a
  cold page cache (``pagecache.py``).
"""

from .fromevents import trace_from_events
from .mounts import DEFAULT_MOUNTS, chroot_mounts, mounts_under
from .readiness import Readiness
from .record import Recording, record_trace
from .replay import ReplayResult, replay_trace
from .resolve import resolve_in_root
from .runner import RunningWorkload, RunResult, processes_in, run_in_rootfs
from .strace import parse_strace, strace_argv
from .trace import HEADER, OPS, Trace, TraceRow, format_trace, load_trace, merge_ranges, parse_trace, save_trace

__all__ = [
    "DEFAULT_MOUNTS",
    "HEADER",
    "OPS",
    "Readiness",
    "Recording",
    "ReplayResult",
    "RunResult",
    "RunningWorkload",
    "Trace",
    "TraceRow",
    "chroot_mounts",
    "format_trace",
    "load_trace",
    "merge_ranges",
    "mounts_under",
    "parse_strace",
    "parse_trace",
    "processes_in",
    "record_trace",
    "replay_trace",
    "resolve_in_root",
    "run_in_rootfs",
    "save_trace",
    "strace_argv",
    "trace_from_events",
]
