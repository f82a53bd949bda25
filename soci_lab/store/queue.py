"""The store's build queue: bounded, de-duplicating, reporting when full.

Hermes's ``Enqueue`` drops a task silently when its buffered channel is full (hermes.md §4.3); here
:meth:`BuildQueue.submit` raises :class:`~soci_lab.errors.BuildQueueFull` instead, which the HTTP layer
answers with 429, so the asker knows and can retry. Two de-duplications, as Hermes has:

* on submit, by ``source ref | platform | acceleration key``: asking again for a build that is queued or
  running returns that build (``deduplicated``), nothing is queued twice;
* after resolving, by ``digest ref | platform | acceleration key``: two refs naming one manifest (a tag
  and its digest) build once; the later task waits for the first and reports its outcome.

Task statuses: ``Queued`` (waiting for a worker; the queue's own, not in the database), then the
database's ``Building`` → ``Ready`` / ``Failed``. ``max_concurrency`` workers (default 1, as Hermes)
run builds on the server loop; each build is bounded by ``build_timeout`` seconds (default 60 min).
With an ``events`` recorder, builds record their registry traffic (``http_request``, ``blob_download``) and
one ``ztoc_build`` per layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import BuildQueueFull
from .builder import BuildRequest, BuildSettings, one_line, pending_key, resolve_build, run_build
from .db import BUILDING, FAILED, READY, ArtifactInfo, ArtifactKey, StoreDB

if TYPE_CHECKING:
    from ..events import EventRecorder

QUEUED = "Queued"
#: finished tasks kept for ``GET /v1/builds``
HISTORY = 1000


@dataclass
class BuildTask:
    """One asked-for build and what became of it."""

    id: str
    request: BuildRequest
    status: str = QUEUED
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    image_digest_ref: str = ""
    index_digest: str = ""
    error: str = ""
    cached: bool = False
    #: the task this one waited for (same manifest, platform and profile already building)
    same_as: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in (READY, FAILED)

    def to_json(self) -> dict[str, Any]:
        """The task as the build endpoints show it."""
        return {
            "id": self.id,
            "image": self.request.image,
            "platform": self.request.platform,
            "profile": self.request.profile.name,
            "accelerationKey": self.request.profile.key(),
            "trusted": self.request.trusted,
            "status": self.status,
            "imageDigestRef": self.image_digest_ref,
            "indexDigest": self.index_digest,
            "error": self.error,
            "cached": self.cached,
            "sameAs": self.same_as,
            "submittedAt": self.submitted_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }


class BuildQueue:
    """Bounded queue + workers over a :class:`StoreDB` (create and use it on one asyncio loop)."""

    def __init__(
        self,
        db: StoreDB,
        settings: BuildSettings | None = None,
        *,
        max_concurrency: int = 1,
        queue_size: int = 128,
        build_timeout: float = 3600.0,
        events: EventRecorder | None = None,
    ) -> None:
        self.db = db
        self.events = events
        self.settings = settings or BuildSettings()
        self.max_concurrency = max(1, max_concurrency)
        self.queue_size = max(1, queue_size)
        self.build_timeout = build_timeout
        self._queue: asyncio.Queue[BuildTask] = asyncio.Queue(self.queue_size)
        self._tasks: dict[str, BuildTask] = {}
        self._seen: dict[str, BuildTask] = {}
        self._building: dict[ArtifactKey, BuildTask] = {}
        self._ids = itertools.count(1)
        self._workers: list[asyncio.Task[None]] = []

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (on the running loop)."""
        for i in range(self.max_concurrency):
            self._workers.append(asyncio.get_running_loop().create_task(self._worker(), name=f"store-build-{i}"))

    async def stop(self) -> None:
        """Cancel the workers and wait for them."""
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        self._workers.clear()

    # --- asking -----------------------------------------------------------------------------------

    @staticmethod
    def _seen_key(req: BuildRequest) -> str:
        # a trusted and an anonymous request for one ref are two builds: an anonymous asker must never be
        # handed (as "deduplicated") a build that ran with the store's credentials
        return f"{req.image}|{req.platform}|{req.profile.key()}|{'trusted' if req.trusted else 'anonymous'}"

    def submit(self, req: BuildRequest) -> tuple[BuildTask, bool]:
        """Queue a build; returns ``(task, deduplicated)``. Raises :class:`BuildQueueFull` when full."""
        key = self._seen_key(req)
        existing = self._seen.get(key)
        if existing is not None and not existing.finished:
            return existing, True
        task = BuildTask(f"b{next(self._ids)}", req)
        try:
            self._queue.put_nowait(task)
        except asyncio.QueueFull:
            raise BuildQueueFull(
                f"the store's build queue is full ({self.queue_size} waiting, {self.max_concurrency} building); "
                f"{req.image} was not queued — try again later"
            ) from None
        self._seen[key] = task
        self._tasks[task.id] = task
        self._trim()
        return task, False

    def get(self, task_id: str) -> BuildTask | None:
        """A task by id."""
        return self._tasks.get(task_id)

    def tasks(self) -> list[BuildTask]:
        """Every remembered task, newest first."""
        return sorted(self._tasks.values(), key=lambda t: (t.submitted_at, int(t.id[1:])), reverse=True)

    @property
    def waiting(self) -> int:
        """Tasks queued and not yet taken by a worker."""
        return self._queue.qsize()

    def _trim(self) -> None:
        done = [t for t in self._tasks.values() if t.finished]
        for t in sorted(done, key=lambda t: t.finished_at or 0)[: max(0, len(self._tasks) - HISTORY)]:
            del self._tasks[t.id]

    # --- working ----------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            task = await self._queue.get()
            try:
                await self._run(task)
            finally:
                task.finished_at = time.time()
                task.done.set()
                self._queue.task_done()

    async def _run(self, task: BuildTask) -> None:
        task.status = BUILDING
        task.started_at = time.time()
        req = task.request
        key: ArtifactKey | None = None
        info = ArtifactInfo(req.image)
        try:
            with anyio.fail_after(self.build_timeout):
                rb = await resolve_build(req, self.settings, self.events)
                try:
                    key, info = rb.key, rb.info
                    task.image_digest_ref = key.image_digest_ref
                    other = self._building.get(key)
                    if other is not None:
                        task.same_as = other.id
                        await other.done.wait()
                        task.status, task.index_digest, task.error = other.status, other.index_digest, other.error
                        task.cached = other.status == READY
                        return
                    self._building[key] = task
                    try:
                        outcome = await run_build(self.db, rb, self.settings)
                    finally:
                        self._building.pop(key, None)
                finally:
                    await rb.aclose()
            task.status, task.index_digest, task.error, task.cached = (
                outcome.status, outcome.index_digest, outcome.error, outcome.cached)
        except TimeoutError:
            self._fail(task, key or pending_key(req), info, f"build timed out after {self.build_timeout:g}s")
        except Exception as exc:  # resolving failed (unknown image, registry down, bad manifest...)
            self._fail(task, key or pending_key(req), info, one_line(exc))

    def _fail(self, task: BuildTask, key: ArtifactKey, info: ArtifactInfo, error: str) -> None:
        task.status, task.error = FAILED, error
        task.image_digest_ref = task.image_digest_ref or key.image_digest_ref
        with contextlib.suppress(Exception):
            self.db.mark_failed(key, info, error)


__all__ = ["QUEUED", "BuildQueue", "BuildTask"]
