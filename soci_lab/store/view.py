"""The merged file view of an image, built from its layers' zTOCs (no layer bytes needed).

The profiles (:mod:`.profiles`) pick prefetch spans by *path*, and a path means what a container sees: the
top-most layer that holds it, after the whiteouts of the layers above (``.wh.<name>`` hides a path and its
children below; ``.wh..wh..opq`` hides every lower child of its directory), with symbolic links followed
(usr-merged images reach ``/bin/sh`` through the ``bin → usr/bin`` link) and hard links taken to the entry
that holds their data. A path resolves to a :class:`FileRef`: the layer, its zTOC and the TOC entry with the
bytes, from which the spans a read touches follow.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..ztoc import FileMetadata, Ztoc

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
#: symbolic links followed while resolving one path (Linux's MAXSYMLINKS)
MAX_LINK_HOPS = 40


def clean_path(path: str) -> str:
    """A path as TOC names are compared: no leading ``/`` or ``./``, no trailing ``/``, ``..`` resolved."""
    return posixpath.normpath("/" + path).lstrip("/")


@dataclass(frozen=True)
class FileRef:
    """Where a visible path's bytes are: its layer, that layer's zTOC and the TOC entry."""

    path: str
    layer: str
    ztoc: Ztoc
    entry: FileMetadata

    @property
    def is_data_file(self) -> bool:
        """A regular file with at least one byte (what prefetch and materialisation care about)."""
        return self.entry.type == "reg" and self.entry.uncompressed_size > 0

    def span_range(self, offset: int = 0, length: int | None = None) -> tuple[int, int] | None:
        """Inclusive ``(first, last)`` span ids holding bytes ``[offset, offset + length)`` of the file,
        clipped to the file; None when that range is empty."""
        size = self.entry.uncompressed_size
        start = min(max(offset, 0), size)
        end = size if length is None else min(size, start + max(length, 0))
        if end <= start:
            return None
        base = self.entry.uncompressed_offset
        return self.ztoc.span_of(base + start), self.ztoc.span_of(base + end - 1)


@dataclass(frozen=True)
class _Visible:
    layer: str
    ztoc: Ztoc
    entry: FileMetadata


class ImageView:
    """The merged view of ``layers`` — ``(layer digest, zTOC)`` pairs, bottom layer first."""

    def __init__(self, layers: Sequence[tuple[str, Ztoc]]) -> None:
        self.layers = list(layers)
        self.order = {digest: i for i, (digest, _z) in enumerate(self.layers)}
        view: dict[str, _Visible] = {}
        for digest, z in self.layers:
            names = [(clean_path(e.name), e) for e in z.toc]
            for name, _e in names:  # whiteouts of this layer hide what is below it
                base = posixpath.basename(name)
                parent = posixpath.dirname(name)
                if base == OPAQUE_MARKER:
                    prefix = parent + "/" if parent else ""
                    for key in [k for k in view if k.startswith(prefix) and k != parent]:
                        del view[key]
                elif base.startswith(WHITEOUT_PREFIX):
                    hidden = posixpath.join(parent, base[len(WHITEOUT_PREFIX):])
                    for key in [k for k in view if k == hidden or k.startswith(hidden + "/")]:
                        del view[key]
            for name, e in names:
                if name and not posixpath.basename(name).startswith(WHITEOUT_PREFIX):
                    view[name] = _Visible(digest, z, e)
        self._view = view

    def names(self) -> Iterator[str]:
        """Every visible path (cleaned), in no particular order."""
        return iter(self._view)

    def resolve_dir(self, path: str, hops: int = 0) -> str | None:
        """``path`` with every symbolic link among its components followed; None past the hop limit."""
        parts = [p for p in clean_path(path).split("/") if p]
        cur = ""
        for i, part in enumerate(parts):
            cand = f"{cur}/{part}" if cur else part
            seen = self._view.get(cand)
            if seen is not None and seen.entry.type == "symlink":
                if hops >= MAX_LINK_HOPS:
                    return None
                target = seen.entry.linkname
                base = "" if target.startswith("/") else posixpath.dirname(cand)
                rest = "/".join(parts[i + 1:])
                return self.resolve_dir(posixpath.join(base, target, rest) if rest else posixpath.join(base, target),
                                        hops + 1)
            cur = cand
        return cur

    def resolve(self, path: str) -> FileRef | None:
        """The entry a container opening ``path`` reads: links followed, hard links to their data."""
        name = self.resolve_dir(path)
        hops = 0
        while name is not None:
            seen = self._view.get(name)
            if seen is None:
                return None
            if seen.entry.type != "hardlink":
                return FileRef(name, seen.layer, seen.ztoc, seen.entry)
            hops += 1
            if hops > MAX_LINK_HOPS:
                return None
            name = self.resolve_dir(seen.entry.linkname)
        return None


__all__ = ["FileRef", "ImageView", "clean_path"]
