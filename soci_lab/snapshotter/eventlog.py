"""The daemon's events, appended to a ``.jsonl`` file as they happen so a notebook can read it any time.

Each line is one row of the event schema (:mod:`soci_lab.events`) in the format ``write_events`` uses for
``.jsonl`` (the schema's columns, then each detail under its column name, nested values as JSON text), so
:func:`soci_lab.events.read_events` reads the file back; a daemon killed mid-run leaves every event it
finished.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

from ..errors import InvalidInput
from ..events import Event, EventRecorder, detail_column


class EventLog:
    """Subscribes to ``recorder`` and appends each event to ``path`` (line-buffered, flushed per event)."""

    def __init__(self, recorder: EventRecorder, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".jsonl":
            raise InvalidInput(f"the snapshotter's events file must end in .jsonl: {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        recorder.subscribe(self._write)

    def _write(self, event: Event) -> None:
        row = dataclasses.asdict(event)
        for key, value in (row.pop("attrs") or {}).items():
            nested = isinstance(value, (dict, list, tuple))
            row[detail_column(key)] = json.dumps(value, sort_keys=True, default=str) if nested else value
        with self._lock:
            if not self._file.closed:
                self._file.write(json.dumps(row, default=str) + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
