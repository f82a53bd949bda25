"""A mounted image (:class:`MountedImage`) and what taking it down needs: merging the FUSE servers' events
into the run's (:func:`merge_child_events`), network bytes per layer (:func:`bytes_per_layer`), and — from
:mod:`soci_lab.errors`, where the unpack room uses it too — the first real failure of a task group
(:func:`first_error`).

:meth:`MountedImage.unmount` takes down what this mount made — its overlay and every FUSE server (one
SIGTERM, then SIGKILL after 30 s, then a lazy unmount) — and nothing else: a mount it did not make at or
under the mountpoint or the state directory (:mod:`.ownership`) makes it refuse before it touches
anything. It merges the servers' own events (their clocks aligned on each layer's ``mount`` event, to a
few milliseconds), and removes the state directory, never while anything is still mounted on or from it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MountError, SociLabError, first_error
from ..events import EventRecorder, event_rows, is_missing
from ..oci import Reference
from .decide import ImagePlan, LayerPlan
from .overlay import mount_at, mounts_under, umount
from .ownership import classify, new_overlay_source, refusal
from .state import LayerRecord, MountRecord, ProcessRef, StateDir

if TYPE_CHECKING:
    import pandas as pd

    from ..events import Event
    from ..lazy.mount import LayerMount


@dataclass
class LayerState:
    """One mounted layer: its plan, where it is, and (lazy) its FUSE server."""

    plan: LayerPlan
    path: Path
    mount: LayerMount | None = None
    ready_at: float | None = None  # parent clock when the FUSE server said ready
    bytes_fetched: int = 0
    uncompressed_size: int | None = None
    spans: int = 0  # lazy: the zTOC's span count
    mount_id: int | None = None  # lazy: the FUSE mount's id in /proc/self/mountinfo


@dataclass
class MountedImage:
    """An image mounted at ``mountpoint``; :meth:`unmount` (or ``with``) takes it down."""

    ref: Reference
    mode: str
    mountpoint: Path
    state: StateDir
    recorder: EventRecorder
    plan: ImagePlan | None = None
    layers: list[LayerState] = field(default_factory=list)
    ready_s: float | None = None
    owns_state_dir: bool = True
    writable: bool = False
    mounted: bool = False
    image_key: str = ""
    #: the overlay's source name (unique; recorded before mounting) and, once mounted, its mount id
    overlay_source: str = field(default_factory=new_overlay_source)
    overlay_id: int | None = None
    _merged: pd.DataFrame | None = None
    _done: bool = False

    # --- what is mounted ---------------------------------------------------------------------------

    @property
    def lazy_layers(self) -> list[LayerState]:
        return [lay for lay in self.layers if lay.mount is not None]

    def record(self, server_pid: int | None = None) -> MountRecord:
        """The record ``umount`` reads (see :mod:`.state`)."""
        layers = []
        for lay in self.layers:
            proc = None
            if lay.mount is not None and lay.mount.process is not None:
                proc = ProcessRef.of(lay.mount.process.pid)
            layers.append(
                LayerRecord(
                    digest=lay.plan.digest,
                    how=lay.plan.how,
                    path=str(lay.path),
                    process=proc,
                    events_path=lay.mount.options.events_path if lay.mount is not None else None,
                    bytes_fetched=lay.bytes_fetched,
                    fallback=lay.plan.reason,
                    ready_at=lay.ready_at,
                    mount_id=lay.mount_id,
                )
            )
        return MountRecord(
            mountpoint=str(self.mountpoint),
            state_dir=str(self.state.root),
            mode=self.mode,
            ref=str(self.ref),
            run_id=self.recorder.run_id,
            owns_state_dir=self.owns_state_dir,
            server=ProcessRef.of(server_pid) if server_pid else None,
            layers=layers,
            writable=self.writable,
            ready_s=self.ready_s,
            spans_total=self.spans_total,
            overlay_source=self.overlay_source,
            overlay_id=self.overlay_id,
        )

    @property
    def spans_total(self) -> int:
        return sum(lay.spans for lay in self.lazy_layers)

    def save_record(self, server_pid: int | None = None) -> None:
        self.state.write_record(self.record(server_pid))

    def layer_summary(self) -> list[dict[str, Any]]:
        """``[{"digest", "how", "bytes_fetched"}]`` in layer order (bytes from the events known so far; before
        :meth:`unmount` merged the servers', the recorder's own, without building a frame)."""
        known = self._merged if self._merged is not None else self.recorder.events
        per_layer = bytes_per_layer(known, [lay.plan.digest for lay in self.layers])
        return [
            {
                "digest": lay.plan.digest,
                "how": lay.plan.how,
                "bytes_fetched": per_layer.get(lay.plan.digest, 0),
                **({"reason": lay.plan.reason} if lay.plan.reason else {}),
            }
            for lay in self.layers
        ]

    def image_bytes(self) -> int | None:
        """The image's uncompressed size when every layer's is known (zTOC or unpack), else None."""
        sizes = [lay.uncompressed_size for lay in self.layers]
        return sum(s for s in sizes if s) if sizes and all(s is not None for s in sizes) else None

    # --- events -----------------------------------------------------------------------------------

    def events(self) -> pd.DataFrame:
        """The run's events: the parent's, plus (after :meth:`unmount`) the FUSE servers', time-aligned."""
        if self._merged is not None:
            return self._merged
        return self.recorder.to_frame()

    def _merge_children(self) -> pd.DataFrame:
        children = [(lay.mount.options.events_path, lay.ready_at) for lay in self.lazy_layers if lay.mount is not None]
        problems: list[str] = []
        merge_child_events(
            self.recorder.to_frame().iloc[:0],
            children,
            run_id=self.recorder.run_id,
            strategy=self.recorder.strategy,
            problems=problems,
        )
        for problem in problems:  # say so in the run rather than lose a layer's events silently
            t = self.recorder.now()
            self.recorder.emit("error", t, t, ok=False, op="merge_events", error=problem)
        return merge_child_events(
            self.recorder.to_frame(), children, run_id=self.recorder.run_id, strategy=self.recorder.strategy
        )

    # --- lifecycle --------------------------------------------------------------------------------

    def unmount(self, *, remove: bool = True) -> pd.DataFrame:
        """Unmount the rootfs and every layer, stop the FUSE servers, merge their events; returns them.

        Raises :class:`MountError` without touching anything when a mount this image did not make is at or
        under the mountpoint or the state directory (unmount it, then call again)."""
        if self._done:
            return self.events()
        _ours, foreign = classify(self.record())
        if foreign:
            raise MountError(refusal(self.mountpoint, foreign))
        t0 = self.recorder.now()
        errors: list[str] = []
        try:
            self._umount_ours(only=str(self.mountpoint))
        except SociLabError as exc:
            errors.append(str(exc))
        for lay in self.lazy_layers:  # SIGTERM all first: they stop in parallel
            proc = lay.mount.process if lay.mount is not None else None
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for lay in self.lazy_layers:
            # one SIGTERM only: a second one while the server writes its events (on the way out) kills it
            proc = lay.mount.process if lay.mount is not None else None
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30.0)
        for lay in self.lazy_layers:
            assert lay.mount is not None
            try:
                lay.mount.unmount(timeout=10.0)  # SIGKILL if still running, then make sure it is unmounted
            except SociLabError as exc:
                errors.append(str(exc))
            path = lay.mount.options.events_path
            if path and not os.path.exists(path):
                code = lay.mount.process.returncode if lay.mount.process is not None else None
                t = self.recorder.now()
                self.recorder.emit(
                    "error",
                    t,
                    t,
                    layer=lay.plan.digest,
                    ok=False,
                    op="unmount",
                    error=f"the FUSE server left no events (exit code {code}): {lay.mount.server_log().strip()[-300:]}",
                )
        try:
            self._umount_ours()
        except SociLabError as exc:
            errors.append(str(exc))
        self.mounted = False
        self.recorder.emit("unmount", t0, path=str(self.mountpoint), ok=not errors, error="; ".join(errors) or None)
        self._merged = self._merge_children()
        self._done = True
        left = mounts_under(self.mountpoint) + mounts_under(self.state.root)
        if left:  # never delete a tree something is still mounted on (or from)
            errors.append(f"still mounted: {', '.join(left)}")
        elif remove:
            self.remove()
        if errors:
            raise MountError("; ".join(errors))
        return self._merged

    def _umount_ours(self, only: str | None = None) -> None:
        """Unmount the mounts this image made that are still there (``only``: the one at that path)."""
        ours, _foreign = classify(self.record())
        for m in reversed(ours):
            if only is None or m.target == only:
                umount(m.target)

    def note_overlay_mounted(self) -> None:
        """Remember the overlay's mount id (after :func:`~.overlay.mount_overlay`)."""
        m = mount_at(self.mountpoint)
        if m is not None and m.source == self.overlay_source:
            self.overlay_id = m.mount_id

    def remove(self) -> None:
        """Delete the state directory (the snapshot removal); only after :meth:`unmount`."""
        if self.mounted:
            raise MountError(f"{self.mountpoint} is still mounted; unmount it before removing its state")
        for lay in self.lazy_layers:
            assert lay.mount is not None
            lay.mount.cleanup()
        self.state.remove()

    def __enter__(self) -> MountedImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()


def bytes_per_layer(events: pd.DataFrame | Iterable[Event], digests: Sequence[str]) -> dict[str, int]:
    """Network bytes per layer: ok ``http_request`` events whose URL path names the layer's blob; for a
    run without HTTP (an ``oci:`` layout) the layer's own transfer events (spans, chunks or the blob).
    ``events``: a list of events or a frame (plain Python either way)."""
    out = {d: 0 for d in digests}
    rows = event_rows(events, "kind", "ok", "bytes", "layer", "path")

    def yes(ok: object) -> bool:
        return not is_missing(ok) and bool(ok)

    def size(value: object) -> int:
        return 0 if is_missing(value) else int(value)  # type: ignore[call-overload]

    http = [(path, n) for kind, ok, n, _layer, path in rows if kind == "http_request" and yes(ok)]
    if http:
        for path, n in http:
            if not isinstance(path, str) or "/blobs/" not in path:
                continue
            digest = path.rsplit("/", 1)[-1]
            if digest in out:
                out[digest] += size(n)
        return out
    mine: dict[str, dict[str, int]] = {d: {} for d in out}
    seen_chunks: set[str] = set()
    for kind, ok, n, layer, _path in rows:
        if not yes(ok) or not isinstance(layer, str) or layer not in mine:
            continue
        if kind == "chunk_download":
            seen_chunks.add(layer)
        if kind in ("chunk_download", "blob_download", "span_fetch"):
            mine[layer][kind] = mine[layer].get(kind, 0) + size(n)
    for digest, by_kind in mine.items():
        whole = by_kind.get("chunk_download", 0) if digest in seen_chunks else by_kind.get("blob_download", 0)
        out[digest] = whole + by_kind.get("span_fetch", 0)
    return out


def merge_child_events(
    parent: pd.DataFrame,
    children: Sequence[tuple[str | None, float | None]],
    *,
    run_id: str,
    strategy: str,
    problems: list[str] | None = None,
) -> pd.DataFrame:
    """The parent's events plus each FUSE server's, shifted onto the parent's clock.

    A server's recorder starts its own clock; its ``mount`` event ends just before it reports ready, and
    the parent noted when it heard that (``ready_at``), so ``offset = ready_at - mount.t_end``.
    """
    import pandas as pd

    from ..events import read_events

    frames = [parent]
    for path, ready_at in children:
        if not path or not os.path.exists(path):
            continue
        try:
            child = read_events(path)
        except (SociLabError, ValueError, OSError) as exc:
            if problems is not None:
                problems.append(f"cannot read the FUSE server's events {path}: {type(exc).__name__}: {exc}")
            continue
        if child.empty:
            continue
        mounts = child[child["kind"] == "mount"]
        offset = 0.0
        if ready_at is not None and len(mounts):
            offset = float(ready_at) - float(mounts["t_end"].iloc[0])
        child = child.copy()
        child["t_start"] += offset
        child["t_end"] += offset
        child["run_id"] = run_id
        child["strategy"] = strategy
        frames.append(child)
    merged = pd.concat(frames, ignore_index=True) if len(frames) > 1 else parent.copy()
    return merged.sort_values(["t_start", "t_end"], kind="stable").reset_index(drop=True)


__all__ = ["LayerState", "MountedImage", "bytes_per_layer", "first_error", "merge_child_events"]
