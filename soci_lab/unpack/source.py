"""Where layer blobs come from, as the unpack room sees it: a small protocol and two implementations.

:class:`BlobSource` is all the pullers need from a registry: learn a blob's size and whether ranged GETs
work (upstream's ``doInitialFetch``), stream a whole blob, stream a byte range. Bytes are delivered to an
async ``sink(chunk)`` so the HTTP client can resume a broken body without the caller noticing.

* :class:`RegistryBlobSource` adapts :class:`soci_lab.remote.blobs.BlobReader`, the registry's one seam for
  reading blobs (redirect caching on, as upstream enables ``CacheRedirects`` for parallel pull).
* :class:`LocalFileSource` serves blobs from files, optionally refusing ranges or throttling; the tests and
  the kill-half-way test use it.

:class:`ContentStore` is the local content store checked before the network (an
:class:`soci_lab.oci.OCILayout` satisfies it as it is).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio

from ..errors import ContentNotFound, InvalidManifest

if TYPE_CHECKING:
    from ..remote.blobs import Sink
    from ..remote.client import RegistryClient


@dataclass(frozen=True)
class LayerSpec:
    """A layer to pull: its compressed digest, size and media type, and its diffID when known."""

    digest: str
    size: int
    media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip"
    diff_id: str | None = None

    @classmethod
    def from_descriptor(cls, desc: Any, diff_id: str | None = None) -> LayerSpec:
        """From an :class:`soci_lab.oci.Descriptor` (or anything with digest/size/media_type)."""
        return cls(str(desc.digest), int(desc.size), str(desc.media_type), diff_id)


@dataclass(frozen=True)
class BlobProbe:
    """What the initial fetch learned."""

    size: int
    accept_ranges: bool


@runtime_checkable
class BlobSource(Protocol):
    """A registry as the pullers use it."""

    async def probe(self, layer: LayerSpec) -> BlobProbe:
        """Size of the blob and whether the server serves byte ranges."""
        ...

    async def fetch(self, layer: LayerSpec, sink: Sink) -> int:
        """Deliver the whole blob to ``sink`` (one request, resumed on breaks); returns the byte count."""
        ...

    async def fetch_range(self, layer: LayerSpec, lower: int, upper: int, sink: Sink) -> int:
        """Deliver bytes ``lower..upper`` (inclusive) to ``sink``; returns the byte count."""
        ...


@runtime_checkable
class ContentStore(Protocol):
    """A local content store that may already hold a blob, and can keep one."""

    def has(self, digest: str) -> bool: ...

    def blob_path(self, digest: str) -> Path: ...

    def import_file(self, path: str | os.PathLike[str], digest: str, size: int | None = None) -> Any: ...


class RegistryBlobSource:
    """:class:`BlobSource` over :class:`soci_lab.remote.RegistryClient` for one repository."""

    def __init__(self, client: RegistryClient, repo: str, *, cache_redirect: bool = True) -> None:
        from ..remote.blobs import BlobReader

        self.reader = BlobReader(client, repo, cache_redirect=cache_redirect)

    async def probe(self, layer: LayerSpec) -> BlobProbe:
        info = await self.reader.probe(layer.digest)
        return BlobProbe(info.size, info.accept_ranges)

    async def fetch(self, layer: LayerSpec, sink: Sink) -> int:
        return await self.reader.fetch(layer.digest, layer.size, sink)

    async def fetch_range(self, layer: LayerSpec, lower: int, upper: int, sink: Sink) -> int:
        return await self.reader.fetch_range(layer.digest, lower, upper, sink)


@dataclass
class LocalFileSource:
    """Blobs served from files (``digest → path``), for tests and local runs.

    ``ranges=False`` makes :meth:`probe` say the server does not serve ranges; ``chunk`` is the size of the
    pieces delivered to the sink; ``delay_s`` sleeps before each piece (to slow a pull down).
    """

    blobs: Mapping[str, str | os.PathLike[str]]
    ranges: bool = True
    chunk: int = 1 << 20
    delay_s: float = 0.0
    requests: list[tuple[str, int, int | None]] = field(default_factory=list)

    def _path(self, layer: LayerSpec) -> Path:
        try:
            return Path(self.blobs[layer.digest])
        except KeyError:
            raise ContentNotFound(f"blob {layer.digest} is not in this local source") from None

    async def probe(self, layer: LayerSpec) -> BlobProbe:
        self.requests.append((layer.digest, 0, 1))
        return BlobProbe(self._path(layer).stat().st_size, self.ranges)

    async def fetch(self, layer: LayerSpec, sink: Sink) -> int:
        self.requests.append((layer.digest, 0, None))
        return await self._send(self._path(layer), 0, None, sink)

    async def fetch_range(self, layer: LayerSpec, lower: int, upper: int, sink: Sink) -> int:
        self.requests.append((layer.digest, lower, upper))
        if not self.ranges:
            raise ContentNotFound("this local source does not serve ranges")
        return await self._send(self._path(layer), lower, upper, sink)

    async def _send(self, path: Path, lower: int, upper: int | None, sink: Sink) -> int:
        sent = 0
        with open(path, "rb") as f:
            f.seek(lower)
            left = None if upper is None else upper - lower + 1
            while left is None or left > 0:
                n = self.chunk if left is None else min(self.chunk, left)
                data = f.read(n)
                if not data:
                    break
                if self.delay_s:
                    await anyio.sleep(self.delay_s)
                else:
                    await anyio.lowlevel.checkpoint()
                await sink(data)
                sent += len(data)
                if left is not None:
                    left -= len(data)
        return sent


def image_layer_specs(layers: Sequence[Any], diff_ids: Sequence[Any]) -> list[LayerSpec]:
    """:class:`LayerSpec`\\ s of an image from its manifest's layer descriptors and its config's diffIDs.

    Upstream's ``diffIDMap``: the two lists must be as long as each other
    (``resolved = await client.resolve_image(ref)`` → ``image_layer_specs(resolved.layers,
    resolved.config.diff_ids)``).
    """
    if len(layers) != len(diff_ids):
        raise InvalidManifest(f"manifest lists {len(layers)} layers but the config has {len(diff_ids)} diffIDs")
    return [LayerSpec.from_descriptor(d, str(i)) for d, i in zip(layers, diff_ids, strict=True)]


__all__ = [
    "BlobProbe",
    "BlobSource",
    "ContentStore",
    "LayerSpec",
    "LocalFileSource",
    "RegistryBlobSource",
    "image_layer_specs",
]
