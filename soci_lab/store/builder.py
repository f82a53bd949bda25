"""One build of the store: pull an image, build its zTOCs and a SOCI v1 index, apply a profile, keep it.

Hermes's controller builder (hermes.md §4.3), with soci_lab's own parts instead of containerd's:

1. :func:`resolve_build` — REF (registry or ``oci:`` layout) resolved with :mod:`soci_lab.remote` down to
   the platform's manifest and config, every document verified. The artifact is keyed by the digest ref
   ``<locator>@<manifest digest>`` (the form the daemon asks for), the platform string asked for, and the
   profile's acceleration key.
2. :func:`run_build` — a Ready row already there → nothing to do (``cached``). Else the row goes to
   ``Building``; the layers are downloaded into a temporary directory, each verified against its digest by
   the registry client (a tampered layer fails the build: nothing unverified is indexed); layers read in
   place from a layout are hashed first. zTOCs come from :func:`soci_lab.ztoc.index.build_soci_index`
   (worker threads), always a **v1** index with ``subject`` = the image manifest, stamped
   ``com.amazon.soci.build-tool-identifier: Hermes Builder v0.1`` (configurable) and with the xattr
   optimisation on, as Hermes's ``--optimizations xattr``. The profile (:mod:`.profiles`) adds its prefetch
   artifacts (after the zTOCs) and index annotations. :meth:`StoreDB.put_ready` re-verifies every blob and
   stores the index, zTOCs and prefetch artifacts with the layer rows in one transaction; the row is
   ``Ready``. Any failure marks it ``Failed`` with a one-line error.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ..errors import AuthenticationError, DigestMismatch, SizeMismatch, SociLabError, StoreError
from ..oci import Descriptor, Digest, ImageConfig, Platform, Reference
from ..oci import mediatypes as mt
from ..ztoc.index import (
    ANNOTATION_BUILD_TOOL_IDENTIFIER,
    SOCI_LAYER_MEDIA_TYPE,
    SociIndex,
    build_soci_index,
    prefetch_descriptor,
)
from .db import ArtifactInfo, ArtifactKey, StoreDB, StoredBlob
from .profiles import Profile

if TYPE_CHECKING:
    from ..artifacts import ArtifactSource
    from ..events import EventRecorder
    from ..remote import RegistryClient

#: what Hermes's controller stamps on its indexes
HERMES_BUILD_TOOL_IDENTIFIER = "Hermes Builder v0.1"
#: layers downloaded at once per build
DOWNLOAD_CONCURRENCY = 4


@dataclass(frozen=True)
class BuildSettings:
    """The store's build knobs (Hermes's controller flags)."""

    span_size: int = 4 << 20
    #: for profiles that do not set their own (``none``); startup/trace profiles use 0
    min_layer_size: int = 10 << 20
    build_tool_identifier: str = HERMES_BUILD_TOOL_IDENTIFIER
    optimize_xattrs: bool = True
    max_workers: int = 2
    insecure: bool = False
    creds: str | None = None
    #: retries of each request while the image is being resolved (the layers get the client's usual
    #: ``[http]`` policy): an unreachable or unknown registry fails the build in well under a second instead
    #: of holding a build slot through eight exponential back-offs
    resolve_retries: int = 2
    #: seconds the whole resolution (manifests, config) may take: a registry answering slowly on purpose
    #: holds a build slot this long at most before the build fails
    resolve_timeout: float = 30.0


@dataclass(frozen=True)
class BuildRequest:
    """What to build: the image as asked for, the platform string, the profile."""

    image: str
    platform: str
    profile: Profile
    #: with the store's registry credentials (a build token / local-socket request, or an in-process
    #: caller); False: anonymously, no credentials of any kind (:mod:`.auth`)
    trusted: bool = True


@dataclass
class ResolvedBuild:
    """An image resolved for a build (``key`` is where its artifact row lives)."""

    request: BuildRequest
    key: ArtifactKey
    info: ArtifactInfo
    manifest_descriptor: Descriptor
    layers: list[Descriptor]
    config: ImageConfig
    source: ArtifactSource
    client: RegistryClient | None
    events: EventRecorder | None = None

    async def aclose(self) -> None:
        """Close the registry client."""
        if self.client is not None:
            await self.client.aclose()


@dataclass(frozen=True)
class BuildOutcome:
    """How a build ended: ``Ready`` (``cached`` when nothing had to be built) or ``Failed``."""

    status: str
    image_digest_ref: str
    index_digest: str = ""
    error: str = ""
    cached: bool = False


def locator(ref: Reference) -> str:
    """``registry/repository`` (or ``oci:PATH``): the digest ref's left side."""
    return f"oci:{ref.layout_path}" if ref.is_layout else f"{ref.registry}/{ref.repository}"


def digest_ref(ref: Reference, manifest_digest: str) -> str:
    """``<locator>@<manifest digest>``."""
    return f"{locator(ref)}@{manifest_digest}"


def pending_key(req: BuildRequest) -> ArtifactKey:
    """The row a build that has not resolved its image yet is recorded under (its source ref)."""
    ref = Reference.parse(req.image)
    name = digest_ref(ref, ref.digest) if ref.digest else str(ref)
    return ArtifactKey(name, req.platform, req.profile.key())


async def resolve_build(req: BuildRequest, settings: BuildSettings,
                        events: EventRecorder | None = None) -> ResolvedBuild:
    """Step 1: resolve REF to its platform manifest and config (verified); see the module docstring.
    ``events`` records the registry client's ``http_request``/``blob_download`` events of the whole build."""
    from ..artifacts import open_source, resolve_ref

    ref = Reference.parse(req.image)
    client = None
    if ref.is_layout and not req.trusted:
        raise StoreError(f"{req.image}: an anonymous build cannot read OCI layouts on the store's host")
    if not ref.is_layout:
        from ..remote import RegistryClient
        from ..remote.retry import RetryPolicy

        client = RegistryClient(ref, creds=settings.creds if req.trusted else None, anonymous=not req.trusted,
                                insecure=settings.insecure, events=events)
        full_policy = client.transport.policy
        client.transport.policy = RetryPolicy(min(settings.resolve_retries, full_policy.max_retries),
                                              full_policy.min_wait, full_policy.max_wait)
    try:
        src = open_source(ref, client)
        with anyio.fail_after(settings.resolve_timeout):
            resolved = await resolve_ref(src, ref, Platform.parse(req.platform))
    except TimeoutError:
        if client is not None:
            await client.aclose()
        raise StoreError(f"resolving {req.image} took longer than {settings.resolve_timeout:g}s") from None
    except BaseException as exc:
        if client is not None:
            await client.aclose()
        if not req.trusted and isinstance(exc, AuthenticationError):
            raise AuthenticationError(f"anonymous build (no build token): {one_line(exc)}") from None
        raise
    if client is not None:
        client.transport.policy = full_policy
    m = resolved.manifest_descriptor
    key = ArtifactKey(digest_ref(ref, m.digest), req.platform, req.profile.key())
    min_layer = req.profile.min_layer_size if req.profile.min_layer_size is not None else settings.min_layer_size
    info = ArtifactInfo(str(ref), str(m.digest), str(resolved.manifest.config.digest), settings.span_size, min_layer)
    return ResolvedBuild(req, key, info, m, list(resolved.manifest.layers), resolved.config, src, client, events)


def _check_file(path: Path, desc: Descriptor) -> None:
    size = path.stat().st_size
    if size != desc.size:
        raise SizeMismatch(f"layer {desc.digest} is {size} bytes, its descriptor says {desc.size}")
    with path.open("rb") as f:
        got = Digest.from_file(f, desc.digest.algorithm)
    if got != desc.digest:
        raise DigestMismatch(f"layer {desc.digest} hashes to {got}")


async def _layer_files(rb: ResolvedBuild, wanted: list[Descriptor], tmp: Path) -> dict[str, Path]:
    from ..artifacts import LayoutSource, RegistrySource

    paths: dict[str, Path] = {}
    limiter = anyio.CapacityLimiter(DOWNLOAD_CONCURRENCY)

    async def one(d: Descriptor) -> None:
        async with limiter:
            if isinstance(rb.source, LayoutSource):
                path = rb.source.blob_path(d)
                await anyio.to_thread.run_sync(_check_file, path, d)
            else:
                assert isinstance(rb.source, RegistrySource)
                path = tmp / d.digest.hex
                await rb.source.fetch_blob_to(d, path)  # verified by the registry client
            paths[str(d.digest)] = path

    async with anyio.create_task_group() as tg:
        for d in {str(d.digest): d for d in wanted}.values():
            tg.start_soon(one, d)
    return paths


def assemble(rb: ResolvedBuild, settings: BuildSettings, open_layer: Callable[[Descriptor], Path]) \
        -> tuple[StoredBlob, list[StoredBlob], list[tuple[str, str, int]]]:
    """CPU part (run in a worker thread): zTOCs, the profile's prefetch artifacts, the v1 index."""
    built = build_soci_index(
        rb.layers, open_layer, version="v1", subject=rb.manifest_descriptor, span_size=settings.span_size,
        min_layer_size=rb.info.min_layer_size, build_tool_identifier=settings.build_tool_identifier,
        optimize_xattrs=settings.optimize_xattrs, max_workers=settings.max_workers, recorder=rb.events,
    )
    ztoc_descs = [d for d in built.index.blobs if d.media_type == SOCI_LAYER_MEDIA_TYPE]
    ordered = [(str(d.digest), built.ztocs[str(d.digest)]) for d in rb.layers if str(d.digest) in built.ztocs]
    chosen = rb.request.profile.select(ordered, rb.config)
    blobs = [StoredBlob(str(d.digest), d.media_type, built.blobs[str(d.digest)]) for d in ztoc_descs]
    descs = list(ztoc_descs)
    for layer, _z in ordered:
        art = chosen.artifacts.get(layer)
        if art is None:
            continue
        data = art.to_bytes()
        pd = prefetch_descriptor(data, layer).with_annotations(**chosen.descriptor_annotations.get(layer, {}))
        descs.append(pd)
        blobs.append(StoredBlob(str(pd.digest), pd.media_type, data))
    annotations = {ANNOTATION_BUILD_TOOL_IDENTIFIER: settings.build_tool_identifier,
                   **rb.request.profile.index_annotations()}
    index = SociIndex("v1", descs, rb.manifest_descriptor, annotations)
    data = index.to_bytes()
    index_blob = StoredBlob(str(Digest.from_bytes(data)), mt.OCI_MANIFEST, data)
    layers = [(d.annotations["com.amazon.soci.image-layer-digest"], str(d.digest), d.size) for d in ztoc_descs]
    return index_blob, blobs, layers


async def run_build(db: StoreDB, rb: ResolvedBuild, settings: BuildSettings) -> BuildOutcome:
    """Step 2: build and keep the artifact of a resolved image; never raises for a build failure."""
    name = rb.key.image_digest_ref
    if db.has_ready(rb.key) or not db.mark_building(rb.key, rb.info):
        row = db.get(rb.key) or {}
        return BuildOutcome("Ready", name, row.get("index_digest", ""), cached=True)
    try:
        wanted = [d for d in rb.layers if mt.is_layer(d.media_type) and d.size >= rb.info.min_layer_size]
        with tempfile.TemporaryDirectory(prefix="soci-lab-store-") as tmp:
            files = await _layer_files(rb, wanted, Path(tmp))
            work = functools.partial(assemble, rb, settings, lambda d: files[str(d.digest)])
            index, blobs, layers = await anyio.to_thread.run_sync(work)
        await anyio.to_thread.run_sync(db.put_ready, rb.key, rb.info, index, blobs, layers)
    except Exception as exc:  # a build failure of any kind is recorded, never raised into the queue
        cause = root_cause(exc)
        error = one_line(cause) if isinstance(cause, SociLabError | OSError) else \
            f"{type(cause).__name__}: {one_line(cause)}"
        db.mark_failed(rb.key, rb.info, error)
        return BuildOutcome("Failed", name, error=error)
    return BuildOutcome("Ready", name, index.digest)


def root_cause(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (a task group's failure), else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def one_line(exc: BaseException) -> str:
    """An exception as one line (its type when it has no message); groups give their first leaf."""
    exc = root_cause(exc)
    return (str(exc) or type(exc).__name__).splitlines()[0]


__all__ = [
    "HERMES_BUILD_TOOL_IDENTIFIER",
    "BuildOutcome",
    "BuildRequest",
    "BuildSettings",
    "ResolvedBuild",
    "assemble",
    "digest_ref",
    "locator",
    "pending_key",
    "resolve_build",
    "run_build",
]
