"""The CDF of file-read latencies: how long the workload waited for each read.

In lazy mode a read that misses the span cache waits for a span fetch, so the tail of this curve is
where lazy loading hurts; in eager modes reads only start after the pull, and are fast. A read's latency
is ``t_end - t_start`` of its ``file_read`` event (ok reads only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._frames import events_by_run
from .style import figure_and_axes, look, note_empty, run_label
from .summary import file_reads


def read_latency_cdf(events: pd.DataFrame) -> pd.DataFrame:
    """Columns ``latency_s`` (sorted) and ``cdf`` (i/n, rising to exactly 1) of one run's ok file reads."""
    reads = file_reads(events)  # the workload's reads when a lazy run also has its FUSE servers'
    lat = np.sort((reads["t_end"] - reads["t_start"]).clip(lower=0).to_numpy(dtype=float))
    n = len(lat)
    return pd.DataFrame({"latency_s": lat, "cdf": np.arange(1, n + 1, dtype=float) / n if n else []})


def plot_read_cdf(runs: Any, ax: Axes | None = None, *, log_x: bool | None = None) -> Figure:
    """The read-latency CDF of each run, overlaid (line style by source, marker and shade by strategy).

    ``runs``: a run, a list of runs, or an events frame of one or many runs. ``log_x`` defaults to a log
    axis when the positive latencies span more than two decades, or when the slowest read is more than
    ten times the 90th percentile: on a linear axis such an outlier would take most of the width and
    squeeze every other read against zero.
    """
    fig, ax = figure_and_axes(ax, 7.0, 4.0)
    curves = []
    for (strategy, source, run_id), events in events_by_run(runs):
        cdf = read_latency_cdf(events)
        if len(cdf):
            curves.append((strategy, source, run_id, cdf))
    positive = np.concatenate([c[3]["latency_s"].to_numpy() for c in curves]) if curves else np.array([])
    positive = positive[positive > 0]
    if log_x is None:
        log_x = bool(len(positive)) and (
            positive.max() / positive.min() > 100 or positive.max() > 10 * float(np.percentile(positive, 90))
        )
    floor = positive.min() * 1000 if len(positive) else 1e-3
    for strategy, source, _run_id, cdf in curves:
        x_ms = cdf["latency_s"].to_numpy() * 1000
        if log_x:
            x_ms = np.maximum(x_ms, floor)  # zero-latency reads (cache hits in a simulation) at the floor
        style = look(strategy, source).line()
        every = max(1, len(x_ms) // 8)
        ax.step(
            x_ms,
            cdf["cdf"].to_numpy(),
            where="post",
            markevery=every,
            label=f"{run_label(strategy, source)} n={len(x_ms)}",
            **style,
        )
    if log_x:
        ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("file read latency (ms)" + (", log scale" if log_x else ""))
    ax.set_ylabel("cumulative fraction of reads (0–1)")
    ax.grid(color="0.88", linewidth=0.6)
    if curves:
        ax.legend(fontsize=8, loc="lower right")
    else:
        note_empty(ax, "no file_read events")
    ax.set_title("file read latency CDF", fontsize=10)
    return fig
