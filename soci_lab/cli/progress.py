"""Per-layer progress bars on a terminal, driven by a run's own events (docs/cli.md: "Long work shows a
progress bar on a terminal (stderr) and stays quiet when stderr is not a TTY").

The library reports each finished step as an event (``events.py``); a :class:`LayerProgress` subscribes to
the run's recorder and moves a tqdm bar on stderr by one each time a layer reaches the step that finishes it
for this command (``push`` for ``image build``, ``ztoc_build`` for ``index create``, ``mount`` for a pull),
showing the bytes moved so far. Nothing is drawn when stderr is not a terminal or with ``--json``.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..events import Event, EventRecorder

#: event kinds whose bytes count as "moved" in the bar's postfix
BYTE_KINDS = frozenset({"http_request", "push"})


def wanted(args: Any, stream: IO[str] | None = None) -> bool:
    """Whether to draw: stderr is a terminal and no ``--json`` was asked for."""
    stream = sys.stderr if stream is None else stream
    return not getattr(args, "json", False) and bool(getattr(stream, "isatty", lambda: False)())


def _columns(stream: IO[str]) -> int:
    import os

    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


class LayerProgress:
    """A bar counting layers as they finish (``done_kind`` events that name a layer); a context manager.

    ``total`` is the number of layers when known (``image build``), else the bar just counts. With
    ``enabled=False`` it does nothing at all (no tqdm import, no subscription).
    """

    def __init__(self, recorder: EventRecorder | None, what: str, done_kind: str, *, total: int | None = None,
                 enabled: bool = True, stream: IO[str] | None = None) -> None:
        self.what = what
        self.done_kind = done_kind
        self.done: set[str] = set()
        self.moved = 0
        self._lock = threading.Lock()
        self._bar: Any = None
        if not enabled or recorder is None:
            return
        from tqdm import tqdm

        stream = stream or sys.stderr
        counting = "{desc}: layers done {n_fmt} [{elapsed}]{postfix}"
        sized = _columns(stream) > 0  # a terminal that reports no size (0 columns) gets 80, not an empty bar
        self._bar = tqdm(total=total, desc=what, unit="layer", file=stream, leave=True, dynamic_ncols=sized,
                         ncols=None if sized else 80, bar_format=None if total else counting)
        recorder.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if self._bar is None:
            return
        from ..units import format_size

        with self._lock:
            if event.kind in BYTE_KINDS:
                self.moved += event.bytes
            if event.kind == self.done_kind and event.layer and event.layer not in self.done and event.ok:
                self.done.add(event.layer)
                self._bar.set_postfix_str(f"{event.layer[7:19]}, {format_size(self.moved)}", refresh=False)
                self._bar.update(1)

    def close(self) -> None:
        """Take the bar down (it stays on screen as the last line; later output starts below it)."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def __enter__(self) -> LayerProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
