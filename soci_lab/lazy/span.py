"""Spans, their state machine, and the two small Protocols the lazy data path is written against.

A *span* is the unit of lazy fetching: a compressed byte range of the layer blob that decompresses, on
its own (with its checkpoint), to an uncompressed byte range of the tar stream. The span manager moves
each span through upstream's states (soci-formats.md §4.5)::

    unrequested ──▶ requested ──▶ fetched ──▶ uncompressed
         ▲             │  └──────────────────────▲
         └─────────────┘ (fetch / verify / decompress failed)

soci_lab adds **eviction**, which upstream never does (its span cache grows without bound). Eviction
transitions are a separate set, taken only by the span manager when a cache reports that it dropped a
span's bytes, never by a fetch:

* ``uncompressed → fetched``      the uncompressed bytes were evicted but the compressed ones are cached;
* ``uncompressed → unrequested``  both were evicted (or there is no compressed copy);
* ``fetched → unrequested``       the compressed bytes were evicted.

The rule that makes this safe: a span's state never claims more than its caches hold. A span is
``uncompressed`` only while its uncompressed bytes are in the uncompressed cache, ``fetched`` only while
its verified compressed bytes are in the compressed cache; when a reader finds otherwise (an eviction it
has not been told about yet) it reconciles the state downwards first, and the normal path re-fetches.
Because the state only ever goes *down* on eviction, and only to a state from which the normal
transitions lead back up, an evicted span is simply fetched again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..errors import InvalidSpanStateTransition


class SpanState(enum.IntEnum):
    """Upstream's ``spanState`` values, same numbers."""

    UNREQUESTED = 0
    REQUESTED = 1
    FETCHED = 2
    UNCOMPRESSED = 3


S = SpanState

#: Upstream's ``stateTransitionMap``: the transitions a fetch may take.
FETCH_TRANSITIONS: frozenset[tuple[SpanState, SpanState]] = frozenset(
    {
        (S.UNREQUESTED, S.REQUESTED),
        (S.REQUESTED, S.UNREQUESTED),
        (S.REQUESTED, S.FETCHED),
        (S.REQUESTED, S.UNCOMPRESSED),
        (S.FETCHED, S.UNCOMPRESSED),
    }
)

#: soci_lab's eviction transitions (see module docstring); only ``SpanManager`` eviction takes these.
EVICTION_TRANSITIONS: frozenset[tuple[SpanState, SpanState]] = frozenset(
    {
        (S.UNCOMPRESSED, S.FETCHED),
        (S.UNCOMPRESSED, S.UNREQUESTED),
        (S.FETCHED, S.UNREQUESTED),
    }
)


def check_transition(old: SpanState, new: SpanState, *, eviction: bool = False) -> None:
    """Raise :class:`InvalidSpanStateTransition` unless ``old → new`` is allowed (for this kind of change)."""
    allowed = EVICTION_TRANSITIONS if eviction else FETCH_TRANSITIONS
    if (old, new) not in allowed:
        kind = "eviction" if eviction else "fetch"
        raise InvalidSpanStateTransition(f"invalid span state transition ({kind}): {old.name} -> {new.name}")


@dataclass(slots=True)
class Span:
    """One span's geometry and current state. ``[start, end)`` ranges, as upstream's span record."""

    id: int
    start_comp: int
    end_comp: int
    start_uncomp: int
    end_uncomp: int
    state: SpanState = SpanState.UNREQUESTED
    #: how many times this span's compressed bytes were fetched from the remote (all attempts)
    fetches: int = field(default=0)

    @property
    def comp_size(self) -> int:
        return self.end_comp - self.start_comp

    @property
    def uncomp_size(self) -> int:
        return self.end_uncomp - self.start_uncomp


@runtime_checkable
class SpanGeometry(Protocol):
    """How a layer blob is cut into spans, and how one span is decompressed.

    Implemented by the zTOC adapter (:mod:`soci_lab.lazy.ztoc_geometry`) for real layers and by
    :class:`soci_lab.lazy.testing.FixedGeometry` for tests. ``decompress`` is CPU work: the span manager
    calls it in a worker thread, so it must not touch the event loop.
    """

    @property
    def span_count(self) -> int: ...

    @property
    def uncompressed_size(self) -> int: ...

    def compressed_range(self, span_id: int) -> tuple[int, int]:
        """``[start, end)`` of the span's bytes in the compressed blob."""
        ...

    def uncompressed_range(self, span_id: int) -> tuple[int, int]:
        """``[start, end)`` of the span's bytes in the uncompressed stream."""
        ...

    def span_of(self, uncompressed_offset: int) -> int:
        """The span holding ``uncompressed_offset`` (the last span for offsets at or past the end)."""
        ...

    def span_digest(self, span_id: int) -> str | None:
        """``"sha256:<hex>"`` of the span's compressed bytes, or None when the index has none."""
        ...

    def decompress(self, span_id: int, compressed: bytes) -> bytes:
        """The span's uncompressed bytes from exactly its compressed bytes (checkpoint included)."""
        ...


@runtime_checkable
class RangeFetcher(Protocol):
    """Reads byte ranges of one remote blob. ``upper_inclusive`` as in an HTTP Range header."""

    async def fetch(self, lower: int, upper_inclusive: int) -> bytes: ...
