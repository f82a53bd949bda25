"""Workloads that drive a simulated pull: an access trace, "read everything", or a synthetic trace.

A trace is the CSV of cli.md (``t_s,op,path,offset,size``; ops ``open, read, stat, readdir, readlink``).
Replay semantics (``soci_lab.sim.world.World.replay``, :class:`~soci_lab.sim.world.WorkloadParams`): one
thread issues the accesses in order. A trace that keeps each call's duration (the optional ``dur_s``
column, strace ``-T``) replays its gaps: before access ``i`` the workload spends its own time — ``t_s(i)``
minus the end of the calls recorded before it, the time it was not waiting for the file system — on a
core of the host (or thinking, ``WorkloadParams.cpu_fraction``), then access ``i`` pays what this
simulation's file system makes it pay. A trace without durations cannot tell its own time from its recorded
waits: access ``i`` then starts at ``max(workload start + t_s, end of access i-1)``, as it always did.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SimulationError
from .image import ImageModel

OPS = ("open", "read", "stat", "readdir", "readlink")


@dataclass(frozen=True, slots=True)
class Access:
    """One file-system access of a workload."""

    t: float
    op: str
    path: str
    offset: int = 0
    size: int = 0
    dur: float = 0.0  #: how long the recorded call took (0: not known)


def read_trace(path: str | Path) -> list[Access]:
    """Parse a trace CSV (header ``t_s,op,path,offset,size``)."""
    out: list[Access] = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"t_s", "op", "path"} - set(reader.fieldnames or ())
        if missing:
            raise SimulationError(f"{path}: not an access trace (missing columns {', '.join(sorted(missing))})")
        for n, row in enumerate(reader, start=2):
            op = row["op"].strip()
            if op not in OPS:
                raise SimulationError(f"{path}:{n}: unknown op {op!r} (known: {', '.join(OPS)})")
            try:
                dur = float(row.get("dur_s") or 0.0)
                if not dur >= 0 or dur == float("inf"):
                    raise ValueError(f"dur_s must be a finite number >= 0, not {row.get('dur_s')!r}")
                out.append(
                    Access(float(row["t_s"]), op, row["path"], int(row.get("offset") or 0), int(row.get("size") or 0),
                           dur)
                )
            except ValueError as exc:
                raise SimulationError(f"{path}:{n}: {exc}") from None
    return out


def write_trace(accesses: list[Access], path: str | Path) -> Path:
    """Write accesses as a trace CSV (with the ``dur_s`` column when any access has a duration)."""
    path = Path(path)
    timed = any(a.dur > 0 for a in accesses)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["t_s", "op", "path", "offset", "size", *(["dur_s"] if timed else [])])
        for a in accesses:
            w.writerow([f"{a.t:.6f}", a.op, a.path, a.offset, a.size, *([f"{a.dur:.6f}"] if timed else [])])
    return path


def read_everything(image: ImageModel, read_size: int = 0) -> list[Access]:
    """Open and read every visible regular file, in layer and stream order (``read_size`` 0: one read)."""
    files = sorted((f for f in image.view().values() if f.type == "reg"), key=lambda f: (f.layer, f.offset))
    out: list[Access] = []
    for f in files:
        out.append(Access(0.0, "open", f.path))
        out.extend(_reads(f.path, f.size, read_size))
    return out


def synthetic_trace(
    image: ImageModel,
    fraction: float = 0.05,
    *,
    seed: int = 0,
    read_size: int = 256 * 1024,
    cluster: int = 24,
    max_accesses: int | None = None,
) -> list[Access]:
    """A start-up-like trace reading about ``fraction`` of the image's readable bytes.

    Files are read in clusters of up to ``cluster`` neighbours in stream order (a directory's worth: an
    application loading a package), clusters picked at random across layers; each file is ``stat``-ed,
    opened and read in ``read_size`` pieces. The locality is what makes span size matter (SOCI #114).
    """
    if not 0 <= fraction <= 1:
        raise SimulationError(f"fraction must be in [0, 1], not {fraction}")
    rng = np.random.default_rng(seed)
    files = sorted((f for f in image.view().values() if f.type == "reg"), key=lambda f: (f.layer, f.offset))
    if not files:
        return []
    sizes = np.array([f.size for f in files], dtype=np.int64)
    target = fraction * float(sizes.sum())
    taken = np.zeros(len(files), dtype=bool)
    got = 0.0
    out: list[Access] = []
    order = rng.permutation(len(files))
    for start in order:
        if got >= target or (max_accesses is not None and len(out) >= max_accesses):
            break
        if taken[start]:
            continue
        n = int(rng.integers(1, cluster + 1))
        for k in range(start, min(len(files), start + n)):
            if taken[k]:
                continue
            taken[k] = True
            f = files[k]
            out.append(Access(0.0, "stat", f.path))
            out.append(Access(0.0, "open", f.path))
            out.extend(_reads(f.path, f.size, read_size))
            got += f.size
            if got >= target:
                break
    if max_accesses is not None:
        out = out[:max_accesses]
    return out


def _reads(path: str, size: int, read_size: int) -> list[Access]:
    if size <= 0:
        return []
    if read_size <= 0 or size <= read_size:
        return [Access(0.0, "read", path, 0, size)]
    return [Access(0.0, "read", path, off, min(read_size, size - off)) for off in range(0, size, read_size)]


def bytes_read(accesses: list[tuple[str, int, int]]) -> int:
    """Distinct bytes covered by ``(path, start, end)`` read intervals."""
    total = 0
    by_path: dict[str, list[tuple[int, int]]] = {}
    for path, a, b in accesses:
        if b > a:
            by_path.setdefault(path, []).append((a, b))
    for ivs in by_path.values():
        ivs.sort()
        cur_a, cur_b = ivs[0]
        for a, b in ivs[1:]:
            if a > cur_b:
                total += cur_b - cur_a
                cur_a, cur_b = a, b
            elif b > cur_b:
                cur_b = b
        total += cur_b - cur_a
    return total


def prefetch_spans_from_trace(
    image: ImageModel, accesses: list[Access], *, touch_end_span: bool = False
) -> dict[int, list[tuple[int, int]]]:
    """The prefetch artifact a trace gives (``index create --prefetch-trace``): per indexed layer, the
    inclusive span ranges its reads touch, merged — what a ``lazy+prefetch`` run resolves before ready."""
    touched: dict[int, set[int]] = {}
    for a in accesses:
        if a.op != "read":
            continue
        f = image.resolve(a.path)
        if f is None or f.type != "reg":
            continue
        layer = image.layers[f.layer]
        off = min(a.offset, f.size)
        size = min(a.size, f.size - off)
        if not layer.indexed or size <= 0:
            continue
        u0 = f.offset + off
        last = layer.span_id(u0 + size) if touch_end_span else layer.span_id(u0 + size - 1)
        touched.setdefault(f.layer, set()).update(range(layer.span_id(u0), last + 1))
    out: dict[int, list[tuple[int, int]]] = {}
    for li, ids in sorted(touched.items()):
        ranges: list[tuple[int, int]] = []
        for i in sorted(ids):
            if ranges and i == ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], i)
            else:
                ranges.append((i, i))
        out[li] = ranges
    return out
