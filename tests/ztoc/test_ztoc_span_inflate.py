"""The shared span-inflate engine (``soci_lab.ztoc.span_inflate``): ISA-L and libz give, from any checkpoint,
exactly the bytes Python's zlib decompresses from the whole stream — whole spans (exact mode, with member CRCs)
and byte ranges (prefix mode, the lazy reader's), at every bit offset, with full and short windows."""

from __future__ import annotations

import gzip
import io
import os
import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soci_lab.errors import FormatError
from soci_lab.ztoc import span_inflate as si
from soci_lab.ztoc.gzip_zinfo import WINSIZE, GzipZinfo, scan_gzip

pytestmark = pytest.mark.skipif(not si.HAVE_ISAL, reason="the isal package is a dependency; without it only libz runs")

SETTINGS = settings(
    max_examples=int(os.environ.get("ZTOC_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _segment(rng: random.Random, kind: int, size: int) -> bytes:
    if kind == 0:
        return rng.randbytes(size)  # incompressible: stored blocks, bytes >= 144 in every window
    if kind == 1:  # ASCII text only: no window byte >= 144, so odd bit offsets have no ISA-L prefix
        words = [bytes(rng.choice(b"abcdefghij klmnop\n") for _ in range(rng.randint(1, 9))) for _ in range(30)]
        out = bytearray()
        while len(out) < size:
            out += rng.choice(words)
        return bytes(out[:size])
    if kind == 2:  # binary-ish repetitive data
        words = [rng.randbytes(rng.randint(1, 12)) for _ in range(40)]
        out = bytearray()
        while len(out) < size:
            out += rng.choice(words)
        return bytes(out[:size])
    return bytes(size)


def _member(data: bytes, level: int, mem_level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31, mem_level)  # memLevel 1: a deflate block every ~128 symbols
    return c.compress(data) + c.flush()


def _layer(seed: int, parts: list[tuple[int, int]], members: int, level: int, mem_level: int) -> tuple[bytes, bytes]:
    """(the whole decompressed stream, a gzip blob of one or more members)."""
    rng = random.Random(seed)
    raw = b"".join(_segment(rng, k, n) for k, n in parts)
    cuts = sorted(rng.randrange(len(raw) + 1) for _ in range(members - 1))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    return raw, b"".join(_member(p, level, mem_level) for p in pieces)


def _scan(blob: bytes, span: int) -> GzipZinfo:
    return scan_gzip(io.BytesIO(blob), span).zinfo


@st.composite
def layers(draw: st.DrawFn) -> tuple[bytes, bytes, int]:
    parts = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 30_000)), min_size=1, max_size=8))
    return (
        *_layer(
            draw(st.integers(0, 2**32 - 1)),
            parts,
            draw(st.integers(1, 3)),
            draw(st.sampled_from([1, 6, 9])),
            draw(st.sampled_from([1, 8])),
        ),
        draw(st.sampled_from([2048, 8192, 40_000])),
    )


def _windows(c: object) -> list[bytes]:
    """The checkpoint's 32 KiB window and, near the stream start, just its meaningful tail (shorter)."""
    w = bytes(c.window)  # type: ignore[attr-defined]
    out = [w]
    if c.out < WINSIZE:  # type: ignore[attr-defined]
        out.append(w[WINSIZE - c.out :])  # type: ignore[attr-defined]
    return out


@SETTINGS
@given(layer=layers(), data=st.data())
def test_every_engine_equals_zlib_from_any_checkpoint(layer: tuple[bytes, bytes, int], data: st.DataObject) -> None:
    raw, blob, span = layer
    zi = _scan(blob, span)
    assert gzip.decompress(blob) == raw  # the reference: Python's zlib over the whole stream
    n = zi.span_count
    picks = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4), label="spans")
    for i in picks:
        c = zi.checkpoints[i]
        a = zi.start_compressed_offset(i)
        b = zi.checkpoints[i + 1].in_ if i + 1 < n else len(blob)
        want = raw[c.out : zi.checkpoints[i + 1].out] if i + 1 < n else raw[c.out :]
        length = len(want) if i + 1 < n else None
        for window in _windows(c):
            results = {}
            for engine in ("auto", "isal", "zlib"):
                got = si.inflate_span(blob[a:b], c.bits, window, length, engine=engine)
                assert b"".join(bytes(x) for x in got.data) == want, (engine, i, c.bits)
                results[engine] = got
            assert results["zlib"].engine == "zlib"
            assert results["isal"].pieces == results["zlib"].pieces  # same member CRCs for the unpacker
            assert results["isal"].ends == results["zlib"].ends
            # prefix mode (the lazy reader's): a range inside or past the span, from data that runs on
            rest = len(raw) - c.out
            if rest:
                skip = data.draw(st.integers(0, rest - 1), label="skip")
                size = data.draw(st.integers(1, rest - skip), label="size")
                for engine in ("isal", "zlib"):
                    got_r = si.inflate_from(blob[a:], c.bits, window, skip, size, engine=engine)
                    assert got_r == raw[c.out + skip : c.out + skip + size], (engine, i, c.bits, skip, size)
                with pytest.raises(FormatError, match="ended after"):
                    si.inflate_from(blob[a:], c.bits, window, rest - 1, 2, engine="isal")


def test_all_bit_offsets_use_isal_where_a_prefix_exists_and_fall_back_to_libz_where_not() -> None:
    """Checkpoint bit offsets 1..7 each occur and inflate right; ISA-L serves every even offset and the odd ones
    whose window has a byte >= 144; an ASCII-only window with an odd offset goes to libz under ``auto``."""
    rng = random.Random(3)
    parts = [(k % 3, 6000) for k in range(30)] + [(1, 150_000), (2, 20_000)]  # a long ASCII-only stretch
    raw, blob = _layer(7, parts, 2, 6, 1)
    zi = _scan(blob, 2048)
    engines: dict[int, set[str]] = {b: set() for b in range(8)}
    fell_back = 0
    for i in range(zi.span_count - 1):
        c = zi.checkpoints[i]
        a, b = zi.start_compressed_offset(i), zi.checkpoints[i + 1].in_
        want = raw[c.out : zi.checkpoints[i + 1].out]
        got = si.inflate_span(blob[a:b], c.bits, c.window, len(want))
        assert b"".join(bytes(x) for x in got.data) == want
        engines[c.bits].add(got.engine)
        pre = si.aligned_prefix(c.bits, blob[a] if c.bits else 0, bytes(c.window))
        no_prefix = pre is None or pre[2] > si._MAX_REEMIT
        assert (got.engine == "zlib") == no_prefix
        fell_back += no_prefix
        skip = rng.randrange(len(want)) if want else 0
        assert zi.extract(i, blob[a:], c.out + skip, 100) == raw[c.out + skip : c.out + skip + 100]
    assert all(engines[b] for b in range(1, 8)), engines
    assert all(engines[b] == {"isal"} for b in (2, 4, 6)), engines
    assert fell_back, "expected some odd-offset checkpoints with an ASCII-only window"


def test_the_lazy_reader_inflates_through_the_shared_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """``GzipZinfo.decompress_span`` / ``extract`` (what the lazy reader calls) use ISA-L via the engine."""
    raw, blob = _layer(5, [(2, 200_000), (0, 50_000)], 1, 6, 8)
    zi = _scan(blob, 16 << 10)
    zi.uncompressed_size = len(raw)
    calls: list[str] = []
    real = si._inflate_isal

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        calls.append("isal" if out is not None else "none")
        return out

    monkeypatch.setattr(si, "_inflate_isal", counting)
    for i in range(zi.span_count):
        a, b = zi.start_compressed_offset(i), zi.end_compressed_offset(i)
        got = zi.decompress_span(i, blob[a:b])
        assert got == raw[zi.start_uncompressed_offset(i) : zi.end_uncompressed_offset(i)]
    assert len(calls) == zi.span_count and "isal" in calls
    calls.clear()  # the old libz-only engine on demand (benchmarks): same bytes, no ISA-L
    monkeypatch.setenv(si.ENGINE_ENV, "zlib")
    a, b = zi.start_compressed_offset(1), zi.end_compressed_offset(1)
    assert zi.decompress_span(1, blob[a:b]) == raw[zi.start_uncompressed_offset(1) : zi.end_uncompressed_offset(1)]
    assert calls == []


def test_corrupt_span_is_a_format_error_for_both_engines() -> None:
    _raw, blob = _layer(9, [(2, 100_000)], 1, 6, 1)
    zi = _scan(blob, 8192)
    c = zi.checkpoints[1]
    a, b = zi.start_compressed_offset(1), zi.checkpoints[2].in_
    bad = bytearray(blob[a:b])
    for k in range(len(bad) // 3, len(bad), 97):
        bad[k] ^= 0x5A
    length = zi.checkpoints[2].out - c.out
    for engine in ("isal", "zlib"):
        with pytest.raises(FormatError):
            si.inflate_span(bytes(bad), c.bits, c.window, length, engine=engine)
        with pytest.raises(FormatError):  # a span cut short
            si.inflate_span(blob[a : b - 40], c.bits, c.window, length, engine=engine)
    with pytest.raises(ValueError, match="engine"):
        si.inflate_span(blob[a:b], c.bits, c.window, length, engine="gpu")
