"""Splitting "runs" — a run, a list of runs, or an events frame of many runs — into one frame per run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd

from ..errors import AnalysisError
from .style import strategy_sort_key
from .summary import as_frame


def events_by_run(runs: Any) -> Iterator[tuple[tuple[str, str, str], pd.DataFrame]]:
    """``((strategy, source, run_id), events)`` per run, ordered by strategy then source (real first)."""
    items: list[tuple[tuple[str, str, str], pd.DataFrame]] = []
    if isinstance(runs, pd.DataFrame):
        for run_id, group in as_frame(runs).groupby("run_id", sort=False):
            items.append(((_first(group, "strategy"), _first(group, "source"), str(run_id)), group))
    else:
        for run in runs if isinstance(runs, (list, tuple)) else [runs]:
            events = getattr(run, "events", None)
            if not isinstance(events, pd.DataFrame):
                raise AnalysisError(f"not a run (no events frame): {type(run).__name__}")
            key = (str(getattr(run, "strategy", "") or ""), str(getattr(run, "source", "") or ""), str(run.run_id))
            items.append((key, as_frame(events)))
    items.sort(key=lambda it: (strategy_sort_key(it[0][0]), 0 if it[0][1] == "real" else 1, it[0][2]))
    yield from items


def all_events(runs: Any) -> pd.DataFrame:
    """The events of every run in one frame (the shape of events.csv)."""
    frames = [events for _, events in events_by_run(runs)]
    if not frames:
        raise AnalysisError("no runs given")
    return pd.concat(frames, ignore_index=True)


def _first(events: pd.DataFrame, column: str) -> str:
    values = events[column].dropna()
    return str(values.iloc[0]) if len(values) else ""
