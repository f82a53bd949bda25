"""``verify_image``: fetch an image from a registry or an OCI layout and check every digest it carries.

Checked: the manifest (and index) against the digest it was asked for or announced; the config against
the manifest's descriptor; each layer's bytes against its digest and size; each layer's uncompressed
bytes against the config's diffID; the layer count against the diffID count. Layers are decompressed by
``soci_lab.unpack.decompress`` (the unpacker's own decompressors), by media type or magic bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._sync import run_sync
from ..errors import ContentNotFound, DecompressionError, DigestMismatch, SizeMismatch, UnsupportedMediaType
from ..oci import (
    Descriptor,
    Digest,
    ImageConfig,
    Index,
    Manifest,
    OCILayout,
    Platform,
    Reference,
    check_layers_match_config,
)
from ..oci import mediatypes as mt

if TYPE_CHECKING:
    from ..events import EventRecorder


@dataclass(frozen=True)
class VerifiedLayer:
    """A layer whose digest, size and diffID were all checked."""

    descriptor: Descriptor
    diff_id: Digest
    uncompressed_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": str(self.descriptor.digest),
            "diff_id": str(self.diff_id),
            "size": self.descriptor.size,
            "media_type": self.descriptor.media_type,
            "uncompressed_size": self.uncompressed_size,
        }


@dataclass(frozen=True)
class VerifiedImage:
    """An image whose every digest checked out."""

    ref: Reference
    manifest_descriptor: Descriptor
    manifest: Manifest
    config: ImageConfig
    layers: tuple[VerifiedLayer, ...]
    index_descriptor: Descriptor | None = None

    @property
    def digest(self) -> Digest:
        return self.manifest_descriptor.digest

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": str(self.ref),
            "digest": str(self.digest),
            "index_digest": str(self.index_descriptor.digest) if self.index_descriptor else None,
            "media_type": self.manifest_descriptor.media_type,
            "config_digest": str(self.manifest.config.digest),
            "layers": [layer.to_json() for layer in self.layers],
        }


def check_layer_file(path: str | os.PathLike[str], desc: Descriptor, diff_id: Digest) -> VerifiedLayer:
    """Hash the layer blob at ``path`` and its decompressed content against ``desc`` and ``diff_id``.

    Decompression is ``soci_lab.unpack.decompress``'s (multi-member gzip, multi-frame zstd, magic-byte
    sniffing for a Docker ``rootfs.diff.tar``). A blob that does not decompress is reported as a
    ``DigestMismatch`` when its bytes are not the announced ones, else as the ``DecompressionError`` it is.
    """
    from ..unpack.decompress import compression_of, producer_for

    p = Path(path)
    what = f"layer {desc.digest}"
    with open(p, "rb") as f:
        head = f.read(4)
    declared = mt.layer_compression(desc.media_type)
    compression = compression_of(None if declared == "unknown" else desc.media_type, head)
    packed = hashlib.new(desc.digest.algorithm)
    unpacked = hashlib.new(diff_id.algorithm)
    size = usize = 0

    def on_input(block: bytes) -> None:
        nonlocal size
        packed.update(block)
        size += len(block)

    try:
        for chunk in producer_for(compression, p, threading.Event(), on_input):
            unpacked.update(chunk)
            usize += len(chunk)
    except DecompressionError:
        with open(p, "rb") as f:
            if Digest.from_file(f, desc.digest.algorithm) != desc.digest:
                raise DigestMismatch(f"{what} does not match its digest (and does not decompress)") from None
        raise
    if size != desc.size:
        raise SizeMismatch(f"{what} is {size} bytes, its descriptor says {desc.size}")
    got = Digest(f"{desc.digest.algorithm}:{packed.hexdigest()}")
    if got != desc.digest:
        raise DigestMismatch(f"{what} does not match its digest (got {got})")
    got_diff = Digest(f"{diff_id.algorithm}:{unpacked.hexdigest()}")
    if got_diff != diff_id:
        raise DigestMismatch(f"{what}: uncompressed content hashes to {got_diff}, the config's diffID is {diff_id}")
    return VerifiedLayer(desc, diff_id, usize)


def _check_layers(manifest: Manifest, config: ImageConfig) -> list[tuple[Descriptor, Digest]]:
    check_layers_match_config(manifest, config)
    layers = manifest.layer_descriptors()
    if len(layers) != len(manifest.layers):
        raise UnsupportedMediaType(f"manifest {manifest.digest} lists blobs that are not image layers")
    return list(zip(layers, config.diff_ids, strict=True))


def verify_layout_image(ref: Reference, platform: Platform | None = None) -> VerifiedImage:
    """``verify_image`` for an ``oci:PATH[:TAG|@DIGEST]`` reference."""
    assert ref.layout_path is not None
    layout = OCILayout(ref.layout_path, create=False)
    top = layout.resolve(str(ref.digest) if ref.digest else (ref.tag or "latest"))
    data = layout.read_blob(top.digest)  # verifies the digest
    if len(data) != top.size:
        raise SizeMismatch(f"{ref}: manifest is {len(data)} bytes, index.json says {top.size}")
    index_desc = None
    if top.media_type in mt.INDEX_TYPES:
        index = Index.from_bytes(data, top.media_type)
        index_desc, top = top, index.select(platform)
        data = layout.read_blob(top.digest)
        if len(data) != top.size:
            raise SizeMismatch(f"{ref}: manifest is {len(data)} bytes, the index says {top.size}")
    manifest = Manifest.from_bytes(data, top.media_type if top.media_type in mt.MANIFEST_TYPES else None)
    cdata = layout.read_blob(manifest.config.digest)
    if len(cdata) != manifest.config.size:
        raise SizeMismatch(f"{ref}: config is {len(cdata)} bytes, the manifest says {manifest.config.size}")
    config = ImageConfig.from_bytes(cdata)
    layers = []
    for desc, diff_id in _check_layers(manifest, config):
        if not layout.has(desc.digest):
            raise ContentNotFound(f"layer {desc.digest} is not in {layout.root}")
        layers.append(check_layer_file(layout.blob_path(desc.digest), desc, diff_id))
    return VerifiedImage(ref, top, manifest, config, tuple(layers), index_desc)


async def averify_registry_image(
    ref: Reference,
    platform: Platform | None = None,
    *,
    insecure: bool = False,
    creds: str | None = None,
    events: EventRecorder | None = None,
) -> VerifiedImage:
    """``verify_image`` for a registry reference (async; layers are downloaded to a temporary file, then
    checked in a worker thread; with ``events``, each check is a ``verify`` event)."""
    import anyio

    from ..remote import RegistryClient

    async with RegistryClient(ref, creds=creds, insecure=insecure, events=events) as rc:
        resolved = await rc.resolve_image(ref, platform)  # manifest, index and config digests verified
        layers = []
        with tempfile.TemporaryDirectory(prefix="soci-lab-verify-") as tmp:
            for desc, diff_id in _check_layers(resolved.manifest, resolved.config):
                path = Path(tmp) / desc.digest.hex
                await rc.fetch_blob(ref.repository, desc, path=path)

                def check(p: Path = path, d: Descriptor = desc, i: Digest = diff_id) -> VerifiedLayer:
                    if events is None:
                        return check_layer_file(p, d, i)
                    with events.step("verify", layer=str(d.digest), nbytes=d.size):
                        return check_layer_file(p, d, i)

                layers.append(await anyio.to_thread.run_sync(check))
                os.unlink(path)
    return VerifiedImage(
        ref, resolved.manifest_descriptor, resolved.manifest, resolved.config, tuple(layers),
        resolved.index_descriptor,
    )  # fmt: skip


def verify_image(
    ref: str | Reference,
    *,
    platform: Platform | None = None,
    insecure: bool = False,
    creds: str | None = None,
    events: EventRecorder | None = None,
) -> VerifiedImage:
    """Fetch ``ref`` (registry or ``oci:`` layout) and check manifest, config, layer digests and diffIDs.

    Raises ``DigestMismatch``/``SizeMismatch`` on the first thing that does not match, ``InvalidManifest``
    when the documents disagree (layer count vs diffIDs), ``ContentNotFound``/``NotFound`` when absent.
    """
    reference = Reference.parse(ref) if isinstance(ref, str) else ref
    if reference.is_layout:
        return verify_layout_image(reference, platform)

    return run_sync(lambda: averify_registry_image(reference, platform, insecure=insecure, creds=creds, events=events))


__all__ = [
    "VerifiedImage",
    "VerifiedLayer",
    "averify_registry_image",
    "check_layer_file",
    "verify_image",
    "verify_layout_image",
]
