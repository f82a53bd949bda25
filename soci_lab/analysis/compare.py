"""Runs side by side: the summary bars, and real against simulated on the same axes.

Bars: one group per strategy, one bar per source — real filled, simulated hollow, hatched by strategy —
with the value written on the bar. Real against simulated puts the time to ready (bars), the bytes over
time and the read-latency CDF of both sources on shared axes (solid = real, dashed = simulated), and
:func:`real_vs_sim_table` gives the numbers with the simulation's relative error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .cdf import plot_read_cdf
from .style import SOURCE_LABEL, look, new_figure, note_empty, strategy_sort_key
from .summary import summary_frame
from .throughput import plot_bytes_over_time

MIB = 1024 * 1024

#: metric → (axis label with unit, scale applied to the raw value)
METRICS: dict[str, tuple[str, float]] = {
    "ready_s": ("time to ready (s)", 1.0),
    "workload_done_s": ("time to workload done (s)", 1.0),
    "total_s": ("total time (s)", 1.0),
    "bytes_fetched": ("bytes over the network (MiB)", 1.0 / MIB),
    "bytes_written": ("bytes written (MiB)", 1.0 / MIB),
    "requests": ("requests (count)", 1.0),
    "fraction_read": ("fraction of image read (0–1)", 1.0),
}


def bar_metric(summary: pd.DataFrame, metric: str, ax: Axes) -> None:
    """Grouped bars of one summary metric: strategies on x, real and simulated side by side."""
    label, scale = METRICS[metric]
    strategies = sorted(summary["strategy"].dropna().unique(), key=strategy_sort_key)
    sources = [s for s in ("real", "sim") if (summary["source"] == s).any()]
    width = 0.8 / max(1, len(sources))
    drawn = False
    for si, source in enumerate(sources):
        for xi, strategy in enumerate(strategies):
            rows = summary[(summary["strategy"] == strategy) & (summary["source"] == source)]
            values = pd.to_numeric(rows[metric], errors="coerce").dropna()
            if not len(values):
                continue
            v = float(values.mean()) * scale
            x = xi - 0.4 + width * (si + 0.5)
            ax.bar([x], [v], width=width * 0.92, **look(strategy, source).bar())
            ax.text(x, v, _short(v), ha="center", va="bottom", fontsize=7)
            drawn = True
    ax.set_xticks(range(len(strategies)), strategies, fontsize=8)
    ax.set_xlabel("strategy (pull mode)")
    ax.set_ylabel(label)
    ax.margins(y=0.15)
    if not drawn:
        note_empty(ax, f"no {metric} values")


def _short(v: float) -> str:
    if v == 0 or math.isnan(v):
        return "0" if v == 0 else "–"
    return f"{v:.3g}"


def _source_legend(fig: Figure, sources: Sequence[str]) -> None:
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor="0.4" if s == "real" else "white", edgecolor="black", label=SOURCE_LABEL.get(s, s))
        for s in sources
    ]
    fig.legend(handles=handles, loc="outside upper right", fontsize=8, title="bar fill", title_fontsize=7)


def plot_summary(runs: Any, metrics: Sequence[str] = ("ready_s", "workload_done_s", "bytes_fetched")) -> Figure:
    """One panel of grouped bars per metric (default: time to ready, workload done, network bytes)."""
    summary = summary_frame(runs)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        from ..errors import AnalysisError

        raise AnalysisError(f"unknown summary metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    fig = new_figure(3.2 * len(metrics) + 0.8, 3.6)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        bar_metric(summary, metric, ax)
    _source_legend(fig, [s for s in ("real", "sim") if (summary["source"] == s).any()])
    fig.suptitle("run summary", fontsize=10)
    return fig


def real_vs_sim_table(
    runs: Any, metrics: Sequence[str] = ("ready_s", "workload_done_s", "bytes_fetched")
) -> pd.DataFrame:
    """Per strategy and metric: the real value, the simulated value, and ``rel_error = (sim - real) / real``.

    Several runs of one (strategy, source) are averaged. Strategies run only one way are left out.
    """
    summary = summary_frame(runs)
    rows = []
    for strategy in sorted(summary["strategy"].dropna().unique(), key=strategy_sort_key):
        per = summary[summary["strategy"] == strategy]
        real, sim = per[per["source"] == "real"], per[per["source"] == "sim"]
        if not len(real) or not len(sim):
            continue
        for metric in metrics:
            r = float(pd.to_numeric(real[metric], errors="coerce").mean())
            s = float(pd.to_numeric(sim[metric], errors="coerce").mean())
            rel = (s - r) / r if r and not math.isnan(r) and not math.isnan(s) else math.nan
            rows.append({"strategy": strategy, "metric": metric, "real": r, "sim": s, "rel_error": rel})
    return pd.DataFrame(rows, columns=["strategy", "metric", "real", "sim", "rel_error"])


def plot_real_vs_sim(runs: Any) -> Figure:
    """Real and simulated runs on shared axes: time to ready (bars), bytes over time, read-latency CDF."""
    summary = summary_frame(runs)
    fig = new_figure(15.0, 4.2)
    ax_bar, ax_bytes, ax_cdf = fig.subplots(1, 3)
    bar_metric(summary, "ready_s", ax_bar)
    table = real_vs_sim_table(runs, ["ready_s"])
    ticks = []
    for strategy in sorted(summary["strategy"].dropna().unique(), key=strategy_sort_key):
        err = table[table["strategy"] == strategy]["rel_error"]
        ticks.append(f"{strategy}\nsim {err.iloc[0]:+.0%}" if len(err) and not np.isnan(err.iloc[0]) else strategy)
    ax_bar.set_xticks(range(len(ticks)), ticks, fontsize=8)
    ax_bar.set_title("time to ready", fontsize=10)
    plot_bytes_over_time(runs, ax=ax_bytes)
    plot_read_cdf(runs, ax=ax_cdf)
    sources = [s for s in ("real", "sim") if (summary["source"] == s).any()]
    if sources != ["real", "sim"]:
        note_empty(ax_bar, "need both real and simulated runs to compare")
    _source_legend(fig, sources)
    fig.suptitle("real (solid, filled) against simulated (dashed, hollow)", fontsize=10)
    return fig
