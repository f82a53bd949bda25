"""The Hermes external artifact store, client side (``FetchHermesArtifacts``; hermes.md §2.3–2.4).

Three calls, as Hermes's ``hermes_artifact_store.go`` has, async on anyio + httpx:

* :func:`resolve_hermes_index` — ``GET {endpoint}/v1/indexes/resolve?image=<locator>@<manifest digest>``
  (``&platform=`` only when ``[external_artifact_store] platform`` is set); a non-200 answer is
  :class:`HermesError` ``Hermes resolve returned <status>: <first 4 KiB of body>``; an empty
  ``sociIndex.digest`` is an error; only ``image``, ``platform`` and ``sociIndex`` are read.
* :func:`fetch_hermes_artifacts_by_descriptor` — ``GET /v1/blobs/<index digest>``, then every blob the
  index lists (zTOCs and prefetch artifacts) concurrently. Unlike Hermes, **every byte is verified**: the
  index and each blob must hash to their digests (and blobs match their sizes), and a v1 index's
  ``subject`` must be the manifest asked about. Nothing is written to the local store until everything
  is fetched, verified and parsed; then the blobs, and last the index (listed in ``index.json``, its GC
  root) — so a store serving one wrong blob leaves the local store as it was.
* :func:`fetch_hermes_artifacts` — resolve + fetch with one shared HTTP client; it is the ``hermes=``
  hook of :func:`soci_lab.artifacts.fetch_soci_artifacts` (which tries it first when the store is enabled
  and, on any failure, falls back to registry discovery when ``fallback_to_registry``, else raises
  :class:`NoIndex` ``error trying Hermes artifact store: …``).

Every request (the resolve, each blob GET) has its own deadline of ``timeout_sec`` seconds covering the
whole exchange, body included, as Go's ``http.Client.Timeout``; there are no retries. With an ``events``
recorder each is an ``http_request`` event like the registry client's (``host`` is the store's, and
``via="hermes"``), so a run's DataFrame shows store and registry traffic side by side.

:class:`SociContexts` is the per-Filesystem cache of §2.4 step 3 (``fs.sociContexts``): keyed by
``<manifest digest>|<index digest>``, initialised once. A Hermes resolve failure is never cached (the next
mount asks again). A Hermes fetch failure after a good resolve: with ``fallback_to_registry`` the entry is
dropped and registry discovery runs; without it the error **stays cached** for that key in that instance —
a later mount of the same image fails the same way without asking the store, as Hermes does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from ..config import Config, ExternalArtifactStoreConfig
from ..errors import FormatError, HermesError, NoIndex, SociLabError
from ..oci import Descriptor, Digest, OCILayout, Reference
from ..oci import mediatypes as mt
from ..ztoc.index import ANNOTATION_IMAGE_LAYER_DIGEST, SociIndex

if TYPE_CHECKING:
    from ..events import EventRecorder
    from ..remote import RegistryClient
    from .fetch import SociArtifacts
    from .sources import ArtifactSource

log = logging.getLogger("soci_lab.hermes")

#: the first bytes of an error body quoted in the message
ERROR_BODY_LIMIT = 4096
#: blobs of one index fetched at once (Hermes: unbounded)
BLOB_CONCURRENCY = 16


def image_digest_ref(ref: Reference | str, manifest_digest: str) -> str:
    """``<locator>@<manifest digest>``, what the daemon asks the store for (``registry/repo@sha256:…``)."""
    r = Reference.parse(ref) if isinstance(ref, str) else ref
    locator = f"oci:{r.layout_path}" if r.is_layout else f"{r.registry}/{r.repository}"
    return f"{locator}@{Digest(manifest_digest)}"


def _client(cfg: ExternalArtifactStoreConfig) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=float(cfg.timeout_sec), trust_env=False, follow_redirects=False)


async def _get(
    client: httpx.AsyncClient, cfg: ExternalArtifactStoreConfig, path: str, what: str,
    params: dict[str, str] | None = None, limit: int | None = None, events: EventRecorder | None = None,
) -> tuple[int, httpx.Headers, bytes]:
    """One GET with a deadline of ``timeout_sec`` over the whole exchange; the body up to ``limit`` bytes
    (more → :class:`HermesError`). Recorded as an ``http_request`` event when ``events`` is given."""
    url = cfg.endpoint.rstrip("/") + path
    t0 = events.now() if events is not None else 0.0
    status: int | None = None
    got = 0
    error: str | None = None
    try:
        with anyio.fail_after(cfg.timeout_sec):
            async with client.stream("GET", url, params=params) as resp:
                status = resp.status_code
                cap = limit if resp.status_code == 200 else ERROR_BODY_LIMIT
                chunks: list[bytes] = []
                async for chunk in resp.aiter_bytes():
                    chunks.append(chunk)
                    got += len(chunk)
                    if cap is not None and got > cap:
                        if resp.status_code == 200:
                            raise HermesError(f"Hermes {what}: more than {cap} bytes")
                        break  # an error body: its beginning is enough
                return resp.status_code, resp.headers, b"".join(chunks)
    except (TimeoutError, httpx.TimeoutException):
        error = f"Hermes {what} timed out after {cfg.timeout_sec}s ({cfg.endpoint})"
        raise HermesError(error) from None
    except httpx.HTTPError as exc:
        error = f"Hermes {what} failed: {type(exc).__name__}: {exc} ({cfg.endpoint})"
        raise HermesError(error) from None
    except BaseException as exc:
        error = _one_line(exc)
        raise
    finally:
        if events is not None:
            events.emit("http_request", t0, path=httpx.URL(url).path, nbytes=got,
                        ok=error is None and status is not None and status < 400,
                        error=error or (f"HTTP {status}" if status is not None and status >= 400 else None),
                        method="GET", status=status, range=None, retry=0, host=httpx.URL(url).netloc.decode(),
                        via="hermes")


def _body_text(body: bytes) -> str:
    return body[:ERROR_BODY_LIMIT].decode("utf-8", "replace").strip()


async def resolve_hermes_index(
    client: httpx.AsyncClient | None,
    cfg: ExternalArtifactStoreConfig,
    image_ref: Reference | str,
    image_manifest_digest: str,
    *,
    events: EventRecorder | None = None,
) -> tuple[Descriptor, str]:
    """Ask the store for the ready SOCI index of ``image_ref``'s manifest; returns (index descriptor, the
    digest ref the store answered for). Without a client, one is made for this request."""
    ref = image_digest_ref(image_ref, image_manifest_digest)
    params = {"image": ref}
    if cfg.platform:
        params["platform"] = cfg.platform
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(_client(cfg))
        status, _h, body = await _get(client, cfg, "/v1/indexes/resolve", "resolve", params, limit=16 << 20,
                                      events=events)
    if status != 200:
        raise HermesError(f"Hermes resolve returned {status}: {_body_text(body)}")
    try:
        doc = json.loads(body)
        idx = doc.get("sociIndex") or {}
        digest = idx.get("digest") or ""
        if not digest:
            raise HermesError(f"Hermes resolve for {ref} returned an empty sociIndex.digest")
        desc = Descriptor(str(idx.get("mediaType") or mt.OCI_MANIFEST), Digest(digest), int(idx.get("size") or 0))
        answered = str(doc.get("image") or ref)
    except HermesError:
        raise
    except (ValueError, TypeError, AttributeError, RecursionError, SociLabError) as exc:
        raise HermesError(f"Hermes resolve for {ref} returned a malformed answer: {exc}") from None
    return desc, answered


def _check(data: bytes, desc: Descriptor, what: str) -> None:
    got = Digest.from_bytes(data, desc.digest.algorithm)
    if got != desc.digest:
        raise HermesError(f"Hermes served {what} {desc.digest} with content hashing to {got}; refused")
    if desc.size and len(data) != desc.size:
        raise HermesError(f"Hermes served {what} {desc.digest} as {len(data)} bytes, the index says {desc.size}")


async def _blob(client: httpx.AsyncClient, cfg: ExternalArtifactStoreConfig, desc: Descriptor, what: str,
                events: EventRecorder | None = None) -> bytes:
    limit = desc.size if desc.size else None
    status, _h, body = await _get(client, cfg, f"/v1/blobs/{desc.digest}", "blob fetch", limit=limit, events=events)
    if status != 200:
        raise HermesError(f"Hermes blob fetch returned {status}: {_body_text(body)}")
    _check(body, desc, what)
    return body


def _keep(store: OCILayout, index_desc: Descriptor, index_bytes: bytes, blobs: dict[str, bytes]) -> None:
    from .fetch import store_index

    for digest, data in blobs.items():
        if not store.has(digest):
            store.write_blob(data, digest, len(data))
    store_index(store, index_desc, index_bytes)


async def fetch_hermes_artifacts_by_descriptor(
    client: httpx.AsyncClient | None,
    cfg: ExternalArtifactStoreConfig,
    image_ref: str,
    index_desc: Descriptor,
    local_store: OCILayout,
    *,
    image_manifest_digest: str | None = None,
    events: EventRecorder | None = None,
) -> SociArtifacts:
    """Fetch the index ``index_desc`` and every blob it lists from the store, verify and parse them all,
    then keep them in ``local_store`` (module docstring). ``image_manifest_digest``, when given, must be a
    v1 index's ``subject``."""
    from .fetch import parse_soci_artifacts

    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(_client(cfg))
        step: contextlib.AbstractContextManager[dict[str, Any]] = (
            events.step("index_fetch", digest=str(index_desc.digest), via="hermes")
            if events is not None else contextlib.nullcontext({}))
        with step as info:
            status, _h, data = await _get(client, cfg, f"/v1/blobs/{index_desc.digest}", "blob fetch", events=events)
            if status != 200:
                raise HermesError(f"Hermes blob fetch returned {status}: {_body_text(data)}")
            _check(data, dataclasses.replace(index_desc, size=0), "SOCI index")
            try:
                index = SociIndex.from_bytes(data)
            except (SociLabError, ValueError) as exc:
                raise HermesError(f"Hermes served SOCI index {index_desc.digest}, which is malformed: {exc}") from None
            if image_manifest_digest and index.subject is not None and index.subject.digest != image_manifest_digest:
                raise HermesError(f"Hermes served SOCI index {index_desc.digest} for {image_ref}, but its subject is "
                                  f"{index.subject.digest}, not {image_manifest_digest}")
            desc = Descriptor(mt.OCI_MANIFEST, index_desc.digest, len(data), artifact_type=index.artifact_type)
            info.update(nbytes=len(data), local=False, version=index.version, blobs=len(index.blobs))
        blobs: dict[str, bytes] = {}
        limiter = anyio.CapacityLimiter(BLOB_CONCURRENCY)

        async def one(d: Descriptor) -> None:
            async with limiter:
                blob_step = (events.step("ztoc_fetch", layer=d.annotations.get(ANNOTATION_IMAGE_LAYER_DIGEST),
                                         nbytes=d.size, digest=str(d.digest), media_type=d.media_type, local=False)
                             if events is not None else contextlib.nullcontext())
                with blob_step:
                    blobs[str(d.digest)] = await _blob(client, cfg, d, "blob", events)

        try:
            async with anyio.create_task_group() as tg:
                for d in {str(d.digest): d for d in index.blobs}.values():
                    tg.start_soon(one, d)
        except BaseExceptionGroup as group:  # report the first failure itself, not the group
            leaf: BaseException = group
            while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
                leaf = leaf.exceptions[0]
            raise leaf from None
    try:
        artifacts = await anyio.to_thread.run_sync(parse_soci_artifacts, desc, index, blobs, "hermes")
    except (FormatError, KeyError) as exc:
        raise HermesError(f"Hermes artifacts of {image_ref} do not parse: {exc}") from None
    await anyio.to_thread.run_sync(_keep, local_store, desc, data, blobs)
    return artifacts


async def fetch_hermes_artifacts(
    *,
    ref: Reference | str,
    image_manifest_desc: Descriptor,
    config: Config,
    local_store: OCILayout,
    events: EventRecorder | None = None,
    client: httpx.AsyncClient | None = None,
) -> SociArtifacts:
    """Resolve + fetch with one shared client (``FetchHermesArtifacts``); the hook
    :func:`~soci_lab.artifacts.fetch_soci_artifacts` calls. Raises :class:`HermesError` on any failure."""
    cfg = config.external_artifact_store
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(_client(cfg))
        index_desc, answered = await resolve_hermes_index(client, cfg, ref, image_manifest_desc.digest,
                                                          events=events)
        return await fetch_hermes_artifacts_by_descriptor(client, cfg, answered, index_desc, local_store,
                                                          image_manifest_digest=image_manifest_desc.digest,
                                                          events=events)


def _one_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]


class _Once:
    """An init that runs once and remembers its result or its error (``sync.Once`` + cached error)."""

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    async def run(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        async with self.lock:
            if not self.done:
                try:
                    self.result = await fn()
                except Exception as exc:
                    self.error = exc
                self.done = True
        if self.error is not None:
            raise self.error
        return self.result


class SociContexts:
    """Per-Filesystem SOCI contexts with Hermes first (``getSociContext``; module docstring, §2.4).

    ``requests_to_store`` counts the Hermes exchanges started (resolves and index fetches), for tests and
    reports.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Once] = {}
        self.requests_to_store = 0

    def cached_keys(self) -> list[str]:
        """``<manifest digest>|<index digest>`` of every context initialised (successfully or not)."""
        return list(self._entries)

    async def get(
        self,
        client: RegistryClient | ArtifactSource,
        ref: str | Reference,
        image_manifest_desc: Descriptor,
        *,
        config: Config,
        local_store: OCILayout,
        explicit_index_digest: str | None = None,
        events: EventRecorder | None = None,
        **registry_options: Any,
    ) -> SociArtifacts:
        """The SOCI artifacts of one image manifest: Hermes first when enabled, then the registry."""
        from .fetch import fetch_soci_artifacts

        cfg = config.external_artifact_store
        registry = functools.partial(
            fetch_soci_artifacts, client, ref, image_manifest_desc,
            config=dataclasses.replace(config, external_artifact_store=ExternalArtifactStoreConfig()),
            explicit_index_digest=explicit_index_digest, local_store=local_store, events=events, **registry_options)
        if not cfg.enable:
            return await registry()
        reference = Reference.parse(ref) if isinstance(ref, str) else ref
        self.requests_to_store += 1
        try:
            index_desc, answered = await resolve_hermes_index(None, cfg, reference, image_manifest_desc.digest,
                                                              events=events)
        except Exception as exc:
            return await self._fallback(cfg, exc, registry, "Hermes artifact store miss; falling back to registry")
        key = f"{image_manifest_desc.digest}|{index_desc.digest}"
        once = self._entries.setdefault(key, _Once())

        async def init() -> SociArtifacts:
            self.requests_to_store += 1
            return await fetch_hermes_artifacts_by_descriptor(
                None, cfg, answered, index_desc, local_store, image_manifest_digest=image_manifest_desc.digest,
                events=events)

        try:
            return await once.run(init)
        except Exception as exc:
            if cfg.fallback_to_registry:
                self._entries.pop(key, None)
            return await self._fallback(cfg, exc, registry,
                                        "Hermes artifact store fetch failed; falling back to registry")

    @staticmethod
    async def _fallback(cfg: ExternalArtifactStoreConfig, hermes_exc: BaseException,
                        registry: Callable[[], Awaitable[SociArtifacts]], warning: str) -> SociArtifacts:
        if not cfg.fallback_to_registry:
            raise NoIndex(f"error trying Hermes artifact store: {_one_line(hermes_exc)}") from hermes_exc
        log.warning("%s: %s", warning, _one_line(hermes_exc))
        try:
            return await registry()
        except SociLabError as exc:
            raise NoIndex(f"error trying Hermes artifact store: {_one_line(hermes_exc)}; registry fallback: "
                          f"{_one_line(exc)}") from exc


__all__ = [
    "SociContexts",
    "fetch_hermes_artifacts",
    "fetch_hermes_artifacts_by_descriptor",
    "image_digest_ref",
    "resolve_hermes_index",
]
