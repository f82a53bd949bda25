"""Properties over generated tar trees: random reads through the index, files through TOC + spans, and
serialize → parse identity, for gzip (levels 0/1/6/9, several members), uncompressed tar and zstd frames."""

from __future__ import annotations

import dataclasses
import gzip
import io
import itertools
import os
import random
import stat
import tarfile
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ztoc_trees import SPAN, layers, write_tar

from soci_lab.errors import FileVerificationError, FormatError, UnsupportedCompression
from soci_lab.ztoc import GzipZinfo, Ztoc, build_ztoc, verify_tar_header
from soci_lab.ztoc.toc import derive_header_offsets
from soci_lab.ztoc.ztoc import ztoc_to_flatbuffer_reference

#: ZTOC_EXAMPLES=500 for a deeper run; the default keeps the room's tests well under a minute.
SETTINGS = settings(
    max_examples=int(os.environ.get("ZTOC_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def full_decompression(kind: str, blob: bytes) -> bytes:
    """The whole uncompressed stream, by an independent decoder."""
    if kind.startswith(("gzip", "members")):
        return gzip.decompress(blob)
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True).read()
    return blob


def build_or_skip(kind: str, blob: bytes, raw: bytes) -> Ztoc | None:
    try:
        return build_ztoc(blob, span_size=SPAN)
    except UnsupportedCompression:
        # only a single zstd frame larger than a span may be refused
        assert kind == "zstd" and len(raw) > SPAN and len(raw) <= SPAN + 777
        return None


@SETTINGS
@given(layer=layers(), data=st.data())
def test_random_ranges_equal_full_decompression(layer, data) -> None:
    kind, blob, raw, _ = layer
    z = build_or_skip(kind, blob, raw)
    if z is None:
        return
    full = full_decompression(kind, blob)
    assert full == raw
    uas = z.uncompressed_archive_size
    assert uas <= len(full)
    z2 = Ztoc.from_bytes(z.to_bytes())
    fetched: list[tuple[int, int]] = []

    def fetch(a: int, b: int) -> bytes:
        fetched.append((a, b))
        return blob[a:b]

    for _ in range(12):
        off = data.draw(st.integers(0, uas), label="offset")
        ln = data.draw(st.one_of(st.integers(0, 4096), st.integers(0, 3 * SPAN)), label="length")
        assert z2.read(off, ln, fetch) == full[off : min(off + ln, uas)]
    # every span decompresses to exactly its uncompressed range, from exactly its compressed range
    for sp in z2.spans():
        assert sp.start_uncomp <= sp.end_uncomp
        z2.verify_span(sp.id, blob[sp.start_comp : sp.end_comp])
        assert z2.decompress(sp.id, blob[sp.start_comp : sp.end_comp]) == full[sp.start_uncomp : sp.end_uncomp]
        assert z2.span_of(sp.start_uncomp) == sp.id or sp.start_uncomp == sp.end_uncomp
    assert z2.compressed_archive_size == len(blob)


@SETTINGS
@given(layer=layers())
def test_files_through_toc_equal_tarfile(layer) -> None:
    kind, blob, raw, _ = layer
    z = build_or_skip(kind, blob, raw)
    if z is None:
        return
    z = Ztoc.from_bytes(z.to_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
        assert len(members) == len(z.toc)
        for m, e in zip(members, z.toc, strict=True):
            assert e.uncompressed_offset == m.offset_data
            assert e.tar_header_offset == m.offset  # derived on read == where the header really is
            assert e.name.rstrip("/") == m.name.rstrip("/")
            assert e.uncompressed_size == m.size
            assert e.mode == m.mode and e.uid == m.uid and e.gid == m.gid
            assert e.uname == m.uname and e.gname == m.gname
            assert e.linkname == m.linkname
            assert {"0": "reg", "5": "dir", "2": "symlink", "1": "hardlink", "6": "fifo", "3": "char", "4": "block"}[
                m.type.decode()
            ] == e.type
            if e.type in ("char", "block"):
                assert (e.devmajor, e.devminor) == (m.devmajor, m.devminor)
            assert stat.S_IMODE(e.st_mode()) == m.mode & 0o7777
            assert stat.S_ISDIR(e.st_mode()) == m.isdir() and stat.S_ISLNK(e.st_mode()) == m.issym()
            assert stat.S_ISFIFO(e.st_mode()) == m.isfifo() and stat.S_ISCHR(e.st_mode()) == m.ischr()
            assert e.pax_headers == m.pax_headers
            assert e.xattrs() == {k[13:]: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            assert e.mod_time == expected_go_time(m)
            if m.isreg():
                got = z.read_file(e, lambda a, b: blob[a:b])
                assert got == tf.extractfile(m).read()


def expected_go_time(m: tarfile.TarInfo) -> str:
    """Go's RFC 3339 text for a member's mtime, computed independently with Decimal/datetime."""
    text = m.pax_headers.get("mtime")
    d = Decimal(text) if text else Decimal(int(m.mtime))
    sec = int(d.to_integral_value(rounding="ROUND_FLOOR"))
    frac = (d - sec).quantize(Decimal("1e-9"), rounding="ROUND_DOWN") if text else Decimal(0)
    if d < 0 and text:  # Go truncates the fraction toward zero before normalizing
        frac = d - int(d)
        sec = int(d) - (1 if frac else 0)
        frac = (1 + frac) if frac else Decimal(0)
    dt = datetime.fromtimestamp(sec, UTC)
    digits = f"{frac:.9f}"[2:].rstrip("0") if frac else ""
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{digits}" if digits else "") + "Z"


@SETTINGS
@given(layer=layers())
def test_serialize_parse_identity(layer) -> None:
    kind, blob, raw, _ = layer
    z = build_or_skip(kind, blob, raw)
    if z is None:
        return
    b = z.to_bytes()
    assert b == ztoc_to_flatbuffer_reference(z)  # the fast builder writes what flatbuffers.Builder writes
    z2 = Ztoc.from_bytes(b)
    assert z2.to_bytes() == b
    assert z2.toc == z.toc
    assert [e.tar_header_offset for e in z2.toc] == [e.tar_header_offset for e in z.toc]
    assert (z2.compressed_archive_size, z2.uncompressed_archive_size, z2.max_span_id, z2.span_digests) == (
        z.compressed_archive_size, z.uncompressed_archive_size, z.max_span_id, z.span_digests)
    assert bytes(z2.checkpoints) == bytes(z.checkpoints)
    assert z2.zinfo.to_bytes() == bytes(z.checkpoints)
    assert z2.version == "0.9" and z2.build_tool_identifier == "AWS SOCI CLI v0.2"
    # the TOC alone: re-deriving header offsets of a shuffled copy restores order and offsets
    shuffled = list(z2.toc)
    random.Random(len(b)).shuffle(shuffled)
    assert derive_header_offsets(shuffled) == z2.toc
    if z.compression_algorithm == "gzip":
        zi = GzipZinfo.from_bytes(z.checkpoints)
        assert zi.to_bytes() == bytes(z.checkpoints)


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_checkpoint_rule_matches_zran(level: int) -> None:
    """Spans are at least span_size apart (strict >), checkpoint 0 is right after the header."""
    raw = write_tar([])[:0] + bytes(range(256)) * 3000 + random.Random(level).randbytes(400_000)
    blob = gzip.compress(raw, compresslevel=level, mtime=0)
    from soci_lab.ztoc.gzip_zinfo import scan_gzip

    res = scan_gzip(io.BytesIO(blob), SPAN)
    cps = res.zinfo.checkpoints
    assert (cps[0].in_, cps[0].out, cps[0].bits) == (10, 0, 0)
    assert bytes(cps[0].window) == bytes(32768)
    for a, b in itertools.pairwise(cps):
        assert b.out - a.out > SPAN
    for c in cps[1:]:
        start = max(0, c.out - 32768)
        assert bytes(c.window) == bytes(32768 - (c.out - start)) + raw[start : c.out]
    if level == 0:  # stored blocks: byte aligned
        assert all(c.bits == 0 for c in cps)
    assert res.uncompressed_size == len(raw) and res.compressed_size == len(blob)


def test_non_aligned_checkpoints_and_stored_blocks() -> None:
    """Level 6 over alternating text and random data: zlib emits stored blocks for the random parts, and
    block boundaries fall mid-byte — every span still decompresses from its own bytes (inflatePrime path)."""
    rnd = random.Random(11)
    parts = []
    for i in range(24):
        parts.append(rnd.randbytes(40_000) if i % 2 else (b"text %d " % i) * 6000)
    raw = b"".join(parts)
    blob = gzip.compress(raw, compresslevel=6, mtime=0)
    from soci_lab.ztoc.gzip_zinfo import scan_gzip

    res = scan_gzip(io.BytesIO(blob), 16 * 1024)
    zi = res.zinfo
    assert any(c.bits for c in zi.checkpoints), "expected some non-byte-aligned checkpoints"
    zi.uncompressed_size = len(raw)
    for i in range(zi.span_count):
        a, b = zi.start_compressed_offset(i), zi.end_compressed_offset(i)
        assert zi.decompress_span(i, blob[a:b]) == raw[zi.start_uncompressed_offset(i) : zi.end_uncompressed_offset(i)]
        # a range that starts inside span i and runs into later spans, from data that runs on
        off = zi.start_uncompressed_offset(i) + 7
        n = min(50_000, len(raw) - off)
        assert zi.extract(i, blob[a:], off, n) == raw[off : off + n]
    with pytest.raises(FormatError, match="ended after"):  # asking past the end is an error, not short data
        zi.extract(0, blob[zi.start_compressed_offset(0) :], len(raw) - 10, 11)


def test_ztoc_is_a_lazy_span_geometry() -> None:
    """The lazy room's SpanGeometry protocol is satisfied by Ztoc itself."""
    span_mod = pytest.importorskip("soci_lab.lazy.span")
    raw = write_tar([])
    z = build_ztoc(gzip.compress(raw), span_size=SPAN)
    assert isinstance(z, span_mod.SpanGeometry)


@settings(max_examples=30, deadline=None)
@given(chunks=st.lists(st.integers(0, 3 * SPAN), max_size=6), frame=st.sampled_from([1000, SPAN, SPAN + 1]))
def test_zstd_frame_writer_streaming(chunks: list[int], frame: int) -> None:
    """Any chunking gives the same frames as one-shot compression; every frame holds ``frame`` bytes."""
    from soci_lab.ztoc import ZstdFrameWriter, compress_zstd_frames

    data = random.Random(len(chunks)).randbytes(sum(chunks))
    out = io.BytesIO()
    w = ZstdFrameWriter(out, frame)
    pos = 0
    for n in chunks:
        w.write(data[pos : pos + n])
        pos += n
    frames = w.finish()
    ref = io.BytesIO()
    assert compress_zstd_frames(io.BytesIO(data), ref, frame) == frames
    assert ref.getvalue() == out.getvalue()
    assert [u for _, u in frames] == list(range(0, max(len(data), 1), frame))[: len(frames)]
    assert full_decompression("zstd", out.getvalue()) == data


@SETTINGS
@given(layer=layers(), data=st.data())
def test_tar_header_verification(layer, data) -> None:
    """Every entry's header bytes, read through the spans, verify against its TOC entry (upstream's per-file
    Verify); a flipped byte in the ustar header block, or a TOC entry that lies, is a FileVerificationError."""
    kind, blob, raw, _ = layer
    z = build_or_skip(kind, blob, raw)
    if z is None or not z.toc:
        return
    z = Ztoc.from_bytes(z.to_bytes())
    fetch = lambda a, b: blob[a:b]  # noqa: E731
    for e in z.toc:
        verify_tar_header(e, z.read(e.tar_header_offset, e.tar_header_size, fetch))
    e = data.draw(st.sampled_from(z.toc))
    hdr = bytearray(raw[e.tar_header_offset : e.uncompressed_offset])
    # a byte of the entry's own ustar block, outside the checksum field (where " " and NUL read the same)
    pos = len(hdr) - 512 + data.draw(st.integers(0, 511).filter(lambda i: not 148 <= i < 156))
    hdr[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FileVerificationError):
        verify_tar_header(e, bytes(hdr))
    liar = dataclasses.replace(e, uncompressed_size=e.uncompressed_size + 1)
    with pytest.raises(FileVerificationError, match="size"):
        verify_tar_header(liar, raw[e.tar_header_offset : e.uncompressed_offset])
