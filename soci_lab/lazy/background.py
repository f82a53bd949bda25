"""The background fetcher (upstream ``fs/backgroundfetcher``, soci-formats.md §4.8).

One fetcher serves every lazily mounted layer of a process. It holds a bounded queue of *resolvers* (one
per layer, each walking its layer's spans 0, 1, 2, … and caching their verified compressed bytes with
:meth:`SpanManager.fetch_single_span`), and a global rate limit: **at most one span fetch is started per
``fetch_period_msec`` across all layers**. ``pause()`` (called when a mount starts, and by the serving
process whenever a read starts a remote span fetch) makes it stay silent for ``silence_period_msec`` from
that call before starting anything, so the reads of a starting container are not competing with background
traffic: a pause during the silence moves its end, it does not queue a second silence after the first.
The queue holds ``max_queue_size`` resolvers (−1 unlimited; 0 or less otherwise means upstream's default
300); when full, ``drop_policy`` ``newest`` refuses the resolver being added, ``oldest`` drops the head.
``add`` never blocks.

Two deliberate differences. Upstream pauses once, on an image's first mount; here every read that has to
fetch a span pauses again, so a container that is still starting after the first silence period does not
find its reads queued behind background spans on a slow link. And a resolver skips spans that are already
fetched or decompressed (read on demand or prefetched) without spending a rate-limit slot on them, so every
slot starts a real fetch.

Across processes (one pyfuse3 mount per process), :func:`per_process_period` spreads the global rate over
the layers: each of ``n`` serving processes uses ``n × fetch_period``.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time

import anyio

from ..config import BackgroundFetchConfig
from ..errors import ConfigError, SociLabError
from ..events import EventRecorder, NullRecorder
from .span import SpanState
from .span_manager import SpanManager

DEFAULT_MAX_QUEUE_SIZE = 300


class SequentialResolver:
    """Walks one layer's spans in order, one span per :meth:`resolve_next` call."""

    def __init__(self, spans: SpanManager, *, layer: str | None = None) -> None:
        self.spans = spans
        self.layer = layer
        self.next_span = 0
        self.closed = False
        self.fetched = 0
        self.failures = 0

    def _skip_done(self) -> None:
        while self.next_span < len(self.spans.spans) and self.spans.spans[self.next_span].state != (
            SpanState.UNREQUESTED
        ):
            self.next_span += 1

    def has_more(self) -> bool:
        self._skip_done()
        return not self.closed and self.next_span < len(self.spans.spans)

    async def resolve_next(self) -> bool:
        """Fetch the next unfetched span; True while spans remain."""
        self._skip_done()
        if self.closed or self.next_span >= len(self.spans.spans):
            return False
        sid = self.next_span
        self.next_span += 1
        try:
            if await self.spans.fetch_single_span(sid):
                self.fetched += 1
        except SociLabError:
            self.failures += 1  # a span that failed stays unrequested: a read will fetch it
        return self.has_more()

    def close(self) -> None:
        self.closed = True


class BackgroundFetcher:
    """Rate-limited, pausable, bounded-queue fetcher of all spans of all registered layers."""

    def __init__(
        self,
        config: BackgroundFetchConfig | None = None,
        *,
        events: EventRecorder | None = None,
        fetch_period: float | None = None,
    ) -> None:
        cfg = config or BackgroundFetchConfig()
        if cfg.drop_policy not in ("newest", "oldest"):
            raise ConfigError(f"[background_fetch] drop_policy must be 'newest' or 'oldest', not {cfg.drop_policy!r}")
        self.config = cfg
        self.period = cfg.fetch_period_msec / 1000.0 if fetch_period is None else fetch_period
        self.silence = cfg.silence_period_msec / 1000.0
        self.max_queue = (
            math.inf
            if cfg.max_queue_size == -1
            else (cfg.max_queue_size if cfg.max_queue_size > 0 else DEFAULT_MAX_QUEUE_SIZE)
        )
        self.drop_newest = cfg.drop_policy == "newest"
        self.events = events if events is not None else NullRecorder()
        self.queue: collections.deque[SequentialResolver] = collections.deque()
        self.dropped = 0
        self.started = 0
        self._pause = False
        #: ``time.monotonic()`` before which nothing is started (the last pause plus the silence period)
        self.quiet_until = 0.0
        self.pauses = 0
        self._closed = False
        self._wakeup: anyio.Event | None = None
        self._next_slot = 0.0
        self.inflight = 0
        #: the resolver popped by the loop and waiting for its rate-limit slot
        self.holding: SequentialResolver | None = None

    def add(self, resolver: SequentialResolver) -> bool:
        """Queue a layer's resolver; False when it was dropped (queue full, ``newest`` policy)."""
        if len(self.queue) >= self.max_queue:
            self.dropped += 1
            if self.drop_newest:
                return False
            self.queue.popleft()
        self.queue.append(resolver)
        if self._wakeup is not None:
            self._wakeup.set()
        return True

    def pause(self) -> None:
        """Stay silent for the silence period from now before starting the next fetch (upstream ``Pause``)."""
        self._pause = True
        self.pauses += 1
        self.quiet_until = max(self.quiet_until, time.monotonic() + self.silence)
        if self._wakeup is not None:
            self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def _one(self, resolver: SequentialResolver) -> None:
        t0 = self.events.now()
        sid = resolver.next_span
        try:
            more = await resolver.resolve_next()
        finally:
            self.inflight -= 1
        self.events.emit("bg_fetch", t0, layer=resolver.layer, span=sid, more=more)
        if more and not self._closed:
            self.add(resolver)

    async def run(self) -> None:
        """The fetch loop; returns after :meth:`close`. Run it in a task group next to the FUSE server."""
        async with anyio.create_task_group() as tg:
            while not self._closed:
                if self._pause:
                    self._pause = False
                    while not self._closed and time.monotonic() < self.quiet_until:
                        await anyio.sleep(min(self.quiet_until - time.monotonic(), 0.05))
                    continue
                resolver = None
                while self.queue and resolver is None:
                    r = self.queue.popleft()
                    if r.has_more():
                        resolver = r
                if resolver is None:
                    self._wakeup = anyio.Event()
                    await self._wakeup.wait()
                    self._wakeup = None
                    continue
                # global limiter: one start per period (burst 1)
                self.holding = resolver
                now = anyio.current_time()
                if self._next_slot > now:
                    await anyio.sleep(self._next_slot - now)
                    now = anyio.current_time()
                self.holding = None
                if self._closed:
                    break
                if self._pause:
                    self.queue.appendleft(resolver)
                    continue
                self._next_slot = max(now, self._next_slot) + self.period
                self.started += 1
                self.inflight += 1
                tg.start_soon(self._one, resolver)
            tg.cancel_scope.cancel()


def per_process_period(config: BackgroundFetchConfig, processes: int) -> float:
    """Fetch period (seconds) each of ``processes`` serving processes uses to keep the global rate."""
    return max(1, processes) * config.fetch_period_msec / 1000.0


async def drain(fetcher: BackgroundFetcher, timeout: float) -> None:
    """Run ``fetcher`` until its queue is empty or ``timeout`` passes (tests, benchmarks)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(fetcher.run)
        with contextlib.suppress(TimeoutError), anyio.fail_after(timeout):
            while fetcher.inflight or fetcher.holding or any(r.has_more() for r in fetcher.queue):
                await anyio.sleep(0.01)
        fetcher.close()
