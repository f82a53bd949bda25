"""The run object: one pull (and workload), real or simulated, with its events, summary, config and provenance.

Real and simulated runs are the same type, so every plot and table in :mod:`soci_lab.analysis` takes
either, and one figure overlays both. The summary is always computed from the events by
:func:`soci_lab.analysis.summary.summarize` — one rule for both sources — and a run displays itself in a
notebook (``_repr_html_``: the summary table and its timeline, full size) and plots itself.

It lives in the analysis room because the report (:mod:`soci_lab.analysis.report`) takes runs and a run
is summarised and drawn by this room: the arrow points one way (architecture.md, "Rules of the house").
Its public name is :mod:`soci_lab.run`.

On disk a run is a directory: ``events.csv`` (architecture.md §3), ``summary.json`` and ``run.json``
(identity, config and provenance), written by :meth:`Run.save` and read by :meth:`Run.load`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import json
import math
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import AnalysisError, RunFormatError
from ..events import Event, EventRecorder, normalise_frame, of_kind, read_events, write_events
from .summary import as_frame, summarize

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Run", "as_run", "collect_provenance", "summarize"]

FORMAT = "soci_lab.run/1"
_FLOAT_KEYS = ("ready_s", "workload_done_s", "total_s", "fraction_read")
#: dots per inch of the timeline a run shows in a notebook: its 8-inch figure becomes 800 pixels wide
TIMELINE_DPI = 100
_VERSIONED = ("soci_lab", "pandas", "numpy", "matplotlib", "httpx", "anyio", "simpy", "zstandard")


def collect_provenance(**extra: Any) -> dict[str, Any]:
    """Where and with what a run was made: package versions, Python, host, platform and UTC time."""
    versions: dict[str, str] = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "host": platform.node(),
        "platform": platform.platform(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    raise AnalysisError(f"config must be a dict, a Config or a dataclass, not {type(config).__name__}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    return value


@dataclass(eq=False)
class Run:
    """One run. ``events`` is the tidy frame of architecture.md §3; ``summary`` comes from :func:`summarize`.

    Runs compare by identity (``eq=False``): their events are DataFrames, which have no single truth value.
    """

    run_id: str
    source: str
    strategy: str
    events: pd.DataFrame
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in ("real", "sim"):
            raise AnalysisError(f"run source must be 'real' or 'sim', not {self.source!r}")

    # --- construction ------------------------------------------------------------------------------

    @classmethod
    def from_events(
        cls,
        events: pd.DataFrame | list[Event],
        *,
        run_id: str | None = None,
        source: str | None = None,
        strategy: str | None = None,
        config: Any = None,
        provenance: dict[str, Any] | None = None,
        image_bytes: int | None = None,
    ) -> Run:
        """A run from its events; identity defaults to the events' own ``run_id``/``source``/``strategy``."""
        frame = normalise_frame(as_frame(events)).reset_index(drop=True)
        summary = summarize(frame, image_bytes, run_id=run_id, source=source, strategy=strategy)
        return cls(
            run_id=str(summary["run_id"] or "run"),
            source=str(summary["source"] or "real"),
            strategy=str(summary["strategy"] or ""),
            events=frame,
            summary=summary,
            config=_config_dict(config),
            provenance=provenance if provenance is not None else collect_provenance(),
        )

    @classmethod
    def from_recorder(
        cls,
        rec: EventRecorder,
        *,
        config: Any = None,
        image_bytes: int | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> Run:
        """A run from the recorder that watched it (its run id, source and strategy)."""
        return cls.from_events(
            rec.to_frame(),
            run_id=rec.run_id,
            source=rec.source,
            strategy=rec.strategy,
            config=config,
            provenance=provenance,
            image_bytes=image_bytes,
        )

    @classmethod
    def from_sim(cls, sim_run: Any, *, image_bytes: int | None = None) -> Run:
        """A run from :class:`soci_lab.sim.SimRun` (duck-typed: ``events``, ``summary``, ``config``, …).

        The summary is recomputed from the events by the common rule; a value the events cannot give
        (``fraction_read`` without ``image_bytes``) is taken from the simulator's own summary. The
        simulator's summary is kept as ``provenance["reported_summary"]``.
        """
        events = sim_run.events
        recorder = getattr(sim_run, "recorder", None)
        reported = dict(getattr(sim_run, "summary", {}) or {})
        strategy = getattr(recorder, "strategy", None) or reported.get("mode")
        config = _config_dict(getattr(sim_run, "config", None))
        params = getattr(sim_run, "params", None)
        if params is not None and dataclasses.is_dataclass(params) and not isinstance(params, type):
            config["sim_params"] = dataclasses.asdict(params)
        provenance = {**collect_provenance(), **dict(getattr(sim_run, "provenance", {}) or {})}
        provenance["reported_summary"] = reported
        if image_bytes is None and reported.get("image_bytes"):  # the simulator knows its image's size
            image_bytes = int(reported["image_bytes"])
        if getattr(sim_run, "layers", None):
            provenance["layers"] = sim_run.layers
        run = cls.from_events(
            events,
            run_id=getattr(recorder, "run_id", None),
            source="sim",
            strategy=strategy,
            config=config,
            provenance=provenance,
            image_bytes=image_bytes,
        )
        for key, value in reported.items():
            if value is None:  # the simulator has no such number either (no workload: no start-up to share)
                continue
            if key in run.summary and isinstance(run.summary[key], float) and math.isnan(run.summary[key]):
                run.summary[key] = value
        return run

    # --- persistence -------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``events.csv``, ``summary.json`` and ``run.json`` into ``directory``; return it."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        write_events(self.events, out / "events.csv")
        (out / "summary.json").write_text(json.dumps(_jsonable(self.summary), indent=2, sort_keys=True) + "\n")
        meta = {
            "format": FORMAT,
            "run_id": self.run_id,
            "source": self.source,
            "strategy": self.strategy,
            "config": _jsonable(self.config),
            "provenance": _jsonable(self.provenance),
        }
        (out / "run.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Run:
        """Read a run written by :meth:`save`."""
        src = Path(directory)
        try:
            meta = json.loads((src / "run.json").read_text())
            summary = json.loads((src / "summary.json").read_text())
        except FileNotFoundError as exc:
            raise RunFormatError(f"{src} is not a saved run: {Path(exc.filename).name} is missing") from None
        except json.JSONDecodeError as exc:
            raise RunFormatError(f"{src} is not a saved run: bad JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise RunFormatError(f"{src}/run.json is not a {FORMAT} document")
        if not (src / "events.csv").is_file():
            raise RunFormatError(f"{src} is not a saved run: events.csv is missing")
        for key in _FLOAT_KEYS:
            if key in summary and summary[key] is None:
                summary[key] = math.nan
        return cls(
            run_id=meta["run_id"],
            source=meta["source"],
            strategy=meta["strategy"],
            events=read_events(src / "events.csv"),
            summary=summary,
            config=meta.get("config") or {},
            provenance=meta.get("provenance") or {},
        )

    def events_of(self, kind: str) -> pd.DataFrame:
        """This run's events of one ``kind`` with the detail columns that kind carries (``status``,
        ``range`` … of an ``http_request``; ``how`` of a ``mount``), the others left out."""
        return of_kind(self.events, kind)

    # --- display -----------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        """``lazy (real)``, ``parallel (simulated)``."""
        from .style import run_label

        return run_label(self.strategy, self.source)

    def plot_timeline(self, ax: Axes | None = None) -> Figure:
        """The Gantt chart of this run's layers, chunks and spans."""
        from .timeline import plot_timeline

        return plot_timeline(self.events, ax=ax, title=f"timeline: {self.label}")

    def plot_read_cdf(self, ax: Axes | None = None) -> Figure:
        """The CDF of this run's file-read latencies."""
        from .cdf import plot_read_cdf

        return plot_read_cdf(self, ax=ax)

    def plot_bytes_over_time(self, ax: Axes | None = None) -> Figure:
        """This run's cumulative network bytes against time."""
        from .throughput import plot_bytes_over_time

        return plot_bytes_over_time(self, ax=ax)

    def summary_rows(self) -> list[tuple[str, str]]:
        """The summary as (name, value with unit) pairs, the way the notebook table shows it."""
        from ..units import format_size

        rows = []
        for key, value in self.summary.items():
            if key in ("run_id", "strategy", "source"):
                continue
            if isinstance(value, float) and math.isnan(value):
                text = "–"
            elif key.endswith("_s"):
                text = f"{value:.3f} s"
            elif key.startswith("bytes") or key == "image_bytes":
                text = "–" if value is None else f"{int(value)} B ({format_size(int(value))})"
            elif key in ("fraction_read", "pull_share"):
                text = f"{value:.4f} ({value:.1%})"
            else:
                text = str(value)
            rows.append((key, text))
        return rows

    def _repr_html_(self) -> str:
        """The notebook view: the summary table beside (or, in a narrow window, above) the run's timeline at
        the size :meth:`plot_timeline` draws it, so its labels read as in any other plot."""
        from .style import figure_png, png_data_uri

        th, td = '<th style="text-align:left">', '<td style="text-align:right">'
        rows = "".join(f"<tr>{th}{html.escape(k)}</th>{td}{html.escape(v)}</td></tr>" for k, v in self.summary_rows())
        try:
            fig = self.plot_timeline()
            width = int(fig.get_size_inches()[0] * TIMELINE_DPI)
            uri = png_data_uri(figure_png(fig, dpi=TIMELINE_DPI))
            img = (
                f'<img alt="timeline of run {html.escape(self.run_id)}" width="{width}" '
                f'style="max-width:100%;height:auto" src="{uri}">'
            )
        except Exception as exc:  # a display must never raise; say why the picture is missing
            img = f"<p>(no timeline: {html.escape(str(exc) or type(exc).__name__)})</p>"
        caption = f"{html.escape(self.label)} — run {html.escape(self.run_id)}, {len(self.events)} events"
        return (
            '<div style="display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start">'
            f"<table><caption>{caption}</caption>{rows}</table><div style=\"flex:1 1 600px\">{img}</div></div>"
        )

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"Run({self.run_id!r}, {self.source}, {self.strategy!r}, ready_s={s.get('ready_s')}, "
            f"bytes_fetched={s.get('bytes_fetched')}, events={len(self.events)})"
        )


def as_run(obj: Any) -> Run:
    """Anything that describes one run as a :class:`Run`: a Run, an EventRecorder, an events frame or
    list, or a simulator's run (anything with ``events`` and a ``summary`` dict)."""
    if isinstance(obj, Run):
        return obj
    if isinstance(obj, EventRecorder):
        return Run.from_recorder(obj)
    if isinstance(obj, pd.DataFrame):
        return Run.from_events(obj)
    if isinstance(obj, list) and all(isinstance(e, Event) for e in obj):
        return Run.from_events(obj)
    if hasattr(obj, "events") and isinstance(getattr(obj, "summary", None), dict):
        return Run.from_sim(obj)
    raise AnalysisError(f"cannot make a run of a {type(obj).__name__}")
