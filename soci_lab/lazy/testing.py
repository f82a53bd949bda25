"""Small, pure-Python span geometries and fetchers for tests, benchmarks and notebooks.

:class:`FixedGeometry` cuts an uncompressed blob into fixed-size spans; with ``codec="identity"`` the
"compressed" blob is the blob itself (decompress = identity), with ``codec="zlib"`` every span is an
independent raw-deflate stream, so compressed and uncompressed ranges differ as in a real layer. Span
digests are computed the way the zTOC builder does (sha256 over the compressed span bytes).
"""

from __future__ import annotations

import bisect
import hashlib
import zlib

from ..errors import ExceedMaxSpan, InvalidInput


class FixedGeometry:
    """Fixed-size spans over ``data``; ``compressed`` is the blob a fetcher must serve."""

    def __init__(self, data: bytes, span_size: int, *, codec: str = "identity") -> None:
        if span_size <= 0:
            raise InvalidInput("span_size must be positive")
        if codec not in ("identity", "zlib"):
            raise InvalidInput(f"unknown codec {codec!r}")
        self.data = bytes(data)
        self.span_size = span_size
        self.codec = codec
        n = max(1, -(-len(self.data) // span_size))
        self._ustarts = [i * span_size for i in range(n)]
        self._uends = [min(len(self.data), (i + 1) * span_size) for i in range(n)]
        chunks: list[bytes] = []
        for us, ue in zip(self._ustarts, self._uends, strict=True):
            raw = self.data[us:ue]
            if codec == "zlib":
                c = zlib.compressobj(6, zlib.DEFLATED, -15)
                raw = c.compress(raw) + c.flush()
            chunks.append(raw)
        self._cstarts: list[int] = []
        pos = 0
        for chunk in chunks:
            self._cstarts.append(pos)
            pos += len(chunk)
        self._cends = [*self._cstarts[1:], pos]
        self.compressed = b"".join(chunks)
        self._digests = ["sha256:" + hashlib.sha256(c).hexdigest() for c in chunks]

    @property
    def span_count(self) -> int:
        return len(self._ustarts)

    @property
    def uncompressed_size(self) -> int:
        return len(self.data)

    def _check(self, span_id: int) -> None:
        if not 0 <= span_id < self.span_count:
            raise ExceedMaxSpan(f"span {span_id} out of range")

    def compressed_range(self, span_id: int) -> tuple[int, int]:
        self._check(span_id)
        return self._cstarts[span_id], self._cends[span_id]

    def uncompressed_range(self, span_id: int) -> tuple[int, int]:
        self._check(span_id)
        return self._ustarts[span_id], self._uends[span_id]

    def span_of(self, uncompressed_offset: int) -> int:
        return max(0, min(self.span_count - 1, bisect.bisect_right(self._ustarts, uncompressed_offset) - 1))

    def span_digest(self, span_id: int) -> str | None:
        self._check(span_id)
        return self._digests[span_id]

    def decompress(self, span_id: int, compressed: bytes) -> bytes:
        if self.codec == "identity":
            return bytes(compressed)
        d = zlib.decompressobj(-15)
        return d.decompress(compressed) + d.flush()
