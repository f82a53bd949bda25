"""``index info``: what the SOCI index of an image holds, layer by layer.

REF is resolved to its platform manifest; the index is found as the snapshotter would find it — an
explicit digest, else the v2 annotation, else v1 referrers (both modes allowed here: this is inspection,
not a mount) — and fetched with every zTOC into a throw-away store, verified and parsed. Every layer of
the image is listed, the ones the index skipped too (``indexed: false``).

JSON keys (stable; ``soci-lab index info --json``)::

    ref, image_manifest_digest, platform, index_digest, index_size, format ("v1"|"v2"), found_via
    ("explicit"|"v2"|"v1"), build_tool_identifier,
    layers: [{digest, media_type, size, indexed, compression, uncompressed_size, span_size, span_count,
              ztoc_digest, ztoc_size, prefetch_spans}]

``size`` is the layer blob's (compressed) size, ``uncompressed_size`` the tar stream's, ``span_size`` the
index's ``com.amazon.soci.span-size`` annotation, ``span_count`` the zTOC's number of spans,
``prefetch_spans`` the number of spans its prefetch artifact names (0 without one). For a layer without a
zTOC the zTOC fields are null.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._sync import run_sync
from ..config import Config
from ..oci import Descriptor, OCILayout, Platform, Reference
from ..remote import select_first_policy
from ..ztoc.index import ANNOTATION_BUILD_TOOL_IDENTIFIER
from .create import resolve_ref
from .fetch import SociArtifacts, fetch_registry_artifacts
from .sources import open_source

if TYPE_CHECKING:
    from ..events import EventRecorder


@dataclass(frozen=True)
class LayerInfo:
    """One image layer and what the index says of it."""

    layer: Descriptor
    ztoc: Descriptor | None = None
    compression: str | None = None
    uncompressed_size: int | None = None
    span_size: int | None = None
    span_count: int | None = None
    prefetch_spans: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": str(self.layer.digest),
            "media_type": self.layer.media_type,
            "size": self.layer.size,
            "indexed": self.ztoc is not None,
            "compression": self.compression,
            "uncompressed_size": self.uncompressed_size,
            "span_size": self.span_size,
            "span_count": self.span_count,
            "ztoc_digest": str(self.ztoc.digest) if self.ztoc is not None else None,
            "ztoc_size": self.ztoc.size if self.ztoc is not None else None,
            "prefetch_spans": self.prefetch_spans,
        }


@dataclass(frozen=True)
class IndexInfo:
    """The SOCI index of one image, and its layers."""

    ref: Reference
    image_manifest: Descriptor
    platform: Platform
    artifacts: SociArtifacts
    layers: list[LayerInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON document of the module docstring."""
        idx = self.artifacts.index_descriptor
        return {
            "ref": str(self.ref),
            "image_manifest_digest": str(self.image_manifest.digest),
            "platform": str(self.platform),
            "index_digest": str(idx.digest),
            "index_size": idx.size,
            "format": self.artifacts.version,
            "found_via": self.artifacts.found_via,
            "build_tool_identifier": self.artifacts.index.annotations.get(ANNOTATION_BUILD_TOOL_IDENTIFIER),
            "layers": [layer.to_json() for layer in self.layers],
        }

    def to_text(self) -> str:
        """A table for people: one line per layer."""
        doc = self.to_json()
        lines = [
            f"SOCI index {doc['index_digest']} ({doc['format']}, found via {doc['found_via']}, "
            f"{doc['index_size']} bytes) for {doc['image_manifest_digest']} [{doc['platform']}]",
            f"{'LAYER':<20} {'MEDIA TYPE':<46} {'SIZE':>11} {'UNCOMPRESSED':>12} {'SPAN SIZE':>9} {'SPANS':>6} "
            f"{'ZTOC':<20} {'ZTOC SIZE':>9}",
        ]
        for layer in doc["layers"]:

            def cell(v: Any) -> str:
                return "-" if v is None else str(v)

            lines.append(
                f"{layer['digest'][7:19]:<20} {layer['media_type'][:46]:<46} {layer['size']:>11} "
                f"{cell(layer['uncompressed_size']):>12} {cell(layer['span_size']):>9} {cell(layer['span_count']):>6} "
                f"{cell(layer['ztoc_digest'] and layer['ztoc_digest'][7:19]):<20} {cell(layer['ztoc_size']):>9}"
            )
        return "\n".join(lines)


def _layers(artifacts: SociArtifacts, layers: tuple[Descriptor, ...]) -> list[LayerInfo]:
    out = []
    for d in layers:
        key = str(d.digest)
        if not artifacts.has_ztoc(key):
            out.append(LayerInfo(d))
            continue
        z = artifacts.ztoc_for(key)
        pf = artifacts.prefetch_for(key)
        out.append(LayerInfo(d, artifacts.ztoc_descriptor_for(key), z.compression_algorithm, z.uncompressed_size,
                             artifacts.span_size_for(key), z.span_count, len(pf.span_ids()) if pf else 0))
    return out


async def aindex_info(
    ref: str | Reference,
    *,
    index_digest: str | None = None,
    platform: Platform | None = None,
    insecure: bool = False,
    creds: str | None = None,
    events: EventRecorder | None = None,
) -> IndexInfo:
    """Find and read REF's SOCI index (module docstring). ``NoIndex`` when the image has none."""
    reference = Reference.parse(ref) if isinstance(ref, str) else ref
    client = None
    if not reference.is_layout:
        from ..remote import RegistryClient

        client = RegistryClient(reference, creds=creds, insecure=insecure, events=events)
    config = Config()
    config.pull_modes.soci_v1.enable = True
    config.pull_modes.soci_v2.enable = True
    try:
        src = open_source(reference, client)
        resolved = await resolve_ref(src, reference, platform)
        with tempfile.TemporaryDirectory(prefix="soci-lab-info-") as tmp:
            artifacts = await fetch_registry_artifacts(
                src, resolved.manifest_descriptor, config=config, explicit_index_digest=index_digest,
                local_store=OCILayout(tmp), events=events, policy=select_first_policy, max_concurrency=8,
            )
        return IndexInfo(reference, resolved.manifest_descriptor, resolved.platform, artifacts,
                         _layers(artifacts, resolved.manifest.layers))
    finally:
        if client is not None:
            await client.aclose()


def index_info(ref: str | Reference, **kw: Any) -> IndexInfo:
    """:func:`aindex_info` for synchronous callers."""
    return run_sync(lambda: aindex_info(ref, **kw))


__all__ = ["IndexInfo", "LayerInfo", "aindex_info", "index_info"]
