"""The store's HTTP endpoints against hermes.md §2.2, with raw httpx: status codes, JSON shapes, headers."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from storetools import PLATFORM

from soci_lab.oci import mediatypes as mt
from soci_lab.store import request_build
from soci_lab.store.profiles import default_acceleration_key
from soci_lab.ztoc.index import SociIndex

JSON = "application/json"


def _error(r: httpx.Response, status: int, message: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == JSON
    assert r.json() == {"error": message}


def test_healthz_any_method(store):
    for method in ("GET", "POST", "HEAD"):
        r = httpx.request(method, store.url + "/healthz")
        assert r.status_code == 200
        assert r.headers["content-type"] == JSON
        if method != "HEAD":
            assert r.json() == {"status": "ok"}


def test_empty_store(store):
    r = httpx.get(store.url + "/v1/artifacts")
    assert r.status_code == 200 and r.headers["content-type"] == JSON
    assert r.json() == []
    _error(httpx.get(store.url + "/v1/indexes/resolve"), 400, "missing image")
    _error(httpx.get(store.url + "/v1/indexes/resolve", params={"image": ""}), 400, "missing image")
    img = "example.com/app@sha256:" + "0" * 64
    _error(httpx.get(store.url + "/v1/indexes/resolve", params={"image": img}), 404,
           f"index not ready for image={img} platform={PLATFORM}")
    _error(httpx.get(store.url + "/v1/indexes/resolve", params={"image": img, "platform": "linux/s390x"}), 404,
           f"index not ready for image={img} platform=linux/s390x")


@pytest.mark.parametrize("digest", ["sha256:" + "a" * 64, "sha256:zz", "not-a-digest", "md5:abc"])
def test_blob_not_found(store, digest):
    _error(httpx.get(f"{store.url}/v1/blobs/{digest}"), 404, f"blob {digest} not found")


def test_blob_missing_digest(store):
    _error(httpx.get(store.url + "/v1/blobs/"), 400, "missing digest")


def test_ready_artifact_is_served_as_hermes_does(store, images):
    img = images.push()
    state = request_build(store.url, img.ref, wait=True, timeout=120)
    assert state["status"] == "Ready", state
    assert state["imageDigestRef"] == img.digest_ref

    r = httpx.get(store.url + "/v1/indexes/resolve", params={"image": img.digest_ref})
    assert r.status_code == 200 and r.headers["content-type"] == JSON
    doc = r.json()
    assert set(doc) == {"image", "platform", "sociIndex", "ztocs"}
    assert doc["image"] == img.digest_ref and doc["platform"] == PLATFORM
    assert set(doc["sociIndex"]) == {"mediaType", "digest", "size"}
    assert doc["sociIndex"]["mediaType"] == mt.OCI_MANIFEST
    assert doc["sociIndex"]["digest"] == state["indexDigest"]
    # one zTOC per layer (min layer size 0), ordered by layer digest, and only zTOCs
    assert [z["layerDigest"] for z in doc["ztocs"]] == sorted(img.layers)
    assert all(set(z) == {"layerDigest", "ztocDigest", "size"} for z in doc["ztocs"])

    b = httpx.get(f"{store.url}/v1/blobs/{doc['sociIndex']['digest']}")
    assert b.status_code == 200
    assert b.headers["content-type"] == mt.OCI_MANIFEST
    assert b.headers["docker-content-digest"] == doc["sociIndex"]["digest"]
    assert int(b.headers["content-length"]) == len(b.content) == doc["sociIndex"]["size"]
    assert "sha256:" + hashlib.sha256(b.content).hexdigest() == doc["sociIndex"]["digest"]
    index = SociIndex.from_bytes(b.content)
    assert index.version == "v1" and index.subject is not None
    assert index.subject.digest == img.manifest_digest
    assert index.annotations["com.amazon.soci.build-tool-identifier"] == "Hermes Builder v0.1"
    assert index.annotations["hermes.cloudpilot.ai/prefetch-profile"] == "startup-local-v1"
    assert index.annotations["hermes.cloudpilot.ai/background-fetch"] == "disabled"
    assert index.annotations["hermes.cloudpilot.ai/skip-file-verification"] == "true"
    for z in doc["ztocs"]:
        zb = httpx.get(f"{store.url}/v1/blobs/{z['ztocDigest']}")
        assert zb.status_code == 200 and zb.headers["content-type"] == "application/octet-stream"
        assert len(zb.content) == z["size"]
        assert "sha256:" + hashlib.sha256(zb.content).hexdigest() == z["ztocDigest"]
    prefetch = [d for d in index.blobs if d.media_type == mt.SOCI_PREFETCH]
    assert prefetch, "the startup profile adds prefetch artifacts"
    for d in prefetch:
        pb = httpx.get(f"{store.url}/v1/blobs/{d.digest}")
        assert pb.status_code == 200 and pb.headers["content-type"] == mt.SOCI_PREFETCH
        assert d.annotations["hermes.cloudpilot.ai/prefetch-profile"] == "startup-local-v1"
        assert json.loads(d.annotations["hermes.cloudpilot.ai/prefetch-paths"])

    rows = httpx.get(store.url + "/v1/artifacts").json()
    assert len(rows) == 1
    assert rows[0] == {
        "id": 1, "sourceImageRef": img.ref, "imageDigestRef": img.digest_ref,
        "imageManifestDigest": img.manifest_digest, "imageConfigDigest": rows[0]["imageConfigDigest"],
        "platform": PLATFORM, "accelerationKey": default_acceleration_key(), "indexDigest": state["indexDigest"],
        "indexMediaType": mt.OCI_MANIFEST, "indexSize": doc["sociIndex"]["size"], "status": "Ready", "error": "",
    }
    assert rows[0]["imageConfigDigest"].startswith("sha256:")

    # exact string match on image: the tag form, another platform, a digest of another repo are not found
    for params in ({"image": img.ref}, {"image": img.digest_ref, "platform": "linux/s390x"},
                   {"image": img.digest_ref.replace("/app@", "/other@")}):
        assert httpx.get(store.url + "/v1/indexes/resolve", params=params).status_code == 404
    # the profile that was built is found when asked for; the default artifact was never built
    ok = httpx.get(store.url + "/v1/indexes/resolve", params={"image": img.digest_ref, "profile": "startup-local-v1"})
    assert ok.status_code == 200
    assert httpx.get(store.url + "/v1/indexes/resolve",
                     params={"image": img.digest_ref, "profile": "none"}).status_code == 404


def test_resolve_falls_back_to_the_default_artifact(store, images):
    img = images.push()
    state = request_build(store.url, img.ref, profile="none", wait=True, timeout=120)
    assert state["status"] == "Ready", state
    r = httpx.get(store.url + "/v1/indexes/resolve", params={"image": img.digest_ref})
    assert r.status_code == 200
    index = SociIndex.from_bytes(httpx.get(f"{store.url}/v1/blobs/{r.json()['sociIndex']['digest']}").content)
    assert not [d for d in index.blobs if d.media_type == mt.SOCI_PREFETCH]
    assert "hermes.cloudpilot.ai/prefetch-profile" not in index.annotations
    assert httpx.get(store.url + "/v1/artifacts").json()[0]["accelerationKey"] == ""
    assert httpx.get(store.url + "/v1/indexes/resolve",
                     params={"image": img.digest_ref, "profile": "startup-local-v1"}).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "the body must be a JSON object with an image"),
        (b"{}", "missing image"),
        (b'{"image": ""}', "missing image"),
        (b'["x"]', "missing image"),
    ],
)
def test_build_request_refused(store, body, message):
    _error(httpx.post(store.url + "/v1/builds", content=body), 400, message)


def test_build_request_bad_fields(store):
    for doc in ({"image": "Not A Ref"}, {"image": "example.com/a:b", "platform": "linux"},
                {"image": "example.com/a:b", "profile": "fast"}, {"image": "example.com/a:b", "profile": "trace-v1"},
                {"image": "example.com/a:b", "profile": "trace-v1", "trace": "t_s,op,path,offset,size\n"},
                {"image": "example.com/a:b", "profile": "trace-v1", "syncUntil": "soon",
                 "trace": "t_s,op,path,offset,size\n0.1,read,/a,0,1\n"}):
        r = httpx.post(store.url + "/v1/builds", json=doc)
        assert r.status_code == 400, (doc, r.text)
        assert r.headers["content-type"] == JSON and r.json()["error"]
    _error(httpx.get(store.url + "/v1/builds/b999"), 404, "build b999 not found")
    assert httpx.get(store.url + "/v1/artifacts").json() == []


def test_database_errors_are_500_json(store):
    store.db.close()  # every query now fails inside sqlite3
    img = "example.com/app@sha256:" + "0" * 64
    for r in (httpx.get(store.url + "/v1/artifacts"),
              httpx.get(store.url + "/v1/indexes/resolve", params={"image": img}),
              httpx.get(f"{store.url}/v1/blobs/sha256:{'0' * 64}")):
        assert r.status_code == 500, r.text
        assert r.headers["content-type"] == JSON and r.json()["error"]
    assert httpx.get(store.url + "/healthz").status_code == 200
