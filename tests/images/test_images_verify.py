"""verify_image catches every kind of inconsistency an image can carry (layouts; registries are in interop)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
import zstandard

from soci_lab.errors import DecompressionError, DigestMismatch, InvalidManifest, SizeMismatch
from soci_lab.images import build_image
from soci_lab.images.verify import check_layer_file, verify_image
from soci_lab.oci import Descriptor, Digest, ImageConfig, Manifest, OCILayout, canonical_json
from soci_lab.oci import mediatypes as mt

TAR = b"pretend this is a tar" * 5000


@pytest.mark.parametrize(
    ("media_type", "blob"),
    [
        (mt.OCI_LAYER_GZIP, gzip.compress(TAR[:50000], mtime=0) + gzip.compress(TAR[50000:], mtime=0)),  # 2 members
        (
            mt.OCI_LAYER_ZSTD,
            b"".join(zstandard.ZstdCompressor().compress(TAR[i : i + 30000]) for i in range(0, len(TAR), 30000)),
        ),
        (mt.OCI_LAYER_TAR, TAR),
        (mt.DOCKER_LAYER_TAR, gzip.compress(TAR, mtime=0)),  # docker's rootfs.diff.tar may be compressed: sniffed
        (mt.DOCKER_LAYER_TAR, TAR),
    ],
)
def test_layers_of_every_compression_are_checked(tmp_path, media_type, blob):
    path = tmp_path / "blob"
    path.write_bytes(blob)
    desc = Descriptor(media_type, Digest.from_bytes(blob), len(blob))
    assert check_layer_file(path, desc, Digest.from_bytes(TAR)).uncompressed_size == len(TAR)
    with pytest.raises(DigestMismatch, match="diffID"):
        check_layer_file(path, desc, Digest.from_bytes(TAR + b"x"))


def test_truncated_or_corrupt_streams(tmp_path):
    path = tmp_path / "blob"
    blob = gzip.compress(TAR, mtime=0)[:-100]
    path.write_bytes(blob)
    desc = Descriptor(mt.OCI_LAYER_GZIP, Digest.from_bytes(blob), len(blob))
    with pytest.raises(DecompressionError, match="truncated"):  # the bytes are the announced ones, but bad
        check_layer_file(path, desc, Digest.from_bytes(TAR))
    good = gzip.compress(TAR, mtime=0)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    path.write_bytes(bytes(bad))
    with pytest.raises(DigestMismatch):  # the bytes are not the announced ones
        check_layer_file(
            path, Descriptor(mt.OCI_LAYER_GZIP, Digest.from_bytes(good), len(good)), Digest.from_bytes(TAR)
        )


def _rewrite(lay: Path, tag: str, manifest: Manifest, config_doc: dict) -> None:
    """Store a (deliberately inconsistent) config and manifest, digests correct, under ``tag``."""
    layout = OCILayout(lay)
    cdata = canonical_json(config_doc)
    cdesc = Descriptor(mt.OCI_CONFIG, layout.write_blob(cdata), len(cdata))
    new = Manifest(mt.OCI_MANIFEST, cdesc, manifest.layers)
    layout.put_document(new, tag)


def test_wrong_diff_id_wrong_count_wrong_size(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("content\n" * 100)
    res = build_image([src], f"oci:{tmp_path / 'lay'}:ok")
    assert verify_image(f"oci:{tmp_path / 'lay'}:ok").layers[0].diff_id == res.layers[0].diff_id
    doc = json.loads(res.config.to_bytes())
    doc["rootfs"]["diff_ids"] = ["sha256:" + hashlib.sha256(b"other").hexdigest()]
    _rewrite(tmp_path / "lay", "bad-diffid", res.manifest, doc)
    with pytest.raises(DigestMismatch, match="diffID"):
        verify_image(f"oci:{tmp_path / 'lay'}:bad-diffid")
    doc["rootfs"]["diff_ids"] = [str(res.layers[0].diff_id)] * 2
    _rewrite(tmp_path / "lay", "bad-count", res.manifest, doc)
    with pytest.raises(InvalidManifest, match="2 diffIDs"):
        verify_image(f"oci:{tmp_path / 'lay'}:bad-count")
    layer = res.manifest.layers[0]
    short = Descriptor(layer.media_type, layer.digest, layer.size + 1)
    layout = OCILayout(tmp_path / "lay")
    layout.put_document(Manifest(mt.OCI_MANIFEST, res.manifest.config, (short,)), "bad-size")
    with pytest.raises(SizeMismatch):
        verify_image(f"oci:{tmp_path / 'lay'}:bad-size")
    assert ImageConfig.from_bytes(res.config.to_bytes()).diff_ids == (res.layers[0].diff_id,)
