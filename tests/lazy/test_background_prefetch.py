"""Background fetcher (rate limit, silence period, bounded queue), prefetch (bounded concurrency, Hermes
profile), the per-index policy of hermes.md §3.1, and the reader's per-file tar-header verification."""

from __future__ import annotations

import io
import itertools
import os
import tarfile

import anyio
import pytest

from soci_lab.config import BackgroundFetchConfig, Config
from soci_lab.errors import ConfigError, FileVerificationError
from soci_lab.events import EventRecorder
from soci_lab.lazy import BytesRangeFetcher, SpanManager, SpanState
from soci_lab.lazy.background import BackgroundFetcher, SequentialResolver, drain
from soci_lab.lazy.prefetch import lazy_policy, prefetch
from soci_lab.lazy.reader import LayerReader, LayerTree
from soci_lab.lazy.testing import FixedGeometry
from soci_lab.ztoc import build_ztoc

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


def manager(n_spans: int = 6, span: int = 1000, events: EventRecorder | None = None, fetcher=None) -> SpanManager:
    data = os.urandom(n_spans * span)
    geo = FixedGeometry(data, span, codec="zlib")
    return SpanManager(geo, fetcher or BytesRangeFetcher(geo.compressed), events=events)


class CountingFetcher(BytesRangeFetcher):
    """Tracks the highest number of fetches in flight at once."""

    def __init__(self, blob: bytes) -> None:
        super().__init__(blob)
        self.inflight = self.peak = 0

    async def fetch(self, lower: int, upper_inclusive: int) -> bytes:
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            await anyio.sleep(0.01)
            return await super().fetch(lower, upper_inclusive)
        finally:
            self.inflight -= 1


async def test_background_fetcher_fetches_everything_one_span_per_period():
    ev = EventRecorder()
    mgrs = [manager(5, events=ev), manager(4, events=ev), manager(3, events=ev)]
    period = 0.03
    bg = BackgroundFetcher(BackgroundFetchConfig(fetch_period_msec=30), events=ev)
    for i, m in enumerate(mgrs):
        assert bg.add(SequentialResolver(m, layer=f"l{i}"))
    await drain(bg, timeout=10)
    for m in mgrs:
        assert all(s.state == SpanState.FETCHED for s in m.spans)
        assert all(s.fetches == 1 for s in m.spans)
    starts = sorted(e.t_start for e in ev.events if e.kind == "span_fetch")
    assert len(starts) == 12
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= period * 0.8  # at most one span started per period, across all layers


async def test_background_fetcher_skips_spans_read_on_demand_and_reads_use_its_bytes():
    m = manager(6)
    await m.get_contents(0, 2500)  # spans 0..2 decompressed on demand
    bg = BackgroundFetcher(BackgroundFetchConfig(fetch_period_msec=1))
    bg.add(SequentialResolver(m))
    await drain(bg, timeout=10)
    assert [s.state for s in m.spans] == [SpanState.UNCOMPRESSED] * 3 + [SpanState.FETCHED] * 3
    assert bg.started == 3
    data = await m.get_contents(0, 6000)
    assert data == m.geometry.data
    assert all(s.fetches == 1 for s in m.spans)  # the read decompressed the background-fetched bytes


async def test_background_fetcher_silence_period_after_pause():
    m = manager(3)
    bg = BackgroundFetcher(BackgroundFetchConfig(fetch_period_msec=1, silence_period_msec=300))
    bg.add(SequentialResolver(m))
    bg.pause()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bg.run)
        await anyio.sleep(0.2)
        assert bg.started == 0  # still silent
        await anyio.sleep(0.4)
        assert bg.started >= 1
        bg.close()


def test_background_queue_drop_policies():
    def fill(policy: str) -> tuple[BackgroundFetcher, list[SequentialResolver]]:
        bg = BackgroundFetcher(BackgroundFetchConfig(max_queue_size=2, drop_policy=policy))
        rs = [SequentialResolver(manager(1)) for _ in range(3)]
        results = [bg.add(r) for r in rs]
        assert results == ([True, True, False] if policy == "newest" else [True, True, True])
        return bg, rs

    bg, rs = fill("newest")
    assert list(bg.queue) == rs[:2] and bg.dropped == 1
    bg, rs = fill("oldest")
    assert list(bg.queue) == rs[1:] and bg.dropped == 1
    with pytest.raises(ConfigError):
        BackgroundFetcher(BackgroundFetchConfig(drop_policy="random"))
    assert BackgroundFetcher(BackgroundFetchConfig(max_queue_size=0)).max_queue == 300
    assert BackgroundFetcher(BackgroundFetchConfig(max_queue_size=-1)).max_queue == float("inf")


async def test_prefetch_bounded_concurrency_and_profile_drops_async_spans():
    data = os.urandom(10 * 1000)
    geo = FixedGeometry(data, 1000)
    f = CountingFetcher(geo.compressed)
    m = SpanManager(geo, f)
    res = await prefetch(m, [(0, 5, 0), (8, 9, 1)], max_concurrency=2)
    assert res.spans == 6 and res.failed == 0 and res.deferred == [8, 9]
    assert f.peak == 2
    assert [s.state for s in m.spans[:6]] == [SpanState.UNCOMPRESSED] * 6
    assert m.spans[8].state == SpanState.UNREQUESTED
    m2 = SpanManager(geo, BytesRangeFetcher(geo.compressed))
    res2 = await prefetch(m2, [(0, 1, 0), (8, 9, 1)], profile="startup-local-v1")
    assert res2.spans == 2 and res2.deferred == []


def test_hermes_policy():
    p = lazy_policy(Config(), None)  # no index: upstream behaviour
    assert p.background_fetch and p.pause_background_on_mount and p.verify_files and not p.prefetch_enabled
    p = lazy_policy(Config(), {"hermes.cloudpilot.ai/background-fetch": " Disabled "})
    assert not p.background_fetch and not p.preresolve_neighbours and p.pause_background_on_mount
    p = lazy_policy(Config(), {"hermes.cloudpilot.ai/background-fetch": "enabled"})
    assert p.background_fetch and not p.pause_background_on_mount
    p = lazy_policy(Config(), {"hermes.cloudpilot.ai/background-fetch": "whatever"})
    assert p.background_fetch and p.pause_background_on_mount
    p = lazy_policy(Config(), {"hermes.cloudpilot.ai/skip-file-verification": "true"})
    assert not p.verify_files
    p = lazy_policy(Config(), {"hermes.cloudpilot.ai/skip-file-verification": "yes"})  # not a Go bool
    assert p.verify_files
    p = lazy_policy(Config(), {}, {"hermes.cloudpilot.ai/prefetch-profile": "startup-local-v1"})
    assert p.prefetch_enabled and p.prefetch_profile == "startup-local-v1"
    cfg = Config()
    cfg.background_fetch.disable = True
    cfg.disable_verification = True
    p = lazy_policy(cfg, {"hermes.cloudpilot.ai/background-fetch": "enabled"})
    assert not p.background_fetch and not p.verify_files


def _tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, body, mode in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(body), mode, 1_700_000_000
            tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


async def test_reader_verifies_tar_header_against_toc():
    raw = _tar([("a.txt", b"A" * 5000, 0o644), ("b.txt", b"B" * 7000, 0o600)])
    z = build_ztoc(raw, compression="uncompressed", span_size=1024)
    tree = LayerTree(list(z.toc))
    m = SpanManager(z, BytesRangeFetcher(raw))
    r = LayerReader(tree, m)
    assert await r.read_all(tree.lookup("a.txt")) == b"A" * 5000
    assert tree.lookup("a.txt").verified
    # a TOC that lies about b.txt's mode (the layer bytes say 0600): the first read must refuse
    lying = [e for e in z.toc]
    bad = next(e for e in lying if e.name == "b.txt")
    bad.mode = 0o644
    tree2 = LayerTree(lying)
    r2 = LayerReader(tree2, SpanManager(z, BytesRangeFetcher(raw)))
    with pytest.raises(FileVerificationError, match="mode"):
        await r2.read(tree2.lookup("b.txt"), 0, 10)
    # verification disabled (config or Hermes skip-file-verification): served as the TOC says
    r3 = LayerReader(tree2, SpanManager(z, BytesRangeFetcher(raw)), verify=False)
    assert await r3.read(tree2.lookup("b.txt"), 0, 10) == b"B" * 10


async def test_sequential_reads_trigger_readahead():
    raw = _tar([("big", os.urandom(10_000), 0o644)])
    z = build_ztoc(raw, compression="uncompressed", span_size=1024)
    tree = LayerTree(list(z.toc))
    m = SpanManager(z, BytesRangeFetcher(raw))
    r = LayerReader(tree, m, readahead_spans=2)
    node = tree.lookup("big")
    async with anyio.create_task_group() as tg:
        r.task_group = tg
        await r.read(node, 0, 1000)
        assert r.readaheads == 0  # a first read is not sequential
        await r.read(node, 1000, 1000)
        assert r.readaheads > 0
    r.task_group = None
    nxt = z.span_of(node.entry.uncompressed_offset + 2000)
    assert m.spans[nxt + 1].state == SpanState.UNCOMPRESSED  # fetched ahead of any read
    assert await r.read(node, 2000, 3000) == raw[node.entry.uncompressed_offset + 2000 :][:3000]


class StallingFetcher(BytesRangeFetcher):
    """Stalls every fetch while ``stall`` is set (a registry that stopped sending)."""

    stall = True

    async def fetch(self, lower: int, upper_inclusive: int) -> bytes:
        if self.stall:
            await anyio.sleep(3600)
        return await super().fetch(lower, upper_inclusive)


async def test_stalled_fetch_times_out_and_the_span_can_be_fetched_later():
    from soci_lab.errors import SpanNotAvailable

    data = os.urandom(4000)
    geo = FixedGeometry(data, 1000)
    f = StallingFetcher(geo.compressed)
    m = SpanManager(geo, f, fetch_timeout=0.2)
    with anyio.fail_after(5), pytest.raises(SpanNotAvailable):
        await m.get_contents(1500, 2500)
    assert all(s.state == SpanState.UNREQUESTED for s in m.spans)
    f.stall = False
    assert await m.get_contents(1500, 2500) == data[1500:2500]


async def test_a_read_that_fetches_pauses_the_background_fetcher_and_prefetch_and_background_do_not():
    m = manager(4)
    calls: list[str] = []
    m.on_demand_fetch = lambda: calls.append("read")
    await m.fetch_single_span(0)  # background: no pause
    await m.resolve_span(1)  # prefetch: no pause
    await m.span_bytes(0)  # from the compressed cache: nothing fetched, no pause
    assert calls == []
    await m.span_bytes(2)  # a read that goes to the registry
    assert calls == ["read"]
    await m.span_bytes(2)  # cached now
    assert calls == ["read"]


async def test_demand_fetches_keep_the_background_fetcher_silent_until_a_silence_period_after_the_last():
    m = manager(40)
    bg = BackgroundFetcher(BackgroundFetchConfig(fetch_period_msec=1, silence_period_msec=1000))
    bg.add(SequentialResolver(m))
    bg.pause()  # the mount
    m.on_demand_fetch = bg.pause  # as the serving process wires it
    async with anyio.create_task_group() as tg:
        tg.start_soon(bg.run)
        for sid in range(39, 19, -1):  # a container reading for 2 s, twice the silence period
            await m.span_bytes(sid)
            await anyio.sleep(0.1)
            assert bg.started == 0, f"a background fetch started while reads were fetching (span {sid})"
        with anyio.fail_after(30):
            while bg.started == 0:  # after the reads stop, the silence ends and the background resumes
                await anyio.sleep(0.05)
        bg.close()
    assert bg.pauses == 21
