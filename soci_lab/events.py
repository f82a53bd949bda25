"""One event schema for every real and simulated step (architecture.md §3).

An :class:`EventRecorder` belongs to one run. Any room — async code on the loop, worker threads doing
inflate or untar, the simpy model with its simulated clock — appends :class:`Event` records to it; the run
then turns them into a tidy DataFrame, or writes them as CSV, JSONL or Parquet. Real and simulated runs
share this type so one plot can overlay them.

In the frame every event is one row: the schema's columns (:data:`COLUMNS`), then one column per detail
key any event carries (an event's ``attrs``: HTTP ``status``, ``range``, ``retry``, a mount's ``how`` …),
empty where an event has no such detail. So ``frame.query("kind == 'http_request' and status == 206")``
works, and :func:`of_kind` gives one kind's events with only the columns that kind uses. A detail whose
name would shadow a DataFrame attribute or a schema column gets a trailing ``_`` (:func:`detail_column`:
``size`` → ``size_``, ``mode`` → ``mode_``, ``from`` → ``from_``); :func:`detail` reads one by its key.
"""

from __future__ import annotations

import functools
import json
import keyword
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
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

#: The schema's columns, in order; the detail columns follow them in a frame.
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
)


#: What a detail's type may be: ``int`` (not bool), ``float`` (any number but bool), ``bool``, ``str``,
#: ``list`` (a list or tuple; JSON text in files), ``dict``. ``None`` is always allowed (no such detail).
DETAIL_TYPES: tuple[type, ...] = (int, float, bool, str, list, dict)

#: The detail keys (``attrs``) each ``kind`` may carry, with their types — next to :data:`KINDS`, so a room
#: adding a detail declares it here, and readers (``sim/calibrate.py``, notebooks) read declared names only.
#: ``tests/core/test_core_event_details.py`` runs real pulls and simulations and holds every emitted
#: event to this table (:func:`undeclared_details`, :func:`frame_detail_problems`).
DETAILS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "http_request": {
        "method": str, "status": int, "range": (str, list), "retry": int, "host": str, "via": str,
        "redirected": bool, "fast": bool, "reused": bool, "what": str, "again": bool,
    },
    "blob_download": {"chunks": int, "host": str, "image": str},
    "chunk_download": {"chunk": int, "lower": int, "upper": int, "queue_wait": float},
    "verify": {"what": str, "expected": str, "got": str, "entries": int, "spans": int},
    "decompress": {"compression": str, "compressed_bytes": int, "impl": str, "streamed": bool, "cpu_s": float},
    "apply": {
        "entries": int, "files": int, "dirs": int, "symlinks": int, "hardlinks": int, "whiteouts": int,
        "opaques": int, "cpu_s": float, "how": str, "op": str, "key": str,
    },
    "index_fetch": {"digest": str, "via": str, "local": bool, "version": str, "blobs": int},
    "ztoc_fetch": {"digest": str, "local": bool, "media_type": str},
    "ztoc_build": {},
    "span_fetch": {"attempt": int, "range": str, "reason": str, "background": bool, "why": str},
    "span_verify": {"attempt": int},
    "span_decompress": {"compression": str, "from_cache": bool},
    "cache_hit": {"cache": str, "waited": bool, "where": str},
    "bg_fetch": {"more": bool},
    "prefetch": {"spans": int},
    "file_read": {
        "offset": int, "size": int, "trace_t_s": float, "recorded": bool, "via": str, "fuse_requests": int,
        "first_read": bool, "missed": bool,
    },
    "file_op": {"op": str, "result": int, "trace_t_s": float, "recorded": bool, "via": str},
    "mount": {
        "how": str, "what": str, "via": str, "entries": int, "cpu_s": float, "layers": int, "writable": bool,
        "reason": str, "spawn": str, "op": str, "parent": str,
    },
    "unmount": {"op": str, "removed": int},
    "ready": {"mode": str, "via": str, "hows": dict, "reason": str, "cmd_s": float, "readiness": str, "op": str,
              "layers": int},
    "workload": {
        "mode": str, "rows": int, "failed": int, "accesses": int, "speed": float, "cmd": list, "cmd_s": float,
        "exit_code": int, "timing": str, "own_s": float, "cpu_fraction": float, "first_output_s": float,
        "readiness": str,
    },
    "job_status": {"job": str, "image": str, "from": str, "to": str},
    "push": {"digest": str},
    "error": {"op": str, "fallback": str},
}  # fmt: skip

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


def is_missing(value: object) -> bool:
    """None, NaN or pandas' NA: an empty cell of a frame or an unset event field (pandas not imported)."""
    return value is None or type(value).__name__ == "NAType" or value != value  # NaN is not equal to itself


def event_rows(events: pd.DataFrame | Iterable[Event], *columns: str) -> list[tuple[Any, ...]]:
    """The named schema columns (``kind``, ``ok``, ``bytes``, ``layer``, ``span``, ``path`` …) of each event, as
    plain tuples, from a list of events or from a frame. Lets a command count a handful of events without
    building a DataFrame (~50 ms, and pandas' import in a process that has none yet)."""
    if hasattr(events, "columns"):
        frame: Any = events
        if frame.empty:
            return []
        return list(zip(*(frame[c] for c in columns), strict=True))
    return [tuple(getattr(e, c) for c in columns) for e in events]


def detail_column(key: str) -> str:
    """The column a detail key becomes: the key itself, or the key with a trailing ``_`` when the bare name
    would shadow a DataFrame attribute (``size``, ``mode``, ``attrs`` …), a schema column or a Python
    keyword (``from``), so ``frame.status`` and ``frame.query("status == 206")`` always mean the column."""
    name = str(key)
    if name in COLUMNS or keyword.iskeyword(name) or name in _dataframe_attributes() or not name:
        return name + "_"
    return name


@functools.cache
def _dataframe_attributes() -> frozenset[str]:
    import pandas as pd

    return frozenset(dir(pd.DataFrame))


def detail_columns(frame: pd.DataFrame) -> list[str]:
    """The detail columns of an events frame: every column after the schema's (architecture.md §3)."""
    return [c for c in frame.columns if c not in COLUMNS]


def detail(frame: pd.DataFrame, key: str) -> pd.Series:
    """The detail ``key`` of every event (its column, see :func:`detail_column`), missing values as None/NA;
    a key no event carries gives a column of None, so callers need not check that it exists."""
    import pandas as pd

    column = detail_column(key)
    if column in frame.columns:
        return frame[column]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object, name=column)


def of_kind(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The events of one ``kind`` with only the detail columns that kind uses (the others are all empty)."""
    rows = frame[frame["kind"] == kind]
    used = [c for c in detail_columns(rows) if rows[c].notna().any()]
    return rows[[*COLUMNS, *used]]


def normalise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of an events frame in the schema's shape: one dtype per column, detail columns typed and
    sorted by name after the schema's (frames merged from several sources come out as one)."""
    return _normalise(frame.copy())


def upgrade_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` itself, or — when it still has the first schema's ``attrs`` column of dicts — a copy with
    those details as columns (so code and notebooks written for that schema keep working)."""
    return _normalise(frame.copy()) if LEGACY_DETAILS in frame.columns else frame


def events_to_frame(events: list[Event]) -> pd.DataFrame:
    """The tidy DataFrame of architecture.md §3, one row per event: the schema's columns in order, then one
    column per detail key any event carries (sorted by name, typed: nullable ``Int64``/``boolean``, float,
    else object with None where an event has no such detail)."""
    import pandas as pd

    columns: dict[str, Any] = {c: [getattr(e, c) for e in events] for c in COLUMNS}
    keys: dict[str, None] = {}
    for e in events:
        keys.update(dict.fromkeys(e.attrs))
    for key in keys:  # as objects, so an integer beside a missing value stays an integer (not NaN's float)
        columns[detail_column(key)] = pd.Series([e.attrs.get(key) for e in events], dtype=object)
    return _normalise(pd.DataFrame(columns))


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """One dtype per column whatever the source: nullable text as object with None, span as Int64, detail
    columns typed by their values (:func:`_typed`) and sorted by name after the schema's columns."""
    import pandas as pd

    if LEGACY_DETAILS in frame.columns:
        frame = _expand_legacy(frame)
    for col in COLUMNS:
        if col not in frame.columns:
            frame[col] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    for col in ("run_id", "source", "strategy", "kind", "layer", "path", "error"):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    typed = frame.astype({"t_start": "float64", "t_end": "float64", "bytes": "int64", "ok": "bool", "span": "Int64"})
    details = sorted(detail_columns(typed))
    out = typed[[*COLUMNS, *details]].copy()
    for col in details:
        out[col] = _typed(out[col])
    return out


def _typed(col: pd.Series) -> pd.Series:
    """A detail column as the narrowest honest dtype: ``boolean`` or ``Int64`` (nullable) when every value
    is one, ``float64`` for numbers, else object (text, JSON-like values) with None for a missing value."""
    import numpy as np
    import pandas as pd

    present = col[col.notna()]
    if len(present) == 0:
        return pd.Series([None] * len(col), index=col.index, dtype=object, name=col.name)
    kinds = {type(v) for v in present.astype(object)}
    if kinds <= {bool, np.bool_}:
        return col.astype("boolean")
    if all(issubclass(k, (int, np.integer)) and not issubclass(k, (bool, np.bool_)) for k in kinds):
        try:
            return col.astype("Int64")
        except (OverflowError, TypeError, ValueError):  # beyond 64 bits: keep the Python integers
            return col.astype(object).where(col.notna(), None)
    if all(issubclass(k, (int, float, np.integer, np.floating)) and not issubclass(k, (bool, np.bool_))
           for k in kinds):
        return col.astype("float64")
    return col.astype(object).where(col.notna(), None)


#: The one column of the first schema that held every detail as a dict (as a JSON string on disk). It
#: shadowed ``DataFrame.attrs``; frames and files that still have it are expanded into detail columns.
LEGACY_DETAILS = "attrs"


def _expand_legacy(frame: pd.DataFrame) -> pd.DataFrame:
    values = [_decoded(v) for v in frame[LEGACY_DETAILS]]
    rest = frame.drop(columns=[LEGACY_DETAILS])
    keys: dict[str, None] = {}
    for v in values:
        keys.update(dict.fromkeys(v))
    extra = {detail_column(k): [v.get(k) for v in values] for k in keys if detail_column(k) not in rest.columns}
    if not extra:
        return rest
    import pandas as pd

    return pd.concat([rest, pd.DataFrame(extra, index=rest.index, dtype=object)], axis=1)


def _decoded(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            doc = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return doc if isinstance(doc, dict) else {}
    return {}


def _encode_json(value: Any) -> Any:
    """Nested detail values (dicts, lists) travel as JSON text in every file format."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _decode_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def write_events(events: list[Event] | pd.DataFrame, path: str | Path) -> Path:
    """Write events as ``.csv``, ``.jsonl`` or ``.parquet`` by the file's extension: one column per schema
    column and per detail (nested values as JSON text), readable by any CSV/Parquet tool as it is."""
    path = Path(path)
    frame = events if not isinstance(events, list) else events_to_frame(events)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".parquet"):
        raise InvalidInput(f"events file must end in .csv, .jsonl or .parquet: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = _normalise(frame.copy())
    for col in detail_columns(out):
        if out[col].dtype == object:
            values = out[col].map(_encode_json)
            if suffix == ".parquet" and len({type(v) for v in values.dropna()}) > 1:
                values = values.map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v))
            out[col] = values
    if suffix == ".csv":
        out.to_csv(path, index=False)
    elif suffix == ".jsonl":
        plain = out.astype(object).where(out.notna(), None)
        with path.open("w") as f:
            for rec in plain.to_dict("records"):
                f.write(json.dumps(rec, default=_json_scalar) + "\n")
    else:
        out.to_parquet(path, index=False)
    return path


def _json_scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def _read_jsonl(path: Path) -> pd.DataFrame:
    """JSON lines with Python's own parser, so an integer stays an integer beside missing values."""
    import pandas as pd

    with path.open() as f:
        records = [json.loads(line) for line in f if line.strip()]
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r))
    return pd.DataFrame({k: pd.Series([r.get(k) for r in records], dtype=object) for k in keys})


def read_events(path: str | Path) -> pd.DataFrame:
    """Read an events file written by :func:`write_events` back into the same DataFrame shape; a file of
    the first schema (details as JSON in one ``attrs`` column) is read into detail columns too."""
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = pd.read_csv(path, keep_default_na=True, dtype_backend="numpy_nullable")
    elif suffix == ".jsonl":
        frame = _read_jsonl(path)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        raise InvalidInput(f"events file must end in .csv, .jsonl or .parquet: {path}")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidInput(f"{path} is not an events file: missing columns {', '.join(missing)}")
    for col in frame.columns:
        if col not in COLUMNS and col != LEGACY_DETAILS:
            values = frame[col].astype(object).where(frame[col].notna(), None)
            frame[col] = values.map(_decode_json) if values.map(lambda v: isinstance(v, str)).any() else values
    return _normalise(frame)


def _type_ok(value: Any, want: type | tuple[type, ...]) -> bool:
    """``value`` fits a declared detail type (numpy scalars as their Python kinds; None always fits)."""
    import numbers

    if value is None:
        return True
    wants = want if isinstance(want, tuple) else (want,)
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    is_bool = isinstance(value, bool) or numpy_bool
    for w in wants:
        if w is bool and is_bool:
            return True
        if w is int and not is_bool and isinstance(value, numbers.Integral):
            return True
        if w is float and not is_bool and isinstance(value, numbers.Real):
            return True
        if w is str and isinstance(value, str):
            return True
        if w is list and isinstance(value, (list, tuple)):
            return True
        if w is dict and isinstance(value, dict):
            return True
    return False


def _type_name(want: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))


def undeclared_details(kind: str, attrs: dict[str, Any]) -> list[str]:
    """What in ``attrs`` (one event's details) :data:`DETAILS` does not declare for ``kind``, one line each
    (empty: all declared, with the declared types)."""
    declared = DETAILS.get(kind)
    if declared is None:
        return [f"{kind}: not a declared kind"]
    problems = []
    for key, value in attrs.items():
        if key not in declared:
            problems.append(f"{kind}: detail {key!r} is not declared (value {value!r})")
        elif not _type_ok(value, declared[key]):
            problems.append(
                f"{kind}: detail {key!r} is {type(value).__name__} {value!r}, declared {_type_name(declared[key])}"
            )
    return problems


def frame_detail_problems(frame: pd.DataFrame) -> list[str]:
    """:func:`undeclared_details` over an events frame: per kind, every detail column with a value must be a
    declared key of that kind (by :func:`detail_column`) and every value of the declared type."""
    problems: list[str] = []
    for kind, rows in frame.groupby("kind"):
        declared = DETAILS.get(str(kind), {})
        by_column = {detail_column(k): k for k in declared}
        for column in detail_columns(rows):
            values = rows[column].dropna()
            if values.empty:
                continue
            key = by_column.get(column)
            if key is None:
                problems.append(f"{kind}: detail column {column!r} is not declared (e.g. {values.iloc[0]!r})")
                continue
            bad = [v for v in values if not _type_ok(v, declared[key])]
            if bad:
                want = _type_name(declared[key])
                problems.append(f"{kind}: detail {key!r} has {type(bad[0]).__name__} {bad[0]!r}, declared {want}")
    return problems


EVENT_FIELDS = tuple(f.name for f in fields(Event))
