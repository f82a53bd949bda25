"""Stateful properties of the span manager (hypothesis ``RuleBasedStateMachine``).

One span manager per test case lives in its own event loop (an anyio blocking portal), so its locks stay
bound to one loop while hypothesis drives rules from the test thread. The properties:

* the state machine never takes an invalid transition (every change is audited, and between rules no span
  is ``requested`` and no span claims bytes its caches do not hold);
* N concurrent readers of one span cause exactly one remote fetch (zero when it is cached);
* every byte served equals the reference, with small cache bounds forcing eviction all the time;
* background fetches and on-demand reads interleave freely;
* with a fetcher that corrupts, truncates or fails some responses, a read returns the right bytes or
  raises a soci_lab error — never wrong bytes — and succeeds again once the faults stop.
"""

from __future__ import annotations

import functools
import gzip
import io
import random
import tarfile
import tempfile
from pathlib import Path

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from soci_lab.errors import SociLabError
from soci_lab.lazy import EVICTION_TRANSITIONS, FETCH_TRANSITIONS, DirectoryCache, MemoryCache, SpanManager, SpanState
from soci_lab.lazy.cache import TieredCache
from soci_lab.lazy.testing import FixedGeometry

SETTINGS = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: What both kinds of layer (synthetic and real gzip) draw for the span manager under test: the kind and
#: bound (in spans) of each cache, the verification retries, and the fetcher's fault seed. Kept in one place
#: so that every machine's ``setup`` explores the same cache and fault configurations.
MANAGER_SETUP = dict(
    ucache=st.sampled_from(["memory", "directory", "tiered"]),
    ccache=st.sampled_from(["memory", "directory", "tiered"]),
    ubound_spans=st.integers(1, 4),
    cbound_spans=st.integers(0, 4),
    retries=st.integers(-1, 2),
    seed=st.integers(0, 2**32 - 1),
)


class FlakyFetcher:
    """Serves ranges of a blob; can corrupt, truncate or fail responses, and yields to the loop a lot."""

    def __init__(self, blob: bytes, seed: int) -> None:
        self.blob = blob
        self.rng = random.Random(seed)
        self.corrupt = self.truncate = self.fail = 0.0
        self.calls = 0

    async def fetch(self, lower: int, upper_inclusive: int) -> bytes:
        self.calls += 1
        for _ in range(self.rng.randint(0, 3)):
            await anyio.sleep(0)
        if self.rng.random() < self.fail:
            raise OSError("injected connection reset")
        data = bytearray(self.blob[lower : upper_inclusive + 1])
        if data and self.rng.random() < self.corrupt:
            i = self.rng.randrange(len(data))
            data[i] ^= 1 << self.rng.randrange(8)
        if data and self.rng.random() < self.truncate:
            del data[self.rng.randrange(len(data)) :]
        return bytes(data)


class SpanMachine(RuleBasedStateMachine):
    """Reads, background fetches, concurrent readers and cache corruption against a reference blob."""

    faulty = False
    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.portal_cm = start_blocking_portal(self.backend)
        self.portal = self.portal_cm.__enter__()
        self.transitions: list[tuple[int, SpanState, SpanState, bool]] = []
        self.mgr: SpanManager | None = None
        self.tmp: list[DirectoryCache] = []
        self.corrupted: set[str] = set()

    def teardown(self) -> None:
        try:
            if self.mgr is not None:
                self.mgr.close()
        finally:
            self.portal_cm.__exit__(None, None, None)

    @initialize(
        size=st.integers(1, 6000),
        span_size=st.integers(64, 1500),
        codec=st.sampled_from(["identity", "zlib"]),
        **MANAGER_SETUP,
    )
    def setup(self, size, span_size, codec, ucache, ccache, ubound_spans, cbound_spans, retries, seed):
        rng = random.Random(seed)
        data = rng.randbytes(size // 2) + bytes(size - size // 2)  # half random, half compressible
        self._build(
            data, FixedGeometry(data, span_size, codec=codec), ucache, ccache, ubound_spans, cbound_spans, retries, seed
        )

    def _build(self, data, geo, ucache, ccache, ubound_spans, cbound_spans, retries, seed) -> None:
        self.data = data
        self.geo = geo
        self.fetcher = FlakyFetcher(geo.compressed, seed)
        max_comp = max(e - s for s, e in map(geo.compressed_range, range(geo.span_count)))
        max_unc = max(e - s for s, e in map(geo.uncompressed_range, range(geo.span_count)))
        # the uncompressed bound always holds one span (so a lone reader's bytes stay cached), often not two
        ub = ubound_spans * max_unc
        cb = cbound_spans * max_comp if cbound_spans else max_comp  # compressed bound >= one span too

        def cache(kind: str, bound: int):
            if kind == "memory":
                return MemoryCache(bound)
            c = DirectoryCache(None, bound)
            self.tmp.append(c)
            return TieredCache(c, max_unc) if kind == "tiered" else c

        self.ubound, self.cbound = ub, cb

        def make() -> SpanManager:
            return SpanManager(
                geo,
                self.fetcher,
                compressed_cache=cache(ccache, cb),
                uncompressed_cache=cache(ucache, ub),
                max_span_verification_retries=retries,
                on_transition=lambda *t: self.transitions.append(t),
            )

        self.mgr = self.portal.call(make)
        if self.faulty:
            self.fetcher.corrupt, self.fetcher.truncate, self.fetcher.fail = 0.3, 0.1, 0.1

    # --- helpers ----------------------------------------------------------------------------------

    def _read(self, start: int, end: int) -> bytes | None:
        """Read; with faults on, a soci_lab error is an allowed outcome (returns None)."""
        assert self.mgr is not None
        try:
            return self.portal.call(self.mgr.get_contents, start, end)
        except SociLabError:
            if not self.faulty:
                raise
            return None

    # --- rules ------------------------------------------------------------------------------------

    @rule(a=st.floats(0, 1), n=st.floats(0, 0.6))
    def read(self, a: float, n: float) -> None:
        start = int(a * len(self.data))
        end = min(len(self.data), start + int(n * len(self.data)) + 1)
        got = self._read(start, end)
        if got is not None:
            assert got == self.data[start:end]

    @rule()
    def read_everything(self) -> None:
        got = self._read(0, len(self.data))
        if got is not None:
            assert got == self.data

    @rule(i=st.integers(0, 100), n=st.integers(2, 8))
    def concurrent_readers(self, i: int, n: int) -> None:
        assert self.mgr is not None
        sid = i % self.geo.span_count
        span = self.mgr.spans[sid]
        key = str(sid)
        cached = (span.state == SpanState.UNCOMPRESSED and key in self.mgr.ucache) or (
            span.state == SpanState.FETCHED and key in self.mgr.ccache
        )
        before = span.fetches
        results: list[bytes | BaseException] = []

        async def one() -> None:
            try:
                results.append(await self.mgr.span_bytes(sid))
            except SociLabError as exc:
                results.append(exc)

        async def all_of_them() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(one)

        self.portal.call(all_of_them)
        us, ue = self.geo.uncompressed_range(sid)
        for r in results:
            if isinstance(r, BaseException):
                assert self.faulty, r
            else:
                assert r == self.data[us:ue]
        if not self.faulty:
            if key in self.corrupted:  # a corrupted cache file reads as a miss: zero or one fetch
                assert span.fetches - before <= 1
            else:
                assert span.fetches - before == (0 if cached else 1), (cached, span.fetches - before)

    @rule(i=st.integers(0, 100))
    def background_fetch(self, i: int) -> None:
        assert self.mgr is not None
        sid = i % self.geo.span_count
        try:
            self.portal.call(self.mgr.fetch_single_span, sid)
        except SociLabError:
            assert self.faulty

    @rule(a=st.floats(0, 1), n=st.floats(0, 0.6), bg=st.lists(st.integers(0, 100), max_size=6))
    def interleaved(self, a: float, n: float, bg: list[int]) -> None:
        """Background fetches and on-demand reads racing in one loop."""
        assert self.mgr is not None
        start = int(a * len(self.data))
        end = min(len(self.data), start + int(n * len(self.data)) + 1)
        out: dict[str, bytes | None] = {}

        async def reader() -> None:
            try:
                out["r"] = await self.mgr.get_contents(start, end)
            except SociLabError:
                if not self.faulty:
                    raise
                out["r"] = None

        async def bgf(sid: int) -> None:
            try:
                await self.mgr.fetch_single_span(sid % self.geo.span_count)
            except SociLabError:
                if not self.faulty:
                    raise

        async def go() -> None:
            async with anyio.create_task_group() as tg:
                for sid in bg[: len(bg) // 2]:
                    tg.start_soon(bgf, sid)
                tg.start_soon(reader)
                for sid in bg[len(bg) // 2 :]:
                    tg.start_soon(bgf, sid)

        self.portal.call(go)
        if out["r"] is not None:
            assert out["r"] == self.data[start:end]

    @rule(reads=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 0.6)), max_size=4), settle=st.integers(0, 5))
    def background_fetcher_with_reads(self, reads: list[tuple[float, float]], settle: int) -> None:
        """The real BackgroundFetcher walking the layer while reads run; closed (cancelling) mid-way."""
        from soci_lab.config import BackgroundFetchConfig
        from soci_lab.lazy.background import BackgroundFetcher, SequentialResolver

        assert self.mgr is not None
        bg = BackgroundFetcher(BackgroundFetchConfig(), fetch_period=0.0)
        bg.add(SequentialResolver(self.mgr))
        got: list[tuple[int, int, bytes | None]] = []

        async def go() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(bg.run)
                for a, n in reads:
                    start = int(a * len(self.data))
                    end = min(len(self.data), start + int(n * len(self.data)) + 1)
                    try:
                        got.append((start, end, await self.mgr.get_contents(start, end)))
                    except SociLabError:
                        if not self.faulty:
                            raise
                        got.append((start, end, None))
                for _ in range(settle):
                    await anyio.sleep(0)
                bg.close()

        self.portal.call(go)
        for start, end, data in got:
            if data is not None:
                assert data == self.data[start:end]

    @precondition(lambda self: self.tmp)
    @rule(pick=st.integers(0, 1000))
    def corrupt_directory_cache_file(self, pick: int) -> None:
        """Flip a byte of a cached span file on disk: it must read as a miss, never as wrong bytes."""
        files = [p for c in self.tmp for p in Path(c.root).iterdir() if p.is_file()]
        if not files:
            return
        p = files[pick % len(files)]
        raw = bytearray(p.read_bytes())
        if raw:
            raw[pick % len(raw)] ^= 0xFF
            p.write_bytes(bytes(raw))
            self.corrupted.add(p.name)

    @precondition(lambda self: self.faulty)
    @rule()
    def faults_stop_then_everything_reads(self) -> None:
        self.fetcher.corrupt = self.fetcher.truncate = self.fetcher.fail = 0.0
        assert self._read(0, len(self.data)) == self.data
        self.fetcher.corrupt, self.fetcher.truncate, self.fetcher.fail = 0.3, 0.1, 0.1

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def transitions_are_valid(self) -> None:
        for _sid, old, new, eviction in self.transitions:
            assert (old, new) in (EVICTION_TRANSITIONS if eviction else FETCH_TRANSITIONS)

    @invariant()
    def states_match_caches(self) -> None:
        if self.mgr is None:
            return
        for s in self.mgr.spans:
            assert s.state != SpanState.REQUESTED
            if s.state == SpanState.FETCHED:
                # a directory-cache file corrupted on disk is still indexed; reading it is a miss
                assert str(s.id) in self.mgr.ccache
            if s.state == SpanState.UNCOMPRESSED:
                assert str(s.id) in self.mgr.ucache

    @invariant()
    def caches_within_bounds(self) -> None:
        if self.mgr is None:
            return
        assert self.mgr.ucache.size <= self.ubound
        assert self.mgr.ccache.size <= self.cbound


class FaultySpanMachine(SpanMachine):
    faulty = True


TestSpanMachine = SpanMachine.TestCase
TestSpanMachine.settings = SETTINGS
TestFaultySpanMachine = FaultySpanMachine.TestCase
TestFaultySpanMachine.settings = SETTINGS


class TrioSpanMachine(SpanMachine):
    """The same properties on trio, pyfuse3's loop."""

    backend = "trio"


TestTrioSpanMachine = TrioSpanMachine.TestCase
TestTrioSpanMachine.settings = settings(SETTINGS, max_examples=10)


@functools.cache
def gzip_layer(seed: int) -> tuple[bytes, object]:
    """A real tar.gz layer (files of random and zero bytes) indexed by soci_lab.ztoc with 8 KiB spans."""
    from soci_lab.lazy.ztoc_geometry import index_layer

    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(30):
            body = rng.randbytes(rng.randint(0, 9000)) + bytes(rng.randint(0, 20000))
            info = tarfile.TarInfo(f"d{i % 3}/f{i}")
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    raw = buf.getvalue()
    blob = gzip.compress(raw, 6)
    with tempfile.NamedTemporaryFile(suffix=".tar.gz") as f:
        f.write(blob)
        f.flush()
        index = index_layer(f.name, 8192)
    geo = index.geometry
    geo.compressed = blob  # what the fetcher serves
    return raw[: geo.uncompressed_size].ljust(geo.uncompressed_size, b"\0"), geo


class GzipSpanMachine(SpanMachine):
    """The same properties over real gzip spans (checkpoints, windows, non-byte-aligned starts)."""

    @initialize(
        layer_seed=st.integers(0, 2),
        **MANAGER_SETUP,
    )
    def setup(self, layer_seed, ucache, ccache, ubound_spans, cbound_spans, retries, seed):
        data, geo = gzip_layer(layer_seed)
        assert geo.span_count > 3
        self._build(data, geo, ucache, ccache, ubound_spans, cbound_spans, retries, seed)


class FaultyGzipSpanMachine(GzipSpanMachine):
    faulty = True


TestGzipSpanMachine = GzipSpanMachine.TestCase
TestGzipSpanMachine.settings = settings(SETTINGS, max_examples=25)
TestFaultyGzipSpanMachine = FaultyGzipSpanMachine.TestCase
TestFaultyGzipSpanMachine.settings = settings(SETTINGS, max_examples=25)


def test_invalid_transition_is_refused() -> None:
    from soci_lab.errors import InvalidSpanStateTransition
    from soci_lab.lazy.span import check_transition

    S = SpanState
    for old in S:
        for new in S:
            if (old, new) in FETCH_TRANSITIONS:
                check_transition(old, new)
            else:
                with pytest.raises(InvalidSpanStateTransition):
                    check_transition(old, new)
    with pytest.raises(InvalidSpanStateTransition):
        check_transition(S.FETCHED, S.REQUESTED)  # upstream's ResolveSpan-on-fetched bug is refused
