"""The embedded OCI registry: the distribution spec's pull and push endpoints over aiohttp.web.

Storage is ``RepositoryStore`` (one OCI layout per repository under the root). Blobs and manifests are
sent with ``loop.sendfile`` when no bandwidth limit is set, so loopback throughput is the kernel's; with
``bandwidth`` they are streamed through one shared ``TokenBucket``. ``latency`` is added before every
response starts. Single byte ranges only (``206`` + ``Content-Range``; ``416`` when unsatisfiable or when
several ranges are asked; a malformed ``Range`` or another unit is ignored: ``200`` and the whole body, as
RFC 9110 §14.2 says; only GET honours ``Range``). Errors use distribution's JSON shape and codes.

``EmbeddedRegistry`` runs it in a background thread (see ``background.py``)::

    with EmbeddedRegistry(root=path) as reg:
        reg.url  # "http://127.0.0.1:PORT"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from ..oci import Digest, OCILayout
from ..oci import mediatypes as mt
from ..units import parse_duration, parse_rate
from .background import BackgroundServer
from .registry_auth import CATALOG, RegistryAuth, TokenAuthority, parse_basic
from .registry_errors import RegistryHTTPError
from .registry_store import RepositoryStore, Upload, parse_digest
from .shaping import TokenBucket

API_VERSION_HEADER = ("Docker-Distribution-Api-Version", "registry/2.0")
_REPO_PATH = re.compile(r"^/v2/(.+)/(?:manifests|blobs|tags|referrers)/")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CONTENT_RANGE = re.compile(r"(?:bytes )?(\d+)-(\d+)(?:/\d+|/\*)?")
_SENDFILE_CHUNK = 1 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RegistryStats:
    """Counters of one registry (updated on the server loop; read them from anywhere)."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received}


class RegistryApp:
    """Handlers and middleware of one registry instance."""

    def __init__(
        self,
        store: RepositoryStore,
        *,
        bandwidth: float | None = None,
        latency: float = 0.0,
        auth: RegistryAuth | None = None,
        stats: RegistryStats | None = None,
    ) -> None:
        self.store = store
        self.bucket = TokenBucket(bandwidth) if bandwidth else None
        self.latency = latency
        self.authority = TokenAuthority(auth) if auth is not None else None
        self.stats = stats or RegistryStats()

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=8 << 20)
        app.on_response_prepare.append(_add_api_version)
        r = app.router
        for path in ("/v2/", "/v2"):
            r.add_route("GET", path, self.ping)
            r.add_route("HEAD", path, self.ping)
        r.add_route("GET", "/v2/_catalog", self.catalog)
        r.add_route("GET", "/token", self.token)
        r.add_route("POST", "/token", self.token)
        r.add_route("GET", "/v2/{name:.+}/tags/list", self.tags_list)
        r.add_route("GET", "/v2/{name:.+}/referrers/{digest}", self.referrers)
        r.add_route("POST", "/v2/{name:.+}/blobs/uploads/", self.upload_start)
        r.add_route("POST", "/v2/{name:.+}/blobs/uploads", self.upload_start)
        r.add_route("GET", "/v2/{name:.+}/blobs/uploads/{uuid}", self.upload_status)
        r.add_route("PATCH", "/v2/{name:.+}/blobs/uploads/{uuid}", self.upload_patch)
        r.add_route("PUT", "/v2/{name:.+}/blobs/uploads/{uuid}", self.upload_put)
        r.add_route("DELETE", "/v2/{name:.+}/blobs/uploads/{uuid}", self.upload_cancel)
        r.add_route("GET", "/v2/{name:.+}/blobs/{digest}", self.blob_get)
        r.add_route("HEAD", "/v2/{name:.+}/blobs/{digest}", self.blob_get)
        r.add_route("DELETE", "/v2/{name:.+}/blobs/{digest}", self.blob_delete)
        r.add_route("GET", "/v2/{name:.+}/manifests/{reference}", self.manifest_get)
        r.add_route("HEAD", "/v2/{name:.+}/manifests/{reference}", self.manifest_get)
        r.add_route("PUT", "/v2/{name:.+}/manifests/{reference}", self.manifest_put)
        r.add_route("DELETE", "/v2/{name:.+}/manifests/{reference}", self.manifest_delete)
        return app

    # --- middleware -----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.stats.requests += 1
        try:
            if self.authority is not None and request.path.startswith("/v2"):
                self._authorize(request)
            if self.latency:
                await asyncio.sleep(self.latency)
            return await handler(request)
        except RegistryHTTPError as exc:
            return exc.response(head=request.method == "HEAD")

    def _authorize(self, request: web.Request) -> None:
        assert self.authority is not None
        m = _REPO_PATH.match(request.path)
        repo = m.group(1) if m else None
        if request.path.rstrip("/") == "/v2/_catalog":
            repo = CATALOG
        actions = {"pull"} if request.method in ("GET", "HEAD") else {"pull", "push"}
        if repo == CATALOG:
            actions = {"*"}
        if self.authority.allowed(request.headers.get("Authorization"), repo, actions):
            return
        base = f"{request.scheme}://{request.host}"
        if repo == CATALOG:
            detail: list[dict[str, str | None]] | None = [{"Type": "registry", "Name": "catalog", "Action": "*"}]
        else:
            detail = [{"Type": "repository", "Name": repo, "Action": a} for a in sorted(actions)] if repo else None
        raise RegistryHTTPError(
            "UNAUTHORIZED",
            detail=detail,
            headers={"WWW-Authenticate": self.authority.challenge(base, repo, actions)},
        )

    # --- base, catalog, auth ------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def catalog(self, request: web.Request) -> web.Response:
        names = self.store.repositories()
        return web.json_response({"repositories": _paginate(request, names, "/v2/_catalog")[0]})

    async def token(self, request: web.Request) -> web.Response:
        if self.authority is None:
            return web.json_response({"token": "anonymous", "access_token": "anonymous", "expires_in": 3600})
        creds = parse_basic(request.headers.get("Authorization"))
        scopes = request.query.getall("scope", [])
        if request.method == "POST":
            form = await request.post()
            if form.get("grant_type") != "password":
                return web.json_response({"error": "unsupported_grant_type"}, status=400)
            creds = (str(form.get("username", "")), str(form.get("password", "")))
            scopes = [str(s) for s in form.getall("scope", [])]
        answer = self.authority.issue(creds, scopes)
        if answer is None:
            raise RegistryHTTPError("UNAUTHORIZED", "invalid username or password")
        return web.json_response(answer)

    # --- tags, referrers ----------------------------------------------------------------------------

    async def tags_list(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        tags, link = _paginate(request, self.store.tags(name), f"/v2/{name}/tags/list")
        headers = {"Link": link} if link else None
        return web.json_response({"name": name, "tags": tags}, headers=headers)

    async def referrers(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        artifact_type = request.query.get("artifactType")
        found = self.store.referrers(name, request.match_info["digest"], artifact_type)
        body = json.dumps(
            {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [d.to_dict() for d in found]}
        ).encode()
        headers = {"Content-Type": mt.OCI_INDEX}
        if artifact_type is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        return web.Response(body=body, headers=headers)

    # --- blobs --------------------------------------------------------------------------------------

    async def blob_get(self, request: web.Request) -> web.StreamResponse:
        name, digest = request.match_info["name"], request.match_info["digest"]
        path = self.store.blob_path(name, digest)
        return await self._send_file(request, path, "application/octet-stream", Digest(digest))

    async def blob_delete(self, request: web.Request) -> web.Response:
        self.store.delete_blob(request.match_info["name"], request.match_info["digest"])
        return web.Response(status=202, headers={"Content-Length": "0"})

    async def upload_start(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.store.layout(name, create=True)
        query = request.query
        if "mount" in query:
            digest = parse_digest(query["mount"])
            source = query.get("from")
            if source and self.store.mount(name, source, digest):
                return _created(name, digest)
        upload = self.store.start_upload(name)
        if "digest" in query:
            try:
                await self._receive(request, upload)
            except BaseException:
                self.store.cancel_upload(upload)
                raise
            return _created(name, await self._finish(upload, query["digest"]))
        return _accepted(name, upload)

    async def upload_status(self, request: web.Request) -> web.Response:
        upload = self.store.get_upload(request.match_info["name"], request.match_info["uuid"])
        resp = _accepted(upload.repo, upload)
        resp.set_status(204)
        return resp

    async def upload_patch(self, request: web.Request) -> web.Response:
        upload = self.store.get_upload(request.match_info["name"], request.match_info["uuid"])
        content_range = request.headers.get("Content-Range")
        if content_range:
            m = _CONTENT_RANGE.fullmatch(content_range.strip())
            if m is None or int(m.group(1)) != upload.offset or int(m.group(2)) < int(m.group(1)):
                raise RegistryHTTPError(
                    "RANGE_INVALID",
                    f"Content-Range {content_range!r} does not continue the upload at offset {upload.offset}",
                    headers=_upload_headers(upload),
                )
        await self._receive(request, upload)
        return _accepted(upload.repo, upload)

    async def upload_put(self, request: web.Request) -> web.Response:
        upload = self.store.get_upload(request.match_info["name"], request.match_info["uuid"])
        digest = request.query.get("digest")
        if not digest:
            raise RegistryHTTPError("DIGEST_INVALID", "the final PUT of an upload needs ?digest=")
        await self._receive(request, upload)
        return _created(upload.repo, await self._finish(upload, digest))

    async def upload_cancel(self, request: web.Request) -> web.Response:
        upload = self.store.get_upload(request.match_info["name"], request.match_info["uuid"])
        self.store.cancel_upload(upload)
        return web.Response(status=204)

    async def _finish(self, upload: Upload, digest: str) -> Digest:
        """Verify and publish an upload in a worker thread: fsync and re-hashing can take a while."""
        return await asyncio.to_thread(self.store.finish_upload, upload, digest)

    async def _receive(self, request: web.Request, upload: Upload) -> None:
        """Append the request body to ``upload`` as it streams in (never the whole blob in memory)."""
        if not request.body_exists:
            return
        try:
            async for chunk in request.content.iter_any():
                upload.append(chunk)
                self.stats.bytes_received += len(chunk)
        finally:
            upload.release()  # no descriptor held between requests (an abandoned session holds none)

    # --- manifests ----------------------------------------------------------------------------------

    async def manifest_get(self, request: web.Request) -> web.StreamResponse:
        desc, path = self.store.get_manifest(request.match_info["name"], request.match_info["reference"])
        return await self._send_file(request, path, desc.media_type, desc.digest)

    async def manifest_put(self, request: web.Request) -> web.Response:
        name, reference = request.match_info["name"], request.match_info["reference"]
        data = await request.read()
        self.stats.bytes_received += len(data)
        announced = request.headers.get("Docker-Content-Digest")
        if announced:
            want = parse_digest(announced)
            actual = Digest.from_bytes(data, want.algorithm)
            if actual != want:
                raise RegistryHTTPError("DIGEST_INVALID", f"manifest digest is {actual}, not {want}")
        desc, subject = self.store.put_manifest(name, reference, data, request.headers.get("Content-Type"))
        headers = {
            "Location": f"/v2/{name}/manifests/{desc.digest}",
            "Docker-Content-Digest": str(desc.digest),
            "Content-Length": "0",
        }
        if subject is not None:
            headers["OCI-Subject"] = subject
        return web.Response(status=201, headers=headers)

    async def manifest_delete(self, request: web.Request) -> web.Response:
        self.store.delete_manifest(request.match_info["name"], request.match_info["reference"])
        return web.Response(status=202, headers={"Content-Length": "0"})

    # --- sending files ------------------------------------------------------------------------------

    async def _send_file(
        self, request: web.Request, path: Path, content_type: str, digest: Digest
    ) -> web.StreamResponse:
        """Send ``path`` (or the asked byte range of it) with sendfile, or shaped when a rate is set."""
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise RegistryHTTPError("BLOB_UNKNOWN", detail={"digest": digest}) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            headers = {
                "Content-Type": content_type,
                "Docker-Content-Digest": str(digest),
                "Accept-Ranges": "bytes",
                "ETag": f'"{digest}"',
            }
            status, offset, count = 200, 0, size
            header = request.headers.get("Range") if request.method == "GET" else None  # RFC 9110: GET only
            rng = _parse_range(header, size) if header else IGNORE
            if rng is not IGNORE:
                if rng is None:
                    raise RegistryHTTPError(
                        "RANGE_INVALID",
                        f"range {header!r} cannot be satisfied by {size} bytes (one range only)",
                        headers={"Content-Range": f"bytes */{size}"},
                    )
                offset, count = cast(tuple[int, int], rng)
                status = 206
                headers["Content-Range"] = f"bytes {offset}-{offset + count - 1}/{size}"
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = count
            await resp.prepare(request)
            if request.method == "HEAD" or count == 0:
                await resp.write_eof()
                return resp
            try:
                if self.bucket is None:
                    await self._sendfile(request, resp, f, offset, count)
                else:
                    await self._send_shaped(resp, f, offset, count)
            except ConnectionError:
                return resp  # the client went away mid-body: nothing to answer, nothing to log
            await resp.write_eof()
            return resp

    async def _sendfile(self, request: web.Request, resp: web.StreamResponse, f: Any, offset: int, count: int) -> None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        loop = asyncio.get_running_loop()
        try:
            await loop.sendfile(transport, f, offset, count)
            self.stats.bytes_sent += count
        except NotImplementedError:
            f.seek(offset)
            while count > 0:
                chunk = f.read(min(_SENDFILE_CHUNK, count))
                if not chunk:
                    break
                await resp.write(chunk)
                count -= len(chunk)
                self.stats.bytes_sent += len(chunk)

    async def _send_shaped(self, resp: web.StreamResponse, f: Any, offset: int, count: int) -> None:
        assert self.bucket is not None
        step = self.bucket.chunk_size
        f.seek(offset)
        while count > 0:
            chunk = f.read(min(step, count))
            if not chunk:
                break
            await self.bucket.consume(len(chunk))
            await resp.write(chunk)
            count -= len(chunk)
            self.stats.bytes_sent += len(chunk)


#: what :func:`_parse_range` returns for a ``Range`` header to ignore (answer 200 with the whole body)
IGNORE = object()
_RANGE_SET = re.compile(r"bytes=\s*(?:\d*-\d*)(?:\s*,\s*\d*-\d*)+\s*")


def _parse_range(header: str, size: int) -> tuple[int, int] | object | None:
    """(offset, count) of a single ``bytes=`` range against ``size``; None when unsatisfiable (416) or when
    several ranges are asked; :data:`IGNORE` when the header is malformed or names another unit — RFC 9110
    §14.2: such a header is ignored and the whole representation sent with 200."""
    text = header.strip()
    m = _RANGE.fullmatch(text)
    if m is None:
        return None if _RANGE_SET.fullmatch(text) else IGNORE
    first, last = m.groups()
    if first == "":
        if last == "":
            return IGNORE  # "bytes=-" is no range at all
        if int(last) == 0:
            return None
        n = min(int(last), size)
        return (size - n, n) if n else None
    start = int(first)
    if last and int(last) < start:
        return IGNORE  # first-pos after last-pos: an invalid range-spec (§14.1.1)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        return None
    return start, end - start + 1


def _paginate(request: web.Request, items: list[str], path: str) -> tuple[list[str], str | None]:
    """``items`` after ``?last=``, at most ``?n=``; plus the ``Link`` header for the next page."""
    last = request.query.get("last")
    if last:
        items = [i for i in items if i > last]
    n_text = request.query.get("n")
    if n_text is None:
        return items, None
    try:
        n = int(n_text)
    except ValueError:
        raise RegistryHTTPError("PAGINATION_NUMBER_INVALID", detail={"n": n_text}) from None
    if n < 0:
        raise RegistryHTTPError("PAGINATION_NUMBER_INVALID", detail={"n": n_text})
    page = items[:n]
    if len(items) > n and page:
        return page, f'<{path}?n={n}&last={page[-1]}>; rel="next"'
    return page, None


def _upload_headers(upload: Upload) -> dict[str, str]:
    return {
        "Location": f"/v2/{upload.repo}/blobs/uploads/{upload.uuid}",
        "Range": f"0-{max(upload.offset - 1, 0)}",
        "Docker-Upload-UUID": upload.uuid,
    }


def _accepted(name: str, upload: Upload) -> web.Response:
    return web.Response(status=202, headers={**_upload_headers(upload), "Content-Length": "0"})


def _created(name: str, digest: str) -> web.Response:
    return web.Response(
        status=201,
        headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": str(digest), "Content-Length": "0"},
    )


async def _add_api_version(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault(*API_VERSION_HEADER)


class EmbeddedRegistry(BackgroundServer):
    """The embedded OCI registry, serving the repositories under ``root`` on a loopback port.

    ``root``: directory of per-repository OCI layouts (a temporary one, removed on stop, when None).
    ``port=0`` picks a free port (read it from ``url``). ``bandwidth`` (bytes/s, or a rate string such as
    ``"100Mbit"``) meters every response body through one shared bucket; ``latency`` (seconds or
    ``"20ms"``) is added before each response. ``auth``: a ``RegistryAuth``, or ``(user, password)`` for
    token auth with one user. ``layouts``: existing OCI layouts to serve in place, ``{repo name: dir}``.
    Use it as a context manager (sync or async) or call ``start``/``stop``.
    """

    kind = "registry"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        bandwidth: str | float | None = None,
        latency: str | float | None = None,
        auth: RegistryAuth | tuple[str, str] | None = None,
        layouts: Mapping[str, str | os.PathLike[str]] | None = None,
    ) -> None:
        super().__init__(host, port)
        self.layouts = dict(layouts or {})
        for path in self.layouts.values():
            OCILayout(path, create=False)  # fail here, in the caller's thread, with InvalidLayout
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="soci-lab-registry-"))
        self.bandwidth = parse_rate(bandwidth) if bandwidth is not None else None
        self.latency = parse_duration(latency) if latency is not None else 0.0
        if isinstance(auth, tuple):
            auth = RegistryAuth(users={auth[0]: auth[1]})
        self.auth = auth
        self.stats = RegistryStats()
        self.app: RegistryApp | None = None

    @property
    def host_port(self) -> str:
        """``HOST:PORT``, the registry part of an image reference."""
        return self.url.removeprefix("http://")

    @property
    def tokens_issued(self) -> int:
        """How many tokens the token endpoint handed out (0 without auth)."""
        return self.app.authority.tokens_issued if self.app and self.app.authority else 0

    async def make_app(self) -> web.Application:
        store = RepositoryStore(self.root, self.layouts)
        self.app = RegistryApp(store, bandwidth=self.bandwidth, latency=self.latency, auth=self.auth, stats=self.stats)
        return self.app.application()

    async def on_stop(self) -> None:
        if self.app is not None:
            self.app.store.close()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if self._own_root:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.root)
