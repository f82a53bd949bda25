"""Heatmaps of parameter sweeps: two parameter columns and a metric, one annotated cell per pair.

Sweeps (span size × RTT, bandwidth × strategy, …) come as tidy frames with one row per simulated or real
run. Each cell shows the metric's mean over the rows of that pair, coloured on a greyscale-safe map and
written out as text, so the figure reads in black and white. Axis labels carry units: given explicitly,
or read from a column's suffix (``rtt_ms`` → "rtt (ms)", ``ready_s`` → "time to ready (s)").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..errors import AnalysisError
from .style import SEQUENTIAL_CMAP, figure_and_axes, has_unit, text_color_for

_KNOWN: dict[str, str] = {
    "ready_s": "time to ready (s)",
    "workload_done_s": "time to workload done (s)",
    "total_s": "total time (s)",
    "bytes_fetched": "bytes over the network (bytes)",
    "requests": "requests (count)",
    "bytes_written": "bytes written (bytes)",
    "fraction_read": "fraction of image read (0–1)",
    "span_size": "span size (bytes)",
    "bandwidth": "bandwidth (bytes/s)",
    "rtt": "RTT (s)",
}
_SUFFIX_UNITS: list[tuple[str, str]] = [
    ("_ms", "ms"),
    ("_us", "µs"),
    ("_s", "s"),
    ("_kib", "KiB"),
    ("_mib", "MiB"),
    ("_gib", "GiB"),
    ("_bytes", "bytes"),
    ("_mbit", "Mbit/s"),
    ("_mbps", "Mbit/s"),
    ("_gbit", "Gbit/s"),
    ("_bps", "bytes/s"),
    ("_pct", "%"),
    ("_count", "count"),
    ("_n", "count"),
]


def label_for(column: str) -> str:
    """An axis label with a unit for a column name (explicit units in the name are kept as they are)."""
    if column in _KNOWN:
        return _KNOWN[column]
    if has_unit(column):
        return column
    low = column.lower()
    for suffix, unit in _SUFFIX_UNITS:
        if low.endswith(suffix):
            return f"{column[: -len(suffix)].replace('_', ' ')} ({unit})"
    return f"{column.replace('_', ' ')} (dimensionless)"


def config_value(config: Mapping[str, Any], path: str) -> Any:
    """A value of a nested config by dotted path (``"sim_params.network.rtt"``); None when absent."""
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def sweep_frame(runs: Sequence[Any], params: Mapping[str, str] | Sequence[str]) -> pd.DataFrame:
    """The summary of each run plus parameter columns read from its config, ready for :func:`plot_heatmap`.

    ``params``: column name → dotted config path (``{"rtt_ms": "sim_params.network.rtt_ms"}``), or a list
    of dotted paths (the column is named by the last part). A run whose config lacks a path gets NaN.
    """
    from .summary import summary_frame

    mapping = dict(params) if isinstance(params, Mapping) else {p.rsplit(".", 1)[-1]: p for p in params}
    frame = summary_frame(list(runs))
    by_id = {str(r.run_id): getattr(r, "config", {}) or {} for r in runs}
    for column, path in mapping.items():
        values = [config_value(by_id.get(str(rid), {}), path) for rid in frame["run_id"]]
        frame[column] = [np.nan if v is None else v for v in values]
    return frame


def sweep_table(frame: pd.DataFrame, x: str, y: str, value: str) -> pd.DataFrame:
    """The mean of ``value`` per (``y`` row, ``x`` column), both axes sorted ascending."""
    for col in (x, y, value):
        if col not in frame.columns:
            raise AnalysisError(f"sweep frame has no column {col!r} (columns: {', '.join(map(str, frame.columns))})")
    if not len(frame):
        raise AnalysisError("sweep frame is empty")
    return frame.pivot_table(index=y, columns=x, values=value, aggfunc="mean").sort_index().sort_index(axis=1)


def _fmt_value(v: float, fmt: str | None) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "–"
    if fmt:
        return fmt.format(v)
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _tick(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def plot_heatmap(
    frame: pd.DataFrame,
    x: str,
    y: str,
    value: str,
    ax: Axes | None = None,
    *,
    xlabel: str | None = None,
    ylabel: str | None = None,
    value_label: str | None = None,
    fmt: str | None = None,
    cmap: str = SEQUENTIAL_CMAP,
    title: str | None = None,
) -> Figure:
    """An annotated heatmap of a sweep: ``x`` and ``y`` are parameter columns, ``value`` the metric.

    Labels default to :func:`label_for` of the column names; ``fmt`` is a ``str.format`` pattern for the
    cell text (``"{:.1f}"``). Missing pairs are blank with a dash.
    """
    table = sweep_table(frame, x, y, value)
    labels = {"x": xlabel or label_for(x), "y": ylabel or label_for(y), "v": value_label or label_for(value)}
    for which, text in labels.items():
        if not has_unit(text):
            raise AnalysisError(f"{which} label {text!r} names no unit; write it as 'name (unit)'")
    fig, ax = figure_and_axes(ax, 1.6 + 1.0 * max(3, table.shape[1]), 1.4 + 0.55 * max(3, table.shape[0]))
    data = table.to_numpy(dtype=float)
    masked = np.ma.masked_invalid(data)
    image = ax.imshow(masked, cmap=cmap, aspect="auto", origin="lower")
    ax.set_xticks(range(table.shape[1]), [_tick(v) for v in table.columns])
    ax.set_yticks(range(table.shape[0]), [_tick(v) for v in table.index])
    norm_cmap = image.cmap
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = data[i, j]
            color = "black" if math.isnan(v) else text_color_for(tuple(norm_cmap(image.norm(v))))
            ax.text(j, i, _fmt_value(v, fmt), ha="center", va="center", fontsize=8, color=color)
    ax.set_xlabel(labels["x"])
    ax.set_ylabel(labels["y"])
    colorbar = fig.colorbar(image, ax=ax, shrink=0.9)
    colorbar.set_label(labels["v"])
    ax.set_title(title or f"{labels['v']} by {x} and {y}", fontsize=10)
    return fig
