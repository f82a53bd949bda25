"""The simulator's picture of an image: layers, span tables and the file table.

These are plain dataclasses on purpose: the simulator needs only geometry (where each span starts and
ends, in compressed and uncompressed bytes; where each file lies in its layer's tar stream), not the
zTOC's bytes. A model comes from a real image's SOCI index (:func:`soci_lab.sim.ztoc_adapter.from_ztocs`,
once ``soci_lab.ztoc`` exposes span geometry), from the seeded generator in :mod:`soci_lab.sim.synthetic`,
or from a JSON file written by :meth:`ImageModel.save`.

Span geometry follows soci-formats.md §2.3–2.4: span ``i`` covers uncompressed bytes
``[u_start, u_end)`` of the layer's tar stream and compressed bytes ``[c_start, c_end)`` of the blob; a
layer without spans has no zTOC (smaller than ``min_layer_size``, or a compression SOCI cannot index)
and is fetched and unpacked locally in lazy mode.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SimulationError
from ..rootwalk import MAX_LINKS as MAX_LINKS
from ..rootwalk import walk

FORMAT = "soci_lab.sim.image/1"
COMPRESSIONS = ("gzip", "zstd", "none")


@dataclass(frozen=True, slots=True)
class SpanModel:
    """One span: its id and its byte ranges in the compressed blob and the uncompressed tar stream."""

    id: int
    c_start: int
    c_end: int
    u_start: int
    u_end: int

    @property
    def c_size(self) -> int:
        return self.c_end - self.c_start

    @property
    def u_size(self) -> int:
        return self.u_end - self.u_start


@dataclass(frozen=True, slots=True)
class FileModel:
    """One TOC entry: path (absolute in the rootfs), layer index, offset of its data in the layer's tar
    stream, size of its data, type (``reg``, ``dir``, ``symlink``, ``hardlink``, ``whiteout`` — the path
    it hides —, ``opaque`` — a directory whose lower layers' contents it hides —, or another tar type),
    ``header``: bytes of its tar header just before ``offset`` (the first read of a file verifies them;
    0 when unknown) and ``link``: a symlink's target as written, a hardlink's target path (absolute in the
    rootfs; "" when unknown: the link then reads as missing)."""

    path: str
    layer: int
    offset: int
    size: int
    type: str = "reg"
    header: int = 0
    link: str = ""


@dataclass
class LayerModel:
    """One layer blob. ``spans`` is empty when the layer has no zTOC."""

    digest: str
    compression: str
    compressed_size: int
    uncompressed_size: int
    spans: list[SpanModel] = field(default_factory=list)
    span_size: int = 0
    ztoc_size: int = 0
    _u_starts: list[int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise SimulationError(f"layer {self.digest}: compression must be one of {COMPRESSIONS}")

    @property
    def indexed(self) -> bool:
        """True when the layer has a zTOC, so lazy mode serves it through FUSE."""
        return bool(self.spans)

    def span_id(self, u_offset: int) -> int:
        """The span holding uncompressed offset ``u_offset`` (largest ``i`` with ``u_start(i) <= off``)."""
        starts = self._u_starts
        if starts is None:
            starts = self._u_starts = [s.u_start for s in self.spans]
        i = bisect_right(starts, u_offset) - 1
        return max(0, min(i, len(starts) - 1))


@dataclass
class ImageModel:
    """An image as the simulator sees it.

    ``files`` is the union of every layer's TOC (``FileModel.layer`` says which); ``prefetch_spans`` maps
    a layer index to inclusive span ranges of a prefetch artifact (soci-formats.md §3.2).
    """

    name: str
    layers: list[LayerModel]
    files: list[FileModel] = field(default_factory=list)
    manifest_size: int = 2_000
    config_size: int = 8_000
    index_size: int = 2_000
    prefetch_spans: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    #: size of the image index REF resolves to first (a SOCI v2 "SOCI-enabled" index); 0: REF names the manifest
    image_index_size: int = 0
    _view: dict[str, FileModel] | None = field(default=None, repr=False, compare=False)
    _targets: dict[FileModel, FileModel] | None = field(default=None, repr=False, compare=False)
    _dirs: set[str] | None = field(default=None, repr=False, compare=False)
    _resolved: dict[tuple[str, bool], FileModel | None] | None = field(default=None, repr=False, compare=False)
    _stats: list[tuple[int, int, int]] | None = field(default=None, repr=False, compare=False)

    # --- derived ------------------------------------------------------------------------------------

    @property
    def compressed_size(self) -> int:
        return sum(layer.compressed_size for layer in self.layers)

    @property
    def uncompressed_size(self) -> int:
        return sum(layer.uncompressed_size for layer in self.layers)

    def view(self) -> dict[str, FileModel]:
        """The merged rootfs as overlayfs shows it: path → the visible entry (:func:`merge_layers`)."""
        if self._view is None:
            self._view, self._targets, self._dirs = merge_layers(self.files)
        return self._view

    def lookup(self, path: str) -> FileModel | None:
        """The visible entry at exactly ``path`` in the merged rootfs (no link followed), or None."""
        return self.view().get(path)

    def resolve(self, path: str, *, follow_last: bool = True) -> FileModel | None:
        """What an open of ``path`` inside the merged rootfs reaches, or None where it fails (missing,
        a non-directory on the way, a symlink loop): symlinks followed inside the rootfs by
        the one walk the real replay uses on a mount (:func:`soci_lab.rootwalk.walk`: ``..`` at the top
        stays there, absolute targets restart at the root, at most :data:`MAX_LINKS`, a name followed by a
        slash must be a directory; with ``follow_last=False`` a final symlink is the answer, as for
        ``readlink``), a hardlink answered with the regular file it
        links to (its data), a directory that only its contents imply with a ``dir`` entry of its own."""
        key = (path, follow_last)
        cache = self._resolved
        if cache is None:
            cache = self._resolved = {}
        if key not in cache:
            cache[key] = self._resolve(path, follow_last)
        return cache[key]

    def links_on_path(self, path: str, *, follow_last: bool = True) -> tuple[FileModel, ...]:
        """The symlinks a walk of ``path`` reads (in order; a ``readlink`` of ``path`` reads its last one too):
        on a real lazy mount the kernel asks each one's layer server for its target, and the server checks
        the symlink's tar header first (``soci_lab.lazy.fusefs.readlink``), fetching the spans it lies in."""
        read: list[FileModel] = []
        view = self.view()
        dirs = self._dirs or set()

        def kind_of(p: str) -> str | None:
            f = view.get(p)
            if f is None:
                return "dir" if p in dirs else None
            return f.type if f.type in ("dir", "symlink") else "other"

        def link_of(p: str) -> str:
            read.append(view[p])
            return view[p].link

        walked = walk(path, kind_of, link_of, follow_last=follow_last)
        if not follow_last and walked.error is None:
            last = view.get(walked.path)
            if last is not None and last.type == "symlink":
                read.append(last)
        return tuple(read)

    def _resolve(self, path: str, follow_last: bool) -> FileModel | None:
        view = self.view()
        dirs = self._dirs or set()

        def kind_of(p: str) -> str | None:
            f = view.get(p)
            if f is None:
                return "dir" if p in dirs else None
            return f.type if f.type in ("dir", "symlink") else "other"

        walked = walk(path, kind_of, lambda p: view[p].link, follow_last=follow_last)
        if walked.error is not None:
            return None
        f = view.get(walked.path)
        if f is None:
            return FileModel(walked.path, 0, 0, 0, "dir")  # the root, or a directory its contents imply
        if f.type == "hardlink":
            return (self._targets or {}).get(f)
        return f

    def layer_stats(self, li: int) -> tuple[int, int, int]:
        """Of layer ``li``'s TOC: entries (what tar apply creates), regular files, and their content bytes."""
        if self._stats is None:
            stats = [[0, 0, 0] for _ in self.layers]
            for f in self.files:
                st = stats[f.layer]
                st[0] += 1
                if f.type == "reg":
                    st[1] += 1
                    st[2] += f.size
            self._stats = [(a, b, c) for a, b, c in stats]
        return self._stats[li]

    def readable_bytes(self) -> int:
        """Bytes of regular-file data visible in the merged rootfs (the denominator of ``fraction_read``)."""
        return sum(f.size for f in self.view().values() if f.type == "reg")

    def respan(self, span_size: int) -> ImageModel:
        """The same image indexed at another span size (what ``soci create --span-size`` would give).

        New boundaries sit at multiples of ``span_size`` in uncompressed bytes; compressed offsets are
        interpolated linearly inside the current spans, so a layer's compressibility profile is kept.
        Layers without a zTOC stay without one; ``none`` layers get exact fixed chunks.
        """
        if span_size <= 0:
            raise SimulationError(f"span size must be positive, not {span_size}")
        layers = [_respan_layer(layer, span_size) for layer in self.layers]
        prefetch = {
            li: [_map_range(self.layers[li], layers[li], a, b) for a, b in ranges]
            for li, ranges in self.prefetch_spans.items()
        }
        return ImageModel(
            name=self.name,
            layers=layers,
            files=self.files,
            manifest_size=self.manifest_size,
            config_size=self.config_size,
            index_size=self.index_size,
            prefetch_spans=prefetch,
            meta={**self.meta, "span_size": span_size},
            image_index_size=self.image_index_size,
        )

    # --- JSON ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; spans and files as compact lists."""
        return {
            "format": FORMAT,
            "name": self.name,
            "manifest_size": self.manifest_size,
            "config_size": self.config_size,
            "index_size": self.index_size,
            "image_index_size": self.image_index_size,
            "meta": self.meta,
            "prefetch_spans": {str(k): [list(r) for r in v] for k, v in self.prefetch_spans.items()},
            "layers": [
                {
                    "digest": layer.digest,
                    "compression": layer.compression,
                    "compressed_size": layer.compressed_size,
                    "uncompressed_size": layer.uncompressed_size,
                    "span_size": layer.span_size,
                    "ztoc_size": layer.ztoc_size,
                    "spans": [[s.c_start, s.c_end, s.u_start, s.u_end] for s in layer.spans],
                }
                for layer in self.layers
            ],
            "files": [_file_row(f) for f in self.files],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageModel:
        """Inverse of :meth:`to_dict`; refuses documents of another format."""
        if data.get("format") != FORMAT:
            raise SimulationError(f"not a soci_lab image model (format {data.get('format')!r}, expected {FORMAT})")
        try:
            layers = [
                LayerModel(
                    digest=d["digest"],
                    compression=d["compression"],
                    compressed_size=int(d["compressed_size"]),
                    uncompressed_size=int(d["uncompressed_size"]),
                    span_size=int(d.get("span_size", 0)),
                    ztoc_size=int(d.get("ztoc_size", 0)),
                    spans=[SpanModel(i, *map(int, s)) for i, s in enumerate(d.get("spans", []))],
                )
                for d in data["layers"]
            ]
            files = [
                FileModel(p, int(li), int(off), int(size), t,
                          int(rest[0]) if rest else 0, str(rest[1]) if rest[1:] else "")
                for p, li, off, size, t, *rest in data.get("files", [])
            ]
            prefetch = {int(k): [(int(a), int(b)) for a, b in v] for k, v in data.get("prefetch_spans", {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise SimulationError(f"malformed image model: {exc}") from None
        model = cls(
            name=data.get("name", "image"),
            layers=layers,
            files=files,
            manifest_size=int(data.get("manifest_size", 2_000)),
            config_size=int(data.get("config_size", 8_000)),
            index_size=int(data.get("index_size", 2_000)),
            prefetch_spans=prefetch,
            meta=dict(data.get("meta", {})),
            image_index_size=int(data.get("image_index_size", 0)),
        )
        model.validate()
        return model

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ImageModel:
        """Read a model written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise SimulationError(f"{path}: not JSON ({exc})") from None
        return cls.from_dict(data)

    def validate(self) -> None:
        """Check the geometry: spans tile each layer in order, files lie inside their layer."""
        for li, layer in enumerate(self.layers):
            prev_u = 0
            for s in layer.spans:
                if s.u_start != prev_u or s.u_end <= s.u_start or s.c_end <= s.c_start:
                    raise SimulationError(f"layer {li}: span {s.id} does not tile the layer ({s})")
                if s.c_end > layer.compressed_size:
                    raise SimulationError(f"layer {li}: span {s.id} ends past the blob")
                prev_u = s.u_end
            if layer.spans and prev_u != layer.uncompressed_size:
                raise SimulationError(f"layer {li}: spans end at {prev_u}, layer is {layer.uncompressed_size}")
        n = len(self.layers)
        for f in self.files:
            if not 0 <= f.layer < n or f.offset + f.size > self.layers[f.layer].uncompressed_size:
                raise SimulationError(f"file {f.path} lies outside layer {f.layer}")


def _parents(path: str) -> list[str]:
    """``/a/b/c`` → ``["/a", "/a/b"]`` (the root left out)."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _file_row(f: FileModel) -> list[Any]:
    """A file's compact JSON row: the header and the link only where they are set (older files lack them)."""
    rest: list[Any] = [f.header, f.link] if f.link else [f.header] if f.header else []
    return [f.path, f.layer, f.offset, f.size, f.type, *rest]


def merge_layers(
    files: list[FileModel],
) -> tuple[dict[str, FileModel], dict[FileModel, FileModel], set[str]]:
    """The merged view of layers' entries (``files`` in layer order, each layer's in tar order), as
    overlayfs merges the layer directories the eager applier writes: returns the visible entry per path,
    each visible hardlink's regular file, and the directories only their contents imply.

    Layer by layer, bottom first: a whiteout hides the path and everything under it in the layers below,
    an opaque directory everything under it below; then each entry replaces the one below at its path — a
    non-directory over a directory hides the directory's lower contents, a directory over a directory
    merges with it, and an entry under a lower non-directory makes that path a directory of this layer
    (the applier creates the parents it needs). A hardlink reads its target's data as the link was made:
    the target is the regular file at ``link`` in the same layer, earlier in the tar (where the applier
    links it; a target it cannot link leaves the link unreadable), and a later layer that hides or replaces
    the target does not change the link's data."""
    merged: dict[str, FileModel] = {}
    targets: dict[FileModel, FileModel] = {}
    kids: dict[str, set[str]] = {}  # a path → its children in ``merged``

    def put(f: FileModel) -> None:
        if f.path not in merged:
            kids.setdefault(f.path.rpartition("/")[0], set()).add(f.path)
        merged[f.path] = f

    def drop(p: str) -> None:
        del merged[p]
        kids.get(p.rpartition("/")[0], set()).discard(p)

    def hide_below(top: str, layer: int, *, itself: bool) -> None:
        """Take out what layers below ``layer`` have under ``top`` (and ``top`` itself with ``itself``)."""
        stack = list(kids.get(top, ()))
        while stack:
            p = stack.pop()
            stack.extend(kids.get(p, ()))
            if merged[p].layer < layer:
                drop(p)
        if itself and top in merged and merged[top].layer < layer:
            drop(top)

    by_layer: dict[int, list[FileModel]] = {}
    for f in files:
        by_layer.setdefault(f.layer, []).append(f)
    for li in sorted(by_layer):
        entries = by_layer[li]
        for f in entries:
            if f.type == "whiteout":
                hide_below(f.path, li, itself=True)
            elif f.type == "opaque":
                hide_below(f.path, li, itself=False)
        own: dict[str, FileModel] = {}
        for f in entries:
            # the directories the applier makes for an entry (and an opaque marker's own): where a lower
            # layer has a non-directory (or nothing), this layer's directory is what shows
            need = _parents(f.path) + ([f.path] if f.type == "opaque" else [])
            for d in need:
                below = merged.get(d)
                if below is None or (below.layer < li and below.type != "dir"):
                    if below is not None:
                        hide_below(d, li, itself=True)
                    put(FileModel(d, li, f.offset, 0, "dir"))
            if f.type in ("whiteout", "opaque"):
                continue
            prev = merged.get(f.path)
            if prev is not None and prev.layer < li and prev.type == "dir" and f.type != "dir":
                hide_below(f.path, li, itself=False)
            if f.type == "hardlink":
                target = own.get(f.link)
                if target is not None and target.type == "hardlink":
                    target = targets.get(target)
                if target is not None and target.type == "reg":
                    targets[f] = target
            put(f)
            own[f.path] = f
    dirs: set[str] = set()
    for p in merged:
        parent = p.rpartition("/")[0]
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = parent.rpartition("/")[0]
    return merged, targets, dirs


def _respan_layer(layer: LayerModel, span_size: int) -> LayerModel:
    if not layer.spans:
        return LayerModel(layer.digest, layer.compression, layer.compressed_size, layer.uncompressed_size)
    u_total = layer.uncompressed_size
    bounds = [*list(range(0, u_total, span_size)), u_total]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 0:
        bounds.pop()
    # piecewise-linear map uncompressed → compressed offset through the old span table
    old = layer.spans

    def c_at(u: int) -> int:
        if u >= u_total:
            return layer.compressed_size
        s = old[layer.span_id(u)]
        frac = (u - s.u_start) / s.u_size
        return int(s.c_start + frac * s.c_size)

    c_bounds = [old[0].c_start] + [c_at(u) for u in bounds[1:-1]] + [layer.compressed_size]
    for i in range(1, len(c_bounds)):  # keep compressed spans non-empty
        if c_bounds[i] <= c_bounds[i - 1]:
            c_bounds[i] = c_bounds[i - 1] + 1
    c_bounds[-1] = max(c_bounds[-1], layer.compressed_size)
    spans = [SpanModel(i, c_bounds[i], c_bounds[i + 1], bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    ztoc = layer.ztoc_size
    if layer.spans:  # the zinfo part scales with the span count (32 KiB window per checkpoint for gzip)
        per_span = 32 * 1024 if layer.compression == "gzip" else 0
        ztoc = max(0, layer.ztoc_size - per_span * len(layer.spans)) + per_span * len(spans)
    return LayerModel(
        layer.digest,
        layer.compression,
        layer.compressed_size,
        layer.uncompressed_size,
        spans=spans,
        span_size=span_size,
        ztoc_size=ztoc,
    )


def _map_range(old: LayerModel, new: LayerModel, a: int, b: int) -> tuple[int, int]:
    if not old.spans or not new.spans:
        return (a, b)
    a = max(0, min(a, len(old.spans) - 1))
    b = max(a, min(b, len(old.spans) - 1))
    return (new.span_id(old.spans[a].u_start), new.span_id(old.spans[b].u_end - 1))
