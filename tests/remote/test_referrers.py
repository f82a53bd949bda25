"""Referrers against both registries: the API on the embedded registry, the tag schema on distribution 2.8."""

from __future__ import annotations

import pytest
from remote_helpers import push_image, unique_repo

from soci_lab.errors import NoReferrers
from soci_lab.oci import Descriptor, Digest, canonical_json
from soci_lab.oci import mediatypes as mt
from soci_lab.remote import (
    OCIArtifactClient,
    ReferrersCaller,
    RegistryClient,
    list_referrers,
    referrers_tag,
    select_first_policy,
)

pytestmark = pytest.mark.anyio

OTHER_TYPE = "application/vnd.example.signature.v1+json"


async def push_referrer(
    rc: RegistryClient, repo: str, subject: Descriptor, artifact_type: str, note: str
) -> Descriptor:
    """A SOCI-v1-shaped artifact manifest (empty config, one layer blob) referring to ``subject``."""
    blob = await rc.push_blob(repo, f"ztoc of {note}".encode())
    empty = await rc.push_blob(repo, b"{}")
    body = canonical_json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": artifact_type,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": empty.digest, "size": empty.size},
        "layers": [{"mediaType": mt.SOCI_LAYER, "digest": blob.digest, "size": blob.size}],
        "subject": subject.to_dict(), "annotations": {"note": note},
    })
    return await rc.push_manifest(repo, body, mt.OCI_MANIFEST)


async def test_referrers_filtered_by_artifact_type(registry):
    async with RegistryClient(registry.url) as rc:
        repo = unique_repo()
        img = await push_image(rc, repo)
        soci = await push_referrer(rc, repo, img.manifest, mt.SOCI_INDEX_V1, "soci")
        sig = await push_referrer(rc, repo, img.manifest, OTHER_TYPE, "sig")
        result = await list_referrers(rc, repo, img.manifest, mt.SOCI_INDEX_V1)
        assert result.via == ("api" if registry.kind == "embedded" else "tag")
        [found] = result.descriptors
        assert found.digest == soci.digest and found.artifact_type == mt.SOCI_INDEX_V1
        assert found.annotations.get("note") == "soci"
        everything = await rc.referrers(repo, img.manifest)
        assert {d.digest for d in everything} == {soci.digest, sig.digest}
        if registry.kind == "distribution":
            assert referrers_tag(img.manifest.digest) in await rc.list_tags(repo)
        # pushing the same referrer again does not duplicate it
        await push_referrer(rc, repo, img.manifest, mt.SOCI_INDEX_V1, "soci")
        assert len(await rc.referrers(repo, img.manifest, mt.SOCI_INDEX_V1)) == 1


async def test_artifact_client_selects_or_says_none(registry):
    async with RegistryClient(registry.url) as rc:
        repo = unique_repo()
        img = await push_image(rc, repo)
        bare = await push_image(rc, repo, tag="bare", seed=5)
        first = await push_referrer(rc, repo, img.manifest, mt.SOCI_INDEX_V1, "one")
        second = await push_referrer(rc, repo, img.manifest, mt.SOCI_INDEX_V1, "two")
        client = OCIArtifactClient(rc.repository(repo))
        assert isinstance(rc.repository(repo), ReferrersCaller)
        alls = await client.all_referrers(img.manifest)
        assert {d.digest for d in alls} == {first.digest, second.digest}
        assert (await client.select_referrer(img.manifest)).digest == alls[0].digest
        last = await client.select_referrer(img.manifest, mt.SOCI_INDEX_V1, lambda ds: ds[-1])
        assert last.digest == alls[-1].digest
        with pytest.raises(NoReferrers):
            await client.select_referrer(bare.manifest)
        with pytest.raises(NoReferrers):
            await client.select_referrer(img.manifest, OTHER_TYPE)


async def test_artifact_client_over_a_mock_caller():
    d1 = Descriptor(mt.OCI_MANIFEST, Digest.from_bytes(b"1"), 1, artifact_type=mt.SOCI_INDEX_V1)

    class Mock:
        def __init__(self) -> None:
            self.asked: list[str | None] = []

        async def referrers(self, desc: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
            self.asked.append(artifact_type)
            return [d1]

    mock = Mock()
    client = OCIArtifactClient(mock)
    assert await client.select_referrer(d1, policy=select_first_policy) == d1
    assert mock.asked == [mt.SOCI_INDEX_V1]


async def test_referrers_tag_index_is_written_in_go_field_order(distribution_registry):
    """The tag-schema index (distribution 2.8 has no referrers API) is the document oras/upstream would write:
    image-spec's struct order, not sorted keys, so its digest matches theirs."""
    async with RegistryClient(distribution_registry.url) as rc:
        repo = unique_repo()
        img = await push_image(rc, repo)
        await push_referrer(rc, repo, img.manifest, mt.SOCI_INDEX_V1, "soci")
        raw = (await rc.get_manifest(repo, referrers_tag(img.manifest.digest))).data
        assert raw.startswith(b'{"schemaVersion":2,"mediaType":"' + mt.OCI_INDEX.encode() + b'","manifests":[')
