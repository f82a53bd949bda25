"""One simulation's world: the simpy environment, the image, the network, the host and the recorder.

Strategies (``eager.py``, ``lazy.py``) are processes in this world. What they share lives here: the
parameters that are not soci config keys (:class:`SimParams`), the HTTP helper that emits
``http_request`` events, the workload replay loop, and the bookkeeping of the summary (bytes read,
concurrency high-water marks that the property tests check).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

import simpy

from ..config import Config
from ..errors import SimulationError
from ..events import EventRecorder
from .host import Host, HostParams
from .image import FileModel, ImageModel
from .network import Network, NetworkParams, Progress
from .schedule import SimUnpackQueue
from .workload import Access


@dataclass(frozen=True)
class LazyParams:
    """Lazy-mode knobs that are not soci config keys.

    ``touch_end_span``: a read whose end falls exactly on a span boundary also resolves the next span, as
    upstream's ``GetContents`` does (it maps the exclusive end with ``SpanID``, soci-formats.md §4.5).
    Off by default because ``soci_lab.lazy.SpanManager`` maps ``end - 1`` and fetches no extra span; a
    test holds the simulator to the real span manager's fetches.
    ``refetch_manifest``: the snapshotter, a process of its own, fetches the image manifest again to find the
    SOCI index (after containerd fetched it to resolve the image), as upstream and ``soci_lab.snapshot`` do.
    ``concurrent_mounts``: prepare every layer at once (``soci_lab.snapshot`` does) instead of one after the
    other in layer order (containerd calls ``Prepare`` serially, upstream's default).

    How a workload's read reaches the span manager (``soci_lab.lazy``'s two paths; a test holds each to it):

    ``kernel_ra_pages``: the FUSE path. The kernel serves a read from the page cache of the FUSE file and
    asks the server only for missing pages, through Linux's readahead (``mm/readahead.c``, ondemand:
    initial window from the request size, async readahead on the marked page, ramp up to this many pages;
    128 KiB is FUSE's default bdi readahead) — a 1,000-byte read becomes a 16 KiB FUSE read, a 2 MiB read
    sixteen 128 KiB reads and one more ahead. Per-page cache per file, readahead state per open file.
    0: the reader path (``lab.lazy_read``): the trace's reads reach the reader as they are.
    ``readahead_spans`` / ``max_readahead_spans``: ``LayerReader``'s readahead, on the reads it receives
    (FUSE requests, or trace reads on the reader path): a read starting where the previous read of the same
    file ended (and not at 0) resolves spans ``span(end) … span(end) + window`` in the background (not past
    the file's end), the window ``readahead_spans << (streak × read size ÷ span size)`` capped at
    ``max_readahead_spans``; 0 turns it off. ``settle_readahead``: readahead fetches still in flight when
    the workload ends complete (and count) before the run ends — a real pull's FUSE servers keep serving
    them while the image unmounts. ``verify_headers``: the first read of a file also resolves the
    spans of its tar header (``FileModel.header`` bytes before its data), unless verification is disabled.
    """

    touch_end_span: bool = False
    refetch_manifest: bool = True
    concurrent_mounts: bool = False
    kernel_ra_pages: int = 32
    readahead_spans: int = 1
    max_readahead_spans: int = 4
    verify_headers: bool = True
    settle_readahead: bool = True

    @classmethod
    def reader_path(cls, **kw: Any) -> LazyParams:
        """The no-FUSE reader path (``soci_lab.lab.lazy_read``): no kernel page cache or readahead."""
        return cls(kernel_ra_pages=0, **kw)


@dataclass(frozen=True)
class WorkloadParams:
    """How the workload's own time is replayed (``World.replay``).

    ``timing``: ``gaps`` — before each access the workload spends its own time, the recorded gap between
    the end of the calls before it and its start (``Access.t``, ``Access.dur``), then the access pays
    what this simulation makes it pay, so a slower file system delays everything after it, as it would
    delay the real program; ``absolute`` — access ``i`` starts at ``max(start + t, end of access i-1)``
    (a trace whose recorded times include the waits of the run that recorded it); ``auto``: ``gaps`` when
    the trace carries durations, else ``absolute``.
    ``cpu_fraction``: the part of the workload's own time it computes, holding one of the host's cores
    (the rest it waits without one: think time, sleeps); strace cannot tell the two apart, so it is a
    parameter (1.0: a start-up that computes between its calls).
    Every access's own cost (a syscall, a copy from the page cache, a FUSE request) holds a core as well,
    so the workload, the span decompression, FUSE and apply share the host's cores (``HostParams.cores``).
    ``cpu_quantum_s``: the workload's CPU is handed to the core scheduler in pieces of at least this much
    (and before any access that has to wait for a span), which keeps a 10,000-access trace to a few
    thousand simpy events.
    """

    timing: str = "auto"
    cpu_fraction: float = 1.0
    cpu_quantum_s: float = 0.002

    def __post_init__(self) -> None:
        if self.timing not in ("auto", "gaps", "absolute"):
            raise SimulationError(f"workload timing must be auto, gaps or absolute, not {self.timing!r}")
        if not 0.0 <= self.cpu_fraction <= 1.0:
            raise SimulationError(f"workload cpu_fraction must be in [0, 1], not {self.cpu_fraction}")


@dataclass(frozen=True)
class SimParams:
    """Everything about a simulation that soci's ``config.toml`` does not say.

    ``sequential_downloads``: containerd's concurrent layer downloads in sequential mode (3);
    ``unpack_after_all``: containerd ≤ 1.6 behaviour where unpacking starts only after every download
    (containerd#2886); ``stream_slots``: the parallel puller's unpack slots that layers still downloading
    may hold, applied as their bytes arrive (``soci_lab.unpack.ParallelPuller(stream_slots=…)``, not a soci
    config key; None: one less than the unpack slots, so nothing streams with upstream's one slot per image;
    0: never); ``stream_piece_bytes``: a layer applied while it downloads is decompressed and applied in
    pieces of this many compressed bytes, each waiting for its bytes to arrive (the real reader takes 1 MiB
    at a time); ``record``: keep link histories for checks (slower); ``fine_events``: emit one
    event per access and per cache hit (sweeps turn it off: the summary does not need them);
    ``snapshotter``: the pull is served by a long-lived snapshotter daemon (``soci-lab snapshotter serve``
    under containerd) whose layer-server forker and parallel puller (its apply workers) were up before the
    pull, so no per-pull start-up is charged: the first lazy server forks as fast as the next
    (``HostParams.mount_first_s`` unused) and no apply worker starts (``HostParams.apply_worker_s`` unused).
    ``span_parallel_min_layer_size``: a parallel pull of an image with a gzip layer of at least this many
    compressed bytes first runs lazy mode's SOCI discovery (manifest again, index, every zTOC) to inflate
    that layer span-parallel (``soci_lab.snapshot`` ``Filesystem(span_parallel_min_layer_size=…)``, default
    64 MiB); None: never.
    """

    network: NetworkParams = field(default_factory=NetworkParams)
    host: HostParams = field(default_factory=HostParams)
    lazy: LazyParams = field(default_factory=LazyParams)
    sequential_downloads: int = 3
    unpack_after_all: bool = False
    stream_slots: int | None = None
    stream_piece_bytes: int = 1 << 20
    record: bool = False
    fine_events: bool = True
    workload: WorkloadParams = field(default_factory=WorkloadParams)
    snapshotter: bool = False
    span_parallel_min_layer_size: int | None = 64 << 20


class Limit:
    """A concurrency limit (``n <= 0`` means unlimited, as SemaphoreWithNil) that remembers its peak."""

    def __init__(self, env: simpy.Environment, n: int, name: str) -> None:
        self.name = name
        self.limit = n if n > 0 else 0
        self.resource = simpy.Resource(env, capacity=n) if n > 0 else None
        self.in_use = 0
        self.peak = 0

    def acquire(self) -> Generator[Any, Any, Any]:
        """Wait for a unit; returns a token for :meth:`release`."""
        req = None
        if self.resource is not None:
            req = self.resource.request()
            yield req
        self.in_use += 1
        if self.in_use > self.peak:
            self.peak = self.in_use
        return req

    def release(self, token: Any) -> None:
        self.in_use -= 1
        if token is not None and self.resource is not None:
            self.resource.release(token)


class World:
    """The shared state of one simulated run."""

    def __init__(
        self,
        image: ImageModel,
        *,
        mode: str,
        config: Config,
        params: SimParams,
        recorder: EventRecorder,
        env: simpy.Environment,
    ) -> None:
        self.image = image
        self.mode = mode
        self.config = config
        self.params = params
        self.env = env
        self.rec = recorder
        self.net = Network(env, params.network, record=params.record)
        self.host = Host(env, params.host, record=params.record)
        self.limits: dict[str, Limit] = {}
        self.reads: list[tuple[str, int, int]] = []
        self.ready_at: float | None = None
        self.workload_done_at: float | None = None
        self.bytes_applied = 0
        self.layer_how: dict[int, str] = {}
        #: the parallel strategy's unpack queue, and its grants in order: (layer index, granted while downloading)
        self.unpack_queue: SimUnpackQueue | None = None
        self.unpack_grants: list[tuple[int, bool]] = []
        self._resolved_blobs: set[str] = set()

    def limit(self, name: str, n: int) -> Limit:
        """A named concurrency limit, created once."""
        if name not in self.limits:
            self.limits[name] = Limit(self.env, n, name)
        return self.limits[name]

    def emit(self, kind: str, t0: float, **kw: Any) -> None:
        """Record an event ending now."""
        self.rec.emit(kind, t0, self.env.now, **kw)

    def http(
        self,
        nbytes: int,
        *,
        what: str,
        layer: str | None = None,
        blob: str | None = None,
        progress: Progress | None = None,
        **attrs: Any,
    ) -> Generator[Any, Any, float]:
        """One GET; pays the redirect hop on the first request to each blob. Returns its start time.
        ``progress`` follows the body as it arrives (a layer applied while it downloads). A GET the real
        client would send over its fast path is marked ``fast`` as the real one's event is."""
        t0 = self.env.now
        redirect = blob is not None and blob not in self._resolved_blobs
        if blob is not None:
            self._resolved_blobs.add(blob)
        if self.net.is_fast(nbytes):
            attrs["fast"] = True
        yield from self.net.get(nbytes, redirect=redirect, layer=layer, progress=progress)
        self.rec.emit(
            "http_request",
            t0,
            self.env.now,
            layer=layer,
            nbytes=nbytes,
            what=what,
            redirected=bool(redirect and self.params.network.redirect),
            **attrs,
        )
        return t0

    def unpack(self, li: int, *, worker: bool = False, follow: Progress | None = None) -> Generator[Any, Any, None]:
        """Decompress and apply a whole layer, as ``soci_lab.unpack`` does: two threads streaming.

        One core decompresses (and hashes: the compressed digest and the diffID, unless verification is
        off), another applies the tar stream (per entry and per content byte; in an apply worker process
        when ``worker``, at its own cost), and the content goes to disk; the layer is done when all three
        are. Events as the real unpacker emits them: ``decompress`` (bytes = tar stream; ``streamed``: applied
        while downloading) from the start to the end of the decompressing thread's work, ``apply`` (bytes =
        file content) over the whole pipeline, then one zero-length ``verify`` per digest checked.

        ``follow``: the layer is still downloading (one request, front to back) and is applied as its bytes
        arrive (:meth:`_unpack_following`).
        """
        layer = self.image.layers[li]
        host = self.host
        hp = host.params
        entries, n_files, content = self.image.layer_stats(li)
        verify = not self.config.disable_verification
        dec_s = hp.layer_decompress_s(layer.compression, layer.uncompressed_size)
        if verify:
            dec_s += (layer.uncompressed_size + layer.compressed_size) / hp.verify_rate
        apply_s = hp.apply_s(entries, content, worker=worker)
        env = self.env
        t0 = env.now
        decompressed = [t0]
        if follow is not None:
            yield from self._unpack_following(li, dec_s, apply_s, content, follow, decompressed)
        else:
            written = host.write(content)

            def produce() -> Generator[Any, Any, None]:
                yield from host.cpu(dec_s)
                decompressed[0] = env.now

            yield env.all_of([env.process(produce()), env.process(host.cpu(apply_s)), written])
        t1 = env.now
        emit = self.rec.emit
        emit(
            "decompress", t0, decompressed[0], layer=layer.digest, nbytes=layer.uncompressed_size,
            compression=layer.compression, compressed_bytes=layer.compressed_size, streamed=follow is not None,
        )  # fmt: skip
        emit("apply", t0, t1, layer=layer.digest, nbytes=content, files=n_files, entries=entries)
        self.bytes_applied += content
        if verify:
            emit("verify", t1, t1, layer=layer.digest, what="compressed digest")
            emit("verify", t1, t1, layer=layer.digest, what="uncompressed digest (diffID)")

    def _unpack_following(
        self, li: int, dec_s: float, apply_s: float, content: int, follow: Progress, decompressed: list[float]
    ) -> Generator[Any, Any, None]:
        """A layer's unpack that follows its download: the work cut into pieces of
        ``SimParams.stream_piece_bytes`` compressed bytes (each piece's share of the CPU and of the content in
        proportion to its compressed bytes). Piece k is decompressed once its last byte has arrived and
        applied (its content written) once it is decompressed, so neither thread gets ahead of the bytes;
        between pieces the threads give their core back, as the real reader sleeps until the file grows.
        Once the download is over the pieces run back to back, at the CPU's pace."""
        env = self.env
        host = self.host
        size = self.image.layers[li].compressed_size
        piece = max(1, self.params.stream_piece_bytes)
        bounds = [(lo, min(lo + piece, size)) for lo in range(0, size, piece)] or [(0, 0)]
        inflated = [env.event() for _ in bounds]
        writes: list[simpy.Event] = []

        def share(lo: int, hi: int) -> float:
            return (hi - lo) / size if size else 1.0

        def produce() -> Generator[Any, Any, None]:
            for k, (lo, hi) in enumerate(bounds):
                yield follow.reached(hi)
                yield from host.cpu(dec_s * share(lo, hi))
                inflated[k].succeed()
            decompressed[0] = env.now

        def consume() -> Generator[Any, Any, None]:
            for k, (lo, hi) in enumerate(bounds):
                yield inflated[k]
                part = content * hi // size - content * lo // size if size else content
                writes.append(host.write(part))
                yield from host.cpu(apply_s * share(lo, hi))
            yield env.all_of(writes)

        yield env.all_of([env.process(produce()), env.process(consume())])

    def replay(self, accesses: list[Access], backend: ReadBackend) -> Generator[Any, Any, None]:
        """Run the workload: accesses in order, timed by :class:`WorkloadParams`.

        Accesses whose cost needs no shared resource but a core (metadata ops, cache hits, local reads)
        are accumulated — their cost and the workload's own time before them as CPU owed (``cpu``), its
        think time as a lag — and handed to simpy in pieces of ``cpu_quantum_s``, and always before the next
        access that has to wait for a span (a miss) and at the end. That keeps span states exact — they only
        move towards ``uncompressed``, so a hit seen early is still a hit at its true time — and a
        10,000-access trace to a few thousand simpy events.
        """
        env = self.env
        host = self.host
        start = env.now
        resolve = self.image.resolve
        reads = self.reads
        emit = self.rec.emit
        fine = self.params.fine_events
        layers = self.image.layers
        wp = self.params.workload
        gaps = wp.timing == "gaps" or (wp.timing == "auto" and any(a.dur > 0 for a in accesses))
        frac = wp.cpu_fraction
        quantum = wp.cpu_quantum_s
        lag = 0.0  # time the workload waits without a core, owed to simpy
        cpu = 0.0  # core time the workload owes
        recorded_end = 0.0  # end of the calls recorded so far (gaps timing)
        own_total = 0.0
        checked_links: set[FileModel] = set()
        links_on: dict[tuple[str, bool], tuple[FileModel, ...]] = {}

        def settle() -> Generator[Any, Any, None]:
            nonlocal lag, cpu
            if cpu > 0:
                owed, cpu = cpu, 0.0
                yield from host.cpu(owed)
            if lag > 0:
                owed, lag = lag, 0.0
                yield env.timeout(owed)

        for a in accesses:
            if gaps:
                own = a.t - recorded_end if a.t > recorded_end else 0.0
                if a.t + a.dur > recorded_end:
                    recorded_end = a.t + a.dur
                own_total += own
                cpu += own * frac
                lag += own - own * frac
                if cpu >= quantum:
                    yield from settle()
                now = env.now + lag + cpu
            else:
                now = env.now + lag + cpu
                due = start + a.t
                if due > now:
                    lag += due - now
                    now = due
            # the path as a process in the rootfs reaches it (links followed, overlay merged: ImageModel.resolve)
            f = resolve(a.path, follow_last=a.op != "readlink")
            check = getattr(backend, "check_links", None)
            if check is not None:  # a lazy layer's server checks a symlink's tar header before its target
                key = (a.path, a.op != "readlink")
                if key not in links_on:
                    links_on[key] = self.image.links_on_path(a.path, follow_last=key[1])
                links = [x for x in links_on[key] if x not in checked_links]
                if links:
                    checked_links.update(links)
                    yield from settle()
                    yield from check(links)
            if a.op == "read":
                if f is None or f.type != "reg":
                    emit("file_read", now, now, path=a.path, ok=False, error="ENOENT" if f is None else "EISDIR")
                    continue
                off = min(a.offset, f.size)
                size = min(a.size, f.size - off)
                cost = backend.read_cost(f, off, size, now)
                if cost is None:
                    yield from settle()
                    t0 = env.now
                    yield from backend.read(f, off, size)
                    t1 = env.now
                else:
                    t0, t1 = now, now + cost
                    cpu += cost
                reads.append((a.path, off, off + size))
                if fine:
                    emit(
                        "file_read", t0, t1, path=a.path, nbytes=size, layer=layers[f.layer].digest, offset=off,
                        **backend.read_attrs(),
                    )  # fmt: skip
            else:
                cost = backend.meta_cost(a.op, f)
                cpu += cost
                error = _meta_error(a.op, f)
                if fine or error:
                    emit("file_op", now, now + cost, path=a.path, ok=error is None, op=a.op, error=error)
            if cpu >= quantum:
                yield from settle()
        yield from settle()
        self.workload_done_at = env.now
        emit("workload", start, env.now, accesses=len(accesses), timing="gaps" if gaps else "absolute",
             own_s=float(own_total), cpu_fraction=float(frac))


def _meta_error(op: str, f: FileModel | None) -> str | None:
    """What a metadata op on the entry ``f`` reaches fails with, as on a real mount (None: it succeeds)."""
    if f is None:
        return "ENOENT"
    if op == "readdir" and f.type != "dir":
        return "ENOTDIR"
    if op == "readlink" and f.type != "symlink":
        return "EINVAL"
    return None


class ReadBackend(Protocol):
    """How a strategy serves the workload's accesses."""

    def read_cost(self, f: FileModel, off: int, size: int, t: float) -> float | None:
        """The latency of a read that needs no shared resource (emitting its events at ``t``), else None."""

    def read(self, f: FileModel, off: int, size: int) -> Generator[Any, Any, None]:
        """Serve a read that needs the simulation (span fetches)."""

    def meta_cost(self, op: str, f: FileModel | None) -> float:
        """The latency of stat/open/readdir/readlink."""

    def read_attrs(self) -> dict[str, Any]:
        """Extra attributes of the last read's ``file_read`` event."""


class LocalFiles:
    """The eager modes' backend: every file is on local disk once the pull is done."""

    def __init__(self, world: World) -> None:
        self.hp = world.host.params

    def read_cost(self, f: FileModel, off: int, size: int, t: float) -> float | None:
        return self.hp.syscall_s + size / self.hp.local_read_rate

    def read(self, f: FileModel, off: int, size: int) -> Generator[Any, Any, None]:  # pragma: no cover - never slow
        raise AssertionError("local reads always have a cost")
        yield

    def meta_cost(self, op: str, f: FileModel | None) -> float:
        return self.hp.syscall_s

    def read_attrs(self) -> dict[str, Any]:
        return {}
