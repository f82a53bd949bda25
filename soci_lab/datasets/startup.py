"""A dataset's startup: record its access trace and the fraction of the image it reads (Slacker's 6.4%).

:func:`record_startup` runs the recipe's command on a throw-away copy of the built rootfs (a database
writes its pid file and WAL; the cached rootfs must stay as built) under :func:`soci_lab.workload.record_trace`
until the recipe's readiness rule holds. Rows on paths the image does not have — files the workload
made itself (a pid file, a lock) — are left out: they are not image data and a replay on a fresh image
could not do them. :func:`startup_stats` turns the trace into numbers:

- ``bytes_read``: distinct file bytes the startup read — ``read``/``pread`` calls plus pages touched through
  ``mmap`` (program, shared libraries), each byte counted once;
- ``bytes_read_syscalls``/``fraction_read_syscalls``: the same from ``read``/``pread`` calls alone — a lower
  bound (mapped pages left out; fault-around and read-ahead make the mapped part an estimate, not a count);
- ``bytes_resident_cold``/``fraction_resident_cold`` (with ``cold=True``): a check that needs no trace — the
  copy's files are evicted from the page cache before the run (:mod:`soci_lab.workload.pagecache`) and at
  readiness the bytes of them back in memory are counted: what a cold disk delivered, read-ahead included
  (``read_ahead_kb`` of the disk is recorded with it: with a large window this is an upper bound);
- ``fraction_read`` = ``bytes_read / image_bytes``, the image's *uncompressed* size (the sum of its layer
  tars, as Slacker divides by the image's data); ``fraction_of_rootfs_files`` divides by the file bytes of
  the final rootfs instead (no tar headers, no files hidden by later layers).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..workload import Recording, Trace, record_trace, resolve_in_root, save_trace
from ..workload.pagecache import evict, read_ahead_kb, resident_bytes
from .build import DatasetBuild


def _regular_files(root: Path) -> list[str]:
    """Host paths of the regular files of a rootfs (not under dev, proc, sys)."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d not in ("dev", "proc", "sys")]
        for f in filenames:
            p = os.path.join(dirpath, f)
            if stat.S_ISREG(os.lstat(p).st_mode):
                out.append(p)
    return out


def in_image(rootfs: str | os.PathLike[str], path: str) -> bool:
    """Whether ``path`` exists in the image's rootfs (rather than being made by the workload at run time)."""
    try:
        return os.path.lexists(resolve_in_root(rootfs, path, follow_last=False))
    except OSError:
        return False


def startup_stats(trace: Trace, built: DatasetBuild) -> dict[str, Any]:
    """The startup numbers of ``trace`` against ``built``'s sizes (see the module docstring)."""
    read = trace.bytes_read()
    by_op: dict[str, int] = {}
    for row in trace:
        by_op[row.op] = by_op.get(row.op, 0) + 1
    return {
        "name": built.name,
        "bytes_read": read,
        "files_read": len(trace.read_ranges()),
        "paths_touched": len(trace.paths()),
        "rows": len(trace),
        "ops": dict(sorted(by_op.items())),
        "image_bytes": built.image_bytes,
        "compressed_bytes": built.compressed_bytes,
        "rootfs_file_bytes": built.rootfs_file_bytes,
        "fraction_read": read / built.image_bytes if built.image_bytes else None,
        "fraction_of_rootfs_files": read / built.rootfs_file_bytes if built.rootfs_file_bytes else None,
    }


def record_startup(
    built: DatasetBuild,
    *,
    trace_out: str | os.PathLike[str] | None = None,
    json_out: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    cold: bool = True,
) -> tuple[Recording, dict[str, Any]]:
    """Record the startup of ``built`` (on a copy of its rootfs); write the trace CSV and startup JSON when
    asked. Returns the recording and the JSON document."""
    recipe = built.recipe
    resident: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix=f"soci-lab-startup-{os.getpid()}-{built.name}-") as tmp:
        copy = Path(tmp) / "rootfs"
        subprocess.run(["cp", "-a", "--one-file-system", built.rootfs, str(copy)], check=True)
        files = _regular_files(copy) if cold else []
        ra_kb = read_ahead_kb(str(copy))
        if cold:
            evict(files)

        def measure(_w: object) -> None:
            resident.update(resident_bytes(files))

        try:
            env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                   "HOME": "/root", **recipe["env"]}
            rec = record_trace(copy, recipe["cmd"], recipe["readiness"], timeout or recipe["timeout_s"],
                               user=recipe["user"], env=env, cwd=recipe["cwd"], on_ready=measure if cold else None)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
    trace = Trace(r for r in rec.trace if in_image(built.rootfs, r.path))
    dropped = len(rec.trace) - len(trace)
    rec = dataclasses.replace(rec, trace=trace)
    doc = startup_stats(trace, built)
    doc.update(
        cmd=list(recipe["cmd"]),
        readiness=recipe["readiness"],
        cmd_s=rec.run.cmd_s,
        mapped_pages=rec.mapped_pages,
        mapped_bytes=rec.mapped_bytes,
        bytes_read_syscalls=rec.syscall_bytes_read,
        fraction_read_syscalls=rec.syscall_bytes_read / built.image_bytes if built.image_bytes else None,
        syscalls=rec.syscalls,
        rows_on_runtime_files=dropped,
        bytes_resident_cold=sum(resident.values()) if cold else None,
        fraction_resident_cold=sum(resident.values()) / built.image_bytes if cold and built.image_bytes else None,
        read_ahead_kb=ra_kb,
        manifest_digest=built.manifest_digest,
        dataset_key=built.key,
        layers=[{"name": lay["name"], "uncompressed_size": lay["uncompressed_size"], "size": lay["size"]}
                for lay in built.layers],
        packages={p: built.packages[p] for p in sorted(built.packages)
                  if p in {"python3", "python3-pandas", "python3-numpy", "nodejs", "postgresql", "dash", "base-files"}
                  or p.startswith("postgresql-1")},
        suite={k: built.suite[k] for k in ("name", "arch", "date") if k in built.suite},
        recorded=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        method="strace -f (read/pread/open/stat/readdir/readlink) + /proc/PID/pagemap of mmapped files at readiness",
    )
    if trace_out is not None:
        Path(trace_out).parent.mkdir(parents=True, exist_ok=True)
        save_trace(trace, trace_out)
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return rec, doc
