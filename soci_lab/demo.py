"""The main job on embedded defaults: ``soci-lab demo``.

Builds the sample image (content every Debian machine has offline: parts of the Python standard library,
zoneinfo, shared libraries, generated data; a whiteout and an opaque directory in its top layer), serves it
from the embedded registry on loopback, gives it a SOCI v2 index with upstream's defaults (4 MiB spans,
10 MiB minimum layer size — so the small layers are unpacked locally, a sparse index as in real life), and
compares lazy, parallel and sequential pulls for real and simulated on the sample application's start-up
reads — over two links, so a newcomer sees both regimes of lazy loading:

- ``loopback``: the registry on this machine, bytes almost free — on a quiet machine the eager modes'
  bytes cost less than lazy's fixed costs (index and zTOC fetches, FUSE mounts, spans fetched on demand);
  on a busy one unpacking makes even these bytes dear;
- ``100Mbit-20ms``: the same registry behind the shaping proxy (:class:`~soci_lab.netlab.ShapingProxy`)
  at 100 Mbit/s with 20 ms per request, a cloud-like link — every byte the eager modes move costs time,
  and lazy gains by the bytes it does not move.

Which mode won where, and why, is computed from the runs (:mod:`soci_lab.analysis.report_findings`), never
assumed.

Each link gets a full comparison report in its own folder (``loopback/``, ``100Mbit-20ms/``: report.html,
summary.csv, events.csv, the plots); the top folder holds ``report.html`` (what each link showed and what
the two together show, in computed sentences, with links to both reports), ``summary.csv`` (every run,
with a ``network`` column), ``events.csv``, ``notes.txt`` and ``startup-trace.csv``.
"""

from __future__ import annotations

import html
import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from .compare import MODES, Comparison, compare


@dataclass(frozen=True)
class Link:
    """A network link the demo pulls over: loopback (no proxy) or the shaping proxy at a rate and latency."""

    name: str  #: the folder name and the ``network`` column's value
    description: str
    bandwidth: str | None = None  #: a rate string for the proxy (``100Mbit``), None for plain loopback
    latency: str | None = None  #: per request (``20ms``)


#: The two regimes the demo shows (see the module docstring).
LINKS: tuple[Link, ...] = (
    Link("loopback", "loopback (the registry on this machine)"),
    Link("100Mbit-20ms", "100 Mbit/s with 20 ms per request (shaping proxy, cloud-like)", "100Mbit", "20ms"),
)


@dataclass
class DemoResult(Comparison):
    """The demo: every run of every link (``summary`` has a ``network`` column) and each link's comparison."""

    links: dict[str, Comparison] = field(default_factory=dict)
    link_specs: list[Link] = field(default_factory=list)

    @property
    def summary(self) -> pd.DataFrame:
        """Every run, link by link (in the demo's order), then by strategy and source."""
        frame = super().summary
        if "network" not in frame.columns or not len(frame):
            return frame
        order = {link.name: i for i, link in enumerate(self.link_specs)}
        return frame.sort_values("network", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)

    @property
    def findings(self) -> list[str]:
        """Each link's findings, headed by the link, then what the links show together."""
        from .analysis.report_findings import findings, verdict

        out = []
        for link in self.link_specs:
            if link.name in self.links:
                out += [f"[{link.name}] {s}" for s in findings(self.links[link.name].runs)]
        together = regime_sentence({n: verdict(c.runs) for n, c in self.links.items()}, self.link_specs)
        return out + ([together] if together else [])

#: The sample application's start-up reads (what /app/run.sh reads), as (path, offset, size or None = all)
APP_READS: tuple[tuple[str, int, int | None], ...] = (
    ("/app/config/app.json", 0, None),
    ("/app/config/logging.json", 0, None),
    ("/app/docs/*", 0, None),
    ("/opt/data/model.bin", 0, 2 << 20),
)


def startup_trace(trees: list[Path], path: Path) -> Path:
    """The trace CSV of :data:`APP_READS` over the merged layer trees (upper layers win), one read each."""
    from .workload import Trace, TraceRow, save_trace

    def merged(rel: str) -> Path | None:
        for top in reversed(trees):
            candidate = top / rel.lstrip("/")
            if candidate.is_file():
                return candidate
        return None

    rows: list[TraceRow] = []
    t = 0.0
    for pattern, offset, size in APP_READS:
        if pattern.endswith("/*"):
            names = sorted({p.name for top in trees if (top / pattern[1:-2]).is_dir()
                            for p in (top / pattern[1:-2]).iterdir()})
            paths = [f"{pattern[:-2]}/{n}" for n in names if not n.startswith(".wh.")]
        else:
            paths = [pattern]
        for p in paths:
            f = merged(p)
            if f is None:
                continue
            length = f.stat().st_size - offset if size is None else min(size, f.stat().st_size - offset)
            rows.append(TraceRow(round(t, 6), "open", p, 0, 0))
            rows.append(TraceRow(round(t, 6), "read", p, offset, length))
            t += 0.0005
    return save_trace(Trace(rows), path)


def run_demo(
    out: str | Path = "demo-out",
    *,
    scale: float = 1.0,
    modes: tuple[str, ...] = MODES,
    sim: bool = True,
    progress: Callable[[str], None] | None = None,
    links: Sequence[Link] = LINKS,
) -> DemoResult:
    """Build, serve, index and compare the sample image over each of ``links``; the reports go into ``out``."""
    from .artifacts import create_soci_index
    from .images import build_sample_image, sample_image_trees
    from .netlab import EmbeddedRegistry, ShapingProxy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="soci-lab-demo-"))
    result = DemoResult(runs=[], link_specs=list(links))
    try:
        with EmbeddedRegistry(root=work / "registry") as reg:
            ref = f"{reg.host_port}/sample:latest"
            if progress:
                progress(f"building the sample image into the embedded registry at {reg.url}")
            build_sample_image(ref, work / "trees", scale=scale)
            trees = sample_image_trees(work / "trees-view", scale=scale)
            trace = startup_trace(trees, out / "startup-trace.csv")
            if progress:
                progress("creating its SOCI v2 index (4 MiB spans, 10 MiB minimum layer size)")
            index = create_soci_index(ref, version="v2")
            result.notes.append(f"image {ref}, SOCI index {index.index_descriptor.digest}")
            for link in links:
                if progress:
                    progress(f"comparing the pulls over {link.description}")
                if link.bandwidth is None and link.latency is None:
                    comparison = _compare_over(ref, link, modes, sim, trace, out, progress)
                else:
                    with ShapingProxy(reg.url, bandwidth=link.bandwidth, latency=link.latency) as proxy:
                        proxied = f"{proxy.url.removeprefix('http://')}/sample:latest"
                        comparison = _compare_over(proxied, link, modes, sim, trace, out, progress)
                result.links[link.name] = comparison
                result.runs.extend(comparison.runs)
                result.notes += [f"{link.name}: {n}" for n in comparison.notes]
                for mode, why in comparison.skipped.items():  # the same reason on every link
                    result.skipped.setdefault(mode, why)
        result.report = write_overview(result, out, links)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _compare_over(
    ref: str,
    link: Link,
    modes: tuple[str, ...],
    sim: bool,
    trace: Path,
    out: Path,
    progress: Callable[[str], None] | None,
) -> Comparison:
    """One link's comparison, its report in ``out/<link.name>``; each run's summary names the link."""
    from .sim.profile import default_path

    # the host profile where this host has one; else in-sample (labelled so), not minutes of calibration
    # inside the demo
    comparison = compare(
        ref,
        modes,
        sim=sim,
        calibration=None if default_path().exists() else "in-sample",
        network="loopback" if link.bandwidth is None else f"{link.bandwidth}+{link.latency or '0ms'}",
        trace=trace,
        out=out / link.name,
        title=f"soci_lab demo over {link.description}: lazy against parallel and sequential",
        progress=progress,
    )
    for run in comparison.runs:
        run.summary["network"] = link.name
        run.provenance["network"] = link.description
    return comparison


def regime_sentence(verdicts: dict[str, Any], links: Sequence[Link]) -> str | None:
    """What the links show together: lazy's fixed costs barely move with the link, the bytes' worth does."""
    from .analysis.report_findings import fmt_s

    pairs = [(link, verdicts.get(link.name)) for link in links]
    decided = [(link, v) for link, v in pairs if v is not None and v.lazy_won is not None and not math.isnan(v.saved_s)]
    if len(decided) < 2:
        return None
    parts = []
    for link, v in decided:
        outcome = f"won by {fmt_s(v.margin_s)}" if v.lazy_won else f"lost by {fmt_s(-v.margin_s)}"
        fixed = f"its fixed costs of {fmt_s(v.fixed_s)}" if v.fixed_s > 0 else "fixed costs hidden behind its transfers"
        parts.append(
            f"over {link.name} lazy {outcome} — a MB cost the eager pull {fmt_s(v.pace_s_per_mb)} to move and "
            f"unpack, so the bytes lazy did not move were worth {fmt_s(v.saved_s)}, against {fixed}"
        )
    wins = {v.lazy_won for _, v in decided}
    if wins == {True, False}:
        tail = (
            " Lazy loading pays where bytes are dear (a slow or distant registry) and the workload reads a "
            "small part of the image; where bytes are nearly free its fixed costs decide."
        )
    elif wins == {True}:
        tail = (
            " Lazy won on every link: the workload reads a small part of the image, and bytes were dear on "
            "each (on a busy machine unpacking makes them dear even over loopback)."
        )
    else:
        tail = " Lazy lost on every link: its fixed costs outweighed the bytes it saved, even on the slower link."
    return "Together: " + "; ".join(parts) + "." + tail


def write_overview(result: DemoResult, out: Path, links: Sequence[Link]) -> Path:
    """``out/report.html`` (each link's findings and the two together), ``summary.csv`` (with ``network``),
    ``events.csv`` and ``notes.txt``."""
    from .analysis._frames import all_events
    from .analysis.report_findings import display_summary, findings, verdict
    from .analysis.style import png_data_uri
    from .events import write_events

    summary = result.summary if result.runs else pd.DataFrame()
    if len(summary):
        summary.to_csv(out / "summary.csv", index=False)
        write_events(all_events(result.runs), out / "events.csv")
    (out / "notes.txt").write_text("\n".join(result.notes + [f"{m} skipped: {w}" for m, w in result.skipped.items()])
                                   + "\n")
    verdicts = {name: verdict(c.runs) for name, c in result.links.items()}
    together = regime_sentence(verdicts, links)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>soci_lab demo</title><style>',
        "body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #111; }",
        "h2 { border-bottom: 1px solid #999; } p { max-width: 60em; line-height: 1.4; }",
        "table { border-collapse: collapse; font-size: 0.85em; } th, td { border: 1px solid #999; padding: 3px 8px; }",
        "td { text-align: right; white-space: nowrap; }",
        "img { max-width: 100%; border: 1px solid #ccc; } .meta { color: #444; }",
        "</style></head><body>",
        "<h1>soci_lab demo: lazy loading against eager pulls, over two links</h1>",
        f'<p class="meta">Written {when}. The same image and start-up reads, pulled over each link in every mode '
        'for real and simulated. Data: <a href="summary.csv">summary.csv</a> (a <code>network</code> column per '
        'run), <a href="events.csv">events.csv</a>, <a href="startup-trace.csv">startup-trace.csv</a>.</p>',
    ]
    if together:
        parts += ["<h2>What the two links show</h2>", f"<p>{html.escape(together)}</p>"]
    for link in links:
        comparison = result.links.get(link.name)
        if comparison is None:
            continue
        parts.append(f'<h2>{html.escape(link.description)} — <a href="{link.name}/report.html">full report</a></h2>')
        parts += [f"<p>{html.escape(s)}</p>" for s in findings(comparison.runs)]
        if len(summary):
            rows = summary[summary["network"] == link.name]
            parts.append(display_summary(rows).to_html(index=False, escape=True))
        png = out / link.name / "summary.png"
        if png.is_file():
            parts.append(f'<p><a href="{link.name}/summary.png"><img src="{png_data_uri(png.read_bytes())}" '
                         f'alt="summary of the pulls over {html.escape(link.name)}"></a></p>')
    if result.notes or result.skipped:
        parts += ["<h2>Notes</h2>", "<ul>"]
        parts += [f"<li>{html.escape(n)}</li>" for n in result.notes]
        parts += [f"<li>{html.escape(m)} skipped: {html.escape(w)}</li>" for m, w in result.skipped.items()]
        parts.append("</ul>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
