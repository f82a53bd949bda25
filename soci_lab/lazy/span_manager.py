"""The span manager: fetch, verify, decompress and cache spans on demand — one fetch per span at a time.

A re-creation of upstream's ``fs/span-manager`` (soci-formats.md §4.5) over two Protocols
(:class:`~soci_lab.lazy.span.SpanGeometry`, :class:`~soci_lab.lazy.span.RangeFetcher`), on anyio so it
runs under trio (pyfuse3) and asyncio (notebooks). What it guarantees:

* **Single flight.** Each span has an anyio lock; whoever holds it is the only one fetching that span,
  every other reader waits and then reads the cache. So N concurrent readers of a cold span cause exactly
  one remote fetch (when the fetch succeeds).
* **Verified bytes only.** Compressed bytes are checked against the span digest (sha256 of exactly
  ``[start_comp, end_comp)``) before they are decompressed or cached; a mismatch is retried
  ``max_span_verification_retries`` more times (0 → one attempt, negative → upstream's internal 3) and then
  raised as :class:`IncorrectSpanDigest`. Only verified bytes, or bytes decompressed from them, enter a
  cache, and the directory cache re-checks what it reads back.
* **Eviction.** Caches are bounded; when one evicts a span, the span's state is moved down
  (see :mod:`soci_lab.lazy.span`) so the next read fetches it again.
* **Off the loop.** Hashing, decompression and directory-cache I/O run in worker threads.

Events: ``span_fetch`` (compressed bytes over the wire, per attempt), ``span_verify``,
``span_decompress`` (uncompressed bytes), ``cache_hit`` (``attrs.cache`` = ``uncompressed`` or
``compressed``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

from ..errors import (
    ExceedMaxSpan,
    IncorrectSpanDigest,
    InvalidInput,
    NonMonotonicCheckpoints,
    SociLabError,
    SpanNotAvailable,
)
from ..events import EventRecorder, NullRecorder
from .cache import MemoryCache, SpanCache
from .span import RangeFetcher, Span, SpanGeometry, SpanState, check_transition

#: upstream's internal default when ``max_span_verification_retries`` is negative
DEFAULT_VERIFICATION_RETRIES = 3

TransitionHook = Callable[[int, SpanState, SpanState, bool], None]


def verification_attempts(max_span_verification_retries: int) -> int:
    """How many fetch+verify attempts a span gets: ``retries + 1``, negative meaning upstream's 3."""
    retries = DEFAULT_VERIFICATION_RETRIES if max_span_verification_retries < 0 else max_span_verification_retries
    return retries + 1


class SpanManager:
    """Serves uncompressed bytes of one layer from its spans, fetching each span at most once at a time.

    ``compressed_cache`` holds verified compressed spans (filled by the background fetcher),
    ``uncompressed_cache`` the decompressed spans reads are served from; both default to unbounded memory
    caches. ``on_transition(span_id, old, new, eviction)`` is called after every state change (tests use
    it to audit the state machine). ``verify=False`` skips digest checks (only for indexes without
    digests; it is never the default).
    """

    def __init__(
        self,
        geometry: SpanGeometry,
        fetcher: RangeFetcher,
        *,
        compressed_cache: SpanCache | None = None,
        uncompressed_cache: SpanCache | None = None,
        max_span_verification_retries: int = 0,
        verify: bool = True,
        events: EventRecorder | None = None,
        layer: str | None = None,
        on_transition: TransitionHook | None = None,
        cache_key_prefix: str = "",
        fetch_timeout: float | None = None,
    ) -> None:
        self.geometry = geometry
        self.fetcher = fetcher
        self.ccache: SpanCache = compressed_cache if compressed_cache is not None else MemoryCache()
        self.ucache: SpanCache = uncompressed_cache if uncompressed_cache is not None else MemoryCache()
        self.attempts = verification_attempts(max_span_verification_retries)
        self.verify = verify
        self.events = events if events is not None else NullRecorder()
        self.layer = layer
        self.on_transition = on_transition
        self._prefix = cache_key_prefix
        #: bound on one remote fetch of a span (``[blob] fetching_timeout_sec``); None: unbounded
        self.fetch_timeout = fetch_timeout
        self.spans: list[Span] = []
        for i in range(geometry.span_count):
            cs, ce = geometry.compressed_range(i)
            us, ue = geometry.uncompressed_range(i)
            self.spans.append(Span(i, cs, ce, us, ue))
        self._check_geometry()
        self._locks: dict[int, anyio.Lock] = {}
        #: keep the verified compressed bytes of spans fetched for a read in the compressed cache too, so a
        #: whole-layer check pending on this layer (:func:`soci_lab.lazy.layercheck.check_when_complete`) hashes
        #: them instead of fetching them again; :meth:`release_compressed` ends it
        self.keep_compressed = False
        #: called when a read (not a prefetch or the background) starts a remote fetch: the serving process
        #: pauses its background fetcher with it, so demand fetches have the link (upstream's silence period)
        self.on_demand_fetch: Callable[[], None] | None = None
        #: compressed bytes fetched from the remote, all attempts (what the network carried)
        self.bytes_fetched = 0
        self.remote_fetches = 0

    # --- geometry ---------------------------------------------------------------------------------

    def _check_geometry(self) -> None:
        for a, b in zip(self.spans, self.spans[1:], strict=False):
            if not (a.start_comp < b.start_comp and a.start_uncomp < b.start_uncomp):
                raise NonMonotonicCheckpoints(f"span {b.id} does not start after span {a.id}")
            if a.end_uncomp != b.start_uncomp:
                raise NonMonotonicCheckpoints(f"spans {a.id} and {b.id} do not tile the uncompressed stream")

    @property
    def max_span_id(self) -> int:
        return len(self.spans) - 1

    @property
    def uncompressed_size(self) -> int:
        return self.geometry.uncompressed_size

    def span(self, span_id: int) -> Span:
        if span_id < 0 or span_id > self.max_span_id:
            raise ExceedMaxSpan(f"span {span_id} is beyond the last span {self.max_span_id}")
        return self.spans[span_id]

    def state(self, span_id: int) -> SpanState:
        return self.span(span_id).state

    def _lock(self, span_id: int) -> anyio.Lock:
        lock = self._locks.get(span_id)
        if lock is None:
            lock = self._locks[span_id] = anyio.Lock()
        return lock

    def _key(self, span_id: int) -> str:
        return f"{self._prefix}{span_id}"

    # --- state machine ----------------------------------------------------------------------------

    def _set(self, span: Span, new: SpanState, *, eviction: bool = False) -> None:
        old = span.state
        check_transition(old, new, eviction=eviction)
        span.state = new
        if self.on_transition is not None:
            self.on_transition(span.id, old, new, eviction)

    def _reconcile(self, span: Span) -> None:
        """Move the state down to what the caches actually hold (an eviction we were not told about)."""
        key = self._key(span.id)
        if span.state == SpanState.UNCOMPRESSED and key not in self.ucache:
            self._set(span, SpanState.FETCHED if key in self.ccache else SpanState.UNREQUESTED, eviction=True)
        if span.state == SpanState.FETCHED and key not in self.ccache:
            self._set(span, SpanState.UNREQUESTED, eviction=True)

    def _evicted(self, keys: list[str]) -> None:
        """Reconcile spans whose bytes a cache just dropped, unless their lock holder will do it."""
        for key in keys:
            if not key.startswith(self._prefix):
                continue
            try:
                span = self.spans[int(key[len(self._prefix) :])]
            except (ValueError, IndexError):
                continue
            if not self._lock(span.id).locked():
                self._reconcile(span)

    async def _cache_get(self, cache: SpanCache, span_id: int) -> bytes | None:
        peek = getattr(cache, "peek", None)
        data = peek(self._key(span_id)) if peek is not None else None
        if data is not None:
            return data
        if isinstance(cache, MemoryCache):
            data = cache.get(self._key(span_id))
        else:
            # shielded: a directory cache drops a corrupted file on read, and that must be reconciled
            with anyio.CancelScope(shield=True):
                data = await anyio.to_thread.run_sync(cache.get, self._key(span_id))
        if data is None and not self._lock(span_id).locked():
            self._reconcile(self.spans[span_id])
        return data

    async def _cache_put(self, cache: SpanCache, span_id: int, data: bytes) -> None:
        if isinstance(cache, MemoryCache):
            evicted = cache.put(self._key(span_id), data)
        else:
            # shielded: once the put runs in its thread, the evictions it reports must be applied even if
            # this task is cancelled meanwhile (a sibling read failed), or a span would claim lost bytes
            with anyio.CancelScope(shield=True):
                evicted = await anyio.to_thread.run_sync(cache.put, self._key(span_id), data)
        self._evicted([k for k in evicted if k != self._key(span_id)])

    # --- fetching ---------------------------------------------------------------------------------

    def _emit(self, kind: str, t_start: float, span_id: int, **fields: Any) -> None:
        """Record one event about span ``span_id`` of this layer (every event the manager records is one).

        Saves each call site from repeating ``layer=self.layer, span=...``; ``fields`` go to
        :meth:`EventRecorder.emit` unchanged.
        """
        self.events.emit(kind, t_start, layer=self.layer, span=span_id, **fields)

    async def _fetch_verified(self, span: Span, reason: str) -> bytes:
        """Fetch the span's compressed bytes and check them against its digest, with retries."""
        expected = self.geometry.span_digest(span.id) if self.verify else None
        last: Exception | None = None
        for attempt in range(self.attempts):
            t0 = self.events.now()
            try:
                if self.fetch_timeout is None:
                    data = await self.fetcher.fetch(span.start_comp, span.end_comp - 1)
                else:
                    with anyio.fail_after(self.fetch_timeout):
                        data = await self.fetcher.fetch(span.start_comp, span.end_comp - 1)
            except Exception as exc:
                self._emit("span_fetch", t0, span.id, ok=False, error=_one_line(exc), attempt=attempt, reason=reason)
                raise SpanNotAvailable(f"span {span.id}: fetch failed: {_one_line(exc)}") from exc
            span.fetches += 1
            self.remote_fetches += 1
            self.bytes_fetched += len(data)
            self._emit(
                "span_fetch",
                t0,
                span.id,
                nbytes=len(data),
                attempt=attempt,
                reason=reason,
                range=f"{span.start_comp}-{span.end_comp - 1}",
            )
            if len(data) != span.comp_size:
                last = IncorrectSpanDigest(f"span {span.id}: got {len(data)} bytes, expected {span.comp_size}")
                self._emit("span_verify", t0, span.id, nbytes=len(data), ok=False, error=str(last), attempt=attempt)
                continue
            if expected is None:
                return data
            t1 = self.events.now()
            actual = await anyio.to_thread.run_sync(_sha256, data)
            ok = actual == expected
            self._emit(
                "span_verify",
                t1,
                span.id,
                nbytes=len(data),
                ok=ok,
                error=None if ok else "span digests do not match",
                attempt=attempt,
            )
            if ok:
                return data
            last = IncorrectSpanDigest(f"span {span.id}: span digests do not match (got {actual}, want {expected})")
        assert last is not None
        raise last

    async def _decompress(self, span: Span, comp: bytes) -> bytes:
        t0 = self.events.now()
        try:
            data = await anyio.to_thread.run_sync(self.geometry.decompress, span.id, comp)
        except Exception as exc:
            self._emit("span_decompress", t0, span.id, ok=False, error=_one_line(exc))
            raise SpanNotAvailable(f"span {span.id}: decompression failed: {_one_line(exc)}") from exc
        if len(data) != span.uncomp_size:
            self._emit("span_decompress", t0, span.id, nbytes=len(data), ok=False, error="wrong uncompressed size")
            raise SpanNotAvailable(f"span {span.id}: decompressed to {len(data)} bytes, expected {span.uncomp_size}")
        self._emit("span_decompress", t0, span.id, nbytes=len(data))
        return data

    # --- public operations ------------------------------------------------------------------------

    async def fetch_single_span(self, span_id: int) -> bool:
        """Background fetch (upstream ``FetchSingleSpan``): cache the span's verified compressed bytes.

        Does nothing for a span that is not ``unrequested``. Returns True when it fetched.
        """
        span = self.span(span_id)
        if span.state != SpanState.UNREQUESTED and not self._lock(span_id).locked():
            self._reconcile(span)
        if span.state != SpanState.UNREQUESTED:
            return False
        async with self._lock(span_id):
            try:
                self._reconcile(span)
                if span.state != SpanState.UNREQUESTED:
                    return False
                self._set(span, SpanState.REQUESTED)
                try:
                    comp = await self._fetch_verified(span, "background")
                    await self._cache_put(self.ccache, span_id, comp)
                except BaseException:
                    self._set(span, SpanState.UNREQUESTED)
                    raise
                self._set(span, SpanState.FETCHED)
                return True
            finally:
                self._reconcile(span)

    async def compressed_bytes(self, span_id: int, *, reason: str = "verify") -> bytes:
        """The span's verified compressed bytes: from the compressed cache, else fetched (and cached when the
        span was ``unrequested``; a decompressed span's compressed bytes are fetched again, not kept)."""
        span = self.span(span_id)
        async with self._lock(span_id):
            try:
                self._reconcile(span)
                if span.state == SpanState.FETCHED:
                    comp = await self._cache_get(self.ccache, span_id)
                    if comp is not None:
                        return comp
                    self._reconcile(span)
                if span.state == SpanState.UNCOMPRESSED:
                    comp = await self._cache_get(self.ccache, span_id)  # kept for a pending layer check
                    if comp is not None:
                        return comp
                    return await self._fetch_verified(span, reason)
                self._set(span, SpanState.REQUESTED)
                try:
                    comp = await self._fetch_verified(span, reason)
                    await self._cache_put(self.ccache, span_id, comp)
                except BaseException:
                    self._set(span, SpanState.UNREQUESTED)
                    raise
                self._set(span, SpanState.FETCHED)
                return comp
            finally:
                self._reconcile(span)

    async def resolve_span(self, span_id: int) -> None:
        """Make sure the span is decompressed and cached (prefetch; upstream ``ResolveSpan``)."""
        await self.span_bytes(span_id, reason="prefetch")

    async def span_bytes(self, span_id: int, *, reason: str = "read") -> bytes:
        """The span's whole uncompressed bytes, from cache or fetched (single flight)."""
        span = self.span(span_id)
        key = self._key(span_id)
        if span.state == SpanState.UNCOMPRESSED:
            t0 = self.events.now()
            data = await self._cache_get(self.ucache, span_id)
            if data is not None:
                self._emit("cache_hit", t0, span_id, nbytes=len(data), cache="uncompressed")
                return data
        async with self._lock(span_id):
            try:
                self._reconcile(span)
                if span.state == SpanState.UNCOMPRESSED:
                    t0 = self.events.now()
                    data = await self._cache_get(self.ucache, span_id)
                    if data is not None:
                        self._emit("cache_hit", t0, span_id, nbytes=len(data), cache="uncompressed", waited=True)
                        return data
                    self._reconcile(span)
                if span.state == SpanState.FETCHED:
                    t0 = self.events.now()
                    comp = await self._cache_get(self.ccache, span_id)
                    if comp is not None:
                        self._emit("cache_hit", t0, span_id, nbytes=len(comp), cache="compressed")
                        data = await self._decompress(span, comp)
                        await self._cache_put(self.ucache, span_id, data)
                        self._set(span, SpanState.UNCOMPRESSED)
                        return data
                    self._reconcile(span)
                self._set(span, SpanState.REQUESTED)
                if reason == "read" and self.on_demand_fetch is not None:
                    self.on_demand_fetch()
                try:
                    comp = await self._fetch_verified(span, reason)
                    data = await self._decompress(span, comp)
                    await self._cache_put(self.ucache, span_id, data)
                    if self.keep_compressed:  # verified bytes, for the layer check's hash
                        await self._cache_put(self.ccache, span_id, comp)
                except BaseException:
                    self._set(span, SpanState.UNREQUESTED)
                    raise
                if key in self.ccache and not self.keep_compressed:  # keep caches consistent
                    self.ccache.discard(key)
                self._set(span, SpanState.UNCOMPRESSED)
                return data
            finally:
                self._reconcile(span)

    def spans_for(self, start: int, end: int) -> range:
        """Span ids holding uncompressed ``[start, end)`` (empty for an empty range)."""
        if end <= start:
            return range(0)
        return range(self.geometry.span_of(start), self.geometry.span_of(end - 1) + 1)

    async def get_contents(self, start: int, end: int) -> bytes:
        """Uncompressed bytes ``[start, end)`` of the layer, fetching the spans that hold them concurrently."""
        size = self.uncompressed_size
        if start < 0 or end < start:
            raise InvalidInput(f"invalid range [{start}, {end})")
        end = min(end, size)
        if end <= start:
            return b""
        ids = list(self.spans_for(start, end))
        parts: dict[int, bytes] = {}
        if len(ids) == 1:
            parts[ids[0]] = await self.span_bytes(ids[0])
        else:

            async def one(i: int) -> None:
                parts[i] = await self.span_bytes(i)

            try:
                async with anyio.create_task_group() as tg:
                    for i in ids:
                        tg.start_soon(one, i)
            except BaseExceptionGroup as group:
                # one clear error for the caller (the FUSE layer turns it into EIO) when all failures are ours
                leaves = _leaves(group)
                if leaves and all(isinstance(e, SociLabError) for e in leaves):
                    raise leaves[0] from group
                raise
        out = []
        for i in ids:
            s = self.spans[i]
            lo = max(start, s.start_uncomp) - s.start_uncomp
            hi = min(end, s.end_uncomp) - s.start_uncomp
            out.append(parts[i][lo:hi])
        return b"".join(out)

    def release_compressed(self) -> None:
        """Stop keeping compressed copies of decompressed spans and drop those kept (the layer check is over)."""
        self.keep_compressed = False
        for span in self.spans:
            key = self._key(span.id)
            if span.state == SpanState.UNCOMPRESSED and key in self.ccache and not self._lock(span.id).locked():
                self.ccache.discard(key)

    # --- introspection ----------------------------------------------------------------------------

    def is_hot(self, span_id: int) -> bool:
        """Whether the span's uncompressed bytes can be served without I/O (in a memory cache or tier)."""
        peek = getattr(self.ucache, "peek", None)
        return peek is not None and peek(self._key(span_id)) is not None

    def fetched_uncompressed_bytes(self) -> int:
        """Uncompressed bytes whose span is fetched or decompressed (the state file's ``fetchedSize``)."""
        return sum(s.uncomp_size for s in self.spans if s.state in (SpanState.FETCHED, SpanState.UNCOMPRESSED))

    def close(self) -> None:
        self.ccache.close()
        self.ucache.close()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _one_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]
