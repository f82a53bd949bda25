"""The client through the netlab shaping proxy's faults, in front of both real registries."""

from __future__ import annotations

import pytest
from remote_helpers import push_image, unique_repo

from soci_lab.config import HTTPConfig
from soci_lab.errors import DigestMismatch
from soci_lab.events import EventRecorder
from soci_lab.oci import OCILayout
from soci_lab.remote import RegistryClient

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]

RETRY = HTTPConfig(max_retries=12, min_wait_msec=1, max_wait_msec=20)


async def test_pull_survives_errors_resets_and_truncation(registry, tmp_path):
    from soci_lab.netlab import ShapingProxy

    async with RegistryClient(registry.url) as direct:
        repo = unique_repo()
        img = await push_image(direct, repo, layer_sizes=(3_000_000, 700_000, 1000))
    spec = "seed=7,http500=0.15,http503=0.1,http429=0.05,reset=0.1,truncate=0.1"
    events = EventRecorder()
    with ShapingProxy(registry.url, faults=spec) as proxy:
        async with RegistryClient(proxy.url, config=RETRY, events=events) as rc:
            layout = OCILayout(tmp_path / "layout")
            for _ in range(3):
                assert (await rc.get_manifest(repo, "v1")).digest == img.manifest.digest
            for desc, data in img.layers:
                await rc.fetch_blob(repo, desc, layout=layout)
                assert layout.read_blob(desc.digest) == data
                for lower in range(0, desc.size, max(1, desc.size // 5)):
                    upper = min(desc.size - 1, lower + 100_000)
                    assert await rc.read_blob_range(repo, desc.digest, lower, upper) == data[lower : upper + 1]
        assert proxy.fault_log, "the proxy should have injected faults"
    retried = [e for e in events.events if e.kind == "http_request" and e.attrs["retry"] > 0]
    assert retried, "faults were injected, so some requests must have been retries"


async def test_corrupted_bytes_are_never_committed(registry, tmp_path):
    from soci_lab.netlab import ShapingProxy

    async with RegistryClient(registry.url) as direct:
        repo = unique_repo()
        img = await push_image(direct, repo, layer_sizes=(500_000,))
    desc, _ = img.layers[0]
    with ShapingProxy(registry.url, faults="seed=3,corrupt=1.0") as proxy:
        async with RegistryClient(proxy.url, config=RETRY) as rc:
            layout = OCILayout(tmp_path / "layout")
            with pytest.raises(DigestMismatch):
                await rc.fetch_blob(repo, desc, layout=layout)
            with pytest.raises(DigestMismatch):
                await rc.get_manifest(repo, str(img.manifest.digest))
    assert list((tmp_path / "layout" / "blobs" / "sha256").iterdir()) == []
    assert list((tmp_path / "layout" / ".ingest").iterdir()) == []


async def test_push_survives_injected_errors(registry):
    """Injected 500/503/429 answers hit POST, PATCH and PUT alike; sessions are restarted, nothing is lost."""
    from remote_helpers import random_bytes

    from soci_lab.netlab import ShapingProxy

    spec = "seed=11,http500=0.2,http503=0.1,http429=0.05"
    blobs = [random_bytes(300_000, seed=71), random_bytes(250_001, seed=72), random_bytes(10, seed=73)]
    events = EventRecorder()
    with ShapingProxy(registry.url, faults=spec) as proxy:
        async with RegistryClient(proxy.url, config=RETRY, events=events) as rc:
            repo = unique_repo()
            descs = [await rc.push_blob(repo, blobs[0]),
                     await rc.push_blob(repo, blobs[1], chunk_size=60_000),
                     await rc.push_blob(repo, blobs[2], chunk_size=4)]
            img = await push_image(rc, repo, layer_sizes=(120_000,), seed=74)
        assert proxy.fault_log, "the proxy should have injected faults"
    failed_patches = [e for e in events.events if e.attrs.get("method") == "PATCH" and not e.ok]
    status_queries = [e for e in events.events if e.attrs.get("method") == "GET" and "/blobs/uploads/" in e.path]
    assert failed_patches and status_queries, "a failed PATCH should be followed by an upload status query"
    async with RegistryClient(registry.url) as direct:
        for desc, data in zip(descs, blobs, strict=True):
            assert await direct.get_blob(repo, desc) == data
        assert (await direct.get_manifest(repo, "v1")).digest == img.manifest.digest


async def test_stalled_bodies_are_noticed_and_resumed(registry, tmp_path):
    """A body that stalls longer than the read timeout is abandoned and resumed from where it stopped."""
    from soci_lab.netlab import ShapingProxy

    async with RegistryClient(registry.url) as direct:
        repo = unique_repo()
        img = await push_image(direct, repo, layer_sizes=(1_500_000,), seed=81)
    desc, data = img.layers[0]
    config = HTTPConfig(max_retries=12, min_wait_msec=1, max_wait_msec=20, response_header_timeout_msec=300)
    events = EventRecorder()
    with ShapingProxy(registry.url, faults="seed=2,stall=0.5:1s") as proxy:
        async with RegistryClient(proxy.url, config=config, events=events) as rc:
            layout = OCILayout(tmp_path / "layout")
            await rc.fetch_blob(repo, desc, layout=layout)
            assert layout.read_blob(desc.digest) == data
            assert await rc.read_blob_range(repo, desc.digest, 1000, 1_200_000) == data[1000:1_200_001]
        assert proxy.fault_log
    timeouts = [e for e in events.events if e.kind == "http_request" and e.error and "Timeout" in e.error]
    assert timeouts, "a stall longer than the read timeout should have been noticed"
