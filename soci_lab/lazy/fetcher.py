"""Range fetchers: where a span manager gets compressed bytes from.

* :class:`BytesRangeFetcher` — a blob in memory (tests, notebooks);
* :class:`FileRangeFetcher` — a blob in a local file (read in a worker thread);
* :class:`RegistryRangeFetcher` — a blob in an OCI registry, through the registry's blob seam
  (:class:`soci_lab.remote.blobs.RangeReader`: a ``BlobReader`` or the ``RegistryClient`` itself): redirect
  resolution (``GET Range: bytes=0-1`` learns the real URL, e.g. a pre-signed CDN URL, as upstream's
  ``redirect``), one refresh of the real URL and retry on 401/403, one retry after a 400 (every request
  already asks for a single range, which is what upstream's single-range mode falls back to), and a 200
  answer (whole blob) sliced to the asked range. Connection errors and 5xx are retried lower down, by the
  registry client (``[http]`` / ``[blob]`` retries).

All fetchers count requests and bytes so tests and benchmarks can assert "only these spans were fetched".
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from ..errors import InvalidInput, RangeNotSatisfiable, RegistryError, TruncatedBody

if TYPE_CHECKING:
    from ..remote.blobs import RangeReader


def _check_range(lower: int, upper: int) -> None:
    if lower < 0 or upper < lower:
        raise InvalidInput(f"invalid byte range {lower}-{upper}")


class BytesRangeFetcher:
    """Serves ranges of an in-memory blob."""

    def __init__(self, blob: bytes) -> None:
        self.blob = bytes(blob)
        self.requests = 0
        self.bytes = 0

    async def fetch(self, lower: int, upper_inclusive: int) -> bytes:
        _check_range(lower, upper_inclusive)
        if lower >= len(self.blob):
            raise RangeNotSatisfiable(f"range {lower}-{upper_inclusive} beyond blob of {len(self.blob)}", status=416)
        self.requests += 1
        data = self.blob[lower : upper_inclusive + 1]
        self.bytes += len(data)
        await anyio.lowlevel.checkpoint()
        return data


class FileRangeFetcher:
    """Serves ranges of a local file, reading in a worker thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def _read(self, lower: int, n: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(lower)
            return f.read(n)

    async def fetch(self, lower: int, upper_inclusive: int) -> bytes:
        _check_range(lower, upper_inclusive)
        if lower >= self.size:
            raise RangeNotSatisfiable(f"range {lower}-{upper_inclusive} beyond file of {self.size}", status=416)
        data = await anyio.to_thread.run_sync(self._read, lower, upper_inclusive + 1 - lower)
        with self._lock:
            self.requests += 1
            self.bytes += len(data)
        return data


class RegistryRangeFetcher:
    """Ranged GETs of one blob through the registry's blob seam (:class:`~soci_lab.remote.blobs.RangeReader`).

    ``client`` reads bytes ``lower..upper`` (inclusive) of ``url`` (raising :class:`RegistryError` with
    ``status`` on an unexpected answer) and resolves redirects; ``url`` is
    ``<registry>/v2/<repo>/blobs/<digest>``. With ``resolve_redirect=True`` the first fetch (and every
    401/403) asks the client for the URL the blob URL redirects to (``GET Range: bytes=0-1``), so span reads
    go straight to e.g. a pre-signed CDN URL; a 401/403 from that URL forgets it and resolves again, once.
    """

    def __init__(self, client: RangeReader, url: str, *, resolve_redirect: bool = True) -> None:
        self.client = client
        self.url = url
        self.real_url: str | None = None
        self.resolve_redirect = resolve_redirect
        self.requests = 0
        self.bytes = 0
        self.refreshes = 0
        self._lock = anyio.Lock()

    async def _resolve(self) -> str:
        """Upstream's ``redirect``: ``GET Range: bytes=0-1`` and keep the URL the answer came from."""
        if not self.resolve_redirect:
            return self.url
        self.requests += 1
        return await self.client.resolve_redirect(self.url)

    async def _real_url(self, *, refresh: bool = False) -> str:
        async with self._lock:
            if self.real_url is None or refresh:
                if refresh:
                    self.refreshes += 1
                self.real_url = await self._resolve()
            return self.real_url

    async def fetch(self, lower: int, upper_inclusive: int) -> bytes:
        _check_range(lower, upper_inclusive)
        url = await self._real_url()
        refreshed = switched = False
        while True:
            try:
                self.requests += 1
                data = await self.client.get_content_with_range(url, lower, upper_inclusive)
            except RegistryError as exc:
                status = getattr(exc, "status", None)
                if status in (401, 403) and not refreshed:
                    refreshed = True
                    url = await self._real_url(refresh=True)
                    continue
                if status == 400 and not switched:
                    switched = True
                    continue
                raise
            want = upper_inclusive + 1 - lower
            if len(data) > want:
                # a 200 with the whole blob: take the asked range (upstream forgets to skip to `lower`)
                data = data[lower : lower + want] if len(data) >= lower + want else data[:want]
            if len(data) < want:
                raise TruncatedBody(f"range {lower}-{upper_inclusive}: got {len(data)} of {want} bytes")
            self.bytes += len(data)
            return bytes(data)
