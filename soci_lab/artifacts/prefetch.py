"""Prefetch inputs for ``index create``: a list of paths, or an access trace (``t_s,op,path,offset,size``).

A trace's ``read`` rows become ``(path, offset, size)`` accesses; the pure builder
(:func:`soci_lab.ztoc.index.prefetch_artifacts`) turns each into the range of spans the read touches in the
top-most layer holding that path, merged per layer. Other ops (``open``, ``stat``, ``readdir``,
``readlink``) read no file data and add nothing. The reader is strict: a malformed row is one
:class:`~soci_lab.errors.TraceFormatError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import TraceFormatError

TRACE_HEADER = ("t_s", "op", "path", "offset", "size")
#: a trace that keeps each call's duration (``soci_lab.workload.trace.HEADER_TIMED``): read, its column ignored
TRACE_HEADER_TIMED = (*TRACE_HEADER, "dur_s")
TRACE_OPS = frozenset({"open", "read", "stat", "readdir", "readlink"})

Access = str | tuple[str, int, int]


def trace_accesses(text: str, name: str = "<trace>") -> list[tuple[str, int, int]]:
    """The ``(path, offset, size)`` of every non-empty ``read`` row of trace CSV ``text``, in file order."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise TraceFormatError(f"{name}: empty trace, expected the header {','.join(TRACE_HEADER)}") from None
    except csv.Error as exc:
        raise TraceFormatError(f"{name} line 1: {exc}") from None
    columns = tuple(h.strip() for h in header)
    if columns not in (TRACE_HEADER, TRACE_HEADER_TIMED):
        raise TraceFormatError(
            f"{name} line 1: header must be {','.join(TRACE_HEADER)} (optionally ,dur_s), not {','.join(header)}"
        )
    out: list[tuple[str, int, int]] = []
    try:
        for row in reader:
            if not row:
                continue
            where = f"{name} line {reader.line_num}"
            if len(row) != len(columns):
                raise TraceFormatError(f"{where}: expected {len(columns)} fields, got {len(row)}")
            _t, op, path, off_text, size_text = row[:5]
            if op not in TRACE_OPS:
                raise TraceFormatError(f"{where}: op must be one of {', '.join(sorted(TRACE_OPS))}, not {op!r}")
            if not path.startswith("/"):
                raise TraceFormatError(f"{where}: path must be absolute, not {path!r}")
            try:
                float(_t)
                offset, size = int(off_text), int(size_text)
            except ValueError:
                raise TraceFormatError(f"{where}: t_s, offset and size must be numbers") from None
            if offset < 0 or size < 0:
                raise TraceFormatError(f"{where}: offset and size must be >= 0")
            if op == "read" and size > 0:
                out.append((path, offset, size))
    except csv.Error as exc:
        raise TraceFormatError(f"{name} line {reader.line_num}: {exc}") from None
    return out


def load_trace_accesses(path: str | os.PathLike[str]) -> list[tuple[str, int, int]]:
    """:func:`trace_accesses` of a trace file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        raise TraceFormatError(f"{p}: no such trace file") from None
    return trace_accesses(text, str(p))


def prefetch_accesses(
    paths: Iterable[str] | None = None, trace: str | os.PathLike[str] | None = None
) -> list[Access] | None:
    """Paths (whole files) and the reads of a trace file, or None when neither is given (no prefetch)."""
    if paths is None and trace is None:
        return None
    out: list[Access] = list(paths or ())
    if trace is not None:
        out.extend(load_trace_accesses(trace))
    return out


__all__ = ["TRACE_HEADER", "load_trace_accesses", "prefetch_accesses", "trace_accesses"]
