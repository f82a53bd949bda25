"""Prefetch (span ranges of prefetch artifacts, before a layer is ready) and the per-index lazy policy.

Upstream runs prefetch synchronously while resolving a layer, before the FUSE mount exists, bounded by
``[prefetch] max_concurrency`` (≤ 0: unbounded). Hermes (hermes.md §3.1) changes the policy through index
annotations, computed here by :func:`lazy_policy`:

* ``hermes.cloudpilot.ai/background-fetch``: ``disabled`` → the layer is not given to the background
  fetcher (and neighbours are not pre-resolved); ``enabled``/missing/unknown → it is. The background fetcher
  is paused on mount unless the value is exactly ``enabled``.
* ``hermes.cloudpilot.ai/skip-file-verification``: true (Go ``ParseBool``) → no per-file tar-header check.
* ``hermes.cloudpilot.ai/prefetch-profile`` (non-empty, on the prefetch artifact descriptor): prefetch runs
  even when ``[prefetch] enable = false``, and only priority-0 (sync) spans are fetched; priority > 0 spans
  are dropped. Without a profile, priority > 0 spans are fetched after the sync ones, in the background.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from ..config import Config
from ..errors import SociLabError
from ..events import EventRecorder, NullRecorder
from .span_manager import SpanManager

ANN_BACKGROUND_FETCH = "hermes.cloudpilot.ai/background-fetch"
ANN_PREFETCH_PROFILE = "hermes.cloudpilot.ai/prefetch-profile"
ANN_SKIP_FILE_VERIFICATION = "hermes.cloudpilot.ai/skip-file-verification"

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


@dataclass(frozen=True)
class LazyPolicy:
    """What one SOCI index asks of the lazy path."""

    background_fetch: bool = True
    pause_background_on_mount: bool = True
    preresolve_neighbours: bool = True
    verify_files: bool = True
    prefetch_enabled: bool = False
    prefetch_profile: str = ""
    prefetch_max_concurrency: int = 0


def _parse_bool(value: str) -> bool | None:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def lazy_policy(
    config: Config | None = None,
    index_annotations: Mapping[str, str] | None = None,
    prefetch_annotations: Mapping[str, str] | None = None,
) -> LazyPolicy:
    """The policy for one index: daemon config, changed by Hermes annotations as hermes.md §3.1 says.

    ``index_annotations`` None means "no index" (upstream: background fetch enabled, pause on mount).
    """
    cfg = config or Config()
    ann = index_annotations or {}
    bg_value = ann.get(ANN_BACKGROUND_FETCH, "").strip().lower()
    bg_enabled = bg_value != "disabled"
    pause = index_annotations is None or bg_value != "enabled"
    skip = _parse_bool(ann.get(ANN_SKIP_FILE_VERIFICATION, "")) is True
    profile = (prefetch_annotations or {}).get(ANN_PREFETCH_PROFILE, "") or ""
    return LazyPolicy(
        background_fetch=bg_enabled and not cfg.background_fetch.disable,
        pause_background_on_mount=pause,
        preresolve_neighbours=bg_enabled,
        verify_files=not (cfg.disable_verification or skip),
        prefetch_enabled=cfg.prefetch.enable or bool(profile),
        prefetch_profile=profile,
        prefetch_max_concurrency=cfg.prefetch.max_concurrency,
    )


@dataclass
class PrefetchResult:
    spans: int = 0
    failed: int = 0
    deferred: list[int] | None = None


def _span_ids(ranges: Iterable[Any], max_span: int) -> tuple[list[int], list[int]]:
    """(sync span ids, async span ids) from ``PrefetchSpan``-like objects or ``(start, end[, prio])``."""
    sync: list[int] = []
    later: list[int] = []
    seen: set[int] = set()
    for r in ranges:
        if isinstance(r, tuple | list):
            start, end, prio = (r[0], r[1], r[2] if len(r) > 2 else 0)
        else:
            start, end, prio = r.start_span, r.end_span, getattr(r, "priority", 0)
        for sid in range(max(0, start), min(end, max_span) + 1):
            if sid not in seen:
                seen.add(sid)
                (sync if prio <= 0 else later).append(sid)
    return sync, later


async def prefetch(
    spans: SpanManager,
    ranges: Iterable[Any],
    *,
    max_concurrency: int = 0,
    profile: str = "",
    events: EventRecorder | None = None,
    layer: str | None = None,
) -> PrefetchResult:
    """Resolve (fetch + verify + decompress + cache) the spans of ``ranges`` with bounded concurrency.

    Returns after the sync (priority 0) spans; the async ones are returned in ``deferred`` for the caller
    to fetch in the background (or dropped with a Hermes ``profile``). Failures are counted, not raised:
    prefetch is an optimisation, a read will fetch the span again.
    """
    ev = events if events is not None else NullRecorder()
    sync, later = _span_ids(ranges, spans.max_span_id)
    limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency > 0 else None
    result = PrefetchResult(deferred=[] if profile else later)

    async def one(sid: int) -> None:
        t0 = ev.now()
        try:
            if limiter is not None:
                async with limiter:
                    await spans.resolve_span(sid)
            else:
                await spans.resolve_span(sid)
        except SociLabError as exc:
            result.failed += 1
            ev.emit("prefetch", t0, layer=layer, span=sid, ok=False, error=str(exc))
            return
        result.spans += 1
        ev.emit("prefetch", t0, layer=layer, span=sid, nbytes=spans.spans[sid].uncomp_size)

    async with anyio.create_task_group() as tg:
        for sid in sync:
            tg.start_soon(one, sid)
    return result
