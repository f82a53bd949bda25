"""Misbehaving servers: what a real registry cannot be made to do on demand.

Every test here uses the ``misbehaving`` aiohttp server (tests/remote/conftest.py) because distribution
and the embedded registry cannot be told to answer 5xx storms, 429 with Retry-After, bodies that break or
end early, ranges answered with the wrong Content-Range or with 200, manifests served with a lying
Content-Type or digest, redirects to signed storage URLs, or a 401 without a challenge.
"""

from __future__ import annotations

import re
import time

import anyio
import pytest
from aiohttp import web
from conftest import FAST
from remote_helpers import random_bytes

from soci_lab.config import HTTPConfig
from soci_lab.errors import (
    AuthenticationError,
    DigestMismatch,
    InvalidManifest,
    RegistryError,
    RegistryUnreachable,
    SizeMismatch,
    TooManyRetries,
)
from soci_lab.events import EventRecorder
from soci_lab.oci import Descriptor, Digest, OCILayout, canonical_json
from soci_lab.oci import mediatypes as mt
from soci_lab.remote import RegistryClient

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]

CFG = canonical_json({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
CFG_D = Digest.from_bytes(CFG)
MANIFEST = canonical_json({
    "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
    "config": {"mediaType": mt.OCI_CONFIG, "digest": CFG_D, "size": len(CFG)}, "layers": [],
})
MANIFEST_D = Digest.from_bytes(MANIFEST)


def manifest_response(body: bytes = MANIFEST, content_type: str = mt.OCI_MANIFEST, **headers: str) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": content_type, **headers})


def _range(request: web.Request, size: int) -> tuple[int, int] | None:
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
    if not m:
        return None
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else size - 1
    return lo, min(hi, size - 1)


def serve_range(request: web.Request, data: bytes) -> web.Response:
    r = _range(request, len(data))
    if r is None:
        return web.Response(body=data, headers={"Accept-Ranges": "bytes"})
    lo, hi = r
    return web.Response(status=206, body=data[lo : hi + 1],
                        headers={"Content-Range": f"bytes {lo}-{hi}/{len(data)}", "Accept-Ranges": "bytes"})


# --- retries -------------------------------------------------------------------------------------------


async def test_5xx_storm_is_retried_then_too_many_retries(misbehaving):
    async def h(request: web.Request) -> web.Response:
        return web.Response(status=503, text="overloaded")

    misbehaving.handler = h
    events = EventRecorder()
    async with RegistryClient(misbehaving.url, config=FAST, events=events) as rc:
        with pytest.raises(TooManyRetries) as exc:
            await rc.get_manifest("some/repo", "v1")
    assert misbehaving.count("GET") == FAST.max_retries + 1 == 5
    msg = str(exc.value)
    assert "/v2/some/repo/manifests/v1" in msg and "HTTP 503" in msg and "5 attempts" in msg and "\n" not in msg
    assert exc.value.status == 503
    assert [e.attrs["retry"] for e in events.events] == [0, 1, 2, 3, 4]
    assert all(e.attrs["status"] == 503 and not e.ok for e in events.events)


async def test_501_is_not_retried(misbehaving):
    async def h(request: web.Request) -> web.Response:
        return web.Response(status=501)

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        with pytest.raises(RegistryError) as exc:
            await rc.get_manifest("some/repo", "v1")
    assert exc.value.status == 501 and misbehaving.count() == 1


async def test_transient_errors_then_success(misbehaving):
    statuses = iter([500, 502, 429])

    async def h(request: web.Request) -> web.Response:
        status = next(statuses, 200)
        return manifest_response() if status == 200 else web.Response(status=status)

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        got = await rc.get_manifest("some/repo", str(MANIFEST_D))
    assert got.digest == MANIFEST_D and misbehaving.count() == 4


async def test_429_retry_after_is_honoured(misbehaving):
    calls = []

    async def h(request: web.Request) -> web.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return manifest_response()

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=HTTPConfig(min_wait_msec=1, max_wait_msec=5000)) as rc:
        await rc.get_manifest("some/repo", "v1")
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.95


async def test_connection_refused_on_loopback_fails_at_once():
    """Nothing listens on that port of this machine: no retry can heal that (issue 16)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    events = EventRecorder()
    async with RegistryClient(f"127.0.0.1:{port}", config=FAST, events=events) as rc:
        with pytest.raises(RegistryUnreachable) as exc:
            await rc.ping()
    assert len(events) == 1
    assert f"connection refused: nothing listens on 127.0.0.1:{port}" in str(exc.value)


async def test_query_secrets_never_reach_errors_or_events(misbehaving):
    async def h(request: web.Request) -> web.Response:
        return web.Response(status=500)

    misbehaving.handler = h
    events = EventRecorder()
    async with RegistryClient(misbehaving.url, config=FAST, events=events) as rc:
        url = f"{misbehaving.url}/storage/blob?X-Amz-Signature=TOPSECRET&token=ALSOSECRET"
        with pytest.raises(TooManyRetries) as exc:
            await rc.get_content_with_range(url, 0, 9)
    text = str(exc.value) + repr(events.events)
    assert "TOPSECRET" not in text and "ALSOSECRET" not in text
    assert "X-Amz-Signature=REDACTED" in str(exc.value)


# --- bodies that break ------------------------------------------------------------------------------------


def breaking_blob_handler(data: bytes, breaks: int, clean: bool):
    """Serve ``data``; the first ``breaks`` responses stop half-way (reset, or a clean early end)."""
    state = {"n": 0}

    async def h(request: web.Request) -> web.StreamResponse:
        state["n"] += 1
        r = _range(request, len(data))
        lo, hi = r if r else (0, len(data) - 1)
        body = data[lo : hi + 1]
        headers = {"Accept-Ranges": "bytes"}
        status = 200
        if r:
            status, headers["Content-Range"] = 206, f"bytes {lo}-{hi}/{len(data)}"
        if state["n"] > breaks:
            return web.Response(status=status, body=body, headers=headers)
        if not clean:
            headers["Content-Length"] = str(len(body))
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        if clean:
            await resp.write_eof()  # chunked body ends early but cleanly (a truncating proxy)
        else:
            request.transport.close()  # connection reset mid-body
        return resp

    return h


async def test_a_range_read_cut_short_is_not_recorded_as_ok(misbehaving):
    """A range read cancelled mid-body (a layer server stopping during a readahead) and one whose sink
    fails: each exchange's event says it failed, with the bytes that did arrive."""
    data = random_bytes(4_000_000, seed=7)
    digest = Digest.from_bytes(data)

    async def slow(request: web.Request) -> web.StreamResponse:
        lo, hi = _range(request, len(data)) or (0, len(data) - 1)
        resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {lo}-{hi}/{len(data)}",
                                                       "Content-Length": str(hi - lo + 1)})
        await resp.prepare(request)
        for i in range(lo, hi + 1, 1 << 20):
            await resp.write(data[i : min(i + (1 << 20), hi + 1)])
            await anyio.sleep(0.2)
        return resp

    misbehaving.handler = slow
    events = EventRecorder()
    got: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        got.append(chunk)

    async def failing_sink(chunk: bytes) -> None:
        raise OSError("disk full")

    async with RegistryClient(misbehaving.url, config=FAST, events=events) as rc:
        with anyio.move_on_after(0.3):
            await rc.fetch_range_into("r/x", digest, 0, len(data) - 1, sink)
        with pytest.raises(OSError, match="disk full"):
            await rc.fetch_range_into("r/x", digest, 0, len(data) - 1, failing_sink)
    cut, failed = [e for e in events.events if e.kind == "http_request"]
    assert not cut.ok and cut.error and 0 < cut.bytes < len(data) and cut.bytes >= sum(map(len, got))
    assert not failed.ok and failed.error == "OSError"


@pytest.mark.parametrize("clean", [False, True], ids=["reset", "truncated"])
async def test_broken_body_is_resumed_with_a_range(misbehaving, tmp_path, clean):
    data = random_bytes(2_000_000, seed=21)
    desc = Descriptor(mt.OCI_LAYER_GZIP, Digest.from_bytes(data), len(data))
    misbehaving.handler = breaking_blob_handler(data, breaks=2, clean=clean)
    layout = OCILayout(tmp_path / "l")
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        await rc.fetch_blob("r/x", desc, layout=layout)
        assert layout.read_blob(desc.digest) == data
        gets = [h.get("Range") for m, _, h in misbehaving.seen if m == "GET"]
        assert gets[0] is None and len(gets) == 3
        assert all(g and g.startswith("bytes=") and not g.startswith("bytes=0-") for g in gets[1:]), gets
        # a ranged read resumes from the first missing byte too
        misbehaving.seen.clear()
        misbehaving.handler = breaking_blob_handler(data, breaks=1, clean=clean)
        assert await rc.read_blob_range("r/x", desc.digest, 1000, 1_500_999) == data[1000:1_501_000]
        assert len(misbehaving.seen) == 2


async def test_endless_breaks_give_up_and_commit_nothing(misbehaving, tmp_path):
    data = random_bytes(500_000, seed=22)
    desc = Descriptor(mt.OCI_LAYER_GZIP, Digest.from_bytes(data), len(data))
    misbehaving.handler = breaking_blob_handler(data, breaks=10**6, clean=False)
    layout = OCILayout(tmp_path / "l")
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        with pytest.raises(TooManyRetries):
            await rc.fetch_blob("r/x", desc, layout=layout)
    assert misbehaving.count("GET") == FAST.max_retries + 1
    assert list((tmp_path / "l" / "blobs" / "sha256").iterdir()) == []
    assert list((tmp_path / "l" / ".ingest").iterdir()) == []


async def test_blob_longer_than_announced_is_refused(misbehaving, tmp_path):
    data = random_bytes(300_000, seed=23)
    desc = Descriptor(mt.OCI_LAYER_GZIP, Digest.from_bytes(data), len(data) - 10)

    async def h(request: web.Request) -> web.Response:
        return web.Response(body=data)

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        with pytest.raises(SizeMismatch):
            await rc.fetch_blob("r/x", desc, layout=OCILayout(tmp_path / "l"))
    assert list((tmp_path / "l" / "blobs" / "sha256").iterdir()) == []


# --- ranges ----------------------------------------------------------------------------------------------


async def test_200_answer_to_a_range_is_skipped_to_lower(misbehaving):
    data = random_bytes(300_000, seed=24)

    async def h(request: web.Request) -> web.Response:
        return web.Response(body=data)  # ignores Range, as some servers do

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        got = await rc.get_content_with_range(f"{misbehaving.url}/v2/r/x/blobs/{Digest.from_bytes(data)}",
                                              200_000, 250_000)
    assert got == data[200_000:250_001]


async def test_wrong_content_range_is_an_error(misbehaving):
    data = random_bytes(1000, seed=25)

    async def h(request: web.Request) -> web.Response:
        return web.Response(status=206, body=data[0:10], headers={"Content-Range": f"bytes 0-9/{len(data)}"})

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        with pytest.raises(RegistryError, match="Content-Range"):
            await rc.get_content_with_range(f"{misbehaving.url}/v2/r/x/blobs/sha256:{'0' * 64}", 100, 109)


async def test_redirects_to_storage_are_followed_and_cached(misbehaving):
    """The registry redirects to a signed storage URL on another origin (here: ``localhost`` vs 127.0.0.1)."""
    data = random_bytes(100_000, seed=26)
    digest = Digest.from_bytes(data)
    storage = misbehaving.url.replace("127.0.0.1", "localhost") + "/storage/blob?sig=SIGNATURE"
    state = {"expired": False}

    async def h(request: web.Request) -> web.Response:
        if request.path.startswith("/v2/"):
            return web.Response(status=307, headers={"Location": storage})
        if state["expired"]:
            return web.Response(status=403, text="signature expired")
        assert "Authorization" not in request.headers  # registry credentials never leak to storage
        return serve_range(request, data)

    misbehaving.handler = h
    events = EventRecorder()
    async with RegistryClient(misbehaving.url, config=FAST, events=events, creds=("u", "p")) as rc:
        url = rc.blob_url("r/x", digest)
        assert await rc.get_content_with_range(url, 0, 99) == data[:100]
        assert misbehaving.count(path_part="/v2/") == 1 and misbehaving.count(path_part="/storage/") == 1
        assert await rc.get_content_with_range(url, 100, 199) == data[100:200]
        assert misbehaving.count(path_part="/v2/") == 1, "the cached storage URL should be used directly"
        assert misbehaving.seen[-1][2].get("Referer") == url
        state["expired"] = True
        with pytest.raises(RegistryError):
            await rc.get_content_with_range(url, 200, 299)  # stale cache → registry again → still 403
        assert misbehaving.count(path_part="/v2/") == 2
        state["expired"] = False
        assert await rc.get_content_with_range(url, 300, 399) == data[300:400]
    assert "SIGNATURE" not in repr(events.events)


# --- manifests that lie ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "expected"),
    [
        (MANIFEST, "text/html", {}, InvalidManifest),  # not a manifest media type
        (MANIFEST, mt.OCI_INDEX, {}, InvalidManifest),  # served as an index, says it is a manifest
        (canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {
            "mediaType": mt.OCI_CONFIG, "digest": CFG_D, "size": len(CFG)}}), mt.OCI_MANIFEST, {},
         InvalidManifest),  # no layers
        (b"{not json", mt.OCI_MANIFEST, {}, InvalidManifest),
        (MANIFEST, mt.OCI_MANIFEST, {"Docker-Content-Digest": str(Digest.from_bytes(b"x"))}, DigestMismatch),
    ],
    ids=["html", "type-mismatch", "no-layers", "not-json", "wrong-announced-digest"],
)
async def test_bad_manifests_are_refused(misbehaving, body, content_type, headers, expected):
    async def h(request: web.Request) -> web.Response:
        return manifest_response(body, content_type, **headers)

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        with pytest.raises(expected) as exc:
            await rc.get_manifest("r/x", "v1")
    assert "\n" not in str(exc.value)


async def test_manifest_by_digest_must_hash_to_it(misbehaving):
    other = MANIFEST.replace(b'"layers":[]', b'"layers":[] ')

    async def h(request: web.Request) -> web.Response:
        return manifest_response(other)

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        with pytest.raises(DigestMismatch):
            await rc.get_manifest("r/x", str(MANIFEST_D))


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "chunked"])
async def test_huge_manifest_is_capped(misbehaving, announce):
    huge = b"{" + b" " * (5 << 20) + b"}"

    async def h(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": mt.OCI_MANIFEST})
        if announce:
            resp.content_length = len(huge)
        await resp.prepare(request)
        for i in range(0, len(huge), 1 << 20):
            await resp.write(huge[i : i + (1 << 20)])
        await resp.write_eof()
        return resp

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        with pytest.raises(InvalidManifest, match="cap"):
            await rc.get_manifest("r/x", "v1")


async def test_index_entry_with_wrong_size(misbehaving):
    index = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": MANIFEST_D, "size": len(MANIFEST) + 1,
         "platform": {"os": "linux", "architecture": "amd64"}}]})

    async def h(request: web.Request) -> web.Response:
        if request.path.endswith(str(MANIFEST_D)):
            return manifest_response()
        if "/blobs/" in request.path:
            return web.Response(body=CFG)
        return manifest_response(index, mt.OCI_INDEX)

    misbehaving.handler = h
    from soci_lab.oci import Platform

    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        with pytest.raises(SizeMismatch):
            await rc.resolve_image(f"{misbehaving.host}/r/x:v1", Platform("linux", "amd64"))


# --- auth oddities -----------------------------------------------------------------------------------------


async def test_401_without_challenge_is_one_clear_error(misbehaving):
    async def h(request: web.Request) -> web.Response:
        return web.Response(status=401, text="go away")

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=FAST, creds=("alice", "hunter2")) as rc:
        with pytest.raises(AuthenticationError) as exc:
            await rc.get_manifest("r/x", "v1")
    msg = str(exc.value)
    assert "without a WWW-Authenticate challenge" in msg and "\n" not in msg and "hunter2" not in msg
    assert misbehaving.count() == 1


async def test_token_refreshed_after_401_and_shared_by_concurrent_requests(misbehaving):
    """The token server rotates tokens; the registry accepts only the newest one."""
    state = {"issued": 0, "valid": None}

    async def h(request: web.Request) -> web.Response:
        if request.path == "/token":
            assert request.query.get("service") == "fake"
            assert "repository:r/x:pull" in request.query.getall("scope")
            await anyio_sleep(0.05)  # slow token server: concurrent challengers must wait for one answer
            state["issued"] += 1
            state["valid"] = f"tok{state['issued']}"
            return web.json_response({"token": state["valid"], "expires_in": 300})
        if request.headers.get("Authorization") != f"Bearer {state['valid']}" or state["valid"] is None:
            return web.Response(status=401, headers={"WWW-Authenticate": (
                f'Bearer realm="{misbehaving.url}/token",service="fake",scope="repository:r/x:pull"'
                + (',error="invalid_token"' if request.headers.get("Authorization") else ""))})
        return manifest_response()

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        await rc.get_manifest("r/x", "v1")
        assert state["issued"] == 1
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(rc.get_manifest, "r/x", "v1")
        assert state["issued"] == 1, "cached token reused by later and concurrent requests"
        state["valid"] = "revoked-elsewhere"  # the registry stops accepting tok1
        await rc.get_manifest("r/x", "v1")  # 401 invalid_token → fresh token → success
        assert state["issued"] == 2


async def anyio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)  # runs on the server's asyncio loop


async def test_whole_request_timeout_retries_slow_answers(misbehaving):
    """``request_timeout_msec`` bounds each attempt: a slow first answer, then a stalled body, are retried."""
    import asyncio

    data = random_bytes(400_000, seed=27)
    state = {"n": 0}

    async def h(request: web.Request) -> web.StreamResponse:
        state["n"] += 1
        if state["n"] == 1:
            await asyncio.sleep(1.0)  # no headers within the timeout
        r = _range(request, len(data))
        lo, hi = r if r else (0, len(data) - 1)
        headers = {"Content-Length": str(hi - lo + 1)}
        status = 200
        if r:
            status, headers["Content-Range"] = 206, f"bytes {lo}-{hi}/{len(data)}"
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        await resp.write(data[lo : lo + 100_000])
        if state["n"] == 2:
            await asyncio.sleep(1.0)  # body stalls past the deadline
        await resp.write(data[lo + 100_000 : hi + 1])
        return resp

    misbehaving.handler = h
    config = HTTPConfig(max_retries=4, min_wait_msec=1, max_wait_msec=5, request_timeout_msec=400)
    async with RegistryClient(misbehaving.url, config=config) as rc:
        assert await rc.get_blob("r/x", Digest.from_bytes(data), len(data)) == data
    assert state["n"] == 3
    ranges = [hdrs.get("Range") for _, _, hdrs in misbehaving.seen]
    assert ranges[0] is None and ranges[1] is None and ranges[2].startswith("bytes=")


async def test_blob_size_falls_back_to_a_ranged_get_when_head_is_refused(misbehaving):
    data = random_bytes(5000, seed=28)

    async def h(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=405)
        return serve_range(request, data)

    misbehaving.handler = h
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        info = await rc.head_blob("r/x", Digest.from_bytes(data))
    assert info.size == 5000 and info.accept_ranges
    assert [(m, hd.get("Range")) for m, _, hd in misbehaving.seen] == [("HEAD", None), ("GET", "bytes=0-1")]
