"""``copy_image``: copy an image between registries and OCI layouts, every byte verified on the way.

What is copied: the document REF names — an image index (every manifest it lists, all platforms, as
``skopeo copy --all`` does; or only one platform's manifest with ``platform=``) or a manifest — with each
manifest's config and layers. Documents are copied byte for byte, so digests do not change. Children go
before parents (blobs, then manifests, then the index), and the tag is set last, so the destination never
shows a tag that points at something it does not hold. Referrers of the image (SOCI v1 indexes,
signatures) are not copied.

How each blob travels, by the kinds of the two ends:
- layout → layout: ``OCILayout.import_file`` (hashed while copied);
- registry → layout: ``RegistryClient.fetch_blob`` into the layout's verified writer;
- layout → registry: ``RegistryClient.push_blob`` (hashes the file first, skips blobs already there);
- registry → registry: a cross-repository mount when both are on one host, else a verified download to a
  temporary file and an upload.
Blobs the destination already holds are not transferred again.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .._sync import run_sync
from ..errors import ContentNotFound, InvalidReference, SizeMismatch
from ..oci import Descriptor, Digest, Index, Manifest, OCILayout, Platform, Reference, parse_manifest_or_index
from ..oci import mediatypes as mt

if TYPE_CHECKING:
    from ..events import EventRecorder

#: blobs of one manifest in flight at once
COPY_CONCURRENCY = 4


@dataclass
class CopyResult:
    """The copied top document's descriptor and what had to travel."""

    src: Reference
    dst: Reference
    descriptor: Descriptor | None = None
    blobs_copied: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0
    manifests: list[str] = field(default_factory=list)

    @property
    def digest(self) -> Digest:
        assert self.descriptor is not None
        return self.descriptor.digest

    def to_json(self) -> dict[str, Any]:
        assert self.descriptor is not None
        return {
            "src": str(self.src),
            "dst": str(self.dst),
            "digest": str(self.descriptor.digest),
            "media_type": self.descriptor.media_type,
            "size": self.descriptor.size,
            "manifests": list(self.manifests),
            "blobs_copied": self.blobs_copied,
            "blobs_present": self.blobs_present,
            "bytes_copied": self.bytes_copied,
        }


class _Layout:
    def __init__(self, ref: Reference, create: bool) -> None:
        assert ref.layout_path is not None
        self.ref = ref
        self.layout = OCILayout(ref.layout_path, create=create)

    def name(self, desc: Descriptor) -> str:
        return f"{self.ref.layout_path}@{desc.digest}"

    async def resolve(self) -> tuple[Descriptor, bytes]:
        desc = self.layout.resolve(str(self.ref.digest) if self.ref.digest else (self.ref.tag or "latest"))
        return desc, await self.document(desc)

    async def document(self, desc: Descriptor) -> bytes:
        data = self.layout.read_blob(desc.digest)  # verified against its digest
        if len(data) != desc.size:
            raise SizeMismatch(f"{self.name(desc)} is {len(data)} bytes, its descriptor says {desc.size}")
        return data

    async def has_blob(self, desc: Descriptor) -> bool:
        return self.layout.has(desc.digest)

    async def put_document(self, data: bytes, desc: Descriptor, tag: str | None) -> None:
        self.layout.write_blob(data, desc.digest, desc.size)
        if tag is not None:
            self.layout.tag(Descriptor(desc.media_type, desc.digest, desc.size), tag)

    async def aclose(self) -> None:
        pass


class _Registry:
    def __init__(self, ref: Reference, insecure: bool, creds: str | None, events: EventRecorder | None) -> None:
        from ..remote import RegistryClient

        self.ref = ref
        self.repo = ref.repository
        self.client = RegistryClient(ref, creds=creds, insecure=insecure, events=events)

    async def resolve(self) -> tuple[Descriptor, bytes]:
        fetched = await self.client.get_manifest(self.repo, self.ref.reference)
        return fetched.descriptor, fetched.data

    async def document(self, desc: Descriptor) -> bytes:
        return (await self.client.get_manifest(self.repo, str(desc.digest), expected=desc)).data

    async def has_blob(self, desc: Descriptor) -> bool:
        return await self.client.blob_exists(self.repo, desc.digest)

    async def put_document(self, data: bytes, desc: Descriptor, tag: str | None) -> None:
        await self.client.push_manifest(self.repo, data, desc.media_type, tag or str(desc.digest))

    async def aclose(self) -> None:
        await self.client.aclose()


_End = _Layout | _Registry


def _endpoint(ref: Reference, *, dst: bool, insecure: bool, creds: str | None, events: EventRecorder | None) -> _End:
    if ref.is_layout:
        return _Layout(ref, create=dst)
    return _Registry(ref, insecure, creds, events)


async def _copy_blob(src: _End, dst: _End, desc: Descriptor, result: CopyResult) -> None:
    if await dst.has_blob(desc):
        result.blobs_present += 1
        return
    d = desc.digest
    if isinstance(src, _Layout):
        path = src.layout.blob_path(d)
        if not path.is_file():
            raise ContentNotFound(f"blob {d} is not in {src.ref.layout_path}")
        if isinstance(dst, _Layout):
            await anyio.to_thread.run_sync(dst.layout.import_file, path, d, desc.size)
        else:
            await dst.client.push_blob(dst.repo, path, d, desc.size)
    elif isinstance(dst, _Layout):
        await src.client.fetch_blob(src.repo, desc, layout=dst.layout)
    else:
        if src.client.host == dst.client.host and await dst.client.mount_blob(dst.repo, d, src.repo):
            result.blobs_copied += 1
            return
        with tempfile.TemporaryDirectory(prefix="soci-lab-copy-") as tmp:
            path = Path(tmp) / d.hex
            await src.client.fetch_blob(src.repo, desc, path=path)
            await dst.client.push_blob(dst.repo, path, d, desc.size)
    result.blobs_copied += 1
    result.bytes_copied += desc.size


async def _copy_manifest(src: _End, dst: _End, desc: Descriptor, data: bytes, result: CopyResult) -> None:
    manifest = Manifest.from_bytes(data, desc.media_type if desc.media_type in mt.MANIFEST_TYPES else None)
    limiter = anyio.CapacityLimiter(COPY_CONCURRENCY)

    async def one(blob: Descriptor) -> None:
        async with limiter:
            await _copy_blob(src, dst, blob, result)

    async with anyio.create_task_group() as tg:
        for blob in (manifest.config, *manifest.layers):
            tg.start_soon(one, blob)
    result.manifests.append(str(desc.digest))


async def _copy_tree(src: _End, dst: _End, desc: Descriptor, data: bytes, result: CopyResult) -> None:
    """Copy what ``desc`` (with bytes ``data``) references, then store ``data`` itself by digest."""
    doc = parse_manifest_or_index(data, desc.media_type if desc.media_type in mt.MANIFEST_TYPES | mt.INDEX_TYPES
                                  else None)  # fmt: skip
    if isinstance(doc, Index):
        for child in doc.manifests:
            if child.media_type in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
                child_data = await src.document(child)
                await _copy_tree(src, dst, child, child_data, result)
                await dst.put_document(child_data, child, None)
            else:
                await _copy_blob(src, dst, child, result)
    else:
        await _copy_manifest(src, dst, desc, data, result)


async def acopy_image(
    src: str | Reference,
    dst: str | Reference,
    *,
    platform: Platform | None = None,
    insecure: bool = False,
    creds: str | None = None,
    src_creds: str | None = None,
    dst_creds: str | None = None,
    events: EventRecorder | None = None,
) -> CopyResult:
    """Copy the image at ``src`` to ``dst`` (each a registry reference or ``oci:PATH[:TAG]``).

    With ``platform``, an index at ``src`` is narrowed to that platform's manifest (which is what lands at
    ``dst``); without, everything the index lists is copied and the index keeps its digest. ``creds``
    serves both ends unless ``src_creds``/``dst_creds`` are given; ``events`` records every HTTP request.
    Returns the top descriptor and counts.
    """
    s = Reference.parse(src) if isinstance(src, str) else src
    d = Reference.parse(dst) if isinstance(dst, str) else dst
    result = CopyResult(s, d)
    source = _endpoint(s, dst=False, insecure=insecure, creds=src_creds or creds, events=events)
    try:
        desc, data = await source.resolve()
        if platform is not None and desc.media_type in mt.INDEX_TYPES:
            desc = Index.from_bytes(data, desc.media_type).select(platform)
            data = await source.document(desc)
        if d.digest is not None and d.digest != desc.digest:
            raise InvalidReference(f"destination {d} names digest {d.digest}, but the image is {desc.digest}")
        dest = _endpoint(
            d, dst=True, insecure=insecure, creds=dst_creds or creds, events=events
        )  # made only once src is found
        try:
            await _copy_tree(source, dest, desc, data, result)
            await dest.put_document(data, desc, d.tag)
            result.descriptor = Descriptor(desc.media_type, desc.digest, desc.size)
        finally:
            await dest.aclose()
    finally:
        await source.aclose()
    return result


def copy_image(
    src: str | Reference,
    dst: str | Reference,
    *,
    platform: Platform | None = None,
    insecure: bool = False,
    creds: str | None = None,
    src_creds: str | None = None,
    dst_creds: str | None = None,
    events: EventRecorder | None = None,
) -> CopyResult:
    """``acopy_image`` for synchronous callers (runs its own event loop; from inside a running loop, call
    ``acopy_image`` instead)."""
    return run_sync(
        lambda: acopy_image(
            src,
            dst,
            platform=platform,
            insecure=insecure,
            creds=creds,
            src_creds=src_creds,
            dst_creds=dst_creds,
            events=events,
        )
    )
