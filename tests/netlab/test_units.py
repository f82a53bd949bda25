"""Small pure pieces of netlab: byte-range parsing against its RFC 9110 definition, and the token
bucket's long-run rate and fairness (on an asyncio loop, no network)."""

from __future__ import annotations

import asyncio
import time

from hypothesis import given
from hypothesis import strategies as st

from soci_lab.netlab.registry import IGNORE, _parse_range
from soci_lab.netlab.shaping import TokenBucket


def reference_range(first: int | None, last: int | None, size: int) -> tuple[int, int] | object | None:
    """RFC 9110 §14.1.2, written the slow, obvious way: the set of selected positions (None: unsatisfiable,
    416); an invalid range-spec (first after last) is ignored (§14.2: 200 with everything)."""
    if first is None:  # suffix range: the last `last` bytes
        selected = list(range(max(0, size - (last or 0)), size)) if last else []
    else:
        end = size - 1 if last is None else min(last, size - 1)
        if last is not None and last < first:
            return IGNORE
        selected = list(range(first, end + 1))
    return (selected[0], len(selected)) if selected else None


@given(
    size=st.integers(0, 300),
    first=st.one_of(st.none(), st.integers(0, 400)),
    last=st.one_of(st.none(), st.integers(0, 400)),
)
def test_parse_range_matches_the_rfc(size, first, last):
    if first is None and last is None:
        return
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    assert _parse_range(header, size) == reference_range(first, last, size)


def test_parse_range_refuses_what_it_does_not_serve():
    assert _parse_range("bytes=0-1,3-4", 100) is None  # several ranges: 416
    for header in ("items=0-1", "bytes=-", "bytes=a-b", "0-1", "bytes=5-2"):  # malformed: ignored (RFC 9110 §14.2)
        assert _parse_range(header, 100) is IGNORE


def test_token_bucket_rate_and_fairness():
    async def main() -> tuple[float, list[float]]:
        bucket = TokenBucket(2_000_000)
        finished: list[float] = []
        t0 = time.monotonic()

        async def flow() -> None:
            for _ in range(25):  # 25 x 20 KB = 500 KB per flow
                await bucket.consume(20_000)
            finished.append(time.monotonic() - t0)

        await asyncio.gather(*(flow() for _ in range(4)))
        return time.monotonic() - t0, finished

    elapsed, finished = asyncio.run(main())
    # 2 MB at 2 MB/s: 1 s less the initial burst; each flow gets a quarter, so all end together
    assert 0.85 <= elapsed <= 1.2, elapsed
    assert min(finished) >= 0.85 * max(finished), finished
