"""Eager strategies: the containerd-like sequential baseline and SOCI's parallel pull + unpack.

Sequential (containerd 1.6-like): up to ``SimParams.sequential_downloads`` (3) whole-layer downloads at a
time in layer order; unpacking one layer at a time, in order, each as soon as it is downloaded and the
one below it is applied (or only after every download with ``unpack_after_all``, containerd#2886).

Parallel (soci-formats.md §5): every layer starts at once; each layer is fetched in chunks of
``concurrent_download_chunk_size`` (whole layer when unset), each chunk request holding one unit of the
per-image then the global download semaphore; a layer takes an unpack lease (per-image then global) when
the unpack queue grants it one, and is decompressed and applied into its own directory. The grant order is
``soci_lab.unpack.schedule.UnpackQueue``'s (:mod:`.schedule`): every layer is enqueued as its premount
task starts, and a free slot goes to the largest layer whose download has finished, else to the largest
layer still downloading in one whole-blob request, if fewer than ``SimParams.stream_slots`` slots (default:
slots − 1) are held by layers still downloading; such a layer is applied **while it downloads**, no faster
than its bytes arrive (``World.unpack(follow=…)``), its ``decompress`` event ``streamed``.
A layer to be fetched in more than one chunk first learns whether the registry serves ranges with one
``HEAD`` of the blob, unless an earlier probe of the image already answered — since every layer starts at
once, in practice each chunked layer probes. That is what ``soci_lab.unpack.ParallelPuller`` does (its
stand-in for upstream's ``doInitialFetch``, whose ``Range: bytes=0-1`` GET it replaces by a HEAD), so
request counts agree with real runs. ``soci_lab.unpack`` applies layers in worker processes started with
the puller: ``HostParams.apply_worker_s`` of CPU each before the first layer can be applied, then each
layer at the worker's apply cost (``HostParams.worker_apply_per_file_s``, ``…_per_byte_s``); the sequential
puller applies in its own process (``apply_per_file_s``/``apply_per_byte_s``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .network import Progress
from .schedule import SimQueuedLayer, SimUnpackQueue
from .world import World


def fetch_image_metadata(world: World) -> Generator[Any, Any, None]:
    """The image index REF names (if any), the manifest, then its config: every mode starts with these,
    after ``HostParams.start_s`` of set-up."""
    if world.host.params.start_s > 0:
        yield world.env.timeout(world.host.params.start_s)
    if world.image.image_index_size:
        yield from world.http(world.image.image_index_size, what="image_index")
    yield from world.http(world.image.manifest_size, what="manifest")
    yield from world.http(world.image.config_size, what="config")


def span_parallel_discovery(world: World) -> Generator[Any, Any, None]:
    """What a parallel pull fetches before its first layer when some gzip layer is at least
    ``SimParams.span_parallel_min_layer_size`` (and the image has a SOCI index): lazy mode's discovery — the
    manifest again (``LazyParams.refetch_manifest``), the index, then every indexed layer's zTOC at once —
    whose zTOCs let the big layers inflate span-parallel (``soci_lab.snapshot``'s ``_span_decompressors``).
    Real postgresql parallel pulls made these 4 requests / 6.4 MB on top of the layers."""
    env = world.env
    image = world.image
    min_size = world.params.span_parallel_min_layer_size
    if min_size is None or not image.index_size:
        return
    if not any(lay.compression == "gzip" and lay.compressed_size >= min_size for lay in image.layers):
        return
    if world.params.lazy.refetch_manifest:
        yield from world.http(image.manifest_size, what="manifest", again=True)
    t0 = env.now
    yield from world.http(image.index_size, what="soci_index")
    world.emit("index_fetch", t0, nbytes=image.index_size)

    def ztoc(li: int) -> Generator[Any, Any, None]:
        layer = image.layers[li]
        t1 = env.now
        yield from world.http(layer.ztoc_size, what="ztoc", layer=layer.digest)
        world.emit("ztoc_fetch", t1, layer=layer.digest, nbytes=layer.ztoc_size)

    fetches = [env.process(ztoc(li)) for li, lay in enumerate(image.layers) if lay.indexed]
    if fetches:
        yield env.all_of(fetches)


def _download_whole(world: World, li: int) -> Generator[Any, Any, None]:
    layer = world.image.layers[li]
    t0 = world.env.now
    yield from world.http(layer.compressed_size, what="blob", layer=layer.digest, blob=layer.digest)
    world.host.bytes_written += layer.compressed_size  # ingest into the content store
    world.emit("blob_download", t0, layer=layer.digest, nbytes=layer.compressed_size)


def sequential(world: World) -> Generator[Any, Any, None]:
    """The containerd-like baseline; sets ``world.ready_at``."""
    env = world.env
    yield from fetch_image_metadata(world)
    layers = world.image.layers
    downloads = world.limit("sequential_downloads", world.params.sequential_downloads)
    done = [env.event() for _ in layers]

    def download(li: int) -> Generator[Any, Any, None]:
        token = yield from downloads.acquire()
        try:
            yield from _download_whole(world, li)
        finally:
            downloads.release(token)
        done[li].succeed()

    for li in range(len(layers)):
        env.process(download(li))
    unpacks = world.limit("sequential_unpacks", 1)
    if world.params.unpack_after_all:
        yield env.all_of(done)
    for li in range(len(layers)):
        yield done[li]
        token = yield from unpacks.acquire()
        yield from world.unpack(li)
        unpacks.release(token)
        world.layer_how[li] = "sequential"
    if world.host.params.pull_finish_s > 0:
        yield env.timeout(world.host.params.pull_finish_s)
    t0 = env.now
    yield env.timeout(world.host.params.overlay_mount_s)
    world.emit("mount", t0, what="overlay")
    world.ready_at = env.now


def parallel(world: World) -> Generator[Any, Any, None]:
    """SOCI's parallel pull + unpack mode; sets ``world.ready_at``."""
    env = world.env
    cfg = world.config.pull_modes.parallel_pull_unpack
    yield from fetch_image_metadata(world)
    yield from span_parallel_discovery(world)
    layers = world.image.layers
    dl_image = world.limit("downloads_per_image", cfg.max_concurrent_downloads_per_image)
    dl_global = world.limit("downloads", cfg.max_concurrent_downloads)
    up_image = world.limit("unpacks_per_image", cfg.max_concurrent_unpacks_per_image)
    up_global = world.limit("unpacks", cfg.max_concurrent_unpacks)
    chunk = cfg.chunk_size_bytes()
    ranges_known = [False]  # set once a probe of this image has answered
    # the unpack slots as the real puller counts them: the lower of the per-image and global limits
    slots = min((n for n in (cfg.max_concurrent_unpacks_per_image, cfg.max_concurrent_unpacks) if n > 0), default=0)
    queue = world.unpack_queue = SimUnpackQueue(env, slots, world.params.stream_slots)
    hp = world.host.params
    workers_ready = env.event()

    def start_workers() -> Generator[Any, Any, None]:
        """``soci_lab.unpack``'s apply worker processes (one per unpack slot, at most one per core), started
        as the puller starts: each holds a core for ``apply_worker_s`` (an interpreter and its imports),
        overlapping the downloads; no layer is applied before they are up."""
        n = min(hp.cores, cfg.max_concurrent_unpacks_per_image or hp.cores)
        yield env.all_of([env.process(world.host.cpu(hp.apply_worker_s)) for _ in range(max(1, n))])
        workers_ready.succeed()

    if hp.apply_worker_s > 0 and not world.params.snapshotter:  # a snapshotter daemon's workers are up already
        env.process(start_workers())
    else:
        workers_ready.succeed()

    def fetch_chunk(
        li: int, lo: int, hi: int, idx: int, whole: bool, progress: Progress | None = None
    ) -> Generator[Any, Any, None]:
        layer = layers[li]
        t_ask = env.now
        t_img = yield from dl_image.acquire()
        t_glb = yield from dl_global.acquire()
        t0 = env.now
        try:
            if whole:
                yield from world.http(hi - lo, what="blob", layer=layer.digest, blob=layer.digest, progress=progress)
            else:
                yield from world.http(hi - lo, what="chunk", layer=layer.digest, blob=layer.digest, range=[lo, hi - 1])
        finally:
            dl_global.release(t_glb)
            dl_image.release(t_img)
        if not whole:  # as the real puller: chunk events only for a layer fetched in chunks
            world.emit("chunk_download", t0, layer=layer.digest, span=idx, nbytes=hi - lo, queue_wait=t0 - t_ask)

    def chunked(li: int) -> bool:
        return chunk > 0 and layers[li].compressed_size > chunk

    def download(li: int, entry: SimQueuedLayer, progress: Progress) -> Generator[Any, Any, None]:
        layer = layers[li]
        size = layer.compressed_size
        t0 = env.now
        if chunked(li):
            if not ranges_known[0]:
                yield from world.http(0, what="probe", layer=layer.digest, blob=layer.digest, method="HEAD")
                ranges_known[0] = True
            parts = [
                env.process(fetch_chunk(li, lo, min(lo + chunk, size), k, False))
                for k, lo in enumerate(range(0, size, chunk))
            ]
            yield env.all_of(parts)
        else:
            yield env.process(fetch_chunk(li, 0, size, 0, True, progress))
        world.host.bytes_written += size  # the ingest file
        world.emit("blob_download", t0, layer=layer.digest, nbytes=size)
        queue.mark_ready(entry)

    def premount(li: int, entry: SimQueuedLayer) -> Generator[Any, Any, None]:
        progress = Progress(env)
        downloaded = env.process(download(li, entry, progress))
        try:
            streaming = yield entry.waiter
            # granted while downloading and still downloading (one request, front to back): follow it
            follow = progress if streaming and not downloaded.triggered else None
            if follow is None:
                yield downloaded
            yield workers_ready
            t_img = yield from up_image.acquire()
            t_glb = yield from up_global.acquire()
            try:
                yield from world.unpack(li, worker=True, follow=follow)
            finally:
                up_global.release(t_glb)
                up_image.release(t_img)
        finally:
            queue.leave(entry)  # the slot is given back as the apply ends, as the real queue's ``turn``
        yield downloaded  # a streamed apply ends with the last byte, its download a moment later
        world.layer_how[li] = "parallel"

    # started largest layer first, as soci_lab.unpack.parallel.largest_first (ties in layer order), each
    # enqueued for its unpack slot as it starts (a whole-blob download of a known size may stream)
    order = sorted(range(len(layers)), key=lambda li: -layers[li].compressed_size)
    jobs = []
    layer_of: dict[SimQueuedLayer, int] = {}
    for li in order:
        size = layers[li].compressed_size
        entry = queue.enqueue(size, streamable=size > 0 and not chunked(li))
        layer_of[entry] = li
        jobs.append(env.process(premount(li, entry)))
    yield env.all_of(jobs)
    world.unpack_grants = [(layer_of[entry], streaming) for entry, streaming in queue.grants]
    if hp.pull_finish_s + hp.apply_worker_exit_s > 0:  # the puller closes: its workers exit before the mount
        yield env.timeout(hp.pull_finish_s + hp.apply_worker_exit_s)
    t0 = env.now
    yield env.timeout(world.host.params.overlay_mount_s)
    world.emit("mount", t0, what="overlay")
    world.ready_at = env.now
