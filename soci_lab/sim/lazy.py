"""Lazy loading: the span manager, the background fetcher, prefetch, and the lazy pull itself.

Mirrors soci-formats.md §4.4–4.8:

- mount: manifest and config (and the image index before them for a SOCI v2 image), the manifest again
  (the snapshotter's own look-up), the SOCI index, then every zTOC (and prefetch artifact) concurrently;
  containerd then prepares layers in order (or all at once, ``LazyParams.concurrent_mounts``) — an indexed
  layer gets a FUSE server of its own, as ``soci_lab.lazy`` does: forked one at a time (``mount_s``; the
  pull's first, which waits for the pre-warmed process, ``mount_first_s``), it
  builds its file system on a core (``HostParams.mount_cpu``), resolves the blob URL (one
  ``Range: bytes=0-1`` GET, as after PR #2029), reads the bytes before span 0 (the gzip header, checked
  once), runs its prefetch spans and mounts; a layer without a zTOC (smaller than ``min_layer_size``, or
  zstd) is fetched whole and unpacked locally, blocking the layers above it;
- :class:`SpanManager`: span states ``unrequested → requested → fetched | uncompressed`` with
  single flight (concurrent readers of a span wait for the one fetch in progress), an on-demand fetch
  (GET the span's compressed bytes, verify, decompress the whole span, cache it uncompressed) and the
  background fetch (GET, verify, cache compressed → ``fetched``; a later read decompresses from cache);
- reads go through the kernel first (:mod:`.pagecache`: page cache and Linux readahead turn a read into
  whole-page FUSE requests, ``LazyParams.kernel_ra_pages``; off on the reader path), then each request
  resolves every span it touches concurrently (``GetContents``' errgroup) — with the file's tar header
  spans on its first read — pays ``fuse_op_s``, and a sequential request starts ``LayerReader``'s
  readahead of the next spans (``LazyParams.readahead_spans``);
- :class:`BackgroundFetcher`: silent until ``silence_period`` after the latest FUSE mount (each mount
  pauses it, as upstream's ``Pause``; ``soci_lab.lazy`` pauses each layer's fetcher at its own mount), then
  at most one span fetch per ``fetch_period`` across the layers mounted so far (a layer joins at its
  mount), round-robin, each layer from span 0 up, skipping spans already requested.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterable
from typing import Any

import simpy

from .eager import fetch_image_metadata
from .image import FileModel, LayerModel
from .pagecache import KernelReads
from .world import World

UNREQUESTED, REQUESTED, FETCHED, UNCOMPRESSED = 0, 1, 2, 3


class SpanManager:
    """The spans of one indexed layer and their cache."""

    def __init__(self, world: World, li: int) -> None:
        self.world = world
        self.li = li
        self.layer: LayerModel = world.image.layers[li]
        self.digest = self.layer.digest
        self.state = bytearray(len(self.layer.spans))
        self.pending: dict[int, simpy.Event] = {}
        self.bg_cursor = 0
        self.fetches = 0  # on-demand span fetches (SynchronousReadRegistryFetchCount)
        self.bg_fetches = 0

    # --- reads --------------------------------------------------------------------------------------

    def get_contents(self, u_start: int, u_end: int) -> Generator[Any, Any, None]:
        """Make every span of ``[u_start, u_end)`` uncompressed (fetching what is missing, in parallel)."""
        first, last = self.span_range(u_start, u_end)
        yield from self.get_spans(range(first, last + 1))

    def get_spans(self, ids: Iterable[int]) -> Generator[Any, Any, None]:
        """Make spans ``ids`` uncompressed, fetching what is missing in parallel (cache hits emitted)."""
        state = self.state
        env = self.world.env
        fine = self.world.params.fine_events
        work = []
        for i in ids:
            if state[i] != UNCOMPRESSED:
                work.append(i)
            elif fine:
                self.world.rec.emit("cache_hit", env.now, env.now, layer=self.digest, span=i)
        if len(work) == 1:
            yield from self.ensure(work[0])
        elif work:
            yield env.all_of([env.process(self.ensure(i)) for i in work])

    def span_range(self, u_start: int, u_end: int) -> tuple[int, int]:
        """First and last span ``GetContents`` touches for ``[u_start, u_end)``."""
        layer = self.layer
        if self.world.params.lazy.touch_end_span:
            return layer.span_id(u_start), layer.span_id(u_end)
        return layer.span_id(u_start), layer.span_id(max(u_start, u_end - 1))

    def ensure(self, i: int, *, why: str = "read") -> Generator[Any, Any, None]:
        """Bring span ``i`` to ``uncompressed`` (``ResolveSpan``/``getSpanContent``), single flight."""
        state = self.state
        env = self.world.env
        while True:
            st = state[i]
            if st == UNCOMPRESSED:
                return
            if st == REQUESTED:
                yield self.pending[i]
                continue
            done = self.pending[i] = env.event()
            was = st
            state[i] = REQUESTED
            if was == UNREQUESTED:
                yield from self._fetch(i, bg=False, why=why)
            yield from self._decompress(i, from_cache=was == FETCHED)
            state[i] = UNCOMPRESSED
            del self.pending[i]
            done.succeed()
            return

    # --- background ---------------------------------------------------------------------------------

    def next_unrequested(self) -> int | None:
        """The background cursor's next span still unrequested, or None when the layer is done."""
        state = self.state
        n = len(state)
        while self.bg_cursor < n and state[self.bg_cursor] != UNREQUESTED:
            self.bg_cursor += 1
        return self.bg_cursor if self.bg_cursor < n else None

    def fetch_single(self, i: int) -> Generator[Any, Any, None]:
        """``FetchSingleSpan``: fetch and cache span ``i`` compressed, if nobody has asked for it yet."""
        if self.state[i] != UNREQUESTED:
            return
        env = self.world.env
        done = self.pending[i] = env.event()
        self.state[i] = REQUESTED
        t0 = env.now
        yield from self._fetch(i, bg=True, why="background")
        span = self.layer.spans[i]
        yield from self.world.host.cache_put(span.c_size)
        self.state[i] = FETCHED
        del self.pending[i]
        done.succeed()
        self.world.emit("bg_fetch", t0, layer=self.digest, span=i, nbytes=span.c_size)

    # --- steps --------------------------------------------------------------------------------------

    def _fetch(self, i: int, *, bg: bool, why: str) -> Generator[Any, Any, None]:
        world = self.world
        span = self.layer.spans[i]
        t0 = world.env.now
        yield from world.http(
            span.c_size, what="span", layer=self.digest, blob=self.digest, range=[span.c_start, span.c_end - 1]
        )
        if bg:
            self.bg_fetches += 1
        else:
            self.fetches += 1
        world.emit("span_fetch", t0, layer=self.digest, span=i, nbytes=span.c_size, background=bg, why=why)
        if not world.config.disable_verification:
            t1 = world.env.now
            yield from world.host.cpu(span.c_size / world.host.params.verify_rate)
            world.emit("span_verify", t1, layer=self.digest, span=i, nbytes=span.c_size)

    def _decompress(self, i: int, *, from_cache: bool) -> Generator[Any, Any, None]:
        world = self.world
        span = self.layer.spans[i]
        host = world.host
        t0 = world.env.now
        # the whole span is inflated (from its checkpoint), then put in the span cache uncompressed
        yield from host.cpu(host.params.decompress_s(self.layer.compression, span.u_size))
        world.emit(
            "span_decompress", t0, layer=self.digest, span=i, nbytes=span.u_size, from_cache=from_cache,
            compression=self.layer.compression,
        )  # fmt: skip
        yield from host.cache_put(span.u_size)


class BackgroundFetcher:
    """The rate-limited fetcher of every span, round-robin over layers (soci-formats.md §4.8). A layer joins
    the round robin when it is mounted (upstream adds a layer's resolver on its mount): a layer not yet
    mounted has no server to fetch for it."""

    def __init__(self, world: World, managers: list[SpanManager]) -> None:
        self.world = world
        cfg = world.config.background_fetch
        self.period = cfg.fetch_period_msec / 1000
        self.silence = cfg.silence_period_msec / 1000
        self.limit = cfg.max_queue_size if cfg.max_queue_size > 0 else len(managers)
        self.drop_oldest = cfg.drop_policy == "oldest"
        self.queue: deque[SpanManager] = deque()
        self.unmounted = len(managers)
        self._added: simpy.Event | None = None
        self.started: list[float] = []  # start time of every background fetch (for the property tests)
        self.quiet_until = 0.0

    def pause(self) -> None:
        """A layer was mounted: stay silent for ``silence_period`` from now (upstream's ``Pause``)."""
        self.quiet_until = self.world.env.now + self.silence

    def add(self, sm: SpanManager) -> None:
        """``sm``'s layer was mounted: into the round robin (a full queue drops the newest or the oldest)."""
        self.unmounted -= 1
        if len(self.queue) >= self.limit:
            if not self.drop_oldest:
                self._wake()
                return
            self.queue.popleft()
        self.queue.append(sm)
        self._wake()

    def _wake(self) -> None:
        if self._added is not None and not self._added.triggered:
            self._added.succeed()

    def run(self, first_mount: simpy.Event) -> Generator[Any, Any, None]:
        env = self.world.env
        yield first_mount
        queue = self.queue
        while queue or self.unmounted > 0:
            if not queue:  # every mounted layer is done: wait for the next mount
                self._added = env.event()
                yield self._added
                self._added = None
                continue
            while env.now < self.quiet_until:  # a mount since the last wait restarts the silence
                yield env.timeout(self.quiet_until - env.now)
            if not queue:
                continue
            sm = queue.popleft()
            i = sm.next_unrequested()
            if i is None:
                continue
            self.started.append(env.now)
            env.process(sm.fetch_single(i))
            if sm.next_unrequested() is not None:
                queue.append(sm)
            yield env.timeout(self.period)


class LazyPull:
    """The lazy pull of one image: mounting, then serving the workload's reads."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.managers: dict[int, SpanManager] = {
            li: SpanManager(world, li) for li, layer in enumerate(world.image.layers) if layer.indexed
        }
        self.first_mount = world.env.event()
        self.bg: BackgroundFetcher | None = None
        lp = world.params.lazy
        hp = world.host.params
        self.kernel = KernelReads(lp.kernel_ra_pages, hp.fuse_max_read) if lp.kernel_ra_pages > 0 else None
        self.nodes: dict[tuple[int, int], list[int]] = {}
        self.verified: set[tuple[int, int]] = set()
        self._verify = lp.verify_headers and not world.config.disable_verification
        self._pending: tuple[FileModel, int, int, list[tuple[list[int], list[int]]]] | None = None
        self.readaheads: list[simpy.Process] = []
        self._links_checked: set[FileModel] = set()
        self._first = False
        self._spawned = False  # a layer server was forked (the next ones are warm forks: ``mount_s``)
        self._attrs: dict[str, Any] = {}

    @property
    def strategy(self) -> str:
        cfg = self.world.config
        return "lazy+prefetch" if cfg.prefetch.enable and self.world.image.prefetch_spans else "lazy"

    def mount(self) -> Generator[Any, Any, None]:
        """Everything up to ready; sets ``world.ready_at``."""
        world = self.world
        env = world.env
        image = world.image
        yield from fetch_image_metadata(world)
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

        fetches = [env.process(ztoc(li)) for li in self.managers]
        if image.prefetch_spans:
            fetches.append(env.process(world.http(200 * len(image.prefetch_spans), what="prefetch_artifact")))
        if fetches:
            yield env.all_of(fetches)
        if not world.config.background_fetch.disable and self.managers:
            self.bg = BackgroundFetcher(world, list(self.managers.values()))
            env.process(self.bg.run(self.first_mount))
        hp = world.host.params
        if hp.ztoc_parse_per_entry > 0 and self.managers:  # the snapshotter reads every zTOC it fetched
            yield from world.host.cpu(hp.ztoc_parse_per_entry * sum(image.layer_stats(li)[0] for li in self.managers))
        spawner = world.limit("fuse_server_spawn", 1)

        def serve(li: int) -> Generator[Any, Any, None]:
            """The layer's FUSE server: forked (one at a time), builds its file system on a core, resolves
            the blob (one ``Range: bytes=0-1`` GET) and checks the gzip header before span 0, prefetches,
            mounts — as ``soci_lab.lazy.mount``'s serving process does."""
            layer = image.layers[li]
            token = yield from spawner.acquire()
            first, self._spawned = not self._spawned, True
            # the pull's first server is a cold start unless the per-host service was running (a warm fork) or
            # the snapshotter daemon (one long-lived process) serves it
            cold = first and not hp.service_running and not world.params.snapshotter and hp.mount_first_s is not None
            yield env.timeout(hp.mount_first_s if cold and hp.mount_first_s is not None else hp.mount_s)
            spawner.release(token)
            t1 = env.now
            entries = image.layer_stats(li)[0]
            cpu = hp.mount_cpu(entries)
            yield from world.host.cpu(cpu)
            yield from world.http(2, what="resolve", layer=layer.digest, blob=layer.digest)
            header = layer.spans[0].c_start  # the gzip header before span 0: checked once, no digest covers it
            if header > 0:
                yield from world.http(header, what="header", layer=layer.digest, blob=layer.digest)
            yield from self._prefetch(li)
            world.emit("mount", t1, layer=layer.digest, what="fuse_server", cpu_s=cpu, entries=entries)

        def prepare(li: int) -> Generator[Any, Any, None]:
            layer = image.layers[li]
            if li in self.managers:
                t1 = env.now
                yield from serve(li)
                world.emit("mount", t1, layer=layer.digest, what="fuse", how="lazy")
                if self.bg is not None:
                    self.bg.pause()
                    self.bg.add(self.managers[li])
                if not self.first_mount.triggered:
                    self.first_mount.succeed()
                world.layer_how[li] = "lazy"
            else:
                t1 = env.now
                yield from world.http(layer.compressed_size, what="blob", layer=layer.digest, blob=layer.digest)
                world.host.bytes_written += layer.compressed_size
                world.emit("blob_download", t1, layer=layer.digest, nbytes=layer.compressed_size)
                yield from world.unpack(li)
                world.layer_how[li] = "local"

        if world.params.lazy.concurrent_mounts:
            yield env.all_of([env.process(prepare(li)) for li in range(len(image.layers))])
        else:
            for li in range(len(image.layers)):
                yield from prepare(li)
        t1 = env.now
        yield env.timeout(world.host.params.overlay_mount_s)
        world.emit("mount", t1, what="overlay")
        world.ready_at = env.now

    def _prefetch(self, li: int) -> Generator[Any, Any, None]:
        world = self.world
        ranges = world.image.prefetch_spans.get(li)
        if not world.config.prefetch.enable or not ranges:
            return
        env = world.env
        sm = self.managers[li]
        cores = world.host.params.cores
        mc = world.config.prefetch.max_concurrency
        workers = world.limit("prefetch", min(cores, mc) if mc > 0 else cores)
        t0 = env.now
        n_spans = len(sm.state)
        ids = sorted({i for a, b in ranges for i in range(max(0, a), min(b, n_spans - 1) + 1)})

        def one(i: int) -> Generator[Any, Any, None]:
            token = yield from workers.acquire()
            try:
                yield from sm.ensure(i, why="prefetch")
            finally:
                workers.release(token)

        yield env.all_of([env.process(one(i)) for i in ids])
        nbytes = sum(sm.layer.spans[i].c_size for i in ids)
        world.emit("prefetch", t0, layer=sm.digest, nbytes=nbytes, spans=len(ids))

    # --- workload side ------------------------------------------------------------------------------

    def _plan(self, f: FileModel, off: int, size: int) -> list[tuple[list[int], list[int]]]:
        """The server-side steps of one read: per FUSE request (or the read itself on the reader path), the
        spans it needs and the spans ``LayerReader``'s readahead then resolves in the background.

        Mutates the kernel's page cache and readahead state and the reader's per-file sequential state, so
        it is computed once per read (:meth:`read_cost` keeps it for :meth:`read`)."""
        world = self.world
        lp = world.params.lazy
        sm = self.managers[f.layer]
        layer = sm.layer
        key = (f.layer, f.offset)
        if self.kernel is not None:
            reqs = self.kernel.read(key, f.path, f.size, off, size)
        elif size > 0 and off < f.size:
            reqs = [(off, min(f.size, off + size))]
        else:
            reqs = []
        steps: list[tuple[list[int], list[int]]] = []
        header: list[int] = []
        self._first = False
        if self._verify and key not in self.verified and (reqs or self.kernel is None):
            self.verified.add(key)
            self._first = True
            if f.header > 0:
                header = list(range(layer.span_id(f.offset - f.header), layer.span_id(f.offset - 1) + 1))
        if not reqs:
            if self.kernel is None and (header or f.header == 0):
                u0 = f.offset + off
                steps.append((header or [layer.span_id(u0)], []))
            return steps
        rs, max_rs = lp.readahead_spans, max(lp.readahead_spans, lp.max_readahead_spans)
        span_len = max(1, layer.spans[0].u_size)
        last_of_file = layer.span_id(f.offset + max(0, f.size - 1))
        st = self.nodes.get(key)
        if st is None:
            st = self.nodes[key] = [-1, 0]  # read_end, streak
        for lo, hi in reqs:
            first, last = sm.span_range(f.offset + lo, f.offset + hi)
            need = list(range(first, last + 1))
            if header:
                need = sorted(set(need) | set(header))
                header = []
            sequential = lo == st[0] and lo > 0
            st[0] = hi
            st[1] = st[1] + 1 if sequential else 0
            ahead: list[int] = []
            if sequential and rs > 0 and hi < f.size:
                grown = rs << min(8, (st[1] * max(1, hi - lo)) // span_len)
                window = min(max_rs, max(rs, grown))
                a = layer.span_id(f.offset + hi)
                ahead = list(range(a, min(last_of_file, a + window) + 1))
            steps.append((need, ahead))
        return steps

    def read_cost(self, f: FileModel, off: int, size: int, t: float) -> float | None:
        """The latency of a read whose spans are all cached (cache hits emitted at ``t``); None on a miss."""
        hp = self.world.host.params
        sm = self.managers.get(f.layer)
        if sm is None:
            self._attrs = {}
            return hp.syscall_s + size / hp.local_read_rate
        steps = self._plan(f, off, size)
        state = sm.state
        for need, ahead in steps:
            if any(state[i] != UNCOMPRESSED for i in need) or any(
                state[i] not in (UNCOMPRESSED, REQUESTED) for i in ahead
            ):
                self._pending = (f, off, size, steps)
                return None
        if self.world.params.fine_events:
            emit = self.world.rec.emit
            for need, _ahead in steps:
                for i in need:
                    emit("cache_hit", t, t, layer=sm.digest, span=i)
        return self._fuse_cost(steps, size)

    def _fuse_cost(self, steps: list[tuple[list[int], list[int]]], size: int, *, missed: bool = False) -> float:
        """The read's own cost on top of its span work: one ``fuse_op_s`` per FUSE request, the copy, the
        header check on a file's first read (``read_attrs`` then says how many requests it made)."""
        hp = self.world.host.params
        if self.kernel is not None and not steps:
            self._attrs = {"fuse_requests": 0}
            return hp.syscall_s + size / hp.local_read_rate  # all in the page cache
        n_ops = len(steps) if self.kernel is not None else max(1, -(-size // hp.fuse_max_read))
        self._attrs = {"fuse_requests": n_ops, "first_read": self._first, "missed": missed}
        rate = hp.fuse_read_rate or hp.local_read_rate
        return n_ops * hp.fuse_op_s + size / rate + (hp.header_verify_s if self._first else 0.0)

    def read_attrs(self) -> dict[str, Any]:
        """What the model knows of the last read (FUSE requests, first read, span miss), for its event."""
        return self._attrs

    def read(self, f: FileModel, off: int, size: int) -> Generator[Any, Any, None]:
        """A read that misses: each request's spans through the span manager, then its readahead."""
        world = self.world
        env = world.env
        sm = self.managers[f.layer]
        pending, self._pending = self._pending, None
        steps = pending[3] if pending is not None and pending[:3] == (f, off, size) else self._plan(f, off, size)
        state = sm.state
        for need, ahead in steps:
            yield from sm.get_spans(need)
            for i in ahead:
                if state[i] not in (UNCOMPRESSED, REQUESTED):
                    self.readaheads.append(env.process(sm.ensure(i, why="readahead")))
        # the FUSE requests' own work (kernel round trips, the server's dispatch, the copy) holds a core
        yield from world.host.cpu(self._fuse_cost(steps, size, missed=True))

    def check_links(self, links: list[FileModel]) -> Generator[Any, Any, None]:
        """Symlinks a path walk read: each one in a lazy layer has its tar header checked once, the spans
        holding it resolved first (``soci_lab.lazy.reader.verify_entry``, called by the server's
        ``readlink``) — real python-pandas and nodejs pulls fetched a span for ``/etc/localtime`` and
        ``/usr/bin/x86_64`` that no file read touched. Nothing when headers are not verified."""
        if not self._verify:
            return
        for f in links:
            sm = self.managers.get(f.layer)
            if sm is None or f.header <= 0 or f in self._links_checked:
                continue
            self._links_checked.add(f)
            layer = self.world.image.layers[f.layer]
            need = range(layer.span_id(f.offset - f.header), layer.span_id(max(0, f.offset - 1)) + 1)
            yield from sm.get_spans(list(need))

    def settle(self) -> Generator[Any, Any, None]:
        """After the workload: let the readahead fetches it started finish, as they do while a real pull
        unmounts (``LazyParams.settle_readahead``; background-fetcher fetches are still cut off)."""
        if not self.world.params.lazy.settle_readahead:
            return
        alive = [p for p in self.readaheads if p.is_alive]
        if alive:
            yield self.world.env.all_of(alive)

    def meta_cost(self, op: str, f: FileModel | None) -> float:
        """stat/open/readdir/readlink: one FUSE request for a lazy layer's entry, a syscall otherwise."""
        hp = self.world.host.params
        if f is not None and f.layer in self.managers:
            return hp.fuse_op_s if hp.fuse_meta_s is None else hp.fuse_meta_s
        return hp.syscall_s
