"""Image and layer unpack jobs: the state machine of parallel pull/unpack (soci-formats.md §5.3).

An :class:`ImageUnpackJob` (keyed by the image's manifest digest) holds, per layer digest, one or more
:class:`LayerUnpackJob`\\ s. A layer job owns a directory from the :class:`~.storage.LayerUnpackJobStorage`
(``<id>/fs`` to unpack into, ``<id>/<digest>`` the ingest file) and moves through five statuses.

Upstream declares ``Done`` and ``Failed`` and never sets them; here they are set, so the status alone tells
what happened. The transitions allowed are (anything else raises
:class:`~soci_lab.errors.InvalidJobStatusTransition`)::

    InProgress ──claim──▶ Claimed ──finish(ok)──▶ Done
        │                   │ └──finish(err)──▶ Failed
        │                   └──cancel──▶ Cancelled
        ├──finish(err)──▶ Failed        (the unpack failed before anyone claimed it)
        └──cancel──▶ Cancelled

``Done``, ``Failed`` and ``Cancelled`` are terminal. ``Claimed`` is taken by compare-and-swap from
``InProgress`` only: exactly one consumer (the "rebase" that renames the unpacked tree into place) owns a
job. ``Done`` means *the layer is in place* (renamed by its consumer), not merely "unpacked".

Removal (:meth:`UnpackJobs.remove`) is allowed from ``Claimed`` and ``Cancelled`` as upstream, **and also
from ``Done`` and ``Failed``**: a finished job must be cleanable, or a failed pull would leak its directory
until expiry. Only ``InProgress`` refuses (:class:`~soci_lab.errors.LayerJobCannotBeCleaned`): its unpack
may still be writing. Removing the last layer job of an image removes the image job.

Cancelling an image cancels every non-terminal layer job (unlike upstream, which only cancels the shared
context and leaves the statuses as they were). Image jobs expire (default 2 h) and
:meth:`UnpackJobs.run_gc` cancels and removes expired ones every 10 s, then deletes job directories on disk
that no job in memory knows about (orphans of a crash).

Every status change is recorded as a ``job_status`` event (``attrs``: image, job id, from, to).
All methods run on the event loop (one thread); a lock still guards the status so a worker thread may read
it safely.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ..errors import (
    ImageUnpackJobExpired,
    ImageUnpackJobHasNoLayers,
    ImageUnpackJobNotFound,
    InvalidJobStatusTransition,
    LayerHasNoJobs,
    LayerJobCancelled,
    LayerJobCannotBeCleaned,
    LayerJobNotFound,
    NoClaimableLayerJobs,
)
from ..events import EventRecorder, NullRecorder
from .storage import LayerUnpackJobStorage

#: How long an image job may live before the cleaner cancels it (upstream: 2 h).
DEFAULT_EXPIRY_S = 2 * 3600.0
#: How often the cleaner runs (upstream: 10 s).
DEFAULT_GC_INTERVAL_S = 10.0


class LayerUnpackJobStatus(enum.IntEnum):
    """The five statuses, numbered as upstream's ``iota`` constants."""

    IN_PROGRESS = 0
    CLAIMED = 1
    DONE = 2
    FAILED = 3
    CANCELLED = 4

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({LayerUnpackJobStatus.DONE, LayerUnpackJobStatus.FAILED, LayerUnpackJobStatus.CANCELLED})

#: status -> statuses it may move to.
ALLOWED_TRANSITIONS: dict[LayerUnpackJobStatus, frozenset[LayerUnpackJobStatus]] = {
    LayerUnpackJobStatus.IN_PROGRESS: frozenset(
        {LayerUnpackJobStatus.CLAIMED, LayerUnpackJobStatus.FAILED, LayerUnpackJobStatus.CANCELLED}
    ),
    LayerUnpackJobStatus.CLAIMED: frozenset(
        {LayerUnpackJobStatus.DONE, LayerUnpackJobStatus.FAILED, LayerUnpackJobStatus.CANCELLED}
    ),
    LayerUnpackJobStatus.DONE: frozenset(),
    LayerUnpackJobStatus.FAILED: frozenset(),
    LayerUnpackJobStatus.CANCELLED: frozenset(),
}

#: statuses from which a layer job may be removed.
REMOVABLE = frozenset(
    {
        LayerUnpackJobStatus.CLAIMED,
        LayerUnpackJobStatus.CANCELLED,
        LayerUnpackJobStatus.DONE,
        LayerUnpackJobStatus.FAILED,
    }
)


@dataclass(eq=False)
class LayerUnpackJob:
    """One layer's download + unpack, in its own storage directory."""

    id: str
    image: str
    layer: str
    path: Path
    _jobs: UnpackJobs = field(repr=False)
    status: LayerUnpackJobStatus = LayerUnpackJobStatus.IN_PROGRESS
    error: BaseException | None = None
    _unpacked: anyio.Event | None = field(default=None, repr=False)
    #: the outcome of the unpack task (None = success), set before ``unpacked``.
    unpack_error: BaseException | None = None
    #: what the unpack task produced (a :class:`~.parallel.LayerOutcome`), for the consumer.
    result: object | None = None
    _scope: anyio.CancelScope | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def unpacked(self) -> anyio.Event:
        """Set (on the loop) when the download + unpack task has finished, whatever the outcome.

        Created on first use, so jobs can also be made outside an event loop (tests, tools)."""
        if self._unpacked is None:
            self._unpacked = anyio.Event()
        return self._unpacked

    @property
    def fs_dir(self) -> Path:
        """Where the layer is unpacked (overlay upper dir until renamed into place)."""
        return self.path / "fs"

    @property
    def ingest_path(self) -> Path:
        """The ingest file the compressed blob is downloaded into."""
        return self.path / self.layer

    def compare_and_swap(self, old: LayerUnpackJobStatus, new: LayerUnpackJobStatus) -> bool:
        """Move ``old → new`` if the job is in ``old``; False (and no change) otherwise."""
        if new not in ALLOWED_TRANSITIONS[old]:
            raise InvalidJobStatusTransition(f"layer job {self.id}: {old.name} → {new.name} is not allowed")
        with self._lock:
            if self.status is not old:
                return False
            self.status = new
        self._jobs._status_changed(self, old, new)
        return True

    def _move(self, new: LayerUnpackJobStatus, error: BaseException | None = None) -> bool:
        """Move to ``new`` from whatever status allows it; False if the current status does not."""
        with self._lock:
            old = self.status
            if new not in ALLOWED_TRANSITIONS[old]:
                return False
            self.status = new
            if error is not None and self.error is None:
                self.error = error
        self._jobs._status_changed(self, old, new)
        return True

    def claim(self) -> bool:
        """InProgress → Claimed by compare-and-swap."""
        return self.compare_and_swap(LayerUnpackJobStatus.IN_PROGRESS, LayerUnpackJobStatus.CLAIMED)

    def finish(self, error: BaseException | None = None) -> bool:
        """Claimed → Done (``error`` None), or InProgress/Claimed → Failed."""
        if error is None:
            return self.compare_and_swap(LayerUnpackJobStatus.CLAIMED, LayerUnpackJobStatus.DONE)
        return self._move(LayerUnpackJobStatus.FAILED, error)

    def cancel(self, cause: BaseException | None = None) -> bool:
        """Any non-terminal status → Cancelled; stops the job's running task. False if already terminal."""
        moved = self._move(LayerUnpackJobStatus.CANCELLED, cause)
        if moved and self._scope is not None:
            self._scope.cancel()
        return moved

    def stop_task(self) -> None:
        """Cancel the job's running task whatever its status (the job is being removed)."""
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    def bind_scope(self, scope: anyio.CancelScope) -> None:
        """Attach the cancel scope of the task doing this job's work, so :meth:`cancel` stops it."""
        self._scope = scope
        if self._stopped or self.status is LayerUnpackJobStatus.CANCELLED:
            scope.cancel()


@dataclass(eq=False)
class ImageUnpackJob:
    """All layer jobs of one image (key: the manifest digest)."""

    key: str
    created: float
    layers: dict[str, list[LayerUnpackJob]] = field(default_factory=dict)
    cancelled: BaseException | None = None

    def jobs(self) -> list[LayerUnpackJob]:
        return [j for js in self.layers.values() for j in js]


class UnpackJobs:
    """The registry of image and layer jobs, with their storage and their cleaner."""

    def __init__(
        self,
        storage: LayerUnpackJobStorage,
        *,
        recorder: EventRecorder | None = None,
        expiry_s: float = DEFAULT_EXPIRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        self.recorder = recorder if recorder is not None else NullRecorder()
        self.expiry_s = expiry_s
        self.clock = clock
        self._images: dict[str, ImageUnpackJob] = {}
        self._by_id: dict[str, LayerUnpackJob] = {}

    # --- images -----------------------------------------------------------------------------------

    def get_or_add_image(self, key: str) -> tuple[ImageUnpackJob, bool]:
        """The image job for ``key``, created if absent; the flag says whether it was created."""
        img = self._images.get(key)
        if img is not None:
            return img, False
        img = ImageUnpackJob(key, self.clock())
        self._images[key] = img
        return img, True

    def get_image(self, key: str) -> ImageUnpackJob:
        try:
            return self._images[key]
        except KeyError:
            raise ImageUnpackJobNotFound(f"image unpack job not found: {key}") from None

    def images(self) -> list[ImageUnpackJob]:
        return list(self._images.values())

    def remove_image(self, key: str, cause: BaseException | None = None) -> None:
        """Cancel every layer job of the image (with ``cause``), delete their directories, forget it."""
        img = self._images.pop(key, None)
        if img is None:
            raise ImageUnpackJobNotFound(f"image unpack job not found: {key}")
        cause = cause if cause is not None else LayerJobCancelled(f"image unpack job {key} removed")
        img.cancelled = cause
        for job in img.jobs():
            job.cancel(cause)
            job.stop_task()
            self._forget(job)

    def cancel_image(self, key: str, cause: BaseException | None = None) -> None:
        """Cancel every non-terminal layer job of the image, keeping the jobs (so their errors stay readable)."""
        img = self.get_image(key)
        img.cancelled = cause
        for job in img.jobs():
            job.cancel(cause)

    # --- layers -----------------------------------------------------------------------------------

    def add_layer_job(self, key: str, layer: str) -> LayerUnpackJob:
        """A new InProgress layer job with a fresh storage directory."""
        img = self.get_image(key)
        job_id = self.storage.create()
        job = LayerUnpackJob(job_id, key, layer, self.storage.job_path(job_id), self)
        img.layers.setdefault(layer, []).append(job)
        self._by_id[job_id] = job
        self._status_changed(job, None, job.status)
        return job

    def layer_jobs(self, key: str, layer: str) -> list[LayerUnpackJob]:
        img = self.get_image(key)
        if not img.layers:
            raise ImageUnpackJobHasNoLayers(f"image unpack job has no layers: {key}")
        jobs = img.layers.get(layer)
        if not jobs:
            raise LayerHasNoJobs(f"no unpack job for layer {layer} of image {key}")
        return list(jobs)

    def claim(self, key: str, layer: str) -> LayerUnpackJob:
        """Claim the first claimable job of the layer (compare-and-swap InProgress → Claimed)."""
        for job in self.layer_jobs(key, layer):
            if job.claim():
                return job
        raise NoClaimableLayerJobs(f"no claimable jobs for layer {layer} of image {key}")

    def get_job(self, job_id: str) -> LayerUnpackJob:
        try:
            return self._by_id[job_id]
        except KeyError:
            raise LayerJobNotFound(f"layer unpack job not found: {job_id}") from None

    def remove(self, job: LayerUnpackJob) -> None:
        """Forget a finished, claimed or cancelled job and delete its directory.

        Raises :class:`LayerJobCannotBeCleaned` for an InProgress job. Removing an image's last layer job
        removes the image job.
        """
        if self._by_id.get(job.id) is not job:
            raise LayerJobNotFound(f"layer unpack job not found: {job.id}")
        if job.status not in REMOVABLE:
            raise LayerJobCannotBeCleaned(
                f"layer job {job.id} cannot be cleaned (is {job.status.name}, not claimed, finished or cancelled)"
            )
        job.stop_task()
        self._forget(job)
        img = self._images.get(job.image)
        if img is not None:
            jobs = img.layers.get(job.layer, [])
            if job in jobs:
                jobs.remove(job)
            if not jobs:
                img.layers.pop(job.layer, None)
            if not img.layers:
                del self._images[job.image]

    def _forget(self, job: LayerUnpackJob) -> None:
        self._by_id.pop(job.id, None)
        self.storage.delete(job.id)

    def _status_changed(self, job: LayerUnpackJob, old: LayerUnpackJobStatus | None, new: LayerUnpackJobStatus) -> None:
        err = job.error if new in (LayerUnpackJobStatus.FAILED, LayerUnpackJobStatus.CANCELLED) else None
        t = self.recorder.now()
        moved: dict[str, Any] = {"from": old.name if old is not None else None, "to": new.name}
        self.recorder.emit(
            "job_status",
            t,
            t,
            layer=job.layer,
            ok=new is not LayerUnpackJobStatus.FAILED,
            error=_one_line(err) if err is not None else None,
            image=job.image,
            job=job.id,
            **moved,
        )

    # --- garbage collection -----------------------------------------------------------------------

    def collect_expired(self) -> list[str]:
        """Cancel and remove image jobs older than ``expiry_s``; returns their keys."""
        now = self.clock()
        expired = [k for k, img in self._images.items() if now - img.created >= self.expiry_s]
        for key in expired:
            self.remove_image(key, ImageUnpackJobExpired(f"image unpack job has expired: {key}"))
        return expired

    def collect_orphans(self) -> list[str]:
        """Delete on-disk job directories that no job in memory tracks; returns their ids."""
        orphans = [i for i in self.storage.keys() if i not in self._by_id]  # noqa: SIM118
        for job_id in orphans:
            self.storage.delete(job_id)
        return orphans

    def gc(self) -> tuple[list[str], list[str]]:
        """One pass of the cleaner: expired images, then orphan directories."""
        return self.collect_expired(), self.collect_orphans()

    async def run_gc(self, interval_s: float = DEFAULT_GC_INTERVAL_S) -> None:
        """Run :meth:`gc` every ``interval_s`` until cancelled (start it in a task group)."""
        while True:
            await anyio.sleep(interval_s)
            self.gc()


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "ALLOWED_TRANSITIONS",
    "DEFAULT_EXPIRY_S",
    "DEFAULT_GC_INTERVAL_S",
    "REMOVABLE",
    "ImageUnpackJob",
    "LayerUnpackJob",
    "LayerUnpackJobStatus",
    "UnpackJobs",
]
