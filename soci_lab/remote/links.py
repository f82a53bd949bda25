"""Pagination links of the distribution API (``Link: <url>; rel="next"``), read by the client's tag and
catalog listings and by the referrers walk alike: a leaf both import, so neither reaches into the other."""

from __future__ import annotations

import httpx

__all__ = ["next_link"]


def next_link(link: str | None, current: str) -> str | None:
    """The target of ``Link: <url>; rel="next"``, resolved against the current URL."""
    if not link:
        return None
    for part in link.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if 0 <= start < end:
                return str(httpx.URL(current).join(part[start + 1 : end]))
    return None
