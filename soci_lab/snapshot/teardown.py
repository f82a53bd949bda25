"""Take down a mount made by another process (``soci-lab umount``), from its record, whatever state it is in.

Only mounts soci-lab recorded making are touched (:mod:`.ownership`): a path with no record is refused,
and so is one where anything at or under the mountpoint or the state directory is not the recorded
overlay or one of its FUSE layers — one line naming it, nothing unmounted, nothing signalled.

The serving process (a ``mount --background`` supervisor, or a foreground ``mount``) is asked first: it
gets SIGTERM, unmounts everything itself, merges its FUSE servers' events, and leaves the final numbers
in ``totals.json``. When it is gone (killed with SIGKILL, crashed) or does not stop in time, the teardown
does the same from the record alone: unmount the overlay and everything under the mountpoint, stop every
FUSE server still alive (SIGTERM, then SIGKILL — each identified by pid *and* start time, so a recycled
pid is never signalled), detach every layer mount left (``fusermount3 -u -z`` for a dead server's), read
whatever events were written, and delete the state directory. Nothing stays mounted or running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MountError, SociLabError
from ..events import event_rows, is_missing
from .overlay import mounts_under, umount
from .ownership import classify, refusal
from .state import (
    PARENT_EVENTS,
    TOTALS,
    UMOUNT_REQUEST,
    MountRecord,
    ProcessRef,
    StateDir,
    find_state_dir,
    remove_pointer,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..events import Event


@dataclass
class Totals:
    """The final numbers of a mount (``umount --json``)."""

    bytes_fetched: int = 0
    requests: int = 0
    spans_fetched: int = 0
    spans_total: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


#: the transfer kinds the summary counts as requests when a run has no ``http_request`` events
_TRANSFERS = ("index_fetch", "ztoc_fetch", "span_fetch")


def totals_of(events: pd.DataFrame | Iterable[Event], spans_total: int) -> Totals:
    """Network bytes and requests by the summary's rule (:func:`soci_lab.analysis.summary.network_events`: the
    ``http_request`` events, ok ones for bytes, when there are any; else the transfer events, whole-blob
    downloads of chunked layers left out); distinct spans fetched (ok ``span_fetch``).

    Plain Python over the events or a frame's rows, so that neither a serving process's ready report nor
    ``umount`` imports :mod:`soci_lab.analysis` (which brings matplotlib: 1.5 s of a cold command).
    """
    rows = event_rows(events, "kind", "ok", "bytes", "layer", "span")

    def size(value: object) -> int:
        return 0 if is_missing(value) else int(value)  # type: ignore[call-overload]

    def yes(ok: object) -> bool:
        return not is_missing(ok) and bool(ok)

    spans = {
        (str(layer), int(span))  # type: ignore[call-overload]
        for kind, ok, _n, layer, span in rows
        if kind == "span_fetch" and yes(ok) and not is_missing(span)
    }
    http = [(ok, n) for kind, ok, n, _layer, _span in rows if kind == "http_request"]
    if http:
        return Totals(sum(size(n) for ok, n in http if yes(ok)), len(http), len(spans), spans_total)
    chunked = {layer for kind, _ok, _n, layer, _span in rows if kind == "chunk_download" and not is_missing(layer)}
    chosen = [
        n for kind, _ok, n, layer, _span in rows
        if kind in _TRANSFERS or kind == "chunk_download" or (kind == "blob_download" and layer not in chunked)
    ]
    return Totals(sum(size(n) for n in chosen), len(chosen), len(spans), spans_total)


def stop_process(proc: ProcessRef, timeout: float = 10.0) -> None:
    """SIGTERM, wait, SIGKILL — only if ``proc`` is still the process we started."""
    if not proc.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while proc.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def _events_of(state: StateDir, record: MountRecord) -> pd.DataFrame:
    from ..events import events_to_frame, read_events
    from .mounted import merge_child_events

    parent_path = state.root / PARENT_EVENTS
    try:
        parent = read_events(parent_path) if parent_path.exists() else events_to_frame([])
    except (SociLabError, ValueError, OSError):
        parent = events_to_frame([])
    children = [(lay.events_path, lay.ready_at) for lay in record.layers if lay.events_path]
    return merge_child_events(parent, children, run_id=record.run_id, strategy=record.mode)


def unmount_recorded(
    mountpoint: str | os.PathLike[str], *, timeout: float = 30.0
) -> tuple[Totals, pd.DataFrame | None]:
    """Unmount ``mountpoint`` and everything of its image; returns the totals and, when the serving process
    was not there to merge them, the events that could be read (else None: the server wrote its own)."""
    target = os.path.realpath(os.fspath(mountpoint))
    state = find_state_dir(target)
    record = state.read_record() if state is not None else None
    if state is None or record is None or not state.is_ours():
        raise MountError(f"{target} was not mounted by soci-lab (no record of it); not touching it")
    if os.path.realpath(record.mountpoint) != target or os.path.realpath(record.state_dir) != str(state.root):
        raise MountError(f"the record in {state.root} is of another mount ({record.mountpoint}); not touching {target}")
    _ours, foreign = classify(record)
    if foreign:
        raise MountError(refusal(target, foreign))
    server = record.server
    if server is not None and server.pid != os.getpid() and server.alive():
        (state.root / UMOUNT_REQUEST).touch()
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while server.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if server.alive():  # it did not stop: take over
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGKILL)
    totals_path = state.root / TOTALS
    frame: pd.DataFrame | None = None
    errors: list[str] = []
    # whatever the server did or did not do: make sure nothing of this image stays mounted or running —
    # its overlay first, then its FUSE servers and their mounts; never anything the record does not name
    _umount_recorded_mounts(record, errors, only=target)
    for lay in record.layers:
        if lay.process is not None:
            stop_process(lay.process)
    _umount_recorded_mounts(record, errors)
    if totals_path.exists():
        try:
            totals = Totals(**json.loads(totals_path.read_text()))
        except (ValueError, TypeError, OSError):
            totals = Totals()
    else:
        frame = _events_of(state, record)
        totals = totals_of(frame, record.spans_total)
    leftovers = mounts_under(target) + mounts_under(state.root)
    if leftovers:
        errors.append(f"still mounted: {', '.join(leftovers)}")
    else:
        state.remove()
        remove_pointer(target)
    if errors:
        raise MountError("; ".join(errors))
    return totals, frame


def _umount_recorded_mounts(record: MountRecord, errors: list[str], only: str | None = None) -> None:
    ours, _foreign = classify(record)
    for m in reversed(ours):
        if only is None or m.target == only:
            try:
                umount(m.target)
            except SociLabError as exc:
                errors.append(str(exc))


def write_totals(state: StateDir, totals: Totals) -> Path:
    """Leave the final numbers for ``umount`` (the serving process, after its own unmount)."""
    path = state.root / TOTALS
    path.write_text(json.dumps(totals.to_json()))
    return path


__all__ = ["Totals", "stop_process", "totals_of", "unmount_recorded", "write_totals"]
