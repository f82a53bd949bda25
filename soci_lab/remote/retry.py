"""Retry policy of every registry request: what is retried, how long to wait, and URL redaction.

Mirrors hashicorp's go-retryablehttp as soci-snapshotter configures it (soci-formats.md §4.7):
connection errors, 429 and 5xx other than 501 are retried up to ``max_retries`` times; the wait before
retry *n* (0-based) is ``min_wait · 2ⁿ`` capped at ``max_wait``, or the server's ``Retry-After`` (also capped)
on a 429/503, plus a jitter drawn from ``[d, d + d/8)``. Errors and events name URLs with their query
values redacted, since storage redirects carry signatures in the query string. The policy is defined in
:mod:`soci_lab.retrypolicy` (shared with the fleet simulator) and re-exported here.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# the policy itself lives in a leaf module the simulator shares (soci_lab.retrypolicy); re-exported here
from ..retrypolicy import RetryPolicy, is_retryable_status, parse_retry_after

__all__ = ["RetryPolicy", "is_retryable_status", "parse_retry_after", "redact_url"]

_SECRET_PLACEHOLDER = "REDACTED"


def redact_url(url: str) -> str:
    """The URL with every query value and any user-info replaced, safe for errors, logs and events."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        query = urlencode([(k, _SECRET_PLACEHOLDER) for k, _ in parse_qsl(query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
