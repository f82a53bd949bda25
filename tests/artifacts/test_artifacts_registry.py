"""SOCI indexes made by ``index create`` and found again by discovery, against the embedded registry (referrers
API) and distribution 2.8 (no referrers API: the tag-schema fallback). Every test runs against both."""

from __future__ import annotations

import anyio
import pytest
from arttools import MIN_LAYER, SPAN, build_small_image, corrupt_registry_blob, unique_repo

from soci_lab.artifacts import acreate_soci_index, fetch_soci_artifacts
from soci_lab.config import Config
from soci_lab.errors import AllLazyPullModesDisabled, DigestMismatch, NoIndex, NoZtoc
from soci_lab.events import EventRecorder
from soci_lab.oci import Descriptor, Index, Manifest, OCILayout, Platform
from soci_lab.oci import mediatypes as mt
from soci_lab.remote import RegistryClient, list_referrers, referrers_tag
from soci_lab.ztoc.index import (
    ANNOTATION_IMAGE_MANIFEST_DIGEST,
    ANNOTATION_SOCI_INDEX_DIGEST,
    SOCI_INDEX_V1,
    SOCI_INDEX_V2,
)

pytestmark = pytest.mark.anyio


def modes(v1: bool, v2: bool) -> Config:
    cfg = Config()
    cfg.pull_modes.soci_v1.enable = v1
    cfg.pull_modes.soci_v2.enable = v2
    return cfg


async def build(registry, tmp_path, seed: int = 7):
    ref = registry.ref(unique_repo(), "v1")
    return await anyio.to_thread.run_sync(lambda: build_small_image(ref, tmp_path, seed=seed))


async def manifest_of(ref: str) -> Descriptor:
    """The platform manifest REF resolves to now (the rewritten one after a v2 conversion)."""
    async with RegistryClient(ref) as rc:
        return (await rc.resolve_image(ref)).manifest_descriptor


async def fetch(ref: str, desc: Descriptor, store: OCILayout, config: Config, **kw):
    async with RegistryClient(ref) as rc:
        return await fetch_soci_artifacts(rc, ref, desc, config=config, local_store=store, **kw)


def assert_same_ztocs(arts, built, layers) -> None:
    """The fetched zTOCs are, byte for byte, the ones that were built and pushed."""
    assert set(arts.ztocs) == set(built.ztocs) == {str(d.digest) for d in layers}
    for layer, z in built.ztocs.items():
        assert arts.ztoc_for(layer).to_bytes() == z.to_bytes()
        zdesc = arts.ztoc_descriptor_for(layer)
        assert built.blobs[str(zdesc.digest)] == z.to_bytes()


async def test_v2_index_is_pushed_as_a_soci_enabled_image_and_found_again(registry, tmp_path):
    img = await build(registry, tmp_path)
    res = await acreate_soci_index(img.ref, span_size=SPAN, min_layer_size=MIN_LAYER)
    assert res.version == "v2" and set(res.built.skipped) == {str(img.tiny.digest)}
    repo = img.ref.split("/", 1)[1].rsplit(":", 1)[0]
    async with RegistryClient(img.ref) as rc:
        top = await rc.get_manifest(repo, "v1")
        assert isinstance(top.doc, Index) and top.media_type == mt.OCI_INDEX
        assert top.digest == res.image_index.digest
        image_entry, soci_entry = top.doc.manifests
        host = Platform.host()
        assert image_entry.platform is not None and host.matches(image_entry.platform)
        assert image_entry.annotations[ANNOTATION_SOCI_INDEX_DIGEST] == str(res.digest)
        assert soci_entry.digest == res.digest and soci_entry.artifact_type == SOCI_INDEX_V2
        assert soci_entry.media_type == mt.OCI_MANIFEST and soci_entry.platform == image_entry.platform
        assert soci_entry.annotations == {ANNOTATION_IMAGE_MANIFEST_DIGEST: str(image_entry.digest)}
        rewritten = (await rc.get_manifest(repo, str(image_entry.digest))).doc
        assert isinstance(rewritten, Manifest)
        assert rewritten.media_type == mt.OCI_MANIFEST and rewritten.config.media_type == mt.OCI_CONFIG
        assert rewritten.layers == img.layers  # layers are shared, not copied
        assert rewritten.annotations[ANNOTATION_SOCI_INDEX_DIGEST] == str(res.digest)
        soci = (await rc.get_manifest(repo, str(res.digest))).doc
        assert isinstance(soci, Manifest) and soci.config.media_type == SOCI_INDEX_V2 and soci.subject is None

    desc = await manifest_of(img.ref)
    assert desc.digest == image_entry.digest
    store = OCILayout(tmp_path / "content")
    rec = EventRecorder()
    arts = await fetch(img.ref, desc, store, Config(), events=rec)  # upstream defaults: v2 on, v1 off
    assert arts.found_via == "v2" and arts.digest == res.digest and arts.version == "v2"
    assert_same_ztocs(arts, res.built, [img.big, img.mid])
    with pytest.raises(NoZtoc):
        arts.ztoc_for(img.tiny.digest)
    assert [e.digest for e in store.index().manifests] == [res.digest]  # the index is kept, as a root
    kinds = [e.kind for e in rec.events]
    assert kinds.count("index_fetch") == 1
    fetched = sorted(e.layer for e in rec.events if e.kind == "ztoc_fetch")
    assert fetched == sorted([str(img.big.digest), str(img.mid.digest)])
    assert all(e.ok and not e.attrs["local"] for e in rec.events if e.kind == "ztoc_fetch")

    # a second mount of the same image reads its artifacts from the local store
    rec2 = EventRecorder()
    again = await fetch(img.ref, desc, store, Config(), events=rec2)
    assert_same_ztocs(again, res.built, [img.big, img.mid])
    assert all(e.attrs["local"] for e in rec2.events if e.kind in ("ztoc_fetch", "index_fetch"))
    assert not any("/blobs/" in str(e.attrs.get("url", "")) for e in rec2.events if e.kind == "http_request")


async def test_v1_index_is_pushed_as_a_referrer_and_found_again(registry, tmp_path):
    img = await build(registry, tmp_path)
    res = await acreate_soci_index(img.ref, version="v1", span_size=SPAN, min_layer_size=MIN_LAYER)
    assert res.image_index is None and res.annotated_manifest is None
    repo = img.ref.split("/", 1)[1].rsplit(":", 1)[0]
    async with RegistryClient(img.ref) as rc:
        assert (await rc.get_manifest(repo, "v1")).digest == img.digest  # REF is left alone
        soci = (await rc.get_manifest(repo, str(res.digest))).doc
        assert isinstance(soci, Manifest) and soci.subject is not None and soci.subject.digest == img.digest
        found = await list_referrers(rc, repo, img.manifest, SOCI_INDEX_V1)
        assert found.via == ("api" if registry.kind == "embedded" else "tag")
        assert [d.digest for d in found.descriptors] == [res.digest]
        if registry.kind == "distribution":
            assert referrers_tag(img.digest) in await rc.list_tags(repo)

    store = OCILayout(tmp_path / "content")
    arts = await fetch(img.ref, img.manifest, store, modes(v1=True, v2=True))
    assert arts.found_via == "v1" and arts.digest == res.digest and arts.version == "v1"
    assert_same_ztocs(arts, res.built, [img.big, img.mid])
    with pytest.raises(NoIndex, match="v1: disabled"):  # upstream's default: v1 off
        await fetch(img.ref, img.manifest, OCILayout(tmp_path / "other"), Config())


async def test_pull_modes_decide_which_index_is_used(registry, tmp_path):
    img = await build(registry, tmp_path)
    v2 = await acreate_soci_index(img.ref, span_size=SPAN, min_layer_size=MIN_LAYER)
    # a v1 index of the (rewritten) image manifest too, built with other spans so the two differ
    v1 = await acreate_soci_index(img.ref, version="v1", span_size=2 * SPAN, min_layer_size=MIN_LAYER)
    assert v1.digest != v2.digest and v1.image_manifest.digest == v2.annotated_manifest.digest
    desc = await manifest_of(img.ref)

    both = await fetch(img.ref, desc, OCILayout(tmp_path / "a"), modes(v1=True, v2=True))
    assert (both.found_via, both.digest) == ("v2", v2.digest)
    only_v1 = await fetch(img.ref, desc, OCILayout(tmp_path / "b"), modes(v1=True, v2=False))
    assert (only_v1.found_via, only_v1.digest) == ("v1", v1.digest)
    assert_same_ztocs(only_v1, v1.built, [img.big, img.mid])
    assert only_v1.span_size_for(img.big.digest) == 2 * SPAN
    with pytest.raises(AllLazyPullModesDisabled):
        await fetch(img.ref, desc, OCILayout(tmp_path / "c"), modes(v1=False, v2=False))
    explicit = await fetch(img.ref, desc, OCILayout(tmp_path / "d"), modes(v1=False, v2=False),
                           explicit_index_digest=str(v1.digest))
    assert (explicit.found_via, explicit.digest) == ("explicit", v1.digest)


async def test_an_image_without_an_index_is_no_index(registry, tmp_path):
    img = await build(registry, tmp_path)
    store = OCILayout(tmp_path / "content")
    with pytest.raises(NoIndex) as err:
        await fetch(img.ref, img.manifest, store, modes(v1=True, v2=True))
    assert "annotation" in str(err.value) and "no referrer" in str(err.value)
    assert store.index().manifests == ()


async def test_a_corrupted_ztoc_in_the_registry_is_a_digest_error_and_nothing_is_stored(
    registry, tmp_path, tmp_path_factory
):
    img = await build(registry, tmp_path)
    res = await acreate_soci_index(img.ref, span_size=SPAN, min_layer_size=MIN_LAYER)
    bad = res.built.index.ztoc_descriptors()[str(img.big.digest)]
    repo = img.ref.split("/", 1)[1].rsplit(":", 1)[0]
    corrupt_registry_blob(tmp_path_factory.getbasetemp(), registry.kind, repo, str(bad.digest))
    store = OCILayout(tmp_path / "content")
    with pytest.raises(DigestMismatch, match=str(bad.digest)):
        await fetch(img.ref, await manifest_of(img.ref), store, Config())
    assert not store.has(bad.digest)
    assert not store.has(res.digest) and store.index().manifests == ()  # no index without all its blobs
    assert not any(store.ingest_dir.iterdir()) if store.ingest_dir.exists() else True


async def test_a_corrupted_ztoc_in_the_local_store_is_a_digest_error_and_is_fetched_again_next_time(
    registry, tmp_path
):
    img = await build(registry, tmp_path)
    res = await acreate_soci_index(img.ref, span_size=SPAN, min_layer_size=MIN_LAYER)
    desc = await manifest_of(img.ref)
    store = OCILayout(tmp_path / "content")
    await fetch(img.ref, desc, store, Config())
    zdesc = res.built.index.ztoc_descriptors()[str(img.mid.digest)]
    path = store.blob_path(zdesc.digest)
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch, match="local store"):
        await fetch(img.ref, desc, store, Config())
    assert not store.has(zdesc.digest)  # the damaged copy is gone
    healed = await fetch(img.ref, desc, store, Config())
    assert_same_ztocs(healed, res.built, [img.big, img.mid])


async def test_a_corrupted_layer_fails_create_cleanly_and_leaves_ref_alone(registry, tmp_path, tmp_path_factory):
    img = await build(registry, tmp_path)
    repo = img.ref.split("/", 1)[1].rsplit(":", 1)[0]
    corrupt_registry_blob(tmp_path_factory.getbasetemp(), registry.kind, repo, str(img.mid.digest))
    with anyio.fail_after(60):  # the builder thread waiting for that layer must be woken, not left hanging
        with pytest.raises(DigestMismatch, match=str(img.mid.digest)):
            await acreate_soci_index(img.ref, span_size=SPAN, min_layer_size=MIN_LAYER)
    async with RegistryClient(img.ref) as rc:
        assert (await rc.get_manifest(repo, "v1")).digest == img.digest
