"""The host: CPU cores, decompression and tar-apply costs, the disk, FUSE.

Defaults are seeded by landscape.md §2.7 (single-core inflate 250–700 MB/s of output; GNU gzip ≈ 250–293;
plain single-frame zstd ≈ 800 MB/s) and are meant to be replaced by calibrated values fitted from real
runs' events. CPU work holds one core of a :class:`simpy.Resource`; disk writes are flows on a
processor-sharing :class:`~soci_lab.sim.network.Link` so concurrent writers share the disk's rate.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import simpy

from ..errors import SimulationError
from .network import Link


def _default_decompress() -> dict[str, float]:
    return {"gzip": 250e6, "zstd": 800e6, "none": 4e9}


@dataclass(frozen=True)
class HostParams:
    """Costs on the host; rates in bytes/s (of *uncompressed* output for decompression), times in seconds.

    ``fuse_max_read``: the kernel splits a read into FUSE requests of at most this many bytes, each paying
    ``fuse_op_s``. ``local_read_rate``/``syscall_s``: reads of files already on local disk (page cache).
    ``verify_rate``: sha256 throughput. ``overlay_mount_s``: cost of the final overlay mount of the rootfs
    (every mode). ``start_s``: what a pull spends before its first request (setting up its state directory
    and registry client), in every mode.

    A lazy layer's mount is its own FUSE server process, as in ``soci_lab.lazy``: ``mount_s`` is the
    latency of starting it (the fork from the pre-warmed process), one at a time across layers;
    ``mount_first_s`` (None: ``mount_s``) the first server's of a pull, which waits for the pre-warmed
    process to be ready (a cold start: 1.8 s against 15 ms for the next fork on a loaded 2-core host);
    ``service_running``: the per-host service (``soci_lab.service``) was already running when the pull
    began, so even its first server is a warm fork (``mount_s``; a real ``mount`` event's ``spawn`` says
    ``service-warm``, where a cold one says ``service-cold``, ``zygote-cold`` or ``exec``);
    ``mount_cpu_s + mount_cpu_per_entry × zTOC entries`` is the CPU that process then spends building its
    file system from the zTOC, holding one core — so layers mounted at once queue for the host's cores.
    ``ztoc_parse_per_entry``: the snapshotter's own pass over the fetched zTOCs before it mounts (one core).
    ``fuse_op_s``: the cost of one FUSE request on top of the server's own work (the kernel round trip and
    the dispatch), paid per request of a read and per metadata op on a lazy layer's file;
    ``fuse_read_rate``: bytes/s copied through FUSE to the reader (None: ``local_read_rate``);
    ``header_verify_s``: the server's check of a file's tar header on its first read; ``fuse_meta_s``:
    stat/open/readdir/readlink of a lazy layer's file (None: ``fuse_op_s``). ``span_cache_rate``: bytes/s
    of putting a span into the span cache (its sha256 and its write, one core, after decompression).
    ``apply_worker_s``: CPU to start one of the parallel puller's apply worker processes (before it applies
    its first layer). ``pull_finish_s``: what an eager pull spends from its last layer unpacked to the
    rootfs mount (moving the layer into place, its job's bookkeeping); ``apply_worker_exit_s``: what the
    parallel puller adds to that, waiting for its apply workers to exit when it closes (real: 35-70 ms).

    Whole-layer unpacks (the eager modes, and a lazy pull's small unindexed layers) have costs of their own:
    ``layer_decompress_rate`` is the rate of inflating a whole layer in the unpacker's producer thread (ISA-L
    for gzip in ``soci_lab.unpack``), per algorithm, falling back to ``decompress_rate`` — the lazy path's
    span inflater, zlib resumed at a checkpoint, measurably slower (python-pandas: 252 against 438 MB/s).
    ``apply_per_file_s``/``apply_per_byte_s`` are the apply thread's cost in the puller's own process (the
    sequential puller, the snapshotter's local layers); ``worker_apply_per_file_s``/``worker_apply_per_byte_s``
    (None: the same) the cost in the parallel puller's apply worker processes, measured 5–45 % higher per
    layer (highest for the first layers a fresh worker applies). ``apply_per_layer_s`` (and the workers'
    ``worker_apply_per_layer_s``, None: the same) is the apply's fixed cost per layer, whatever its size
    (opening the target, the first tar header, the directory fsyncs and renames at its end): without it a
    fit over small layers puts that cost on the bytes, and big layers come out slow.
    """

    cores: int = 2
    decompress_rate: dict[str, float] = field(default_factory=_default_decompress)
    apply_per_file_s: float = 25e-6
    apply_per_byte_s: float = 1 / 2e9
    disk_write_rate: float = 500e6
    fuse_op_s: float = 40e-6
    fuse_max_read: int = 128 * 1024
    local_read_rate: float = 3e9
    syscall_s: float = 3e-6
    verify_rate: float = 1.5e9
    mount_s: float = 0.005
    mount_first_s: float | None = None
    service_running: bool = False
    mount_cpu_s: float = 0.0
    mount_cpu_per_entry: float = 0.0
    ztoc_parse_per_entry: float = 0.0
    overlay_mount_s: float = 0.005
    start_s: float = 0.0
    fuse_read_rate: float | None = None
    fuse_meta_s: float | None = None
    header_verify_s: float = 0.0
    span_cache_rate: float = 1e9
    apply_worker_s: float = 0.0
    pull_finish_s: float = 0.0
    apply_worker_exit_s: float = 0.0
    layer_decompress_rate: dict[str, float] = field(default_factory=dict)
    worker_apply_per_file_s: float | None = None
    worker_apply_per_byte_s: float | None = None
    apply_per_layer_s: float = 0.0
    worker_apply_per_layer_s: float | None = None

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise SimulationError(f"a host needs at least one core, not {self.cores}")

    def decompress_s(self, compression: str, u_bytes: int) -> float:
        """Seconds of one core to decompress to ``u_bytes`` of output."""
        try:
            rate = self.decompress_rate[compression]
        except KeyError:
            raise SimulationError(f"no decompression rate for {compression!r}") from None
        return u_bytes / rate

    def layer_decompress_s(self, compression: str, u_bytes: int) -> float:
        """Seconds of one core to inflate a whole layer to ``u_bytes`` (the eager unpacker's producer)."""
        rate = self.layer_decompress_rate.get(compression)
        return u_bytes / rate if rate else self.decompress_s(compression, u_bytes)

    def mount_cpu(self, entries: int) -> float:
        """CPU seconds a lazy layer's FUSE server spends before it is mounted (for a zTOC of ``entries``)."""
        return self.mount_cpu_s + entries * self.mount_cpu_per_entry

    def apply_s(self, files: int, u_bytes: int, *, worker: bool = False) -> float:
        """Seconds of one core to apply a tar stream (create ``files`` entries, copy ``u_bytes``), in the
        puller's process or (``worker``) in an apply worker process."""
        per_file, per_byte, per_layer = self.apply_per_file_s, self.apply_per_byte_s, self.apply_per_layer_s
        if worker:
            per_file = per_file if self.worker_apply_per_file_s is None else self.worker_apply_per_file_s
            per_byte = per_byte if self.worker_apply_per_byte_s is None else self.worker_apply_per_byte_s
            per_layer = per_layer if self.worker_apply_per_layer_s is None else self.worker_apply_per_layer_s
        return per_layer + files * per_file + u_bytes * per_byte


class Host:
    """The host's shared resources in one simulation."""

    def __init__(self, env: simpy.Environment, params: HostParams, *, record: bool = False) -> None:
        self.env = env
        self.params = params
        self.cores = simpy.Resource(env, capacity=params.cores)
        self.disk = Link(env, params.disk_write_rate, name="disk", record=record)
        self.max_cores_used = 0
        self.bytes_written = 0

    def cpu(self, seconds: float) -> Generator[Any, Any, None]:
        """Hold one core for ``seconds`` (after waiting for one); use with ``yield from``."""
        if seconds <= 0:
            return
        with self.cores.request() as req:
            yield req
            used = self.cores.count
            if used > self.max_cores_used:
                self.max_cores_used = used
            yield self.env.timeout(seconds)

    def write(self, nbytes: int) -> simpy.Event:
        """Start writing ``nbytes`` to disk; the event fires when they are written."""
        self.bytes_written += nbytes
        return self.disk.transfer(nbytes)

    def cache_put(self, nbytes: int) -> Generator[Any, Any, None]:
        """Put ``nbytes`` in the span cache: hashed and written by one core, after the bytes are ready
        (``soci_lab.lazy``'s directory cache), at ``span_cache_rate``; the bytes count as written."""
        self.bytes_written += nbytes
        yield from self.cpu(nbytes / self.params.span_cache_rate)

    def cpu_and_write(self, seconds: float, nbytes: int) -> Generator[Any, Any, None]:
        """CPU work streaming its output to disk: both proceed together, done when both are."""
        written = self.write(nbytes)
        yield from self.cpu(seconds)
        yield written
