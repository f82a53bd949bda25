"""``fetch_soci_artifacts``: find an image's SOCI index, fetch it and all its blobs, verified, and map each
layer to its zTOC (soci-snapshotter's ``FetchSociArtifacts`` + ``populateImageLayerToSociMapping``).

Order of work:

1. With ``[external_artifact_store] enable``, the Hermes hook is tried first (even when an explicit digest
   is given, whatever the pull modes say). Its failure is :class:`NoIndex` unless
   ``fallback_to_registry``, in which case registry discovery runs next (hermes.md §2.4).
2. Registry discovery (:mod:`.discovery`): explicit digest → v2 annotation → v1 referrers.
3. The index manifest: from the local store when it holds it, else from the source, verified by digest.
4. Every blob the index lists (zTOCs and prefetch artifacts) concurrently: from the local store when it
   holds it (re-hashed: a damaged copy is deleted and reported as :class:`DigestMismatch`), else
   downloaded into the local store through its verified writer — a blob that does not match its digest
   is never stored.
5. zTOCs are parsed (and validated) in worker threads. The index manifest is stored in the local store
   (and listed in its ``index.json``) only after every blob is in: an index in the store implies its
   blobs are there too.

Events: one ``index_fetch`` (discovery and the manifest; ``attrs.via``, ``attrs.local``) and one
``ztoc_fetch`` per blob (``layer`` = image layer digest, ``bytes`` = blob size, ``attrs.local``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..config import Config
from ..errors import DigestMismatch, FormatError, HermesError, NoIndex, NoZtoc, SizeMismatch, SociLabError
from ..oci import Descriptor, Digest, OCILayout, Reference
from ..oci import mediatypes as mt
from ..remote import IndexSelectionPolicy, RegistryClient, select_first_policy
from ..ztoc import Ztoc
from ..ztoc.index import (
    ANNOTATION_IMAGE_LAYER_DIGEST,
    ANNOTATION_SPAN_SIZE,
    SOCI_LAYER_MEDIA_TYPE,
    SOCI_PREFETCH_MEDIA_TYPE,
    PrefetchArtifact,
    SociIndex,
)
from ._tasks import run_all
from .discovery import IndexLocation, find_soci_index_desc
from .sources import ArtifactSource, LayoutSource, RegistrySource

if TYPE_CHECKING:
    from ..events import EventRecorder

#: blobs of one index fetched at once (upstream: unbounded)
FETCH_CONCURRENCY = 16


@dataclass
class SociArtifacts:
    """A fetched, verified, parsed SOCI index: layer digest → zTOC, and the prefetch artifacts.

    ``found_via`` says which step found the index (``explicit``, ``v2``, ``v1``, ``hermes``).
    """

    index_descriptor: Descriptor
    index: SociIndex
    found_via: str
    ztocs: dict[str, Ztoc] = field(default_factory=dict)
    ztoc_descriptors: dict[str, Descriptor] = field(default_factory=dict)
    prefetch: dict[str, PrefetchArtifact] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """``"v1"`` or ``"v2"``."""
        return self.index.version

    @property
    def digest(self) -> Digest:
        """The SOCI index digest."""
        return self.index_descriptor.digest

    def has_ztoc(self, layer_digest: str) -> bool:
        """Whether the layer is indexed (lazy) rather than left to a local unpack."""
        return str(layer_digest) in self.ztocs

    def ztoc_for(self, layer_digest: str) -> Ztoc:
        """The layer's parsed zTOC; :class:`NoZtoc` for a layer the index skipped ("sparse index")."""
        try:
            return self.ztocs[str(layer_digest)]
        except KeyError:
            raise NoZtoc(f"SOCI index {self.digest} has no zTOC for layer {layer_digest}") from None

    def ztoc_descriptor_for(self, layer_digest: str) -> Descriptor:
        """The zTOC descriptor in the index for a layer (its annotations carry the span size)."""
        try:
            return self.ztoc_descriptors[str(layer_digest)]
        except KeyError:
            raise NoZtoc(f"SOCI index {self.digest} has no zTOC for layer {layer_digest}") from None

    def span_size_for(self, layer_digest: str) -> int:
        """The span size the index declares for a layer (its zTOC's own when the annotation is missing)."""
        text = self.ztoc_descriptor_for(layer_digest).annotations.get(ANNOTATION_SPAN_SIZE, "")
        return int(text) if text.isdigit() else self.ztoc_for(layer_digest).span_size

    def prefetch_for(self, layer_digest: str) -> PrefetchArtifact | None:
        """The layer's prefetch artifact, if the index has one."""
        return self.prefetch.get(str(layer_digest))


class HermesFetcher(Protocol):
    """The hook for the Hermes external artifact store (written elsewhere, ``fetch_hermes_artifacts``).

    Called with keywords; stores what it fetched in ``local_store`` and returns the parsed artifacts (see
    :func:`parse_soci_artifacts`), or raises (any exception is a Hermes miss, handled by
    ``fallback_to_registry``).
    """

    def __call__(
        self, *, ref: Reference, image_manifest_desc: Descriptor, config: Config, local_store: OCILayout,
        events: EventRecorder | None,
    ) -> Awaitable[SociArtifacts]: ...


def _default_hermes() -> HermesFetcher:
    """``soci_lab.artifacts.hermes.fetch_hermes_artifacts`` when that module exists."""
    try:
        module = importlib.import_module(f"{__package__}.hermes")
        return module.fetch_hermes_artifacts
    except (ModuleNotFoundError, AttributeError):

        async def missing(**_kw: Any) -> SociArtifacts:
            raise HermesError("the external artifact store is enabled but this build has no Hermes client")

        return missing


def _source(client: RegistryClient | ArtifactSource, ref: Reference) -> ArtifactSource:
    if isinstance(client, RegistryClient):
        if ref.is_layout:
            return LayoutSource(OCILayout(ref.layout_path, create=False))  # type: ignore[arg-type]
        return RegistrySource(client, ref.repository)
    return client


def _one_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]


def _read_local(store: OCILayout, desc: Descriptor) -> bytes:
    """A blob of the local store, re-hashed; a damaged copy is deleted (so a retry fetches it again)."""
    try:
        data = store.read_blob(desc.digest)
    except DigestMismatch:
        store.delete_blob(desc.digest)
        raise DigestMismatch(
            f"blob {desc.digest} in the local store {store.root} does not match its digest; the damaged copy "
            "was removed"
        ) from None
    if len(data) != desc.size:
        raise SizeMismatch(f"blob {desc.digest} in {store.root} is {len(data)} bytes, its descriptor says {desc.size}")
    return data


async def _fetch_index(
    source: ArtifactSource, loc: IndexLocation, store: OCILayout
) -> tuple[Descriptor, SociIndex, bool]:
    local = store.has(loc.digest)
    if local:
        data = _read_local(store, Descriptor(mt.OCI_MANIFEST, loc.digest, loc.size if loc.size is not None else
                                             store.size(loc.digest)))
    else:
        expected = Descriptor(mt.OCI_MANIFEST, loc.digest, loc.size) if loc.size is not None else None
        _desc, data = await source.get_document(str(loc.digest), expected=expected)
    index = SociIndex.from_bytes(data, artifact_type=loc.artifact_type if loc.via == "v1" else None)
    desc = Descriptor(mt.OCI_MANIFEST, Digest.from_bytes(data, loc.digest.algorithm), len(data),
                      artifact_type=index.artifact_type)
    if desc.digest != loc.digest:
        raise DigestMismatch(f"SOCI index {loc.digest} hashes to {desc.digest}")
    return desc, index, local


def parse_soci_artifacts(index_desc: Descriptor, index: SociIndex, blobs: Mapping[str, bytes],
                         found_via: str) -> SociArtifacts:
    """Parse the zTOCs and prefetch artifacts of ``index`` from ``blobs`` (digest → verified bytes).

    Pure and CPU-bound (run it in a worker thread). Malformed blobs raise :class:`FormatError` naming the
    layer; a blob the index lists but ``blobs`` lacks raises ``KeyError``.
    """
    out = SociArtifacts(index_desc, index, found_via)
    for layer, desc in index.ztoc_descriptors().items():
        try:
            out.ztocs[layer] = Ztoc.from_bytes(blobs[str(desc.digest)])
        except FormatError as exc:
            raise type(exc)(f"zTOC {desc.digest} of layer {layer}: {exc}") from None
        out.ztoc_descriptors[layer] = desc
    for layer, desc in index.prefetch_descriptors().items():
        try:
            out.prefetch[layer] = PrefetchArtifact.from_bytes(blobs[str(desc.digest)])
        except FormatError as exc:
            raise FormatError(f"prefetch artifact {desc.digest} of layer {layer}: {exc}") from None
    return out


async def _fetch_blobs(
    source: ArtifactSource, index: SociIndex, store: OCILayout, events: EventRecorder | None, limit: int
) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    kinds = (SOCI_LAYER_MEDIA_TYPE, SOCI_PREFETCH_MEDIA_TYPE)
    wanted = {str(d.digest): d for d in index.blobs if d.media_type in kinds}

    async def one(desc: Descriptor) -> None:
        local = store.has(desc.digest)
        step = (events.step("ztoc_fetch", layer=desc.annotations.get(ANNOTATION_IMAGE_LAYER_DIGEST),
                            nbytes=desc.size, digest=str(desc.digest), media_type=desc.media_type, local=local)
                if events is not None else contextlib.nullcontext())
        with step:
            if not local:
                await source.fetch_blob_into(desc, store)
            blobs[str(desc.digest)] = await anyio.to_thread.run_sync(_read_local, store, desc)

    await run_all(one, wanted.values(), limit)
    return blobs


async def fetch_registry_artifacts(
    source: ArtifactSource,
    image_manifest_desc: Descriptor,
    *,
    config: Config,
    explicit_index_digest: str | None,
    local_store: OCILayout,
    events: EventRecorder | None,
    policy: IndexSelectionPolicy,
    max_concurrency: int,
) -> SociArtifacts:
    """Discovery (:func:`find_soci_index_desc`) and the fetch, from the image's own registry or layout."""
    step: contextlib.AbstractContextManager[dict[str, Any]] = (
        events.step("index_fetch") if events is not None else contextlib.nullcontext({}))
    with step as info:
        loc = await find_soci_index_desc(source, image_manifest_desc, config=config,
                                         explicit_index_digest=explicit_index_digest, local_store=local_store,
                                         policy=policy)
        index_desc, index, local = await _fetch_index(source, loc, local_store)
        info.update(nbytes=index_desc.size, digest=str(index_desc.digest), via=loc.via, local=local,
                    version=index.version, blobs=len(index.blobs))
    blobs = await _fetch_blobs(source, index, local_store, events, max_concurrency)
    artifacts = await anyio.to_thread.run_sync(parse_soci_artifacts, index_desc, index, blobs, loc.via)
    await anyio.to_thread.run_sync(store_index, local_store, index_desc, index.to_bytes())
    return artifacts


def store_index(store: OCILayout, index_desc: Descriptor, data: bytes) -> None:
    """Keep an index manifest in the local store and list it in ``index.json`` (its GC root)."""
    store.write_blob(data, index_desc.digest, index_desc.size)
    store.tag(Descriptor(mt.OCI_MANIFEST, index_desc.digest, index_desc.size,
                         artifact_type=index_desc.artifact_type), None)


async def fetch_soci_artifacts(
    client: RegistryClient | ArtifactSource,
    ref: str | Reference,
    image_manifest_desc: Descriptor,
    *,
    config: Config | None = None,
    explicit_index_digest: str | None = None,
    local_store: OCILayout,
    events: EventRecorder | None = None,
    policy: IndexSelectionPolicy = select_first_policy,
    hermes: HermesFetcher | Callable[..., Awaitable[SociArtifacts]] | None = None,
    max_concurrency: int = FETCH_CONCURRENCY,
) -> SociArtifacts:
    """Find, fetch (into ``local_store``, verified) and parse the SOCI artifacts of one image manifest.

    ``client`` is the :class:`~soci_lab.remote.RegistryClient` of REF's registry (or any
    :class:`~soci_lab.artifacts.sources.ArtifactSource`, e.g. a layout); ``ref`` names the image (its
    repository is used); ``image_manifest_desc`` is the platform manifest being mounted. ``config``
    (default: upstream's defaults) supplies the pull modes and ``[external_artifact_store]``; ``hermes``
    overrides the external-store hook. Raises :class:`AllLazyPullModesDisabled`, :class:`NoIndex`,
    :class:`DigestMismatch` / :class:`SizeMismatch` for damaged content, :class:`FormatError` for a
    malformed zTOC. See the module docstring for the order and the events.
    """
    cfg = config or Config()
    reference = Reference.parse(ref) if isinstance(ref, str) else ref
    source = _source(client, reference)
    registry = functools.partial(fetch_registry_artifacts, source, image_manifest_desc, config=cfg,
                                 explicit_index_digest=explicit_index_digest, local_store=local_store,
                                 events=events, policy=policy, max_concurrency=max_concurrency)
    store_cfg = cfg.external_artifact_store
    if not store_cfg.enable:
        return await registry()
    fetch_hermes = hermes or _default_hermes()
    try:
        return await fetch_hermes(ref=reference, image_manifest_desc=image_manifest_desc, config=cfg,
                                  local_store=local_store, events=events)
    except Exception as exc:  # any Hermes failure is a miss (hermes.md §2.4)
        hermes_error = _one_line(exc)
        if not store_cfg.fallback_to_registry:
            raise NoIndex(f"error trying Hermes artifact store: {hermes_error}") from exc
    try:
        return await registry()
    except SociLabError as exc:
        raise NoIndex(f"error trying Hermes artifact store: {hermes_error}; registry fallback: {_one_line(exc)}") \
            from exc


__all__ = [
    "FETCH_CONCURRENCY",
    "HermesFetcher",
    "SociArtifacts",
    "fetch_registry_artifacts",
    "fetch_soci_artifacts",
    "parse_soci_artifacts",
    "store_index",
]
