"""The Hermes client (``FetchHermesArtifacts``, hermes.md §2.3–2.4) against the store and a misbehaving
stand-in: verified fetch into a local layout, wrong blobs refused with nothing stored, per-request
timeouts, fallback to registry discovery on and off, and the cached error when fallback is off."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from storetools import PLATFORM, SPAN, FakeStore, Images, Pushed

from soci_lab.artifacts import create_soci_index, fetch_soci_artifacts
from soci_lab.artifacts.hermes import SociContexts, fetch_hermes_artifacts, image_digest_ref
from soci_lab.config import Config
from soci_lab.errors import HermesError, NoIndex
from soci_lab.oci import Descriptor, OCILayout
from soci_lab.oci import mediatypes as mt
from soci_lab.remote import RegistryClient
from soci_lab.store import ArtifactStore, BuildSettings, request_build
from soci_lab.ztoc.index import SociIndex


@dataclass
class World:
    store: ArtifactStore
    built: Pushed  # Ready in the store, and with a v1 index in the registry
    unbuilt: Pushed  # only a v1 index in the registry
    registry_stats: object


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, images: Images, store_registry) -> Iterator[World]:
    built, unbuilt = images.push(repo="client"), images.push(repo="client")
    for img in (built, unbuilt):
        create_soci_index(img.ref, version="v1", span_size=SPAN, min_layer_size=0)
    db = tmp_path_factory.mktemp("client-store") / "hermes.db"
    with ArtifactStore(db=db, platform=PLATFORM, settings=BuildSettings(span_size=SPAN)) as store:
        assert request_build(store.url, built.ref, wait=True, timeout=120)["status"] == "Ready"
        yield World(store, built, unbuilt, store_registry.stats)


def _config(endpoint: str, *, fallback: bool = False, timeout: int = 5, platform: str = PLATFORM) -> Config:
    return Config.from_dict({
        "pull_modes": {"soci_v1": {"enable": True}},
        "external_artifact_store": {"enable": True, "endpoint": endpoint, "timeout_sec": timeout,
                                    "platform": platform, "fallback_to_registry": fallback},
    })


async def _manifest(img: Pushed) -> Descriptor:
    async with RegistryClient(img.ref) as rc:
        return (await rc.resolve_image(img.ref)).manifest_descriptor


def _empty(layout: OCILayout) -> bool:
    return not list(layout.blobs()) and not layout.index().manifests


def test_fetch_into_a_local_layout_verified(world: World, tmp_path: Path):
    layout = OCILayout(tmp_path / "content")

    async def go():
        desc = await _manifest(world.built)
        return desc, await fetch_hermes_artifacts(ref=world.built.ref, image_manifest_desc=desc,
                                                  config=_config(world.store.url), local_store=layout)

    desc, arts = anyio.run(go)
    assert arts.found_via == "hermes" and arts.version == "v1"
    assert arts.index.subject is not None and arts.index.subject.digest == desc.digest
    for layer in world.built.layers:
        assert arts.ztoc_for(layer).span_count >= 1
    assert any(arts.prefetch_for(layer) is not None for layer in world.built.layers)
    # everything the index lists is in the local store, and re-hashes to its digest
    for d in arts.index.blobs:
        assert len(layout.read_blob(d.digest)) == d.size
    entries = layout.index().manifests
    assert [(e.digest, e.artifact_type) for e in entries] == [(arts.digest, mt.SOCI_INDEX_V1)]
    assert SociIndex.from_bytes(layout.read_blob(arts.digest)).blobs == arts.index.blobs
    assert image_digest_ref(world.built.ref, desc.digest) == world.built.digest_ref


def test_discovery_asks_the_store_first_and_not_the_registry(world: World, tmp_path: Path):
    """With the store enabled, fetch_soci_artifacts' default hook is this client: no referrers, no v2 lookup."""
    layout = OCILayout(tmp_path / "content")

    async def go():
        desc = await _manifest(world.built)
        before = world.registry_stats.requests
        async with RegistryClient(world.built.ref) as rc:
            arts = await fetch_soci_artifacts(rc, world.built.ref, desc, config=_config(world.store.url),
                                              local_store=layout)
        return arts, world.registry_stats.requests - before

    arts, registry_requests = anyio.run(go)
    assert arts.found_via == "hermes"
    assert registry_requests == 0


@pytest.fixture
def fake(world: World) -> Iterator[FakeStore]:
    with FakeStore(world.store.url) as f:
        yield f


def _fetch(world: World, endpoint: str, layout: OCILayout, img: Pushed | None = None, **cfg) -> object:
    img = img or world.built

    async def go():
        desc = await _manifest(img)
        return await fetch_hermes_artifacts(ref=img.ref, image_manifest_desc=desc, config=_config(endpoint, **cfg),
                                            local_store=layout)

    return anyio.run(go)


def _index_of(world: World) -> SociIndex:
    import httpx

    r = httpx.get(world.store.url + "/v1/indexes/resolve", params={"image": world.built.digest_ref})
    return SociIndex.from_bytes(httpx.get(world.store.url + "/v1/blobs/" + r.json()["sociIndex"]["digest"]).content)


def test_store_traffic_is_recorded_like_registry_traffic(world: World, fake: FakeStore, tmp_path: Path):
    """Every store request is an ``http_request`` event (host = the store, via = hermes), failures too."""
    from soci_lab.events import EventRecorder

    index = _index_of(world)
    events = EventRecorder()

    async def go(endpoint: str, layout: OCILayout):
        desc = await _manifest(world.built)
        return await fetch_hermes_artifacts(ref=world.built.ref, image_manifest_desc=desc,
                                            config=_config(endpoint), local_store=layout, events=events)

    anyio.run(go, world.store.url, OCILayout(tmp_path / "c1"))
    reqs = [e for e in events.events if e.kind == "http_request"]
    assert all(e.attrs["via"] == "hermes" and e.attrs["host"] == world.store.url.split("//")[1] for e in reqs)
    by_path = {e.path: e for e in reqs}
    assert by_path["/v1/indexes/resolve"].attrs["status"] == 200
    blob_paths = {f"/v1/blobs/{d.digest}" for d in index.blobs} | {f"/v1/blobs/{index.digest}"}
    assert set(by_path) == blob_paths | {"/v1/indexes/resolve"}
    assert len(reqs) == len(by_path)  # each fetched once
    for d in index.blobs:
        assert by_path[f"/v1/blobs/{d.digest}"].bytes == d.size and by_path[f"/v1/blobs/{d.digest}"].ok
    # a refused blob is still a recorded (successful) request; the refusal is the step's error
    n0 = len(events.events)
    victim = index.blobs[0]
    fake.swap[str(victim.digest)] = b"x" * victim.size
    with pytest.raises(HermesError):
        anyio.run(go, fake.url, OCILayout(tmp_path / "c2"))
    failed = [e for e in events.events[n0:] if e.kind == "ztoc_fetch" and not e.ok]
    assert failed and str(victim.digest) in (failed[0].error or "")
    assert {e.path for e in events.events[n0:] if e.kind == "http_request"} <= blob_paths | {"/v1/indexes/resolve"}
    # a store answering 404 is a failed request
    n0 = len(events.events)
    with pytest.raises(HermesError):
        anyio.run(go, fake.url + "/nowhere", OCILayout(tmp_path / "c3"))
    (resolve,) = [e for e in events.events[n0:] if e.kind == "http_request"]
    assert resolve.attrs["status"] == 404 and not resolve.ok and resolve.error == "HTTP 404"


def test_a_wrong_blob_is_refused_and_nothing_is_stored(world: World, fake: FakeStore, tmp_path: Path):
    index = _index_of(world)
    victim = index.blobs[-1]  # the last blob: the others are fetched and verified first
    fake.swap[str(victim.digest)] = b"x" * victim.size
    layout = OCILayout(tmp_path / "content")
    with pytest.raises(HermesError, match=f"{victim.digest} with content hashing to sha256:"):
        _fetch(world, fake.url, layout)
    assert _empty(layout)
    # a wrong index manifest is refused the same way
    fake.swap = {str(index.digest): index.to_bytes() + b" "}
    with pytest.raises(HermesError, match="SOCI index"):
        _fetch(world, fake.url, layout)
    assert _empty(layout)


def test_platform_is_sent_only_when_configured(world: World, tmp_path: Path):
    """No platform in the config → the store answers for its own platform (the one built here)."""
    arts = _fetch(world, world.store.url, OCILayout(tmp_path / "c1"), platform="")
    assert arts.found_via == "hermes"
    with pytest.raises(HermesError, match=r"Hermes resolve returned 404: .*platform=linux/s390x"):
        _fetch(world, world.store.url, OCILayout(tmp_path / "c2"), platform="linux/s390x")


def test_an_index_for_another_image_is_refused(world: World, fake: FakeStore, tmp_path: Path):
    fake.alias[world.unbuilt.digest_ref] = world.built.digest_ref
    layout = OCILayout(tmp_path / "content")
    with pytest.raises(HermesError, match=f"its subject is {world.built.manifest_digest}"):
        _fetch(world, fake.url, layout, img=world.unbuilt)
    assert _empty(layout)


def test_a_stalled_resolve_times_out(world: World, fake: FakeStore, tmp_path: Path):
    fake.resolve_stall = 5
    layout = OCILayout(tmp_path / "content")
    t0 = time.monotonic()
    with pytest.raises(HermesError, match="resolve timed out after 1s"):
        _fetch(world, fake.url, layout, timeout=1)
    assert time.monotonic() - t0 < 3.5
    assert _empty(layout)


def test_a_blob_stalled_mid_body_times_out(world: World, fake: FakeStore, tmp_path: Path):
    """The deadline covers the whole exchange, body included (Go's http.Client.Timeout), per request."""
    fake.stall = 4
    layout = OCILayout(tmp_path / "content")
    t0 = time.monotonic()
    with pytest.raises(HermesError, match="blob fetch timed out after 1s"):
        _fetch(world, fake.url, layout, timeout=1)
    assert time.monotonic() - t0 < 3.5
    assert _empty(layout)


def test_a_store_that_never_answers_times_out(world: World, tmp_path: Path):
    with socket.socket() as listener:  # accepts connections (backlog) but never reads or answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(HermesError, match="timed out after 1s"):
            _fetch(world, url, OCILayout(tmp_path / "content"), timeout=1)
        assert time.monotonic() - t0 < 3.5


def _discover(world: World, img: Pushed, endpoint: str, layout: OCILayout, fallback: bool,
              contexts: SociContexts | None = None):
    async def go():
        desc = await _manifest(img)
        async with RegistryClient(img.ref) as rc:
            if contexts is None:
                return await fetch_soci_artifacts(rc, img.ref, desc, config=_config(endpoint, fallback=fallback),
                                                  local_store=layout)
            return await contexts.get(rc, img.ref, desc, config=_config(endpoint, fallback=fallback),
                                      local_store=layout)

    return anyio.run(go)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("via_contexts", [False, True])
def test_fallback_to_registry_on_and_off(world: World, tmp_path: Path, via_contexts: bool):
    def contexts() -> SociContexts | None:
        return SociContexts() if via_contexts else None

    layout = OCILayout(tmp_path / "content")
    # the store does not know the image: with fallback the registry's v1 index is used
    arts = _discover(world, world.unbuilt, world.store.url, layout, True, contexts())
    assert arts.found_via == "v1"
    with pytest.raises(NoIndex, match="error trying Hermes artifact store: Hermes resolve returned 404: .*index "
                                      "not ready for image=" + world.unbuilt.digest_ref.replace(".", r"\.")):
        _discover(world, world.unbuilt, world.store.url, OCILayout(tmp_path / "c2"), False, contexts())
    # the store is down
    down = _closed_port()
    assert _discover(world, world.built, down, OCILayout(tmp_path / "c3"), True, contexts()).found_via == "v1"
    with pytest.raises(NoIndex, match="error trying Hermes artifact store: Hermes resolve failed: ConnectError"):
        _discover(world, world.built, down, OCILayout(tmp_path / "c4"), False, contexts())


def test_fetch_error_stays_cached_when_fallback_is_off(world: World, fake: FakeStore, tmp_path: Path):
    fake.blob_status = 500
    contexts = SociContexts()
    with pytest.raises(NoIndex, match="error trying Hermes artifact store: Hermes blob fetch returned 500"):
        _discover(world, world.built, fake.url, OCILayout(tmp_path / "c1"), False, contexts)
    assert fake.hits == {"resolve": 1, "blob": 1}
    assert len(contexts.cached_keys()) == 1
    fake.blob_status = None  # the store is fine again, but this Filesystem remembers the failure
    with pytest.raises(NoIndex, match="Hermes blob fetch returned 500"):
        _discover(world, world.built, fake.url, OCILayout(tmp_path / "c2"), False, contexts)
    assert fake.hits == {"resolve": 2, "blob": 1}  # resolved again, nothing fetched
    # a new instance asks again and succeeds
    arts = _discover(world, world.built, fake.url, OCILayout(tmp_path / "c3"), False, SociContexts())
    assert arts.found_via == "hermes"


def test_fetch_error_falls_back_and_is_forgotten_when_fallback_is_on(world: World, fake: FakeStore, tmp_path: Path):
    fake.blob_status = 500
    contexts = SociContexts()
    arts = _discover(world, world.built, fake.url, OCILayout(tmp_path / "c1"), True, contexts)
    assert arts.found_via == "v1"
    assert contexts.cached_keys() == []
    fake.blob_status = None
    arts = _discover(world, world.built, fake.url, OCILayout(tmp_path / "c2"), True, contexts)
    assert arts.found_via == "hermes"
    # the same context is reused from now on: no more blob requests
    blobs = fake.hits["blob"]
    assert _discover(world, world.built, fake.url, OCILayout(tmp_path / "c2"), True, contexts).found_via == "hermes"
    assert fake.hits["blob"] == blobs
