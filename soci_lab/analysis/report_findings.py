"""What a comparison found, in sentences computed from its runs: who won, by how much, and why.

The "why" is a two-part cost model of a pull, measured on the runs themselves rather than assumed:

- an **eager** pull (parallel, sequential) costs time in proportion to the bytes it moves: every layer is
  downloaded and unpacked before the workload starts. Its *pace* is its time to workload done over the
  bytes it fetched (seconds per MB, download and unpack together);
- a **lazy** pull moves fewer bytes but pays **fixed costs** the eager modes do not: the SOCI index and
  zTOC fetches, one FUSE mount per lazy layer, and the workload's waits for spans fetched on demand.

Lazy's saving is the bytes it did not move, priced at the eager pace; its fixed cost is the part of its
own time that its bytes do not explain (its time to workload done minus its bytes at that pace). By
construction lazy wins exactly when the saving is larger than the fixed cost, so the sentences never
contradict the numbers beside them. The measured parts of the fixed cost (index and zTOC fetches, FUSE
mounts, span waits) are listed too: they overlap each other and the local layers' unpacking, so they do
not add up to it.

Numbers carry units: :func:`fmt_bytes` (kB, MB, GB), :func:`fmt_s` (ms below one second, else s),
:func:`fmt_pct` (%). :func:`display_summary` is the summary table with those units, for people; the CSV
keeps plain numbers, for programs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

EAGER = ("parallel", "sequential")


# --- units ------------------------------------------------------------------------------------------------


def fmt_bytes(n: float | None) -> str:
    """Bytes in decimal units with three significant digits: ``512 B``, ``231.7 kB``, ``25.1 MB``."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "–"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_s(t: float | None) -> str:
    """A duration: ``18 ms`` below one second, ``1.07 s`` above, ``–`` when unknown."""
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "–"
    if abs(t) < 1:
        return f"{t * 1000:.3g} ms" if abs(t) >= 0.001 else f"{t * 1000:.2f} ms"
    return f"{t:.2f} s" if abs(t) < 100 else f"{t:.0f} s"


def fmt_pct(fraction: float | None) -> str:
    """A fraction as a percentage: ``6.0 %``."""
    if fraction is None or (isinstance(fraction, float) and math.isnan(fraction)):
        return "–"
    return f"{100 * fraction:.1f} %"


def fmt_rate(bytes_per_s: float | None) -> str:
    """A transfer rate in MB/s."""
    if not bytes_per_s or math.isnan(bytes_per_s):
        return "–"
    return f"{bytes_per_s / 1e6:.3g} MB/s"


#: summary.csv column → (header shown to people, formatter)
_DISPLAY: dict[str, tuple[str, Any]] = {
    "strategy": ("strategy", str),
    "source": ("source", str),
    "ready_s": ("ready", fmt_s),
    "workload_done_s": ("workload done", fmt_s),
    "total_s": ("total", fmt_s),
    "bytes_fetched": ("fetched over the network", fmt_bytes),
    "requests": ("requests", lambda v: "–" if pd.isna(v) else f"{int(v)}"),
    "bytes_written": ("written to disk", fmt_bytes),
    "bytes_read": ("read by the workload", fmt_bytes),
    "files_read": ("files read", lambda v: "–" if pd.isna(v) else f"{int(v)}"),
    "fraction_read": ("share of the image read", fmt_pct),
}


def display_summary(summary: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The summary table as text with units (``0.55 s``, ``25.1 MB``, ``6.0 %``), for a page or a terminal.

    Columns are those of :data:`_DISPLAY` present in ``summary``, then ``extra`` columns as they are."""
    out = pd.DataFrame(index=summary.index)
    for col in [*_DISPLAY, *extra]:
        if col not in summary.columns or col in out.columns:
            continue
        header, fmt = _DISPLAY.get(col, (col, str))
        out[header] = [fmt(v) for v in summary[col]]
    return out.reset_index(drop=True)


# --- the facts of one run ---------------------------------------------------------------------------------


def _mode(strategy: str) -> str:
    return str(strategy).split("+", 1)[0]


def _done(summary: dict[str, Any]) -> float:
    """Time to workload done, or time to ready for a run without a workload."""
    for key in ("workload_done_s", "ready_s"):
        v = summary.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            return float(v)
    return math.nan


@dataclass
class LazyCosts:
    """The measured parts of a lazy run's fixed costs (they overlap; see the module docstring)."""

    meta_fetches: int = 0  #: SOCI index and zTOC fetches
    meta_bytes: int = 0
    meta_s: float = 0.0  #: summed durations of those fetches
    lazy_layers: int = 0  #: layers served through FUSE (those with a zTOC)
    local_layers: int = 0  #: layers without a zTOC, pulled and unpacked whole
    mount_s: float = 0.0  #: from the first lazy layer's mount starting to the last one's answering
    span_fetches: int = 0  #: spans fetched on demand once the workload ran
    span_bytes: int = 0
    span_s: float = 0.0  #: summed durations of those fetches


def lazy_costs(events: pd.DataFrame, workload_start: float | None = None) -> LazyCosts:
    """The parts of a lazy run's fixed cost, from its events."""
    c = LazyCosts()
    ok = events[events["ok"].astype(bool)] if "ok" in events.columns else events
    meta = ok[ok["kind"].isin(("index_fetch", "ztoc_fetch"))]
    c.meta_fetches = len(meta)
    c.meta_bytes = int(meta["bytes"].fillna(0).sum())
    c.meta_s = float((meta["t_end"] - meta["t_start"]).sum())
    lazy_layers = set(ok.loc[ok["kind"] == "ztoc_fetch", "layer"].dropna())
    mounts = ok[(ok["kind"] == "mount") & ok["layer"].notna()]
    c.lazy_layers = len(lazy_layers)
    c.local_layers = len(set(mounts["layer"]) - lazy_layers)
    lm = mounts[mounts["layer"].isin(lazy_layers)]
    if len(lm):
        c.mount_s = float(lm["t_end"].max() - lm["t_start"].min())
    spans = ok[ok["kind"] == "span_fetch"]
    if workload_start is not None:
        spans = spans[spans["t_end"] >= workload_start]
    c.span_fetches = len(spans)
    c.span_bytes = int(spans["bytes"].fillna(0).sum())
    c.span_s = float((spans["t_end"] - spans["t_start"]).sum())
    return c


@dataclass
class Verdict:
    """Who won one comparison (of one source: real or simulated) and the cost model's two numbers."""

    source: str
    metric: str  #: "workload done" or "ready"
    times: dict[str, float]  #: mode → seconds
    winner: str
    lazy_won: bool | None = None  #: None without both a lazy and an eager run
    eager: str | None = None  #: the fastest eager mode
    eager_bytes: int = 0
    lazy_bytes: int = 0
    pace_s_per_mb: float = math.nan  #: the fastest eager mode's seconds per MB fetched
    saved_s: float = math.nan  #: lazy's unmoved bytes at that pace
    fixed_s: float = math.nan  #: lazy's time its bytes do not explain
    margin_s: float = math.nan  #: eager − lazy (positive: lazy won)
    costs: LazyCosts | None = None
    sentences: list[str] = field(default_factory=list)


def verdict(runs: Iterable[Any], source: str | None = None) -> Verdict | None:
    """The :class:`Verdict` of ``runs`` of one source (``real`` by default when present, else ``sim``).

    One run per mode is used (the first met); None when fewer than two modes ran."""
    runs = list(runs)
    sources = {getattr(r, "source", None) for r in runs}
    source = source or ("real" if "real" in sources else "sim")
    by_mode: dict[str, Any] = {}
    for r in runs:
        if getattr(r, "source", None) == source:
            by_mode.setdefault(_mode(r.strategy), r)
    if len(by_mode) < 2:
        return None
    uses_done = all(not math.isnan(_done_only(r.summary)) for r in by_mode.values())
    metric = "workload done" if uses_done else "ready"
    times = {
        m: (_done(r.summary) if uses_done else float(r.summary.get("ready_s", math.nan))) for m, r in by_mode.items()
    }
    if any(math.isnan(t) for t in times.values()):
        return None
    order = sorted(times, key=times.__getitem__)
    v = Verdict(source=source, metric=metric, times=times, winner=order[0])
    v.sentences.append(_winner_sentence(v, order))
    eagers = [m for m in order if m in EAGER]
    if "lazy" not in by_mode or not eagers:
        return v
    lazy, v.eager = by_mode["lazy"], eagers[0]
    eager = by_mode[v.eager]
    v.eager_bytes = int(eager.summary.get("bytes_fetched") or 0)
    v.lazy_bytes = int(lazy.summary.get("bytes_fetched") or 0)
    v.lazy_won = times["lazy"] < times[v.eager]
    v.margin_s = times[v.eager] - times["lazy"]
    if v.eager_bytes > 0:
        pace = times[v.eager] / v.eager_bytes  # s per byte
        v.pace_s_per_mb = pace * 1e6
        v.saved_s = (v.eager_bytes - v.lazy_bytes) * pace
        v.fixed_s = times["lazy"] - v.lazy_bytes * pace
    ready = lazy.summary.get("ready_s")
    v.costs = lazy_costs(lazy.events, None if ready is None or math.isnan(ready) else float(ready))
    v.sentences.append(_bytes_sentence(v, lazy, eager))
    v.sentences.append(_costs_sentence(v.costs))
    if v.eager_bytes > 0:
        v.sentences.append(_why_sentence(v))
    return v


def _done_only(summary: dict[str, Any]) -> float:
    v = summary.get("workload_done_s")
    return math.nan if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _winner_sentence(v: Verdict, order: list[str]) -> str:
    best = v.times[order[0]]
    others = []
    for m in order[1:]:
        d = v.times[m] - best
        rel = f", +{100 * d / best:.0f} %" if best > 0 else ""
        others.append(f"{m} {fmt_s(v.times[m])} (+{fmt_s(d)}{rel})")
    what = "finished the workload" if v.metric == "workload done" else "was ready"
    src = "" if v.source == "real" else " (simulated)"
    head = f"{order[0].capitalize()}{src} {what} first, {fmt_s(best)} after the pull started; "
    return head + ", ".join(others) + "."


def _bytes_sentence(v: Verdict, lazy: Any, eager: Any) -> str:
    less = 1 - v.lazy_bytes / v.eager_bytes if v.eager_bytes else math.nan
    how = f"{fmt_pct(less)} less" if less >= 0 else f"{fmt_pct(-less)} more"
    return (
        f"Lazy moved {fmt_bytes(v.lazy_bytes)} over the network in {int(lazy.summary.get('requests') or 0)} requests "
        f"and wrote {fmt_bytes(lazy.summary.get('bytes_written'))} to disk; {v.eager} moved "
        f"{fmt_bytes(v.eager_bytes)} in {int(eager.summary.get('requests') or 0)} requests and wrote "
        f"{fmt_bytes(eager.summary.get('bytes_written'))} — lazy moved {how}."
    )


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _costs_sentence(c: LazyCosts) -> str:
    parts = [
        f"{_plural(c.meta_fetches, 'fetch', 'fetches')} of its SOCI index and zTOCs "
        f"({fmt_bytes(c.meta_bytes)}, {fmt_s(c.meta_s)})"
    ]
    if c.lazy_layers:
        parts.append(f"mounting {_plural(c.lazy_layers, 'lazy layer')} through FUSE ({fmt_s(c.mount_s)})")
    if c.local_layers:
        parts.append(f"{_plural(c.local_layers, 'layer')} without a zTOC pulled and unpacked whole")
    waits = (
        f"waiting for {_plural(c.span_fetches, 'span')} fetched on demand "
        f"({fmt_bytes(c.span_bytes)}, {fmt_s(c.span_s)})"
        if c.span_fetches
        else "no span fetched on demand during the workload"
    )
    return "Lazy's fixed costs, which the eager modes do not pay: " + ", ".join(parts) + f"; then {waits}."


def fixed_cost_text(v: Verdict) -> str:
    """Lazy's fixed cost in words: a duration, or — when lazy took less time than its own bytes at the
    eager pace (its mounts and fetches overlapped its transfers, or it moved its bytes faster) — that."""
    if v.fixed_s > 0:
        return f"{fmt_s(v.fixed_s)} of lazy's time that its bytes do not explain"
    return "no time beyond what lazy's own bytes take at that pace (its fixed costs hid behind its transfers)"


def _why_sentence(v: Verdict) -> str:
    saved_mb = (v.eager_bytes - v.lazy_bytes) / 1e6
    head = (
        f"Why: {v.eager} spent {fmt_s(v.pace_s_per_mb)} per MB it moved (download and unpack, "
        f"{fmt_bytes(v.eager_bytes)} in {fmt_s(v.times[v.eager])}); at that pace the {saved_mb:.1f} MB lazy did not "  # type: ignore[index]
        f"move were worth {fmt_s(v.saved_s)}, against {fixed_cost_text(v)}"
    )
    if v.lazy_won:
        return head + f" — the bytes weighed more than the fixed costs, so lazy won by {fmt_s(v.margin_s)}."
    return head + f" — the fixed costs weighed more than the bytes, so lazy lost by {fmt_s(-v.margin_s)}."


def sim_sentence(runs: Iterable[Any]) -> str | None:
    """How far the simulation was from the real runs (time to workload done, per mode), or None."""
    real: dict[str, float] = {}
    sim: dict[str, float] = {}
    for r in runs:
        target = real if getattr(r, "source", None) == "real" else sim if getattr(r, "source", None) == "sim" else None
        if target is not None:
            target.setdefault(_mode(r.strategy), _done(r.summary))
    errs = {m: sim[m] / real[m] - 1 for m in real if m in sim and real[m] > 0 and not math.isnan(sim[m])}
    if not errs:
        return None
    worst = max(errs, key=lambda m: abs(errs[m]))
    each = ", ".join(f"{m} {100 * e:+.0f} %" for m, e in errs.items())
    return (
        f"The simulator, calibrated from these real runs, was off the real time to workload done by at most "
        f"{100 * abs(errs[worst]):.0f} % ({each}; simulated against real)."
    )


def findings(runs: Iterable[Any]) -> list[str]:
    """The report's findings: the verdict's sentences (real runs, else simulated) and the simulator's error."""
    runs = list(runs)
    out: list[str] = []
    v = verdict(runs)
    if v is not None:
        out += v.sentences
    s = sim_sentence(runs)
    if s:
        out.append(s)
    return out
