"""An access trace from events: any layer that emits ``file_read``/``file_op`` events (the FUSE file
system, a replay, a recording) gives a ``--trace-out`` file through :func:`trace_from_events`.

``file_read`` events become ``read`` rows (the ``offset`` detail, ``bytes``); ``file_op`` events whose
``op`` detail is one of the trace ops become those rows (the ``result`` detail as size). A frame carries the
details as columns (:mod:`soci_lab.events`), an :class:`Event` in its ``attrs``. ``t_s`` is the event's
``t_start`` minus ``t0`` — by default the start of the earliest ``workload`` event, else of the first
access, and ``dur_s`` its ``t_end - t_start`` (how long the call took). Failed events are left out unless
``keep_failed``: a failed access read nothing.

A lazy run holds accesses at two levels: the workload's own (a replayed trace or a command recorded with
strace: no ``layer``) and its FUSE servers' (``layer`` set, paths relative to the layer's root, sizes
rounded to the kernel's requests). When any workload-level access is present only those are used, so one
access is never taken twice; paths of layer-level events are made absolute (``usr/lib/x`` → ``/usr/lib/x``),
as a trace's paths are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .trace import OPS, Trace, TraceRow

if TYPE_CHECKING:
    import pandas as pd

    from ..events import Event


def _records(events: pd.DataFrame | Iterable[Event]) -> list[dict[str, Any]]:
    """One dict per event with its schema fields and its details (``offset``, ``op``, ``result``)."""
    if hasattr(events, "to_dict") and hasattr(events, "columns"):
        from ..events import detail

        frame: pd.DataFrame = events  # type: ignore[assignment]
        cols = {}
        for key in ("offset", "op", "result"):
            values = detail(frame, key).astype(object)
            cols[key] = values.where(values.notna(), None).tolist()
        recs = frame[["kind", "t_start", "t_end", "path", "bytes", "ok", "layer"]].to_dict("records")
        for i, r in enumerate(recs):
            r["attrs"] = {k: v[i] for k, v in cols.items() if v[i] is not None}
        return recs
    return [{"kind": e.kind, "t_start": e.t_start, "t_end": e.t_end, "path": e.path, "bytes": e.bytes, "ok": e.ok,
             "attrs": e.attrs, "layer": e.layer} for e in events]  # type: ignore[union-attr]


def trace_from_events(events: pd.DataFrame | Iterable[Event], t0: float | None = None, *,
                      keep_failed: bool = False) -> Trace:
    """The :class:`Trace` of the accesses among ``events`` (a DataFrame or Event objects)."""
    recs = _records(events)
    if t0 is None:
        starts = [r["t_start"] for r in recs if r["kind"] == "workload"]
        access = [r["t_start"] for r in recs if r["kind"] in ("file_read", "file_op")]
        t0 = min(starts) if starts else (min(access) if access else 0.0)
    accesses = [r for r in recs if r["kind"] in ("file_read", "file_op") and r.get("path")]
    top = [r for r in accesses if _no_layer(r.get("layer"))]
    rows: list[TraceRow] = []
    for r in top or accesses:
        if not r.get("ok", True) and not keep_failed:
            continue
        attrs = r.get("attrs") or {}
        t = max(0.0, float(r["t_start"]) - t0)
        dur = _duration(r)
        path = "/" + str(r["path"]).lstrip("/")
        if r["kind"] == "file_read":
            rows.append(TraceRow(t, "read", path, int(attrs.get("offset", 0) or 0), int(r["bytes"] or 0), dur))
        elif attrs.get("op") in OPS:
            rows.append(TraceRow(t, str(attrs["op"]), path, 0, int(attrs.get("result", 0) or 0), dur))
    return Trace(rows)


def _duration(r: dict[str, Any]) -> float:
    """The access's duration (``t_end - t_start``, to the microsecond; 0 when unknown)."""
    end = r.get("t_end")
    if end is None or end != end:  # None or NaN
        return 0.0
    return max(0.0, round(float(end) - float(r["t_start"]), 6))


def _no_layer(layer: Any) -> bool:
    """Whether an event's ``layer`` is empty (None, NaN or "")."""
    return layer is None or layer == "" or (isinstance(layer, float) and layer != layer)
