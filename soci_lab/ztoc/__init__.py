"""zTOC formats and builder — placeholder docstring, completed below."""

from .gzip_zinfo import Checkpoint, GzipZinfo, inflate_from, scan_gzip
from .tar_zinfo import TarZinfo, scan_tar
from .toc import FILE_TYPES, FileMetadata, TarScanner, derive_header_offsets, go_time_text, parse_go_time
from .zstd_zinfo import ZstdZinfo, compress_zstd_frames, scan_zstd
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
    "Checkpoint",
    "FileMetadata",
    "GzipZinfo",
    "Span",
    "TarScanner",
    "TarZinfo",
    "Zinfo",
    "ZstdZinfo",
    "Ztoc",
    "build_ztoc",
    "compress_zstd_frames",
    "compression_for_media_type",
    "derive_header_offsets",
    "detect_compression",
    "go_time_text",
    "inflate_from",
    "parse_go_time",
    "parse_zinfo",
    "scan_gzip",
    "scan_tar",
    "scan_zstd",
]
