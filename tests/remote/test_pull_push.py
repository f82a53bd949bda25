"""Push and pull round trips against both registries (embedded and distribution), under asyncio and trio."""

from __future__ import annotations

import anyio
import pytest
from remote_helpers import config_bytes, manifest_bytes, push_image, random_bytes, stored_blob_files, unique_repo

from soci_lab.errors import (
    DigestMismatch,
    InvalidDigest,
    InvalidReference,
    NotFound,
    RangeNotSatisfiable,
    RegistryError,
    TruncatedBody,
    UnsupportedMediaType,
)
from soci_lab.events import EventRecorder
from soci_lab.oci import Digest, Index, Manifest, OCILayout, Platform, Reference, canonical_json
from soci_lab.oci import mediatypes as mt
from soci_lab.remote import RegistryClient

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]


async def test_monolithic_push_and_pull_round_trip(registry, tmp_path):
    events = EventRecorder()
    async with RegistryClient(registry.url, events=events) as rc:
        await rc.ping()
        repo = unique_repo()
        img = await push_image(rc, repo, layer_sizes=(1_500_000, 10))
        fetched = await rc.get_manifest(repo, "v1")
        assert fetched.data == img.manifest_bytes
        assert fetched.digest == img.manifest.digest and fetched.media_type == mt.OCI_MANIFEST
        assert isinstance(fetched.doc, Manifest)
        assert await rc.head_manifest(repo, "v1") == img.manifest
        by_digest = await rc.get_manifest(repo, str(img.manifest.digest))
        assert by_digest.data == img.manifest_bytes
        layout = OCILayout(tmp_path / "layout")
        for desc, data in img.layers:
            assert (await rc.head_blob(repo, desc.digest)).size == len(data)
            assert await rc.get_blob(repo, desc) == data
            await rc.fetch_blob(repo, desc, layout=layout)
            assert layout.read_blob(desc.digest) == data
            await rc.fetch_blob(repo, desc, path=tmp_path / "one.blob")
            assert (tmp_path / "one.blob").read_bytes() == data
        assert await rc.list_tags(repo) == ["v1"]
        assert await rc.blob_exists(repo, img.layers[0][0].digest)
        assert not await rc.blob_exists(repo, Digest.from_bytes(b"never pushed"))
    # every request was recorded as one http_request event, with method, status, path and retry number
    frame = events.to_frame()
    assert set(frame["kind"]) == {"http_request", "blob_download"}
    assert (frame["kind"] == "blob_download").sum() == 2 * len(img.layers)  # fetch_blob to layout and to file
    frame = frame[frame["kind"] == "http_request"]
    assert len(frame) == rc.requests
    assert frame[["method", "status", "retry"]].notna().all().all() and "range" in frame.columns
    big = frame[frame["path"].str.endswith(str(img.layers[0][0].digest))]
    assert big["bytes"].max() == 1_500_000


async def test_chunked_upload_and_mount(registry):
    async with RegistryClient(registry.url) as rc:
        repo, other = unique_repo(), unique_repo()
        data = random_bytes(700_001, seed=7)
        desc = await rc.push_blob(repo, data, chunk_size=100_000)
        assert desc.size == len(data) and desc.digest == Digest.from_bytes(data)
        assert await rc.get_blob(repo, desc) == data
        # cross-repository mount: the registry links the blob without an upload
        before = rc.requests
        assert await rc.mount_blob(other, desc.digest, repo)
        assert rc.requests - before == 1
        assert await rc.get_blob(other, desc) == data
        # push with mount_from into a third repo is a mount too; from a repo without it, a fallback upload
        third = unique_repo()
        assert (await rc.push_blob(third, data, mount_from=repo)).digest == desc.digest
        fresh = random_bytes(5000, seed=8)
        fourth = unique_repo()
        d4 = await rc.push_blob(fourth, fresh, mount_from=repo)  # repo lacks it: 202, bytes uploaded
        assert await rc.get_blob(fourth, d4) == fresh


async def test_push_blob_from_file_chunked(registry, tmp_path):
    data = random_bytes(333_333, seed=9)
    path = tmp_path / "blob"
    path.write_bytes(data)
    async with RegistryClient(registry.url) as rc:
        repo = unique_repo()
        desc = await rc.push_blob(repo, path, chunk_size=64 * 1024)
        assert await rc.get_blob(repo, desc) == data
        repo2 = unique_repo()
        assert (await rc.push_blob(repo2, path)).digest == desc.digest
        with pytest.raises(DigestMismatch):
            await rc.push_blob(repo2, path, digest=Digest.from_bytes(b"other"))


async def test_resolve_image_through_an_index(registry):
    async with RegistryClient(registry.url) as rc:
        repo = unique_repo()
        img = await push_image(rc, repo, tag="amd64")
        arm = await push_image(rc, repo, tag="arm64", seed=2)
        index = canonical_json({
            "schemaVersion": 2, "mediaType": mt.OCI_INDEX,
            "manifests": [
                {**arm.manifest.to_dict(), "platform": {"os": "linux", "architecture": "arm64"}},
                {**img.manifest.to_dict(), "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        })
        await rc.push_manifest(repo, index, mt.OCI_INDEX, "multi")
        resolved = await rc.resolve_image(f"{registry.host}/{repo}:multi", Platform("linux", "amd64"))
        assert resolved.manifest_descriptor == img.manifest
        assert isinstance(resolved.index, Index) and resolved.index_descriptor.digest == Digest.from_bytes(index)
        assert len(resolved.config.diff_ids) == 1 and resolved.layers[0].digest == img.layers[0][0].digest
        arm_resolved = await rc.resolve_image(Reference.parse(f"{registry.host}/{repo}:multi"),
                                              Platform("linux", "arm64"))
        assert arm_resolved.manifest_descriptor == arm.manifest


async def test_ranged_reads(registry):
    async with RegistryClient(registry.url) as rc:
        repo = unique_repo()
        data = random_bytes(100_000, seed=3)
        desc = await rc.push_blob(repo, data)
        assert await rc.read_blob_range(repo, desc.digest, 0, 0) == data[:1]
        assert await rc.read_blob_range(repo, desc.digest, 1000, 54_321) == data[1000:54_322]
        assert await rc.read_blob_range(repo, desc.digest, 99_999, 99_999) == data[-1:]
        url = rc.blob_url(repo, desc.digest)
        assert await rc.get_content_with_range(url, 10, 19) == data[10:20]
        # a range running past the end: the registry clamps it, and the short answer is an error, not a crash
        with pytest.raises(TruncatedBody):
            await rc.get_content_with_range(url, 99_990, 100_100)
        with pytest.raises(RangeNotSatisfiable):
            await rc.get_content_with_range(url, 200_000, 200_010)

        # streaming into a sink, as the parallel-pull chunk downloader does
        got = bytearray()

        async def sink(chunk: bytes) -> None:
            got.extend(chunk)

        assert await rc.fetch_range_into(repo, desc.digest, 500, 70_499, sink) == 70_000
        assert bytes(got) == data[500:70_500]


async def test_concurrent_ranged_reads_reassemble_the_blob(registry):
    async with RegistryClient(registry.url) as rc:
        repo = unique_repo()
        data = random_bytes(1_000_003, seed=4)
        desc = await rc.push_blob(repo, data)
        chunk = 131_072
        parts: dict[int, bytes] = {}

        async def one(lower: int) -> None:
            parts[lower] = await rc.read_blob_range(repo, desc.digest, lower, min(lower + chunk, len(data)) - 1)

        async with anyio.create_task_group() as tg:
            for lower in range(0, len(data), chunk):
                tg.start_soon(one, lower)
        assert b"".join(parts[k] for k in sorted(parts)) == data


async def test_not_found_and_bad_input(registry):
    async with RegistryClient(registry.url) as rc:
        repo = unique_repo()
        with pytest.raises(NotFound) as exc:
            await rc.get_manifest(repo, "nope")
        assert "\n" not in str(exc.value) and exc.value.status == 404
        with pytest.raises(NotFound):
            await rc.get_blob(repo, Digest.from_bytes(b"missing"))
        with pytest.raises(NotFound):
            await rc.head_blob(repo, Digest.from_bytes(b"missing"))
        with pytest.raises(InvalidReference):
            await rc.get_manifest("UPPER/case", "v1")
        with pytest.raises(InvalidDigest):
            await rc.get_blob(repo, "sha256:abc")
        with pytest.raises(InvalidReference):
            RegistryClient("")
        # pushing: a manifest whose blobs are missing is refused by the registry with one clear error
        cfg = config_bytes(0)
        cdesc = await rc.push_blob(repo, cfg)
        missing = Digest.from_bytes(b"layer never pushed")
        from soci_lab.oci import Descriptor

        body = manifest_bytes(cdesc, [Descriptor(mt.OCI_LAYER_GZIP, missing, 18)])
        with pytest.raises(RegistryError) as exc:
            await rc.push_manifest(repo, body, mt.OCI_MANIFEST, "broken")
        assert exc.value.status in (400, 404) and "\n" not in str(exc.value)
        with pytest.raises(UnsupportedMediaType):
            await rc.push_manifest(repo, body, "application/json", "x")
        with pytest.raises(DigestMismatch):
            await rc.push_manifest(repo, body, mt.OCI_MANIFEST, str(Digest.from_bytes(b"other")))


async def test_corrupted_stored_blob_commits_nothing(registry, tmp_path, tmp_path_factory):
    """Flip bytes of a blob inside the registry's own storage: the registry serves them; the client refuses."""
    async with RegistryClient(registry.url) as rc:
        repo = unique_repo()
        data = random_bytes(400_000, seed=11)
        desc = await rc.push_blob(repo, data)
        files = stored_blob_files(tmp_path_factory.getbasetemp(), registry.kind, desc.digest)
        assert files, "could not find the blob in the registry's storage"
        for f in files:
            with open(f, "r+b") as fh:
                fh.seek(1234)
                fh.write(b"\x00corrupt\x00")
        layout = OCILayout(tmp_path / "layout")
        with pytest.raises(DigestMismatch):
            await rc.fetch_blob(repo, desc, layout=layout)
        assert list((tmp_path / "layout" / "blobs" / "sha256").iterdir()) == []
        assert not any((tmp_path / "layout" / ".ingest").iterdir())
        with pytest.raises(DigestMismatch):
            await rc.fetch_blob(repo, desc, path=tmp_path / "out")
        assert [p.name for p in tmp_path.iterdir()] == ["layout"]
        with pytest.raises(DigestMismatch):
            await rc.get_blob(repo, desc)


async def test_tag_list_pagination_and_blob_download_event(registry, tmp_path):
    events = EventRecorder()
    async with RegistryClient(registry.url, events=events) as rc:
        repo = unique_repo()
        img = await push_image(rc, repo, tag="t0")
        for i in range(1, 5):
            await rc.push_manifest(repo, img.manifest_bytes, mt.OCI_MANIFEST, f"t{i}")
        before = rc.requests
        assert sorted(await rc.list_tags(repo, page_size=2)) == [f"t{i}" for i in range(5)]
        if registry.kind == "embedded":  # distribution 2.8 ignores n= on tag lists and answers in one page
            assert rc.requests - before >= 3, "five tags two per page need at least three requests"
        desc, data = img.layers[0]
        await rc.fetch_blob(repo, desc, path=tmp_path / "b")
    [download] = [e for e in events.events if e.kind == "blob_download"]
    assert download.ok and download.bytes == len(data) and download.layer == str(desc.digest)


async def test_empty_blob_round_trip(registry, tmp_path):
    async with RegistryClient(registry.url) as rc:
        repo = unique_repo()
        desc = await rc.push_blob(repo, b"")
        assert desc.size == 0 and desc.digest == Digest.from_bytes(b"")
        assert await rc.get_blob(repo, desc) == b""
        layout = OCILayout(tmp_path / "l")
        await rc.fetch_blob(repo, desc, layout=layout)
        assert layout.read_blob(desc.digest) == b""
        chunked = unique_repo()
        assert (await rc.push_blob(chunked, b"", chunk_size=1024)).digest == desc.digest
