"""Access traces: the ``t_s,op,path,offset,size`` CSV of cli.md, loaded and saved with validation.

A trace is what a workload did to its root file system, in order: ``t_s`` seconds since the workload
started, ``op`` one of ``open, read, stat, readdir, readlink``, ``path`` absolute inside the rootfs, and for
``read`` the byte range ``[offset, offset + size)``. For the other ops ``offset`` is 0 and ``size`` says how
much the call returned (directory-entry bytes for ``readdir``, target length for ``readlink``, 0 for
``open``/``stat``). A sixth column, ``dur_s``, is optional: how long the call took (strace ``-T``: its time
in the kernel, a FUSE read's span fetch included), written when any row has one, so a replay or the
simulator can tell the workload's own time between calls (``t_s`` of a call minus the end of the one before)
from the time it waited for the file system. The same file feeds ``--trace-out``, ``--trace``, replay and
the prefetch profiles, so it is checked strictly on load: a bad row raises one :class:`TraceFormatError`
naming the file and line.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import TraceFormatError

#: the header of every trace file, in order
HEADER: tuple[str, ...] = ("t_s", "op", "path", "offset", "size")
#: the header of a trace that keeps each call's duration
HEADER_TIMED: tuple[str, ...] = (*HEADER, "dur_s")
#: the closed vocabulary of ``op``
OPS: frozenset[str] = frozenset({"open", "read", "stat", "readdir", "readlink"})


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One file-system access of a workload."""

    t_s: float
    op: str
    path: str
    offset: int = 0
    size: int = 0
    dur_s: float = 0.0  #: how long the call took (0: not known)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first field that breaks the format."""
        if not isinstance(self.t_s, float | int) or not math.isfinite(self.t_s) or self.t_s < 0:
            raise ValueError(f"t_s must be a finite number >= 0, not {self.t_s!r}")
        if self.op not in OPS:
            raise ValueError(f"op must be one of {', '.join(sorted(OPS))}, not {self.op!r}")
        if not self.path.startswith("/") or "\x00" in self.path or "\n" in self.path or "\r" in self.path:
            raise ValueError(f"path must be absolute, one line, without NUL: {self.path!r}")
        if self.offset < 0 or self.size < 0:
            raise ValueError(f"offset and size must be >= 0, not {self.offset}, {self.size}")
        if not isinstance(self.dur_s, float | int) or not math.isfinite(self.dur_s) or self.dur_s < 0:
            raise ValueError(f"dur_s must be a finite number >= 0, not {self.dur_s!r}")


class Trace(Sequence[TraceRow]):
    """An ordered list of :class:`TraceRow` (sorted by ``t_s``, stable), with summary helpers."""

    def __init__(self, rows: Iterable[TraceRow] = ()) -> None:
        self._rows: list[TraceRow] = sorted(rows, key=lambda r: r.t_s)
        for row in self._rows:
            row.check()

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i):  # type: ignore[override]
        return self._rows[i]

    def __iter__(self) -> Iterator[TraceRow]:
        return iter(self._rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trace) and self._rows == other._rows

    def __repr__(self) -> str:
        return f"Trace({len(self)} rows, {self.duration:.3f}s, {self.bytes_read()} bytes read)"

    @property
    def duration(self) -> float:
        """``t_s`` of the last row (0 for an empty trace)."""
        return self._rows[-1].t_s if self._rows else 0.0

    @property
    def timed(self) -> bool:
        """Whether the rows carry their calls' durations (any ``dur_s`` > 0)."""
        return any(r.dur_s > 0 for r in self._rows)

    def paths(self) -> set[str]:
        """Every path the trace touches."""
        return {r.path for r in self._rows}

    def read_ranges(self) -> dict[str, list[tuple[int, int]]]:
        """Per path, the merged ``[start, end)`` byte ranges its ``read`` rows cover."""
        raw: dict[str, list[tuple[int, int]]] = {}
        for r in self._rows:
            if r.op == "read" and r.size > 0:
                raw.setdefault(r.path, []).append((r.offset, r.offset + r.size))
        return {p: merge_ranges(v) for p, v in raw.items()}

    def bytes_read(self) -> int:
        """Distinct bytes read: overlapping and repeated reads of a path count once."""
        return sum(e - s for ranges in self.read_ranges().values() for s, e in ranges)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and merge overlapping or touching ``[start, end)`` ranges."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _parse_row(fields: list[str], where: str, header: tuple[str, ...] = HEADER) -> TraceRow:
    if len(fields) != len(header):
        raise TraceFormatError(f"{where}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}")
    t_text, op, path, off_text, size_text = fields[:5]
    dur_s = 0.0
    if len(fields) > 5:
        try:
            dur_s = float(fields[5])
        except ValueError:
            raise TraceFormatError(f"{where}: dur_s {fields[5]!r} is not a number") from None
    try:
        t_s = float(t_text)
    except ValueError:
        raise TraceFormatError(f"{where}: t_s {t_text!r} is not a number") from None
    try:
        offset, size = int(off_text), int(size_text)
    except ValueError:
        raise TraceFormatError(f"{where}: offset {off_text!r} and size {size_text!r} must be integers") from None
    row = TraceRow(t_s, op, path, offset, size, dur_s)
    try:
        row.check()
    except ValueError as exc:
        raise TraceFormatError(f"{where}: {exc}") from None
    return row


def parse_trace(text: str, name: str = "<trace>") -> Trace:
    """Parse trace CSV text (header required); ``name`` is used in error messages."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise TraceFormatError(f"{name}: empty file, expected the header {','.join(HEADER)}") from None
    except csv.Error as exc:
        raise TraceFormatError(f"{name} line 1: {exc}") from None
    columns = tuple(h.strip() for h in header)
    if columns not in (HEADER, HEADER_TIMED):
        raise TraceFormatError(
            f"{name} line 1: header must be {','.join(HEADER)} (optionally ,dur_s), not {','.join(header)}"
        )
    rows: list[TraceRow] = []
    try:
        for fields in reader:
            if not fields:
                continue
            rows.append(_parse_row(fields, f"{name} line {reader.line_num}", columns))
    except csv.Error as exc:
        raise TraceFormatError(f"{name} line {reader.line_num}: {exc}") from None
    return Trace(rows)


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read and validate a trace CSV file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        raise TraceFormatError(f"{p}: no such trace file") from None
    return parse_trace(text, str(p))


def format_trace(rows: Iterable[TraceRow]) -> str:
    """The CSV text of ``rows`` (validated), header first; ``t_s`` keeps microseconds; the ``dur_s`` column
    only when some row has a duration (a trace without them reads as it always did)."""
    rows = list(rows)
    timed = any(r.dur_s > 0 for r in rows)
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER_TIMED if timed else HEADER)
    for r in rows:
        r.check()
        fields: tuple[object, ...] = (repr(float(r.t_s)), r.op, r.path, r.offset, r.size)
        w.writerow((*fields, repr(float(r.dur_s))) if timed else fields)
    return buf.getvalue()


def save_trace(rows: Iterable[TraceRow], path: str | os.PathLike[str]) -> Path:
    """Write ``rows`` as a trace CSV (atomically: a temp file renamed into place)."""
    p = Path(path)
    text = format_trace(rows)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text, encoding="utf-8", errors="surrogateescape", newline="")
    os.replace(tmp, p)
    return p
