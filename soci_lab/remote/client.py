"""``RegistryClient``: the distribution-spec API of one registry host, over the retrying :class:`Transport`.

Pull side: ``/v2/`` ping, manifests (GET/HEAD with the full Accept list, digest-verified, size-capped,
Content-Type checked against the document), blobs (HEAD, verified in-memory GET, streaming verified
download into an :class:`~soci_lab.oci.OCILayout` or a file, resumable after breaks), inclusive ranged
reads (``get_content_with_range``), tag lists, image resolution (index → platform manifest → config).
Push side and referrers live in :mod:`.push` and :mod:`.referrers` and are reachable as methods here.

Every method takes the repository as a name (``"library/busybox"``) or as a
:class:`~soci_lab.oci.Reference` of this host; :meth:`RegistryClient.repository` gives a view bound to one
repository (the ``Repository``-style face, also a ``ReferrersCaller``).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx

from ..config import HTTPConfig
from ..errors import (
    DigestMismatch,
    InvalidInput,
    InvalidManifest,
    InvalidReference,
    NotARegistry,
    NotFound,
    RegistryError,
    ResponseTooLarge,
    SizeMismatch,
    TruncatedBody,
    UnsupportedMediaType,
)
from ..events import EventRecorder
from ..oci import Descriptor, Digest, ImageConfig, Index, Manifest, OCILayout, Platform, Reference, jsondoc, mediatypes
from ..oci.manifest import MAX_MANIFEST_SIZE, parse_manifest_or_index
from .auth import Credentials, load_credentials
from .links import next_link
from .ranges import Sink, check_range, fetch_into, get_content_with_range, parse_content_range
from .retry import redact_url
from .sinks import BlobSink, FileSink, ThreadedFeeder
from .transport import Exchange, RetryBudget, Transport

if TYPE_CHECKING:
    from .referrers import ReferrersResult

#: Blobs read into memory (configs, zTOCs, SOCI indexes) are capped at this size unless told otherwise.
MAX_IN_MEMORY_BLOB = 256 << 20
#: a manifest, index, config or zTOC whose bytes do not match their digest is asked for again this many
#: times (a corrupted response is usually transient: a proxy, a flaky cache) before the mismatch is reported
DOCUMENT_RETRIES = 2

_GENERIC_TYPES = frozenset({"", "application/json", "application/octet-stream", "text/plain",
                            "binary/octet-stream"})
_DOCUMENT_TYPES = mediatypes.MANIFEST_TYPES | mediatypes.INDEX_TYPES


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest or index as served: its bytes, media type, verified digest and parsed form."""

    data: bytes
    media_type: str
    digest: Digest
    doc: Manifest | Index

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data))

    @property
    def is_index(self) -> bool:
        return isinstance(self.doc, Index)


@dataclass(frozen=True)
class BlobInfo:
    """What a blob HEAD says: size, whether ranged GETs are supported, the served Content-Type."""

    digest: Digest
    size: int
    accept_ranges: bool
    content_type: str


@dataclass(frozen=True)
class ResolvedImage:
    """An image resolved down to one platform: optional index, the manifest, and the config."""

    reference: Reference
    manifest: Manifest
    manifest_descriptor: Descriptor
    config: ImageConfig
    index: Index | None = None
    index_descriptor: Descriptor | None = None

    @property
    def layers(self) -> list[Descriptor]:
        return self.manifest.layer_descriptors()


def _pull(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull",)


def _push(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull,push",)


def _media_type_of(response_headers: httpx.Headers) -> str:
    return response_headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


class RegistryClient:
    """An async client for one registry host; use as ``async with RegistryClient("host:port") as rc``.

    ``ref_or_host`` is a host (``127.0.0.1:5000``), a base URL (``http://127.0.0.1:5000``) or an image
    reference / :class:`Reference` (its repository becomes :attr:`default_repository`). Plain HTTP is used
    only for loopback hosts or with ``insecure=True``. ``creds`` is ``(user, password)`` or ``"user:pass"``;
    without it the docker/podman auth files are consulted. ``http_transport`` replaces httpx's network
    transport (tests of behaviour a real registry cannot be made to show; it turns the fast path off).
    ``fast_path`` (default on) reads bodies of ``FAST_MIN_BYTES`` (512 KiB, :mod:`soci_lab.fastpath`) and more
    with urllib3 over pooled keep-alive connections on worker threads (``fastpath.py``, ``fastpool.py``).
    ``ssl_context`` trusts a private CA (certificates are always verified; ``insecure`` only allows plain
    HTTP, it never turns verification off). ``anonymous`` never sends credentials, not even those of the
    docker/podman auth files (the artifact store's unauthenticated builds).
    """

    def __init__(
        self,
        ref_or_host: str | Reference,
        *,
        creds: Credentials | tuple[str, str] | str | None = None,
        insecure: bool = False,
        config: HTTPConfig | None = None,
        events: EventRecorder | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 64,
        fast_path: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        anonymous: bool = False,
    ) -> None:
        ref, base_url = _parse_target(ref_or_host, insecure)
        self.reference = ref
        self.default_repository = ref.repository or None
        self.host = ref.api_host
        self.base_url = base_url
        self.config = config or HTTPConfig()
        self.events = events
        credentials = Credentials.coerce(creds)
        note = None
        if anonymous and credentials is not None:
            raise InvalidInput("an anonymous client takes no credentials")
        if credentials is None and not anonymous:
            lookup = load_credentials(ref.registry or ref.api_host)
            credentials, note = lookup.credentials, lookup.note
        self.transport = Transport(base_url, creds=credentials, creds_note=note, config=self.config, events=events,
                                   http_transport=http_transport, max_connections=max_connections,
                                   fast_path=http_transport is None if fast_path is None else fast_path,
                                   ssl_context=ssl_context, insecure=insecure)
        self._referrers_api: bool | None = None

    # --- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    def repository(self, repo: str | Reference | None = None) -> Repository:
        """A view of one repository with the same methods minus the repository argument."""
        return Repository(self, self._repo(repo))

    # --- helpers --------------------------------------------------------------------------------------

    def _repo(self, repo: str | Reference | None) -> str:
        if isinstance(repo, Reference):
            if repo.is_layout:
                raise InvalidInput(f"{repo} is an OCI layout reference, not a registry one")
            if repo.api_host != self.host:
                raise InvalidInput(f"{repo} is on {repo.api_host}, but this client talks to {self.host}")
            return repo.repository
        if repo is None:
            if self.default_repository is None:
                raise InvalidInput("no repository given and the client was not created from an image reference")
            return self.default_repository
        if not isinstance(repo, str) or not repo:
            raise InvalidInput(f"not a repository name: {repo!r}")
        try:
            parsed = Reference.parse(f"{self.host}/{repo}")
        except InvalidReference:
            parsed = None
        if parsed is None or parsed.repository != repo:
            raise InvalidReference(f"invalid repository name {repo!r} (lowercase letters, digits, . _ - /)")
        return repo

    def _target(self, ref: str | Reference | None, reference: str | None) -> tuple[str, str]:
        if isinstance(ref, Reference) and reference is None:
            return self._repo(ref), ref.reference
        repo = self._repo(ref)
        if reference is None:
            raise InvalidInput("a tag or digest is needed")
        return repo, reference

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def blob_url(self, repo: str | Reference | None, digest: str) -> str:
        """``<base>/v2/<repo>/blobs/<digest>`` (the URL soci's HTTP fetcher reads spans from)."""
        return self.url(f"/v2/{self._repo(repo)}/blobs/{Digest(digest)}")

    def manifest_url(self, repo: str | Reference | None, reference: str) -> str:
        return self.url(f"/v2/{self._repo(repo)}/manifests/{reference}")

    @property
    def requests(self) -> int:
        """HTTP requests sent so far (each retry and auth round counts)."""
        return self.transport.counters.requests

    @property
    def bytes_received(self) -> int:
        """Response body bytes received so far, over all requests (what the network carried)."""
        return self.transport.counters.bytes

    # --- ping -----------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """``GET /v2/``: the registry speaks the distribution API and accepts our credentials (if it asks)."""
        await self.transport.send("GET", self.url("/v2/"), scopes=(), ok=(200,), read_limit=1 << 20,
                                  what=f"ping of {self.host}")

    async def _check_is_registry(self) -> None:
        """Raise :class:`NotARegistry` when ``GET /v2/`` answers neither 200 nor 401: the host is some other
        web server, and "HTTP 404" for a manifest would hide that. Nothing is raised for a registry."""
        ex = await self.transport.send("GET", self.url("/v2/"), scopes=None, ok=tuple(range(200, 600)),
                                       read_limit=1 << 20, what=f"probe of {self.host}")
        maybe_registry = ex.status in (200, 401, 403, 429) or (ex.status >= 500 and ex.status != 501)
        if not maybe_registry:
            raise NotARegistry(f"GET {self.url('/v2/')} answered {ex.status}: {self.host} is not an OCI registry "
                               "(a distribution-spec registry answers 200 or 401)", status=ex.status)

    # --- manifests ------------------------------------------------------------------------------------

    async def get_manifest(
        self,
        ref: str | Reference | None = None,
        reference: str | None = None,
        *,
        expected: Descriptor | None = None,
        accept: tuple[str, ...] = mediatypes.MANIFEST_ACCEPT,
        max_size: int = MAX_MANIFEST_SIZE,
    ) -> FetchedManifest:
        """GET a manifest or index by tag or digest, verified.

        By digest (or with ``expected``), the bytes must hash to that digest; by tag, to the
        ``Docker-Content-Digest`` the registry announces. A body over ``max_size`` is refused before it is
        read whole; the served Content-Type must agree with the document's ``mediaType``. Bytes that do not
        match the digest are asked for again up to :data:`DOCUMENT_RETRIES` times, then :class:`DigestMismatch`.
        """
        repo, reference = self._target(ref, reference)
        url = self.manifest_url(repo, reference)
        want: Digest | None = Digest(reference) if reference.startswith(("sha256:", "sha512:")) else None
        if expected is not None:
            want = expected.digest if want is None else want
            if want != expected.digest:
                raise InvalidInput(f"asked for {reference} but expected {expected.digest}")
        for attempt in range(DOCUMENT_RETRIES + 1):
            data, headers = await self._get_manifest_bytes(repo, reference, url, accept, max_size)
            try:
                return self._check_manifest(repo, reference, data, headers, want, expected)
            except DigestMismatch as exc:
                if attempt == DOCUMENT_RETRIES:
                    raise DigestMismatch(f"{exc} (after {attempt + 1} attempts)") from None
        raise AssertionError("unreachable")

    async def _get_manifest_bytes(
        self, repo: str, reference: str, url: str, accept: tuple[str, ...], max_size: int,
    ) -> tuple[bytes, httpx.Headers]:
        """One GET of a manifest (resumed after broken bodies within its retry budget): bytes and headers."""
        budget = RetryBudget(self.transport.policy)
        while True:
            try:
                ex = await self.transport.send(
                    "GET", url, headers={"Accept": ", ".join(accept)}, scopes=_pull(repo), stream=True,
                    budget=budget, what=f"manifest {repo}:{reference}",
                )
            except NotFound as exc:
                if exc.code is None:  # no distribution error body: is this a registry at all?
                    await self._check_is_registry()
                raise
            try:
                length = ex.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > max_size:
                    raise InvalidManifest(
                        f"manifest {repo}:{reference} is {length} bytes, over the {max_size}-byte cap")
                data = await ex.aread(limit=max_size)
            except ResponseTooLarge:
                raise InvalidManifest(f"manifest {repo}:{reference} is over the {max_size}-byte cap") from None
            except TruncatedBody as exc:
                await budget.spend("GET", url, str(exc).rpartition("(")[2].rstrip(")"), ex.status, None)
                continue
            finally:
                await ex.aclose()
            return data, ex.headers

    def _check_manifest(
        self,
        repo: str,
        reference: str,
        data: bytes,
        headers: httpx.Headers,
        want: Digest | None,
        expected: Descriptor | None,
    ) -> FetchedManifest:
        what = f"manifest {repo}:{reference}"
        if expected is not None and len(data) != expected.size:
            raise SizeMismatch(f"{what} is {len(data)} bytes, its descriptor says {expected.size}")
        announced = headers.get("Docker-Content-Digest")
        if want is None and announced:
            try:
                want = Digest(announced)
            except Exception:
                raise InvalidManifest(f"{what}: registry announced a malformed digest {announced[:80]!r}") from None
        digest = Digest.from_bytes(data, want.algorithm if want else "sha256")
        if want is not None and digest != want:
            raise DigestMismatch(f"{what} does not match its digest: expected {want}, got {digest}")
        declared = _media_type_of(headers)
        if declared not in _DOCUMENT_TYPES and declared not in _GENERIC_TYPES:
            raise InvalidManifest(f"{what} was served as {declared!r}, not a manifest or index media type")
        doc = parse_manifest_or_index(data, declared if declared in _DOCUMENT_TYPES else None)
        if declared in _DOCUMENT_TYPES and doc.media_type != declared:
            raise InvalidManifest(f"{what} was served as {declared} but is a {doc.media_type}")
        if expected is not None and expected.media_type in _DOCUMENT_TYPES and expected.media_type != doc.media_type:
            raise InvalidManifest(f"{what} is a {doc.media_type}, its descriptor says {expected.media_type}")
        if digest.algorithm != "sha256":
            digest = Digest.from_bytes(data, digest.algorithm)
        return FetchedManifest(data, doc.media_type, digest, doc)

    async def head_manifest(self, ref: str | Reference | None = None, reference: str | None = None) -> Descriptor:
        """HEAD a manifest: its descriptor (falls back to GET when the registry omits the digest)."""
        repo, reference = self._target(ref, reference)
        ex = await self.transport.send(
            "HEAD", self.manifest_url(repo, reference), headers={"Accept": ", ".join(mediatypes.MANIFEST_ACCEPT)},
            scopes=_pull(repo), what=f"manifest {repo}:{reference}",
        )
        announced = ex.headers.get("Docker-Content-Digest")
        length = ex.headers.get("Content-Length", "")
        media_type = _media_type_of(ex.headers)
        if not announced or not length.isdigit() or media_type not in _DOCUMENT_TYPES:
            return (await self.get_manifest(repo, reference)).descriptor
        digest = Digest(announced)
        if reference.startswith(("sha256:", "sha512:")) and digest != reference:
            raise DigestMismatch(f"manifest {repo}@{reference}: registry announced digest {digest}")
        return Descriptor(media_type, digest, int(length))

    async def put_manifest(
        self, repo: str | Reference | None, data: bytes, media_type: str, reference: str | None = None
    ) -> tuple[Descriptor, httpx.Headers]:
        """PUT a manifest/index under a tag or its digest (default); checks it parses and the echoed digest."""
        repo = self._repo(repo)
        if media_type not in _DOCUMENT_TYPES:
            raise UnsupportedMediaType(f"cannot push a manifest of media type {media_type!r}")
        doc = parse_manifest_or_index(data, media_type)
        if doc.media_type != media_type:
            raise InvalidManifest(f"document says it is {doc.media_type}, pushed as {media_type}")
        digest = Digest.from_bytes(data)
        reference = reference or str(digest)
        if reference.startswith(("sha256:", "sha512:")) and Digest(reference) != Digest.from_bytes(
            data, Digest(reference).algorithm
        ):
            raise DigestMismatch(f"manifest pushed as {reference} hashes to {digest}")
        ex = await self.transport.send(
            "PUT", self.manifest_url(repo, reference), headers={"Content-Type": media_type}, content=bytes(data),
            scopes=_push(repo), ok=(200, 201, 202), what=f"push of manifest {repo}:{reference}",
        )
        echoed = ex.headers.get("Docker-Content-Digest")
        if echoed and echoed.startswith("sha256:") and echoed != digest:
            raise DigestMismatch(f"registry stored manifest {repo}:{reference} as {echoed}, expected {digest}")
        return Descriptor(media_type, digest, len(data)), ex.headers

    async def delete_manifest(self, ref: str | Reference | None, digest: str) -> None:
        repo = self._repo(ref)
        await self.transport.send("DELETE", self.manifest_url(repo, str(Digest(digest))), scopes=_push(repo),
                                  ok=(200, 202), what=f"delete of manifest {repo}@{digest}")

    # --- blobs ----------------------------------------------------------------------------------------

    async def head_blob(self, repo: str | Reference | None, digest: str) -> BlobInfo:
        """Size, range support and Content-Type of a blob. ``NotFound`` if absent.

        As soci's ``getLayerSize``: HEAD first; when the HEAD is refused (403/405, some CDNs) or carries no
        length, a ``GET`` of ``bytes=0-1`` and the total of its ``Content-Range`` (or a 200's length).
        """
        repo = self._repo(repo)
        d = Digest(digest)
        url = self.blob_url(repo, d)
        try:
            ex = await self.transport.send("HEAD", url, scopes=_pull(repo), follow_redirects=True,
                                           what=f"blob {repo}@{d}")
            length = ex.headers.get("Content-Length", "")
            if length.isdigit():
                return BlobInfo(d, int(length), ex.headers.get("Accept-Ranges", "").lower() == "bytes",
                                ex.headers.get("Content-Type", "application/octet-stream"))
        except RegistryError as exc:
            if exc.status not in (403, 405):
                raise
        async with await self.transport.send(
            "GET", url, headers={"Range": "bytes=0-1"}, scopes=_pull(repo), ok=(200, 206), stream=True,
            follow_redirects=True, what=f"blob {repo}@{d}",
        ) as gex:
            parsed = parse_content_range(gex.headers.get("Content-Range")) if gex.status == 206 else None
            length = gex.headers.get("Content-Length", "")
            if parsed is not None and parsed[2] is not None:
                size = parsed[2]
            elif gex.status == 200 and length.isdigit():
                size = int(length)
            else:
                raise RegistryError(f"blob {repo}@{d}: the registry tells neither its length nor its range total")
            ranges = gex.status == 206 or gex.headers.get("Accept-Ranges", "").lower() == "bytes"
            return BlobInfo(d, size, ranges, gex.headers.get("Content-Type", "application/octet-stream"))

    async def blob_exists(self, repo: str | Reference | None, digest: str) -> bool:
        from ..errors import NotFound

        try:
            await self.head_blob(repo, digest)
        except NotFound:
            return False
        return True

    async def get_blob(
        self, repo: str | Reference | None, digest: str | Descriptor, size: int | None = None,
        *, max_size: int = MAX_IN_MEMORY_BLOB,
    ) -> bytes:
        """A whole blob in memory, verified against its digest (and size when known). Bytes that do not match
        the digest are asked for again up to :data:`DOCUMENT_RETRIES` times, then :class:`DigestMismatch`."""
        d, size = _digest_size(digest, size)
        if size is not None and size > max_size:
            raise InvalidInput(f"blob {d} is {size} bytes, over the {max_size}-byte in-memory limit")
        for attempt in range(DOCUMENT_RETRIES + 1):
            try:
                return await self._get_blob_once(repo, d, size, max_size)
            except DigestMismatch as exc:
                if attempt == DOCUMENT_RETRIES:
                    raise DigestMismatch(f"{exc} (after {attempt + 1} attempts)") from None
        raise AssertionError("unreachable")

    async def _get_blob_once(self, repo: str | Reference | None, d: Digest, size: int | None, max_size: int) -> bytes:
        parts: list[bytes] = []
        verifier = d.verifier(size)
        total = 0

        async def sink(chunk: bytes) -> None:
            nonlocal total
            total += len(chunk)
            if total > max_size:
                raise InvalidInput(f"blob {d} is over the {max_size}-byte in-memory limit")
            verifier.update(chunk)
            parts.append(chunk)

        await self._fetch(repo, d, size, sink)
        verifier.check(f"blob {d}")
        return b"".join(parts)

    async def _fetch(self, repo: str | Reference | None, d: Digest, size: int | None, sink: Sink) -> int:
        return await self.fetch_whole_into(repo, d, size, sink)

    async def fetch_whole_into(
        self, repo: str | Reference | None, digest: str, size: int | None, sink: Sink, *,
        cache_redirect: bool = False,
    ) -> int:
        """The whole blob into ``sink``: no Range on the first GET, resumed with one after a break."""
        repo = self._repo(repo)
        upper = size - 1 if size else None  # an empty (or unknown-length) blob: read to the end
        return await fetch_into(self.transport, self.blob_url(repo, digest), sink, lower=0, upper=upper,
                                ranged=False, scopes=_pull(repo), cache_redirect=cache_redirect, expect_total=size)

    async def fetch_blob(
        self,
        repo: str | Reference | None,
        digest: str | Descriptor,
        size: int | None = None,
        *,
        layout: OCILayout | None = None,
        path: str | os.PathLike[str] | None = None,
        batch: int = 4 << 20,
    ) -> Digest:
        """Download a blob into ``layout`` (via its verified writer) or to ``path``; nothing unverified stays.

        The body streams to a worker thread that hashes and writes it; a break mid-way resumes with a ranged
        GET from the first missing byte. Already in ``layout`` → nothing is fetched.
        """
        d, size = _digest_size(digest, size)
        if (layout is None) == (path is None):
            raise InvalidInput("fetch_blob needs exactly one of layout= or path=")
        if layout is not None and layout.has(d):
            return d
        sink: BlobSink = layout.writer(d, size) if layout is not None else FileSink(Path(path), d, size)  # type: ignore[arg-type]
        t0 = self.events.now() if self.events is not None else 0.0
        feed = ThreadedFeeder(sink, batch)
        try:
            async with feed:
                await self._fetch(repo, d, size, feed)
            committed = await anyio.to_thread.run_sync(sink.commit)
        except BaseException as exc:
            sink.abort()
            self._blob_event(t0, d, feed.fed, exc)
            raise
        self._blob_event(t0, d, feed.fed, None)
        return committed

    def _blob_event(self, t0: float, digest: Digest, nbytes: int, exc: BaseException | None) -> None:
        """One ``blob_download`` event per whole-blob download (its requests are ``http_request`` events)."""
        if self.events is None:
            return
        error = None if exc is None else (str(exc) or type(exc).__name__).splitlines()[0]
        self.events.emit("blob_download", t0, layer=str(digest), nbytes=nbytes, ok=exc is None, error=error,
                         host=self.host)

    @asynccontextmanager
    async def open_blob(self, repo: str | Reference | None, digest: str) -> AsyncIterator[Exchange]:
        """The raw streaming response of a blob GET (no verification, no resumption) for callers that tee."""
        repo = self._repo(repo)
        d = Digest(digest)
        ex = await self.transport.send("GET", self.blob_url(repo, d), scopes=_pull(repo), stream=True,
                                       follow_redirects=True, what=f"blob {repo}@{d}")
        try:
            yield ex
        finally:
            await ex.aclose()

    async def get_content_with_range(self, url: str, lower: int, upper: int, *, cache_redirect: bool = True) -> bytes:
        """Bytes ``lower..upper`` (inclusive) of ``url`` (soci's ``GetContentWithRange``)."""
        repo = self._repo_of_url(url)
        scopes = _pull(repo) if repo else ()
        return await get_content_with_range(self.transport, url, lower, upper, scopes=scopes,
                                            cache_redirect=cache_redirect)

    async def resolve_redirect(self, url: str) -> str:
        """Upstream's ``redirect``: ``GET Range: bytes=0-1`` of ``url`` afresh (a cached redirect forgotten
        first) and the URL that answered it (``url`` itself when not redirected)."""
        self.transport.redirects.pop(url, None)
        await self.get_content_with_range(url, 0, 1)
        return self.transport.redirects.get(url, url)

    async def read_blob_range(self, repo: str | Reference | None, digest: str, lower: int, upper: int) -> bytes:
        """Bytes ``lower..upper`` (inclusive) of a blob in ``repo``."""
        check_range(lower, upper)
        return await self.get_content_with_range(self.blob_url(repo, digest), lower, upper)

    async def fetch_range_into(
        self, repo: str | Reference | None, digest: str, lower: int, upper: int, sink: Sink, *,
        cache_redirect: bool = True, budget: RetryBudget | None = None,
    ) -> int:
        """Stream bytes ``lower..upper`` of a blob into ``async sink(chunk)``; resumes after breaks."""
        repo = self._repo(repo)
        return await fetch_into(self.transport, self.blob_url(repo, digest), sink, lower=lower, upper=upper,
                                scopes=_pull(repo), cache_redirect=cache_redirect, budget=budget)

    def _repo_of_url(self, url: str) -> str | None:
        u = httpx.URL(url)
        if not self.transport.same_origin(u) or not u.path.startswith("/v2/") or "/blobs/" not in u.path:
            return None
        return u.path[4:].rsplit("/blobs/", 1)[0]

    # --- tags -----------------------------------------------------------------------------------------

    async def list_tags(self, repo: str | Reference | None = None, page_size: int | None = None) -> list[str]:
        """Every tag of ``repo`` (following ``Link: rel="next"`` pagination)."""
        repo = self._repo(repo)
        url: str | None = self.url(f"/v2/{repo}/tags/list")
        params = [("n", str(page_size))] if page_size else None
        tags: list[str] = []
        while url:
            ex = await self.transport.send("GET", url, params=params, scopes=_pull(repo), read_limit=16 << 20,
                                           what=f"tag list of {repo}")
            doc = jsondoc.loads_object(ex.content, f"tag list of {repo}", error=RegistryError)
            found = doc.get("tags") or []
            tags.extend(t for t in (found if isinstance(found, list) else []) if isinstance(t, str))
            url = next_link(ex.headers.get("Link"), ex.url)
            params = None
        return tags

    # --- image resolution -----------------------------------------------------------------------------

    async def resolve_image(self, ref: str | Reference, platform: Platform | None = None) -> ResolvedImage:
        """Manifest or index → the platform's manifest → its config, every document verified."""
        if isinstance(ref, str):
            try:
                parsed = Reference.parse(ref)
            except InvalidReference:
                parsed = None
            ref = parsed if parsed is not None and parsed.api_host == self.host else Reference.parse(
                f"{self.host}/{ref}")
        top = await self.get_manifest(ref)
        index = index_desc = None
        if isinstance(top.doc, Index):
            index, index_desc = top.doc, top.descriptor
            chosen = top.doc.select(platform)
            fetched = await self.get_manifest(ref.repository, str(chosen.digest), expected=chosen)
        else:
            fetched = top
        manifest = fetched.doc
        if not isinstance(manifest, Manifest):
            raise InvalidManifest(f"{ref}: an index entry points at another index, not an image manifest")
        if manifest.config.media_type not in mediatypes.CONFIG_TYPES:
            raise UnsupportedMediaType(f"{ref}: config media type {manifest.config.media_type!r} is not an image "
                                       "config")
        raw = await self.get_blob(ref.repository, manifest.config, max_size=MAX_MANIFEST_SIZE * 4)
        return ResolvedImage(ref, manifest, fetched.descriptor, ImageConfig.from_bytes(raw), index, index_desc)

    # --- push and referrers (implemented in push.py / referrers.py) -----------------------------------

    async def push_blob(
        self,
        repo: str | Reference | None,
        data_or_path: bytes | str | os.PathLike[str],
        digest: str | None = None,
        size: int | None = None,
        *,
        chunk_size: int | None = None,
        mount_from: str | None = None,
        skip_existing: bool = True,
    ) -> Descriptor:
        """Upload a blob (monolithic, or chunked PATCHes with ``chunk_size``; cross-repo mount first with
        ``mount_from``). Returns its descriptor (media type ``application/octet-stream``)."""
        from .push import push_blob

        return await push_blob(self, self._repo(repo), data_or_path, digest, size, chunk_size=chunk_size,
                               mount_from=mount_from, skip_existing=skip_existing)

    async def mount_blob(self, repo: str | Reference | None, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; True when mounted, False when the registry declined (202)."""
        from .push import mount_blob

        return await mount_blob(self, self._repo(repo), digest, from_repo)

    async def push_manifest(
        self, repo: str | Reference | None, doc_bytes: bytes, media_type: str, tag_or_digest: str | None = None
    ) -> Descriptor:
        """PUT a manifest; when it has a ``subject`` and the registry has no referrers API, also update the
        referrers tag-schema index (as oras does)."""
        from .push import push_manifest

        return await push_manifest(self, self._repo(repo), doc_bytes, media_type, tag_or_digest)

    async def referrers(
        self, repo: str | Reference | None, subject: str | Descriptor, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """Referrers of ``subject`` (API, or the tag-schema fallback), filtered by ``artifact_type``."""
        from .referrers import list_referrers

        result: ReferrersResult = await list_referrers(self, self._repo(repo), subject, artifact_type)
        return result.descriptors


class Repository:
    """One repository of a :class:`RegistryClient`: the same methods without the repository argument.

    Also a ``ReferrersCaller`` (``referrers(desc, artifact_type)``), so an ``OCIArtifactClient`` can wrap it.
    """

    def __init__(self, client: RegistryClient, name: str) -> None:
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"Repository({self.client.host}/{self.name})"

    async def get_manifest(self, reference: str, **kw: object) -> FetchedManifest:
        return await self.client.get_manifest(self.name, reference, **kw)  # type: ignore[arg-type]

    async def head_manifest(self, reference: str) -> Descriptor:
        return await self.client.head_manifest(self.name, reference)

    async def push_manifest(self, doc_bytes: bytes, media_type: str, tag_or_digest: str | None = None) -> Descriptor:
        return await self.client.push_manifest(self.name, doc_bytes, media_type, tag_or_digest)

    async def head_blob(self, digest: str) -> BlobInfo:
        return await self.client.head_blob(self.name, digest)

    async def get_blob(self, digest: str | Descriptor, size: int | None = None) -> bytes:
        return await self.client.get_blob(self.name, digest, size)

    async def fetch_blob(self, digest: str | Descriptor, size: int | None = None, **kw: object) -> Digest:
        return await self.client.fetch_blob(self.name, digest, size, **kw)  # type: ignore[arg-type]

    async def read_blob_range(self, digest: str, lower: int, upper: int) -> bytes:
        return await self.client.read_blob_range(self.name, digest, lower, upper)

    def blob_url(self, digest: str) -> str:
        return self.client.blob_url(self.name, digest)

    async def push_blob(self, data_or_path: bytes | str | os.PathLike[str], digest: str | None = None,
                        size: int | None = None, **kw: object) -> Descriptor:
        return await self.client.push_blob(self.name, data_or_path, digest, size, **kw)  # type: ignore[arg-type]

    async def list_tags(self) -> list[str]:
        return await self.client.list_tags(self.name)

    async def referrers(self, desc: Descriptor | str, artifact_type: str | None = None) -> list[Descriptor]:
        return await self.client.referrers(self.name, desc, artifact_type)


def _digest_size(digest: str | Descriptor, size: int | None) -> tuple[Digest, int | None]:
    if isinstance(digest, Descriptor):
        if size is not None and size != digest.size:
            raise InvalidInput(f"size {size} disagrees with the descriptor's {digest.size}")
        return digest.digest, digest.size
    return Digest(digest), size


def _parse_target(ref_or_host: str | Reference, insecure: bool) -> tuple[Reference, str]:
    """(reference-or-host-only reference, base URL) for the constructor."""
    if isinstance(ref_or_host, Reference):
        if ref_or_host.is_layout:
            raise InvalidInput(f"{ref_or_host} is an OCI layout, not a registry")
        return ref_or_host, ref_or_host.base_url(insecure)
    text = ref_or_host.strip() if isinstance(ref_or_host, str) else ""
    if not text:
        raise InvalidReference(f"not a registry host or reference: {ref_or_host!r}")
    if text.startswith(("http://", "https://")):
        u = httpx.URL(text)
        host = u.netloc.decode()
        ref = Reference(host, "")
        if u.scheme == "http" and not (insecure or ref.is_loopback()):
            raise InvalidInput(f"refusing plain HTTP to {host}: not a loopback host (pass insecure=True)")
        return ref, f"{u.scheme}://{host}"
    if "/" in text:
        ref = Reference.parse(text)
        if ref.is_layout:
            raise InvalidInput(f"{text} is an OCI layout, not a registry")
        return ref, ref.base_url(insecure)
    ref = Reference.parse(f"{text}/x")
    ref = Reference(ref.registry, "")
    return ref, ref.base_url(insecure)


__all__ = [
    "BlobInfo",
    "FetchedManifest",
    "RegistryClient",
    "Repository",
    "ResolvedImage",
    "redact_url",
]
