"""Apply one layer blob: decompress, verify while streaming, untar — on two threads.

This is upstream's ``layerArchive.Apply`` with its ``AsyncTeeReader``. In Go the tee hands copies of each
64 KiB buffer to a digest goroutine. In Python the cheaper design is to hash where the bytes already are:
the **producer thread** reads the ingest file in 1 MiB blocks, feeds them to the compressed-digest hasher,
inflates them into chunks of up to 8 MiB, feeds those to the diffID hasher and hands them over a bounded
queue (the "buffer pool": at most ``QUEUE_CHUNKS`` chunks in flight) to the **apply thread**, which parses
tar headers and writes file contents with ``os.write`` of memoryview slices (:mod:`.chunkstream`).
zlib/ISA-L, zstandard and hashlib all release the GIL on these buffer sizes, and the apply thread spends its
time in the kernel creating files, so both cores are busy and no byte is copied in Python.
(``benchmarks/unpack_apply.py`` measures the split: see the room's report.)

After the end-of-archive marker the rest of the stream is drained, so the diffID covers every byte. A
digest mismatch raises :class:`~soci_lab.errors.VerificationFailed`; the caller then does not rename
the tree into place (see :mod:`.pipeline`).

Cancellation: every thread polls a ``threading.Event``; :func:`apply_layer_async` sets it when the calling
task is cancelled and waits for the threads to stop before the cancellation propagates, so a lease or a
directory is never released while a thread still writes into it.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ApplyStopped, VerificationFailed
from ..events import EventRecorder
from .chunkstream import ChunkStream
from .decompress import INFLATE_IMPL, IngestReader, SpanDecompressor, compression_of, producer_for
from .tarapply import ApplyOptions, ApplyStats, TarApplier

if TYPE_CHECKING:
    from ..config import DecompressStream

# anyio, the config and the resource controller are imported where they are used: an apply worker process
# (.applyproc) imports this module at every start and needs none of them (~20 ms of CPU per worker).

#: decompressed chunks in flight between the producer and the apply thread.
QUEUE_CHUNKS = 8

T = TypeVar("T")


@dataclass
class LayerApplyResult:
    """What applying one layer did and measured."""

    stats: ApplyStats
    compression: str
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0
    digest: str | None = None
    diff_id: str | None = None
    decompress_s: float = 0.0
    apply_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    while True:
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            if stop.is_set():
                return False


def apply_layer(
    ingest: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    media_type: str | None = None,
    expected_digest: str | None = None,
    expected_diff_id: str | None = None,
    options: ApplyOptions | None = None,
    decompress_streams: dict[str, DecompressStream] | None = None,
    span_decompressor: SpanDecompressor | None = None,
    stop: threading.Event | None = None,
    recorder: EventRecorder | None = None,
    layer: str | None = None,
    check_empty: bool = True,
    compute_digests: bool = False,
    follow: int | None = None,
) -> LayerApplyResult:
    """Apply the layer blob ``ingest`` into the empty directory ``dest``; verify the digests given.

    ``expected_digest`` (``sha256:…`` of the compressed blob) and ``expected_diff_id`` (of the tar) are
    checked while the data streams; ``compute_digests`` computes both even when not expected (for reports).
    ``follow``: the blob is still downloading into ``ingest`` (front to back) and will have ``follow`` bytes;
    it is read as it arrives (:class:`~.decompress.IngestReader`); the download's failure is the caller's
    to act on, by setting ``stop``.

    Raises :class:`VerificationFailed` on a mismatch, :class:`~soci_lab.errors.UnsafeArchiveEntry` for a
    refused entry, :class:`~soci_lab.errors.ArchiveError` / ``DecompressionError`` for corrupt input.
    """
    ingest = Path(ingest)
    stop = stop or threading.Event()
    if check_empty:
        from .resources import LayerUnpackResourceController

        LayerUnpackResourceController.verify_unpack_destination_is_ready(dest)
    if follow is not None and span_decompressor is not None:
        raise ValueError("a span decompressor reads the whole blob: it cannot follow a download")
    with open(ingest, "rb", buffering=0) as f:
        sniff = IngestReader(f, stop, None, None if follow is None else min(4, follow))
        head = b""
        while len(head) < 4 and (block := sniff.read(4 - len(head))):
            head += block
    compression = compression_of(media_type, head)
    chash = hashlib.sha256() if (expected_digest or compute_digests) else None
    uhash = hashlib.sha256() if (expected_diff_id or compute_digests) else None
    counts = {"in": 0, "out": 0}
    q: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_CHUNKS)
    times: dict[str, float] = {}
    t_base = recorder.now() if recorder is not None else 0.0

    def on_input(block: bytes) -> None:
        counts["in"] += len(block)
        if chash is not None:
            chash.update(block)

    def produce() -> None:
        t0 = time.perf_counter()
        c0 = time.thread_time()
        try:
            if span_decompressor is not None and compression == "gzip":
                side = _hash_file_in_thread(ingest, on_input, stop)
                gen: Iterator[bytes] = span_decompressor.chunks(ingest, stop)
            else:
                side = None
                gen = producer_for(compression, ingest, stop, on_input, decompress_streams, follow)
            for chunk in gen:
                if uhash is not None:
                    uhash.update(chunk)
                counts["out"] += len(chunk)
                if not _put(q, chunk, stop):
                    return
            if side is not None:
                side()
            if stop.is_set():
                _put(q, _Failure(ApplyStopped("apply stopped")), stop)
                return
            times["decompress"] = time.perf_counter() - t0
            times["decompress_cpu"] = time.thread_time() - c0
            _put(q, None, stop)
        except BaseException as exc:
            times["decompress"] = time.perf_counter() - t0
            times["decompress_cpu"] = time.thread_time() - c0
            _put(q, _Failure(exc), stop)

    def next_chunk() -> bytes | None:
        while True:
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    raise ApplyStopped("apply stopped") from None
                continue
            if isinstance(item, _Failure):
                raise item.exc
            return item  # type: ignore[no-any-return]

    producer = threading.Thread(target=produce, name=f"soci-unpack-inflate-{layer or ''}", daemon=True)
    t_apply = time.perf_counter()
    c_apply = time.thread_time()
    producer.start()
    result = LayerApplyResult(ApplyStats(), compression)
    error: BaseException | None = None
    try:
        stream = ChunkStream(next_chunk)
        with TarApplier(dest, options) as applier:
            result.stats = applier.apply(stream)
        stream.drain()
    except BaseException as exc:
        error = exc
        stop.set()
        raise
    finally:
        producer.join()
        result.apply_s = time.perf_counter() - t_apply
        result.timings["apply_cpu_s"] = time.thread_time() - c_apply
        result.decompress_s = times.get("decompress", 0.0)
        if "decompress_cpu" in times:
            result.timings["decompress_cpu_s"] = times["decompress_cpu"]
        result.compressed_bytes = counts["in"]
        result.uncompressed_bytes = counts["out"]
        if recorder is not None:
            impl = INFLATE_IMPL if compression == "gzip" else compression
            if span_decompressor is not None and compression == "gzip":
                impl = str(getattr(span_decompressor, "impl", "span decompressor"))
            _emit(recorder, result, layer, t_base, error, impl, streamed=follow is not None)

    result.digest = f"sha256:{chash.hexdigest()}" if chash is not None else None
    result.diff_id = f"sha256:{uhash.hexdigest()}" if uhash is not None else None
    for what, expected, got in (
        ("compressed digest", expected_digest, result.digest),
        ("uncompressed digest (diffID)", expected_diff_id, result.diff_id),
    ):
        if expected is None:
            continue
        ok = expected == got
        if recorder is not None:
            t = recorder.now()
            recorder.emit(
                "verify",
                t,
                t,
                layer=layer,
                ok=ok,
                error=None if ok else f"{what} mismatch",
                what=what,
                expected=expected,
                got=got,
            )
        if not ok:
            name = layer or ingest.name
            raise VerificationFailed(f"layer {name}: {what} did not match: expected {expected}, got {got}")
    return result


def _emit(
    recorder: EventRecorder,
    result: LayerApplyResult,
    layer: str | None,
    t0: float,
    error: BaseException | None,
    impl: str,
    *,
    streamed: bool = False,
) -> None:
    err = None if error is None else (str(error) or type(error).__name__).splitlines()[0]
    recorder.emit(
        "decompress",
        t0,
        t0 + result.decompress_s if result.decompress_s else None,
        layer=layer,
        nbytes=result.uncompressed_bytes,
        ok=error is None,
        error=err,
        compression=result.compression,
        impl=impl,
        compressed_bytes=result.compressed_bytes,
        streamed=streamed,
        **_cpu(result, "decompress_cpu_s"),
    )
    s = result.stats
    recorder.emit(
        "apply",
        t0,
        t0 + result.apply_s,
        layer=layer,
        nbytes=s.file_bytes,
        ok=error is None,
        error=err,
        entries=s.entries,
        files=s.files,
        dirs=s.dirs,
        symlinks=s.symlinks,
        hardlinks=s.hardlinks,
        whiteouts=s.whiteouts,
        opaques=s.opaques,
        **_cpu(result, "apply_cpu_s"),
    )


def _cpu(result: LayerApplyResult, key: str) -> dict[str, Any]:
    """``cpu_s``: the CPU time (user + system) of the thread that did the event's work, where measured.

    Why: a layer's apply event spans the whole pipeline, and on a decompress-bound layer its thread mostly
    waits for chunks (the eager image's largest layer: 0.6 CPU-s of apply over 0.97 s), so its duration is
    not the CPU it asks of the host; the simulator's calibration can tell them apart only from this. The
    decompress event's is the producer thread's (with a span decompressor, its coordinating thread only;
    with an external ``decompress_streams`` process, not that process's)."""
    value = result.timings.get(key)
    return {} if value is None else {"cpu_s": round(value, 6)}


def _hash_file_in_thread(path: Path, on_input: Callable[[bytes], None], stop: threading.Event) -> Callable[[], None]:
    """Feed ``path`` to ``on_input`` in a side thread (when another reader decompresses); returns a joiner."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with open(path, "rb", buffering=0) as f:
                while not stop.is_set():
                    block = f.read(1 << 20)
                    if not block:
                        return
                    on_input(block)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, name="soci-unpack-hash", daemon=True)
    t.start()

    def join() -> None:
        t.join()
        if errors:
            raise errors[0]

    return join


async def run_stoppable(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, stop=event, **kwargs)`` in a worker thread; cancelling the caller sets ``event``
    and waits for ``fn`` to return before the cancellation propagates."""
    import anyio

    stop = threading.Event()
    box: dict[str, Any] = {}
    finished = anyio.Event()

    async def runner() -> None:
        try:
            box["value"] = await anyio.to_thread.run_sync(partial(fn, *args, stop=stop, **kwargs))
        except Exception as exc:
            box["error"] = exc
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        try:
            await finished.wait()
        except anyio.get_cancelled_exc_class():
            stop.set()
            raise
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


async def apply_layer_async(
    ingest: str | os.PathLike[str], dest: str | os.PathLike[str], **kwargs: Any
) -> LayerApplyResult:
    """:func:`apply_layer` from async code (asyncio or trio), stoppable by cancellation."""
    return await run_stoppable(apply_layer, ingest, dest, **kwargs)


__all__ = ["QUEUE_CHUNKS", "ApplyStopped", "LayerApplyResult", "apply_layer", "apply_layer_async", "run_stoppable"]
