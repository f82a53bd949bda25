"""The one seam through which the other rooms read blob bytes from a registry.

:class:`BlobReader` reads the blobs of one repository: their size and whether ranges are served
(:meth:`~BlobReader.probe`, upstream's ``doInitialFetch``), a whole blob or a byte range streamed into a
:data:`Sink` (resumed after breaks, the eager pullers' way), a byte range into memory
(:meth:`~BlobReader.get_content_with_range`, lazy loading's way) and the storage URL a blob URL redirects to
(:meth:`~BlobReader.resolve_redirect`, upstream's ``redirect``). Redirect caching is on by default, as
upstream enables ``CacheRedirects`` for blob reads.

:class:`RangeReader` is the part lazy loading needs (:class:`soci_lab.lazy.RegistryRangeFetcher`); a
:class:`~.client.RegistryClient` has it too, so a fetcher can also be given the client itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .ranges import Sink

if TYPE_CHECKING:
    from .client import RegistryClient


class RangeReader(Protocol):
    """Byte ranges of a blob URL into memory, and the URL that blob URL redirects to."""

    async def get_content_with_range(self, url: str, lower: int, upper: int) -> bytes:
        """Bytes ``lower..upper`` (inclusive) of ``url``; :class:`~soci_lab.errors.RegistryError` with
        ``status`` on an unexpected answer."""
        ...

    async def resolve_redirect(self, url: str) -> str:
        """``GET Range: bytes=0-1`` of ``url`` afresh (forgetting a cached redirect) and the URL that answered."""
        ...


@dataclass(frozen=True)
class BlobSize:
    """What a ``HEAD`` of a blob tells: its size, and whether the registry serves byte ranges of it."""

    size: int
    accept_ranges: bool


class BlobReader:
    """Reads the blobs of one repository through a :class:`~.client.RegistryClient` (see the module doc)."""

    def __init__(self, client: RegistryClient, repo: str, *, cache_redirect: bool = True) -> None:
        self.client = client
        self.repo = repo
        self.cache_redirect = cache_redirect

    def url(self, digest: str) -> str:
        """The blob URL of ``digest`` in this repository."""
        return self.client.blob_url(self.repo, digest)

    async def probe(self, digest: str) -> BlobSize:
        info = await self.client.head_blob(self.repo, digest)
        return BlobSize(int(info.size), bool(info.accept_ranges))

    async def fetch(self, digest: str, size: int | None, sink: Sink) -> int:
        """The whole blob into ``sink`` (no ``Range`` on the first GET; resumed with one after a break);
        ``size`` (the descriptor's, None or 0 when unknown) must be what the registry serves."""
        return await self.client.fetch_whole_into(self.repo, digest, size or None, sink,
                                                  cache_redirect=self.cache_redirect)

    async def fetch_range(self, digest: str, lower: int, upper: int, sink: Sink) -> int:
        """Bytes ``lower..upper`` (inclusive) of the blob into ``sink``; the count delivered."""
        return await self.client.fetch_range_into(self.repo, digest, lower, upper, sink,
                                                  cache_redirect=self.cache_redirect)

    async def get_content_with_range(self, url: str, lower: int, upper: int) -> bytes:
        return await self.client.get_content_with_range(url, lower, upper, cache_redirect=self.cache_redirect)

    async def resolve_redirect(self, url: str) -> str:
        return await self.client.resolve_redirect(url)


__all__ = ["BlobReader", "BlobSize", "RangeReader", "Sink"]
