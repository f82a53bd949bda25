"""``index create``: build zTOCs and a SOCI index for an image in a registry or an OCI layout, and publish it.

The steps (``soci create`` + ``soci push`` for v1, ``soci convert`` for v2):

1. Resolve REF: an image index → the platform's manifest (the host's unless ``platform`` is given; SOCI
   index entries and attestations are never chosen), or a bare manifest; then its config.
2. Get the layers worth indexing (layer media type, at least ``min_layer_size`` bytes): from a registry
   they are downloaded concurrently into a temporary directory, each verified against its digest; in a
   layout they are read in place.
3. Build every zTOC and the index with the pure builder (:func:`soci_lab.ztoc.index.build_soci_index`),
   in worker threads — inflating and hashing release the GIL, so the cores are really used. A layer's
   zTOC is built as soon as that layer has arrived, while the others are still downloading.
4. Push the zTOC blobs, the prefetch artifacts and the ``{}`` config, then the index manifest.
5. v1: the index carries ``subject`` = the image manifest; the registry client updates the referrers
   tag-schema index on registries without the referrers API (distribution 2.8), so discovery finds it
   again either way. v2: the image manifest is rewritten as OCI with ``com.amazon.soci.index-digest``,
   and REF's tag is moved to the SOCI-enabled image index (:mod:`.convert`). With a digest-only REF
   there is no tag to move: the new index is pushed by digest and reported.

Children are pushed before parents, so REF never names anything the registry does not hold.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .._sync import run_sync
from ..errors import ContentNotFound, InvalidManifest
from ..oci import Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Reference, parse_manifest_or_index
from ..oci import mediatypes as mt
from ..ztoc import DEFAULT_BUILD_TOOL_IDENTIFIER, DEFAULT_MIN_LAYER_SIZE, DEFAULT_SPAN_SIZE
from ..ztoc.index import BuiltIndex, LayerOpener, annotate_image_manifest, build_soci_index, index_descriptor_v2
from ._tasks import run_all
from .convert import image_entries, platform_of, soci_enabled_index
from .prefetch import Access, prefetch_accesses
from .sources import ArtifactSource, LayoutSource, RegistrySource, open_source

if TYPE_CHECKING:
    from ..events import EventRecorder

#: layer downloads and artifact uploads in flight at once
TRANSFER_CONCURRENCY = 4


@dataclass(frozen=True)
class ResolvedRef:
    """REF resolved down to one image manifest."""

    top_descriptor: Descriptor
    top: Index | None
    chosen: Descriptor | None
    manifest_descriptor: Descriptor
    manifest: Manifest
    config: ImageConfig
    platform: Platform


@dataclass(frozen=True)
class CreateResult:
    """What ``index create`` made and published."""

    ref: Reference
    version: str
    index_descriptor: Descriptor
    image_manifest: Descriptor
    platform: Platform
    built: BuiltIndex
    #: v2: the rewritten image manifest and the SOCI-enabled image index now under REF's tag
    annotated_manifest: Descriptor | None = None
    image_index: Descriptor | None = None

    @property
    def digest(self) -> Digest:
        """The SOCI index digest (what ``index create`` prints)."""
        return self.index_descriptor.digest

    def to_json(self) -> dict[str, Any]:
        """Stable keys: ``ref, format, index_digest, index_size, image_manifest_digest, platform,
        annotated_manifest_digest, image_index_digest, ztocs, skipped``."""
        ztocs = self.built.index.ztoc_descriptors()
        return {
            "ref": str(self.ref),
            "format": self.version,
            "index_digest": str(self.index_descriptor.digest),
            "index_size": self.index_descriptor.size,
            "image_manifest_digest": str(self.image_manifest.digest),
            "platform": str(self.platform),
            "annotated_manifest_digest": str(self.annotated_manifest.digest) if self.annotated_manifest else None,
            "image_index_digest": str(self.image_index.digest) if self.image_index else None,
            "ztocs": {layer: str(d.digest) for layer, d in ztocs.items()},
            "skipped": dict(self.built.skipped),
        }


async def resolve_ref(src: ArtifactSource, ref: Reference, platform: Platform | None = None) -> ResolvedRef:
    """REF's top document, the chosen platform manifest and its config, every one verified."""
    top_desc, top_data = await src.get_document(ref.reference)
    doc = parse_manifest_or_index(top_data, top_desc.media_type)
    top: Index | None = None
    chosen: Descriptor | None = None
    if isinstance(doc, Index):
        top, chosen = doc, image_entries(doc).select(platform)
        m_desc, m_data = await src.get_document(str(chosen.digest), expected=chosen)
        inner = parse_manifest_or_index(m_data, m_desc.media_type)
        if not isinstance(inner, Manifest):
            raise InvalidManifest(f"{ref}: the index entry {chosen.digest} is another index, not an image manifest")
        manifest = inner
    else:
        m_desc, manifest = top_desc, doc
    if manifest.config.media_type not in mt.CONFIG_TYPES:
        raise InvalidManifest(f"{ref}: config media type {manifest.config.media_type!r} is not an image config "
                              "(is REF a SOCI index or another artifact?)")
    config = ImageConfig.from_bytes(await src.get_blob(manifest.config))
    plat = chosen.platform if chosen is not None and chosen.platform is not None else platform_of(config)
    return ResolvedRef(top_desc, top, chosen, Descriptor(m_desc.media_type, m_desc.digest, m_desc.size), manifest,
                       config, plat)


async def _build_while_fetching(
    src: ArtifactSource, layers: Sequence[Descriptor], min_layer_size: int, tmp: Path,
    build: Callable[[LayerOpener], BuiltIndex],
) -> BuiltIndex:
    """Run ``build(open_layer)`` in a worker thread while the layers worth indexing arrive.

    In a layout the blobs are read in place. From a registry, each is downloaded (verified) into ``tmp``,
    a few at once, and the builder's worker thread for that layer waits only for *its* file — so inflating
    one layer overlaps downloading the next. A failed download wakes every waiting worker and is raised.
    """
    wanted = list({str(d.digest): d for d in layers if mt.is_layer(d.media_type) and d.size >= min_layer_size}
                  .values())
    if isinstance(src, LayoutSource):
        files = {str(d.digest): src.blob_path(d) for d in wanted}
        return await anyio.to_thread.run_sync(build, lambda d: files[str(d.digest)])
    assert isinstance(src, RegistrySource)
    arrived = {str(d.digest): threading.Event() for d in wanted}
    paths: dict[str, Path] = {}

    def open_layer(d: Descriptor) -> Path:
        key = str(d.digest)
        arrived[key].wait()
        if key not in paths:
            raise ContentNotFound(f"layer {key} was not downloaded (another download failed first)")
        return paths[key]

    async def one(d: Descriptor) -> None:
        path = tmp / d.digest.hex
        await src.fetch_blob_to(d, path)
        paths[str(d.digest)] = path
        arrived[str(d.digest)].set()

    failures: list[BaseException] = []
    outcome: list[BuiltIndex] = []

    async def fetch_all() -> None:
        try:
            await run_all(one, wanted, TRANSFER_CONCURRENCY)
        except Exception as exc:
            failures.append(exc)
        finally:
            for event in arrived.values():
                event.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch_all)
        try:
            outcome.append(await anyio.to_thread.run_sync(build, open_layer))
        except Exception as exc:
            failures.append(exc)
            tg.cancel_scope.cancel()
    if failures:
        raise failures[0]
    return outcome[0]


async def _push_blobs(src: ArtifactSource, blobs: dict[str, bytes], events: EventRecorder | None) -> None:
    async def one(item: tuple[str, bytes]) -> None:
        digest, data = item
        desc = Descriptor(mt.SOCI_LAYER, Digest(digest), len(data))
        step = events.step("push", nbytes=len(data), digest=digest) if events else contextlib.nullcontext()
        with step:
            await src.put_blob(data, desc)

    await run_all(one, blobs.items(), TRANSFER_CONCURRENCY)


async def acreate_soci_index(
    ref: str | Reference,
    *,
    version: str = "v2",
    span_size: int = DEFAULT_SPAN_SIZE,
    min_layer_size: int = DEFAULT_MIN_LAYER_SIZE,
    prefetch_paths: Iterable[str] | None = None,
    prefetch_trace: str | Path | None = None,
    build_tool_identifier: str = DEFAULT_BUILD_TOOL_IDENTIFIER,
    optimize_xattrs: bool = False,
    platform: Platform | None = None,
    insecure: bool = False,
    creds: str | None = None,
    events: EventRecorder | None = None,
    max_workers: int = 2,
) -> CreateResult:
    """Build and publish a SOCI index for REF (registry reference or ``oci:PATH[:TAG]``); see the module
    docstring. ``version`` is ``"v2"`` (SOCI-enabled image index, the default) or ``"v1"`` (referrer).
    ``prefetch_paths``/``prefetch_trace`` add prefetch artifacts. ``events`` gets ``ztoc_build`` per
    layer, ``push`` per artifact blob and every HTTP request. Raises ``EmptyIndex`` when no layer qualifies.
    """
    reference = Reference.parse(ref) if isinstance(ref, str) else ref
    accesses: list[Access] | None = prefetch_accesses(prefetch_paths, prefetch_trace)
    client = None
    if not reference.is_layout:
        from ..remote import RegistryClient

        client = RegistryClient(reference, creds=creds, insecure=insecure, events=events)
    try:
        src = open_source(reference, client)
        resolved = await resolve_ref(src, reference, platform)
        with tempfile.TemporaryDirectory(prefix="soci-lab-index-") as tmp:

            def build(open_layer: LayerOpener) -> BuiltIndex:
                return build_soci_index(
                    list(resolved.manifest.layers), open_layer, version=version,
                    subject=resolved.manifest_descriptor, span_size=span_size, min_layer_size=min_layer_size,
                    build_tool_identifier=build_tool_identifier, optimize_xattrs=optimize_xattrs,
                    prefetch=accesses, max_workers=max_workers, recorder=events,
                )

            built = await _build_while_fetching(src, resolved.manifest.layers, min_layer_size, Path(tmp), build)
        await _push_blobs(src, built.blobs, events)
        index = built.index
        await src.put_document(index.to_bytes(), mt.OCI_MANIFEST)
        index_desc = index.descriptor()  # with artifactType, as it is referred to
        if version == "v1":
            return CreateResult(reference, version, index_desc, resolved.manifest_descriptor, resolved.platform,
                                built)
        annotated = annotate_image_manifest(resolved.manifest, str(index_desc.digest))
        annotated_desc = await src.put_document(annotated.to_bytes(), mt.OCI_MANIFEST)
        soci_desc = index_descriptor_v2(index, resolved.platform, str(annotated_desc.digest))
        enabled = soci_enabled_index(resolved.top, resolved.chosen, annotated, resolved.platform, soci_desc)
        image_index = await src.put_document(enabled.to_bytes(), mt.OCI_INDEX, reference.tag)
        return CreateResult(reference, version, index_desc, resolved.manifest_descriptor, resolved.platform, built,
                            annotated_desc, image_index)
    finally:
        if client is not None:
            await client.aclose()


def create_soci_index(ref: str | Reference, **kw: Any) -> CreateResult:
    """:func:`acreate_soci_index` for synchronous callers (runs its own event loop; from inside a running
    loop, await ``acreate_soci_index`` instead)."""
    return run_sync(functools.partial(acreate_soci_index, ref, **kw))


__all__ = ["CreateResult", "ResolvedRef", "acreate_soci_index", "create_soci_index", "resolve_ref"]
