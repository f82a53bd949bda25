"""``verify_image``: fetch an image from a registry or an OCI layout and check every digest it carries.

Checked: the manifest (and index) against the digest it was asked for or announced; the config against
the manifest's descriptor; each layer's bytes against its digest and size; each layer's uncompressed
bytes against the config's diffID; the layer count against the diffID count. Layers are decompressed by
their media type (gzip of one or many members, zstd of one or many frames, plain tar); a Docker
``…rootfs.diff.tar`` layer, which may be compressed, is recognised by its magic bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import DigestMismatch, SizeMismatch, UnsupportedMediaType
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

_READ = 1 << 20


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


class LayerDecoder:
    """Incremental decompression of a layer blob by compression name (``gzip``, ``zstd``, ``none``,
    or ``unknown`` to sniff the magic bytes); ``feed`` returns uncompressed bytes."""

    def __init__(self, compression: str) -> None:
        self.compression = compression
        self._pending = b""
        self._z: Any = None

    def _start(self, data: bytes) -> None:
        if self.compression == "unknown":
            if data[:2] == b"\x1f\x8b":
                self.compression = "gzip"
            elif data[:4] == b"\x28\xb5\x2f\xfd":
                self.compression = "zstd"
            else:
                self.compression = "none"

    def _new(self) -> Any:
        if self.compression == "gzip":
            return zlib.decompressobj(31)
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes) -> bytes:
        if self.compression == "unknown":
            self._pending += data
            if len(self._pending) < 4:
                return b""
            data, self._pending = self._pending, b""
            self._start(data)
        if self.compression in ("none", "uncompressed"):
            return data
        out = []
        while data:
            if self._z is None:
                self._z = self._new()
            out.append(self._z.decompress(data))
            if self._z.eof:  # end of a gzip member / zstd frame: what follows starts a new one
                data = self._z.unused_data
                self._z = None
            else:
                data = b""
        return b"".join(out)

    def finish(self, what: str) -> bytes:
        out = b""
        if self._pending:  # a blob shorter than the magic bytes
            rest, self._pending = self._pending, b""
            self._start(rest)
            out = self.feed(rest)
        if self._z is not None:
            raise DigestMismatch(f"{what} ends in the middle of a compressed stream (truncated)")
        return out


def check_layer_file(f: BinaryIO, desc: Descriptor, diff_id: Digest) -> VerifiedLayer:
    """Hash ``f`` (a layer blob) and its decompressed content against ``desc`` and ``diff_id``."""
    what = f"layer {desc.digest}"
    compression = mt.layer_compression(desc.media_type)
    decoder = LayerDecoder(compression)
    packed = hashlib.new(desc.digest.algorithm)
    unpacked = hashlib.new(diff_id.algorithm)
    size = usize = 0
    try:
        while chunk := f.read(_READ):
            packed.update(chunk)
            size += len(chunk)
            raw = decoder.feed(chunk)
            unpacked.update(raw)
            usize += len(raw)
        raw = decoder.finish(what)
    except zlib.error as exc:
        raise DigestMismatch(f"{what} does not decompress: {exc}") from None
    except Exception as exc:
        if type(exc).__name__ == "ZstdError":
            raise DigestMismatch(f"{what} does not decompress: {exc}") from None
        raise
    unpacked.update(raw)
    usize += len(raw)
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
        with layout.open_blob(desc.digest) as f:
            layers.append(check_layer_file(f, desc, diff_id))
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
                        with open(p, "rb") as f:
                            return check_layer_file(f, d, i)
                    with events.step("verify", layer=str(d.digest), nbytes=d.size), open(p, "rb") as f:
                        return check_layer_file(f, d, i)

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
    import anyio

    return anyio.run(lambda: averify_registry_image(reference, platform, insecure=insecure, creds=creds, events=events))


__all__ = [
    "LayerDecoder",
    "VerifiedImage",
    "VerifiedLayer",
    "averify_registry_image",
    "check_layer_file",
    "verify_image",
    "verify_layout_image",
]
