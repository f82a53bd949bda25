"""Hostile clients of the artifact store (issue 20, findings 6 and 8; build point 7).

Each case asserts the documented outcome — refused with one line (JSON ``{"error": …}`` or one stderr
line), or a build that fails with one line — and that nothing was written outside the store's database
and its build directories. The store runs in a background thread (real HTTP, real SQLite); images live in
the embedded registry of ``tests/conftest.py``, a private one with token auth built here.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from soci_lab.images import build_image
from soci_lab.netlab import EmbeddedRegistry
from soci_lab.netlab.background import BackgroundServer
from soci_lab.netlab.registry_auth import RegistryAuth
from soci_lab.oci import Platform
from soci_lab.store import ArtifactStore, BuildSettings, request_build

PLATFORM = str(Platform.host())
TOKEN = "hostile-store-tests-token-0123456789"
CLI = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"


def _tree(root: Path, seed: int) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hello").write_text(f"hello {seed}\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(os.urandom(64 << 10))
    return root


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(ref, digest ref) of an image in a registry that only alice may read."""
    with EmbeddedRegistry(root=tmp_path_factory.mktemp("sec-priv"), auth=RegistryAuth(users={"alice": "pw"})) as reg:
        res = build_image([_tree(tmp_path_factory.mktemp("sec-priv-tree"), 1)], f"{reg.host_port}/team/secret:v1",
                          creds="alice:pw")
        yield f"{reg.host_port}/team/secret:v1", f"{reg.host_port}/team/secret@{res.digest}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ArtifactStore]:
    settings = BuildSettings(span_size=16 << 10, min_layer_size=0, creds="alice:pw")
    with ArtifactStore(db=tmp_path / "store" / "h.db", platform=PLATFORM, settings=settings,
                       build_token=TOKEN) as s:
        yield s


@pytest.fixture
def public_ref(embedded_registry, tmp_path: Path) -> str:
    ref = embedded_registry.ref("security/public", f"t{time.monotonic_ns()}")
    build_image([_tree(tmp_path / "pub", 2)], ref)
    return ref


def _one_line_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/json"
    doc = r.json()
    assert set(doc) == {"error"} and doc["error"] and "\n" not in doc["error"]
    return doc["error"]


# --- finding 6: not an open proxy to private images --------------------------------------------------------


def test_anonymous_client_cannot_make_the_store_read_a_private_image(store, private, tmp_path):
    ref, digest_ref = private
    before = _files(tmp_path)
    state = request_build(store.url, ref, wait=True, timeout=60)
    assert state["status"] == "Failed" and "anonymous build" in state["error"]
    r = httpx.get(f"{store.url}/v1/indexes/resolve", params={"image": digest_ref, "platform": PLATFORM})
    _one_line_error(r, 404)
    assert not any(a["status"] == "Ready" for a in httpx.get(f"{store.url}/v1/artifacts").json())
    assert _files(tmp_path) - before <= {"store/h.db-shm", "store/h.db-wal"}


def test_cli_without_token_is_anonymous_and_says_so(store, private):
    ref, _ = private
    env = {k: v for k, v in os.environ.items() if k != "SOCI_LAB_STORE_TOKEN"}
    out = subprocess.run([sys.executable, "-c", CLI, "store", "build", ref, "--store", store.url, "--wait"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "anonymous build (no build token)" in lines[0]


def test_cli_with_token_file_builds_with_the_stores_credentials(store, private, tmp_path):
    ref, digest_ref = private
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    tok.chmod(0o600)
    out = subprocess.run([sys.executable, "-c", CLI, "store", "build", ref, "--store", store.url, "--wait",
                          "--token-file", str(tok)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("sha256:")
    assert httpx.get(f"{store.url}/v1/indexes/resolve",
                     params={"image": digest_ref, "platform": PLATFORM}).status_code == 200


@pytest.mark.parametrize("header", ["Bearer wrong", "Basic YWxpY2U6cHc=", "Bearer", "bearer" + " x" * 3])
def test_bad_credentials_are_refused_not_downgraded(store, public_ref, header):
    r = httpx.post(f"{store.url}/v1/builds", json={"image": public_ref}, headers={"Authorization": header})
    assert _one_line_error(r, 401) == "invalid build token"
    assert httpx.get(f"{store.url}/v1/builds", headers={"Authorization": f"Bearer {TOKEN}"}).json() == []


@pytest.mark.parametrize("image", ["oci:/etc", "oci:/:latest", "oci:../../..:v1"])
def test_anonymous_client_cannot_make_the_store_read_its_files(store, image):
    r = httpx.post(f"{store.url}/v1/builds", json={"image": image})
    assert "cannot read OCI layouts" in _one_line_error(r, 403)


# --- malformed requests --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "why"), [
    (b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested more than"),
    (b'{"image": "a/b:c", "syncUntil": ' + b"9" * 5000 + b"}", "an integer of 5000 digits"),
    (b'{"image": "a/b:c", "syncUntil": NaN}', "NaN is not JSON"),
    (b"\xff\xfe\x00garbage", "the body must be a JSON object"),
])
def test_hostile_build_bodies_get_one_line(store, body, why):
    r = httpx.post(f"{store.url}/v1/builds", content=body)
    assert why in _one_line_error(r, 400)
    assert httpx.get(f"{store.url}/healthz").status_code == 200


@pytest.mark.parametrize("field", [{"platform": "../../../etc"}, {"platform": "linux/" + "a" * 10_000},
                                   {"image": "x" * 100_000}, {"profile": {"$ne": 1}}])
def test_hostile_build_fields_are_refused(store, field):
    r = httpx.post(f"{store.url}/v1/builds", json={"image": "example.com/a:b", **field})
    _one_line_error(r, 400)


@pytest.mark.parametrize("path", ["/v1/blobs/../../../etc/passwd", "/v1/blobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                                  "/v1/blobs/sha256:" + "0" * 64, "/v1/blobs/" + "a" * 5000])
def test_blob_paths_never_reach_files(store, path):
    r = httpx.get(store.url + path)
    assert r.status_code in (400, 404)
    assert b"root:" not in r.content


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=5-2", "items=0-1", "bytes=0-1,5-6", "bytes=99999999-"])
def test_malformed_range_on_blobs_is_ignored(store, public_ref, header):
    state = request_build(store.url, public_ref, wait=True, timeout=60)
    assert state["status"] == "Ready", state["error"]
    whole = httpx.get(f"{store.url}/v1/blobs/{state['indexDigest']}")
    r = httpx.get(f"{store.url}/v1/blobs/{state['indexDigest']}", headers={"Range": header})
    assert r.status_code == 200 and r.content == whole.content


# --- finding 8: a bogus build does not hold the build slot; a deleted database is noticed -------------------


@pytest.mark.parametrize("ref", ["127.0.0.1:1/nothing/here:v1", "no-such-host.invalid/app:v1"])
def test_unreachable_registry_fails_fast(store, ref):
    """Before: 9 attempts with exponential back-off (~8 s) holding the only build slot; now one: a refused
    loopback connection and a name that does not resolve cannot heal, so the client does not retry them."""
    state = request_build(store.url, ref, wait=True, timeout=60)
    assert state["status"] == "Failed"
    assert ("connection refused" in state["error"] or "cannot resolve host" in state["error"]), state["error"]
    assert "\n" not in state["error"]


def test_unknown_tag_fails_at_once_and_the_slot_is_free(store, embedded_registry, public_ref):
    bogus = request_build(store.url, embedded_registry.ref("security/public", "no-such-tag"), wait=True, timeout=60)
    assert bogus["status"] == "Failed" and "\n" not in bogus["error"]
    good = request_build(store.url, public_ref, wait=True, timeout=60)
    assert good["status"] == "Ready", good["error"]


def test_deleted_database_is_noticed(tmp_path, public_ref):
    db = tmp_path / "store" / "h.db"
    with ArtifactStore(db=db, platform=PLATFORM, settings=BuildSettings(span_size=16 << 10, min_layer_size=0)) as s:
        assert request_build(s.url, public_ref, wait=True, timeout=60)["status"] == "Ready"
        for p in db.parent.iterdir():
            p.unlink()
        assert "was deleted while the store was serving" in _one_line_error(httpx.get(f"{s.url}/healthz"), 500)
        again = request_build(s.url, public_ref, profile="none", wait=True, timeout=60)
        assert again["status"] == "Failed" and "was deleted" in again["error"]
    # nothing claims to be Ready after a restart that a running store had reported Ready
    with ArtifactStore(db=db, platform=PLATFORM) as s:
        assert httpx.get(f"{s.url}/v1/artifacts").json() == []


def test_replaced_database_is_noticed(tmp_path):
    db = tmp_path / "h.db"
    with ArtifactStore(db=db, platform=PLATFORM) as s:
        other = tmp_path / "other.db"
        other.write_bytes(db.read_bytes())
        os.replace(other, db)
        assert "was replaced by another file" in _one_line_error(httpx.get(f"{s.url}/v1/artifacts"), 500)


class _Tarpit(BackgroundServer):
    """A registry that answers every request with a body trickling one byte every half second."""

    kind = "tarpit"

    async def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._trickle)
        return app

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                                           "Content-Length": "100000"})
        await resp.prepare(request)
        try:
            for _ in range(100_000):
                await resp.write(b" ")
                await asyncio.sleep(0.5)
        except (ConnectionError, RuntimeError):
            pass
        return resp


def test_a_tarpit_registry_holds_the_build_slot_for_resolve_timeout_at_most(tmp_path, public_ref):
    """Before: resolving had only the 60-minute build timeout (each request: 300 s), so one build against a
    registry trickling its answer held the only build slot for that long; now ``resolve_timeout``."""
    settings = BuildSettings(span_size=16 << 10, min_layer_size=0, resolve_timeout=2.0)
    with _Tarpit() as pit, ArtifactStore(db=tmp_path / "h.db", platform=PLATFORM, settings=settings) as s:
        bogus = request_build(s.url, f"{pit.url.removeprefix('http://')}/app:v1", wait=True, timeout=120)
        assert bogus["status"] == "Failed" and "took longer than 2s" in bogus["error"]
        good = request_build(s.url, public_ref, wait=True, timeout=120)
        assert good["status"] == "Ready", good["error"]


# --- the build endpoint is no way to reach addresses only the store can reach (SSRF) ---------------------


def test_an_exposed_store_will_not_probe_loopback_private_or_link_local_addresses(tmp_path, embedded_registry,
                                                                                public_ref):
    """A store listening beyond loopback (here 0.0.0.0) takes anonymous builds from other hosts: a build of
    ``127.0.0.1:PORT/…`` would make it connect to a service only its own host can reach. Refused with 403 and
    one line before any connection (the trap port never sees one); named in ``--anonymous-registry``, the
    same loopback registry builds. Before: 202 and a connection to every one of them."""
    import socket

    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(8)
        trap.setblocking(False)
        port = trap.getsockname()[1]
        probes = [f"127.0.0.1:{port}/probe:v1", f"localhost:{port}/probe:v1", f"[::1]:{port}/probe:v1",
                  f"[::ffff:127.0.0.1]:{port}/probe:v1", f"0.0.0.0:{port}/probe:v1", "169.254.169.254/meta:v1",
                  "10.1.2.3:5000/internal:v1", "192.168.0.1/router:v1", "100.64.0.1/cgnat:v1"]
        with ArtifactStore(db=tmp_path / "a.db", host="0.0.0.0", platform=PLATFORM) as s:
            url = f"http://127.0.0.1:{s.port}"
            for ref in probes:
                msg = _one_line_error(httpx.post(f"{url}/v1/builds", json={"image": ref}, timeout=30), 403)
                assert "not a public address" in msg and "--anonymous-registry" in msg, (ref, msg)
            # nothing was queued
            assert httpx.get(f"{url}/v1/builds", timeout=30).json() == []
            time.sleep(0.2)
            with pytest.raises(BlockingIOError):
                trap.accept()
        with ArtifactStore(db=tmp_path / "b.db", host="0.0.0.0", platform=PLATFORM,
                           settings=BuildSettings(span_size=16 << 10, min_layer_size=0),
                           anonymous_registries=[embedded_registry.host]) as s:
            url = f"http://127.0.0.1:{s.port}"
            msg = _one_line_error(httpx.post(f"{url}/v1/builds", json={"image": probes[0]}, timeout=30), 403)
            assert "configured for" in msg and embedded_registry.host in msg, msg
            assert request_build(url, public_ref, wait=True, timeout=60)["status"] == "Ready"
            with pytest.raises(BlockingIOError):
                trap.accept()


def test_a_loopback_store_builds_loopback_registries_anonymously(tmp_path, public_ref):
    """The default store listens on loopback only: whoever reaches it reaches those addresses already, so the
    address rule is not applied (the store, cli and integration rooms build from loopback registries)."""
    with ArtifactStore(db=tmp_path / "h.db", platform=PLATFORM,
                       settings=BuildSettings(span_size=16 << 10, min_layer_size=0)) as s:
        assert request_build(s.url, public_ref, wait=True, timeout=60)["status"] == "Ready"
