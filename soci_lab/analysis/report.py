"""The report of a comparison: one self-contained HTML page, the CSVs, and every plot as a PNG.

``write_report(runs, out_dir)`` writes, into ``out_dir``:

- ``summary.csv`` — one row per run, the columns of cli.md's "Report files" first;
- ``events.csv`` — every run's events (architecture.md §3 schema);
- ``summary.png``, ``bytes_over_time.png``, ``read_cdf.png``, ``real_vs_sim.png`` (when both sources are
  present), one ``timeline_<strategy>_<source>_<run>.png`` per run and one ``heatmap_<name>.png`` per sweep;
- ``report.html`` — the findings (who won, by how much and why, in sentences computed from the runs:
  :mod:`.report_findings`), the summary table with units (s/ms, MB, %), the caller's notes, and every
  figure embedded as a base64 PNG (the page needs no other file to display), each linked to its PNG file,
  plus each run's config and provenance.

The page has no scripts and no external resources, so it opens the same in a browser, a CI artefact
viewer or an e-mail.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ..errors import AnalysisError
from ..events import write_events
from ._frames import all_events, events_by_run
from .cdf import plot_read_cdf
from .compare import plot_real_vs_sim, plot_summary, real_vs_sim_table
from .heatmap import plot_heatmap
from .report_findings import display_summary, findings, fmt_bytes, fmt_pct, fmt_s
from .run import as_run
from .style import figure_png, png_data_uri, run_label
from .summary import summary_frame
from .throughput import plot_bytes_over_time
from .timeline import plot_timeline


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report: its file name, caption, and how to draw it."""

    name: str
    caption: str
    draw: Callable[[], Figure]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _progress(items: list[ReportFigure], progress: bool | None) -> Iterable[ReportFigure]:
    if progress is False:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra ("notebooks"); the report is the same without it
        return items
    return tqdm(items, desc="report figures", unit="fig", disable=None if progress is None else False)


def report_figures(runs: list[Any], sweeps: Mapping[str, Mapping[str, Any]] | None = None) -> list[ReportFigure]:
    """The figures a report of ``runs`` contains, in page order (drawn lazily)."""
    figures = [
        ReportFigure(
            "summary.png",
            "Time to ready, time to workload done and bytes over the network per "
            "strategy; real bars filled, simulated bars hollow.",
            lambda: plot_summary(runs),
        ),
        ReportFigure(
            "bytes_over_time.png",
            "Cumulative bytes over the network; solid = real, dashed = "
            "simulated; the large marker shows when each run became ready.",
            lambda: plot_bytes_over_time(runs),
        ),
        ReportFigure("read_cdf.png", "CDF of file-read latencies (ok reads).", lambda: plot_read_cdf(runs)),
    ]
    sources = {getattr(r, "source", None) for r in runs}
    if {"real", "sim"} <= sources:
        figures.append(
            ReportFigure("real_vs_sim.png", "Real against simulated on shared axes.", lambda: plot_real_vs_sim(runs))
        )
    for (strategy, source, run_id), events in events_by_run(runs):
        name = f"timeline_{_slug(strategy)}_{_slug(source)}_{_slug(run_id)}.png"
        figures.append(
            ReportFigure(
                name,
                f"Timeline of {run_label(strategy, source)}, run {run_id}.",
                partial(plot_timeline, events),
            )
        )
    for key, spec in (sweeps or {}).items():
        spec = dict(spec)
        frame = spec.pop("frame", None)
        if not isinstance(frame, pd.DataFrame):
            raise AnalysisError(f"sweep {key!r} needs a 'frame' DataFrame plus x, y and value column names")
        caption = spec.pop("caption", f"Sweep {key}: mean {spec.get('value')} per ({spec.get('x')}, {spec.get('y')}).")
        figures.append(
            ReportFigure(
                f"heatmap_{_slug(key)}.png", caption, partial(plot_heatmap, frame, **spec)
            )
        )
    return figures


def _json_block(data: Any) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return html.escape(json.dumps(clean(data), indent=2, sort_keys=True, default=str))


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #111; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; font-size: 0.85em; } th, td { border: 1px solid #999; padding: 3px 8px; }
th { background: #eee; } td { text-align: right; white-space: nowrap; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: 0.85em; color: #333; } pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
.meta { color: #444; font-size: 0.85em; }
.findings p { max-width: 60em; line-height: 1.4; }
"""


def write_report(
    runs: Any,
    out_dir: str | Path,
    title: str = "soci_lab report",
    *,
    sweeps: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write the report of ``runs`` into ``out_dir`` and return the path of ``report.html``.

    ``runs``: runs (:class:`soci_lab.run.Run`, or anything :func:`soci_lab.run.as_run` accepts — a
    recorder, a simulator's run, an events frame). ``sweeps``: name → keyword arguments of
    :func:`plot_heatmap` including ``frame``, drawn as extra heatmaps. ``progress``: a progress bar
    (tqdm.auto) while figures render — None shows it only on a terminal or in a notebook. ``notes``:
    lines shown under the findings (what was skipped and why, conditions of the runs).
    """
    items = runs if isinstance(runs, (list, tuple)) else [runs]
    run_list = [as_run(r) for r in items]
    if not run_list:
        raise AnalysisError("write_report needs at least one run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    summary = summary_frame(run_list)
    summary.to_csv(out / "summary.csv", index=False)
    write_events(all_events(run_list), out / "events.csv")

    rendered: list[tuple[ReportFigure, bytes]] = []
    for fig_spec in _progress(report_figures(run_list, sweeps), progress):
        png = figure_png(fig_spec.draw())
        (out / fig_spec.name).write_bytes(png)
        rendered.append((fig_spec, png))

    page = _page(title, run_list, summary, rendered, notes)
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _page(
    title: str,
    runs: list[Any],
    summary: pd.DataFrame,
    rendered: list[tuple[ReportFigure, bytes]],
    notes: Sequence[str] = (),
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    table = display_summary(summary, extra=("run_id",)).to_html(index=False, escape=True)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{len(runs)} run(s); written {when}. Data: <a href="summary.csv">summary.csv</a>, '
        '<a href="events.csv">events.csv</a>. Times are from the start of each run.</p>',
    ]
    said = findings(runs)
    if said:
        parts += ["<h2>Findings</h2>", '<div class="findings">']
        parts += [f"<p>{html.escape(s)}</p>" for s in said]
        parts.append("</div>")
    if notes:
        parts += ["<ul>", *(f"<li>{html.escape(n)}</li>" for n in notes), "</ul>"]
    parts += ["<h2>Summary</h2>", table]
    errors = real_vs_sim_table(runs)
    if len(errors):
        parts += ["<h2>Simulated against real</h2>", _errors_table(errors).to_html(index=False, escape=True)]
    parts.append("<h2>Figures</h2>")
    for spec, png in rendered:
        name = html.escape(spec.name)
        parts.append(
            f'<figure id="{html.escape(spec.name.removesuffix(".png"))}">'
            f'<a href="{name}"><img src="{png_data_uri(png)}" alt="{html.escape(spec.caption)}"></a>'
            f'<figcaption>{html.escape(spec.caption)} (<a href="{name}">{name}</a>)</figcaption></figure>'
        )
    parts.append("<h2>Runs</h2>")
    for run in runs:
        parts.append(
            f"<details><summary>{html.escape(run_label(run.strategy, run.source))} — "
            f"{html.escape(str(run.run_id))}</summary>"
            f"<h3>summary</h3><pre>{_json_block(run.summary)}</pre>"
            f"<h3>config</h3><pre>{_json_block(run.config)}</pre>"
            f"<h3>provenance</h3><pre>{_json_block(run.provenance)}</pre></details>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _errors_table(errors: pd.DataFrame) -> pd.DataFrame:
    """real_vs_sim_table with units: seconds and bytes as text, the error in %."""
    def value(metric: str, v: float) -> str:
        return fmt_bytes(v) if metric.startswith("bytes") else fmt_s(v) if metric.endswith("_s") else f"{v:.4g}"

    return pd.DataFrame(
        {
            "strategy": errors["strategy"],
            "metric": errors["metric"],
            "real": [value(m, v) for m, v in zip(errors["metric"], errors["real"], strict=True)],
            "simulated": [value(m, v) for m, v in zip(errors["metric"], errors["sim"], strict=True)],
            "simulated − real": [("+" if e > 0 else "") + fmt_pct(e) for e in errors["rel_error"]],
        }
    )
