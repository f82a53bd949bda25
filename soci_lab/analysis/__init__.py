"""Analysis of runs, real and simulated alike: summaries, plots and the HTML report.

Everything here takes event DataFrames (architecture.md §3) or run objects (:class:`soci_lab.run.Run`,
which carries its events), never live clients. Plots use matplotlib only, label every axis with its
unit, and stay readable in black and white (line styles, markers, hatches, 'cividis'/'viridis' plus
text). Modules: ``summary`` (numbers), ``timeline`` (Gantt), ``cdf`` (read latencies), ``throughput``
(bytes over time), ``compare`` (summary bars, real against simulated), ``heatmap`` (sweeps), ``report``
(HTML + CSV + PNG), ``style`` (the shared look, :func:`subplots`) and ``notebook`` (each figure shows
exactly once in a Jupyter cell, pyplot or not).
"""

from .cdf import plot_read_cdf, read_latency_cdf
from .compare import plot_real_vs_sim, plot_summary, real_vs_sim_table
from .heatmap import config_value, label_for, plot_heatmap, sweep_frame, sweep_table
from .report import write_report
from .style import subplots
from .summary import (
    SUMMARY_COLUMNS,
    distinct_bytes_read,
    merged_length,
    network_events,
    summarize,
    summary_frame,
)
from .throughput import bytes_over_time, plot_bytes_over_time
from .timeline import GANTT_KINDS, plot_timeline, timeline_events

__all__ = [
    "GANTT_KINDS",
    "SUMMARY_COLUMNS",
    "bytes_over_time",
    "config_value",
    "distinct_bytes_read",
    "label_for",
    "merged_length",
    "network_events",
    "plot_bytes_over_time",
    "plot_heatmap",
    "plot_read_cdf",
    "plot_real_vs_sim",
    "plot_summary",
    "plot_timeline",
    "read_latency_cdf",
    "real_vs_sim_table",
    "subplots",
    "summarize",
    "summary_frame",
    "sweep_frame",
    "sweep_table",
    "timeline_events",
    "write_report",
]
