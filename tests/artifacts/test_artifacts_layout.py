"""Index creation and discovery on OCI image layouts (``oci:PATH``, no registry), under asyncio and trio; the
Hermes hook's order and fallback; the v2 index rewrite of multi-platform and Docker indexes; trace parsing."""

from __future__ import annotations

import anyio
import pytest
from arttools import MIN_LAYER, SPAN, build_small_image

from soci_lab.artifacts import (
    LayoutSource,
    SociArtifacts,
    acreate_soci_index,
    fetch_soci_artifacts,
    index_info,
    soci_enabled_index,
    trace_accesses,
)
from soci_lab.config import Config
from soci_lab.errors import EmptyIndex, HermesError, NoIndex, NoMatchingPlatform, RegistryError, TraceFormatError
from soci_lab.oci import Descriptor, Digest, Index, Manifest, OCILayout, Platform, Reference
from soci_lab.oci import mediatypes as mt
from soci_lab.ztoc.index import (
    ANNOTATION_IMAGE_MANIFEST_DIGEST,
    ANNOTATION_SOCI_INDEX_DIGEST,
    SOCI_INDEX_V1,
    SOCI_INDEX_V2,
    SociIndex,
    index_descriptor_v2,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def modes(v1: bool, v2: bool, **store: object) -> Config:
    return Config.from_dict({"pull_modes": {"soci_v1": {"enable": v1}, "soci_v2": {"enable": v2}},
                             **({"external_artifact_store": store} if store else {})})


async def layout_image(tmp_path):
    ref = f"oci:{tmp_path / 'img'}:v1"
    img = await anyio.to_thread.run_sync(lambda: build_small_image(ref, tmp_path))
    return img, Reference.parse(ref), LayoutSource(OCILayout(tmp_path / "img", create=False))


async def test_v2_and_v1_on_a_layout_are_found_again(tmp_path):
    img, ref, src = await layout_image(tmp_path)
    v1 = await acreate_soci_index(ref, version="v1", span_size=SPAN, min_layer_size=MIN_LAYER)
    [referrer] = await src.referrers(img.manifest, SOCI_INDEX_V1)  # the layout's own referrers list
    assert referrer.digest == v1.digest and referrer.artifact_type == SOCI_INDEX_V1
    got = await fetch_soci_artifacts(src, ref, img.manifest, config=modes(True, True),
                                     local_store=OCILayout(tmp_path / "s1"))
    assert (got.found_via, got.digest) == ("v1", v1.digest)

    v2 = await acreate_soci_index(ref, span_size=SPAN, min_layer_size=MIN_LAYER, prefetch_paths=["/etc/mid.conf"])
    top = Index.from_bytes(src.layout.read_blob(src.layout.resolve("v1").digest))
    assert top.digest == v2.image_index.digest and [d.artifact_type for d in top.manifests] == [None, SOCI_INDEX_V2]
    got = await fetch_soci_artifacts(src, ref, top.select(), config=Config(), local_store=OCILayout(tmp_path / "s2"))
    assert (got.found_via, got.digest) == ("v2", v2.digest)
    pf = got.prefetch_for(img.mid.digest)
    assert pf is not None and pf.span_ids()  # a whole small file: the span holding it
    assert got.prefetch_for(img.big.digest) is None
    # converting again is idempotent: same SOCI index, same image index, nothing appended
    again = await acreate_soci_index(ref, span_size=SPAN, min_layer_size=MIN_LAYER, prefetch_paths=["/etc/mid.conf"])
    assert (again.digest, again.image_index.digest) == (v2.digest, v2.image_index.digest)


async def test_every_layer_under_the_minimum_is_empty_index(tmp_path):
    _img, ref, src = await layout_image(tmp_path)
    before = src.layout.index()
    with pytest.raises(EmptyIndex):
        await acreate_soci_index(ref, span_size=SPAN, min_layer_size=64 << 20)
    assert src.layout.index() == before  # nothing re-tagged


async def test_hermes_hook_comes_first_and_falls_back_only_when_told(tmp_path):
    _img, ref, src = await layout_image(tmp_path)
    v2 = await acreate_soci_index(ref, span_size=SPAN, min_layer_size=MIN_LAYER)
    desc = Index.from_bytes(src.layout.read_blob(v2.image_index.digest)).select()
    calls: list[dict] = []
    canned = SociArtifacts(Descriptor(mt.OCI_MANIFEST, Digest.from_bytes(b"x"), 1), v2.built.index, "hermes")

    async def hermes_ok(**kw):
        calls.append(kw)
        return canned

    async def hermes_down(**kw):
        calls.append(kw)
        raise HermesError("Hermes resolve returned 404: index not ready")

    endpoint = {"enable": True, "endpoint": "http://127.0.0.1:9"}
    store = OCILayout(tmp_path / "s")
    # tried first, even with an explicit digest and both pull modes off
    got = await fetch_soci_artifacts(src, ref, desc, config=modes(False, False, **endpoint), local_store=store,
                                     explicit_index_digest=str(v2.digest), hermes=hermes_ok)
    assert got is canned and calls[0]["image_manifest_desc"] == desc and calls[0]["local_store"] is store
    with pytest.raises(NoIndex, match="error trying Hermes artifact store: Hermes resolve returned 404"):
        await fetch_soci_artifacts(src, ref, desc, config=modes(False, True, **endpoint), local_store=store,
                                   hermes=hermes_down)
    fell_back = await fetch_soci_artifacts(src, ref, desc, config=modes(False, True, fallback_to_registry=True,
                                                                        **endpoint),
                                           local_store=store, hermes=hermes_down)
    assert (fell_back.found_via, fell_back.digest) == ("v2", v2.digest)
    with pytest.raises(NoIndex, match="not ready; registry fallback: both SOCI v1 and v2 pull modes are disabled"):
        await fetch_soci_artifacts(src, ref, desc, config=modes(False, False, fallback_to_registry=True, **endpoint),
                                   local_store=store, hermes=hermes_down)
    # no hook given and none installed: a Hermes miss, handled the same way
    fell_back = await fetch_soci_artifacts(src, ref, desc, config=modes(False, True, fallback_to_registry=True,
                                                                        **endpoint), local_store=store)
    assert fell_back.found_via == "v2"


def test_index_info_on_a_layout(tmp_path):
    ref = f"oci:{tmp_path / 'img'}:v1"
    img = build_small_image(ref, tmp_path, compression="none")
    from soci_lab.artifacts import create_soci_index

    res = create_soci_index(ref, version="v1", span_size=SPAN, min_layer_size=MIN_LAYER)
    doc = index_info(ref).to_json()
    assert doc["index_digest"] == str(res.digest) and doc["found_via"] == "v1"
    for layer, desc in zip(doc["layers"], img.layers, strict=True):
        if layer["indexed"]:
            # an uncompressed tar is cut into fixed spans: the count follows from the size alone
            assert layer["compression"] == "uncompressed"
            assert layer["span_count"] == -(-layer["uncompressed_size"] // SPAN)
        assert layer["size"] == desc.size


# --- pure: the v2 rewrite of an image index ---------------------------------------------------------


def _desc(name: str, media_type: str = mt.OCI_MANIFEST, **kw) -> Descriptor:
    return Descriptor(media_type, Digest.from_bytes(name.encode()), 100 + len(name), **kw)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_v2_rewrite_of_a_docker_manifest_list_replaces_only_this_platform(anyio_backend):
    amd, arm = Platform("linux", "amd64"), Platform("linux", "arm64", "v8")
    old_soci = _desc("old soci amd64", platform=amd, artifact_type=SOCI_INDEX_V2)
    arm_soci = _desc("soci arm64", platform=arm, artifact_type=SOCI_INDEX_V2)
    image_amd = _desc("amd64 image", mt.DOCKER_MANIFEST, platform=amd, annotations={"keep": "me"})
    image_arm = _desc("arm64 image", mt.DOCKER_MANIFEST, platform=arm)
    top = Index(mt.DOCKER_MANIFEST_LIST, (image_amd, image_arm, old_soci, arm_soci), annotations={"a": "b"})
    layer = _desc("layer", mt.DOCKER_LAYER_GZIP)
    soci = SociIndex("v2", [_desc("ztoc", mt.SOCI_LAYER)])
    annotated = Manifest(mt.OCI_MANIFEST, _desc("cfg", mt.OCI_CONFIG), (layer,),
                         annotations={ANNOTATION_SOCI_INDEX_DIGEST: str(soci.digest)})
    out = soci_enabled_index(top, image_amd, annotated, amd, index_descriptor_v2(soci, amd, str(annotated.digest)))
    assert out.media_type == mt.OCI_INDEX and out.annotations == {"a": "b"}
    first, second, third, fourth = out.manifests
    assert (first.digest, first.media_type, first.platform) == (annotated.digest, mt.OCI_MANIFEST, amd)
    assert first.annotations == {ANNOTATION_SOCI_INDEX_DIGEST: str(soci.digest)}  # replaced, as upstream does
    # other platforms untouched; the old amd64 SOCI index is replaced where it stood (upstream's addSociIndexes)
    assert second == image_arm and fourth == arm_soci
    assert (third.digest, third.artifact_type, third.platform) == (soci.digest, SOCI_INDEX_V2, amd)
    assert third.annotations == {ANNOTATION_IMAGE_MANIFEST_DIGEST: str(annotated.digest)}
    assert out.select(amd).digest == annotated.digest and out.select(arm).digest == image_arm.digest
    with pytest.raises(NoMatchingPlatform):
        out.select(Platform("linux", "s390x"))
    bare = soci_enabled_index(None, None, annotated, amd, third)
    assert [d.digest for d in bare.manifests] == [annotated.digest, soci.digest]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_trace_reader_keeps_reads_and_names_bad_lines(anyio_backend):
    text = "t_s,op,path,offset,size\n0,open,/a,0,0\n0.5,read,/a,10,20\n1,read,/b,0,0\n2,readdir,/,0,96\n"
    assert trace_accesses(text) == [("/a", 10, 20)]
    for bad, where in (("", "empty"), ("a,b\n", "line 1"), ("t_s,op,path,offset,size\n0,write,/a,0,1\n", "line 2"),
                       ("t_s,op,path,offset,size\n0,read,/a,-1,1\n", "line 2"),
                       ("t_s,op,path,offset,size\n0,read,/a,1\n", "line 2")):
        with pytest.raises(TraceFormatError, match=where):
            trace_accesses(bad)


async def test_a_failing_step_ends_discovery_with_no_index_and_its_cause(tmp_path):
    img, ref, src = await layout_image(tmp_path)

    class BrokenReferrers(LayoutSource):
        async def referrers(self, subject, artifact_type=None):
            raise RegistryError("GET /v2/x/referrers: 500 Internal Server Error", status=500)

    with pytest.raises(NoIndex, match="cannot fetch list of referrers: GET /v2/x/referrers: 500") as err:
        await fetch_soci_artifacts(BrokenReferrers(src.layout), ref, img.manifest, config=modes(True, False),
                                   local_store=OCILayout(tmp_path / "s"))
    assert isinstance(err.value.__cause__, RegistryError)
    src.layout.delete_blob(img.manifest.digest)  # v2 cannot even read the manifest: no fall-through to v1
    with pytest.raises(NoIndex, match="SOCI v2: could not fetch image manifest"):
        await fetch_soci_artifacts(src, ref, img.manifest, config=modes(True, True),
                                   local_store=OCILayout(tmp_path / "s"))


async def test_a_digest_only_ref_is_converted_without_a_tag_and_the_new_index_stays_reachable(tmp_path):
    img, _ref, src = await layout_image(tmp_path)
    by_digest = Reference.parse(f"oci:{tmp_path / 'img'}@{img.digest}")
    res = await acreate_soci_index(by_digest, span_size=SPAN, min_layer_size=MIN_LAYER)
    assert src.layout.resolve("v1").digest == img.digest  # the tag was not touched
    listed = {d.digest for d in src.layout.index().manifests}
    assert {res.image_index.digest, res.digest} <= listed
    got = await fetch_soci_artifacts(src, by_digest, Index.from_bytes(src.layout.read_blob(res.image_index.digest))
                                     .select(), config=Config(), local_store=OCILayout(tmp_path / "s"))
    assert got.digest == res.digest
