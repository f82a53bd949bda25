"""Parallel pull/unpack: every layer downloaded and unpacked at once, renamed into place in order.

Upstream's flow (soci-formats.md §5.2), with the same names:

* :meth:`ParallelPuller.mount_parallel` is called per layer, in layer order, by the snapshotter (the
  Filesystem room). The first call for an image runs :meth:`preload_all_layers`, which creates the image
  job and starts one :meth:`_premount` task per layer from the requested one on.
* ``_premount`` (one task per layer, under the puller's task group): a local content-store hit skips the
  network, else the blob is downloaded into the job's ingest file (chunked when configured and the server
  serves ranges); then, holding an unpack lease, the destination is checked empty and the layer applied
  with verification (:func:`~.archive.apply_layer_async`). A failure marks the job ``Failed`` and cancels
  the image's other layers.
* :meth:`rebase` claims the layer's job, waits for its unpack, and renames ``<job>/fs`` to the mountpoint
  (which must not exist or be an empty directory). Only a verified tree is ever renamed. Success → the job
  is ``Done`` and removed; failure → ``Failed`` and the whole image job is removed.
* :meth:`clean_image` cancels and removes an image job (snapshot removal).

Beyond upstream: on a machine with more than one core each layer is applied in a worker process
(:mod:`.applyproc`, ``apply_in_process``), so layers unpacked at once do not share one GIL. The premount
tasks start **largest layer first** (by compressed size; upstream starts them in layer order): the
download slots are granted in the order asked for, so the largest layer, the longest job, is downloaded
first instead of arriving last and unpacking alone at the end (longest-processing-time-first).

And the unpack slots are not handed out in the order downloads finish but by an :class:`~.schedule.UnpackQueue`:
the largest finished download first, and — when there are two or more slots — the largest layer still
downloading may take one slot and be **applied while it downloads** (:class:`~.fetch.IngestProgress`,
``apply_layer(follow=…)``): its digests are still checked over every byte, and a failed download stops its
apply, so nothing unverified is ever renamed into place. It pays where the network is the slower part (the
largest layer's apply then ends soon after its last byte); on unshaped loopback the cores are already busy
during the downloads and it changes nothing (figures for both: ``benchmarks/README.md``).

Use it as an async context manager: it owns a task group (the premount tasks and the 10 s cleaner).
Everything runs under asyncio or trio.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import anyio
import anyio.abc

from ..config import ParallelPullUnpackConfig
from ..errors import LayerJobCancelled, ParallelPullIsDisabled, first_error
from ..events import EventRecorder, NullRecorder
from .applyproc import ApplyWorkers
from .archive import LayerApplyResult, apply_layer_async
from .decompress import SpanDecompressor
from .fetch import IngestProgress, download_layer
from .jobs import DEFAULT_EXPIRY_S, DEFAULT_GC_INTERVAL_S, LayerUnpackJob, LayerUnpackJobStatus, UnpackJobs
from .resources import LayerUnpackResourceController
from .schedule import QueuedLayer, UnpackQueue
from .source import BlobSource, ContentStore, LayerSpec
from .storage import LayerUnpackDiskStorage
from .tarapply import ApplyOptions


@dataclass
class LayerOutcome:
    """One layer of a pull: where it landed and how."""

    layer: str
    path: Path
    how: str  # "remote" (downloaded) or "local" (content-store hit)
    bytes_fetched: int = 0
    apply: LayerApplyResult | None = field(default=None, repr=False)


def prepare_mountpoint(mountpoint: Path) -> None:
    """The rename target must not exist, or be an empty directory (removed); its parent is created 0700."""
    try:
        os.rmdir(mountpoint)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise FileExistsError(f"snapshot directory {mountpoint} exists and is not an empty directory") from exc
    mountpoint.parent.mkdir(mode=0o700, parents=True, exist_ok=True)


def largest_first(layers: Sequence[LayerSpec]) -> list[LayerSpec]:
    """``layers`` in the order their premount tasks start: largest compressed size first, ties in layer
    order (see the module docstring for why)."""
    return sorted(layers, key=lambda layer: -layer.size)


class ParallelPuller:
    """The parallel pull/unpack mode (upstream ``parallelLayerUnpacker`` + the ``fs`` job machinery)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        source: BlobSource,
        *,
        config: ParallelPullUnpackConfig | None = None,
        content: ContentStore | None = None,
        options: ApplyOptions | None = None,
        recorder: EventRecorder | None = None,
        expiry_s: float = DEFAULT_EXPIRY_S,
        gc_interval_s: float = DEFAULT_GC_INTERVAL_S,
        span_decompressor: Callable[[LayerSpec], SpanDecompressor | None] | None = None,
        require_enabled: bool = True,
        apply_in_process: bool | None = None,
        stream_slots: int | None = None,
    ) -> None:
        cfg = config or ParallelPullUnpackConfig(enable=True)
        if require_enabled and not (cfg.enable or cfg.experimental_parallel_pull_as_fallback):
            raise ParallelPullIsDisabled("the given config does not allow parallel pulling")
        self.root = Path(root)
        self.source = source
        self.config = cfg
        self.content = content
        self.options = options or ApplyOptions()
        self.recorder = recorder if recorder is not None else NullRecorder()
        self.chunk_size = cfg.chunk_size_bytes()
        self.resources = LayerUnpackResourceController.from_config(cfg)
        self.expiry_s = expiry_s
        self.gc_interval_s = gc_interval_s
        self.span_decompressor = span_decompressor
        #: apply layers in worker processes (None: when the machine has more than one core)
        self.apply_in_process = (os.cpu_count() or 1) > 1 if apply_in_process is None else apply_in_process
        self._workers: ApplyWorkers | None = None
        self.storage: LayerUnpackDiskStorage | None = None
        self.jobs: UnpackJobs | None = None
        #: unpack slots that layers still downloading may hold (None: one less than the slots; 0: never
        #: apply a layer before its download ends, upstream's way); see :mod:`.schedule`
        self.stream_slots = stream_slots
        self._tg: anyio.abc.TaskGroup | None = None
        self._ranges: dict[str, bool] = {}
        self._queues: dict[str, UnpackQueue] = {}

    async def __aenter__(self) -> ParallelPuller:
        self.storage = await anyio.to_thread.run_sync(LayerUnpackDiskStorage, self.root)  # wipes leftovers
        self.jobs = UnpackJobs(self.storage, recorder=self.recorder, expiry_s=self.expiry_s)
        if self.apply_in_process:
            cap = self.config.max_concurrent_unpacks_per_image
            self._workers = ApplyWorkers(min(os.cpu_count() or 1, cap) if cap > 0 else os.cpu_count() or 1)
            try:
                self._workers.start()  # their imports overlap the first downloads
            except OSError:  # no interpreter to start (an embedded Python): apply in this process
                self._workers.close()
                self._workers = None
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self.jobs.run_gc, self.gc_interval_s)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None and self.jobs is not None
        for img in self.jobs.images():
            self.jobs.remove_image(img.key, LayerJobCancelled("puller closed"))
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # the background tasks keep their errors in their jobs, so a group here carries the body's own
            # exception: give the caller that one clear error, not a group
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                raise exc from None
            raise
        finally:
            if self._workers is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._workers.close)
                self._workers = None

    # --- upstream's entry points ------------------------------------------------------------------

    def preload_all_layers(self, image: str, layers: Sequence[LayerSpec]) -> list[LayerUnpackJob]:
        """Create the image job and start downloading + unpacking every layer of ``layers``."""
        jobs = self._jobs()
        jobs.get_or_add_image(image)
        self.resources.image(image)
        started = []
        queue = self._queue(image)
        try:
            for layer in largest_first(layers):
                job = jobs.add_layer_job(image, layer.digest)
                entry = queue.enqueue(layer.size, streamable=self._streamable(image, layer))
                assert self._tg is not None
                self._tg.start_soon(self._premount, job, layer, queue, entry)
                started.append(job)
        except BaseException as exc:
            jobs.remove_image(image, exc)
            self._queues.pop(image, None)  # a later pull of the image starts from an empty queue
            raise
        return started

    async def mount_parallel(
        self, image: str, layers: Sequence[LayerSpec], index: int, mountpoint: str | os.PathLike[str]
    ) -> LayerOutcome:
        """Put layer ``index`` of ``image`` at ``mountpoint``, starting the whole image's pull if needed."""
        jobs = self._jobs()
        if image not in {img.key for img in jobs.images()}:
            self.preload_all_layers(image, layers[index:])
        return await self.rebase(image, layers[index], mountpoint)

    async def rebase(self, image: str, layer: LayerSpec, mountpoint: str | os.PathLike[str]) -> LayerOutcome:
        """Claim the layer's job, wait for its verified unpack, rename it to ``mountpoint``."""
        jobs = self._jobs()
        for job in jobs.layer_jobs(image, layer.digest):
            if job.status is LayerUnpackJobStatus.FAILED and job.error is not None:
                self._drop_image(image, job.error)
                raise job.error
        job = jobs.claim(image, layer.digest)
        try:
            await job.unpacked.wait()
            if job.status is LayerUnpackJobStatus.CANCELLED:
                # the cause: a sibling layer's failure (e.g. VerificationFailed), expiry, or a clean-up
                if isinstance(job.error, Exception):
                    raise job.error
                raise LayerJobCancelled(f"layer {layer.digest}: unpack job cancelled")
            if job.unpack_error is not None:
                raise job.unpack_error
            target = Path(mountpoint)
            t0 = self.recorder.now()

            def rename() -> None:
                prepare_mountpoint(target)
                os.rename(job.fs_dir, target)

            await anyio.to_thread.run_sync(rename)
            self.recorder.emit("file_op", t0, layer=layer.digest, path=str(target), op="rename")
        except BaseException as exc:
            job.finish(exc if isinstance(exc, Exception) else LayerJobCancelled("rebase cancelled"))
            self._drop_image(image, exc)
            raise
        job.finish()
        outcome = (
            job.result
            if isinstance(job.result, LayerOutcome)
            else LayerOutcome(layer.digest, Path(mountpoint), "remote")
        )
        outcome.path = Path(mountpoint)
        jobs.remove(job)
        if image not in {img.key for img in jobs.images()}:
            self.resources.forget_image(image)
            self._ranges.pop(image, None)
            self._queues.pop(image, None)
        return outcome

    def clean_image(self, image: str) -> None:
        """Cancel and forget an image's jobs (snapshot removal)."""
        self._drop_image(image, LayerJobCancelled(f"image {image} cleaned"))

    async def pull(
        self, image: str, layers: Sequence[LayerSpec], mountpoints: Sequence[str | os.PathLike[str]]
    ) -> list[LayerOutcome]:
        """Every layer of ``image`` into its mountpoint: all started at once, renamed in layer order."""
        if len(layers) != len(mountpoints):
            raise ValueError("pull needs one mountpoint per layer")
        self.preload_all_layers(image, layers)
        return [await self.rebase(image, layer, mp) for layer, mp in zip(layers, mountpoints, strict=True)]

    # --- the per-layer task -----------------------------------------------------------------------

    async def _premount(self, job: LayerUnpackJob, layer: LayerSpec, queue: UnpackQueue, entry: QueuedLayer) -> None:
        with anyio.CancelScope() as scope:
            job.bind_scope(scope)
            try:
                job.result = await self._download_and_apply(job, layer, queue, entry)
            except Exception as exc:
                job.unpack_error = exc
                job.finish(exc)
                self._cancel_siblings(job.image, exc)
            finally:
                queue.leave(entry)  # the image's queue even if the image was dropped meanwhile
                if scope.cancel_called and job.unpack_error is None and job.status is LayerUnpackJobStatus.CANCELLED:
                    job.unpack_error = job.error or LayerJobCancelled(f"layer {layer.digest} cancelled")
                job.unpacked.set()

    async def _download_and_apply(
        self, job: LayerUnpackJob, layer: LayerSpec, queue: UnpackQueue, entry: QueuedLayer
    ) -> LayerOutcome:
        image = job.image
        content = self.content
        local = content is not None and await anyio.to_thread.run_sync(content.has, layer.digest)
        if local:
            queue.mark_ready(entry)
        spans = self.span_decompressor(layer) if self.span_decompressor else None
        downloaded = anyio.Event()
        progress = IngestProgress()
        fetched = 0

        async def download() -> None:
            nonlocal fetched
            fetched = await self._download(image, layer, job.ingest_path, progress)
            downloaded.set()
            queue.mark_ready(entry)

        try:
            async with anyio.create_task_group() as tg:
                if local:
                    assert content is not None
                    ingest = content.blob_path(layer.digest)
                    t = self.recorder.now()
                    self.recorder.emit("cache_hit", t, t, layer=layer.digest, nbytes=layer.size, where="content store")
                    downloaded.set()
                else:
                    ingest = job.ingest_path
                    tg.start_soon(download)
                async with queue.turn(entry) as streaming:
                    follow = None
                    if streaming:  # granted while downloading: apply it as its bytes arrive, if written in order
                        await progress.created.wait()
                        if progress.sequential and not downloaded.is_set():
                            follow = layer.size
                    if follow is None:
                        await downloaded.wait()
                    self.resources.get_unpack_ingest_reader(ingest)
                    async with self.resources.unpack_lease(image):
                        self.resources.verify_unpack_destination_is_ready(job.fs_dir)
                        apply = self._workers.apply if self._workers is not None else apply_layer_async
                        result = await apply(
                            ingest,
                            job.fs_dir,
                            media_type=layer.media_type,
                            expected_digest=layer.digest,
                            expected_diff_id=layer.diff_id,
                            options=self.options,
                            decompress_streams=self.config.decompress_streams,
                            span_decompressor=spans,
                            recorder=self.recorder,
                            layer=layer.digest,
                            check_empty=False,
                            follow=follow,
                        )
        except BaseExceptionGroup as group:  # from the download's task or the apply: give the one error
            raise first_error(group) from None
        if not local and content is not None and not self.config.discard_unpacked_layers:
            await anyio.to_thread.run_sync(content.import_file, ingest, layer.digest, layer.size)
        return LayerOutcome(layer.digest, job.fs_dir, "local" if local else "remote", fetched, result)

    async def _download(self, image: str, layer: LayerSpec, ingest: Path, progress: IngestProgress) -> int:
        ranges_ok = self._ranges.get(image)
        if ranges_ok is None and self._may_chunk(image, layer):
            probe = await self.source.probe(layer)  # the initial fetch: learns Accept-Ranges once per image
            ranges_ok = self._ranges[image] = probe.accept_ranges
        return await download_layer(
            self.source,
            layer,
            ingest,
            image=image,
            chunk_size=self.chunk_size,
            ranges_ok=bool(ranges_ok),
            resources=self.resources,
            recorder=self.recorder,
            progress=progress,
        )

    def _streamable(self, image: str, layer: LayerSpec) -> bool:
        """Whether ``layer`` can be applied while it downloads: one request (written in order) of a known size,
        and no span decompressor (which reads the whole blob)."""
        if self.span_decompressor is not None or layer.size <= 0:
            return False
        return not self._may_chunk(image, layer)

    def _may_chunk(self, image: str, layer: LayerSpec) -> bool:
        """Whether ``layer`` may be downloaded in more than one request (then it is not written in order)."""
        return self.chunk_size > 0 and layer.size > self.chunk_size and self._ranges.get(image) is not False

    def _queue(self, image: str) -> UnpackQueue:
        queue = self._queues.get(image)
        if queue is None:
            limits = [n for n in (self.resources.max_unpacks_per_image, self.resources.unpacks.limit) if n > 0]
            queue = self._queues[image] = UnpackQueue(min(limits, default=0), self.stream_slots)
        return queue

    # --- helpers ----------------------------------------------------------------------------------

    def _jobs(self) -> UnpackJobs:
        if self.jobs is None:
            raise RuntimeError("use ParallelPuller as 'async with ParallelPuller(...) as puller'")
        return self.jobs

    def _cancel_siblings(self, image: str, cause: BaseException) -> None:
        jobs = self._jobs()
        if image in {img.key for img in jobs.images()}:
            jobs.cancel_image(image, cause)

    def _drop_image(self, image: str, cause: BaseException) -> None:
        jobs = self._jobs()
        if image in {img.key for img in jobs.images()}:
            jobs.remove_image(image, cause)
        self.resources.forget_image(image)
        self._ranges.pop(image, None)
        self._queues.pop(image, None)


__all__ = ["LayerJobCancelled", "LayerOutcome", "ParallelPuller", "largest_first", "prepare_mountpoint"]
