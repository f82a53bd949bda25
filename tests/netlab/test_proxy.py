"""The shaping proxy: bandwidth (shared and per connection), latency, each fault kind, seeded
reproducibility, and transparent forwarding in front of both registries.

Timing assertions check the *shaping* (a set rate, an added delay) with generous bounds, never the speed
of the machine: every shaped rate here is far below what loopback does unshaped.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest
from netlab_helpers import OCI_MANIFEST, error_codes, push_blob, push_image, random_bytes, sha256, with_digest

from soci_lab.errors import InvalidFaultSpec
from soci_lab.netlab import EmbeddedRegistry, FaultSpec, RegistryAuth, ShapingProxy

BLOB = random_bytes(3_000_000, 11)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """An embedded registry holding BLOB in repository ``lab/blob``; yields (url, digest)."""
    with EmbeddedRegistry(root=tmp_path_factory.mktemp("upstream")) as reg:
        with httpx.Client(base_url=reg.url) as c:
            digest = push_blob(c, "lab/blob", BLOB)
            push_blob(c, "lab/blob", b"x")  # a 1-byte blob: too short to break
        yield reg.url, digest


def get_timed(url: str, **kw) -> tuple[httpx.Response, float]:
    """GET ``url`` and time it; the client is made first (building its SSL context is not the transfer)."""
    with httpx.Client(timeout=60) as c:
        t0 = time.monotonic()
        r = c.get(url, **kw)
        return r, time.monotonic() - t0


# --- shaping ----------------------------------------------------------------------------------------


def test_bandwidth_is_the_set_rate(upstream):
    url, digest = upstream
    rate = 3_000_000  # bytes/s: BLOB takes 1 s
    with ShapingProxy(url, bandwidth=rate) as proxy:
        r, elapsed = get_timed(f"{proxy.url}/v2/lab/blob/blobs/{digest}")
    assert r.content == BLOB
    measured = len(BLOB) / elapsed
    assert 0.85 * rate <= measured <= 1.15 * rate, f"measured {measured:.0f} B/s for a {rate} B/s setting"
    assert proxy.stats.bytes_sent == len(BLOB)


def test_bandwidth_is_shared_fairly_by_all_connections(upstream):
    url, digest = upstream
    rate = 4_000_000  # two parallel copies of BLOB (6 MB) take 1.5 s together
    done: dict[int, float] = {}
    with ShapingProxy(url, bandwidth=rate) as proxy:
        clients = [httpx.Client(timeout=60) for _ in range(2)]

        def fetch(i: int) -> None:
            r = clients[i].get(f"{proxy.url}/v2/lab/blob/blobs/{digest}")
            assert r.content == BLOB
            done[i] = time.monotonic() - t0

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(2)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in clients:
            c.close()
    total = max(done.values())
    aggregate = 2 * len(BLOB) / total
    assert 0.85 * rate <= aggregate <= 1.15 * rate, f"aggregate {aggregate:.0f} B/s for a {rate} B/s setting"
    # fair: both flows progress together, so they finish close to each other (not one after the other)
    assert min(done.values()) >= 0.8 * total, done


def test_per_connection_cap(upstream):
    url, digest = upstream
    cap = 6_000_000  # BLOB takes 0.5 s; two connections in parallel each still get the full cap
    done: list[float] = []
    with ShapingProxy(url, per_connection=cap) as proxy:

        def fetch() -> None:
            r, elapsed = get_timed(f"{proxy.url}/v2/lab/blob/blobs/{digest}")
            assert r.content == BLOB
            done.append(elapsed)

        threads = [threading.Thread(target=fetch) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for elapsed in done:
        assert 0.85 * cap <= len(BLOB) / elapsed <= 1.15 * cap, done


def test_latency_is_added_to_each_request(upstream):
    url, _ = upstream
    with ShapingProxy(url, latency="150ms") as proxy, httpx.Client(base_url=proxy.url) as c:
        c.get("/v2/")  # connect first
        for _ in range(3):
            t0 = time.monotonic()
            assert c.get("/v2/").status_code == 200
            assert time.monotonic() - t0 >= 0.15


# --- faults -----------------------------------------------------------------------------------------


def test_status_faults(upstream):
    url, digest = upstream
    for kind, status in (("http500", 500), ("http503", 503), ("http429", 429)):
        with ShapingProxy(url, faults=f"seed=1,{kind}=1,retry-after=2s") as proxy:
            r = httpx.get(f"{proxy.url}/v2/lab/blob/blobs/{digest}")
            assert r.status_code == status
            assert r.json()["errors"][0]["code"]
            if status in (429, 503):
                assert r.headers["Retry-After"] == "2"
            assert proxy.stats.faults == {kind: 1}


def test_reset_mid_body(upstream):
    url, digest = upstream
    with ShapingProxy(url, faults="seed=2,reset=1") as proxy:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(f"{proxy.url}/v2/lab/blob/blobs/{digest}")
        assert proxy.stats.faults == {"reset": 1}
        assert 0 < proxy.fault_log[0].at_byte < len(BLOB)


def test_truncate_gives_a_short_body(upstream):
    url, digest = upstream
    with ShapingProxy(url, faults="seed=3,truncate=1") as proxy:
        received = bytearray()
        blob_url = f"{proxy.url}/v2/lab/blob/blobs/{digest}"
        with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", blob_url) as r:
            assert int(r.headers["Content-Length"]) == len(BLOB)
            for chunk in r.iter_raw():
                received += chunk
        cut = proxy.fault_log[0].at_byte
    assert 0 < len(received) == cut < len(BLOB)
    assert bytes(received) == BLOB[:cut]


def test_corrupt_flips_bytes(upstream):
    url, digest = upstream
    with ShapingProxy(url, faults="seed=4,corrupt=1") as proxy:
        r = httpx.get(f"{proxy.url}/v2/lab/blob/blobs/{digest}")
    assert r.status_code == 200
    assert len(r.content) == len(BLOB)
    assert r.content != BLOB
    assert sha256(r.content) != digest
    assert sum(a != b for a, b in zip(r.content, BLOB, strict=True)) == 1


def test_stall_pauses_mid_body(upstream):
    url, digest = upstream
    with ShapingProxy(url, faults="seed=5,stall=1:0.6s") as proxy:
        r, elapsed = get_timed(f"{proxy.url}/v2/lab/blob/blobs/{digest}")
    assert r.content == BLOB
    assert elapsed >= 0.6
    assert proxy.stats.faults == {"stall": 1}


def test_body_faults_spare_responses_without_a_body(upstream):
    url, digest = upstream
    with ShapingProxy(url, faults="seed=6,reset=1") as proxy, httpx.Client(base_url=proxy.url) as c:
        assert c.head(f"/v2/lab/blob/blobs/{digest}").status_code == 200
        assert c.get("/v2/lab/blob/blobs/" + sha256(b"x")).content == b"x"  # 1 byte: nothing to cut
        assert c.get("/v2/lab/blob/blobs/" + sha256(b"absent")).status_code == 404
        assert proxy.stats.faults_injected == 0


def _fault_sequence(url: str, digest: str, spec: str, n: int = 40) -> list[tuple[int, str]]:
    with ShapingProxy(url, faults=spec) as proxy, httpx.Client(base_url=proxy.url) as c:
        for i in range(n):
            path = f"/v2/lab/blob/blobs/{digest}" if i % 4 == 0 else "/v2/"
            try:
                with c.stream("GET", path, headers={"Range": "bytes=0-99999"}) as r:
                    r.read()
            except httpx.HTTPError:
                pass
        return [(f.index, f.kind) for f in proxy.fault_log]


def test_same_seed_same_fault_sequence(upstream):
    url, digest = upstream
    spec = "seed={},http500=0.15,http503=0.1,reset=0.1,truncate=0.1,corrupt=0.1,stall=0.05:10ms"
    first = _fault_sequence(url, digest, spec.format(7))
    assert first == _fault_sequence(url, digest, spec.format(7))
    assert first != _fault_sequence(url, digest, spec.format(8))
    assert {k for _, k in first} & {"http500", "http503"}  # status faults happened on some of the 40


def test_fault_rate_is_a_probability_per_response(upstream):
    url, _ = upstream
    with ShapingProxy(url, faults="seed=9,http500=0.25") as proxy, httpx.Client(base_url=proxy.url) as c:
        statuses = [c.get("/v2/").status_code for _ in range(400)]
    n500 = statuses.count(500)
    assert 60 <= n500 <= 140  # mean 100, sd ~8.7
    assert proxy.stats.faults == {"http500": n500}


def test_fault_spec_parsing():
    spec = FaultSpec.parse("seed=7,http500=0.1,reset=0.05,truncate=0.05,corrupt=0.01,stall=0.02:2s")
    assert (spec.seed, spec.http500, spec.stall, spec.stall_duration) == (7, 0.1, 0.02, 2.0)
    assert FaultSpec.parse(str(spec)) == spec
    assert FaultSpec.parse("").total == 0
    for bad in ("http500=1.5", "bogus=0.1", "reset", "stall=x:1s", "http500=0.7,reset=0.7", "seed=abc"):
        with pytest.raises(InvalidFaultSpec):
            FaultSpec.parse(bad)


# --- forwarding -------------------------------------------------------------------------------------


def test_push_and_pull_through_the_proxy(registry):
    """Works in front of distribution too: chunked upload Locations are rewritten to the proxy."""
    repo = f"via/{uuid.uuid4().hex[:8]}"
    data = random_bytes(500_000, 12)
    with ShapingProxy(registry.url) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as c:
        r = c.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202
        location = r.headers["Location"]
        assert not location.startswith(registry.url)
        r = c.patch(location, content=data[:200_000], headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        r = c.put(with_digest(r.headers["Location"], sha256(data)), content=data[200_000:])
        assert r.status_code == 201, r.text
        digest, body = push_image(c, repo, "v1", [data])
        r = c.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.content == body and r.headers["Docker-Content-Digest"] == digest
        r = c.get(f"/v2/{repo}/blobs/{sha256(data)}", headers={"Range": "bytes=1000-1999"})
        assert r.status_code == 206 and r.content == data[1000:2000]
        assert c.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
        r = c.get(f"/v2/{repo}/manifests/absent", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 404 and error_codes(r) == ["MANIFEST_UNKNOWN"]
    assert proxy.stats.requests >= 8
    assert proxy.stats.bytes_received >= len(data)


def test_token_auth_through_the_proxy(tmp_path):
    with EmbeddedRegistry(root=tmp_path, auth=RegistryAuth(users={"u": "p"})) as reg, ShapingProxy(reg.url) as proxy:
        r = httpx.get(f"{proxy.url}/v2/")
        assert r.status_code == 401
        challenge = r.headers["WWW-Authenticate"]
        assert f'realm="{proxy.url}/token"' in challenge
        token = httpx.get(f"{proxy.url}/token", auth=("u", "p")).json()["token"]
        assert httpx.get(f"{proxy.url}/v2/", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_upstream_down_is_a_502():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ShapingProxy(f"http://127.0.0.1:{port}") as proxy:
        r = httpx.get(f"{proxy.url}/v2/")
    assert r.status_code == 502
    assert proxy.stats.upstream_errors == 1


def test_uploads_are_shaped_too(upstream):
    url, _ = upstream
    data = BLOB[:1_500_000]
    rate = 3_000_000  # 0.5 s for the upload
    with ShapingProxy(url, bandwidth=rate) as proxy, httpx.Client(base_url=proxy.url, timeout=60) as c:
        location = c.post("/v2/lab/upload/blobs/uploads/").headers["Location"]
        t0 = time.monotonic()
        r = c.put(with_digest(location, sha256(data)), content=data)
        elapsed = time.monotonic() - t0
    assert r.status_code == 201
    # The cap is what is being tested: an unshaped upload on loopback takes milliseconds. The lower
    # bound only catches gross over-throttling; load on the shared cores can only slow the upload.
    assert 0.5 * rate <= len(data) / elapsed <= 1.15 * rate, elapsed
    assert proxy.stats.bytes_received == len(data)


def test_upstream_breaking_mid_body_is_passed_on(upstream):
    """A proxy in front of a truncating proxy: its client sees the short body too, not a hang."""
    url, digest = upstream
    with ShapingProxy(url, faults="seed=1,truncate=1") as inner, ShapingProxy(inner.url) as outer:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{outer.url}/v2/lab/blob/blobs/{digest}", timeout=10)
        assert outer.stats.upstream_errors == 1


def test_clients_going_away_mid_body_are_not_errors(upstream, caplog):
    import logging
    import socket

    url, digest = upstream
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    with ShapingProxy(url, bandwidth="20MB/s") as proxy:
        for base in (url, proxy.url):
            host, port = base.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port))) as s:
                s.sendall(f"GET /v2/lab/blob/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(0.3)
        assert httpx.get(f"{proxy.url}/v2/").status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
