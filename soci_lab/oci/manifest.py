"""Image manifests, image indexes (and Docker's schema 2 equivalents) and image configs.

Parsing is strict about what soci_lab relies on (media types, descriptors, diffIDs) and keeps the raw
bytes: a manifest's digest is the digest of the bytes as served, never of a re-serialisation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidManifest, NoMatchingPlatform, UnsupportedMediaType
from . import jsondoc
from . import mediatypes as mt
from .descriptor import Descriptor
from .digest import Digest
from .gojson import go_json, go_map
from .platform import Platform

MAX_MANIFEST_SIZE = 4 << 20  # distribution's limit for manifests


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_MANIFEST_SIZE:
        raise InvalidManifest(f"{what} is {len(data)} bytes, more than the {MAX_MANIFEST_SIZE} allowed")
    return jsondoc.loads_object(data, what)  # bounded depth and integers: one line, never a RecursionError


def canonical_json(obj: Any) -> bytes:
    """Compact, key-sorted JSON (for documents that have no Go struct to follow: configs, layouts)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _check_media_type(doc: dict[str, Any], declared: str | None, allowed: frozenset[str], what: str) -> str:
    inner = doc.get("mediaType")
    if inner is not None and not isinstance(inner, str):
        raise InvalidManifest(f"{what} has a mediaType of the wrong type")
    if declared and inner and declared != inner:
        raise InvalidManifest(f"{what} says its mediaType is {inner!r} but was served as {declared!r}")
    media_type = inner or declared
    if media_type is None:
        raise InvalidManifest(f"{what} has no mediaType")
    if media_type not in allowed:
        raise UnsupportedMediaType(f"{what} has media type {media_type!r}, expected one of {sorted(allowed)}")
    if doc.get("schemaVersion") != 2:
        raise InvalidManifest(f"{what} has schemaVersion {doc.get('schemaVersion')!r}, expected 2")
    return media_type


def _annotations(doc: dict[str, Any], what: str) -> dict[str, str]:
    """A copy of the document's optional ``annotations`` (empty when absent).

    Manifests and indexes carry annotations the same way, so both parsers check them here; ``what``
    names the document in the :class:`InvalidManifest` raised when they are not a JSON object.
    """
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise InvalidManifest(f"{what} has malformed annotations")
    return dict(annotations)


def _subject(doc: dict[str, Any], what: str) -> Descriptor | None:
    """The document's optional ``subject`` descriptor (None when absent); ``what`` labels its errors.

    Shared by the manifest and index parsers, which read the referrers API's ``subject`` alike.
    """
    return Descriptor.from_dict(doc["subject"], what) if doc.get("subject") else None


class _Document:
    """What a manifest and an index share: optional fields, the served bytes, their digest, a descriptor."""

    media_type: str
    annotations: dict[str, str]
    subject: Descriptor | None
    artifact_type: str | None
    raw: bytes

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def _head(self) -> dict[str, Any]:
        """``schemaVersion``, ``mediaType``, ``artifactType``: the first fields of image-spec's Go structs."""
        out: dict[str, Any] = {"schemaVersion": 2}
        if self.media_type:
            out["mediaType"] = self.media_type
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    def _tail(self, out: dict[str, Any]) -> dict[str, Any]:
        """``subject`` and ``annotations``: the last fields of image-spec's Go structs."""
        if self.subject:
            out["subject"] = self.subject.to_dict()
        if self.annotations:
            out["annotations"] = go_map(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        """The bytes as served: the parsed raw bytes, or, for a document built here, the JSON Go's
        ``json.Marshal`` writes for image-spec v1.1's struct (field order, omitempty, escaping), so its digest
        is the one upstream gives the same document."""
        return self.raw or go_json(self.to_dict())

    @property
    def digest(self) -> Digest:
        return Digest.from_bytes(self.to_bytes())

    def descriptor(self, **extra: Any) -> Descriptor:
        data = self.to_bytes()
        return Descriptor(self.media_type, Digest.from_bytes(data), len(data), **extra)


@dataclass(frozen=True)
class Manifest(_Document):
    """An OCI image manifest or a Docker schema 2 manifest (also the form of a SOCI index)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    raw: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str | None = None) -> Manifest:
        doc = _load_json(data, "manifest")
        mtype = _check_media_type(doc, media_type, mt.MANIFEST_TYPES, "manifest")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise InvalidManifest("manifest is missing its 'layers' list")
        if "config" not in doc:
            raise InvalidManifest("manifest is missing 'config'")
        annotations = _annotations(doc, "manifest")
        return cls(
            media_type=mtype,
            config=Descriptor.from_dict(doc["config"], "manifest config"),
            layers=tuple(Descriptor.from_dict(d, f"manifest layer {i}") for i, d in enumerate(layers)),
            annotations=annotations,
            subject=_subject(doc, "manifest subject"),
            artifact_type=doc.get("artifactType"),
            raw=bytes(data),
        )

    def to_dict(self) -> dict[str, Any]:
        """In image-spec's ``Manifest`` field order."""
        out = self._head()
        out["config"] = self.config.to_dict()
        out["layers"] = [d.to_dict() for d in self.layers]
        return self._tail(out)

    def layer_descriptors(self) -> list[Descriptor]:
        """The layers that are image layers (skipping any non-layer blobs an artifact may list)."""
        return [d for d in self.layers if mt.is_layer(d.media_type)]


@dataclass(frozen=True)
class Index(_Document):
    """An OCI image index or a Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    raw: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str | None = None) -> Index:
        doc = _load_json(data, "image index")
        mtype = _check_media_type(doc, media_type, mt.INDEX_TYPES, "image index")
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise InvalidManifest("image index is missing its 'manifests' list")
        annotations = _annotations(doc, "image index")
        return cls(
            media_type=mtype,
            manifests=tuple(Descriptor.from_dict(d, f"index entry {i}") for i, d in enumerate(manifests)),
            annotations=annotations,
            subject=_subject(doc, "index subject"),
            artifact_type=doc.get("artifactType"),
            raw=bytes(data),
        )

    def to_dict(self) -> dict[str, Any]:
        """In image-spec's ``Index`` field order."""
        out = self._head()
        out["manifests"] = [d.to_dict() for d in self.manifests]
        return self._tail(out)

    def images(self) -> list[Descriptor]:
        """Entries that are images: not SOCI indexes or other artifacts, not attestation manifests.

        A SOCI v2 index entry is recognised by its ``com.amazon.soci.image-manifest-digest`` annotation too,
        because some copy tools (skopeo 1.9) drop ``artifactType`` from index entries.
        """
        return [
            d
            for d in self.manifests
            if d.artifact_type is None
            and "com.amazon.soci.image-manifest-digest" not in d.annotations
            and d.annotations.get("vnd.docker.reference.type") != "attestation-manifest"
            and (d.platform is None or d.platform.os != "unknown")
        ]

    def select(self, platform: Platform | None = None) -> Descriptor:
        """The image entry for ``platform`` (the host's when omitted); the first match wins."""
        want = platform or Platform.host()
        candidates = self.images()
        for d in candidates:
            if d.platform is None or want.matches(d.platform):
                return d
        have = ", ".join(str(d.platform) for d in candidates if d.platform) or "none"
        raise NoMatchingPlatform(f"image index has no manifest for {want} (it has: {have})")


def parse_manifest_or_index(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse whichever of the two ``data`` is, by the served media type or the document's own."""
    doc = _load_json(data, "manifest")
    mtype = doc.get("mediaType") or media_type
    if mtype in mt.INDEX_TYPES or (mtype is None and "manifests" in doc):
        return Index.from_bytes(data, media_type if media_type in mt.INDEX_TYPES else None)
    return Manifest.from_bytes(data, media_type if media_type in mt.MANIFEST_TYPES else None)


@dataclass(frozen=True)
class ImageConfig:
    """An image config: what soci_lab needs of it (diffIDs, platform, history), and the rest kept raw."""

    diff_ids: tuple[Digest, ...]
    os: str
    architecture: str
    doc: dict[str, Any] = field(repr=False, compare=False)
    raw: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageConfig:
        doc = _load_json(data, "image config")
        rootfs = doc.get("rootfs")
        if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
            raise InvalidManifest("image config has no rootfs of type 'layers'")
        diff_ids = rootfs.get("diff_ids")
        if not isinstance(diff_ids, list):
            raise InvalidManifest("image config is missing rootfs.diff_ids")
        try:
            ids = tuple(Digest(d) for d in diff_ids)
        except Exception as exc:
            raise InvalidManifest(f"image config has a bad diffID: {exc}") from None
        return cls(ids, str(doc.get("os", "")), str(doc.get("architecture", "")), doc, bytes(data))

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.doc.get("history") or [])

    @property
    def config(self) -> dict[str, Any]:
        """The runtime part (Cmd, Entrypoint, Env, WorkingDir)."""
        return dict(self.doc.get("config") or {})

    def to_bytes(self) -> bytes:
        return self.raw or canonical_json(self.doc)


def check_layers_match_config(manifest: Manifest, config: ImageConfig) -> None:
    """A manifest and its config must agree on the number of layers."""
    n = len(manifest.layer_descriptors())
    if n != len(config.diff_ids):
        raise InvalidManifest(f"manifest lists {n} layers but its config has {len(config.diff_ids)} diffIDs")
