"""Summaries of runs: the numbers of ``summary.csv``, computed from events alone.

One rule for real and simulated runs, so the two can be compared number by number:

- ``ready_s``: the earliest ``t_end`` of an ok ``ready`` event (NaN when the run never became ready);
- ``workload_done_s``: the latest ``t_end`` of a ``workload`` event (NaN without a workload);
- ``total_s``: the latest ``t_end`` of any event (0 for an empty run);
- **bytes over the network** and **requests**, by :func:`network_events`: when the run has any
  ``http_request`` event, those events *are* the network — ``requests`` counts every one (failed
  attempts and retries included, they cost a round trip) and ``bytes_fetched`` sums the bytes of the ok
  ones. A run without ``http_request`` events (a simulation that models transfers, not requests) falls
  back to its transfer events, one per request: ``index_fetch``, ``ztoc_fetch``, ``span_fetch``, and per
  layer either its ``chunk_download`` events or, when it has none, its ``blob_download`` events (a blob
  fetched in chunks is never counted twice). ``bg_fetch`` and ``prefetch`` only say *why* spans were
  fetched; their transfers are ``span_fetch`` events, so they are never counted;
- ``bytes_written``: the bytes of ok ``apply`` events;
- ``fraction_read``: the distinct bytes of file data read (ok ``file_read`` events; the range of one is
  ``[offset, offset + bytes)`` (the ``offset`` detail column), offset 0 when absent; overlapping and repeated reads of
  a path count once) over the image's uncompressed size; NaN when that size is unknown.

Extras in the dict: ``bytes_read`` (those distinct bytes), ``files_read`` (distinct paths), ``image_bytes``,
``events`` (count), ``network_rule`` (``"http_request"`` or ``"transfers"``: which rule applied) and
``pull_share``: the pull's share of start-up time, ``ready_s / workload_done_s`` (start-up: from the pull's
start to the workload done; NaN without a workload) — with ``fraction_read`` the two numbers of Slacker
(Harter et al., FAST '16: pulling is 76 % of start-up, 6.4 % of the image's data is read), for real and
simulated runs alike, so a notebook compares them across images and modes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..errors import AnalysisError
from ..events import COLUMNS, Event, detail, events_to_frame, upgrade_frame

#: The columns of summary.csv, in order (cli.md, "Report files").
SUMMARY_COLUMNS: tuple[str, ...] = (
    "strategy",
    "source",
    "ready_s",
    "workload_done_s",
    "total_s",
    "bytes_fetched",
    "requests",
    "bytes_written",
    "fraction_read",
)

#: Transfer kinds used when a run has no ``http_request`` events (see the module docstring).
TRANSFER_KINDS: tuple[str, ...] = ("index_fetch", "ztoc_fetch", "span_fetch", "chunk_download", "blob_download")


def as_frame(events: pd.DataFrame | Iterable[Event]) -> pd.DataFrame:
    """Events as the tidy DataFrame of architecture.md §3 (a list of :class:`Event` is converted)."""
    if isinstance(events, pd.DataFrame):
        missing = [c for c in COLUMNS if c not in events.columns]
        if missing:
            raise AnalysisError(f"not an events frame: missing columns {', '.join(missing)}")
        return upgrade_frame(events)
    return events_to_frame(list(events))


def network_events(events: pd.DataFrame | Iterable[Event]) -> tuple[pd.DataFrame, str]:
    """The events that stand for network requests, one row each, and the name of the rule that chose them.

    ``http_request`` events when there are any (rule ``"http_request"``), else the transfer events of the
    fallback rule (``"transfers"``) described in the module docstring.
    """
    frame = as_frame(events)
    http = frame[frame["kind"] == "http_request"]
    if len(http):
        return http, "http_request"
    chunks = frame[frame["kind"] == "chunk_download"]
    chunked_layers = set(chunks["layer"].dropna())
    blobs = frame[frame["kind"] == "blob_download"]
    if chunked_layers:
        blobs = blobs[~blobs["layer"].isin(chunked_layers)]
    other = frame[frame["kind"].isin(("index_fetch", "ztoc_fetch", "span_fetch"))]
    chosen = pd.concat([other, chunks, blobs]).sort_values(["t_end", "t_start"], kind="stable")
    return chosen, "transfers"


def merged_length(ranges: Iterable[tuple[int, int]]) -> int:
    """Bytes covered by half-open ranges ``[start, end)``; overlaps count once."""
    total = 0
    cur_start = cur_end = None
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start  # type: ignore[operator]
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start  # type: ignore[operator]
    return total


def file_reads(events: pd.DataFrame | Iterable[Event]) -> pd.DataFrame:
    """The ok ``file_read`` events that stand for the workload's reads.

    A lazy run has reads at two levels: the workload's (a replayed trace: no ``layer``) and, merged from
    its FUSE servers, each layer's own (``layer`` set, rounded to the kernel's request sizes). When a run
    has workload-level reads, only those count, so one read is never counted twice; otherwise (a simulated
    run, a recorded command with only the FUSE view) every ok read does.
    """
    frame = as_frame(events)
    reads = frame[(frame["kind"] == "file_read") & frame["ok"]]
    top = reads[reads["layer"].isna()]
    return top if len(top) else reads


def read_ranges(events: pd.DataFrame | Iterable[Event]) -> dict[str, list[tuple[int, int]]]:
    """Per path, the ``[offset, offset + bytes)`` ranges of ok ``file_read`` events (see :func:`file_reads`)."""
    reads = file_reads(events)
    reads = reads[reads["bytes"] > 0]
    out: dict[str, list[tuple[int, int]]] = {}
    for path, nbytes, off in zip(reads["path"], reads["bytes"], detail(reads, "offset"), strict=True):
        offset = 0 if off is None or pd.isna(off) else int(off)
        out.setdefault(str(path), []).append((offset, offset + int(nbytes)))
    return out


def distinct_bytes_read(events: pd.DataFrame | Iterable[Event]) -> int:
    """Distinct bytes of file data read, overlapping reads of one path counted once."""
    return sum(merged_length(r) for r in read_ranges(events).values())


def _one(frame: pd.DataFrame, column: str) -> Any:
    values = frame[column].dropna().unique()
    if len(values) > 1:
        raise AnalysisError(
            f"summarize() takes the events of one run; these have {len(values)} values of {column!r} "
            f"({', '.join(map(str, values[:4]))}…); use summary_frame() for many runs"
        )
    return values[0] if len(values) else None


def summarize(
    events: pd.DataFrame | Iterable[Event],
    image_bytes: int | None = None,
    *,
    run_id: str | None = None,
    source: str | None = None,
    strategy: str | None = None,
) -> dict[str, Any]:
    """The summary of one run (the rules are in this module's docstring).

    ``image_bytes`` is the image's uncompressed size, the denominator of ``fraction_read``. ``run_id``,
    ``source`` and ``strategy`` default to the events' own (which must be unique).
    """
    frame = as_frame(events)
    run_id = run_id if run_id is not None else _one(frame, "run_id")
    source = source if source is not None else _one(frame, "source")
    strategy = strategy if strategy is not None else _one(frame, "strategy")

    def t_end_of(kind: str, how: str) -> float:
        sel = frame[(frame["kind"] == kind) & frame["ok"]]
        if not len(sel):
            return math.nan
        return float(sel["t_end"].min() if how == "min" else sel["t_end"].max())

    net, rule = network_events(frame)
    applies = frame[(frame["kind"] == "apply") & frame["ok"]]
    ranges = read_ranges(frame)
    bytes_read = sum(merged_length(r) for r in ranges.values())
    if image_bytes is not None and image_bytes <= 0:
        raise AnalysisError(f"image_bytes must be positive, not {image_bytes}")
    ready, done = t_end_of("ready", "min"), t_end_of("workload", "max")
    return {
        "run_id": run_id,
        "strategy": strategy,
        "source": source,
        "ready_s": ready,
        "workload_done_s": done,
        "total_s": float(frame["t_end"].max()) if len(frame) else 0.0,
        "bytes_fetched": int(net.loc[net["ok"], "bytes"].sum()),
        "requests": len(net),
        "bytes_written": int(applies["bytes"].sum()),
        "fraction_read": bytes_read / image_bytes if image_bytes else math.nan,
        "bytes_read": int(bytes_read),
        "files_read": len(ranges),
        "image_bytes": int(image_bytes) if image_bytes else None,
        "events": len(frame),
        "network_rule": rule,
        "pull_share": ready / done if done > 0 and ready == ready else math.nan,
    }


def summary_frame(runs: Any) -> pd.DataFrame:
    """One row per run, the columns of summary.csv first, then ``run_id`` and the extras.

    ``runs`` is a run, a list of runs (anything with a ``summary`` dict — :class:`soci_lab.run.Run`), or an
    events DataFrame holding one or many runs (summarised per ``run_id``, without ``fraction_read``).
    Rows are ordered by strategy (sequential, parallel, lazy, …) then source (real before sim).
    """
    from .style import strategy_sort_key

    if isinstance(runs, pd.DataFrame):
        rows = [summarize(group) for _, group in as_frame(runs).groupby("run_id", sort=False)]
    else:
        items = runs if isinstance(runs, (list, tuple)) else [runs]
        rows = []
        for item in items:
            summary = getattr(item, "summary", None)
            if not isinstance(summary, dict):
                raise AnalysisError(f"not a run (no summary dict): {type(item).__name__}")
            rows.append(dict(summary))
    frame = pd.DataFrame(rows)
    for col in (*SUMMARY_COLUMNS, "run_id"):
        if col not in frame.columns:
            frame[col] = math.nan
    rest = [c for c in frame.columns if c not in SUMMARY_COLUMNS and c != "run_id"]
    frame = frame[[*SUMMARY_COLUMNS, "run_id", *rest]]
    if len(frame):
        order = sorted(
            range(len(frame)),
            key=lambda i: (
                strategy_sort_key(str(frame["strategy"].iat[i])),
                0 if frame["source"].iat[i] == "real" else 1,
                str(frame["run_id"].iat[i]),
            ),
        )
        frame = frame.iloc[order].reset_index(drop=True)
    return frame
