"""The :class:`~soci_lab.lazy.span.SpanGeometry` of a real layer, from :mod:`soci_lab.ztoc`'s zinfo.

:class:`ZinfoGeometry` adapts a gzip zinfo (checkpoints) or a tar zinfo (fixed spans of an uncompressed
layer) plus the per-span digests. :func:`index_layer` builds everything the lazy path needs from a local
layer file in one pass — checkpoints, span digests and the TOC — which is what tests, benchmarks and the
local "index it myself" path use; mounts of pushed images take the same pieces from the zTOC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExceedMaxSpan, FormatError
from ..ztoc.toc import FileMetadata, TarScanner, derive_header_offsets


class ZinfoGeometry:
    """Span geometry over a ``GzipZinfo`` or ``TarZinfo`` and the span digests (``"sha256:<hex>"``)."""

    def __init__(self, zinfo: Any, span_digests: list[str] | None) -> None:
        self.zinfo = zinfo
        self.digests = list(span_digests) if span_digests else None
        if self.digests is not None and len(self.digests) != zinfo.span_count:
            raise FormatError(f"{len(self.digests)} span digests for {zinfo.span_count} spans")

    @property
    def span_count(self) -> int:
        return int(self.zinfo.span_count)

    @property
    def uncompressed_size(self) -> int:
        return int(self.zinfo.uncompressed_size)

    @property
    def compressed_size(self) -> int:
        return int(self.zinfo.compressed_size)

    @property
    def algorithm(self) -> str:
        return str(getattr(self.zinfo, "algorithm", "gzip"))

    def compressed_range(self, span_id: int) -> tuple[int, int]:
        return self.zinfo.start_compressed_offset(span_id), self.zinfo.end_compressed_offset(span_id)

    def uncompressed_range(self, span_id: int) -> tuple[int, int]:
        if self.algorithm == "uncompressed":
            return self.compressed_range(span_id)
        return self.zinfo.start_uncompressed_offset(span_id), self.zinfo.end_uncompressed_offset(span_id)

    def span_of(self, uncompressed_offset: int) -> int:
        return max(0, min(self.span_count - 1, int(self.zinfo.span_of(uncompressed_offset))))

    def span_digest(self, span_id: int) -> str | None:
        if not 0 <= span_id < self.span_count:
            raise ExceedMaxSpan(f"span {span_id} does not exist (max span id {self.span_count - 1})")
        return None if self.digests is None else self.digests[span_id]

    def decompress(self, span_id: int, compressed: bytes) -> bytes:
        return bytes(self.zinfo.decompress_span(span_id, compressed))

    def header_range(self) -> tuple[int, int]:
        """``[0, start_compressed_offset(0))``: the gzip header upstream checks at span manager creation."""
        return 0, self.compressed_range(0)[0]

    def verify_header(self, data: bytes) -> None:
        self.zinfo.verify_header(data)


@dataclass
class LayerIndex:
    """What a lazy mount needs to know about one layer: its span geometry and its TOC."""

    geometry: ZinfoGeometry
    entries: list[FileMetadata]
    compressed_size: int
    uncompressed_size: int


def index_layer(path: str | Path, span_size: int = 1 << 22) -> LayerIndex:
    """Scan a local gzip or uncompressed tar layer once: checkpoints, span digests and TOC (blocking)."""
    from ..ztoc.gzip_zinfo import scan_gzip
    from ..ztoc.tar_zinfo import scan_tar

    path = Path(path)
    scanner = TarScanner()
    with open(path, "rb") as f:
        magic = f.read(2)
        f.seek(0)
        if magic == b"\x1f\x8b":
            scan = scan_gzip(f, span_size, sink=scanner.feed)
            geometry = ZinfoGeometry(scan.zinfo, scan.span_digests)
            csize = scan.compressed_size
        else:
            tscan = scan_tar(f, span_size, sink=scanner.feed)
            geometry = ZinfoGeometry(tscan.zinfo, tscan.span_digests)
            csize = tscan.size
    usize = scanner.finish()
    entries = derive_header_offsets(list(scanner.entries))
    return LayerIndex(geometry, entries, csize, usize)
