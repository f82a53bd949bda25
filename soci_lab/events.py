"""One event schema for every real and simulated step (architecture.md §3).

An :class:`EventRecorder` belongs to one run. Any room — async code on the loop, worker threads doing
inflate or untar, the simpy model with its simulated clock — appends :class:`Event` records to it; the run
then turns them into a tidy DataFrame, or writes them as CSV, JSONL or Parquet. Real and simulated runs
share this type so one plot can overlay them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

#: The closed vocabulary of ``kind``. Add here, in one place, when a room needs a new one.
KINDS: frozenset[str] = frozenset(
    {
        "http_request",
        "blob_download",
        "chunk_download",
        "verify",
        "decompress",
        "apply",
        "index_fetch",
        "ztoc_fetch",
        "ztoc_build",
        "span_fetch",
        "span_verify",
        "span_decompress",
        "cache_hit",
        "bg_fetch",
        "prefetch",
        "file_read",
        "file_op",
        "mount",
        "unmount",
        "ready",
        "workload",
        "job_status",
        "push",
        "error",
    }
)

COLUMNS: tuple[str, ...] = (
    "run_id",
    "source",
    "strategy",
    "kind",
    "t_start",
    "t_end",
    "layer",
    "span",
    "path",
    "bytes",
    "ok",
    "error",
    "attrs",
)


@dataclass(slots=True)
class Event:
    """One step of a run: what happened, when (seconds since the run started), to what, and how it went."""

    run_id: str
    source: str
    strategy: str
    kind: str
    t_start: float
    t_end: float
    layer: str | None = None
    span: int | None = None
    path: str | None = None
    bytes: int = 0
    ok: bool = True
    error: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.t_end - self.t_start


class EventRecorder:
    """Collects the events of one run; safe to call from the event loop and from worker threads.

    ``clock`` returns the current time in seconds; by default the monotonic clock, measured from the
    recorder's creation. The simulator passes its simpy ``env.now`` instead (``origin=0``).
    """

    def __init__(
        self,
        run_id: str | None = None,
        *,
        source: str = "real",
        strategy: str = "",
        clock: Callable[[], float] = time.monotonic,
        origin: float | None = None,
    ) -> None:
        if source not in ("real", "sim"):
            raise InvalidInput(f"event source must be 'real' or 'sim', not {source!r}")
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.source = source
        self.strategy = strategy
        self._clock = clock
        self._origin = clock() if origin is None else origin
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Event], None]] = []

    def now(self) -> float:
        """Seconds since the run started."""
        return self._clock() - self._origin

    def emit(
        self,
        kind: str,
        t_start: float,
        t_end: float | None = None,
        *,
        layer: str | None = None,
        span: int | None = None,
        path: str | None = None,
        nbytes: int = 0,
        ok: bool = True,
        error: str | None = None,
        strategy: str | None = None,
        **attrs: Any,
    ) -> Event:
        """Record one event; ``t_end`` defaults to now. Returns it."""
        if kind not in KINDS:
            raise InvalidInput(f"unknown event kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
        event = Event(
            run_id=self.run_id,
            source=self.source,
            strategy=self.strategy if strategy is None else strategy,
            kind=kind,
            t_start=t_start,
            t_end=self.now() if t_end is None else t_end,
            layer=layer,
            span=span,
            path=path,
            bytes=int(nbytes),
            ok=ok,
            error=error,
            attrs=attrs,
        )
        with self._lock:
            self._events.append(event)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
        return event

    @contextmanager
    def step(self, kind: str, **fields_: Any) -> Iterator[dict[str, Any]]:
        """Time a block as one event. The yielded dict may be updated (``nbytes``, attrs) before it ends.

        An exception inside the block is recorded (``ok=False`` with its one-line message) and re-raised.
        """
        t0 = self.now()
        info: dict[str, Any] = dict(fields_)
        try:
            yield info
        except BaseException as exc:
            info["ok"] = False
            info["error"] = (str(exc) or type(exc).__name__).splitlines()[0]
            self.emit(kind, t0, **info)
            raise
        else:
            self.emit(kind, t0, **info)

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` with every event as it is recorded (progress bars, live plots)."""
        with self._lock:
            self._listeners.append(listener)

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def to_frame(self) -> pd.DataFrame:
        return events_to_frame(self.events)

    def write(self, path: str | Path) -> Path:
        return write_events(self.events, path)


class NullRecorder(EventRecorder):
    """A recorder that keeps nothing, for callers that do not instrument."""

    def emit(self, kind: str, t_start: float, t_end: float | None = None, **kw: Any) -> Event:  # type: ignore[override]
        return Event(self.run_id, self.source, self.strategy, kind, t_start, t_start)


def events_to_frame(events: list[Event]) -> pd.DataFrame:
    """The tidy DataFrame of architecture.md §3, one row per event, columns in schema order."""
    import pandas as pd

    return _normalise(pd.DataFrame([asdict(e) for e in events], columns=list(COLUMNS)))


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """One dtype per column whatever the source: nullable text as object with None, span as Int64."""
    for col in ("run_id", "source", "strategy", "kind", "layer", "path", "error"):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame.astype({"t_start": "float64", "t_end": "float64", "bytes": "int64", "ok": "bool", "span": "Int64"})[
        list(COLUMNS)
    ]


def write_events(events: list[Event] | pd.DataFrame, path: str | Path) -> Path:
    """Write events as ``.csv``, ``.jsonl`` or ``.parquet`` by the file's extension."""
    path = Path(path)
    frame = events if not isinstance(events, list) else events_to_frame(events)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".parquet"):
        raise InvalidInput(f"events file must end in .csv, .jsonl or .parquet: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame.copy()
    out["attrs"] = out["attrs"].map(lambda a: json.dumps(a, sort_keys=True, default=str))
    if suffix == ".csv":
        out.to_csv(path, index=False)
    elif suffix == ".jsonl":
        out.to_json(path, orient="records", lines=True)
    else:
        out.to_parquet(path, index=False)
    return path


def read_events(path: str | Path) -> pd.DataFrame:
    """Read an events file written by :func:`write_events` back into the same DataFrame shape."""
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = pd.read_csv(path, keep_default_na=True)
    elif suffix == ".jsonl":
        frame = pd.read_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        raise InvalidInput(f"events file must end in .csv, .jsonl or .parquet: {path}")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidInput(f"{path} is not an events file: missing columns {', '.join(missing)}")
    frame["attrs"] = frame["attrs"].map(lambda s: json.loads(s) if isinstance(s, str) and s else {})
    return _normalise(frame)


EVENT_FIELDS = tuple(f.name for f in fields(Event))
