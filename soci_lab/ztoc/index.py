"""SOCI index manifests (v1 and v2), zTOC and prefetch descriptors, prefetch artifacts, and the builder.

A SOCI index is an OCI image manifest (``mediaType`` OCI manifest, no top-level ``artifactType``) whose
``config`` is the empty JSON blob ``{}`` with media type ``…soci.index.v1+json`` or ``…v2+json`` (that is
where the version lives), whose ``layers`` are the zTOC descriptors (``application/octet-stream``, in image
layer order) followed by the prefetch artifacts, and whose annotations name the build tool. v1 also has a
``subject`` (the image manifest) and is found through the referrers API; v2 has none and is found through the
image manifest's ``com.amazon.soci.index-digest`` annotation (:func:`annotate_image_manifest`) and the
descriptor appended to the image index (:func:`index_descriptor_v2`).

Pure code: :func:`build_soci_index` takes layer descriptors and a way to open each layer blob; pushing and
discovery belong to ``remote`` and ``artifacts``.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import EmptyIndex, FormatError, InvalidInput, InvalidManifest, UnknownIndexVersion, UnsupportedCompression
from ..oci import Descriptor, Digest, Manifest, Platform, mediatypes
from ..oci.gojson import go_json
from .ztoc import (
    DEFAULT_BUILD_TOOL_IDENTIFIER,
    DEFAULT_MIN_LAYER_SIZE,
    DEFAULT_SPAN_SIZE,
    LayerSource,
    Ztoc,
    build_ztoc,
)

if TYPE_CHECKING:
    from ..events import EventRecorder

SOCI_INDEX_V1 = mediatypes.SOCI_INDEX_V1
SOCI_INDEX_V2 = mediatypes.SOCI_INDEX_V2
SOCI_LAYER_MEDIA_TYPE = mediatypes.SOCI_LAYER
SOCI_PREFETCH_MEDIA_TYPE = mediatypes.SOCI_PREFETCH

ANNOTATION_IMAGE_LAYER_MEDIA_TYPE = "com.amazon.soci.image-layer-mediaType"
ANNOTATION_IMAGE_LAYER_DIGEST = "com.amazon.soci.image-layer-digest"
ANNOTATION_SPAN_SIZE = "com.amazon.soci.span-size"
ANNOTATION_BUILD_TOOL_IDENTIFIER = "com.amazon.soci.build-tool-identifier"
ANNOTATION_DISABLE_XATTRS = "com.amazon.soci.disable-xattrs"
ANNOTATION_IMAGE_MANIFEST_DIGEST = "com.amazon.soci.image-manifest-digest"
ANNOTATION_SOCI_INDEX_DIGEST = "com.amazon.soci.index-digest"

#: The config blob of every SOCI index: ``{}``.
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DIGEST = Digest("sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
PREFETCH_VERSION = "1.0"

_VERSIONS = {"v1": SOCI_INDEX_V1, "v2": SOCI_INDEX_V2}


# --- the index manifest ---------------------------------------------------------------------------


@dataclass
class SociIndex:
    """A SOCI index: ``version`` (``"v1"``/``"v2"``), blob descriptors, v1 ``subject``, annotations."""

    version: str
    blobs: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] = field(
        default_factory=lambda: {ANNOTATION_BUILD_TOOL_IDENTIFIER: DEFAULT_BUILD_TOOL_IDENTIFIER}
    )
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def artifact_type(self) -> str:
        """``application/vnd.amazon.soci.index.v1+json`` or ``…v2+json``."""
        return _VERSIONS[self.version]

    def to_manifest(self) -> Manifest:
        """The OCI image manifest form (``MarshalIndex``)."""
        if self.version not in _VERSIONS:
            raise UnknownIndexVersion(f"unknown index version {self.version!r}")
        return Manifest(
            media_type=mediatypes.OCI_MANIFEST,
            config=Descriptor(self.artifact_type, EMPTY_CONFIG_DIGEST, len(EMPTY_CONFIG)),
            layers=tuple(self.blobs),
            annotations=dict(self.annotations),
            subject=self.subject if self.version == "v1" else None,
        )

    def to_bytes(self) -> bytes:
        """The manifest bytes (the parsed bytes when read, else canonical JSON)."""
        return self.raw or self.to_manifest().to_bytes()

    @property
    def digest(self) -> Digest:
        """Digest of :meth:`to_bytes`."""
        return Digest.from_bytes(self.to_bytes())

    def descriptor(self, platform: Platform | None = None, **annotations: str) -> Descriptor:
        """How to refer to the index: OCI manifest media type with ``artifactType`` = the index type."""
        data = self.to_bytes()
        return Descriptor(
            mediatypes.OCI_MANIFEST, Digest.from_bytes(data), len(data), annotations=dict(annotations),
            platform=platform, artifact_type=self.artifact_type,
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, artifact_type: str | None = None) -> SociIndex:
        """Parse an index manifest. The config media type decides the version (``UnknownIndexVersion``
        otherwise); when the referring descriptor's ``artifact_type`` is given it must agree."""
        m = Manifest.from_bytes(data)
        cfg = m.config.media_type
        version = next((v for v, t in _VERSIONS.items() if t == cfg), None)
        if version is None:
            raise UnknownIndexVersion(f"unknown index version: config media type {cfg!r} is not a SOCI index type")
        if artifact_type is not None and artifact_type != cfg:
            raise InvalidManifest(
                f"SOCI index was announced as {artifact_type!r} but its config media type is {cfg!r}"
            )
        return cls(version, list(m.layers), m.subject if version == "v1" else None, dict(m.annotations), bytes(data))

    def ztoc_descriptors(self) -> dict[str, Descriptor]:
        """Image layer digest → zTOC descriptor (``populateImageLayerToSociMapping``)."""
        out: dict[str, Descriptor] = {}
        for d in self.blobs:
            if d.media_type == SOCI_LAYER_MEDIA_TYPE and ANNOTATION_IMAGE_LAYER_DIGEST in d.annotations:
                out[d.annotations[ANNOTATION_IMAGE_LAYER_DIGEST]] = d
        return out

    def prefetch_descriptors(self) -> dict[str, Descriptor]:
        """Image layer digest → prefetch artifact descriptor."""
        return {
            d.annotations[ANNOTATION_IMAGE_LAYER_DIGEST]: d
            for d in self.blobs
            if d.media_type == SOCI_PREFETCH_MEDIA_TYPE and ANNOTATION_IMAGE_LAYER_DIGEST in d.annotations
        }


def ztoc_descriptor(ztoc_blob: bytes, layer: Descriptor, span_size: int, *, disable_xattrs: bool = False) -> Descriptor:
    """The zTOC's entry in ``layers[]`` with its three (or four) annotations."""
    ann = {
        ANNOTATION_IMAGE_LAYER_MEDIA_TYPE: layer.media_type,
        ANNOTATION_IMAGE_LAYER_DIGEST: str(layer.digest),
        ANNOTATION_SPAN_SIZE: str(span_size),
    }
    if disable_xattrs:
        ann[ANNOTATION_DISABLE_XATTRS] = "true"
    return Descriptor(SOCI_LAYER_MEDIA_TYPE, Digest.from_bytes(ztoc_blob), len(ztoc_blob), annotations=ann)


def should_disable_xattrs(z: Ztoc) -> bool:
    """True when no entry has SCHILY xattrs and no name ends in ``.wh..wh..opq`` (upstream's suffix test)."""
    return not any(e.xattrs() or e.name.endswith(".wh..wh..opq") for e in z.toc)


def annotate_image_manifest(manifest: Manifest, index_digest: str) -> Manifest:
    """The v2 image manifest: rewritten as OCI (config media type OCI config) with
    ``com.amazon.soci.index-digest``, every other field kept, as upstream's ``annotateImages`` does; its
    digest changes, its layers stay shared."""
    return replace(
        manifest,
        media_type=mediatypes.OCI_MANIFEST,
        config=replace(manifest.config, media_type=mediatypes.OCI_CONFIG),
        annotations={**manifest.annotations, ANNOTATION_SOCI_INDEX_DIGEST: str(index_digest)},
        raw=b"",
    )


def index_descriptor_v2(index: SociIndex, platform: Platform | None, image_manifest_digest: str) -> Descriptor:
    """The descriptor appended to the image index for a v2 SOCI index."""
    if index.version != "v2":
        raise InvalidInput("only a v2 SOCI index is listed in an image index")
    return index.descriptor(platform, **{ANNOTATION_IMAGE_MANIFEST_DIGEST: str(image_manifest_digest)})


# --- prefetch artifacts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PrefetchSpan:
    """A span range ``[start_span, end_span]`` (inclusive); ``priority`` lower = sooner (0 = unset)."""

    start_span: int
    end_span: int
    priority: int = 0


@dataclass
class PrefetchArtifact:
    """``application/vnd.amazon.soci.prefetch.v1+json``."""

    spans: list[PrefetchSpan]
    version: str = PREFETCH_VERSION

    def to_bytes(self) -> bytes:
        """JSON as upstream writes it (``priority`` omitted when 0)."""
        spans: list[dict[str, Any]] = []
        for s in self.spans:
            d: dict[str, Any] = {"start_span": s.start_span, "end_span": s.end_span}
            if s.priority:
                d["priority"] = s.priority
            spans.append(d)
        return go_json({"version": self.version, "prefetch_spans": spans})

    @classmethod
    def from_bytes(cls, data: bytes) -> PrefetchArtifact:
        """Parse; malformed → FormatError."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"prefetch artifact is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("prefetch_spans", []), list):
            raise FormatError("prefetch artifact must be an object with a prefetch_spans list")
        spans = []
        for s in doc.get("prefetch_spans") or []:
            if not isinstance(s, dict):
                raise FormatError("prefetch span must be an object")
            vals = [s.get("start_span"), s.get("end_span"), s.get("priority", 0)]
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in vals) or vals[0] > vals[1]:
                raise FormatError(f"malformed prefetch span {s!r}"[:200])
            spans.append(PrefetchSpan(*vals))
        return cls(spans, str(doc.get("version", PREFETCH_VERSION)))

    def span_ids(self) -> list[int]:
        """Every span id named, in order, without repeats."""
        seen: dict[int, None] = {}
        for s in self.spans:
            for i in range(s.start_span, s.end_span + 1):
                seen.setdefault(i)
        return list(seen)


def _clean(p: str) -> str:
    return posixpath.normpath("/" + p).lstrip("/")


def _merge(ranges: list[tuple[int, int]]) -> list[PrefetchSpan]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [PrefetchSpan(a, b) for a, b in out]


def prefetch_artifacts(
    ztocs: Sequence[tuple[str, Ztoc]], accesses: Iterable[str | tuple[str, int, int]]
) -> dict[str, PrefetchArtifact]:
    """Prefetch artifacts per layer digest from paths or an access trace.

    ``ztocs`` are ``(layer digest, zTOC)`` bottom layer first. An access is a path (the whole file) or
    ``(path, offset, length)`` (a read of the file). Each path is cleaned and looked up from the top layer
    down (the first exact TOC name match wins, as upstream); its uncompressed range becomes
    ``[span_of(start), span_of(end)]``; ranges are merged per layer when ``start <= previous end + 1``.
    """
    index: list[tuple[str, Ztoc, dict[str, Any]]] = []
    for digest, z in ztocs:
        names: dict[str, Any] = {}
        for e in z.toc:
            names.setdefault(_clean(e.name), e)
        index.append((digest, z, names))
    per_layer: dict[str, list[tuple[int, int]]] = {}
    for acc in accesses:
        path, off, length = (acc, 0, None) if isinstance(acc, str) else acc
        key = _clean(path)
        for digest, z, names in reversed(index):
            entry = names.get(key)
            if entry is None:
                continue
            size = entry.uncompressed_size if length is None else max(0, min(length, entry.uncompressed_size - off))
            start = entry.uncompressed_offset + min(max(off, 0), entry.uncompressed_size)
            per_layer.setdefault(digest, []).append((z.span_of(start), z.span_of(start + size)))
            break
    return {d: PrefetchArtifact(_merge(r)) for d, r in per_layer.items()}


def prefetch_descriptor(blob: bytes, layer_digest: str) -> Descriptor:
    """The prefetch artifact's entry in ``layers[]``."""
    return Descriptor(
        SOCI_PREFETCH_MEDIA_TYPE, Digest.from_bytes(blob), len(blob),
        annotations={ANNOTATION_IMAGE_LAYER_DIGEST: str(layer_digest)},
    )


# --- building -------------------------------------------------------------------------------------


@dataclass
class BuiltIndex:
    """What :func:`build_soci_index` made: the index, every blob to push (digest → bytes), the zTOCs, and
    the layers skipped with the reason."""

    index: SociIndex
    blobs: dict[str, bytes]
    ztocs: dict[str, Ztoc]
    skipped: dict[str, str]

    @property
    def manifest_bytes(self) -> bytes:
        """The index manifest bytes."""
        return self.index.to_bytes()


#: the blob of a layer: a path, bytes or a binary stream (what :func:`build_ztoc` reads)
LayerOpener = Callable[[Descriptor], LayerSource]


def build_soci_index(
    layers: Sequence[Descriptor],
    open_layer: LayerOpener,
    *,
    version: str = "v2",
    subject: Descriptor | None = None,
    span_size: int = DEFAULT_SPAN_SIZE,
    min_layer_size: int = DEFAULT_MIN_LAYER_SIZE,
    build_tool_identifier: str = DEFAULT_BUILD_TOOL_IDENTIFIER,
    optimize_xattrs: bool = False,
    prefetch: Iterable[str | tuple[str, int, int]] | None = None,
    max_workers: int = 4,
    recorder: EventRecorder | None = None,
) -> BuiltIndex:
    """Build zTOCs for an image's layers concurrently and assemble the SOCI index (``soci create``).

    Layers smaller than ``min_layer_size`` and layers that cannot be indexed (a single-frame zstd layer)
    are skipped; prefetch-artifact entries are ignored; a non-layer media type is an error; no zTOC at all
    is :class:`EmptyIndex`. ``open_layer(desc)`` returns the blob (stream, bytes or path); it is called in a
    worker thread. v1 needs ``subject`` (the image manifest's descriptor).
    """
    if version not in _VERSIONS:
        raise UnknownIndexVersion(f"unknown index version {version!r} (v1 or v2)")
    if version == "v1" and subject is None:
        raise InvalidInput("a v1 SOCI index needs the image manifest as its subject")
    todo: list[Descriptor] = []
    skipped: dict[str, str] = {}
    for d in layers:
        if d.media_type == SOCI_PREFETCH_MEDIA_TYPE:
            continue
        if not mediatypes.is_layer(d.media_type):
            raise InvalidManifest(f"{d.digest} has media type {d.media_type!r}, which is not a layer type")
        if d.size < min_layer_size:
            skipped[str(d.digest)] = f"smaller than the minimum layer size {min_layer_size}"
            continue
        todo.append(d)

    def one(d: Descriptor) -> tuple[Descriptor, Ztoc | None, str]:
        src = open_layer(d)
        try:
            z = build_ztoc(src, media_type=d.media_type, span_size=span_size,
                           build_tool_identifier=build_tool_identifier, recorder=recorder,
                           layer_digest=str(d.digest))
        except UnsupportedCompression as exc:
            return d, None, str(exc)
        finally:
            close = getattr(src, "close", None)
            if close is not None:
                close()
        return d, z, ""

    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        results = list(pool.map(one, todo))
    blobs: dict[str, bytes] = {}
    ztocs: dict[str, Ztoc] = {}
    descs: list[Descriptor] = []
    for d, z, why in results:
        if z is None:
            skipped[str(d.digest)] = why
            continue
        blob = z.to_bytes()
        zd = ztoc_descriptor(blob, d, span_size, disable_xattrs=optimize_xattrs and should_disable_xattrs(z))
        blobs[str(zd.digest)] = blob
        ztocs[str(d.digest)] = z
        descs.append(zd)
    if not descs:
        raise EmptyIndex("no ztocs created, all layers either skipped or produced errors")
    if prefetch is not None:
        order = [(str(d.digest), ztocs[str(d.digest)]) for d in layers if str(d.digest) in ztocs]
        arts = prefetch_artifacts(order, prefetch)
        for dg, _ in order:
            if dg in arts:
                pb = arts[dg].to_bytes()
                pd = prefetch_descriptor(pb, dg)
                blobs[str(pd.digest)] = pb
                descs.append(pd)
    blobs[str(EMPTY_CONFIG_DIGEST)] = EMPTY_CONFIG
    index = SociIndex(
        version, descs, subject if version == "v1" else None,
        {ANNOTATION_BUILD_TOOL_IDENTIFIER: build_tool_identifier},
    )
    return BuiltIndex(index, blobs, ztocs, skipped)


def index_manifest_json(index: SociIndex) -> dict[str, Any]:
    """The index manifest as a JSON object (for ``index info --json`` and tests)."""
    return json.loads(index.to_manifest().to_bytes())
