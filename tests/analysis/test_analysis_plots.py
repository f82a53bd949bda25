"""Plots: units on every axis, one Gantt bar per event, CDFs that rise to 1, black-and-white readability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_synth import make_events
from matplotlib.figure import Figure

from soci_lab.analysis import (
    bytes_over_time,
    label_for,
    plot_bytes_over_time,
    plot_heatmap,
    plot_read_cdf,
    plot_real_vs_sim,
    plot_summary,
    plot_timeline,
    read_latency_cdf,
    real_vs_sim_table,
)
from soci_lab.analysis.style import figure_png, has_unit
from soci_lab.errors import AnalysisError

#: The layer/span/run steps the Gantt draws, written out here rather than imported from the code.
BAR_KINDS = {
    "index_fetch",
    "ztoc_fetch",
    "mount",
    "workload",
    "blob_download",
    "chunk_download",
    "span_fetch",
    "span_verify",
    "span_decompress",
    "bg_fetch",
    "prefetch",
    "verify",
    "decompress",
    "apply",
}


def sweep() -> pd.DataFrame:
    rows = []
    for span in (1, 2, 4, 8):
        for rtt in (5, 20, 80):
            for rep in range(2):
                rows.append({"span_mib": span, "rtt_ms": rtt, "ready_s": 0.1 * span + 0.01 * rtt + 0.001 * rep})
    return pd.DataFrame(rows)


def assert_units_everywhere(fig: Figure) -> None:
    assert isinstance(fig, Figure) and fig.axes
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            assert has_unit(ax.get_ylabel() or ax.get_xlabel()), "colorbar label without a unit"
            continue
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            assert label and has_unit(label), f"axis label {label!r} names no unit"
    assert figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"  # and it renders


@pytest.mark.parametrize(
    "draw",
    [
        pytest.param(lambda runs: plot_timeline(runs[4]), id="timeline"),
        pytest.param(lambda runs: plot_read_cdf(runs), id="read_cdf"),
        pytest.param(lambda runs: plot_bytes_over_time(runs), id="bytes_over_time"),
        pytest.param(lambda runs: plot_summary(runs), id="summary"),
        pytest.param(lambda runs: plot_real_vs_sim(runs), id="real_vs_sim"),
        pytest.param(lambda runs: plot_heatmap(sweep(), "span_mib", "rtt_ms", "ready_s"), id="heatmap"),
    ],
)
def test_every_axis_has_a_unit(draw, synthetic_runs: list) -> None:
    assert_units_everywhere(draw(synthetic_runs))


@pytest.mark.parametrize("strategy", ["sequential", "parallel", "lazy"])
def test_gantt_has_one_bar_per_layer_and_span_event(strategy: str) -> None:
    events = make_events(strategy)
    fig = plot_timeline(events)
    ax = fig.axes[0]
    expected = events[events["kind"].isin(BAR_KINDS)]
    boxes = boxes_of(ax)
    assert len(boxes) == len(expected) > 0
    for kind in set(expected["kind"]):
        assert len(boxes_of(ax, kind)) == (expected["kind"] == kind).sum(), kind
    drawn = sorted((b[0], b[1] - b[0]) for b in boxes)
    wanted = sorted((t0, t1 - t0) for t0, t1 in zip(expected["t_start"], expected["t_end"], strict=True))
    np.testing.assert_allclose(np.array(drawn), np.array(wanted), atol=1e-9)
    # bars of one row never overlap: concurrent chunks and spans are stacked in sub-rows
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            overlap_t = min(a[1], b[1]) - max(a[0], b[0])
            overlap_y = min(a[3], b[3]) - max(a[2], b[2])
            assert not (overlap_t > 1e-9 and overlap_y > 1e-9), (a, b)


def boxes_of(ax, kind: str | None = None) -> list[tuple[float, float, float, float]]:
    """(t0, t1, y0, y1) of every Gantt bar (of one kind), read back from the drawn collections."""
    out = []
    for coll in ax.collections:
        gid = coll.get_gid() or ""
        if not gid.startswith("gantt:") or (kind is not None and gid != f"gantt:{kind}"):
            continue
        for path in coll.get_paths():
            v = path.vertices
            out.append((v[:, 0].min(), v[:, 0].max(), v[:, 1].min(), v[:, 1].max()))
    return out


def test_gantt_rows_name_layers() -> None:
    ax = plot_timeline(make_events("lazy")).axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert "run" in rows and "file reads" in rows
    assert any(r.startswith("a1a1a1a1a1a1 spans") for r in rows)
    assert any(r.startswith("c3c3c3c3c3c3 download") for r in rows)


def test_read_cdf_is_monotone_and_ends_at_one(synthetic_runs: list) -> None:
    for run in synthetic_runs:
        cdf = read_latency_cdf(run.events)
        reads = run.events[(run.events["kind"] == "file_read") & run.events["ok"]]
        assert len(cdf) == len(reads) > 0
        assert np.all(np.diff(cdf["latency_s"]) >= 0) and np.all(np.diff(cdf["cdf"]) > 0)
        assert cdf["cdf"].iloc[-1] == 1.0
        assert sorted(reads["t_end"] - reads["t_start"]) == pytest.approx(list(cdf["latency_s"]))
    ax = plot_read_cdf(synthetic_runs).axes[0]
    assert len(ax.lines) == len(synthetic_runs)
    for line in ax.lines:
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert np.all(np.diff(y) >= 0) and y[-1] == 1.0 and np.all(np.diff(x) >= 0)


def test_lazy_reads_are_slower_than_eager_reads(synthetic_runs: list) -> None:
    by = {(r.strategy, r.source): read_latency_cdf(r.events)["latency_s"] for r in synthetic_runs}
    assert by[("lazy", "real")].max() > 10 * by[("parallel", "real")].max()


def test_bytes_over_time_ends_at_bytes_fetched(synthetic_runs: list) -> None:
    for run in synthetic_runs:
        series = bytes_over_time(run.events)
        assert series["bytes"].iloc[0] == 0 and np.all(np.diff(series["bytes"]) >= 0)
        assert series["bytes"].iloc[-1] == run.summary["bytes_fetched"]
    ax = plot_bytes_over_time(synthetic_runs).axes[0]
    curves = [line for line in ax.lines if len(line.get_xdata()) > 1]
    assert len(curves) == len(synthetic_runs)
    assert max(line.get_ydata()[-1] for line in curves) == pytest.approx(
        max(r.summary["bytes_fetched"] for r in synthetic_runs) / 2**20
    )


def test_lines_are_told_apart_without_colour(synthetic_runs: list) -> None:
    """Each (strategy, source) curve has its own (line style, marker) pair: readable in black and white."""
    for fig in (plot_read_cdf(synthetic_runs), plot_bytes_over_time(synthetic_runs), plot_real_vs_sim(synthetic_runs)):
        for ax in fig.axes:
            curves = [line for line in ax.lines if len(line.get_xdata()) > 1]
            if not curves:
                continue
            looks = {(line.get_linestyle(), line.get_marker()) for line in curves}
            assert len(looks) == len(curves) == len(synthetic_runs), ax.get_title()
            assert {line.get_linestyle() for line in curves} == {"-", "--"}  # real solid, simulated dashed


def test_summary_bars_differ_by_hatch_and_fill(synthetic_runs: list) -> None:
    ax = plot_summary(synthetic_runs, metrics=["ready_s"]).axes[0]
    bars = ax.patches
    assert len(bars) == len(synthetic_runs)
    hatches = {b.get_hatch() for b in bars}
    assert len(hatches) == 3  # one per strategy
    fills = {tuple(np.round(b.get_facecolor(), 3)) for b in bars}
    assert (1.0, 1.0, 1.0, 1.0) in fills and len(fills) == 4  # hollow sim bars + three filled real ones
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sequential", "parallel", "lazy"]


def test_unknown_summary_metric_is_refused(synthetic_runs: list) -> None:
    with pytest.raises(AnalysisError, match="unknown"):
        plot_summary(synthetic_runs, metrics=["speed"])


def test_real_vs_sim_table(synthetic_runs: list) -> None:
    table = real_vs_sim_table(synthetic_runs, ["ready_s", "bytes_fetched"])
    assert len(table) == 6
    row = table[(table["strategy"] == "lazy") & (table["metric"] == "ready_s")].iloc[0]
    real = next(r for r in synthetic_runs if r.strategy == "lazy" and r.source == "real").summary["ready_s"]
    sim = next(r for r in synthetic_runs if r.strategy == "lazy" and r.source == "sim").summary["ready_s"]
    assert row["real"] == real and row["sim"] == sim
    assert row["rel_error"] == pytest.approx(-0.1)  # the synthetic model runs 10 % fast
    assert (table[table["metric"] == "bytes_fetched"]["rel_error"] == 0).all()


def test_heatmap_annotates_every_cell_with_the_mean() -> None:
    fig = plot_heatmap(sweep(), "span_mib", "rtt_ms", "ready_s", fmt="{:.4f}")
    ax = fig.axes[0]
    texts = {t.get_text() for t in ax.texts}
    assert len(ax.texts) == 4 * 3
    assert f"{0.1 * 4 + 0.01 * 20 + 0.0005:.4f}" in texts  # mean of the two repetitions
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["5", "20", "80"]


def test_heatmap_cell_text_contrasts_with_its_cell() -> None:
    ax = plot_heatmap(sweep(), "span_mib", "rtt_ms", "ready_s").axes[0]
    colors = {t.get_color() for t in ax.texts}
    assert colors == {"black", "white"}  # dark cells get white text, light cells black


def test_heatmap_missing_cell_and_bad_columns() -> None:
    frame = sweep()
    frame = frame[~((frame["span_mib"] == 8) & (frame["rtt_ms"] == 80))]
    ax = plot_heatmap(frame, "span_mib", "rtt_ms", "ready_s").axes[0]
    assert "–" in {t.get_text() for t in ax.texts}
    with pytest.raises(AnalysisError, match="no column"):
        plot_heatmap(frame, "span_mib", "nope", "ready_s")
    with pytest.raises(AnalysisError, match="unit"):
        plot_heatmap(frame, "span_mib", "rtt_ms", "ready_s", xlabel="span size")


@pytest.mark.parametrize(
    ("column", "label"),
    [
        ("rtt_ms", "rtt (ms)"),
        ("span_size_mib", "span size (MiB)"),
        ("ready_s", "time to ready (s)"),
        ("bandwidth_mbit", "bandwidth (Mbit/s)"),
        ("concurrency", "concurrency (dimensionless)"),
        ("chunk [MiB]", "chunk [MiB]"),
    ],
)
def test_label_for(column: str, label: str) -> None:
    assert label_for(column) == label


def test_plots_draw_into_a_given_axes() -> None:
    from soci_lab.analysis.style import new_figure

    fig = new_figure()
    ax = fig.add_subplot()
    assert plot_timeline(make_events("parallel"), ax=ax) is fig
    assert len(fig.axes) == 1 and boxes_of(ax)


def test_empty_runs_say_so() -> None:
    events = make_events("sequential")
    only_ready = events[events["kind"] == "ready"]
    ax = plot_read_cdf(only_ready).axes[0]
    assert any("no file_read events" in t.get_text() for t in ax.texts)
    ax = plot_timeline(only_ready).axes[0]
    assert any("no layer" in t.get_text() for t in ax.texts)


def test_sweep_frame_from_run_configs() -> None:
    from soci_lab.analysis import plot_heatmap, sweep_frame
    from soci_lab.run import Run

    runs = []
    for span in (1, 4):
        for rtt in (10, 40):
            events = make_events("lazy", run_id=f"s{span}-r{rtt}", time_scale=span * rtt / 40)
            runs.append(Run.from_events(events, config={"sim": {"span_mib": span, "rtt_ms": rtt}}))
    runs.append(Run.from_events(make_events("lazy", run_id="bare"), config={}))
    frame = sweep_frame(runs, {"span_mib": "sim.span_mib", "rtt_ms": "sim.rtt_ms"})
    assert len(frame) == 5 and frame["span_mib"].isna().sum() == 1
    row = frame[frame["run_id"] == "s4-r40"].iloc[0]
    assert (row["span_mib"], row["rtt_ms"]) == (4, 40)
    assert row["ready_s"] == pytest.approx(runs[3].summary["ready_s"])
    ax = plot_heatmap(frame.dropna(subset=["span_mib"]), "span_mib", "rtt_ms", "ready_s").axes[0]
    assert len(ax.texts) == 4
