"""Span-parallel inflate from zTOC checkpoints: the same bytes, diffID and errors as the serial inflater."""

from __future__ import annotations

import gzip
import hashlib
import random
import shutil
import subprocess
import tarfile
import threading
import zlib
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treecmp import assert_same_tree
from unpack_helpers import E, tar_bytes

from soci_lab.errors import ArchiveError, DecompressionError, VerificationFailed
from soci_lab.unpack import LayerSpec, LocalFileSource, ParallelPuller, apply_layer
from soci_lab.unpack.decompress import gzip_chunks
from soci_lab.unpack.spanpar import (
    ZtocSpanDecompressor,
    crc32_combine,
    inflate_span_isal,
    ztoc_span_decompressors,
)
from soci_lab.ztoc import build_ztoc

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
SPAN = 16 << 10  # small spans: many checkpoints in small layers

PIGZ = shutil.which("pigz")


def _content(rng: random.Random, size: int, kind: int) -> bytes:
    if kind == 0:
        return rng.randbytes(size)  # incompressible: stored blocks
    if kind == 1:
        words = [rng.randbytes(rng.randint(1, 12)) for _ in range(40)]
        out = bytearray()
        while len(out) < size:
            out += rng.choice(words)
        return bytes(out[:size])
    return bytes([rng.randrange(4) + 65 for _ in range(size)])


@st.composite
def layers(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(decompressed stream, gzip blob): a tar tree, padding after its end, one or several members."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    n = draw(st.integers(1, 12))
    entries = [E("d/", tarfile.DIRTYPE, mode=0o755)]
    for i in range(n):
        size = draw(st.sampled_from([0, 1, 511, 512, 5000, 40_000, 120_000]))
        entries.append(E(f"d/f{i}", data=_content(rng, size, draw(st.integers(0, 2)))))
    raw = tar_bytes(entries)
    pad = draw(st.sampled_from([0, 512, 10240 - len(raw) % 10240, 30_000]))
    raw += bytes(pad)
    level = draw(st.sampled_from([1, 6, 9]))
    members = draw(st.sampled_from(["single", "concat", "pigz-i"] if PIGZ else ["single", "concat"]))
    if members == "single":
        blob = gzip.compress(raw, level, mtime=0)
    elif members == "concat":
        cuts = sorted(draw(st.lists(st.integers(0, len(raw)), min_size=1, max_size=4)))
        parts = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        blob = b"".join(gzip.compress(p, level, mtime=0) for p in parts)
    else:
        assert PIGZ is not None
        blob = subprocess.run(
            [PIGZ, f"-{level}", "-i", "-b", "32", "-n", "-c"], input=raw, capture_output=True, check=True
        ).stdout
    return raw, blob


def _serial(path: Path) -> bytes:
    return b"".join(bytes(c) for c in gzip_chunks(path, threading.Event()))


def _parallel(
    path: Path, workers: int = 2, in_flight: int = 3, engine: str = "auto"
) -> tuple[bytes, ZtocSpanDecompressor]:
    zt = build_ztoc(path, span_size=SPAN)
    d = ZtocSpanDecompressor(zt, workers=workers, in_flight=in_flight, engine=engine)
    return b"".join(bytes(c) for c in d.chunks(path, threading.Event())), d


_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@_SETTINGS
@given(layer=layers(), engine=st.sampled_from(["isal", "zlib"]))
def test_span_parallel_stream_equals_serial_inflate(tmp_path: Path, layer: tuple[bytes, bytes], engine: str) -> None:
    raw, blob = layer
    path = tmp_path / "layer.gz"
    path.write_bytes(blob)
    got, d = _parallel(path, engine=engine)
    assert d.fallback_reason is None
    assert got == raw  # a serial zlib decompress of the whole file, byte for byte
    assert got == _serial(path)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(raw).hexdigest()


@_SETTINGS
@given(layer=layers(), where=st.floats(0.2, 0.8), flip=st.integers(1, 255), engine=st.sampled_from(["isal", "zlib"]))
def test_corrupt_byte_gives_the_serial_error(
    tmp_path: Path, layer: tuple[bytes, bytes], where: float, flip: int, engine: str
) -> None:
    raw, blob = layer
    path = tmp_path / "layer.gz"
    path.write_bytes(blob)
    zt = build_ztoc(path, span_size=SPAN)  # the zTOC of the good blob
    bad = bytearray(blob)
    bad[int(len(bad) * where)] ^= flip
    path.write_bytes(bytes(bad))
    serial_error: BaseException | None = None
    try:
        serial = _serial(path)
    except DecompressionError as exc:
        serial_error = exc
    d = ZtocSpanDecompressor(zt, workers=2, in_flight=3, engine=engine)
    if serial_error is not None:
        with pytest.raises(DecompressionError, match=r"corrupt gzip data|truncated"):
            b"".join(bytes(c) for c in d.chunks(path, threading.Event()))
    else:  # a byte zlib ignores too (header MTIME, unused bits): same bytes, the digest check catches it
        assert b"".join(bytes(c) for c in d.chunks(path, threading.Event())) == serial

    # applied with verification: an error, and nothing left in the destination's place
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    errors = []
    for sd in (None, ZtocSpanDecompressor(zt, workers=2, engine=engine)):
        dest = tmp_path / ("par" if sd else "ser")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        with pytest.raises((ArchiveError, VerificationFailed)) as info:
            apply_layer(path, dest, media_type=GZ, expected_digest=digest, expected_diff_id=diff_id,
                        span_decompressor=sd)
        errors.append(info.value)
    if isinstance(errors[0], DecompressionError):
        assert isinstance(errors[1], ArchiveError)
    else:
        assert type(errors[1]) is type(errors[0]) or isinstance(errors[1], DecompressionError)


@pytest.mark.parametrize("bits", range(8))
def test_aligned_prefix_resumes_like_inflate_prime(bits: int) -> None:
    rng = random.Random(bits)
    data = _content(rng, 400_000, 1) + rng.randbytes(50_000) + _content(rng, 300_000, 2)
    path_data = gzip.compress(tar_bytes([E("f", data=data)]), 6)
    import io as _io

    zt = build_ztoc(_io.BytesIO(path_data), span_size=SPAN)
    zi = zt.zinfo
    seen = 0
    for i in range(zt.span_count - 1):
        c = zi.checkpoints[i]  # type: ignore[attr-defined]
        if c.bits != bits:
            continue
        a, b = zt.compressed_range(i)
        want = zi.decompress_span(i, path_data[a:b])
        got = inflate_span_isal(path_data[a:b], c.bits, c.window, len(want))
        if got is None:  # odd bits and a window without a byte >= 144
            continue
        assert b"".join(got.data) == want
        seen += 1
    if bits % 2 == 0:
        assert seen or all(zi.checkpoints[i].bits != bits for i in range(zt.span_count - 1))  # type: ignore[attr-defined]


def test_stop_and_early_close_end_the_workers(tmp_path: Path) -> None:
    rng = random.Random(5)
    raw = tar_bytes([E(f"f{i}", data=_content(rng, 200_000, i % 3)) for i in range(10)])
    path = tmp_path / "l.gz"
    path.write_bytes(gzip.compress(raw, 6))
    zt = build_ztoc(path, span_size=SPAN)
    stop = threading.Event()
    d = ZtocSpanDecompressor(zt, workers=2, in_flight=2)
    gen = d.chunks(path, stop)
    first = next(gen)
    assert raw.startswith(bytes(first))
    stop.set()
    assert b"".join(bytes(c) for c in gen) == b""  # ends without an error; apply_layer reports the stop
    gen2 = ZtocSpanDecompressor(zt, workers=2).chunks(path, threading.Event())
    next(gen2)
    gen2.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("soci-unpack-span")]


def test_decompress_event_names_the_engine(tmp_path: Path) -> None:
    from soci_lab.events import EventRecorder

    rng = random.Random(6)
    raw = tar_bytes([E(f"f{i}", data=_content(rng, 100_000, i % 3)) for i in range(5)])
    path = tmp_path / "l.gz"
    path.write_bytes(gzip.compress(raw, 6))
    rec = EventRecorder()
    (tmp_path / "d").mkdir()
    apply_layer(path, tmp_path / "d", media_type=GZ, recorder=rec,
                span_decompressor=ZtocSpanDecompressor(build_ztoc(path, span_size=SPAN), workers=2))
    (ev,) = [e for e in rec.events if e.kind == "decompress"]
    assert ev.attrs["impl"].startswith("span-parallel/")


@pytest.mark.parametrize("in_flight", [1, 3])
def test_at_most_in_flight_spans_are_inflated_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_flight: int
) -> None:
    from soci_lab.unpack import spanpar

    rng = random.Random(8)
    raw = tar_bytes([E(f"f{i}", data=_content(rng, 100_000, i % 3)) for i in range(8)])
    path = tmp_path / "l.gz"
    path.write_bytes(gzip.compress(raw, 6))
    zt = build_ztoc(path, span_size=SPAN)
    assert zt.span_count > 2 * in_flight
    calls: list[int] = []
    real = spanpar.inflate_span

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(spanpar, "inflate_span", counting)
    d = ZtocSpanDecompressor(zt, workers=2, in_flight=in_flight, engine="zlib")
    out = bytearray()
    for k, chunk in enumerate(d.chunks(path, threading.Event()), start=1):  # one chunk per small span
        assert len(calls) <= k + in_flight
        out += chunk
    assert bytes(out) == raw and len(calls) == zt.span_count


def test_crc32_combine_matches_zlib() -> None:
    a, b = b"hello " * 1000, b"world" * 777
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_ztoc_of_another_blob_falls_back_to_serial(tmp_path: Path) -> None:
    raw = tar_bytes([E("f", data=random.Random(1).randbytes(100_000))])
    p1, p2 = tmp_path / "a.gz", tmp_path / "b.gz"
    p1.write_bytes(gzip.compress(raw, 6))
    p2.write_bytes(gzip.compress(raw + bytes(512), 1))
    d = ZtocSpanDecompressor(build_ztoc(p1, span_size=SPAN))
    assert b"".join(bytes(c) for c in d.chunks(p2, threading.Event())) == raw + bytes(512)
    assert d.fallback_reason is not None


def test_a_decompressor_from_a_parsed_ztoc_pickles_for_an_apply_worker(tmp_path: Path) -> None:
    import pickle

    from soci_lab.ztoc import Ztoc

    raw = tar_bytes([E("f", data=_content(random.Random(2), 300_000, 1))])
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(raw, 6))
    parsed = Ztoc.from_bytes(build_ztoc(path, span_size=SPAN).to_bytes())  # as discovery gives it
    d = pickle.loads(pickle.dumps(ZtocSpanDecompressor(parsed, workers=2, in_flight=3, engine="zlib")))
    assert (d.workers, d.in_flight, d.engine) == (2, 3, "zlib")
    assert b"".join(bytes(c) for c in d.chunks(path, threading.Event())) == raw
    assert d.fallback_reason is None and d.spans_by_engine["zlib"] >= 2


def _tree_entries(seed: int) -> list[E]:
    rng = random.Random(seed)
    out = [E("etc/", tarfile.DIRTYPE, mode=0o755), E("usr/", tarfile.DIRTYPE, mode=0o755)]
    for i in range(60):
        out.append(E(f"usr/f{i}", data=_content(rng, rng.choice([0, 100, 3000, 70_000]), i % 3), mode=0o640))
    out += [E("usr/link", tarfile.SYMTYPE, linkname="f1"), E("usr/hard", tarfile.LNKTYPE, linkname="usr/f2")]
    out += [E("etc/.wh.gone"), E("usr/x", data=b"x", mtime=1_234_567_890)]
    return out


@pytest.mark.parametrize("members", ["single", "concat"])
def test_parallel_puller_with_ztoc_gives_the_serial_tree(tmp_path: Path, members: str) -> None:
    raw = tar_bytes(_tree_entries(7)) + bytes(10240)
    blob = gzip.compress(raw, 6) if members == "single" else gzip.compress(raw[:300_000], 6) + gzip.compress(
        raw[300_000:], 9
    )
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    path = blobs / "l.gz"
    path.write_bytes(blob)
    spec = LayerSpec("sha256:" + hashlib.sha256(blob).hexdigest(), len(blob), GZ,
                     "sha256:" + hashlib.sha256(raw).hexdigest())
    zt = build_ztoc(path, span_size=SPAN)
    assert zt.span_count > 4
    made: list[ZtocSpanDecompressor] = []
    hook = ztoc_span_decompressors({spec.digest: zt}, min_layer_size=0, workers=2)

    def spy(layer: LayerSpec):  # type: ignore[no-untyped-def]
        d = hook(layer)
        assert isinstance(d, ZtocSpanDecompressor)
        made.append(d)
        return d

    async def pull(root: Path, mount: Path, span: bool) -> None:
        async with ParallelPuller(root, LocalFileSource({spec.digest: path}),
                                  span_decompressor=spy if span else None) as puller:
            await puller.pull("img", [spec], [mount])

    anyio.run(pull, tmp_path / "r1", tmp_path / "serial", False)
    anyio.run(pull, tmp_path / "r2", tmp_path / "par", True)
    assert made and made[0].fallback_reason is None
    assert_same_tree(tmp_path / "serial", tmp_path / "par", include_root=False)


def test_threshold_and_missing_ztoc_choose_serial(tmp_path: Path) -> None:
    raw = tar_bytes([E("f", data=random.Random(2).randbytes(200_000))])
    path = tmp_path / "l.gz"
    path.write_bytes(gzip.compress(raw))
    zt = build_ztoc(path, span_size=1 << 10)
    spec = LayerSpec("sha256:" + "1" * 64, 100 << 20, GZ, None)
    small = LayerSpec("sha256:" + "1" * 64, 1 << 20, GZ, None)
    hook = ztoc_span_decompressors({spec.digest: zt})
    assert isinstance(hook(spec), ZtocSpanDecompressor)
    assert hook(small) is None  # below the 64 MiB default
    assert hook(LayerSpec("sha256:" + "2" * 64, 100 << 20, GZ, None)) is None

