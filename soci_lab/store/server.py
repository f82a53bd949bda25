"""The store's HTTP server: Hermes's four GET endpoints (hermes.md §2.2) plus the build endpoints.

Hermes-compatible (no auth, no TLS; the method is not checked; every JSON body is sent with
``Content-Type: application/json``; every error is ``{"error": "<msg>"}``):

==========================================  =================================================================
``/healthz``                                200 ``{"status":"ok"}`` (500 when the database file was deleted or
                                            replaced under the running store)
``/v1/indexes/resolve?image=&platform=``    400 ``missing image``; 404 ``index not ready for image=<image>
                                            platform=<platform>``; 500 on a database error; 200
                                            ``{"image","platform","sociIndex":{"mediaType","digest","size"},
                                            "ztocs":[{"layerDigest","ztocDigest","size"}]}`` (zTOCs only,
                                            by layer digest). ``image`` is matched exactly (the daemon sends
                                            ``<locator>@<manifest digest>``); no ``platform`` → the store's.
``/v1/blobs/<digest>``                      400 ``missing digest``; 404 ``blob <d> not found`` (a malformed
                                            digest is simply not found, as in Hermes); 200 the raw bytes
                                            with ``Content-Type`` = stored media type,
                                            ``Docker-Content-Digest`` and ``Content-Length``.
``/v1/artifacts``                           200 the 100 most recently updated artifact rows, newest first.
==========================================  =================================================================

Which artifact ``resolve`` answers with: Hermes's latest looks for its one profile's key
(``startup-local-v1:<hex>``) and then the default artifact (key ``""``). soci_lab has a second profile,
so without the ``profile`` query parameter (an extension) the order is: a recorded-trace artifact of the
image (``trace-v1:…``, the more specific profile; only there when someone built one), then
``startup-local-v1``, then ``""``. ``?profile=startup-local-v1|trace-v1|none`` asks for exactly one.

Builds — not in Hermes, whose controller builds only from its Kubernetes watchers. Who may build with the
store's registry credentials is :mod:`.auth`'s business: a request with the build token (``Authorization:
Bearer``) or through the local unix socket is *trusted*; any other request builds **anonymously** (no
credentials of any kind, no ``oci:`` layouts: 403), or is refused with 401 when anonymous builds are off; a
wrong token is 401. Untrusted callers see only anonymous builds in the two ``GET`` build endpoints.

* ``POST /v1/builds`` with ``{"image": REF, "platform"?: "os/arch", "profile"?: "startup-local-v1"|"trace-v1"|
  "none", "trace"?: "<trace CSV text>", "syncUntil"?: seconds}`` → 202 with the build (``id``, ``status`` …,
  ``deduplicated``); 400 for a bad request; **429** ``{"error": …}`` with ``Retry-After`` when the build queue is full.
* ``GET /v1/builds/<id>`` → 200 the build (``status`` ``Queued`` → ``Building`` → ``Ready``/``Failed``,
  ``error``, ``imageDigestRef``, ``indexDigest``, ``sameAs`` …) or 404; ``GET /v1/builds`` → the list.

:class:`ArtifactStore` runs it all in a background thread (``with ArtifactStore(db=path) as store:
store.url``), for tests, notebooks and ``soci-lab store serve``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import BuildQueueFull, InvalidInput, StoreError
from ..netlab.background import BackgroundServer
from ..oci import Platform, Reference, jsondoc
from . import profiles as pf
from .auth import REALM, TRUSTED, BuildAuth, BuildRefused, is_loopback_host
from .builder import BuildRequest, BuildSettings
from .db import LIST_LIMIT, StoreDB, artifact_json
from .queue import BuildQueue

if TYPE_CHECKING:
    from ..events import EventRecorder

#: Hermes's controller ``--platform`` default
DEFAULT_PLATFORM = "linux/amd64"
#: the port Hermes's controller listens on (``--listen :39091``)
DEFAULT_PORT = 39091
#: a trace sent with a build request may be this big
MAX_REQUEST = 64 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON with exactly ``Content-Type: application/json``, as Go's handlers send it."""
    body = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    return web.Response(body=body, status=status, headers={"Content-Type": "application/json", **(headers or {})})


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """``{"error": message}`` with ``status``."""
    return json_response({"error": message}, status, headers)


def resolve_keys(profile: str | None) -> list[str]:
    """Acceleration keys ``resolve`` tries, in order (a key ending in ``:`` is a prefix)."""
    if profile == pf.STARTUP_LOCAL_V1:
        return [pf.default_acceleration_key()]
    if profile == pf.TRACE_V1:
        return [pf.TRACE_V1 + ":"]
    if profile == pf.NONE:
        return [""]
    return [pf.TRACE_V1 + ":", pf.default_acceleration_key(), ""]


class StoreApp:
    """Handlers over a database and a build queue."""

    def __init__(self, db: StoreDB, queue: BuildQueue, platform: str = DEFAULT_PLATFORM,
                 auth: BuildAuth | None = None) -> None:
        self.db = db
        self.queue = queue
        self.platform = platform
        self.auth = auth or BuildAuth()

    def application(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=MAX_REQUEST, middlewares=[self._errors])
        r = app.router
        r.add_route("*", "/healthz", self.healthz)
        r.add_route("*", "/v1/indexes/resolve", self.resolve)
        r.add_route("*", "/v1/blobs/{digest:.*}", self.blob)
        r.add_route("*", "/v1/artifacts", self.artifacts)
        r.add_route("POST", "/v1/builds", self.build)
        r.add_route("GET", "/v1/builds", self.builds)
        r.add_route("GET", "/v1/builds/{id}", self.build_status)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except (sqlite3.Error, StoreError) as exc:
            return error(500, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    async def healthz(self, request: web.Request) -> web.Response:
        self.db.check()  # a deleted or replaced database is a 500 here too, so a supervisor notices
        return json_response({"status": "ok"})

    async def resolve(self, request: web.Request) -> web.Response:
        image = request.query.get("image", "")
        if not image:
            return error(400, "missing image")
        platform = request.query.get("platform") or self.platform
        row = self.db.resolve(image, platform, resolve_keys(request.query.get("profile")))
        if row is None:
            return error(404, f"index not ready for image={image} platform={platform}")
        ztocs = [{"layerDigest": r["layer_digest"], "ztocDigest": r["ztoc_digest"], "size": r["ztoc_size"]}
                 for r in self.db.layers(row["id"])]
        return json_response({
            "image": row["image_digest_ref"],
            "platform": row["platform"],
            "sociIndex": {"mediaType": row["index_media_type"], "digest": row["index_digest"],
                          "size": row["index_size"]},
            "ztocs": ztocs,
        })

    async def blob(self, request: web.Request) -> web.Response:
        digest = request.match_info.get("digest", "")
        if not digest:
            return error(400, "missing digest")
        found = self.db.get_blob(digest)
        if found is None:
            return error(404, f"blob {digest} not found")
        media_type, content = found
        return web.Response(body=content, headers={"Content-Type": media_type, "Docker-Content-Digest": digest})

    async def artifacts(self, request: web.Request) -> web.Response:
        return json_response([artifact_json(r) for r in self.db.list_artifacts(LIST_LIMIT)])

    async def build(self, request: web.Request) -> web.Response:
        try:
            trusted = self.auth.classify(request) == TRUSTED
        except BuildRefused as exc:
            return error(exc.status, str(exc), {"WWW-Authenticate": f'Bearer realm="{REALM}"'})
        try:
            doc = jsondoc.loads(await request.read(), "the build request", error=InvalidInput)
        except InvalidInput as exc:  # not JSON; or nested absurdly / integers beyond 64 bits ("is refused")
            refused = " is refused: " in str(exc)
            return error(400, str(exc) if refused else "the body must be a JSON object with an image")
        if not isinstance(doc, dict) or not isinstance(doc.get("image"), str) or not doc["image"]:
            return error(400, "missing image")
        try:
            ref = Reference.parse(doc["image"])
            if ref.is_layout and not trusted:
                return error(403, "an anonymous build cannot read OCI layouts on the store's host "
                                  "(send the build token, or use the local socket)")
            why = None if trusted else await self.auth.anonymous_target_refusal(ref.registry, ref.api_host)
            if why is not None:
                return error(403, why)
            platform = str(Platform.parse(doc.get("platform") or self.platform))
            sync_until = doc.get("syncUntil")
            if sync_until is not None and (isinstance(sync_until, bool) or not isinstance(sync_until, int | float)):
                raise InvalidInput("syncUntil must be a number of seconds")
            profile = pf.make_profile(str(doc.get("profile") or pf.STARTUP_LOCAL_V1), doc.get("trace"), sync_until)
        except InvalidInput as exc:
            return error(400, str(exc).splitlines()[0])
        try:
            task, dedup = self.queue.submit(BuildRequest(doc["image"], platform, profile, trusted=trusted))
        except BuildQueueFull as exc:
            return error(429, str(exc), {"Retry-After": "1"})
        return json_response({**task.to_json(), "deduplicated": dedup}, 202)

    async def builds(self, request: web.Request) -> web.Response:
        trusted = self.auth.trusted(request)
        tasks = [t for t in self.queue.tasks() if trusted or not t.request.trusted]
        return json_response([t.to_json() for t in tasks[:LIST_LIMIT]])

    async def build_status(self, request: web.Request) -> web.Response:
        task = self.queue.get(request.match_info["id"])
        if task is not None and task.request.trusted and not self.auth.trusted(request):
            task = None  # an untrusted caller does not learn what trusted builds were asked for
        if task is None:
            return error(404, f"build {request.match_info['id']} not found")
        return json_response(task.to_json())


def _current_umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``); 0 (permissive) if unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0


class ArtifactStore(BackgroundServer):
    """The Hermes-compatible store on its own loop in a background thread.

    ``with ArtifactStore(db=path) as store: store.url``. ``settings`` are the build knobs (span size,
    minimum layer size for the ``none`` profile, build tool identifier, registry access); ``platform`` is
    used when a request names none; ``max_concurrency`` builds run at once and ``queue_size`` more may wait;
    ``events`` records what builds do (:class:`BuildQueue`). Who may build with the store's registry access
    (:mod:`.auth`): requests with ``build_token`` or through ``build_socket`` (a unix socket, mode 0600);
    others build anonymously, or are refused with ``allow_anonymous_builds=False``; an anonymous build may
    name only ``anonymous_registries`` when given, else (on a store not listening only on loopback) only
    registries with public addresses.
    """

    kind = "artifact-store"

    def __init__(
        self,
        db: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        platform: str = DEFAULT_PLATFORM,
        settings: BuildSettings | None = None,
        max_concurrency: int = 1,
        queue_size: int = 128,
        build_timeout: float = 3600.0,
        events: EventRecorder | None = None,
        build_token: str | None = None,
        allow_anonymous_builds: bool = True,
        build_socket: str | Path | None = None,
        anonymous_registries: Iterable[str] | None = None,
    ) -> None:
        super().__init__(host, port)
        allowed = frozenset(anonymous_registries) if anonymous_registries is not None else None
        self.auth = BuildAuth(build_token, allow_anonymous_builds, allowed, is_loopback_host(host))
        self.build_socket = Path(build_socket) if build_socket is not None else None
        self.events = events
        self.db_path = Path(db)
        self.platform = str(Platform.parse(platform))
        self.settings = settings or BuildSettings()
        self.max_concurrency = max_concurrency
        self.queue_size = queue_size
        self.build_timeout = build_timeout
        self.db: StoreDB | None = None
        self.queue: BuildQueue | None = None

    async def make_app(self) -> web.Application:
        self.db = StoreDB(self.db_path)
        self.queue = BuildQueue(self.db, self.settings, max_concurrency=self.max_concurrency,
                                queue_size=self.queue_size, build_timeout=self.build_timeout, events=self.events)
        self.queue.start()
        return StoreApp(self.db, self.queue, self.platform, self.auth).application()

    async def add_sites(self, runner: web.AppRunner) -> None:
        if self.build_socket is None:
            return
        path = self.build_socket
        if path.is_socket():
            path.unlink()  # a socket left by a store that died; a regular file there is an error (bind fails)
        # connecting to a unix socket takes write permission on it: with the usual umask (group and other
        # write masked) nobody else can connect between bind and chmod; with a permissive one, bind under
        # umask 0177 (the umask is per process, so only then, briefly)
        permissive = _current_umask() & 0o022 != 0o022
        old = os.umask(0o177) if permissive else None
        try:
            await web.UnixSite(runner, str(path)).start()
        finally:
            if old is not None:
                os.umask(old)
        os.chmod(path, 0o600)

    async def on_stop(self) -> None:
        if self.queue is not None:
            await self.queue.stop()
        if self.db is not None:
            self.db.close()
        if self.build_socket is not None and self.build_socket.is_socket():
            self.build_socket.unlink()


__all__ = ["DEFAULT_PLATFORM", "DEFAULT_PORT", "ArtifactStore", "StoreApp", "resolve_keys"]
