"""SOCI index, image manifest, image index and prefetch documents are the bytes Go's ``encoding/json`` writes.

The oracle is ``go_json_oracle/main.go`` (standard library only, built offline; skipped without ``go``): it
unmarshals a document into Go structs with image-spec v1.1.1's field order, names and ``omitempty`` flags
(the version upstream pins) and writes ``json.Marshal`` of it. Go's marshalling is a fixed point of its own
output, so a document built here equals Go's re-marshalling exactly when it is what upstream writes for the
same values: field order, empties left out, map keys sorted, ``<>&`` and U+2028/9 escaped. ``annotate``
performs upstream's ``annotateImages`` rewrite on the original manifest, independently of
:func:`annotate_image_manifest`.

What the oracle is not: upstream's own ``soci`` package (it needs containerd and a module proxy); the struct
definitions are transcribed from image-spec's published Go files. This machine's Go (1.19) writes ``\\b``
and ``\\f`` as ``\\u0008``/``\\u000c`` where Go 1.22+ (upstream's builds) writes ``\\b``/``\\f``; generated
strings leave those two characters out and :func:`test_go_1_22_control_escapes` pins the 1.22 form.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soci_lab.artifacts.convert import soci_enabled_index
from soci_lab.oci import Descriptor, Digest, Index, Manifest, Platform, go_json
from soci_lab.oci import mediatypes as mt
from soci_lab.ztoc.index import (
    PrefetchArtifact,
    PrefetchSpan,
    SociIndex,
    annotate_image_manifest,
    build_soci_index,
    index_descriptor_v2,
)

needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="needs a Go toolchain (Debian golang-go)")
ORACLE_SRC = Path(__file__).parent / "go_json_oracle"


@pytest.fixture(scope="module")
def go_json_oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gojson") / "oracle"
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOCACHE": str(out.parent / "cache"),
           "GOPATH": str(out.parent / "gopath"), "CGO_ENABLED": "0"}
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=ORACLE_SRC, env=env, check=True, capture_output=True)
    return out


def go(oracle: Path, kind: str, doc: bytes, *args: str) -> bytes:
    return subprocess.run([str(oracle), kind, *args], input=doc, capture_output=True, check=True).stdout


# --- strategies -------------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_characters="\b\f", blacklist_categories=("Cs",)), max_size=12) | \
    st.sampled_from(["<script>&amp;", "a\u2028b\u2029", "tab\tnl\ncr\r\x01\x1f\x7f", "é日本", "\"quoted\\"])
_digests = st.binary(min_size=1, max_size=8).map(Digest.from_bytes)
_platforms = st.builds(
    Platform, st.sampled_from(["linux", "windows"]), st.sampled_from(["amd64", "arm64"]),
    st.none() | st.sampled_from(["v8", "v7"]), st.none() | st.sampled_from(["10.0.17763.1", "<&>"]),
    st.lists(_text, max_size=2).map(tuple),
)


@st.composite
def descriptors(draw: st.DrawFn) -> Descriptor:
    return Descriptor(
        draw(st.sampled_from([mt.OCI_MANIFEST, mt.OCI_LAYER_GZIP, mt.SOCI_LAYER, "application/x<&>"])),
        draw(_digests), draw(st.integers(0, 2**53)),
        annotations=draw(st.dictionaries(_text, _text, max_size=4)),
        platform=draw(st.none() | _platforms),
        artifact_type=draw(st.none() | st.sampled_from([mt.SOCI_INDEX_V2, "a&b"])),
        urls=tuple(draw(st.lists(_text, max_size=2))),
        data=draw(st.none() | st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode())),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@needs_go
@given(config=descriptors(), layers=st.lists(descriptors(), max_size=3), subject=st.none() | descriptors(),
       annotations=st.dictionaries(_text, _text, max_size=4), artifact_type=st.none() | st.just(mt.SOCI_INDEX_V2))
def test_manifest_bytes_are_go_json(go_json_oracle: Path, config, layers, subject, annotations, artifact_type) -> None:
    m = Manifest(mt.OCI_MANIFEST, config, tuple(layers), annotations, subject, artifact_type)
    ours = m.to_bytes()
    assert go(go_json_oracle, "manifest", ours) == ours


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@needs_go
@given(manifests=st.lists(descriptors(), max_size=4), subject=st.none() | descriptors(),
       annotations=st.dictionaries(_text, _text, max_size=4))
def test_index_bytes_are_go_json(go_json_oracle: Path, manifests, subject, annotations) -> None:
    ours = Index(mt.OCI_INDEX, tuple(manifests), annotations, subject).to_bytes()
    assert go(go_json_oracle, "index", ours) == ours


@needs_go
@given(spans=st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 5), st.integers(0, 9)), max_size=4))
@settings(max_examples=20, deadline=None)
def test_prefetch_artifact_bytes_are_go_json(go_json_oracle: Path, spans) -> None:
    ours = PrefetchArtifact([PrefetchSpan(a, min(a + b, 2**31 - 1), p) for a, b, p in spans]).to_bytes()
    assert go(go_json_oracle, "prefetch", ours) == ours


# --- the documents soci create / soci convert write ---------------------------------------------------


def _layer(n: int) -> bytes:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as tf:
        data = os.urandom(70_000 + n)
        ti = tarfile.TarInfo(f"dir/file-<{n}>&.bin")
        ti.size = len(data)
        ti.pax_headers = {"SCHILY.xattr.user.k": "v"} if n else {}
        tf.addfile(ti, io.BytesIO(data))
    return bio.getvalue()


@needs_go
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_soci_index_and_v2_rewrite_are_go_json(go_json_oracle: Path, version: str) -> None:
    blobs = {}
    layers = []
    for n, media_type in enumerate([mt.OCI_LAYER_TAR, mt.DOCKER_LAYER_GZIP]):
        raw = _layer(n)
        import gzip

        blob = gzip.compress(raw) if "gzip" in media_type else raw
        d = Descriptor(media_type, Digest.from_bytes(blob), len(blob))
        blobs[str(d.digest)] = blob
        layers.append(d)
    cfg = Descriptor(mt.DOCKER_CONFIG, Digest.from_bytes(b"cfg"), 3)
    docker_manifest = json.dumps({  # as a Docker build writes it: other key order, an unknown field
        "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST, "x-unknown": 1,
        "layers": [d.to_dict() for d in layers], "config": cfg.to_dict(),
        "annotations": {"org.opencontainers.image.title": "<x & y>"},
    }, indent=3).encode()
    image = Manifest.from_bytes(docker_manifest)
    subject = image.descriptor() if version == "v1" else None
    built = build_soci_index(layers, lambda d: blobs[str(d.digest)], version=version, subject=subject,
                             span_size=65536, min_layer_size=0, optimize_xattrs=True,
                             prefetch=["dir/file-<0>&.bin"])
    index_bytes = built.manifest_bytes
    assert go(go_json_oracle, "manifest", index_bytes) == index_bytes
    assert SociIndex.from_bytes(index_bytes).to_manifest().to_bytes() == index_bytes
    for b in built.blobs.values():
        if b.startswith(b'{"version"'):
            assert go(go_json_oracle, "prefetch", b) == b
    if version == "v1":
        return
    annotated = annotate_image_manifest(image, str(built.index.digest))
    assert annotated.to_bytes() == go(go_json_oracle, "annotate", docker_manifest, str(built.index.digest))
    amd = Platform("linux", "amd64")
    soci_desc = index_descriptor_v2(built.index, amd, str(annotated.digest))
    top = Index.from_bytes(json.dumps({
        "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST,
        "manifests": [image.descriptor(platform=amd).to_dict(),
                      image.descriptor(platform=Platform("linux", "arm64", "v8", None, ("f",))).to_dict()],
    }).encode())
    enabled = soci_enabled_index(top, top.manifests[0], annotated, amd, soci_desc).to_bytes()
    assert go(go_json_oracle, "index", enabled) == enabled
    bare = soci_enabled_index(None, None, annotated, amd, soci_desc).to_bytes()
    assert go(go_json_oracle, "index", bare) == bare


def test_go_1_22_control_escapes() -> None:
    """Go 1.22+ (``encoding/json`` release note) writes ``\\b`` and ``\\f`` short; other controls as ``\\u00xx``."""
    assert go_json({"k": "\b\f\n\r\t\x01\x1f\x7f"}) == b'{"k":"\\b\\f\\n\\r\\t\\u0001\\u001f\x7f"}'
    assert go_json({"k": "<>&\u2028\u2029"}) == b'{"k":"\\u003c\\u003e\\u0026\\u2028\\u2029"}'


def test_lone_surrogates_become_replacement_characters() -> None:
    """Go holds strings as bytes and writes invalid UTF-8 as U+FFFD; a lone surrogate is the Python form."""
    assert go_json({"k\udc80": "a\ud800"}) == '{"k\ufffd":"a\ufffd"}'.encode()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(doc=st.dictionaries(st.text(max_size=6), _json_values, max_size=4))
@settings(max_examples=200, deadline=None)
def test_go_json_round_trips_and_keeps_key_order(doc) -> None:
    """Any JSON value comes back equal, keys in the order given, and no raw ``<>&``/U+2028/9 is written."""
    out = go_json(doc)
    assert json.loads(out) == doc
    assert list(json.loads(out)) == list(doc)
    assert not any(c in out for c in (b"<", b">", b"&", "\u2028".encode(), "\u2029".encode()))


@pytest.mark.parametrize(("config", "want"), [
    ({"os": "linux", "architecture": "amd64"}, {"architecture": "amd64", "os": "linux"}),
    ({"os": "Linux", "architecture": "x86_64", "variant": "v1"}, {"architecture": "amd64", "os": "linux"}),
    ({"os": "linux", "architecture": "arm64", "variant": "v8"}, {"architecture": "arm64", "os": "linux"}),
    ({"os": "linux", "architecture": "aarch64", "variant": "9.0"},
     {"architecture": "arm64", "os": "linux", "variant": "v9"}),
    ({"os": "linux", "architecture": "arm"}, {"architecture": "arm", "os": "linux", "variant": "v7"}),
    ({"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1", "os.features": ["b", "a", "b"]},
     {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1", "os.features": ["a", "b"]}),
])
def test_bare_manifest_platform_is_containerds_normalized_config_platform(config, want) -> None:
    """``soci convert`` of a bare manifest puts containerd's ``ConfigPlatform`` (normalized) on its entries."""
    from soci_lab.artifacts.convert import platform_of
    from soci_lab.oci import ImageConfig

    doc = {**config, "rootfs": {"type": "layers", "diff_ids": []}}
    assert platform_of(ImageConfig.from_bytes(json.dumps(doc).encode())).to_dict() == want
