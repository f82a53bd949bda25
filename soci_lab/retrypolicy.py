"""The retry policy of every registry request, as a leaf module: read by the real client and the simulator.

Mirrors hashicorp's go-retryablehttp as soci-snapshotter configures it (soci-formats.md §4.7):
connection errors, 429 and 5xx other than 501 are retried up to ``max_retries`` times; the wait before
retry *n* (0-based) is ``min_wait · 2ⁿ`` capped at ``max_wait``, or the server's ``Retry-After`` (also capped)
on a 429/503, plus a jitter drawn from ``[d, d + d/8)``. The real client (:mod:`soci_lab.remote.retry`,
:mod:`soci_lab.remote.transport`) re-exports it; the fleet simulator (:mod:`soci_lab.sim.fleet`) answers a
rate-limited request with the same waits. It lives apart from ``remote/`` because the house rules keep
``sim/`` from importing ``remote/`` (and httpx with it), not from sharing its policy.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

from .config import HTTPConfig


def is_retryable_status(status: int) -> bool:
    """Whether go-retryablehttp's DefaultRetryPolicy retries a response with this status."""
    return status == 429 or (500 <= status <= 599 and status != 501)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long apart a request is retried (from ``[http]`` or ``[blob]``)."""

    max_retries: int = 8
    min_wait: float = 0.030
    max_wait: float = 300.0

    @classmethod
    def from_config(cls, config: HTTPConfig) -> RetryPolicy:
        return cls(config.max_retries, config.min_wait_msec / 1000.0, config.max_wait_msec / 1000.0)

    def base_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before retry number ``attempt`` (0-based), before jitter."""
        if retry_after is not None:
            return min(retry_after, self.max_wait)
        return min(self.min_wait * (2**attempt), self.max_wait)

    def delay_at(self, attempt: int, retry_after: float | None, u: float) -> float:
        """The jittered wait for a uniform draw ``u`` in [0, 1): ``d + u · d/8`` where ``d`` is :meth:`base_delay`."""
        d = self.base_delay(attempt, retry_after)
        return d + u * d / 8

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """The jittered wait: uniformly in ``[d, d + d/8)`` where ``d`` is :meth:`base_delay`."""
        return self.delay_at(attempt, retry_after, (rng or random).random())


__all__ = ["RetryPolicy", "is_retryable_status", "parse_retry_after"]
