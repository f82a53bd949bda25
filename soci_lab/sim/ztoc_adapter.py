"""Build an :class:`ImageModel` from a real image's zTOCs (span geometry + TOC).

Duck-typed on purpose, so ``sim`` depends on no more of ``soci_lab.ztoc`` than its pure shapes (house
rule): a layer's ``zinfo`` is anything with ``span_count`` and ``start/end_compressed_offset(i)``,
``start/end_uncompressed_offset(i)`` (``soci_lab.ztoc.gzip_zinfo.GzipZinfo`` is one), and its ``toc`` is a
sequence of entries with ``name``, ``type``, ``uncompressed_offset`` and ``uncompressed_size``
(``soci_lab.ztoc.toc.FileMetadata``). A layer with no zTOC has ``zinfo=None``; its file table may still be
given (the simulator uses it to know which paths live in local layers).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .image import FileModel, ImageModel, LayerModel, SpanModel


class SpanGeometry(Protocol):
    """What the simulator needs of a zinfo."""

    @property
    def span_count(self) -> int: ...

    def start_compressed_offset(self, i: int) -> int: ...

    def end_compressed_offset(self, i: int) -> int: ...

    def start_uncompressed_offset(self, i: int) -> int: ...

    def end_uncompressed_offset(self, i: int) -> int: ...


@dataclass
class LayerSource:
    """One layer of a real image as the index describes it."""

    digest: str
    compression: str
    compressed_size: int
    uncompressed_size: int
    zinfo: SpanGeometry | None = None
    toc: Sequence[Any] = field(default_factory=list)
    span_size: int = 0
    ztoc_size: int = 0

    @classmethod
    def from_ztoc(cls, digest: str, ztoc: Any, *, ztoc_size: int = 0) -> LayerSource:
        """A layer described by a ``soci_lab.ztoc.Ztoc`` (its ``zinfo``, ``toc`` and archive sizes)."""
        algo = str(ztoc.compression_algorithm)
        return cls(
            digest=digest,
            compression=_COMPRESSIONS.get(algo, algo),
            compressed_size=int(ztoc.compressed_archive_size),
            uncompressed_size=int(ztoc.uncompressed_archive_size),
            zinfo=ztoc.zinfo,
            toc=list(ztoc.toc),
            span_size=int(ztoc.span_size),
            ztoc_size=ztoc_size,
        )


_COMPRESSIONS = {"uncompressed": "none", "tar": "none", "gzip": "gzip", "zstd": "zstd"}
_TYPES = {"reg": "reg", "dir": "dir", "symlink": "symlink", "hardlink": "hardlink", "link": "hardlink"}


def from_ztocs(
    name: str,
    layers: Sequence[LayerSource],
    *,
    prefetch_spans: dict[int, list[tuple[int, int]]] | None = None,
    manifest_size: int = 2_000,
    config_size: int = 8_000,
    index_size: int = 2_000,
) -> ImageModel:
    """The image model of ``layers`` (bottom first), spans and file table taken exactly from the zTOCs."""
    out_layers: list[LayerModel] = []
    files: list[FileModel] = []
    for li, src in enumerate(layers):
        spans: list[SpanModel] = []
        if src.zinfo is not None:
            z = src.zinfo
            spans = [
                SpanModel(
                    i,
                    z.start_compressed_offset(i),
                    z.end_compressed_offset(i),
                    z.start_uncompressed_offset(i),
                    z.end_uncompressed_offset(i),
                )
                for i in range(z.span_count)
            ]
        out_layers.append(
            LayerModel(
                digest=src.digest,
                compression=src.compression,
                # spans may run past the archive's end (tar record padding of an uncompressed layer)
                compressed_size=max(src.compressed_size, spans[-1].c_end if spans else 0),
                uncompressed_size=max(src.uncompressed_size, spans[-1].u_end if spans else 0),
                spans=spans,
                span_size=src.span_size or getattr(src.zinfo, "span_size", 0) or 0,
                ztoc_size=src.ztoc_size,
            )
        )
        for e in sorted(src.toc, key=lambda e: e.uncompressed_offset):
            path = "/" + posixpath.normpath("/" + e.name).lstrip("/")
            base = posixpath.basename(path)
            if base.startswith(".wh."):
                if base == ".wh..wh..opq":  # the directory's lower contents are hidden
                    files.append(FileModel(posixpath.dirname(path), li, e.uncompressed_offset, 0, "opaque"))
                    continue
                if base.startswith(".wh..wh."):  # other overlay metadata: nothing to see
                    continue
                target = posixpath.join(posixpath.dirname(path), base[4:])
                files.append(FileModel(target, li, e.uncompressed_offset, 0, "whiteout"))
                continue
            kind = _TYPES.get(e.type, e.type)
            size = e.uncompressed_size if kind == "reg" else 0
            header = max(0, e.uncompressed_offset - getattr(e, "tar_header_offset", e.uncompressed_offset))
            link = str(getattr(e, "linkname", "") or "")
            if kind == "hardlink" and link:  # a path in the rootfs, as the entry's own name
                link = "/" + posixpath.normpath("/" + link).lstrip("/")
            files.append(FileModel(path, li, e.uncompressed_offset, size, kind, header, link))
    model = ImageModel(
        name=name,
        layers=out_layers,
        files=files,
        manifest_size=manifest_size,
        config_size=config_size,
        index_size=index_size,
        prefetch_spans=dict(prefetch_spans or {}),
    )
    model.validate()
    return model
