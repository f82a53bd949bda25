"""The whole-layer check (soci_lab.lazy.layercheck) for every layer format, and when a mount runs it."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import random
import tarfile

import anyio
import pytest

from soci_lab.config import Config
from soci_lab.errors import LayerCheckFailed, MountError
from soci_lab.lazy.fetcher import BytesRangeFetcher
from soci_lab.lazy.layercheck import check_layer, check_when_complete, layer_check_mode
from soci_lab.lazy.mount import LazyLayerSpec, ServeOptions
from soci_lab.lazy.span import SpanState
from soci_lab.lazy.span_manager import SpanManager
from soci_lab.ztoc import Ztoc, build_ztoc
from soci_lab.ztoc.zstd_zinfo import compress_zstd_frames

SPAN = 64 << 10


def _tar() -> bytes:
    rnd = random.Random(3)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(12):
            data = rnd.randbytes(rnd.randint(0, 30_000)) + b"text " * rnd.randint(0, 20_000)
            ti = tarfile.TarInfo(f"d{i % 3}/f{i}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _blob(kind: str, raw: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(raw[: len(raw) // 2], 6) + gzip.compress(raw[len(raw) // 2 :], 6)  # two members
    if kind == "zstd":
        out = io.BytesIO()
        compress_zstd_frames(io.BytesIO(raw), out, frame_size=SPAN)
        return out.getvalue()
    return raw


def _check(z: Ztoc, blob: bytes, digest: str | None = None) -> object:
    async def run() -> object:
        spans = SpanManager(z, BytesRangeFetcher(blob))
        return await check_layer(spans, z, digest=digest or "sha256:" + hashlib.sha256(blob).hexdigest(),
                                 blob_size=len(blob))  # fmt: skip

    return anyio.run(run)


@pytest.mark.parametrize("kind", ["gzip", "zstd", "tar"])
def test_honest_layer_passes_and_a_changed_entry_fails(kind: str) -> None:
    raw = _tar()
    blob = _blob(kind, raw)
    z = Ztoc.from_bytes(build_ztoc(blob, span_size=SPAN).to_bytes())
    assert z.span_count > 3
    result = _check(z, blob)
    assert result.entries == 12 and result.compressed_bytes == len(blob)  # type: ignore[attr-defined]
    bad = dataclasses.replace(z, toc=[dataclasses.replace(e, mode=0o4755) if i == 5 else e
                                      for i, e in enumerate(z.toc)])  # fmt: skip
    with pytest.raises(LayerCheckFailed, match=r"TOC entry 5 .* on its mode"):
        _check(bad, blob)
    with pytest.raises(LayerCheckFailed, match="not to the layer digest"):
        _check(z, blob, digest="sha256:" + "1" * 64)


def test_a_blob_longer_than_the_spans_is_hashed_to_its_end() -> None:
    raw = _tar()
    blob = _blob("gzip", raw)
    z = Ztoc.from_bytes(build_ztoc(blob, span_size=SPAN).to_bytes())
    padded = blob + bytes(512)  # zero padding after the last member: eager ignores it, the digest covers it
    assert _check(z, padded).compressed_bytes == len(padded)  # type: ignore[attr-defined]


def test_background_check_waits_for_every_span_then_reports() -> None:
    raw = _tar()
    blob = _blob("gzip", raw)
    z = Ztoc.from_bytes(build_ztoc(blob, span_size=SPAN).to_bytes())
    failures: list[str] = []
    ok: list[bool] = []

    async def run() -> None:
        spans = SpanManager(z, BytesRangeFetcher(blob))
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: check_when_complete(
                spans, z, digest="sha256:" + "2" * 64, blob_size=len(blob), on_failure=failures.append,
                on_success=lambda: ok.append(True), poll=0.01))  # fmt: skip
            await anyio.sleep(0.1)
            assert not failures  # nothing fetched yet: no check
            await spans.span_bytes(0)  # one span read on demand (its compressed bytes are fetched again)
            for i in range(1, spans.max_span_id + 1):
                await spans.fetch_single_span(i)
        assert all(s.state != SpanState.UNREQUESTED for s in spans.spans)

    anyio.run(run)
    assert len(failures) == 1 and "not to the layer digest" in failures[0] and not ok


def test_mode_by_origin_options_and_config() -> None:
    spec = LazyLayerSpec(digest="sha256:" + "0" * 64, ztoc=b"")
    assert spec.ztoc_origin == "unpinned"
    assert layer_check_mode(spec, ServeOptions()) == "before_serving"
    assert layer_check_mode(dataclasses.replace(spec, ztoc_origin="pinned"), ServeOptions()) == "background"
    assert layer_check_mode(dataclasses.replace(spec, ztoc_origin="store"), ServeOptions()) == "before_serving"
    assert layer_check_mode(dataclasses.replace(spec, ztoc_origin="local"), ServeOptions()) == "none"
    cfg = Config.from_dict({"lazy_layer_check": "background"})
    assert layer_check_mode(spec, ServeOptions(config=cfg)) == "background"
    assert layer_check_mode(spec, ServeOptions(config=cfg, layer_check="before_serving")) == "before_serving"
    with pytest.raises(MountError, match="lazy_layer_check must be"):
        layer_check_mode(spec, ServeOptions(layer_check="never"))


def test_a_span_claiming_more_than_deflate_can_give_is_refused_before_allocating() -> None:
    raw = _tar()
    blob = _blob("gzip", raw)
    z = Ztoc.from_bytes(build_ztoc(blob, span_size=SPAN).to_bytes())
    huge = dataclasses.replace(z, uncompressed_archive_size=1 << 50, _zinfo=None)
    with pytest.raises(LayerCheckFailed, match="more than deflate can give"):
        _check(huge, blob)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_layer_that_inflates_a_thousandfold_is_checked_in_bounded_memory(kind: str) -> None:
    import tracemalloc

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("zeros")
        ti.size = 64 << 20
        tf.addfile(ti, io.BytesIO(bytes(ti.size)))
    raw = buf.getvalue()
    blob = _blob(kind, raw) if kind == "zstd" else gzip.compress(raw, 9)
    del raw, buf
    z = Ztoc.from_bytes(build_ztoc(blob, span_size=1 << 20).to_bytes())
    tracemalloc.start()
    try:
        _check(z, blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak  # a few spans and 1 MiB pieces, not the 64 MiB stream


def test_a_background_check_hashes_the_spans_reads_fetched_instead_of_fetching_them_again() -> None:
    raw = _tar()
    blob = _blob("gzip", raw)
    z = Ztoc.from_bytes(build_ztoc(blob, span_size=SPAN).to_bytes())
    assert z.max_span_id >= 3
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    ok: list[bool] = []
    failures: list[str] = []
    fetched: list[tuple[int, int]] = []

    class Recording(BytesRangeFetcher):
        async def fetch(self, lower: int, upper_inclusive: int) -> bytes:
            fetched.append((lower, upper_inclusive))
            return await super().fetch(lower, upper_inclusive)

    async def run() -> SpanManager:
        spans = SpanManager(z, Recording(blob))
        spans.keep_compressed = True  # what the serving process sets when the check runs in the background
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: check_when_complete(
                spans, z, digest=digest, blob_size=len(blob), on_failure=failures.append,
                on_success=lambda: ok.append(True), poll=0.01))  # fmt: skip
            for i in range(0, spans.max_span_id + 1, 2):
                await spans.span_bytes(i)  # read on demand: decompressed
            for i in range(1, spans.max_span_id + 1, 2):
                await spans.fetch_single_span(i)  # the background fetcher's
        return spans

    spans = anyio.run(run)
    assert ok == [True] and not failures
    assert all(s.fetches == 1 for s in spans.spans), [s.fetches for s in spans.spans]
    ranges = [spans.geometry.compressed_range(i) for i in range(spans.max_span_id + 1)]
    assert sorted(fetched).count((ranges[0][0], ranges[0][1] - 1)) == 1
    # kept only for the check: the decompressed spans' compressed copies are gone once it is over
    read = [f"{i}" for i in range(0, spans.max_span_id + 1, 2)]
    assert not any(k in spans.ccache for k in read)
    assert all(spans.spans[i].state == SpanState.UNCOMPRESSED for i in range(0, spans.max_span_id + 1, 2))


def test_a_kept_compressed_copy_that_differs_from_the_layer_still_fails_the_check() -> None:
    raw = _tar()
    blob = _blob("gzip", raw)
    z = Ztoc.from_bytes(build_ztoc(blob, span_size=SPAN).to_bytes())
    failures: list[str] = []

    async def run() -> None:
        spans = SpanManager(z, BytesRangeFetcher(blob))
        spans.keep_compressed = True
        await spans.span_bytes(1)
        key = "1"
        good = spans.ccache.get(key)
        assert good is not None
        spans.ccache.put(key, bytes([good[0] ^ 1]) + good[1:])  # what a corrupted cache would hand back
        for i in range(spans.max_span_id + 1):
            await spans.fetch_single_span(i)
        await check_when_complete(spans, z, digest="sha256:" + hashlib.sha256(blob).hexdigest(),
                                  blob_size=len(blob), on_failure=failures.append, poll=0.01)  # fmt: skip

    anyio.run(run)
    assert len(failures) == 1
