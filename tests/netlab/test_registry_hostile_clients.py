"""The embedded registry against clients that misbehave (issue 20, finding 8).

* abandoned blob uploads: before, each open session held a file descriptor until the registry stopped (at
  256 the process ran out and every push failed with 500); now a session holds none between requests, and
  idle sessions are cancelled;
* ``/v2/_catalog`` with token auth: before, any token, even an anonymous one for no scope, listed every
  repository; now it takes a user's token granted ``registry:catalog:*``;
* a malformed ``Range`` (or another unit): before 416; now ignored, 200 with the whole blob (RFC 9110 §14.2).
"""

from __future__ import annotations

import hashlib
import os
import time

import httpx
import pytest

from soci_lab.netlab import EmbeddedRegistry
from soci_lab.netlab.registry_auth import RegistryAuth
from soci_lab.netlab.registry_store import RepositoryStore


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))  # the registry serves from a thread of this process


def _push(c: httpx.Client, repo: str, data: bytes) -> str:
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = c.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    r = c.put(r.headers["Location"], params={"digest": d}, content=data,
              headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return d


def test_abandoned_uploads_hold_no_file_descriptors(tmp_path):
    with EmbeddedRegistry(root=tmp_path / "r") as reg, httpx.Client(base_url=reg.url, timeout=30) as c:
        _push(c, "warm/up", b"x")
        before = _fds()
        for i in range(300):
            r = c.post("/v2/abandon/me/blobs/uploads/")
            assert r.status_code == 202
            if i % 2:  # half of them got one chunk before being abandoned
                r = c.patch(r.headers["Location"], content=b"partial",
                            headers={"Content-Type": "application/octet-stream"})
                assert r.status_code == 202
        assert _fds() - before < 20
        assert reg.app is not None and reg.app.store.open_uploads == 300
        d = _push(c, "still/works", os.urandom(100_000))
        assert c.head(f"/v2/still/works/blobs/{d}").status_code == 200


def test_idle_upload_sessions_are_cancelled_with_their_files(tmp_path):
    store = RepositoryStore(tmp_path / "r", upload_idle_timeout=60)
    old = store.start_upload("repo/a")
    old.append(b"abc")
    old.release()
    assert old.path.exists()
    assert store.expire_uploads(now=time.monotonic() + 61) == 1
    assert not old.path.exists() and store.open_uploads == 0


@pytest.fixture(scope="module")
def authed(tmp_path_factory):
    with EmbeddedRegistry(root=tmp_path_factory.mktemp("cat"),
                          auth=RegistryAuth(users={"alice": "pw"}, anonymous_pull=True)) as reg:
        with httpx.Client(base_url=reg.url, timeout=30) as c:
            tok = c.get("/token", params={"scope": "repository:secret/app:pull,push"}, auth=("alice", "pw")).json()
            _push(httpx.Client(base_url=reg.url, headers={"Authorization": f"Bearer {tok['token']}"}),
                  "secret/app", b"data")
        yield reg


@pytest.mark.parametrize("who", ["anonymous-no-scope", "anonymous-catalog-scope", "user-repo-scope"])
def test_catalog_needs_a_users_catalog_token(authed, who):
    with httpx.Client(base_url=authed.url, timeout=30) as c:
        if who == "anonymous-no-scope":
            tok = c.get("/token").json()["token"]
        elif who == "anonymous-catalog-scope":
            tok = c.get("/token", params={"scope": "registry:catalog:*"}).json()["token"]
        else:
            tok = c.get("/token", params={"scope": "repository:secret/app:pull"}, auth=("alice", "pw")).json()["token"]
        r = c.get("/v2/_catalog", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 401
        assert "secret/app" not in r.text
        assert 'scope="registry:catalog:*"' in r.headers["WWW-Authenticate"]


def test_catalog_with_a_users_catalog_token(authed):
    with httpx.Client(base_url=authed.url, timeout=30) as c:
        tok = c.get("/token", params={"scope": "registry:catalog:*"}, auth=("alice", "pw")).json()["token"]
        r = c.get("/v2/_catalog", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200 and "secret/app" in r.json()["repositories"]


def test_catalog_with_basic_auth_needs_a_user(tmp_path):
    with EmbeddedRegistry(root=tmp_path / "r",
                          auth=RegistryAuth(users={"alice": "pw"}, scheme="basic", anonymous_pull=True)) as reg:
        assert httpx.get(f"{reg.url}/v2/_catalog").status_code == 401
        assert httpx.get(f"{reg.url}/v2/_catalog", auth=("alice", "pw")).status_code == 200


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=5-2", "items=0-1", "bytes=-", "bytes 0-1", "bytes=0-1-2", "="])
def test_malformed_range_is_ignored(embedded_registry, header):
    data = os.urandom(1000)
    with httpx.Client(base_url=embedded_registry.url, timeout=30) as c:
        d = _push(c, "range/malformed", data)
        r = c.get(f"/v2/range/malformed/blobs/{d}", headers={"Range": header})
        assert r.status_code == 200 and r.content == data
        assert "Content-Range" not in r.headers


def test_valid_ranges_still_work(embedded_registry):
    data = os.urandom(1000)
    with httpx.Client(base_url=embedded_registry.url, timeout=30) as c:
        d = _push(c, "range/valid", data)
        url = f"/v2/range/valid/blobs/{d}"
        r = c.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == data[10:20]
        assert c.get(url, headers={"Range": "bytes=1000-"}).status_code == 416
        assert c.get(url, headers={"Range": "bytes=-0"}).status_code == 416
        r = c.head(url, headers={"Range": "bytes=10-19"})  # only GET honours Range
        assert r.status_code == 200 and r.headers["Content-Length"] == "1000"
