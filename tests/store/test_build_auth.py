"""The store is not an open proxy to private images (issue 20, finding 6).

A registry with token auth holds a private image; the store has credentials for it. A build asked without the
store's build token runs anonymously — it fails and nothing of the image is served; with the token (or through
the store's local unix socket) it is Ready. Before: the anonymous request built the private image with the
store's credentials and its zTOC was served to anyone.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from storetools import PLATFORM, SPAN, make_trees

from soci_lab.errors import InvalidInput, StoreError
from soci_lab.images import build_image
from soci_lab.netlab import EmbeddedRegistry
from soci_lab.netlab.registry_auth import RegistryAuth
from soci_lab.store import ArtifactStore, BuildSettings, request_build
from soci_lab.store.auth import load_or_create_token

TOKEN = "t" * 12 + "-store-build-token"


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedRegistry, str, str]]:
    """A registry whose repositories need alice's credentials, holding one private image (ref, digest ref)."""
    with EmbeddedRegistry(root=tmp_path_factory.mktemp("priv-reg"),
                          auth=RegistryAuth(users={"alice": "s3cret"})) as reg:
        trees = make_trees(tmp_path_factory.mktemp("priv-img"), seed=4242)
        ref = f"{reg.host_port}/private/app:v1"
        res = build_image(trees, ref, creds="alice:s3cret")
        yield reg, ref, f"{reg.host_port}/private/app@{res.digest}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ArtifactStore]:
    settings = BuildSettings(span_size=SPAN, min_layer_size=0, creds="alice:s3cret")
    with ArtifactStore(db=tmp_path / "h.db", platform=PLATFORM, settings=settings, build_token=TOKEN,
                       build_socket=tmp_path / "build.sock") as s:
        yield s


def _resolve(store: ArtifactStore, digest_ref: str) -> httpx.Response:
    return httpx.get(f"{store.url}/v1/indexes/resolve", params={"image": digest_ref, "platform": PLATFORM})


def test_anonymous_build_of_a_private_image_fails_and_serves_nothing(private, store):
    _reg, ref, digest_ref = private
    state = request_build(store.url, ref, wait=True, timeout=60)
    assert state["status"] == "Failed"
    assert state["error"].startswith("anonymous build (no build token):")
    assert len(state["error"].splitlines()) == 1
    assert _resolve(store, digest_ref).status_code == 404
    assert not any(a["status"] == "Ready" for a in httpx.get(f"{store.url}/v1/artifacts").json())


def test_build_with_the_token_uses_the_stores_credentials(private, store):
    _reg, ref, digest_ref = private
    state = request_build(store.url, ref, wait=True, timeout=60, token=TOKEN)
    assert state["status"] == "Ready", state["error"]
    assert state["trusted"] is True
    assert _resolve(store, digest_ref).status_code == 200
    # an untrusted caller is not told about it, and asking again anonymously is not "deduplicated" into it
    assert httpx.get(f"{store.url}/v1/builds").json() == []
    assert httpx.get(f"{store.url}/v1/builds/{state['id']}").status_code == 404
    again = request_build(store.url, ref, wait=True, timeout=60)
    assert again["status"] == "Failed" and again["id"] != state["id"] and not again["deduplicated"]


def test_build_through_the_local_socket_is_trusted(private, store, tmp_path):
    _reg, ref, _digest_ref = private
    sock = tmp_path / "build.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    state = request_build(f"unix:{sock}", ref, wait=True, timeout=60)
    assert state["status"] == "Ready", state["error"]


def test_wrong_token_is_refused_not_downgraded(private, store):
    _reg, ref, _ = private
    r = httpx.post(f"{store.url}/v1/builds", json={"image": ref}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json() == {"error": "invalid build token"}
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    with pytest.raises(StoreError, match=r"refused the build .*401.*invalid build token"):
        request_build(store.url, ref, token="nope-nope-nope-nope")


def test_anonymous_build_cannot_read_local_layouts(store, tmp_path):
    r = httpx.post(f"{store.url}/v1/builds", json={"image": f"oci:{tmp_path}:latest"})
    assert r.status_code == 403
    assert "OCI layouts" in r.json()["error"]


def test_anonymous_builds_can_be_switched_off(private, tmp_path):
    _reg, ref, _ = private
    with ArtifactStore(db=tmp_path / "h.db", platform=PLATFORM, build_token=TOKEN,
                       allow_anonymous_builds=False) as s:
        r = httpx.post(f"{s.url}/v1/builds", json={"image": ref})
        assert r.status_code == 401
        assert "build token" in r.json()["error"]


def test_public_image_builds_anonymously(store, images):
    pushed = images.push("public")
    state = request_build(store.url, pushed.ref, wait=True, timeout=60)
    assert state["status"] == "Ready", state["error"]
    assert state["trusted"] is False


def test_token_file_is_created_private_and_refused_when_readable(tmp_path):
    path = tmp_path / "tok"
    token = load_or_create_token(path)
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == token
    os.chmod(path, 0o644)
    with pytest.raises(InvalidInput, match="readable by others"):
        load_or_create_token(path)
