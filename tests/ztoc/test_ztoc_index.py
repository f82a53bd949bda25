"""SOCI index v1/v2 manifests, zTOC/prefetch descriptors, prefetch artifacts and the index builder."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ztoc_trees import SPAN, Entry, gzip_bytes, write_tar, zstd_frames

from soci_lab.errors import EmptyIndex, FormatError, InvalidManifest, UnknownIndexVersion
from soci_lab.oci import Descriptor, Digest, Manifest, Platform, mediatypes
from soci_lab.ztoc import Ztoc
from soci_lab.ztoc.index import (
    ANNOTATION_BUILD_TOOL_IDENTIFIER,
    ANNOTATION_DISABLE_XATTRS,
    ANNOTATION_IMAGE_LAYER_DIGEST,
    ANNOTATION_IMAGE_LAYER_MEDIA_TYPE,
    ANNOTATION_IMAGE_MANIFEST_DIGEST,
    ANNOTATION_SOCI_INDEX_DIGEST,
    ANNOTATION_SPAN_SIZE,
    EMPTY_CONFIG_DIGEST,
    PrefetchArtifact,
    PrefetchSpan,
    SociIndex,
    annotate_image_manifest,
    build_soci_index,
    index_descriptor_v2,
    prefetch_artifacts,
)


def _layer(entries: list[Entry], kind: str = "gzip") -> bytes:
    raw = write_tar(entries)
    return gzip_bytes(raw, 6) if kind == "gzip" else zstd_frames(raw, len(raw) + 1)


@pytest.fixture(scope="module")
def image() -> tuple[list[Descriptor], dict[str, bytes], Descriptor]:
    rnd = random.Random(5)
    blobs = {
        "base": _layer([Entry("etc", "dir"), Entry("etc/os-release", "reg", data=b"ID=test\n"),
                        Entry("bin/sh", "reg", data=rnd.randbytes(3 * SPAN))]),
        "tiny": _layer([Entry("t", "reg", data=b"x")]),
        "app": _layer([Entry("app/main.py", "reg", data=rnd.randbytes(2 * SPAN), xattrs={"user.a": "1"}),
                       Entry("etc/os-release", "reg", data=b"ID=app\n" * 10)]),
        "zstd1": _layer([Entry("z", "reg", data=rnd.randbytes(3 * SPAN))], kind="zstd"),
    }
    descs, store = [], {}
    for name, b in blobs.items():
        mt = mediatypes.OCI_LAYER_ZSTD if name == "zstd1" else mediatypes.OCI_LAYER_GZIP
        d = Descriptor(mt, Digest.from_bytes(b), len(b), annotations={"name": name})
        descs.append(d)
        store[str(d.digest)] = b
    subject = Descriptor(mediatypes.OCI_MANIFEST, Digest.from_bytes(b"manifest"), 8)
    return descs, store, subject


def test_build_v2_index(image) -> None:
    descs, store, _ = image
    min_size = len(store[str(descs[1].digest)]) + 1  # "tiny" is below it
    built = build_soci_index(descs, lambda d: store[str(d.digest)], span_size=SPAN, min_layer_size=min_size,
                             prefetch=["/etc/os-release", "bin/sh", ("app/main.py", SPAN + 10, 100), "missing"])
    idx = built.index
    assert idx.version == "v2" and idx.subject is None
    doc = json.loads(idx.to_bytes())
    assert doc["mediaType"] == mediatypes.OCI_MANIFEST and "artifactType" not in doc and "subject" not in doc
    assert doc["config"] == {"mediaType": mediatypes.SOCI_INDEX_V2, "digest": str(EMPTY_CONFIG_DIGEST), "size": 2}
    assert doc["annotations"] == {ANNOTATION_BUILD_TOOL_IDENTIFIER: "AWS SOCI CLI v0.2"}
    kinds = [d["mediaType"] for d in doc["layers"]]
    assert kinds == [mediatypes.SOCI_LAYER] * 2 + [mediatypes.SOCI_PREFETCH] * 2  # zTOCs first, then prefetch
    z_base, z_app = doc["layers"][:2]
    assert z_base["annotations"] == {
        ANNOTATION_IMAGE_LAYER_MEDIA_TYPE: mediatypes.OCI_LAYER_GZIP,
        ANNOTATION_IMAGE_LAYER_DIGEST: str(descs[0].digest),
        ANNOTATION_SPAN_SIZE: str(SPAN),
    }
    assert z_app["annotations"][ANNOTATION_IMAGE_LAYER_DIGEST] == str(descs[2].digest)
    assert set(built.skipped) == {str(descs[1].digest), str(descs[3].digest)}  # too small; single-frame zstd
    assert "single frame" in built.skipped[str(descs[3].digest)]
    # every blob is there and matches its descriptor; zTOCs parse
    for d in idx.blobs:
        assert Digest.from_bytes(built.blobs[str(d.digest)]) == d.digest and len(built.blobs[str(d.digest)]) == d.size
    assert built.blobs[str(EMPTY_CONFIG_DIGEST)] == b"{}"
    zmap = idx.ztoc_descriptors()
    assert set(zmap) == {str(descs[0].digest), str(descs[2].digest)}
    assert Ztoc.from_bytes(built.blobs[str(zmap[str(descs[0].digest)].digest)]).span_count >= 3
    # prefetch: etc/os-release resolves to the top layer (app), bin/sh to base
    pre = idx.prefetch_descriptors()
    base_pf = PrefetchArtifact.from_bytes(built.blobs[str(pre[str(descs[0].digest)].digest)])
    z0 = built.ztocs[str(descs[0].digest)]
    sh = next(e for e in z0.toc if e.name == "bin/sh")
    assert base_pf.spans == [PrefetchSpan(z0.span_of(sh.uncompressed_offset),
                                          z0.span_of(sh.uncompressed_offset + sh.uncompressed_size))]
    app_pf = PrefetchArtifact.from_bytes(built.blobs[str(pre[str(descs[2].digest)].digest)])
    assert app_pf.span_ids()  # main.py range + os-release


def test_index_round_trip_and_descriptors(image) -> None:
    descs, store, subject = image
    built = build_soci_index(descs[:1], lambda d: store[str(d.digest)], version="v1", subject=subject,
                             span_size=SPAN, min_layer_size=0)
    idx = built.index
    assert json.loads(idx.to_bytes())["subject"] == subject.to_dict()
    again = SociIndex.from_bytes(idx.to_bytes())
    assert again == idx and again.to_bytes() == idx.to_bytes() and again.digest == idx.digest
    d = idx.descriptor()
    assert d.media_type == mediatypes.OCI_MANIFEST and d.artifact_type == mediatypes.SOCI_INDEX_V1
    # v2 pieces: image manifest annotation and image-index entry
    v2 = build_soci_index(descs[:1], lambda d: store[str(d.digest)], span_size=SPAN, min_layer_size=0).index
    m = Manifest(mediatypes.DOCKER_MANIFEST, Descriptor(mediatypes.DOCKER_CONFIG, Digest.from_bytes(b"c"), 1),
                 (descs[0],))
    m2 = annotate_image_manifest(m, str(v2.digest))
    assert m2.media_type == mediatypes.OCI_MANIFEST and m2.config.media_type == mediatypes.OCI_CONFIG
    assert m2.annotations[ANNOTATION_SOCI_INDEX_DIGEST] == str(v2.digest) and m2.layers == m.layers
    entry = index_descriptor_v2(v2, Platform("linux", "amd64"), str(m2.digest))
    assert entry.artifact_type == mediatypes.SOCI_INDEX_V2
    assert entry.annotations == {ANNOTATION_IMAGE_MANIFEST_DIGEST: str(m2.digest)}
    assert entry.platform == Platform("linux", "amd64")


def test_index_bad_input(image) -> None:
    descs, store, _ = image
    idx = build_soci_index(descs[:1], lambda d: store[str(d.digest)], span_size=SPAN, min_layer_size=0).index
    doc = json.loads(idx.to_bytes())
    doc["config"]["mediaType"] = mediatypes.OCI_CONFIG  # an ordinary image manifest posing as an index
    with pytest.raises(UnknownIndexVersion, match="unknown index version"):
        SociIndex.from_bytes(json.dumps(doc).encode())
    with pytest.raises(InvalidManifest, match="announced"):
        SociIndex.from_bytes(idx.to_bytes(), artifact_type=mediatypes.SOCI_INDEX_V1)
    with pytest.raises(InvalidManifest):
        SociIndex.from_bytes(b"{not json")
    with pytest.raises(EmptyIndex, match="no ztocs created"):
        build_soci_index(descs, lambda d: store[str(d.digest)], span_size=SPAN, min_layer_size=1 << 40)
    with pytest.raises(InvalidManifest, match="not a layer"):
        build_soci_index([Descriptor(mediatypes.OCI_CONFIG, Digest.from_bytes(b"c"), 1)], lambda d: b"")


def test_disable_xattrs_optimization(image) -> None:
    descs, store, _ = image
    built = build_soci_index([descs[0], descs[2]], lambda d: store[str(d.digest)], span_size=SPAN,
                             min_layer_size=0, optimize_xattrs=True)
    a, b = built.index.blobs
    assert a.annotations.get(ANNOTATION_DISABLE_XATTRS) == "true"  # base: no xattrs, no opaque dirs
    assert ANNOTATION_DISABLE_XATTRS not in b.annotations  # app has user.a


def test_concurrent_build_matches_serial(image) -> None:
    descs, store, _ = image
    kw = dict(span_size=SPAN, min_layer_size=0)
    par = build_soci_index(descs, lambda d: store[str(d.digest)], max_workers=4, **kw)
    ser = build_soci_index(descs, lambda d: store[str(d.digest)], max_workers=1, **kw)
    assert par.index.to_bytes() == ser.index.to_bytes()


@settings(max_examples=60, deadline=None)
@given(spans=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 3)), max_size=6))
def test_prefetch_artifact_round_trip(spans) -> None:
    art = PrefetchArtifact([PrefetchSpan(min(a, b), max(a, b), p) for a, b, p in spans])
    blob = art.to_bytes()
    assert PrefetchArtifact.from_bytes(blob) == art
    doc = json.loads(blob)
    assert doc["version"] == "1.0"
    assert all(("priority" in s) == bool(p) for s, (_, _, p) in zip(doc["prefetch_spans"], spans, strict=True))


@pytest.mark.parametrize("blob", [b"", b"[]", b'{"prefetch_spans": 3}', b'{"prefetch_spans": [{"start_span": 2,'
                                  b' "end_span": 1}]}', b'{"prefetch_spans": [{"start_span": -1, "end_span": 1}]}'])
def test_prefetch_artifact_bad_input(blob: bytes) -> None:
    with pytest.raises(FormatError):
        PrefetchArtifact.from_bytes(blob)


def test_prefetch_merges_adjacent_ranges(image) -> None:
    descs, store, _ = image
    built = build_soci_index(descs[:1], lambda d: store[str(d.digest)], span_size=SPAN, min_layer_size=0)
    z = built.ztocs[str(descs[0].digest)]
    sh = next(e for e in z.toc if e.name == "bin/sh")
    arts = prefetch_artifacts([(str(descs[0].digest), z)], [("bin/sh", 0, 10), ("/bin/./sh", SPAN, 10), "etc/"])
    spans = arts[str(descs[0].digest)].spans
    first = z.span_of(sh.uncompressed_offset)
    assert spans[0].start_span <= first and len(spans) <= 2
    assert all(b.start_span > a.end_span + 1 for a, b in itertools.pairwise(spans))
