"""Where an image and its SOCI artifacts live: one repository of a registry, or an OCI image layout.

``index create``, ``index info`` and :func:`~soci_lab.artifacts.fetch.fetch_soci_artifacts` need the same
few operations from both kinds of place — read a document by tag or digest, read or store a blob, store a
document, list the referrers of a manifest — so they talk to an :class:`ArtifactSource` and never care
which kind it is.

A registry source is a thin view over :class:`~soci_lab.remote.RegistryClient` (every document and blob
verified by it; a pushed manifest with a ``subject`` also updates the referrers tag-schema index on
registries without the referrers API, which is how v1 indexes are found again on distribution 2.8).
A layout has no referrers API: :class:`LayoutSource` keeps every pushed SOCI index in ``index.json``
(untagged, ``artifactType`` set) and answers referrers by reading the ``subject`` of those entries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import anyio

from ..errors import ContentNotFound, DigestMismatch, InvalidInput, InvalidManifest, SizeMismatch
from ..oci import Descriptor, Digest, Index, Manifest, OCILayout, Reference, parse_manifest_or_index
from ..oci import mediatypes as mt

if TYPE_CHECKING:
    from ..remote import RegistryClient


@runtime_checkable
class ArtifactSource(Protocol):
    """What the artifact code needs of the place holding an image."""

    #: human-readable name for messages (``host/repo`` or ``oci:PATH``)
    name: str

    async def get_document(self, reference: str, expected: Descriptor | None = None) -> tuple[Descriptor, bytes]:
        """A manifest or index by tag or digest, verified; ``ContentNotFound``/``NotFound`` when absent."""
        ...

    async def get_blob(self, desc: Descriptor) -> bytes:
        """A (small) blob in memory, verified against its digest and size."""
        ...

    async def fetch_blob_into(self, desc: Descriptor, store: OCILayout) -> None:
        """Copy a blob into ``store`` through its verified writer (nothing unverified is kept)."""
        ...

    async def put_blob(self, data: bytes, desc: Descriptor) -> None:
        """Store a blob (skipped when present)."""
        ...

    async def put_document(self, data: bytes, media_type: str, tag: str | None = None) -> Descriptor:
        """Store a manifest or index by digest, and under ``tag`` when given."""
        ...

    async def referrers(self, subject: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        """Descriptors of the manifests whose ``subject`` is ``subject``, filtered by ``artifact_type``."""
        ...


class RegistrySource:
    """One repository of a registry, through a :class:`~soci_lab.remote.RegistryClient`."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.name = f"{client.host}/{repository}"

    async def get_document(self, reference: str, expected: Descriptor | None = None) -> tuple[Descriptor, bytes]:
        fetched = await self.client.get_manifest(self.repository, reference, expected=expected)
        return fetched.descriptor, fetched.data

    async def get_blob(self, desc: Descriptor) -> bytes:
        return await self.client.get_blob(self.repository, desc)

    async def fetch_blob_into(self, desc: Descriptor, store: OCILayout) -> None:
        await self.client.fetch_blob(self.repository, desc, layout=store)

    async def fetch_blob_to(self, desc: Descriptor, path: Path) -> None:
        """Download a blob to a file, verified (a layer to build a zTOC from)."""
        await self.client.fetch_blob(self.repository, desc, path=path)

    async def put_blob(self, data: bytes, desc: Descriptor) -> None:
        await self.client.push_blob(self.repository, data, desc.digest, desc.size)

    async def put_document(self, data: bytes, media_type: str, tag: str | None = None) -> Descriptor:
        return await self.client.push_manifest(self.repository, data, media_type, tag or str(Digest.from_bytes(data)))

    async def referrers(self, subject: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        return await self.client.referrers(self.repository, subject, artifact_type)


class LayoutSource:
    """An OCI image layout (``oci:PATH``) used as both image store and artifact store."""

    def __init__(self, layout: OCILayout) -> None:
        self.layout = layout
        self.name = f"oci:{layout.root}"

    async def get_document(self, reference: str, expected: Descriptor | None = None) -> tuple[Descriptor, bytes]:
        desc = self.layout.resolve(reference) if expected is None else expected
        if not self.layout.has(desc.digest):
            raise ContentNotFound(f"{desc.digest} is not in {self.layout.root}")
        data = await anyio.to_thread.run_sync(self.layout.read_blob, desc.digest)  # verified
        if expected is not None and len(data) != expected.size:
            raise SizeMismatch(f"{self.name}@{desc.digest} is {len(data)} bytes, its descriptor says {expected.size}")
        media_type = parse_manifest_or_index(data, None).media_type
        return Descriptor(media_type, desc.digest, len(data)), data

    async def get_blob(self, desc: Descriptor) -> bytes:
        data = await anyio.to_thread.run_sync(self.layout.read_blob, desc.digest)
        if len(data) != desc.size:
            raise SizeMismatch(f"blob {desc.digest} in {self.layout.root} is {len(data)} bytes, expected {desc.size}")
        return data

    def blob_path(self, desc: Descriptor) -> Path:
        """Where a blob of this layout lives (read in place to build a zTOC)."""
        if not self.layout.has(desc.digest):
            raise ContentNotFound(f"blob {desc.digest} is not in {self.layout.root}")
        return self.layout.blob_path(desc.digest)

    async def fetch_blob_into(self, desc: Descriptor, store: OCILayout) -> None:
        if store.root.resolve() == self.layout.root.resolve():
            if store.has(desc.digest):
                return
            raise ContentNotFound(f"blob {desc.digest} is not in {self.layout.root}")
        await anyio.to_thread.run_sync(store.import_file, self.blob_path(desc), desc.digest, desc.size)

    async def put_blob(self, data: bytes, desc: Descriptor) -> None:
        await anyio.to_thread.run_sync(self.layout.write_blob, data, desc.digest, desc.size)

    async def put_document(self, data: bytes, media_type: str, tag: str | None = None) -> Descriptor:
        doc = parse_manifest_or_index(data, media_type)
        digest = await anyio.to_thread.run_sync(self.layout.write_blob, data)
        desc = Descriptor(media_type, digest, len(data))
        if tag is not None:
            self.layout.tag(desc, tag)
        elif isinstance(doc, Index) or doc.subject is not None or _artifact_type(doc) is not None:
            # keep artifacts and untagged image indexes (a digest-only REF converted) reachable from
            # index.json: their GC root, and how referrers are found in a layout
            self.layout.tag(Descriptor(media_type, digest, len(data), artifact_type=_artifact_type(doc)), None)
        return desc

    async def referrers(self, subject: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        return await anyio.to_thread.run_sync(layout_referrers, self.layout, subject.digest, artifact_type)


def _artifact_type(doc: Manifest | Index) -> str | None:
    """A document's artifact type as a referrers list shows it (SOCI indexes: their config media type)."""
    if doc.artifact_type:
        return doc.artifact_type
    if isinstance(doc, Manifest) and doc.config.media_type not in mt.CONFIG_TYPES:
        return doc.config.media_type
    return None


def layout_referrers(layout: OCILayout, subject: str, artifact_type: str | None = None) -> list[Descriptor]:
    """Manifests listed in ``layout``'s index.json whose ``subject`` is ``subject`` (oldest first)."""
    want = Digest(subject)
    out: list[Descriptor] = []
    seen: set[str] = set()
    for entry in layout.index().manifests:
        if entry.digest in seen or entry.media_type not in mt.MANIFEST_TYPES or not layout.has(entry.digest):
            continue
        seen.add(entry.digest)
        try:
            data = layout.read_blob(entry.digest)
            doc = Manifest.from_bytes(data)
        except (DigestMismatch, InvalidManifest, json.JSONDecodeError):
            continue  # a damaged entry is not a referrer; the fetch of a chosen one reports damage
        if doc.subject is None or doc.subject.digest != want:
            continue
        kind = _artifact_type(doc)
        if artifact_type is not None and kind != artifact_type:
            continue
        out.append(Descriptor(doc.media_type, entry.digest, len(data), annotations=dict(doc.annotations),
                              artifact_type=kind))
    return out


def open_source(ref: Reference, client: RegistryClient | None = None) -> ArtifactSource:
    """The source for ``ref``: its layout (created only if it exists), or its repository through ``client``."""
    if ref.layout_path is not None:
        return LayoutSource(OCILayout(ref.layout_path, create=False))
    if client is None:
        raise InvalidInput(f"no registry client for {ref}")
    return RegistrySource(client, ref.repository)


__all__ = ["ArtifactSource", "LayoutSource", "RegistrySource", "layout_referrers", "open_source"]
