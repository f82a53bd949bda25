"""Bytes over time: the cumulative network bytes of each run, as the network delivered them.

The bytes counted are exactly those of :func:`soci_lab.analysis.summary.network_events` (ok requests),
each added at its ``t_end``, so every curve ends at the run's ``bytes_fetched``. A marker on each curve
shows the moment the run became ready: for lazy runs most of the curve lies after it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._frames import events_by_run
from .style import figure_and_axes, look, note_empty, run_label
from .summary import network_events

MIB = 1024 * 1024


def bytes_over_time(events: pd.DataFrame) -> pd.DataFrame:
    """Columns ``t_s`` and ``bytes`` (cumulative network bytes), starting at (0, 0), for one run."""
    net, _ = network_events(events)
    net = net[net["ok"]].sort_values("t_end", kind="stable")
    t = np.concatenate(([0.0], net["t_end"].to_numpy(dtype=float)))
    b = np.concatenate(([0], np.cumsum(net["bytes"].to_numpy(dtype=np.int64))))
    return pd.DataFrame({"t_s": t, "bytes": b})


def plot_bytes_over_time(runs: Any, ax: Axes | None = None) -> Figure:
    """Cumulative network bytes against time for each run, overlaid; ready marked on each curve."""
    fig, ax = figure_and_axes(ax, 7.0, 4.0)
    drawn = 0
    for (strategy, source, _run_id), events in events_by_run(runs):
        series = bytes_over_time(events)
        style = look(strategy, source).line()
        every = max(1, len(series) // 6)
        ax.step(
            series["t_s"],
            series["bytes"] / MIB,
            where="post",
            label=run_label(strategy, source),
            markevery=every,
            markersize=4,
            **style,
        )
        ready = events[(events["kind"] == "ready") & events["ok"]]
        if len(ready):
            t_ready = float(ready["t_end"].min())
            before = series[series["t_s"] <= t_ready]["bytes"]
            y = (before.iloc[-1] if len(before) else 0) / MIB
            ax.plot([t_ready], [y], marker=style["marker"], markersize=9, linestyle="none", **_marker_colors(style))
        drawn += 1
    ax.set_xlabel("time since start of run (s)")
    ax.set_ylabel("network bytes, cumulative (MiB)")
    ax.grid(color="0.88", linewidth=0.6)
    if drawn:
        ax.legend(fontsize=8, loc="lower right", title="large marker = ready", title_fontsize=7)
    else:
        note_empty(ax, "no runs")
    ax.set_title("bytes over the network", fontsize=10)
    return fig


def _marker_colors(style: dict[str, Any]) -> dict[str, Any]:
    return {
        "color": style["color"],
        "markerfacecolor": style["markerfacecolor"],
        "markeredgecolor": style["markeredgecolor"],
    }
