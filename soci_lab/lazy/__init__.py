"""Lazy loading: the span manager, span caches, fetchers, background fetcher, prefetch, verified reader and
the pyfuse3 filesystem of one layer (soci-formats.md §4, hermes.md §3).

Start with :class:`~soci_lab.lazy.span_manager.SpanManager` over a
:class:`~soci_lab.lazy.span.SpanGeometry` and a :class:`~soci_lab.lazy.span.RangeFetcher`.
"""

from __future__ import annotations

from .cache import DirectoryCache, MemoryCache, SpanCache, make_cache
from .fetcher import BytesRangeFetcher, FileRangeFetcher, RegistryRangeFetcher
from .span import EVICTION_TRANSITIONS, FETCH_TRANSITIONS, RangeFetcher, Span, SpanGeometry, SpanState
from .span_manager import SpanManager, verification_attempts

__all__ = [
    "EVICTION_TRANSITIONS",
    "FETCH_TRANSITIONS",
    "BytesRangeFetcher",
    "DirectoryCache",
    "FileRangeFetcher",
    "MemoryCache",
    "RangeFetcher",
    "RegistryRangeFetcher",
    "Span",
    "SpanCache",
    "SpanGeometry",
    "SpanManager",
    "SpanState",
    "make_cache",
    "verification_attempts",
]
