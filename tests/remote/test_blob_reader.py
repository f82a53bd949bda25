"""The registry's one seam for reading blobs (``remote.blobs.BlobReader``), as the lazy and eager rooms use it.

The server is the ``misbehaving`` aiohttp app because a real registry cannot be made to redirect blob GETs to
storage on another origin; it serves the blob bytes honestly (ranges included) behind that redirect.
"""

from __future__ import annotations

import pytest
from aiohttp import web
from conftest import FAST
from remote_helpers import random_bytes

from soci_lab.lazy import RegistryRangeFetcher
from soci_lab.oci import Digest
from soci_lab.remote import RegistryClient
from soci_lab.remote.blobs import BlobReader
from soci_lab.unpack import LayerSpec, RegistryBlobSource

pytestmark = pytest.mark.anyio


def _redirecting(misbehaving, data: bytes) -> None:  # type: ignore[no-untyped-def]
    storage = misbehaving.url.replace("127.0.0.1", "localhost") + "/storage/blob?sig=SIGNATURE"

    async def h(request: web.Request) -> web.Response:
        if request.path.startswith("/v2/"):
            if request.method == "HEAD":
                return web.Response(headers={"Content-Length": str(len(data)), "Accept-Ranges": "bytes",
                                             "Docker-Content-Digest": str(Digest.from_bytes(data))})
            return web.Response(status=307, headers={"Location": storage})
        assert "Authorization" not in request.headers  # registry credentials never leak to storage
        rng = request.headers.get("Range")
        if rng is None:
            return web.Response(body=data, headers={"Accept-Ranges": "bytes"})
        lo_s, _, hi_s = rng.removeprefix("bytes=").partition("-")
        lo, hi = int(lo_s), min(int(hi_s) if hi_s else len(data) - 1, len(data) - 1)
        return web.Response(status=206, body=data[lo : hi + 1],
                            headers={"Content-Range": f"bytes {lo}-{hi}/{len(data)}", "Accept-Ranges": "bytes"})

    misbehaving.handler = h


async def test_blob_reader_reads_whole_blobs_ranges_and_resolves_the_storage_url(misbehaving, body_path):
    data = random_bytes(1_500_000, seed=22)
    digest = str(Digest.from_bytes(data))
    _redirecting(misbehaving, data)
    async with RegistryClient(misbehaving.url, config=FAST, creds=("u", "p")) as rc:
        reader = BlobReader(rc, "r/x")
        probe = await reader.probe(digest)
        assert (probe.size, probe.accept_ranges) == (len(data), True)
        real = await reader.resolve_redirect(reader.url(digest))
        assert real.startswith(misbehaving.url.replace("127.0.0.1", "localhost") + "/storage/")
        parts: list[bytes] = []

        async def sink(chunk: bytes) -> None:
            parts.append(chunk)

        assert await reader.fetch(digest, len(data), sink) == len(data) and b"".join(parts) == data
        parts.clear()
        assert await reader.fetch_range(digest, 1000, 700_999, sink) == 700_000
        assert b"".join(parts) == data[1000:701_000]
        assert await reader.get_content_with_range(real, 5, 9) == data[5:10]


async def test_lazy_and_eager_read_through_the_same_seam(misbehaving):
    """The lazy fetcher resolves the storage URL once and reads spans there; the eager source streams the blob."""
    data = random_bytes(300_000, seed=23)
    digest = str(Digest.from_bytes(data))
    _redirecting(misbehaving, data)
    async with RegistryClient(misbehaving.url, config=FAST) as rc:
        reader = BlobReader(rc, "r/x")
        fetcher = RegistryRangeFetcher(reader, reader.url(digest))
        assert await fetcher.fetch(10, 19) == data[10:20]
        assert await fetcher.fetch(200_000, 299_999) == data[200_000:]
        assert fetcher.real_url is not None and "/storage/" in fetcher.real_url
        assert misbehaving.count(path_part="/v2/") == 1, "spans go to the resolved storage URL"
        got: list[bytes] = []

        async def sink(chunk: bytes) -> None:
            got.append(chunk)

        source = RegistryBlobSource(rc, "r/x")
        assert await source.fetch(LayerSpec(digest, len(data)), sink) == len(data) and b"".join(got) == data
