"""Builds in the store: verified inputs and outputs, the bounded queue that reports when full, in-flight
de-duplication, statuses over time, and building from both kinds of registry."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anyio
import httpx
import pytest
from storetools import PLATFORM, SPAN, STORE_TOKEN, Images, make_trees

from soci_lab.errors import BuildQueueFull, StoreError
from soci_lab.events import detail
from soci_lab.images import build_image
from soci_lab.netlab import ShapingProxy
from soci_lab.oci import mediatypes as mt
from soci_lab.store import ArtifactStore, BuildSettings, StoreClient, StoreDB, request_build
from soci_lab.store.db import ArtifactInfo, ArtifactKey, StoredBlob


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_tampered_layer_fails_the_build_and_nothing_is_kept(store, images):
    img = images.push()
    path = images.blob_file(img.repo, img.layers[1])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, wrong content: the registry serves it as if nothing happened
    state = request_build(store.url, img.ref, wait=True, timeout=120)
    assert state["status"] == "Failed"
    assert img.layers[1] in state["error"] and "digest" in state["error"].lower(), state["error"]
    rows = httpx.get(store.url + "/v1/artifacts").json()
    assert [(r["imageDigestRef"], r["status"], r["indexDigest"]) for r in rows] == [(img.digest_ref, "Failed", "")]
    assert rows[0]["error"] == state["error"]
    assert httpx.get(store.url + "/v1/indexes/resolve", params={"image": img.digest_ref}).status_code == 404
    assert _count(store.db_path, "artifact_blobs") == 0
    assert _count(store.db_path, "artifact_layers") == 0


def test_unknown_image_fails_with_its_error(store, images):
    ref = f"{images.host}/nothing-here:v1"
    state = request_build(store.url, ref, wait=True, timeout=60)
    assert state["status"] == "Failed" and state["error"]
    rows = httpx.get(store.url + "/v1/artifacts").json()
    assert [(r["sourceImageRef"], r["imageDigestRef"], r["status"]) for r in rows] == [(ref, ref, "Failed")]


def test_db_refuses_blobs_that_do_not_match(tmp_path):
    db = StoreDB(tmp_path / "h.db")
    key = ArtifactKey("example.com/a@sha256:" + "1" * 64, "linux/amd64")
    info = ArtifactInfo("example.com/a:v1")
    good = StoredBlob("sha256:" + __import__("hashlib").sha256(b"{}").hexdigest(), mt.OCI_MANIFEST, b"{}")
    bad = StoredBlob("sha256:" + "2" * 64, mt.SOCI_LAYER, b"not the bytes of that digest")
    empty = StoredBlob("sha256:" + "3" * 64, mt.SOCI_LAYER, b"")
    for blob in (bad, empty, StoredBlob("sha256:xyz", mt.SOCI_LAYER, b"x")):
        with pytest.raises(StoreError):
            db.put_ready(key, info, good, [blob], [])
    with pytest.raises(StoreError, match="hashes to"):
        db.put_ready(key, info, bad, [], [])
    db.close()
    for table in ("image_artifacts", "artifact_blobs", "artifact_layers"):
        assert _count(tmp_path / "h.db", table) == 0


@pytest.fixture
def slow_registry(store_registry):
    """The test registry behind a proxy adding 0.3 s to every response (builds take a second or more)."""
    with ShapingProxy(store_registry.url, latency=0.3) as proxy:
        yield proxy.url.removeprefix("http://")


def _slow_store(tmp_path: Path, **kw) -> ArtifactStore:
    return ArtifactStore(db=tmp_path / "h.db", platform=PLATFORM, settings=BuildSettings(span_size=SPAN), **kw)


def test_full_queue_is_reported_not_dropped(tmp_path, images, slow_registry):
    pushed = [images.push(tag=f"q{i}") for i in range(3)]
    refs = [f"{slow_registry}/{p.repo}:q{i}" for i, p in enumerate(pushed)]
    with _slow_store(tmp_path, max_concurrency=1, queue_size=1) as store:
        answers = [httpx.post(store.url + "/v1/builds", json={"image": ref}) for ref in refs]
        codes = [a.status_code for a in answers]
        assert codes[0] == 202 and codes[-1] == 429, [a.text for a in answers]
        full = answers[-1]
        assert full.headers["content-type"] == "application/json" and full.headers["retry-after"] == "1"
        assert "queue is full" in full.json()["error"]

        async def ask() -> None:
            async with StoreClient(store.url) as client:
                with pytest.raises(BuildQueueFull, match="queue is full"):
                    await client.build(refs[-1])

        anyio.run(ask)
        accepted = [a.json()["id"] for a in answers if a.status_code == 202]

        async def finish() -> list[dict]:
            async with StoreClient(store.url) as client:
                return [await client.wait(i, timeout=60) for i in accepted]

        assert [s["status"] for s in anyio.run(finish)] == ["Ready"] * len(accepted)
        # once the queue drained, the refused one is accepted
        assert request_build(store.url, refs[-1], wait=True, timeout=60)["status"] == "Ready"


def test_in_flight_builds_are_deduplicated(tmp_path, images, slow_registry):
    img = images.push(tag="dedup")
    by_tag = f"{slow_registry}/{img.repo}:dedup"
    by_digest = f"{slow_registry}/{img.repo}@{img.manifest_digest}"
    with _slow_store(tmp_path, max_concurrency=2) as store:
        first = httpx.post(store.url + "/v1/builds", json={"image": by_tag}).json()
        again = httpx.post(store.url + "/v1/builds", json={"image": by_tag}).json()
        assert again["id"] == first["id"] and again["deduplicated"] is True and first["deduplicated"] is False
        other = httpx.post(store.url + "/v1/builds", json={"image": by_digest}).json()
        assert other["id"] != first["id"] and other["deduplicated"] is False

        async def finish() -> list[dict]:
            async with StoreClient(store.url) as client:
                return [await client.wait(i, timeout=60) for i in (first["id"], other["id"])]

        a, b = anyio.run(finish)
        assert a["status"] == b["status"] == "Ready"
        assert a["imageDigestRef"] == b["imageDigestRef"] == f"{slow_registry}/{img.repo}@{img.manifest_digest}"
        # one of them built, the other waited for it (same manifest, platform and profile)
        assert {a["sameAs"], b["sameAs"]} in ({None, a["id"]}, {None, b["id"]})
        assert a["indexDigest"] == b["indexDigest"] != ""
        rows = httpx.get(store.url + "/v1/artifacts").json()
        assert len(rows) == 1 and rows[0]["status"] == "Ready"
        listed = httpx.get(store.url + "/v1/builds").json()
        assert sorted(t["id"] for t in listed) == sorted([a["id"], b["id"]])
        # asked again once Ready: nothing is rebuilt
        again = request_build(store.url, by_digest, wait=True, timeout=60)
        assert again["status"] == "Ready" and again["cached"] is True and again["indexDigest"] == a["indexDigest"]


def test_statuses_over_time(tmp_path, images, slow_registry):
    img = images.push(tag="watch")
    ref = f"{slow_registry}/{img.repo}:watch"
    with _slow_store(tmp_path) as store:
        task = httpx.post(store.url + "/v1/builds", json={"image": ref}).json()
        assert task["status"] in ("Queued", "Building")
        seen_task, seen_rows = [task["status"]], []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = httpx.get(f"{store.url}/v1/builds/{task['id']}").json()
            rows = httpx.get(store.url + "/v1/artifacts").json()
            if not seen_task or seen_task[-1] != state["status"]:
                seen_task.append(state["status"])
            status = rows[0]["status"] if rows else None
            if not seen_rows or seen_rows[-1] != status:
                seen_rows.append(status)
            if state["status"] in ("Ready", "Failed"):
                break
            time.sleep(0.05)
        assert seen_task[-1] == "Ready"
        assert [s for s in seen_task if s != "Queued"] == ["Building", "Ready"]
        assert seen_rows == [None, "Building", "Ready"]
        assert state["startedAt"] <= state["finishedAt"]


def test_builds_from_each_registry(tmp_path, registry, store):
    trees = make_trees(tmp_path / "trees", seed=1000)
    ref = registry.ref("store-each", registry.kind)
    res = build_image(trees, ref)
    state = request_build(store.url, ref, wait=True, timeout=120)
    assert state["status"] == "Ready", state
    assert state["imageDigestRef"] == f"{registry.host}/store-each@{res.digest}"
    r = httpx.get(store.url + "/v1/indexes/resolve", params={"image": state["imageDigestRef"]})
    assert r.status_code == 200 and len(r.json()["ztocs"]) == 2


def test_builds_from_an_oci_layout(tmp_path, store):
    trees = make_trees(tmp_path / "trees", seed=2000)
    res = build_image(trees, f"oci:{tmp_path / 'layout'}:v1")
    state = request_build(store.url, f"oci:{tmp_path / 'layout'}:v1", wait=True, timeout=120, token=STORE_TOKEN)
    assert state["status"] == "Ready", state
    assert state["imageDigestRef"] == f"oci:{tmp_path / 'layout'}@{res.digest}"


def test_images_helper_is_unique(images: Images):
    a, b = images.push(), images.push()
    assert not set(a.layers) & set(b.layers)


def test_corrupting_proxy_fails_the_build(tmp_path, images, store_registry):
    """Every response body has a flipped byte on the way: whatever the client tries, nothing is built."""
    img = images.push(tag="corrupt")
    with ShapingProxy(store_registry.url, faults="seed=3,corrupt=1") as proxy, \
            ArtifactStore(db=tmp_path / "h.db", platform=PLATFORM, settings=BuildSettings(span_size=SPAN)) as store:
        ref = f"{proxy.url.removeprefix('http://')}/{img.repo}:corrupt"
        state = request_build(store.url, ref, wait=True, timeout=120)
        assert state["status"] == "Failed" and state["error"]
        assert proxy.fault_log, "the proxy corrupted responses"
        assert [r["status"] for r in httpx.get(store.url + "/v1/artifacts").json()] == ["Failed"]
        assert _count(store.db_path, "artifact_blobs") == 0


def test_build_timeout_fails_the_build(tmp_path, images, slow_registry):
    img = images.push(tag="slow")
    ref = f"{slow_registry}/{img.repo}:slow"
    with _slow_store(tmp_path, build_timeout=0.5) as store:
        state = request_build(store.url, ref, wait=True, timeout=60)
        assert state["status"] == "Failed" and state["error"] == "build timed out after 0.5s"
        rows = httpx.get(store.url + "/v1/artifacts").json()
        assert [(r["sourceImageRef"], r["status"], r["error"]) for r in rows] == [(ref, "Failed", state["error"])]


def test_build_events(tmp_path, images):
    from soci_lab.events import EventRecorder

    img = images.push()
    rec = EventRecorder(strategy="store")
    with ArtifactStore(db=tmp_path / "h.db", platform=PLATFORM, settings=BuildSettings(span_size=SPAN),
                       events=rec) as store:
        assert request_build(store.url, img.ref, wait=True, timeout=120)["status"] == "Ready"
    frame = rec.to_frame()
    builds = frame[frame.kind == "ztoc_build"]
    assert sorted(builds.layer) == sorted(img.layers) and builds.ok.all()
    downloads = frame[frame.kind == "blob_download"]
    assert set(img.layers) <= set(detail(downloads, "digest").dropna()) | set(downloads.layer.dropna())
    assert (frame.kind == "http_request").sum() >= 4  # manifest, config, two layers
