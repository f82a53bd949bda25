"""The timeline (Gantt) of one run: what each layer, chunk and span was doing, and when.

Rows: one "run" row for image-wide steps (index fetch, mount, workload), then per layer (in the order
the layer was first touched) one row per activity that layer had — ``download`` (whole-blob
downloads), ``chunks`` (ranged chunk downloads), ``spans`` (span fetches, verifies, decompressions,
background fetches and prefetches), ``unpack`` (verify, decompress, apply) and ``index`` (zTOC fetch).
Overlapping events in one row are stacked in sub-rows, so concurrent chunks or spans stay visible.
Every event of a :data:`GANTT_KINDS` kind is exactly one bar (one path of the kind's
``PolyCollection``, whose gid is ``gantt:<kind>``); kinds are told apart by hatch and shade;
``ready`` is a vertical line and file reads are tick marks in a "reads" row.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .style import figure_and_axes, note_empty

#: Row (activity) of each kind drawn as a bar.
ROW_OF_KIND: dict[str, str] = {
    "index_fetch": "index",
    "ztoc_fetch": "index",
    "mount": "run",
    "workload": "run",
    "blob_download": "download",
    "chunk_download": "chunks",
    "span_fetch": "spans",
    "span_verify": "spans",
    "span_decompress": "spans",
    "bg_fetch": "spans",
    "prefetch": "spans",
    "verify": "unpack",
    "decompress": "unpack",
    "apply": "unpack",
}
GANTT_KINDS: frozenset[str] = frozenset(ROW_OF_KIND)
_ROW_ORDER = ["index", "download", "chunks", "spans", "unpack"]

#: (grey level, hatch) per kind: distinct in black and white.
KIND_LOOK: dict[str, tuple[str, str]] = {
    "index_fetch": ("0.85", "++"),
    "ztoc_fetch": ("0.85", "xx"),
    "mount": ("0.95", ""),
    "workload": ("0.6", ".."),
    "blob_download": ("0.35", "//"),
    "chunk_download": ("0.5", "\\\\"),
    "span_fetch": ("0.3", "||"),
    "span_verify": ("0.75", "--"),
    "span_decompress": ("0.6", "oo"),
    "bg_fetch": ("0.45", "//"),
    "prefetch": ("0.65", "xx"),
    "verify": ("0.8", "..."),
    "decompress": ("0.55", "OO"),
    "apply": ("0.9", "\\\\\\"),
}


def short_layer(layer: Any) -> str:
    """``sha256:0123456789ab…`` → ``0123456789ab``; other names unchanged (at most 16 characters)."""
    text = str(layer)
    if ":" in text:
        text = text.split(":", 1)[1]
    return text[:12] if len(text) > 16 else text


def timeline_events(events: pd.DataFrame) -> pd.DataFrame:
    """The events drawn as bars, with their ``row`` label and ``lane`` (sub-row) added."""
    frame = events[events["kind"].isin(GANTT_KINDS)].copy()
    if not len(frame):
        frame["row"] = pd.Series(dtype=object)
        frame["lane"] = pd.Series(dtype="int64")
        return frame
    first_touch = frame[frame["layer"].notna()].groupby("layer", sort=False)["t_start"].min().sort_values()
    layer_rank = {layer: i for i, layer in enumerate(first_touch.index)}

    def row_key(kind: str, layer: Any) -> tuple[int, int, str]:
        activity = ROW_OF_KIND[kind]
        if layer is None or activity == "run":
            return (-1, 0 if activity == "run" else 1, "run" if activity == "run" else "image index")
        return (layer_rank[layer], _ROW_ORDER.index(activity), f"{short_layer(layer)} {activity}")

    keys = [row_key(k, layer) for k, layer in zip(frame["kind"], frame["layer"], strict=True)]
    frame["_key"] = keys
    frame["row"] = [k[2] for k in keys]
    frame = frame.sort_values(["t_start", "t_end"], kind="stable")
    lanes: list[int] = []
    ends: dict[tuple[int, int, str], list[float]] = {}
    for key, t0, t1 in zip(frame["_key"], frame["t_start"], frame["t_end"], strict=True):
        row_ends = ends.setdefault(key, [])
        for i, end in enumerate(row_ends):
            if end <= t0:
                row_ends[i] = t1
                lanes.append(i)
                break
        else:
            row_ends.append(t1)
            lanes.append(len(row_ends) - 1)
    frame["lane"] = lanes
    return frame


def plot_timeline(run_or_events: Any, ax: Axes | None = None, *, title: str | None = None) -> Figure:
    """The Gantt chart of one run (a :class:`~soci_lab.run.Run` or its events frame).

    x: seconds since the run started; y: one row per layer activity. Returns the figure.
    """
    events = getattr(run_or_events, "events", run_or_events)
    if not isinstance(events, pd.DataFrame):
        from .summary import as_frame

        events = as_frame(events)
    bars = timeline_events(events)
    row_keys = sorted(set(bars["_key"])) if len(bars) else []
    height = min(11.0, 1.6 + 0.28 * (len(row_keys) + 1))
    fig, ax = figure_and_axes(ax, 8.0, height)
    y_of = {key: i for i, key in enumerate(row_keys)}
    n_lanes = bars.groupby("_key")["lane"].max().add(1).to_dict() if len(bars) else {}
    kinds_seen: list[str] = []
    for kind, group in bars.groupby("kind", sort=False):
        grey, hatch = KIND_LOOK[str(kind)]
        kinds_seen.append(str(kind))
        boxes = []
        for key, lane, t0, t1 in zip(group["_key"], group["lane"], group["t_start"], group["t_end"], strict=True):
            h = 0.8 / n_lanes[key]
            y0 = y_of[key] - 0.4 + h * lane + h * 0.025
            y1 = y0 + h * 0.95
            t1 = max(t0, t1)
            boxes.append([(t0, y0), (t1, y0), (t1, y1), (t0, y1)])
        # one collection per kind (one path per event): thousands of spans draw in one call
        bars_of_kind = PolyCollection(
            boxes, facecolors=grey, edgecolors="black", linewidths=0.4, hatch=hatch, gid=f"gantt:{kind}"
        )
        ax.add_collection(bars_of_kind, autolim=True)
    if len(bars):
        ax.autoscale_view()
    reads = events[events["kind"] == "file_read"]
    extra_rows = []
    if len(reads):
        y_reads = len(row_keys)
        extra_rows.append("file reads")
        ax.plot(reads["t_start"], [y_reads] * len(reads), linestyle="none", marker="|", color="black", markersize=8)
    ready = events[(events["kind"] == "ready") & events["ok"]]
    handles: list[Any] = [
        Patch(facecolor=KIND_LOOK[k][0], hatch=KIND_LOOK[k][1], edgecolor="black", label=k.replace("_", " "))
        for k in sorted(kinds_seen, key=list(ROW_OF_KIND).index)
    ]
    if len(ready):
        t_ready = float(ready["t_end"].min())
        handles.append(
            ax.axvline(t_ready, color="black", linestyle="--", linewidth=1.2, label=f"ready {t_ready:.2f} s")
        )
    labels = [key[2] for key in row_keys] + extra_rows
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylim(len(labels) - 0.5, -0.6)
    ax.set_xlabel("time since start of run (s)")
    ax.set_ylabel("layer activity (row per layer and step)")
    ax.grid(axis="x", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if not len(bars) and not len(reads):
        note_empty(ax, "no layer, chunk or span events in this run")
    if title is None:
        strategy = _first(events, "strategy")
        source = _first(events, "source")
        title = f"timeline: {strategy} ({source})" if strategy else "timeline"
    ax.set_title(title, fontsize=10)
    return fig


def _first(events: pd.DataFrame, column: str) -> str:
    values = events[column].dropna()
    return str(values.iloc[0]) if len(values) else ""
