"""Check a lazily served layer against its own bytes: the layer digest, every checkpoint, every TOC entry.

A zTOC is a claim about a layer made by whoever built the SOCI index. Span digests only say which compressed
bytes to expect; the checkpoint windows, the span boundaries and the TOC (names, types, modes, sizes, offsets,
links, devices, xattrs) are taken on trust by upstream. A zTOC from an unpinned source (a v1 referrer anyone
with push access can add, an artifact store) can therefore make a lazy mount show files the image does not have,
or other bytes than it has.

:func:`check_layer` binds the whole zTOC to the layer, in one pass from the start of the blob:

1. **Layer digest.** Every compressed byte in order — ``[0, start of span 0)``, each span's bytes (checked
   against their span digest by the span manager), then the rest up to the layer size — hashed with sha256
   and compared with the layer digest from the image manifest. Spans that share a byte (a checkpoint in the
   middle of a byte) must agree on it. So every span digest in the zTOC is now known to be the digest of
   the layer's own bytes at that range, and any later fetch that passes it returns those same bytes.
2. **The real tar stream.** The blob decompressed from its first byte, as the eager unpacker does (gzip
   members with zero padding after the last, zstd frames, or the tar as is).
3. **Checkpoints.** Each span decompressed the way a read serves it — from its checkpoint (window, bit
   offset) and its compressed bytes — must equal the real stream at ``[start, end)`` of that span, and the
   spans must cover the real stream exactly. After this no checkpoint can change a served byte: a read
   decompresses the same verified compressed bytes from the same checkpoint.
4. **TOC.** The real stream is scanned by the parser that builds TOCs (:class:`~soci_lab.ztoc.toc.TarScanner`,
   Go ``archive/tar`` rules) and the entries it finds must be exactly the zTOC's, in order, field for field
   (:func:`~soci_lab.ztoc.toc.entry_view`: name, type, data offset and size, link target, permission bits,
   owner, mtime, device numbers, xattrs). An added, removed, aliased or altered entry fails here.

Why nothing cheaper is sound: a tar entry is only located by walking every header before it (a header
found anywhere else may be a tar file *inside* a file), and a gzip stream's state at a checkpoint only
by inflating everything before it. So before the whole layer is checked a zTOC must either be named by
the manifest being mounted (:func:`ztoc_origin`) or not be served at all; see
``docs/formats.md`` ("What a lazy mount verifies"). Costs one extra inflate of the layer and a sha256 over
it, in worker threads.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from ..errors import LayerCheckFailed, MountError, SociLabError
from ..events import EventRecorder, NullRecorder
from ..ztoc.toc import TarScanner, entry_view
from .span import SpanState
from .span_manager import SpanManager

#: spans fetched ahead of the one being checked
LOOKAHEAD = 4
_OUT = 1 << 20
#: deflate's largest expansion (258-byte matches of 1-2 bits each): a gzip span can give no more than this
_DEFLATE_MAX_RATIO = 1032
_VIEW_FIELDS = ("name", "type", "data offset", "size", "link target", "mode", "uid", "gid", "mtime", "devmajor",
                "devminor", "xattrs")


@dataclass
class LayerCheck:
    """What :func:`check_layer` verified."""

    digest: str
    compressed_bytes: int
    uncompressed_bytes: int
    entries: int
    spans: int
    seconds: float


class _Stream:
    """The layer's real uncompressed stream, decompressed from the start as the eager unpacker does, handed
    to ``emit`` in pieces of at most 1 MiB (a layer that inflates a thousandfold stays bounded in memory)."""

    def __init__(self, algorithm: str, emit: Callable[[bytes], None]) -> None:
        self.algorithm = algorithm
        self.emit = emit
        self.d: Any = None
        self.seen = False
        self.done = False  # gzip: zero padding after the last member
        if algorithm == "zstd":
            import zstandard

            self.d = zstandard.ZstdDecompressor().stream_writer(
                _Sink(emit), write_size=_OUT, write_return_read=True, closefd=False  # type: ignore[arg-type]
            )  # (frames and skippable frames one after another, as eager's stream reader)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.seen = True
        try:
            if self.algorithm == "gzip":
                self._gzip(data)
            elif self.algorithm == "zstd":
                self.d.write(data)
            else:
                self.emit(data)
        except (zlib.error, ValueError) as exc:
            raise LayerCheckFailed(f"the layer does not decompress: {exc}") from None
        except SociLabError:
            raise
        except Exception as exc:  # zstandard.ZstdError
            raise LayerCheckFailed(f"the layer does not decompress: {exc}") from None

    def _gzip(self, data: bytes) -> None:
        while data:
            if self.done:
                if data.strip(b"\x00"):
                    raise LayerCheckFailed("the layer has data after its last gzip member's zero padding")
                return
            if self.d is None or self.d.eof:
                if self.d is not None and not data.strip(b"\x00"):
                    self.done = True
                    continue
                self.d = zlib.decompressobj(31)
            out = self.d.decompress(data, _OUT)
            if out:
                self.emit(out)
            while self.d.unconsumed_tail == b"" and len(out) == _OUT and not self.d.eof:
                out = self.d.decompress(b"", _OUT)
                if out:
                    self.emit(out)
            data = self.d.unused_data if self.d.eof else self.d.unconsumed_tail

    def finish(self) -> None:
        if self.algorithm == "gzip" and (not self.seen or self.d is None or not (self.d.eof or self.done)):
            raise LayerCheckFailed("the layer's compressed stream is truncated")
        if self.algorithm == "zstd":
            self.d.flush()  # (a truncated last frame gives fewer bytes: the size and TOC comparisons see it)


class _Sink:
    """A file-like end of zstandard's stream writer: every write goes to ``emit``."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self.emit = emit

    def write(self, data: bytes) -> int:
        self.emit(bytes(data))
        return len(data)


class _Checker:
    """The in-order part of :func:`check_layer` (runs in worker threads, one step at a time)."""

    def __init__(self, geometry: Any, digest: str) -> None:
        self.geometry = geometry
        self.digest = digest
        self.hasher = hashlib.sha256()
        self.pos = 0  # compressed bytes hashed so far
        self.prev = b""  # the previous compressed piece (for the shared byte)
        self.stream = _Stream(str(getattr(geometry, "algorithm", None) or _algorithm(geometry)), self._real)
        self.scanner = TarScanner()
        self.pending: deque[tuple[int, int, int, bytes]] = deque()  # (span, start, end, as served)
        self.buf = bytearray()
        self.buf_start = 0  # real-stream offset of buf[0]
        self.total = 0

    def piece(self, start: int, data: bytes, span: int | None) -> None:
        """Hash, decompress and compare the compressed bytes ``data`` found at ``start`` (span ``span``)."""
        if start < self.pos:
            k = self.pos - start
            if k > len(self.prev) or k > len(data) or self.prev[len(self.prev) - k :] != data[:k]:
                raise LayerCheckFailed(f"span {span} disagrees with the previous span on the bytes they share")
            fresh = data[k:]
        elif start > self.pos:
            raise LayerCheckFailed(f"bytes {self.pos}-{start - 1} of the layer belong to no span")
        else:
            fresh = data
        if span is not None:
            us, ue = self.geometry.uncompressed_range(span)
            if self.stream.algorithm == "gzip" and ue - us > _DEFLATE_MAX_RATIO * len(data) + (1 << 16):
                raise LayerCheckFailed(  # (before allocating what a hostile zTOC claims)
                    f"span {span} claims {ue - us} bytes from {len(data)} compressed: more than deflate can give"
                )
            try:
                served = self.geometry.decompress(span, data)
            except SociLabError as exc:
                raise LayerCheckFailed(f"span {span} does not decompress from its checkpoint: {exc}") from None
            if len(served) != ue - us:
                raise LayerCheckFailed(f"span {span} decompresses to {len(served)} bytes, the zTOC says {ue - us}")
            self.pending.append((span, us, ue, served))
        self.hasher.update(fresh)
        self.pos += len(fresh)
        self.prev = data
        self.stream.feed(bytes(fresh))

    def _real(self, out: bytes) -> None:
        try:
            self.scanner.feed(out)
        except SociLabError as exc:
            raise LayerCheckFailed(f"the layer's tar stream does not parse: {exc}") from None
        self.total += len(out)
        self.buf += out
        self._compare()

    def _compare(self) -> None:
        while self.pending:
            span, us, ue, served = self.pending[0]
            if us != self.buf_start:  # (cannot happen: the zTOC's spans tile its stream, checked on load)
                raise LayerCheckFailed(
                    f"span {span} starts at uncompressed byte {us}, the layer's bytes there start span data at "
                    f"{self.buf_start}"
                )
            if len(self.buf) < ue - us:
                return
            if self.buf[: ue - us] != served:
                diff = next(i for i, (a, b) in enumerate(zip(self.buf, served, strict=False)) if a != b)
                raise LayerCheckFailed(
                    f"span {span} as its checkpoint decompresses it differs from the layer at uncompressed byte "
                    f"{us + diff}"
                )
            del self.buf[: ue - us]
            self.buf_start = ue
            self.pending.popleft()

    def finish(self, toc: list[Any]) -> int:
        self.stream.finish()
        self._compare()
        if self.pending:
            span = self.pending[0][0]
            raise LayerCheckFailed(f"the layer ends before span {span} does (it has {self.total} bytes uncompressed)")
        size = self.geometry.uncompressed_size
        if self.total < size:  # (after the end-of-archive marker a tar may carry padding nobody serves)
            raise LayerCheckFailed(f"the layer decompresses to {self.total} bytes, the zTOC says {size}")
        got = "sha256:" + self.hasher.hexdigest()
        if got != self.digest:
            raise LayerCheckFailed(f"the layer's {self.pos} bytes hash to {got}, not to the layer digest {self.digest}")
        try:
            self.scanner.finish()
        except SociLabError as exc:
            raise LayerCheckFailed(f"the layer's tar stream does not parse: {exc}") from None
        real = self.scanner.entries
        for k, (a, b) in enumerate(zip(real, toc, strict=False)):
            try:
                va, vb = entry_view(a), entry_view(b)
            except SociLabError as exc:
                raise LayerCheckFailed(f"TOC entry {k} ({b.name!r}) is malformed: {exc}") from None
            if va != vb:
                what = next(f for f, x, y in zip(_VIEW_FIELDS, va, vb, strict=True) if x != y)
                raise LayerCheckFailed(
                    f"TOC entry {k} ({b.name!r}) disagrees with the layer's entry {a.name!r} on its {what}"
                )
        if len(real) != len(toc):
            raise LayerCheckFailed(f"the zTOC lists {len(toc)} entries, the layer has {len(real)}")
        return len(real)


def _algorithm(geometry: Any) -> str:
    zinfo = getattr(geometry, "zinfo", None)
    return str(getattr(zinfo, "algorithm", "gzip"))


async def check_layer(
    spans: SpanManager,
    ztoc: Any,
    *,
    digest: str,
    blob_size: int = 0,
    events: EventRecorder | None = None,
    layer: str | None = None,
) -> LayerCheck:
    """Verify the whole layer against ``ztoc`` (module docstring); raise :class:`LayerCheckFailed` on any
    difference. ``spans`` is the layer's span manager over ``ztoc`` (its fetcher and caches are used: spans
    already fetched are not fetched again, spans already decompressed are). ``blob_size`` is the layer size
    from the image manifest (0: the zTOC's)."""
    rec = events if events is not None else NullRecorder()
    t0 = rec.now()
    start = time.monotonic()
    checker = _Checker(ztoc, digest)
    n = spans.max_span_id + 1
    try:
        entries = await _run(spans, ztoc, checker, n, blob_size)
    except BaseException as raised:
        exc: BaseException = raised
        if isinstance(exc, BaseExceptionGroup):
            from ..errors import first_error

            exc = first_error(exc)
        if not isinstance(exc, SociLabError):
            raise
        _fail(rec, t0, layer, exc)
        if isinstance(exc, LayerCheckFailed):
            raise LayerCheckFailed(f"layer {digest} does not match its zTOC: {_one_line(exc)}") from None
        raise LayerCheckFailed(f"layer {digest} could not be checked against its zTOC: {_one_line(exc)}") from None
    rec.emit("verify", t0, layer=layer, nbytes=checker.pos, what="layer", entries=entries, spans=n)
    return LayerCheck(digest, checker.pos, checker.total, entries, n, time.monotonic() - start)


async def _run(spans: SpanManager, ztoc: Any, checker: _Checker, n: int, blob_size: int) -> int:
    h1 = ztoc.compressed_range(0)[0] if n else 0
    if h1 > 0:
        head = await spans.fetcher.fetch(0, h1 - 1)
        if len(head) != h1:
            raise LayerCheckFailed(f"the layer's first {h1} bytes came back as {len(head)}")
        await anyio.to_thread.run_sync(checker.piece, 0, head, None)
    got: dict[int, bytes] = {}
    ready: dict[int, anyio.Event] = {i: anyio.Event() for i in range(n)}
    failure: list[Exception] = []

    async def fetch(i: int) -> None:
        try:
            got[i] = await spans.compressed_bytes(i)
        except Exception as exc:
            failure.append(exc)
        finally:
            ready[i].set()

    async with anyio.create_task_group() as tg:
        for i in range(min(n, LOOKAHEAD)):
            tg.start_soon(fetch, i)
        for i in range(n):
            await ready[i].wait()
            if failure:
                raise failure[0]
            if i + LOOKAHEAD < n:
                tg.start_soon(fetch, i + LOOKAHEAD)
            data = got.pop(i)
            await anyio.to_thread.run_sync(checker.piece, ztoc.compressed_range(i)[0], data, i)
    end = checker.pos
    size = blob_size or int(getattr(ztoc, "compressed_archive_size", 0) or 0)
    if size > end:
        tail = await spans.fetcher.fetch(end, size - 1)
        if len(tail) != size - end:
            raise LayerCheckFailed(f"the layer's bytes {end}-{size - 1} came back as {len(tail)} bytes")
        await anyio.to_thread.run_sync(checker.piece, end, tail, None)
    return int(await anyio.to_thread.run_sync(checker.finish, list(ztoc.toc)))


def _fail(rec: EventRecorder, t0: float, layer: str | None, exc: BaseException) -> None:
    rec.emit("verify", t0, layer=layer, ok=False, error=_one_line(exc), what="layer")


def _one_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]


def ztoc_origin(found_via: str) -> str:
    """The :attr:`~soci_lab.lazy.spec.LazyLayerSpec.ztoc_origin` of a zTOC found by the SOCI index discovery
    step ``found_via`` (``explicit``, ``v2``, ``v1``, ``hermes``).

    ``"pinned"`` where the manifest being mounted names the zTOC: its v2 annotation (manifest → index digest
    → zTOC digest, each checked on fetch) or an index digest the user gave. Whoever could put another zTOC
    there must serve another manifest, and could then as well change the layers an eager mount shows: the
    image's own index is the publisher's as much as its layers are, whether the user named the manifest by
    digest or by tag. A v1 referrer is added by anyone who can push to the repository, and stays in front of a
    digest-pinned image; the artifact store answers with a zTOC the image does not name: both come from
    someone who cannot change the layers, so ``"unpinned"`` / ``"store"``, checked before serving."""
    if found_via in ("explicit", "v2"):
        return "pinned"
    if found_via == "hermes":
        return "store"
    return "unpinned"


def layer_check_mode(spec: Any, options: Any) -> str:
    """``"before_serving"``, ``"background"`` or ``"none"`` for a :class:`~soci_lab.lazy.mount.LazyLayerSpec`
    served with :class:`~soci_lab.lazy.mount.ServeOptions`: ``options.layer_check``, else the config's
    ``lazy_layer_check``; ``auto`` goes by ``spec.ztoc_origin`` (pinned: in the background, local: none,
    anything else — unpinned, store, unknown — before serving)."""
    mode = options.layer_check or options.config.lazy_layer_check
    if mode not in ("auto", "before_serving", "background"):
        raise MountError(f"lazy_layer_check must be auto, before_serving or background, not {mode!r}")
    if mode != "auto":
        return str(mode)
    return {"local": "none", "pinned": "background"}.get(spec.ztoc_origin, "before_serving")


async def check_when_complete(
    spans: SpanManager,
    ztoc: Any,
    *,
    digest: str,
    blob_size: int,
    on_failure: Callable[[str], None],
    on_success: Callable[[], None] | None = None,
    events: EventRecorder | None = None,
    layer: str | None = None,
    poll: float = 0.25,
) -> LayerCheck | None:
    """Wait until every span has been fetched (background fetcher, prefetch and reads together), then
    :func:`check_layer` (hashing the compressed bytes of read spans kept while ``spans.keep_compressed``, set
    by the caller before reads start, instead of fetching them again; released afterwards); on a difference
    call ``on_failure(message)`` (the server then answers EIO), else ``on_success()`` (per-entry header
    checks are no longer needed)."""
    while any(s.state == SpanState.UNREQUESTED for s in spans.spans):
        await anyio.sleep(poll)
    try:
        result = await check_layer(spans, ztoc, digest=digest, blob_size=blob_size, events=events, layer=layer)
    except SociLabError as exc:
        on_failure(_one_line(exc))
        return None
    finally:
        spans.release_compressed()  # (kept for this check: see SpanManager.keep_compressed)
    if on_success is not None:
        on_success()
    return result


__all__ = ["LOOKAHEAD", "LayerCheck", "check_layer", "check_when_complete", "layer_check_mode", "ztoc_origin"]
