"""Helpers of the store tests: small unique images pushed to a registry of the tests' own (its blobs can be
tampered with on disk), and a scriptable stand-in Hermes store for the client tests.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from soci_lab.images import RuntimeConfig, build_image
from soci_lab.netlab import EmbeddedRegistry
from soci_lab.netlab.background import BackgroundServer
from soci_lab.oci import Platform

PLATFORM = str(Platform.host())
SPAN = 16 << 10
#: the build token of the ``store`` fixture (builds from ``oci:`` layouts need a trusted request)
STORE_TOKEN = "store-tests-build-token-0123456789"


@dataclass
class Pushed:
    """An image pushed to the test registry."""

    ref: str
    host: str
    repo: str
    manifest_digest: str
    layers: list[str]

    @property
    def digest_ref(self) -> str:
        return f"{self.host}/{self.repo}@{self.manifest_digest}"


def make_trees(root: Path, seed: int, big: int = 96 << 10) -> list[Path]:
    """Two small layer directories with content unique to ``seed`` (no blob shared between images)."""
    rng = random.Random(seed)
    base, app = root / "base", root / "app"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "passwd").write_text(f"root:x:0:0:root:/root:/bin/sh\n# {seed}\n")
    (base / "usr" / "bin").mkdir(parents=True)
    (base / "usr" / "bin" / "sh").write_bytes(rng.randbytes(40 << 10))
    os.symlink("usr/bin", base / "bin")
    (app / "app" / "config").mkdir(parents=True)
    (app / "app" / "config" / "app.json").write_text(f'{{"seed": {seed}}}\n')
    (app / "app" / "data.bin").write_bytes(bytes(rng.getrandbits(4) for _ in range(big)))
    return [base, app]


class Images:
    """Pushes small unique images to one registry."""

    def __init__(self, registry: EmbeddedRegistry, tmp: Path) -> None:
        self.registry = registry
        self.host = registry.url.removeprefix("http://")
        self.tmp = tmp
        self.count = 0

    def push(self, repo: str = "app", tag: str | None = None) -> Pushed:
        self.count += 1
        tag = tag or f"t{self.count}"
        trees = make_trees(self.tmp / f"img{self.count}", seed=self.count)
        ref = f"{self.host}/{repo}:{tag}"
        res = build_image(trees, ref, runtime=RuntimeConfig(cmd=["/bin/sh", "-c", "/app/start"], working_dir="/app"))
        return Pushed(ref, self.host, repo, str(res.digest), [str(d.digest) for d in res.manifest.layers])

    def blob_file(self, repo: str, digest: str) -> Path:
        return self.registry.root / repo / "blobs" / "sha256" / digest.split(":", 1)[1]


class FakeStore(BackgroundServer):
    """A stand-in Hermes store: forwards to ``upstream`` (a real store) unless told to misbehave.

    ``blob_status`` answers blob GETs with that status; ``swap`` maps a digest to other bytes served under
    it; ``stall`` (seconds) pauses after the headers and half of a blob's body; ``resolve_stall`` pauses
    before answering a resolve; ``alias`` maps an asked-for image to the one asked of the upstream store
    (answering for the wrong image). ``hits`` counts requests per endpoint.
    """

    kind = "fake-store"

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.blob_status: int | None = None
        self.swap: dict[str, bytes] = {}
        self.stall = 0.0
        self.resolve_stall = 0.0
        self.alias: dict[str, str] = {}
        self.hits = {"resolve": 0, "blob": 0}

    async def make_app(self) -> web.Application:
        import httpx

        client = httpx.AsyncClient(trust_env=False)

        async def resolve(request: web.Request) -> web.StreamResponse:
            self.hits["resolve"] += 1
            if self.resolve_stall:
                await asyncio.sleep(self.resolve_stall)
            params = dict(request.query)
            params["image"] = self.alias.get(params.get("image", ""), params.get("image", ""))
            r = await client.get(self.upstream + "/v1/indexes/resolve", params=params)
            return web.Response(status=r.status_code, body=r.content, headers={"Content-Type": "application/json"})

        async def blob(request: web.Request) -> web.StreamResponse:
            self.hits["blob"] += 1
            digest = request.match_info["digest"]
            if self.blob_status is not None:
                return web.json_response({"error": "injected"}, status=self.blob_status)
            r = await client.get(self.upstream + "/v1/blobs/" + digest)
            body = self.swap.get(digest, r.content)
            if not self.stall:
                return web.Response(status=r.status_code, body=body,
                                    headers={"Content-Type": r.headers.get("content-type", "")})
            resp = web.StreamResponse(status=r.status_code, headers={"Content-Length": str(len(body))})
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            await asyncio.sleep(self.stall)
            await resp.write(body[len(body) // 2:])
            return resp

        app = web.Application()
        app.router.add_get("/v1/indexes/resolve", resolve)
        app.router.add_get("/v1/blobs/{digest}", blob)
        app.on_cleanup.append(lambda _app: client.aclose())
        return app
