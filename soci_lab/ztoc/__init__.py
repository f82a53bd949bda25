"""SOCI artifacts: the zTOC (TOC + checkpoints) of a layer, built, serialized, parsed and read through.

Pure code — no network, no event loop — so the lazy loader, the unpacker and the simulator can all use it.
Formats are documented in ``docs/formats.md`` (and ``soci_lab/ztoc/fbs/*.fbs``).

Building (``soci create`` for one layer; CPU work, run it in a worker thread)::

    z = build_ztoc(path_or_bytes_or_stream, media_type=desc.media_type, span_size=4 << 20,
                   recorder=rec, layer_digest=str(desc.digest))
    blob = z.to_bytes()              # the zTOC blob; its descriptor digest is z.digest()

Reading::

    z = Ztoc.from_bytes(blob)        # FormatError on anything malformed; validates like SpanManager
    z.toc                            # [FileMetadata] in stream order (name, type, offsets, xattrs(), ...)

Span geometry (what :class:`soci_lab.lazy.span.SpanGeometry` asks for; a ``Ztoc`` satisfies it)::

    z.span_count, z.uncompressed_size
    z.compressed_range(i)            # [start, end) in the layer blob (what to Range-GET)
    z.uncompressed_range(i)          # [start, end) in the tar stream
    z.span_of(offset)                # span holding an uncompressed offset
    z.span_digest(i), z.verify_span(i, data)   # IncorrectSpanDigest on mismatch
    z.verify_header(blob[slice(*z.header_range())])   # the gzip header before span 0 (upstream VerifyHeader)
    z.decompress(i, data)            # the span's uncompressed bytes from exactly its compressed bytes
    z.read(offset, length, fetch)    # any range, with fetch(start, end) -> bytes of the blob
    z.read_file(entry, fetch)
    verify_tar_header(entry, z.read(entry.tar_header_offset, entry.tar_header_size, fetch))  # upstream Verify

SOCI index (``soci_lab.ztoc.index``; needs no network either)::

    built = build_soci_index(manifest.layer_descriptors(), open_layer, version="v2", span_size=...,
                             min_layer_size=10 << 20, prefetch=["/usr/bin/python3", ...])
    built.index.to_bytes(), built.blobs        # manifest + every blob to push (zTOCs, prefetch, "{}")
    SociIndex.from_bytes(data).ztoc_descriptors()   # layer digest -> zTOC descriptor
    annotate_image_manifest(m, index_digest); index_descriptor_v2(index, platform, new_manifest_digest)

Also: :func:`compress_zstd_frames` / :class:`ZstdFrameWriter` (multi-frame zstd writers for
``image build --compression zstd``; use ``frame_size = span_size``),
:func:`detect_compression`, :func:`compression_for_media_type`, and the lower-level checkpoint classes
:class:`GzipZinfo`, :class:`TarZinfo`, :class:`ZstdZinfo` (``z.zinfo``).
"""

from .gzip_zinfo import Checkpoint, GzipZinfo, inflate_from, scan_gzip
from .index import (
    BuiltIndex,
    PrefetchArtifact,
    PrefetchSpan,
    SociIndex,
    annotate_image_manifest,
    build_soci_index,
    index_descriptor_v2,
    prefetch_artifacts,
    ztoc_descriptor,
)
from .tar_zinfo import TarZinfo, scan_tar
from .toc import (
    FILE_TYPES,
    FileMetadata,
    TarScanner,
    derive_header_offsets,
    go_time_text,
    parse_go_time,
    verify_tar_header,
)
from .zstd_zinfo import ZstdFrameWriter, ZstdZinfo, compress_zstd_frames, scan_zstd
from .ztoc import (
    ALGORITHM_CODES,
    DEFAULT_BUILD_TOOL_IDENTIFIER,
    DEFAULT_MIN_LAYER_SIZE,
    DEFAULT_SPAN_SIZE,
    MEDIA_TYPE_COMPRESSION,
    ZTOC_VERSION,
    Span,
    Zinfo,
    Ztoc,
    build_ztoc,
    compression_for_media_type,
    detect_compression,
    parse_zinfo,
)

__all__ = [
    "ALGORITHM_CODES",
    "DEFAULT_BUILD_TOOL_IDENTIFIER",
    "DEFAULT_MIN_LAYER_SIZE",
    "DEFAULT_SPAN_SIZE",
    "FILE_TYPES",
    "MEDIA_TYPE_COMPRESSION",
    "ZTOC_VERSION",
    "BuiltIndex",
    "Checkpoint",
    "FileMetadata",
    "GzipZinfo",
    "PrefetchArtifact",
    "PrefetchSpan",
    "SociIndex",
    "Span",
    "TarScanner",
    "TarZinfo",
    "Zinfo",
    "ZstdFrameWriter",
    "ZstdZinfo",
    "Ztoc",
    "annotate_image_manifest",
    "build_soci_index",
    "build_ztoc",
    "compress_zstd_frames",
    "compression_for_media_type",
    "derive_header_offsets",
    "detect_compression",
    "go_time_text",
    "index_descriptor_v2",
    "inflate_from",
    "parse_go_time",
    "parse_zinfo",
    "prefetch_artifacts",
    "scan_gzip",
    "scan_tar",
    "scan_zstd",
    "verify_tar_header",
    "ztoc_descriptor",
]
