"""zTOC layout details that upstream's builder decides and soci_lab must reproduce byte for byte.

* The nested ``TarZinfo`` of an uncompressed layer: upstream adds version, span_size, size in that order,
  so the int32 comes first and the table is padded to 48 bytes.
* gzip checkpoints follow zran's rule wherever the tar ends: a checkpoint may start in tar record padding
  or in a trailing member after the end-of-archive blocks, and an empty first member gives two
  checkpoints at ``out = 0``. None of this depends on where the tar stream ends, so the checkpoints a
  full zTOC build places equal those of a bare scan of the gzip stream.

The byte-for-byte comparison with independent builders is in ``test_ztoc_go_oracle.py``.
"""

from __future__ import annotations

import io
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ztoc_trees import SPAN, Entry, gzip_bytes, gzip_members, layers, write_tar

from soci_lab.ztoc import Ztoc, build_ztoc
from soci_lab.ztoc.gzip_zinfo import scan_gzip
from soci_lab.ztoc.tar_zinfo import TarZinfo


def _table_field_positions(blob: bytes) -> list[int]:
    """Absolute positions of a root table's fields, by field id (FlatBuffers wire format)."""
    root = struct.unpack_from("<I", blob, 0)[0]
    vt = root - struct.unpack_from("<i", blob, root)[0]
    vt_len = struct.unpack_from("<H", blob, vt)[0]
    offs = struct.unpack_from(f"<{(vt_len - 4) // 2}H", blob, vt + 4)
    return [root + o for o in offs]


def test_tar_zinfo_is_laid_out_in_upstreams_order() -> None:
    blob = TarZinfo(4 << 20, 123_456_789).to_bytes()
    assert len(blob) == 48
    version, span, size = _table_field_positions(blob)
    # FlatBuffers builds back to front: the field added first (version) ends up last in the table
    assert size < span < version
    assert struct.unpack_from("<q", blob, size)[0] == 123_456_789
    assert struct.unpack_from("<q", blob, span)[0] == 4 << 20
    assert struct.unpack_from("<i", blob, version)[0] == 2
    back = TarZinfo.from_bytes(blob)
    assert (back.version, back.span_size, back.size) == (2, 4 << 20, 123_456_789)


def _files(seed: int) -> tuple[list[Entry], bytes]:
    rnd = os.urandom(3 * SPAN + 100) if seed else bytes(3 * SPAN + 100)
    entries = [Entry("a/", "dir"), Entry("a/big", "reg", data=rnd), Entry("a/small", "reg", data=b"s" * 700)]
    return entries, write_tar(entries)


def _read_all(z: Ztoc, blob: bytes) -> dict[str, bytes]:
    z = Ztoc.from_bytes(z.to_bytes())  # parsed and validated as a reader would
    return {e.name: z.read_file(e, lambda a, b: blob[a:b]) for e in z.toc if e.type == "reg"}


def test_checkpoint_in_record_padding_like_upstream() -> None:
    """Level 0, a tar followed by 3 spans of record padding: the padding gets checkpoints, as in zran."""
    entries, raw = _files(1)
    blob = gzip_bytes(raw + bytes(3 * SPAN), 0)
    z = build_ztoc(blob, span_size=SPAN)
    bare = scan_gzip(io.BytesIO(blob), SPAN)
    assert z.checkpoints == bare.zinfo.to_bytes()
    assert z.span_digests == bare.span_digests and z.max_span_id == bare.zinfo.max_span_id
    outs = [c.out for c in bare.zinfo.checkpoints]
    assert outs[-1] > z.uncompressed_archive_size  # a span starts past the tar end
    files = _read_all(z, blob)
    assert files["a/big"] == entries[1].data and files["a/small"] == entries[2].data


def test_checkpoints_in_a_trailing_member_like_upstream() -> None:
    """A junk member after the tar (here: two spans of random bytes) is indexed like the rest."""
    entries, raw = _files(1)
    blob = gzip_bytes(raw, 6) + gzip_bytes(os.urandom(2 * SPAN + 10), 1)
    z = build_ztoc(blob, span_size=SPAN)
    bare = scan_gzip(io.BytesIO(blob), SPAN)
    assert z.checkpoints == bare.zinfo.to_bytes() and z.max_span_id == bare.zinfo.max_span_id
    assert [c.out for c in bare.zinfo.checkpoints][-1] > z.uncompressed_archive_size
    files = _read_all(z, blob)
    assert files["a/big"] == entries[1].data


def test_empty_first_member_gives_two_checkpoints_at_zero() -> None:
    """zran's ``totout == 0`` rule: after the empty member's header and again after the next header."""
    entries, raw = _files(1)
    blob = gzip_members(raw, [0], 6)  # an empty member, then the tar
    z = build_ztoc(blob, span_size=SPAN)
    cps = scan_gzip(io.BytesIO(blob), SPAN).zinfo.checkpoints
    assert [c.out for c in cps[:2]] == [0, 0] and cps[0].in_ == 10 and cps[1].in_ > cps[0].in_
    assert z.max_span_id == len(cps) - 1
    files = _read_all(z, blob)  # readable here, although upstream's SpanManager refuses the empty span 0
    assert files["a/big"] == entries[1].data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(layer=layers(), pad=st.sampled_from([0, 512, 10240, 3 * SPAN]))
def test_gzip_checkpoints_do_not_depend_on_the_tar_end(layer, pad: int) -> None:
    """Whatever follows the end-of-archive blocks, a zTOC's checkpoints are the bare gzip scan's."""
    kind, _blob, raw, _entries = layer
    if not (kind.startswith("gzip") or kind.startswith("members")):
        return
    level = int(kind[-1])
    blob = gzip_bytes(raw + bytes(pad), level)
    z = build_ztoc(blob, span_size=SPAN)
    bare = scan_gzip(io.BytesIO(blob), SPAN)
    assert z.checkpoints == bare.zinfo.to_bytes()
    assert z.span_digests == bare.span_digests
    Ztoc.from_bytes(z.to_bytes())  # and it reads back
