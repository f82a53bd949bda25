"""Bandwidth shaping shared by the embedded registry and the shaping proxy.

A ``TokenBucket`` meters bytes at a fixed rate. It is debt based: a writer takes the tokens for a chunk
at once, possibly driving the balance negative, and then sleeps off the debt. Waiters queue on an
``asyncio.Lock`` (FIFO), so flows that write chunks of equal size take turns: one bucket shared by every
connection gives each active flow an equal share of the rate. Because the balance is computed from the
real elapsed time, a sleep that overshoots is paid back on the next chunk, and the long-run rate is exact
up to the burst allowance.
"""

from __future__ import annotations

import asyncio
import time

#: Largest chunk a shaped writer sends at once (bytes).
MAX_SHAPED_CHUNK = 64 * 1024
#: Smallest chunk, so very low rates still move data in reasonable pieces.
MIN_SHAPED_CHUNK = 1024


class TokenBucket:
    """Meters bytes at ``rate`` bytes/s; ``burst`` is how many bytes may go at once after an idle time."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = float(rate)
        # 20 ms worth of data (at least one chunk): small enough that measured rates match the setting.
        self.burst = float(burst) if burst is not None else max(self.rate * 0.02, float(self.chunk_size))
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock: asyncio.Lock | None = None

    @property
    def chunk_size(self) -> int:
        """The chunk size a writer should use with this bucket: about 10 ms of data, clamped."""
        return int(min(MAX_SHAPED_CHUNK, max(MIN_SHAPED_CHUNK, self.rate / 100)))

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def consume(self, n: int) -> None:
        """Wait until ``n`` bytes may be sent (call before sending them)."""
        if self._lock is None:  # created lazily, inside the loop that uses it
            self._lock = asyncio.Lock()
        async with self._lock:
            self._refill()
            self._tokens -= n
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)


def chunk_size_for(*buckets: TokenBucket | None, default: int = 1 << 20) -> int:
    """The chunk size to write with when all of ``buckets`` meter the stream (the smallest asks)."""
    sizes = [b.chunk_size for b in buckets if b is not None]
    return min(sizes) if sizes else default


async def consume_all(n: int, *buckets: TokenBucket | None) -> None:
    """Take ``n`` bytes from every bucket given (``None`` entries are ignored)."""
    for bucket in buckets:
        if bucket is not None:
            await bucket.consume(n)
