"""Bad input gives one clear soci_lab error each — never a crash, a hang or a huge allocation."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import random
import struct
import tarfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ztoc_trees import SPAN, Entry, gzip_bytes, write_tar, zstd_frames

from soci_lab.errors import (
    ExceedMaxSpan,
    FormatError,
    IncorrectMaxSpanID,
    IncorrectSpanDigest,
    InvalidTOCEntry,
    NonMonotonicCheckpoints,
    SociLabError,
    UnsupportedCompression,
    UnsupportedTarEntry,
)
from soci_lab.ztoc import Checkpoint, GzipZinfo, TarZinfo, ZstdZinfo, Ztoc, build_ztoc
from soci_lab.ztoc._fb import FbBuffer
from soci_lab.ztoc.gzip_zinfo import PACKED_CHECKPOINT_SIZE
from soci_lab.ztoc.toc import FileMetadata, derive_header_offsets


def sample_tar() -> bytes:
    rnd = random.Random(7)
    return write_tar(
        [
            Entry("a/b.txt", "reg", data=b"hello world\n" * 30000, xattrs={"user.k": "v"}),
            Entry("a", "dir"),
            Entry("c", "sym", link="a/b.txt"),
            Entry("d", "reg", data=rnd.randbytes(5 * SPAN)),
        ]
    )


@pytest.fixture(scope="module")
def gz_layer() -> bytes:
    return gzip_bytes(sample_tar(), 6)


@pytest.fixture(scope="module")
def ztoc_blob(gz_layer: bytes) -> bytes:
    return build_ztoc(gz_layer, span_size=SPAN).to_bytes()


# --- zTOC blobs -----------------------------------------------------------------------------------


def test_truncated_ztoc_blobs(ztoc_blob: bytes) -> None:
    cuts = sorted({0, 1, 4, 7, 8, 16, 100, len(ztoc_blob) // 3, len(ztoc_blob) // 2, len(ztoc_blob) - 100,
                   len(ztoc_blob) - 8, len(ztoc_blob) - 1})
    for cut in cuts:
        with pytest.raises(FormatError):
            Ztoc.from_bytes(ztoc_blob[:cut])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(max_size=600))
def test_garbage_ztoc_blobs(garbage: bytes) -> None:
    t0 = time.monotonic()
    with contextlib.suppress(SociLabError):
        Ztoc.from_bytes(garbage)
    assert time.monotonic() - t0 < 1.0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_ztoc_blobs_fail_cleanly(ztoc_blob: bytes, data: st.DataObject) -> None:
    """Flip bytes of the metadata part of a real zTOC: either it still parses or FormatError — nothing else."""
    blob = bytearray(ztoc_blob)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    try:
        z = Ztoc.from_bytes(bytes(blob))
        z.to_bytes()
    except SociLabError:
        pass


def test_huge_vector_length_is_refused(ztoc_blob: bytes) -> None:
    """A uoffset pointing at a length of 2**32-1 must not allocate or loop."""
    blob = bytearray(ztoc_blob)
    fb = FbBuffer(ztoc_blob, "t")
    toc = fb.root().table(4)
    assert toc is not None
    field = toc._field(0, 4)
    pos = field + fb._u32(field)  # where the metadata vector's element count lives
    assert struct.unpack_from("<I", blob, pos)[0] == len(Ztoc.from_bytes(ztoc_blob).toc)
    struct.pack_into("<I", blob, pos, 0xFFFFFFFF)
    t0 = time.monotonic()
    with pytest.raises(FormatError, match="overruns"):
        Ztoc.from_bytes(bytes(blob))
    assert time.monotonic() - t0 < 0.5


def test_unknown_compression_algorithm_code(ztoc_blob: bytes, gz_layer: bytes) -> None:
    z = Ztoc.from_bytes(ztoc_blob)
    z.compression_algorithm = "zstd"  # write code 3 with gzip checkpoints: parses, but zinfo is not a ZstdZinfo
    with pytest.raises(FormatError):
        Ztoc.from_bytes(z.to_bytes())


# --- consistency checks ---------------------------------------------------------------------------


def test_max_span_id_disagreeing_with_checkpoints(ztoc_blob: bytes) -> None:
    z = Ztoc.from_bytes(ztoc_blob)
    z.max_span_id += 1
    with pytest.raises(IncorrectMaxSpanID):
        Ztoc.from_bytes(z.to_bytes())
    Ztoc.from_bytes(z.to_bytes(), validate=False)  # parsing alone still works, as upstream's Unmarshal


def test_digest_count_mismatch(ztoc_blob: bytes) -> None:
    z = Ztoc.from_bytes(ztoc_blob)
    z.span_digests = z.span_digests[:-1]
    with pytest.raises(FormatError, match="span digests"):
        Ztoc.from_bytes(z.to_bytes())


def test_non_monotonic_checkpoints(ztoc_blob: bytes) -> None:
    z = Ztoc.from_bytes(ztoc_blob)
    zi = z.zinfo
    assert isinstance(zi, GzipZinfo) and zi.span_count >= 3
    cps = list(zi.checkpoints)
    cps[1], cps[2] = cps[2], cps[1]
    z2 = dataclasses.replace(z, checkpoints=GzipZinfo(cps, zi.span_size).to_bytes(), _zinfo=None)
    with pytest.raises(NonMonotonicCheckpoints):
        Ztoc.from_bytes(z2.to_bytes())
    zz = ZstdZinfo([0, 50, 40], [0, 10, 20], SPAN, 100, 100)
    with pytest.raises(NonMonotonicCheckpoints):
        zz.validate()


def test_span_digest_mismatch(gz_layer: bytes) -> None:
    z = build_ztoc(gz_layer, span_size=SPAN)
    bad = bytearray(gz_layer)
    a, b = z.compressed_range(1)
    bad[(a + b) // 2] ^= 0xFF
    with pytest.raises(IncorrectSpanDigest, match="span digests do not match"):
        z.read(z.uncompressed_range(1)[0], 10, lambda s, e: bytes(bad[s:e]))
    with pytest.raises(IncorrectSpanDigest):
        z.verify_span(1, bytes(bad[a:b]))


def test_exceed_max_span(gz_layer: bytes) -> None:
    z = build_ztoc(gz_layer, span_size=SPAN)
    with pytest.raises(ExceedMaxSpan):
        z.compressed_range(z.max_span_id + 1)
    with pytest.raises(ExceedMaxSpan):
        TarZinfo(SPAN, 10).start_compressed_offset(1)


def test_invalid_toc_entry() -> None:
    entries = [FileMetadata("a", "reg", 512, 2000), FileMetadata("b", "reg", 1024, 10)]
    with pytest.raises(InvalidTOCEntry, match="invalid toc entry"):
        derive_header_offsets(entries)


# --- zinfo blobs ----------------------------------------------------------------------------------


def test_zinfo_count_length_mismatch(gz_layer: bytes) -> None:
    blob = bytes(build_ztoc(gz_layer, span_size=SPAN).checkpoints)
    count = struct.unpack_from("<i", blob)[0]
    for bad in (
        blob[:11],
        blob[:-1],
        blob + b"\0",
        struct.pack("<i", count + 2) + blob[4:],
        struct.pack("<i", -1) + blob[4:],
        struct.pack("<i", 2**31 - 1) + blob[4:],
    ):
        with pytest.raises(FormatError):
            GzipZinfo.from_bytes(bad)
    # count = 0 with only a header is a valid (empty) v2 blob, as upstream's unit test says
    assert GzipZinfo.from_bytes(struct.pack("<iq", 0, SPAN)).span_count == 0


def test_zinfo_v1_is_read_by_length_and_reserialized_identically(gz_layer: bytes) -> None:
    v2 = GzipZinfo.from_bytes(build_ztoc(gz_layer, span_size=SPAN).checkpoints)
    count = v2.span_count
    v1_blob = struct.pack("<iq", count, SPAN) + bytes(v2.to_bytes())[12 + PACKED_CHECKPOINT_SIZE :]
    v1 = GzipZinfo.from_bytes(v1_blob)
    assert v1.version == 1 and v1.span_count == count
    assert v1.checkpoints[0] == Checkpoint(10, 0, 0, bytes(32768))
    assert v1.to_bytes() == v1_blob
    assert [c.in_ for c in v1.checkpoints] == [c.in_ for c in v2.checkpoints]


def test_bad_checkpoint_bits() -> None:
    with pytest.raises(FormatError, match="bits"):
        GzipZinfo([Checkpoint(10, 0, 9, bytes(32768))], SPAN).validate()


def test_garbage_nested_zinfo() -> None:
    for blob in (b"", b"\x01\x02", b"\xff" * 64):
        with pytest.raises(FormatError):
            TarZinfo.from_bytes(blob)
        with pytest.raises(FormatError):
            ZstdZinfo.from_bytes(blob)


# --- layers ---------------------------------------------------------------------------------------


def _tar_with_type(typeflag: bytes) -> bytes:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("weird")
        ti.type = typeflag
        tf.addfile(ti)
    return bio.getvalue()


@pytest.mark.parametrize("typeflag", [b"7", b"V", b"S", b"N"])
def test_unsupported_tar_entry_types(typeflag: bytes) -> None:
    with pytest.raises(UnsupportedTarEntry, match="unsupported input tar entry"):
        build_ztoc(gzip_bytes(_tar_with_type(typeflag), 6), span_size=SPAN)


def test_pax_global_header_is_unsupported_like_upstream() -> None:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "x"}) as tf:
        ti = tarfile.TarInfo("f")
        tf.addfile(ti, io.BytesIO(b""))
    with pytest.raises(UnsupportedTarEntry):
        build_ztoc(bio.getvalue(), compression="uncompressed", span_size=SPAN)


def test_single_frame_zstd_is_refused() -> None:
    raw = sample_tar()
    single = zstd_frames(raw, frame_size=len(raw) + 1)
    with pytest.raises(UnsupportedCompression, match="single frame"):
        build_ztoc(single, span_size=SPAN)
    # the same data in frames of one span each is fine
    z = build_ztoc(zstd_frames(raw, SPAN), span_size=SPAN)
    assert z.compression_algorithm == "zstd" and z.span_count > 1


def test_truncated_and_corrupt_layers() -> None:
    raw = sample_tar()
    gz = gzip_bytes(raw, 6)
    with pytest.raises(FormatError, match="truncated"):
        build_ztoc(gz[: len(gz) // 2], span_size=SPAN)
    bad = bytearray(gz)
    bad[len(gz) // 2] ^= 0x55
    bad[len(gz) // 2 + 1] ^= 0x55
    with pytest.raises(SociLabError):
        build_ztoc(bytes(bad), span_size=SPAN)
    with pytest.raises(FormatError):
        build_ztoc(gz + b"garbage!", span_size=SPAN)
    with pytest.raises(FormatError, match="truncated"):
        build_ztoc(raw[:700], compression="uncompressed", span_size=SPAN)
    zs = zstd_frames(raw, SPAN)
    with pytest.raises(FormatError, match="truncated"):
        build_ztoc(zs[:-3], span_size=SPAN)
    with pytest.raises(FormatError):
        build_ztoc(b"", compression="gzip", span_size=SPAN)


def test_bad_tar_checksum() -> None:
    raw = bytearray(sample_tar())
    raw[0] ^= 1  # the name changes but the checksum does not
    with pytest.raises(FormatError, match="checksum"):
        build_ztoc(gzip.compress(bytes(raw)), span_size=SPAN)


def test_huge_pax_header_is_refused() -> None:
    raw = bytearray(write_tar([Entry("x" * 200, "reg", data=b"1")]))  # starts with a PAX header
    assert raw[156:157] == b"x"
    raw[124:136] = b"%011o\0" % (1 << 30)
    chk = sum(raw[:148]) + sum(raw[156:512]) + 8 * 32
    raw[148:156] = b"%06o\0 " % chk
    with pytest.raises(FormatError, match="exceeds 1 MiB"):
        build_ztoc(bytes(raw), compression="uncompressed", span_size=SPAN)
