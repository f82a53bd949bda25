import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soci_lab.errors import InvalidManifest, NoMatchingPlatform, UnsupportedMediaType
from soci_lab.oci import Descriptor, Digest, ImageConfig, Index, Manifest, Platform, parse_manifest_or_index
from soci_lab.oci import mediatypes as mt


def desc(data: bytes, media_type=mt.OCI_LAYER_GZIP, **kw) -> Descriptor:
    return Descriptor(media_type, Digest.from_bytes(data), len(data), **kw)


descriptors = st.builds(
    lambda b, mtyp, ann: desc(b, mtyp, annotations=ann),
    st.binary(max_size=16),
    st.sampled_from([mt.OCI_LAYER_GZIP, mt.OCI_LAYER_TAR, mt.OCI_LAYER_ZSTD, mt.SOCI_LAYER]),
    st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10), max_size=3),
)


@given(st.lists(descriptors, max_size=5), st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8)))
def test_manifest_serialise_parse_identity(layers, annotations):
    m = Manifest(mt.OCI_MANIFEST, desc(b"{}", mt.OCI_CONFIG), tuple(layers), annotations, subject=desc(b"s"))
    back = Manifest.from_bytes(m.to_bytes())
    assert back == m
    assert back.digest == m.digest == Digest.from_bytes(m.to_bytes())


def test_digest_is_of_served_bytes_not_reserialisation():
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": desc(b"{}", mt.OCI_CONFIG).to_dict(),
           "layers": []}
    pretty = json.dumps(doc, indent=3).encode()
    assert Manifest.from_bytes(pretty).digest == Digest.from_bytes(pretty)


def test_docker_schema2_and_list_are_read():
    m = {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
         "config": desc(b"{}", mt.DOCKER_CONFIG).to_dict(), "layers": [desc(b"l", mt.DOCKER_LAYER_GZIP).to_dict()]}
    parsed = parse_manifest_or_index(json.dumps(m).encode())
    assert isinstance(parsed, Manifest) and parsed.layer_descriptors()[0].media_type == mt.DOCKER_LAYER_GZIP
    lst = {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": [
        {**desc(b"a", mt.DOCKER_MANIFEST).to_dict(), "platform": {"os": "linux", "architecture": "arm64"}},
        {**desc(b"b", mt.DOCKER_MANIFEST).to_dict(), "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    idx = parse_manifest_or_index(json.dumps(lst).encode())
    assert isinstance(idx, Index)
    assert idx.select(Platform.parse("linux/amd64")).digest == Digest.from_bytes(b"b")
    with pytest.raises(NoMatchingPlatform, match="linux/s390x"):
        idx.select(Platform.parse("linux/s390x"))


def test_platform_variant_rules():
    assert Platform.parse("linux/arm64").matches(Platform.parse("linux/arm64/v8"))
    assert not Platform.parse("linux/arm/v6").matches(Platform.parse("linux/arm/v7"))
    assert not Platform.parse("linux/amd64").matches(Platform.parse("windows/amd64"))


def test_index_select_skips_soci_indexes_and_attestations():
    soci = desc(b"s", mt.OCI_MANIFEST, artifact_type=mt.SOCI_INDEX_V2, platform=Platform.parse("linux/amd64"))
    att = desc(b"t", mt.OCI_MANIFEST, platform=Platform("unknown", "unknown"))
    img = desc(b"i", mt.OCI_MANIFEST, platform=Platform.parse("linux/amd64"))
    idx = Index(mt.OCI_INDEX, (soci, att, img))
    assert idx.select(Platform.parse("linux/amd64")) == img
    # skopeo 1.9 drops artifactType when it copies an index: the annotation still marks a SOCI index
    copied = desc(b"s", mt.OCI_MANIFEST, platform=Platform.parse("linux/amd64"),
                  annotations={"com.amazon.soci.image-manifest-digest": str(img.digest)})
    assert Index(mt.OCI_INDEX, (copied, img)).select(Platform.parse("linux/amd64")) == img


CFG = desc(b"{}", mt.OCI_CONFIG).to_dict()


@pytest.mark.parametrize(
    ("doc", "served_as", "error", "message"),
    [
        (b"not json", None, InvalidManifest, "not valid JSON"),
        (b"[]", None, InvalidManifest, "not a JSON object"),
        ({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": []}, None, InvalidManifest, "missing 'config'"),
        ({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": CFG}, None, InvalidManifest, "'layers'"),
        ({"schemaVersion": 1, "mediaType": mt.OCI_MANIFEST, "config": CFG, "layers": []}, None, InvalidManifest,
         "schemaVersion"),
        ({"schemaVersion": 2, "mediaType": "text/plain", "config": CFG, "layers": []}, None, UnsupportedMediaType,
         "text/plain"),
        ({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": CFG, "layers": []}, mt.DOCKER_MANIFEST,
         InvalidManifest, "served as"),
        ({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {**CFG, "size": -1}, "layers": []}, None,
         InvalidManifest, "invalid size"),
        ({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {**CFG, "digest": "sha256:12"}, "layers": []},
         None, Exception, "digest"),
        ({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {"mediaType": mt.OCI_CONFIG, "size": 2},
          "layers": []}, None, InvalidManifest, "missing 'digest'"),
        (b" " * (5 << 20), None, InvalidManifest, "more than"),
    ],
)
def test_bad_manifests(doc, served_as, error, message):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(error, match=message):
        Manifest.from_bytes(data, served_as)


def test_config_diff_ids():
    cfg = {"architecture": "amd64", "os": "linux",
           "rootfs": {"type": "layers", "diff_ids": [str(Digest.from_bytes(b"x"))]}}
    c = ImageConfig.from_bytes(json.dumps(cfg).encode())
    assert c.diff_ids == (Digest.from_bytes(b"x"),)
    with pytest.raises(InvalidManifest, match="diffID"):
        ImageConfig.from_bytes(json.dumps({**cfg, "rootfs": {"type": "layers", "diff_ids": ["nope"]}}).encode())
    with pytest.raises(InvalidManifest, match="rootfs"):
        ImageConfig.from_bytes(b"{}")
